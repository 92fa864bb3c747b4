from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from groundqa.index.codec import encode_pieces
from groundqa.index.storage import DocumentVectors, segment
from groundqa.index.storage.segment import Segment

DIM = 384
RAW: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}  # each test document's word pieces


def _doc(doc_id: str, passages: int, seed: int) -> DocumentVectors:
    rng = np.random.default_rng(seed)
    spans = np.array([(i * 100, i * 100 + 90) for i in range(passages)], dtype=np.int32)
    sentences = np.array([(i * 50, i * 50 + 45) for i in range(passages * 2)], dtype=np.int32)
    raw = []
    for start, _ in spans:
        n = int(rng.integers(3, 9))
        vectors = rng.normal(size=(n, DIM)).astype(np.float32)
        piece_spans = np.array([(start + 2 * j, start + 2 * j + 1) for j in range(n)])
        raw.append(
            (vectors / np.linalg.norm(vectors, axis=1, keepdims=True), piece_spans, rng.integers(0, 500, n))
        )
    RAW[doc_id] = raw
    return DocumentVectors(
        doc_id=doc_id,
        sha256="sha-" + doc_id,
        passages=spans,
        passage_vectors=rng.normal(size=(passages, DIM)).astype(np.float32),
        passage_texts=[f"{doc_id} passage {i} word{seed}" for i in range(passages)],
        pieces=encode_pieces(raw),
        sentences=sentences,
        sentence_vectors=rng.normal(size=(passages * 2, DIM)).astype(np.float32),
        sentence_texts=[f"{doc_id} sentence {i}" for i in range(passages * 2)],
    )


def _write(path: Path, docs: list[DocumentVectors]) -> Segment:
    segment.write(path, [(d.doc_id, d.sha256) for d in docs], segment.build(docs, DIM))
    return Segment.open(path)


def test_a_written_segment_reads_back(tmp_path: Path) -> None:
    docs = [_doc("a", 3, 1), _doc("b", 1, 2)]
    seg = _write(tmp_path / "seg-1.bin", docs)
    assert seg.doc_ids == ["a", "b"] and seg.passages == 4
    assert np.array_equal(seg.arrays["passage_span"], np.concatenate([d.passages for d in docs]))
    assert np.array_equal(seg.arrays["passage_vectors"], np.concatenate([d.passage_vectors for d in docs]))
    assert seg.arrays["doc_passages"].tolist() == [0, 3, 4]
    # passage 1 of "a" spans [100, 190): sentences [100, 145) and [150, 195) overlap it
    assert seg.arrays["passage_sentences"][1].tolist() == [2, 4]
    vectors, spans, ids = seg.piece_vectors(3)
    want_vectors, want_spans, want_ids = RAW["b"][0]
    assert np.median(np.sum(vectors * want_vectors, axis=1)) > 0.5  # random vectors: no centroid near
    assert np.array_equal(spans, want_spans) and np.array_equal(ids, want_ids)


def test_a_merge_equals_a_segment_built_from_the_kept_documents(tmp_path: Path) -> None:
    one = _write(tmp_path / "seg-1.bin", [_doc("a", 3, 1), _doc("b", 2, 2)])
    two = _write(tmp_path / "seg-2.bin", [_doc("c", 1, 3), _doc("d", 4, 4)])
    docs, arrays = segment.merge([(one, np.array([1])), (two, np.array([0, 1]))])
    segment.write(tmp_path / "seg-3.bin", docs, arrays)
    merged = Segment.open(tmp_path / "seg-3.bin")
    direct = _write(tmp_path / "seg-4.bin", [_doc("b", 2, 2), _doc("c", 1, 3), _doc("d", 4, 4)])
    assert merged.doc_ids == direct.doc_ids == ["b", "c", "d"]
    assert merged.doc_sha256 == ["sha-b", "sha-c", "sha-d"]
    assert set(merged.arrays) == set(direct.arrays)
    for name, array in direct.arrays.items():
        assert np.array_equal(merged.arrays[name], array), name


def test_an_open_segment_holds_one_file_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "seg-1.bin"
    segment.write(path, [("a", "sha-a")], segment.build([_doc("a", 2, 1)], DIM))
    before = len(os.listdir("/proc/self/fd"))
    opened = [Segment.open(path) for _ in range(5)]
    assert len(os.listdir("/proc/self/fd")) - before == len(opened)
