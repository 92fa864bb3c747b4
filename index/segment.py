"""An immutable segment: the vectors, word pieces and posting lists of a batch of documents, in
one file that is written once, memory-mapped when read (one file descriptor) and never changed.

A document's passages, sentences and word pieces lie in one run of rows each, so a segment can be
merged with others by copying the runs of the documents still live.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index import codec
from index.errors import IndexDamaged
from index.lexical import Postings

MAGIC = b"GQASEG3\0"
ALIGN = 64
# The model's vocabulary has 30,522 word pieces: their ids fit in 16 bits.
PIECE_ID = np.uint16


@dataclass(frozen=True)
class DocumentVectors:
    """What the model made of one document, ready to be stored."""

    doc_id: str
    sha256: str  # of the text the offsets index
    passages: np.ndarray  # [p, 2] int32: start, end in the text
    passage_vectors: np.ndarray  # [p, dim] float32
    passage_texts: list[str]  # as BM25 reads them (title included)
    # Per passage: its word pieces' vectors [n, dim], spans in the text [n, 2] and ids [n].
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    sentences: np.ndarray  # [s, 2] int32
    sentence_vectors: np.ndarray  # [s, dim]
    sentence_texts: list[str]


@dataclass
class Segment:
    path: Path
    doc_ids: list[str]
    doc_sha256: list[str]
    arrays: dict[str, np.ndarray]
    passage_postings: Postings
    sentence_postings: Postings
    _map: Any = field(repr=False, default=None)
    _dense: Any = field(repr=False, default=None)

    # --- reading --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Segment:
        with path.open("rb") as f:
            if f.read(8) != MAGIC:
                raise IndexDamaged(f"{path} is not a groundqa segment; rebuild the index")
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
            base = _aligned(16 + size)
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        arrays = {
            name: np.frombuffer(mapped, dtype=dtype, count=int(np.prod(shape)), offset=base + offset).reshape(
                shape
            )
            if np.prod(shape)
            else np.zeros(shape, dtype=dtype)
            for name, (offset, dtype, shape) in header["arrays"].items()
        }
        return cls(
            path,
            [d for d, _ in header["docs"]],
            [sha for _, sha in header["docs"]],
            arrays,
            _postings(arrays, "p_"),
            _postings(arrays, "s_"),
            mapped,
        )

    @property
    def passages(self) -> int:
        return len(self.arrays["passage_doc"])

    @property
    def dimension(self) -> int:
        return int(self.arrays["passage_vectors"].shape[1])

    def dense(self) -> faiss.Index:
        """Exact inner product over the passage vectors, built on first use."""
        if self._dense is None:
            index = faiss.IndexFlatIP(self.dimension)
            index.add(np.ascontiguousarray(self.arrays["passage_vectors"]))
            self._dense = index
        return self._dense

    def piece_vectors(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Passage row's word pieces: decoded vectors, spans in the text, ids."""
        lo, hi = (int(v) for v in self.arrays["passage_pieces"][row])
        a = self.arrays
        vectors = codec.decode(a["piece_codes"][lo:hi], a["piece_scales"][lo:hi])
        return vectors, a["piece_spans"][lo:hi], a["piece_ids"][lo:hi]


