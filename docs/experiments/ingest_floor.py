"""Ingest, interleaved: groundqa, groundqa with no sentence pass (its vectors zeros: a floor, not a
product) and txtai on the same passages. Argument: how many articles of the shared half."""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from txtai import Embeddings

from groundqa.eval.data import load_squad
from groundqa.index.config import prepare_process
from groundqa.index.index import DocumentInput, Index
from groundqa.index.model import Embedder, bundled_model_dir

prepare_process()
articles = load_squad(Path("../shared/data/squad/dev-v1.1-even-articles.json")).articles
articles = articles[: int(sys.argv[1]) if len(sys.argv) > 1 else 6]
embedder = Embedder()
embedder.embed(["warm up"])
sentence_pass = embedder.embed


def zeros(texts: list[str], stop: object = None) -> np.ndarray:
    return np.zeros((len(texts), 384), dtype=np.float32)


def ours(with_sentences: bool) -> tuple[float, list[str]]:
    embedder.embed = sentence_pass if with_sentences else zeros  # type: ignore[method-assign]
    index = Index(Path(tempfile.mkdtemp()) / "index", embedder)
    began = time.perf_counter()
    for at in range(0, len(articles), 8):
        index.add_many([DocumentInput(a.text, a.title, a.doc_id) for a in articles[at : at + 8]])
    index.compact()
    return time.perf_counter() - began, [p.text for p in index.passages()]


def theirs(texts: list[str]) -> float:
    began = time.perf_counter()
    engine = Embeddings({"path": str(bundled_model_dir()), "content": False, "hybrid": True})
    engine.index([(i, text, None) for i, text in enumerate(texts)])
    engine.save(tempfile.mkdtemp() + "/txtai")
    return time.perf_counter() - began


print("load average", os.getloadavg())
for round_ in range(2):
    full, texts = ours(True)
    bare, _ = ours(False)
    peer = theirs(texts)
    print(
        f"round {round_}: {len(texts)} passages; groundqa {full:.1f} s, no sentence pass {bare:.1f} s,"
        f" txtai {peer:.1f} s; ratios {full / peer:.2f} and {bare / peer:.2f};"
        f" load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
