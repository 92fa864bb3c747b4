from __future__ import annotations

import hashlib

import numpy as np

from groundqa.index import codec
from groundqa.index.model import Embedder
from tests.conftest import ARTICLE


def test_decoded_pieces_keep_their_cosines(embedder: Embedder) -> None:
    """On text the codebook was not trained on: the bundled article's word pieces."""
    paragraphs = [p for p in ARTICLE.read_text(encoding="utf-8").split("\n\n") if p.strip()][:12]
    _, found = embedder.embed_with_pieces(paragraphs)
    vectors = np.concatenate([f.vectors for f in found])
    book = codec.codebook()
    codes, ids, scales = book.encode(vectors)
    assert codes.dtype == np.uint8 and codes.shape == (len(vectors), vectors.shape[1] // 4)
    assert ids.dtype == np.uint16 and scales.dtype == np.float16
    decoded = book.decode(codes, ids, scales)
    assert np.allclose(np.linalg.norm(decoded, axis=1), 1, atol=1e-5)
    assert np.median(np.sum(decoded * vectors, axis=1)) > 0.9  # measured 0.94
    _, questions = embedder.embed_with_pieces(["How long is the Power of Siberia 2 pipeline?"])
    q = questions[0].vectors
    error = np.abs(q @ decoded.T - q @ vectors.T)
    assert error.mean() < 0.03, error.mean()
    # each question piece's best match among the pieces moves little: what word match reads
    assert np.abs((q @ decoded.T).max(axis=1) - (q @ vectors.T).max(axis=1)).mean() < 0.05


def test_the_codebook_is_the_shipped_file() -> None:
    assert codec.codebook().sha256 == hashlib.sha256(codec.PATH.read_bytes()).hexdigest()
    assert codec.codebook().centroids.shape[1] == 384


def test_no_pieces_encode_to_empty_arrays() -> None:
    codes, ids, scales = codec.codebook().encode(np.zeros((0, 384), dtype=np.float32))
    assert codes.shape == (0, 96) and ids.shape == (0,) and scales.shape == (0,)
