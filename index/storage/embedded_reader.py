"""The embedded backend's reader: one committed state of the segments, searched and read by ranking."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np

from groundqa.index.errors import DocumentNotFound
from groundqa.index.lexical import BM25Params, Postings, piece_idf, scores, scores_of, stats
from groundqa.index.storage import (
    Reader,
    StaleRead,
    StoredText,
)
from groundqa.index.storage.segment import Segment
from groundqa.index.storage.store import Store


class SegmentReader(Reader):
    def __init__(
        self,
        revision: int,
        parts: list[tuple[Segment, np.ndarray]],
        db: Store,
        dimension: int,
        bm25: BM25Params,
    ) -> None:
        self.revision = revision
        self.segments = [s for s, _ in parts]
        self.db = db
        self.dimension = dimension
        self.bm25 = bm25
        self.live: list[np.ndarray] = []  # per segment: live mask of its passages
        self.live_docs: list[np.ndarray] = []
        for seg, docs in parts:
            live_docs = np.zeros(len(seg.doc_ids), dtype=bool)
            live_docs[docs] = True
            self.live_docs.append(live_docs)
            self.live.append(live_docs[seg.arrays["passage_doc"]])
        self.p_base = np.cumsum([0] + [s.passages for s in self.segments])
        self.s_base = np.cumsum([0] + [len(s.arrays["sentence_doc"]) for s in self.segments])
        self.rows = int(self.p_base[-1])
        df_len = max((len(s.arrays["piece_df"]) for s in self.segments), default=0)
        self.piece_df = np.zeros(df_len, dtype=np.int64)
        for s in self.segments:
            self.piece_df[: len(s.arrays["piece_df"])] += s.arrays["piece_df"]
        self.numbers = {seg.number: i for i, seg in enumerate(self.segments)}

    # --- keys --------------------------------------------------------------------------------

    def _split(self, keys: np.ndarray, base: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(segment, positions in keys, rows in the segment) for each segment the keys touch."""
        keys = np.asarray(keys, dtype=np.int64)
        which = np.searchsorted(base, keys, side="right") - 1
        for i in np.unique(which):
            at = np.nonzero(which == i)[0]
            yield int(i), at, keys[at] - base[i]

    # --- passages ----------------------------------------------------------------------------

    def allowed(self, doc_ids: list[str]) -> np.ndarray:
        places = self.db.places(doc_ids)
        unknown = [d for d in doc_ids if d not in places]
        if unknown:
            raise DocumentNotFound(f"doc_ids not in the index: {', '.join(unknown)}", list(unknown))
        parts = []
        for d, (number, n) in places.items():
            i = self.numbers.get(number)
            if i is None or not self.live_docs[i][n]:
                raise StaleRead(f"{d} changed after revision {self.revision}")
            bounds = self.segments[i].arrays["doc_passages"]
            parts.append(np.arange(bounds[n], bounds[n + 1]) + self.p_base[i])
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def dense_search(
        self, vector: np.ndarray, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None:
            sims = self.passage_vectors(allowed) @ vector
            return top_of(allowed, sims, n)
        keys, sims = [], []
        for i, seg in enumerate(self.segments):
            live = self.live[i]
            if not live.any():
                continue
            params = seg.search_parameters()
            if not live.all():
                # The bitmap and the selector must outlive the search: faiss keeps pointers to them.
                bitmap = np.packbits(live, bitorder="little")
                selector = faiss.IDSelectorBitmap(len(live), faiss.swig_ptr(bitmap))
                params.sel = selector
            found_sims, rows = seg.dense().search(vector[None, :], min(n, seg.passages), params=params)
            real = rows[0] >= 0
            keys.append(rows[0][real] + self.p_base[i])
            sims.append(found_sims[0][real])
        if not keys:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return top_of(np.concatenate(keys), np.concatenate(sims), n)

    def lexical_search(
        self, terms: np.ndarray, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(terms) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if allowed is not None:
            found = self.passage_bm25(allowed, terms)
            positive = found > 0
            return top_of(allowed[positive], found[positive], n)
        st = stats([s.passage_postings for s in self.segments], terms)
        keys, values = [], []
        for i, seg in enumerate(self.segments):
            found = scores(seg.passage_postings, terms, st, self.bm25)
            rows = np.nonzero((found > 0) & self.live[i])[0]
            keys.append(rows + self.p_base[i])
            values.append(found[rows])
        if not keys:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return top_of(np.concatenate(keys), np.concatenate(values), n)

    def _gather(self, keys: np.ndarray, base: np.ndarray, name: str, width: int, dtype: type) -> np.ndarray:
        """Rows of one segment array, for keys spread over the segments."""
        out: np.ndarray = np.zeros((len(keys), width), dtype=dtype)
        for i, at, rows in self._split(keys, base):
            out[at] = self.segments[i].arrays[name][rows]
        return out

    def passage_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self._gather(keys, self.p_base, "passage_vectors", self.dimension, np.float32)

    def passage_bm25(self, keys: np.ndarray, terms: np.ndarray) -> np.ndarray:
        return self._bm25(keys, terms, self.p_base, [s.passage_postings for s in self.segments])

    def _bm25(
        self, keys: np.ndarray, terms: np.ndarray, base: np.ndarray, parts: list[Postings]
    ) -> np.ndarray:
        out = np.zeros(len(keys), dtype=np.float32)
        if len(terms) == 0 or len(keys) == 0:
            return out
        st = stats(parts, terms)
        for i, at, rows in self._split(keys, base):
            order = np.argsort(rows)
            out[at[order]] = scores_of(parts[i], rows[order], terms, st, self.bm25)
        return out

    def passages(self, keys: np.ndarray) -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = [("", 0, 0)] * len(keys)
        for i, at, rows in self._split(keys, self.p_base):
            seg = self.segments[i]
            docs, spans = seg.arrays["passage_doc"][rows], seg.arrays["passage_span"][rows]
            for j, d, (start, end) in zip(at, docs, spans, strict=True):
                out[j] = (seg.doc_ids[d], int(start), int(end))
        return out

    # --- sentences ---------------------------------------------------------------------------

    def sentences_of(self, keys: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(keys)
        for i, at, rows in self._split(keys, self.p_base):
            ranges = self.segments[i].arrays["passage_sentences"][rows]
            for j, (lo, hi) in zip(at, ranges, strict=True):
                out[j] = np.arange(lo, hi, dtype=np.int64) + self.s_base[i]
        return out

    def sentence_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self._gather(keys, self.s_base, "sentence_vectors", self.dimension, np.float32)

    def sentence_bm25(self, keys: np.ndarray, terms: np.ndarray) -> np.ndarray:
        return self._bm25(keys, terms, self.s_base, [s.sentence_postings for s in self.segments])

    def sentence_spans(self, keys: np.ndarray) -> np.ndarray:
        return self._gather(keys, self.s_base, "sentence_span", 2, np.int64)

    # --- word pieces and documents -------------------------------------------------------------

    def pieces(self, key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = int(np.searchsorted(self.p_base, key, side="right") - 1)
        return self.segments[i].piece_vectors(int(key - self.p_base[i]))

    def piece_idf(self, pieces: np.ndarray) -> np.ndarray:
        pieces = np.asarray(pieces, dtype=np.int64)
        known = pieces < len(self.piece_df)
        df = np.zeros(len(pieces), dtype=np.float64)
        df[known] = self.piece_df[pieces[known]]
        return piece_idf(df, self.rows)

    def texts(self, keys: np.ndarray) -> dict[str, StoredText]:
        """From SQLite, which may have moved on since this reader's revision: a text whose sha256
        is not the one this reader's offsets were made for raises StaleRead."""
        want: dict[str, str] = {}
        for i, _, rows in self._split(keys, self.p_base):
            seg = self.segments[i]
            for n in seg.arrays["passage_doc"][rows]:
                want[seg.doc_ids[n]] = seg.doc_sha256[n]
        found = self.db.texts(set(want))
        for doc_id, sha in want.items():
            if doc_id not in found or found[doc_id][2] != sha:
                raise StaleRead(f"{doc_id} changed after revision {self.revision}")
        return {doc_id: StoredText(title, text, pages) for doc_id, (title, text, _, pages) in found.items()}


def top_of(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best, best first; ties keep key order."""
    order = np.lexsort((keys, -values))[:n]
    return keys[order].astype(np.int64), values[order].astype(np.float32)
