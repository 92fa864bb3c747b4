"""The ONNX encoder against the torch model it was exported from."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from groundqa.index.errors import ModelError
from groundqa.index.model import Embedder
from groundqa.index.onnx_export import exported

TEXTS = [
    "Xi met Putin in 北京 🚀 on Tuesday; café prices rose.",
    "Gas",
    "  white space at both ends \n",
    "The Power of Siberia 2 pipeline would carry 50 billion cubic meters of gas a year. " * 12,
    "Cafe\u0301 au lait, 中文句子在这里。第二句话！",
]


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(runtime="torch")


@pytest.mark.slow
def test_the_onnx_encoder_gives_torchs_vectors_and_offsets(embedder: Embedder, torch_embedder: Embedder) -> None:
    assert embedder.runtime == "onnx"
    ours, our_pieces = embedder.embed_with_pieces(TEXTS)
    theirs, their_pieces = torch_embedder.embed_with_pieces(TEXTS)
    assert np.min(np.sum(ours * theirs, axis=1)) > 1 - 1e-3
    for mine, reference in zip(our_pieces, their_pieces, strict=True):
        assert np.array_equal(mine.spans, reference.spans)
        assert np.array_equal(mine.ids, reference.ids)
        assert np.min(np.sum(mine.vectors * reference.vectors, axis=1)) > 1 - 1e-3
    assert [embedder.word_pieces(t) for t in TEXTS] == [torch_embedder.word_pieces(t) for t in TEXTS]
    assert embedder.pieces_of(TEXTS[0]) == torch_embedder.pieces_of(TEXTS[0])


def test_an_altered_export_is_refused(embedder: Embedder, tmp_path: Path) -> None:
    path = exported(embedder.model_dir, embedder.info.sha256, embedder.cache_dir)  # type: ignore[arg-type]
    cache = tmp_path / "cache"
    shutil.copytree(path.parent, cache / path.parent.name, ignore=shutil.ignore_patterns("*.lock"))
    copy = cache / path.parent.name / path.name
    assert exported(embedder.model_dir, embedder.info.sha256, cache) == copy  # type: ignore[arg-type]
    with copy.open("r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelError, match="damaged or altered"):
        exported(embedder.model_dir, embedder.info.sha256, cache)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="damaged or altered"):
        Embedder(runtime="onnx", cache_dir=cache).embed(["anything"])


def test_the_export_is_made_once_and_named_by_the_weights(embedder: Embedder) -> None:
    path = exported(embedder.model_dir, embedder.info.sha256, embedder.cache_dir)  # type: ignore[arg-type]
    assert path.parent.name == embedder.info.sha256[:16]
    made = path.stat().st_mtime_ns
    assert exported(embedder.model_dir, embedder.info.sha256, embedder.cache_dir) == path  # type: ignore[arg-type]
    assert path.stat().st_mtime_ns == made


def test_the_int8_encoder_is_quantized_from_the_fused_graph(embedder: Embedder) -> None:
    """GROUNDQA_RUNTIME=onnx-int8: the fused graph's weights in int8 (its com.microsoft nodes
    have no shape inference; quantizing failed on them at first). Close to the float vectors, not
    equal, with the same word pieces."""
    int8 = Embedder(runtime="onnx-int8")
    ours, theirs = int8.embed_with_pieces(TEXTS), embedder.embed_with_pieces(TEXTS)
    cosines = (ours[0] * theirs[0]).sum(axis=1)
    assert (cosines > 0.9).all() and (cosines < 0.99999).any(), cosines
    for a, b in zip(ours[1], theirs[1], strict=True):
        assert np.array_equal(a.spans, b.spans) and np.array_equal(a.ids, b.ids)
