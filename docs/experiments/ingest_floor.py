"""Ingest's floor: `groundqa bench`'s ingest step (eval/bench.py: groundqa, then txtai on the
passages groundqa made), run as it is and with the sentence pass's vectors replaced by zeros (a
floor, not a product), in turns, two rounds. Argument: how many articles of the shared half."""

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from groundqa.eval.bench import ingest
from groundqa.eval.data import load_squad
from groundqa.index.config import IndexSettings, embedder_of, prepare_process

prepare_process()
data = load_squad(Path("../shared/data/squad/dev-v1.1-even-articles.json"))
data = dataclasses.replace(data, articles=data.articles[: int(sys.argv[1]) if len(sys.argv) > 1 else 6])
settings = IndexSettings()
embedder = embedder_of(settings)  # the one ingest() gets: one model per process
embedder.embed(["warm up"])
sentence_pass = embedder.embed  # the passage pass is embed_with_pieces, which stays


def zeros(texts: list[str], batch_size: int = 64, stop: object = None) -> np.ndarray:
    return np.zeros((len(texts), embedder.info.dimension), dtype=np.float32)


def measured(with_sentences: bool) -> dict[str, float]:
    embedder.embed = sentence_pass if with_sentences else zeros  # type: ignore[method-assign]
    work = Path(tempfile.mkdtemp())
    return ingest(data, work / "groundqa", work / "txtai", settings)


print("load average", os.getloadavg())
for round_ in range(2):
    full, bare = measured(True), measured(False)
    print(
        f"round {round_}: {full['passages']} passages; groundqa {full['groundqa_s']} s against txtai"
        f" {full['txtai_s']} s ({full['ratio']}x); no sentence pass {bare['groundqa_s']} s against"
        f" {bare['txtai_s']} s ({bare['ratio']}x); load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