def build(documents: Sequence[DocumentVectors], dimension: int) -> dict[str, list[np.ndarray]]:
    """The arrays of a new segment holding these documents, in this order."""
    passage_doc, sentence_doc, doc_passages, doc_sentences = [], [], [0], [0]
    passage_sentences, passage_pieces = [], []
    piece_rows = 0
    sentence_rows = 0
    codes, scales, spans, ids, df_parts = [], [], [], [], []
    for number, d in enumerate(documents):
        passage_doc.append(np.full(len(d.passages), number, dtype=np.int32))
        sentence_doc.append(np.full(len(d.sentences), number, dtype=np.int32))
        doc_passages.append(doc_passages[-1] + len(d.passages))
        doc_sentences.append(doc_sentences[-1] + len(d.sentences))
        # Sentences do not overlap, so those overlapping a passage are one run.
        lo = np.searchsorted(d.sentences[:, 1], d.passages[:, 0], side="right")
        hi = np.searchsorted(d.sentences[:, 0], d.passages[:, 1], side="left")
        passage_sentences.append(np.stack([lo, np.maximum(lo, hi)], axis=1) + sentence_rows)
        sentence_rows += len(d.sentences)
        for vectors, piece_spans, piece_ids in d.pieces:
            c, s = codec.encode(vectors)
            codes.append(c)
            scales.append(s)
            spans.append(piece_spans.astype(np.int32))
            ids.append(piece_ids.astype(PIECE_ID))
            df_parts.append(np.unique(piece_ids))
            passage_pieces.append((piece_rows, piece_rows + len(vectors)))
            piece_rows += len(vectors)
    passages = Postings.build(t for d in documents for t in d.passage_texts)
    sentences = Postings.build(t for d in documents for t in d.sentence_texts)
    arrays = {
        "passage_doc": _cat(passage_doc, np.int32, (0,)),
        "passage_span": _cat([d.passages for d in documents], np.int32, (0, 2)),
        "passage_vectors": _cat([d.passage_vectors for d in documents], np.float32, (0, dimension)),
        "passage_sentences": _cat(passage_sentences, np.int32, (0, 2)),
        "passage_pieces": np.array(passage_pieces, dtype=np.int64).reshape(-1, 2),
        "doc_passages": np.array(doc_passages, dtype=np.int64),
        "doc_sentences": np.array(doc_sentences, dtype=np.int64),
        "sentence_doc": _cat(sentence_doc, np.int32, (0,)),
        "sentence_span": _cat([d.sentences for d in documents], np.int32, (0, 2)),
        "sentence_vectors": _cat([d.sentence_vectors for d in documents], np.float16, (0, dimension)),
        "piece_codes": _cat(codes, np.int8, (0, dimension)),
        "piece_scales": _cat(scales, np.float16, (0,)),
        "piece_spans": _cat(spans, np.int32, (0, 2)),
        "piece_ids": _cat(ids, PIECE_ID, (0,)),
        "piece_df": _piece_df(df_parts),
        **_postings_arrays(passages, "p_"),
        **_postings_arrays(sentences, "s_"),
    }
    return {name: [array] for name, array in arrays.items()}


def merge(
    parts: Sequence[tuple[Segment, np.ndarray]],
) -> tuple[list[tuple[str, str]], dict[str, list[np.ndarray]]]:
    """The documents (doc_id, sha256) and arrays of one segment holding the given documents (local
    numbers) of each segment, in order. The big arrays are returned as slices of the sources,
    copied when written."""
    docs: list[tuple[str, str]] = []
    out: dict[str, list[np.ndarray]] = {}
    bm25: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"p_": [], "s_": []}
    lengths: dict[str, list[np.ndarray]] = {"p_": [], "s_": []}
    offsets = {"doc": 0, "passage": 0, "sentence": 0, "piece": 0}
    df_parts: list[np.ndarray] = []

    def put(name: str, value: np.ndarray) -> None:
        out.setdefault(name, []).append(value)

    for segment, keep in parts:
        a = segment.arrays
        passage_map = np.full(segment.passages + 1, -1, dtype=np.int64)
        sentence_map = np.full(len(a["sentence_doc"]) + 1, -1, dtype=np.int64)
        for local in keep:
            local = int(local)
            p_lo, p_hi = int(a["doc_passages"][local]), int(a["doc_passages"][local + 1])
            s_lo, s_hi = int(a["doc_sentences"][local]), int(a["doc_sentences"][local + 1])
            k_lo, k_hi = int(a["passage_pieces"][p_lo, 0]), int(a["passage_pieces"][p_hi - 1, 1])
            docs.append((segment.doc_ids[local], segment.doc_sha256[local]))
            put("passage_doc", np.full(p_hi - p_lo, offsets["doc"], dtype=np.int32))
            put("sentence_doc", np.full(s_hi - s_lo, offsets["doc"], dtype=np.int32))
            put("doc_passages", np.array([offsets["passage"] + p_hi - p_lo], dtype=np.int64))
            put("doc_sentences", np.array([offsets["sentence"] + s_hi - s_lo], dtype=np.int64))
            for name in ("passage_span", "passage_vectors"):
                put(name, a[name][p_lo:p_hi])
            put("passage_sentences", a["passage_sentences"][p_lo:p_hi] - s_lo + offsets["sentence"])
            put("passage_pieces", a["passage_pieces"][p_lo:p_hi] - k_lo + offsets["piece"])
            for name in ("sentence_span", "sentence_vectors"):
                put(name, a[name][s_lo:s_hi])
            for name in ("piece_codes", "piece_scales", "piece_spans", "piece_ids"):
                put(name, a[name][k_lo:k_hi])
            for lo, hi in a["passage_pieces"][p_lo:p_hi]:
                df_parts.append(np.unique(a["piece_ids"][lo:hi]))
            passage_map[p_lo:p_hi] = np.arange(p_hi - p_lo) + offsets["passage"]
            sentence_map[s_lo:s_hi] = np.arange(s_hi - s_lo) + offsets["sentence"]
            lengths["p_"].append(segment.passage_postings.lengths[p_lo:p_hi])
            lengths["s_"].append(segment.sentence_postings.lengths[s_lo:s_hi])
            offsets["doc"] += 1
            offsets["passage"] += p_hi - p_lo
            offsets["sentence"] += s_hi - s_lo
            offsets["piece"] += k_hi - k_lo
        for prefix, postings, row_map in (
            ("p_", segment.passage_postings, passage_map),
            ("s_", segment.sentence_postings, sentence_map),
        ):
            ids, rows, counts = postings.triples()
            new_rows = row_map[rows]
            kept = new_rows >= 0
            bm25[prefix].append((ids[kept], new_rows[kept], counts[kept]))
    dimension = parts[0][0].dimension
    empty = {
        "passage_doc": (np.int32, (0,)),
        "sentence_doc": (np.int32, (0,)),
        "passage_span": (np.int32, (0, 2)),
        "passage_vectors": (np.float32, (0, dimension)),
        "passage_sentences": (np.int32, (0, 2)),
        "passage_pieces": (np.int64, (0, 2)),
        "sentence_span": (np.int32, (0, 2)),
        "sentence_vectors": (np.float16, (0, dimension)),
        "piece_codes": (np.int8, (0, dimension)),
        "piece_scales": (np.float16, (0,)),
        "piece_spans": (np.int32, (0, 2)),
        "piece_ids": (PIECE_ID, (0,)),
        "doc_passages": (np.int64, (0,)),
        "doc_sentences": (np.int64, (0,)),
    }
    for name, (dtype, shape) in empty.items():
        out.setdefault(name, [np.zeros(shape, dtype=dtype)])
    out["doc_passages"].insert(0, np.zeros(1, dtype=np.int64))
    out["doc_sentences"].insert(0, np.zeros(1, dtype=np.int64))
    out["piece_df"] = [_piece_df(df_parts)]
    for prefix, triples in bm25.items():
        postings = Postings.from_triples(
            np.concatenate([t[0] for t in triples]),
            np.concatenate([t[1] for t in triples]).astype(np.int32),
            np.concatenate([t[2] for t in triples]),
            _cat(lengths[prefix], np.uint32, (0,)),
        )
        out.update({name: [array] for name, array in _postings_arrays(postings, prefix).items()})
    return docs, out


