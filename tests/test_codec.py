from __future__ import annotations

import numpy as np

from index import codec


def test_int8_codes_keep_cosines_within_a_hundredth() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    codes, scales = codec.encode(vectors)
    assert codes.dtype == np.int8 and scales.dtype == np.float16 and codes.shape == vectors.shape
    decoded = codec.decode(codes, scales)
    queries = vectors[:20]
    assert np.abs(queries @ decoded.T - queries @ vectors.T).max() < 0.01


def test_each_piece_uses_the_full_int8_range() -> None:
    vectors = np.array([[0.5, -0.25, 0.0], [0.0, 0.0, -1.0]], dtype=np.float32)
    codes, scales = codec.encode(vectors)
    assert codes.tolist() == [[127, -64, 0], [0, 0, -127]]
    assert np.allclose(codec.decode(codes, scales), vectors, atol=0.005)


def test_no_pieces_encode_to_empty_arrays() -> None:
    codes, scales = codec.encode(np.zeros((0, 8), dtype=np.float32))
    assert codes.shape == (0, 8) and scales.shape == (0,)
