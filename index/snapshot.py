"""An immutable, searchable view of the index: rows, vectors, FAISS and BM25 together.

Writers build a new snapshot and swap it in; readers keep the one they started with, so a
query running during an ingest or a delete always sees one whole state.
"""

from __future__ import annotations

import bisect
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.lexical import BM25
from index.store import Rows


@dataclass(frozen=True)
class Snapshot:
    revision: int
    rows: Rows
    passage_vectors: np.ndarray
    sentence_vectors: np.ndarray
    dense: faiss.Index
    lexical: BM25
    sentence_lexical: BM25
    # Sentence rows overlapping each passage row.
    passage_sentences: list[np.ndarray]
    doc_passages: dict[str, np.ndarray]

    @classmethod
    def build(
        cls,
        revision: int,
        rows: Rows,
        passage_vectors: np.ndarray,
        sentence_vectors: np.ndarray,
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
        return cls(
            revision=revision,
            rows=rows,
            passage_vectors=passage_vectors,
            sentence_vectors=sentence_vectors,
            dense=dense,
            lexical=lexical,
            sentence_lexical=sentence_lexical,
            passage_sentences=_passage_sentences(rows),
            doc_passages={d: np.array(r, dtype=np.int64) for d, r in doc_passages.items()},
        )

    def save(self, folder: Path) -> None:
        """Write the derived files into a fresh folder, then move it into place."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _write_vectors(tmp / "passages.faiss", self.rows.passage_ids, self.passage_vectors)
        _write_vectors(tmp / "sentences.faiss", self.rows.sentence_ids, self.sentence_vectors)
        self.lexical.save(tmp, "bm25-passages")
        self.sentence_lexical.save(tmp, "bm25-sentences")
        tmp.rename(folder)

    @classmethod
    def load(cls, folder: Path, revision: int, rows: Rows) -> Snapshot:
        passages = _read_vectors(folder / "passages.faiss", rows.passage_ids)
        sentences = _read_vectors(folder / "sentences.faiss", rows.sentence_ids)
        return cls.build(
            revision,
            rows,
            passages,
            sentences,
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
