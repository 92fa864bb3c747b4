"""An immutable segment: the vectors, word pieces and posting lists of a batch of documents, in
one file that is written once, memory-mapped when read (one file descriptor) and never changed.

A document's passages, sentences and word pieces lie in one run of rows each, so a segment can be
merged with others by copying the runs of the documents still live.
"""

from __future__ import annotations

import json
import mmap
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from groundqa.index import codec
from groundqa.index.errors import IndexDamaged
from groundqa.index.lexical import Postings
from groundqa.index.storage import PIECE_ID, DocumentVectors, PassagePieces

MAGIC = b"GQASEG3\0"
ALIGN = 64
# Past this many passages a segment gets an approximate dense index (IVF, saved beside it): exact
# search over 101,520 passages took 5.7 ms a query here, IVF 1.1 ms (README, "Index growth").
ANN_MIN_PASSAGES = 100_000
# Lists probed per query; recall@100 against exact search is in the README's benchmark table.
NPROBE = 32


@dataclass
class Segment:
    path: Path
    doc_ids: list[str]
    doc_sha256: list[str]
    arrays: dict[str, np.ndarray]
    passage_postings: Postings
    sentence_postings: Postings
    _dense: Any = field(repr=False, default=None)

    # --- reading --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Segment:
        """The segment at path, its size and each section's CRC-32 checked (IndexDamaged names
        the file and what is wrong): a damaged file is refused, never read as numbers."""
        try:
            with path.open("rb") as f:
                if f.read(8) != MAGIC:
                    raise damaged(path, "it is not a groundqa segment")
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
                base = _aligned(16 + size)
                length = os.fstat(f.fileno()).st_size
                want = base + max(
                    (
                        o + int(np.prod(sh)) * np.dtype(dt).itemsize
                        for o, dt, sh, *_ in header["arrays"].values()
                    ),
                    default=0,
                )
                if length < want:
                    raise damaged(path, f"it is truncated: {length:,} of {want:,} bytes")
                # The arrays below are views of this mapping and keep it (one descriptor) alive.
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:  # a header that does not parse
            raise damaged(path, f"its header cannot be read ({type(exc).__name__})") from exc
        arrays = {}
        for name, (offset, dtype, shape, *crc) in header["arrays"].items():
            count = int(np.prod(shape))
            array = (
                np.frombuffer(mapped, dtype=dtype, count=count, offset=base + offset)
                if count
                else np.zeros(0, dtype=dtype)
            )
            if crc and _crc(array) != crc[0]:  # segments before 0.7.0 carry no checksums
                raise damaged(path, f"its section {name} fails its checksum")
            arrays[name] = array.reshape(shape)
        return cls(
            path,
            [d for d, _ in header["docs"]],
            [sha for _, sha in header["docs"]],
            arrays,
            _postings(arrays, "p_"),
            _postings(arrays, "s_"),
        )

    @property
    def number(self) -> int:
        return segment_number(self.path)

    @property
    def passages(self) -> int:
        return len(self.arrays["passage_doc"])

    @property
    def dimension(self) -> int:
        return int(self.arrays["passage_vectors"].shape[1])

    def dense(self) -> faiss.Index:
        """The approximate index saved beside a large segment (memory-mapped), or exact inner
        product over the passage vectors, built on first use."""
        if self._dense is None:
            ann = ann_path(self.path)
            if ann.exists():
                self._dense = faiss.read_index(str(ann), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            else:
                index = faiss.IndexFlatIP(self.dimension)
                index.add(np.ascontiguousarray(self.arrays["passage_vectors"]))
                self._dense = index
        return self._dense

    def search_parameters(self) -> faiss.SearchParameters:
        if isinstance(self.dense(), faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = NPROBE
            return params
        return faiss.SearchParameters()

    def dump(self, n: int) -> DocumentVectors:
        """Local document n's rows as they were written (texts left empty: the caller has them)."""
        a = self.arrays
        p_lo, p_hi = (int(v) for v in a["doc_passages"][n : n + 2])
        s_lo, s_hi = (int(v) for v in a["doc_sentences"][n : n + 2])
        pieces = []
        for lo, hi in a["passage_pieces"][p_lo:p_hi]:
            cut = slice(int(lo), int(hi))
            pieces.append(
                PassagePieces(
                    a["piece_codes"][cut],
                    a["piece_centroids"][cut],
                    a["piece_scales"][cut],
                    a["piece_spans"][cut],
                    a["piece_ids"][cut],
                )
            )
        return DocumentVectors(
            doc_id=self.doc_ids[n],
            sha256=self.doc_sha256[n],
            passages=np.array(a["passage_span"][p_lo:p_hi]),
            passage_vectors=np.array(a["passage_vectors"][p_lo:p_hi]),
            passage_texts=[],
            pieces=pieces,
            sentences=np.array(a["sentence_span"][s_lo:s_hi]),
            sentence_vectors=np.array(a["sentence_vectors"][s_lo:s_hi], dtype=np.float32),
            sentence_texts=[],
        )

    def piece_vectors(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Passage row's word pieces: decoded vectors, spans in the text, ids."""
        lo, hi = (int(v) for v in self.arrays["passage_pieces"][row])
        a = self.arrays
        vectors = codec.codebook().decode(
            a["piece_codes"][lo:hi], a["piece_centroids"][lo:hi], a["piece_scales"][lo:hi]
        )
        return vectors, a["piece_spans"][lo:hi], a["piece_ids"][lo:hi]


def build(documents: Sequence[DocumentVectors], dimension: int) -> dict[str, list[np.ndarray]]:
    """The arrays of a new segment holding these documents, in this order."""
    passage_doc, sentence_doc, doc_passages, doc_sentences = [], [], [0], [0]
    passage_sentences, passage_pieces = [], []
    piece_rows = 0
    sentence_rows = 0
    pieces: list[PassagePieces] = []
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
        for found in d.pieces:
            pieces.append(found)
            passage_pieces.append((piece_rows, piece_rows + len(found.ids)))
            piece_rows += len(found.ids)
    width = codec.codebook().centroids.shape[1] // 4
    ids = _cat([p.ids for p in pieces], PIECE_ID, (0,))
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
        "piece_codes": _cat([p.codes for p in pieces], np.uint8, (0, width)),
        "piece_centroids": _cat([p.centroids for p in pieces], np.uint16, (0,)),
        "piece_scales": _cat([p.scales for p in pieces], np.float16, (0,)),
        "piece_spans": _cat([p.spans for p in pieces], np.int32, (0, 2)),
        "piece_ids": ids,
        "piece_df": _piece_df_of(np.array(passage_pieces, dtype=np.int64).reshape(-1, 2), ids).astype(
            np.int32
        ),
        **_postings_arrays(passages, "p_"),
        **_postings_arrays(sentences, "s_"),
    }
    return {name: [array] for name, array in arrays.items()}


def merge(
    parts: Sequence[tuple[Segment, np.ndarray]],
) -> tuple[list[tuple[str, str]], dict[str, list[np.ndarray]]]:
    """The documents (doc_id, sha256) and arrays of one segment holding the given documents (local
    numbers) of each segment, in order. Runs of consecutive documents are copied as one slice; the
    big arrays are returned as slices of the sources, copied when written."""
    docs: list[tuple[str, str]] = []
    out: dict[str, list[np.ndarray]] = {
        "doc_passages": [np.zeros(1, np.int64)],
        "doc_sentences": [np.zeros(1, np.int64)],
    }
    bm25: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"p_": [], "s_": []}
    lengths: dict[str, list[np.ndarray]] = {"p_": [], "s_": []}
    df = np.zeros(0, dtype=np.int64)
    at = {"doc": 0, "passage": 0, "sentence": 0, "piece": 0}

    def put(name: str, value: np.ndarray) -> None:
        out.setdefault(name, []).append(value)

    for seg, keep in parts:
        a = seg.arrays
        passage_map = np.full(seg.passages, -1, dtype=np.int64)
        sentence_map = np.full(len(a["sentence_doc"]), -1, dtype=np.int64)
        for first, last in _runs(np.asarray(keep, dtype=np.int64)):
            p_lo, p_hi = int(a["doc_passages"][first]), int(a["doc_passages"][last])
            s_lo, s_hi = int(a["doc_sentences"][first]), int(a["doc_sentences"][last])
            k_lo = int(a["passage_pieces"][p_lo, 0]) if p_hi > p_lo else 0
            k_hi = int(a["passage_pieces"][p_hi - 1, 1]) if p_hi > p_lo else 0
            docs += [(seg.doc_ids[n], seg.doc_sha256[n]) for n in range(first, last)]
            put("passage_doc", a["passage_doc"][p_lo:p_hi] - first + at["doc"])
            put("sentence_doc", a["sentence_doc"][s_lo:s_hi] - first + at["doc"])
            put("doc_passages", a["doc_passages"][first + 1 : last + 1] - p_lo + at["passage"])
            put("doc_sentences", a["doc_sentences"][first + 1 : last + 1] - s_lo + at["sentence"])
            for name in ("passage_span", "passage_vectors"):
                put(name, a[name][p_lo:p_hi])
            put("passage_sentences", a["passage_sentences"][p_lo:p_hi] - s_lo + at["sentence"])
            put("passage_pieces", a["passage_pieces"][p_lo:p_hi] - k_lo + at["piece"])
            for name in ("sentence_span", "sentence_vectors"):
                put(name, a[name][s_lo:s_hi])
            for name in ("piece_codes", "piece_centroids", "piece_scales", "piece_spans", "piece_ids"):
                put(name, a[name][k_lo:k_hi])
            run_df = _piece_df_of(a["passage_pieces"][p_lo:p_hi] - k_lo, a["piece_ids"][k_lo:k_hi])
            df = _add(df, run_df)
            passage_map[p_lo:p_hi] = np.arange(p_hi - p_lo) + at["passage"]
            sentence_map[s_lo:s_hi] = np.arange(s_hi - s_lo) + at["sentence"]
            lengths["p_"].append(seg.passage_postings.lengths[p_lo:p_hi])
            lengths["s_"].append(seg.sentence_postings.lengths[s_lo:s_hi])
            at["doc"] += last - first
            at["passage"] += p_hi - p_lo
            at["sentence"] += s_hi - s_lo
            at["piece"] += k_hi - k_lo
        for prefix, postings, row_map in (
            ("p_", seg.passage_postings, passage_map),
            ("s_", seg.sentence_postings, sentence_map),
        ):
            ids, rows, counts = postings.triples()
            new_rows = row_map[rows]
            kept = new_rows >= 0
            bm25[prefix].append((ids[kept], new_rows[kept], counts[kept]))
    first_seg = parts[0][0].arrays
    for name, array in first_seg.items():  # empty arrays of the right type where nothing was kept
        if name.startswith(("piece_", "passage_", "sentence_")):
            out.setdefault(name, [array[:0]])
    out["piece_df"] = [df.astype(np.int32)]
    for prefix, triples in bm25.items():
        postings = Postings.from_triples(
            np.concatenate([t[0] for t in triples]),
            np.concatenate([t[1] for t in triples]).astype(np.int32),
            np.concatenate([t[2] for t in triples]),
            _cat(lengths[prefix], np.uint32, (0,)),
        )
        out.update({name: [array] for name, array in _postings_arrays(postings, prefix).items()})
    return docs, out


def _runs(numbers: np.ndarray) -> list[tuple[int, int]]:
    """Sorted numbers as half-open runs of consecutive values: [0, 1, 2, 5] -> [(0, 3), (5, 6)]."""
    if len(numbers) == 0:
        return []
    breaks = np.nonzero(np.diff(numbers) != 1)[0] + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(numbers)]])
    return [(int(numbers[s]), int(numbers[e - 1]) + 1) for s, e in zip(starts, ends, strict=True)]


