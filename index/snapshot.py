"""An immutable, searchable view of the index: rows, vectors, FAISS and BM25 together.

Besides one vector per passage and per sentence, it keeps the vector of every word piece of
every passage as the model read it in context (float16, memory-mapped from disk), so that a
question's words can be matched one by one (see ranking.py).

Writers build a new snapshot and swap it in; readers keep the one they started with, so a
query running during an ingest or a delete always sees one whole state.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.lexical import BM25
from index.store import Rows
from index.text import Passage


@dataclass(frozen=True)
class DocTokens:
    """One document's passage word pieces: their vectors, spans in the document text and ids."""

    vectors: np.ndarray  # [n, dim] float16, normalized; memory-mapped once saved
    spans: np.ndarray  # [n, 2] int64
    pieces: np.ndarray  # [n] int64
    # One row per passage: its start and end in the document, and its rows in the arrays above.
    blocks: np.ndarray  # [passages, 4] int64

    @classmethod
    def build(cls, blocks: list[tuple[Passage, np.ndarray, np.ndarray, np.ndarray]]) -> DocTokens:
        """From (passage, vectors, spans in the document, piece ids) for each passage; a document
        has at least one passage."""
        bounds = np.cumsum([0] + [len(v) for _, v, _, _ in blocks])
        return cls(
            vectors=np.concatenate([v for _, v, _, _ in blocks]).astype(np.float16),
            spans=np.concatenate([s for _, _, s, _ in blocks]).astype(np.int64),
            pieces=np.concatenate([i for _, _, _, i in blocks]).astype(np.int64),
            blocks=np.array(
                [(p.start, p.end, bounds[i], bounds[i + 1]) for i, (p, _, _, _) in enumerate(blocks)],
                dtype=np.int64,
            ).reshape(-1, 4),
        )

    def save(self, folder: Path, doc_id: str) -> None:
        vectors, meta = folder / f"{doc_id}.npy", folder / f"{doc_id}.npz"
        if isinstance(self.vectors, np.memmap) and self.vectors.filename:
            # Unchanged since the last revision: link the files instead of writing them again.
            source = Path(self.vectors.filename)
            _link_or_copy(source, vectors)
            _link_or_copy(source.with_suffix(".npz"), meta)
            return
        np.save(vectors, self.vectors)
        np.savez(meta, spans=self.spans, pieces=self.pieces, blocks=self.blocks)

    @classmethod
    def load(cls, folder: Path, doc_id: str) -> DocTokens:
        with np.load(folder / f"{doc_id}.npz") as meta:
            spans, pieces, blocks = meta["spans"], meta["pieces"], meta["blocks"]
        return cls(np.load(folder / f"{doc_id}.npy", mmap_mode="r"), spans, pieces, blocks)


@dataclass(frozen=True)
class Snapshot:
    revision: int
    rows: Rows
    passage_vectors: np.ndarray
    sentence_vectors: np.ndarray
    dense: faiss.Index
    lexical: BM25
    sentence_lexical: BM25
    tokens: dict[str, DocTokens]
    # Sentence rows overlapping each passage row.
    passage_sentences: list[np.ndarray]
    doc_passages: dict[str, np.ndarray]
    # Each passage row's word pieces: its document's DocTokens and the range of rows in it.
    passage_tokens: list[tuple[DocTokens, int, int]]
    # In how many passages each word-piece id occurs.
    piece_df: np.ndarray

    @classmethod
    def build(
        cls,
        revision: int,
        rows: Rows,
        passage_vectors: np.ndarray,
        sentence_vectors: np.ndarray,
        tokens: dict[str, DocTokens],
        lexical: BM25 | None = None,
        sentence_lexical: BM25 | None = None,
    ) -> Snapshot:
        assert len(rows.passages) == len(passage_vectors), "passage vectors out of step with rows"
        assert len(rows.sentences) == len(sentence_vectors), "sentence vectors out of step with rows"
        dense = faiss.IndexFlatIP(passage_vectors.shape[1])
        dense.add(passage_vectors)
        if lexical is None:
            lexical = BM25.build([lexical_text(rows, i) for i in range(len(rows.passages))])
        if sentence_lexical is None:
            sentence_lexical = BM25.build([rows.texts[d][s.start : s.end] for d, s in rows.sentences])
        doc_passages: dict[str, list[int]] = {}
        for row, p in enumerate(rows.passages):
            doc_passages.setdefault(p.doc_id, []).append(row)
        passage_tokens = _passage_tokens(rows, tokens)
        return cls(
            revision=revision,
            rows=rows,
            passage_vectors=passage_vectors,
            sentence_vectors=sentence_vectors,
            dense=dense,
            lexical=lexical,
            sentence_lexical=sentence_lexical,
            tokens=tokens,
            passage_sentences=_passage_sentences(rows),
            doc_passages={d: np.array(r, dtype=np.int64) for d, r in doc_passages.items()},
            passage_tokens=passage_tokens,
            piece_df=_piece_df(passage_tokens),
        )

    def piece_idf(self, pieces: np.ndarray) -> np.ndarray:
        """log((N + 1) / (df + 1)) + 1 over the N passages: rare word pieces weigh more."""
        known = pieces < len(self.piece_df)
        df = np.zeros(len(pieces), dtype=np.float64)
        df[known] = self.piece_df[pieces[known]]
        return (np.log((len(self.rows.passages) + 1) / (df + 1)) + 1).astype(np.float32)

    def save(self, folder: Path) -> Snapshot:
        """Write the derived files into a fresh folder, then move it into place. Returns this
        snapshot reading its word-piece vectors from the saved files."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _write_vectors(tmp / "passages.faiss", self.rows.passage_ids, self.passage_vectors)
        _write_vectors(tmp / "sentences.faiss", self.rows.sentence_ids, self.sentence_vectors)
        self.lexical.save(tmp, "bm25-passages")
        self.sentence_lexical.save(tmp, "bm25-sentences")
        (tmp / "tokens").mkdir()
        for doc_id, doc_tokens in self.tokens.items():
            doc_tokens.save(tmp / "tokens", doc_id)
        tmp.rename(folder)
        tokens = _load_tokens(folder, self.rows)
        return dataclasses.replace(self, tokens=tokens, passage_tokens=_passage_tokens(self.rows, tokens))

    @classmethod
    def load(cls, folder: Path, revision: int, rows: Rows) -> Snapshot:
        passages = _read_vectors(folder / "passages.faiss", rows.passage_ids)
        sentences = _read_vectors(folder / "sentences.faiss", rows.sentence_ids)
        return cls.build(
            revision,
            rows,
            passages,
            sentences,
            _load_tokens(folder, rows),
            BM25.load(folder, "bm25-passages"),
            BM25.load(folder, "bm25-sentences"),
        )


def lexical_text(rows: Rows, row: int) -> str:
    """BM25 indexes the title with each passage: questions often name the article's subject."""
    passage = rows.passages[row]
    return rows.documents[passage.doc_id].title + "\n" + passage.text


