from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from groundqa.index.errors import ModelError
from groundqa.index.model import DEFAULT_MODEL, PINNED_SHA256, Embedder, bundled_model_dir
from groundqa.index.onnx_export import sha256_file


def test_bundled_model_matches_the_pinned_hashes() -> None:
    for name, want in PINNED_SHA256.items():
        assert sha256_file(bundled_model_dir() / name) == want


def test_embeddings_are_normalized_and_meaningful(embedder: Embedder) -> None:
    v = embedder.embed(
        ["A pipeline carries gas to China.", "Gas flows through a pipe to China.", "I like cake."]
    )
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


@pytest.mark.parametrize("name", ["tokenizer.json", "model.safetensors"])
def test_a_tampered_copy_is_refused_before_loading(tmp_path: Path, name: str) -> None:
    copy = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), copy)
    with (copy / name).open("r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelError, match=f"{name} has sha256 .* expected {PINNED_SHA256[name]}"):
        Embedder(DEFAULT_MODEL, model_dir=copy)


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer.json is missing"):
        Embedder(DEFAULT_MODEL, model_dir=copy)


@pytest.mark.slow
def test_an_unknown_model_name_fails_without_network() -> None:
    with pytest.raises(ModelError, match="with no network"):
        Embedder("no-such-org/no-such-model")


def test_word_piece_vectors_come_with_exact_spans(embedder: Embedder) -> None:
    texts = ["Xi met Putin in 北京 🚀 on Tuesday; café prices rose.", "Gas"]
    vectors, pieces = embedder.embed_with_pieces(texts)
    assert np.allclose(vectors, embedder.embed(texts), atol=1e-5)
    t = pieces[0]
    assert len(t.vectors) == len(t.spans) == len(t.ids) > 10
    assert np.allclose(np.linalg.norm(t.vectors, axis=1), 1, atol=1e-5)
    text, covered, last = texts[0], "", 0
    for start, end in t.spans:
        assert last <= start < end <= len(text)
        covered += text[start:end]
        last = end
    assert covered == text.replace(" ", "")  # every character but the spaces, once, in order
    assert [texts[1][a:b] for a, b in pieces[1].spans] == ["Gas"]


@pytest.mark.slow
def test_one_model_is_shared_safely_between_threads(embedder: Embedder) -> None:
    """Defect 3: the tokenizer's padding state, changed by each call, was shared across threads, so
    a batch could come out unpadded ("Unable to create tensor") while a query tokenized."""
    texts = ["short", "a longer sentence about pipelines"]  # cheap to embed: many tries per second
    want = embedder.embed(texts)
    errors: list[str] = []
    done = threading.Event()

    def batches() -> None:
        try:
            for _ in range(800):
                assert np.allclose(embedder.embed(texts), want, atol=1e-4)
        except Exception as exc:  # collected: an assert in a thread would be lost
            errors.append(repr(exc)[:200])
        finally:
            done.set()

    def queries() -> None:
        while not done.is_set():
            try:
                embedder.fits("hello there " * 5)
                embedder.embed_with_pieces(["How long is the pipeline?"])
            except Exception as exc:
                errors.append(repr(exc)[:200])

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that a race shows at once
    try:
        threads = [threading.Thread(target=batches), *(threading.Thread(target=queries) for _ in range(3))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