def _piece_df_of(ranges: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """In how many of these passages (piece ranges into ids) each word-piece id occurs."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    passage = np.repeat(np.arange(len(ranges)), ranges[:, 1] - ranges[:, 0])
    pairs = np.unique(passage * (int(ids.max()) + 1) + ids.astype(np.int64))
    return np.bincount(pairs % (int(ids.max()) + 1))


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(len(a), len(b)), dtype=np.int64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out


def write(path: Path, docs: list[tuple[str, str]], arrays: dict[str, list[np.ndarray]]) -> None:
    """Write a segment file and make it durable (the file, then its folder, are fsync'd)."""
    layout: dict[str, tuple[int, str, tuple[int, ...], int]] = {}
    offset = 0
    for name, chunks in arrays.items():
        first = chunks[0]
        rows = sum(len(c) for c in chunks)
        shape = (rows, *first.shape[1:])
        offset = _aligned(offset)
        crc = 0  # of the section's bytes as written: checked at each open
        for chunk in chunks:
            crc = _crc(np.ascontiguousarray(chunk, dtype=first.dtype), crc)
        layout[name] = (offset, first.dtype.str, shape, crc)
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


def damaged(path: Path, what: str) -> IndexDamaged:
    return IndexDamaged(
        f"the index file {path} is damaged ({what}): restore the index folder from a backup, "
        "or run 'groundqa rebuild' to make it again from the stored texts"
    )


def segment_number(path: Path) -> int:
    """seg-12.bin (or seg-12.ivf) is segment 12."""
    return int(path.stem.removeprefix("seg-"))


def ann_path(path: Path) -> Path:
    return path.with_suffix(".ivf")


def write_ann(path: Path, vectors: np.ndarray) -> None:
    """An IVF index over the vectors: 4 sqrt(n) lists, trained on a sample (faiss's advice), its
    vectors in 8 bits (384 bytes each, not 1,536 again): ranking rescores the candidates it
    proposes with the exact vectors anyway."""
    lists = int(4 * np.sqrt(len(vectors)))
    dimension = vectors.shape[1]
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dimension),
        dimension,
        lists,
        faiss.ScalarQuantizer.QT_8bit,
        faiss.METRIC_INNER_PRODUCT,
    )
    sample = np.random.default_rng(0).choice(len(vectors), min(len(vectors), 64 * lists), replace=False)
    index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    for start in range(0, len(vectors), 100_000):
        index.add(np.ascontiguousarray(vectors[start : start + 100_000], dtype=np.float32))
    faiss.write_index(index, str(path))
    with path.open("rb") as f:
        os.fsync(f.fileno())


def sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc(array: np.ndarray, start: int = 0) -> int:
    """CRC-32 of a contiguous array's bytes (zlib's: about 1 GB/s here, no copy)."""
    return zlib.crc32(array.data.cast("B"), start) if array.size else start


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _cat(parts: list[np.ndarray], dtype: Any, empty: tuple[int, ...]) -> np.ndarray:
    if not parts:
        return np.zeros(empty, dtype=dtype)
    return np.concatenate([np.asarray(p).reshape(-1, *empty[1:]) for p in parts]).astype(dtype)


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