def _passage_sentences(rows: Rows) -> list[np.ndarray]:
    by_doc: dict[str, list[int]] = {}
    for i, (doc_id, _) in enumerate(rows.sentences):
        by_doc.setdefault(doc_id, []).append(i)
    for members in by_doc.values():
        members.sort(key=lambda i: rows.sentences[i][1].start)
    # Sentences do not overlap, so both their starts and their ends are sorted.
    starts = {d: [rows.sentences[i][1].start for i in m] for d, m in by_doc.items()}
    ends = {d: [rows.sentences[i][1].end for i in m] for d, m in by_doc.items()}
    out = []
    for p in rows.passages:
        lo = bisect.bisect_right(ends.get(p.doc_id, []), p.start)
        hi = bisect.bisect_left(starts.get(p.doc_id, []), p.end)
        out.append(np.array(by_doc.get(p.doc_id, [])[lo:hi], dtype=np.int64))
    return out


def _load_tokens(folder: Path, rows: Rows) -> dict[str, DocTokens]:
    return {doc_id: DocTokens.load(folder / "tokens", doc_id) for doc_id in rows.documents}


def _passage_tokens(rows: Rows, tokens: dict[str, DocTokens]) -> list[tuple[DocTokens, int, int]]:
    blocks = {
        (doc_id, int(start), int(end)): (doc_tokens, int(lo), int(hi))
        for doc_id, doc_tokens in tokens.items()
        for start, end, lo, hi in doc_tokens.blocks
    }
    missing = [p for p in rows.passages if (p.doc_id, p.start, p.end) not in blocks]
    if missing:
        raise ValueError(f"no word-piece vectors for passage {missing[0]}")
    return [blocks[(p.doc_id, p.start, p.end)] for p in rows.passages]


def _piece_df(passage_tokens: list[tuple[DocTokens, int, int]]) -> np.ndarray:
    seen = [np.unique(doc_tokens.pieces[lo:hi]) for doc_tokens, lo, hi in passage_tokens]
    return np.bincount(np.concatenate(seen or [np.zeros(0, dtype=np.int64)]))


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, target)


def _write_vectors(path: Path, ids: list[int], vectors: np.ndarray) -> None:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, np.array(ids, dtype=np.int64))
    faiss.write_index(index, str(path))


def _read_vectors(path: Path, ids: list[int]) -> np.ndarray:
    index: Any = faiss.read_index(str(path))  # an IndexIDMap2, as written
    stored = faiss.vector_to_array(index.id_map)
    if stored.tolist() != ids:
        raise ValueError(f"{path} holds other vectors than the documents table")
    return (
        index.index.reconstruct_n(0, index.ntotal)
        if index.ntotal
        else np.zeros((0, index.d), dtype=np.float32)
    )