def write(path: Path, docs: list[tuple[str, str]], arrays: dict[str, list[np.ndarray]]) -> None:
    """Write a segment file and make it durable (the file, then its folder, are fsync'd)."""
    layout: dict[str, tuple[int, str, tuple[int, ...]]] = {}
    offset = 0
    for name, chunks in arrays.items():
        first = chunks[0]
        rows = sum(len(c) for c in chunks)
        shape = (rows, *first.shape[1:])
        offset = _aligned(offset)
        layout[name] = (offset, first.dtype.str, shape)
        offset += int(np.prod(shape)) * first.dtype.itemsize
    # Offsets count from the first aligned byte after the header.
    header = json.dumps({"arrays": layout, "docs": docs}).encode()
    base = _aligned(16 + len(header))
    with path.open("wb") as f:
        f.write(MAGIC + len(header).to_bytes(8, "little") + header)
        for name, chunks in arrays.items():
            f.seek(base + layout[name][0])
            for chunk in chunks:
                f.write(np.ascontiguousarray(chunk, dtype=np.dtype(layout[name][1])).tobytes())
        f.flush()
        os.fsync(f.fileno())
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _cat(parts: list[np.ndarray], dtype: Any, empty: tuple[int, ...]) -> np.ndarray:
    if not parts:
        return np.zeros(empty, dtype=dtype)
    return np.concatenate([np.asarray(p).reshape(-1, *empty[1:]) for p in parts]).astype(dtype)


def _piece_df(parts: list[np.ndarray]) -> np.ndarray:
    """In how many passages each word-piece id occurs."""
    seen = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    return np.bincount(seen).astype(np.int32)


def _postings_arrays(postings: Postings, prefix: str) -> dict[str, np.ndarray]:
    return {
        prefix + "terms": postings.term_ids,
        prefix + "starts": postings.starts,
        prefix + "rows": postings.rows,
        prefix + "counts": postings.counts,
        prefix + "lengths": postings.lengths,
    }


def _postings(arrays: dict[str, np.ndarray], prefix: str) -> Postings:
    return Postings(*(arrays[prefix + n] for n in ("terms", "starts", "rows", "counts", "lengths")))
