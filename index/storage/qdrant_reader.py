"""The Qdrant backend's reader: one view of the collections, searched and read by ranking."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
from qdrant_client import models as m

from groundqa.index.errors import DocumentNotFound
from groundqa.index.lexical import piece_idf
from groundqa.index.storage import (
    PIECE_ID,
    Reader,
    StaleRead,
    StoredText,
)
from groundqa.index.storage.qdrant_points import (
    SLACK,
    Client,
    bm25_query,
)


class Collections(Protocol):
    """What the reader needs of QdrantStorage (qdrant.py): its client, collections and reads."""

    client: Client
    dimension: int
    passages_name: str
    sentences_name: str

    def records(self, doc_ids: Iterable[str], text: bool = False) -> dict[str, dict[str, Any]]: ...

    def scroll(
        self,
        collection: str,
        where: m.Filter | None,
        exclude: list[str] | None = None,
        fields: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def piece_df(self, pieces: set[int]) -> tuple[int, dict[int, float]]: ...


class QdrantReader(Reader):
    """What one query reads. A point counts only when its version is the one its document names;
    the reader remembers each version it saw, so the texts it returns match the offsets."""

    revision = 0

    def __init__(self, storage: Collections) -> None:
        self.s = storage
        self.client = storage.client
        self.versions: dict[str, str] = {}
        self._payloads: dict[int, dict[str, Any]] = {}
        self._sentences: dict[int, dict[str, Any]] = {}
        self._pinned: list[str] = []  # the documents allowed() read

    # --- versions --------------------------------------------------------------------------

    def _current(self, points: list[tuple[int, dict[str, Any]]]) -> list[bool]:
        """Which points belong to their document's current version."""
        unknown = {p["doc_id"] for _, p in points} - set(self.versions)
        for doc_id, record in self.s.records(unknown).items():
            self.versions[doc_id] = str(record["version"])
        return [self.versions.get(p["doc_id"]) == p["version"] for _, p in points]

    def _found(self, points: list[m.ScoredPoint], n: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(int(p.id), p.payload or {}) for p in points]
        keep = self._current(pairs)
        chosen = [(p.id, p.score) for p, ok in zip(points, keep, strict=True) if ok][:n]
        for (key, payload), ok in zip(pairs, keep, strict=True):
            if ok:
                self._payloads.setdefault(key, payload)
        keys = np.array([int(k) for k, _ in chosen], dtype=np.int64)
        return keys, np.array([s for _, s in chosen], dtype=np.float32)

    # --- passages ----------------------------------------------------------------------------

    def allowed(self, doc_ids: list[str]) -> np.ndarray:
        records = self.s.records(doc_ids)
        unknown = [d for d in doc_ids if d not in records]
        if unknown:
            raise DocumentNotFound(f"doc_ids not in the index: {', '.join(unknown)}", list(unknown))
        for doc_id, record in records.items():
            if self.versions.setdefault(doc_id, str(record["version"])) != record["version"]:
                raise StaleRead(f"{doc_id} changed during the query")
        self._pinned = list(doc_ids)
        where = m.Filter(
            must=[m.FieldCondition(key="version", match=m.MatchAny(any=[self.versions[d] for d in doc_ids]))]
        )
        keys = [int(p["_id"]) for p in self.s.scroll(self.s.passages_name, where, fields=[])]
        self._check_pinned()  # the points may have been replaced while they were listed
        return np.array(sorted(keys), dtype=np.int64)

    def _check_pinned(self) -> None:
        """StaleRead unless the documents allowed() read still hold the versions it read."""
        now = self.s.records(self._pinned)
        if any(d not in now or now[d]["version"] != self.versions[d] for d in self._pinned):
            raise StaleRead("a document changed during the query")

    def _query(
        self, collection: str, query: Any, using: str, n: int, allowed: np.ndarray | None, **extra: Any
    ) -> list[m.ScoredPoint]:
        """A search, within the allowed keys if given. Found points are checked against their
        document's version later (texts()); finding none within the allowed keys may mean their
        version was deleted meanwhile, so then the documents allowed() read are checked."""
        where = (
            None if allowed is None else m.Filter(must=[m.HasIdCondition(has_id=[int(k) for k in allowed])])
        )
        result = self.client.query_points(
            collection, query=query, using=using, limit=n, query_filter=where, **extra
        )
        if allowed is not None and not result.points:
            self._check_pinned()
        return list(result.points)

    def dense_search(
        self, vector: np.ndarray, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        found = self._query(
            self.s.passages_name,
            vector.astype(np.float32).tolist(),
            "dense",
            n + SLACK,
            allowed,
            with_payload=["doc_id", "version", "start", "end", "sentences"],
        )
        return self._found(found, n)

    def lexical_search(
        self, term_ids: np.ndarray, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(term_ids) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        found = self._query(
            self.s.passages_name,
            bm25_query(term_ids),
            "bm25",
            n + SLACK,
            allowed,
            with_payload=["doc_id", "version", "start", "end", "sentences"],
        )
        return self._found([p for p in found if p.score > 0], n)

    def passage_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self._vectors(self.s.passages_name, keys)

    def _vectors(self, collection: str, keys: np.ndarray) -> np.ndarray:
        found = self.client.retrieve(
            collection, [int(k) for k in keys], with_vectors=["dense"], with_payload=False
        )
        by_id = {int(p.id): p.vector["dense"] for p in found if isinstance(p.vector, dict)}
        out = np.zeros((len(keys), self.s.dimension), dtype=np.float32)
        for i, k in enumerate(keys):
            if int(k) not in by_id:
                raise StaleRead(f"point {int(k)} was removed during the query")
            out[i] = by_id[int(k)]
        return out

    def passage_bm25(self, keys: np.ndarray, term_ids: np.ndarray) -> np.ndarray:
        return self._bm25(self.s.passages_name, keys, term_ids)

    def _bm25(self, collection: str, keys: np.ndarray, term_ids: np.ndarray) -> np.ndarray:
        out = np.zeros(len(keys), dtype=np.float32)
        if len(term_ids) == 0 or len(keys) == 0:
            return out
        found = self._query(collection, bm25_query(term_ids), "bm25", len(keys), keys, with_payload=False)
        scores = {int(p.id): p.score for p in found}
        for i, k in enumerate(keys):
            out[i] = scores.get(int(k), 0.0)
        return out

    def passages(self, keys: np.ndarray) -> list[tuple[str, int, int]]:
        payloads = self._passage_payloads(keys)
        return [(str(p["doc_id"]), int(p["start"]), int(p["end"])) for p in payloads]

    def _passage_payloads(self, keys: np.ndarray) -> list[dict[str, Any]]:
        missing = [int(k) for k in keys if int(k) not in self._payloads]
        if missing:
            found = self.client.retrieve(
                self.s.passages_name,
                missing,
                with_payload=["doc_id", "version", "start", "end", "sentences"],
            )
            for p in found:
                self._payloads[int(p.id)] = p.payload or {}
        if any(int(k) not in self._payloads for k in keys):
            raise StaleRead("a passage was removed during the query")
        return [self._payloads[int(k)] for k in keys]

    # --- sentences ---------------------------------------------------------------------------

    def sentences_of(self, keys: np.ndarray) -> list[np.ndarray]:
        return [np.array(p["sentences"], dtype=np.int64) for p in self._passage_payloads(keys)]

    def sentence_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self._vectors(self.s.sentences_name, keys)

    def sentence_bm25(self, keys: np.ndarray, term_ids: np.ndarray) -> np.ndarray:
        return self._bm25(self.s.sentences_name, keys, term_ids)

    def sentence_spans(self, keys: np.ndarray) -> np.ndarray:
        missing = [int(k) for k in keys if int(k) not in self._sentences]
        if missing:
            found = self.client.retrieve(self.s.sentences_name, missing, with_payload=["start", "end"])
            for p in found:
                self._sentences[int(p.id)] = p.payload or {}
        if any(int(k) not in self._sentences for k in keys):
            raise StaleRead("a sentence was removed during the query")
        return np.array(
            [(self._sentences[int(k)]["start"], self._sentences[int(k)]["end"]) for k in keys], dtype=np.int64
        ).reshape(-1, 2)

    # --- word pieces and documents -------------------------------------------------------------

    def pieces(self, key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = self.client.retrieve(
            self.s.passages_name,
            [int(key)],
            with_vectors=["pieces"],
            with_payload=["piece_spans", "piece_ids"],
        )
        if not found or not isinstance(found[0].vector, dict):
            raise StaleRead(f"passage {key} was removed during the query")
        payload = found[0].payload or {}
        vectors = np.array(found[0].vector["pieces"], dtype=np.float32).reshape(-1, self.s.dimension)
        spans = np.array(payload["piece_spans"], dtype=np.int32).reshape(-1, 2)
        return vectors, spans, np.array(payload["piece_ids"], dtype=PIECE_ID)

    def word_match(self, keys: np.ndarray, folded: np.ndarray) -> np.ndarray | None:
        """Qdrant's MaxSim over the passages' word pieces: one call, no vectors sent back."""
        found = self._query(
            self.s.passages_name, folded.tolist(), "pieces", len(keys), keys, with_payload=False
        )
        scores = {int(p.id): p.score for p in found}
        return np.array([scores.get(int(k), 0.0) for k in keys], dtype=np.float64)

    def piece_idf(self, pieces: np.ndarray) -> np.ndarray:
        """As the embedded index weighs them, from each piece's document frequency."""
        pieces = np.asarray(pieces, dtype=np.int64)
        rows, df = self.s.piece_df({int(p) for p in pieces})
        values = np.array([df[int(p)] for p in pieces], dtype=np.float64)
        return piece_idf(values, rows)

    def texts(self, keys: np.ndarray) -> dict[str, StoredText]:
        payloads = self._passage_payloads(keys)
        want = {str(p["doc_id"]): str(p["version"]) for p in payloads}
        found = self.s.records(want, text=True)
        for doc_id, version in want.items():
            if doc_id not in found or found[doc_id]["version"] != version:
                raise StaleRead(f"{doc_id} changed during the query")
        return {
            d: StoredText(str(r["title"]), str(r["text"]), tuple(r.get("page_starts", ())))
            for d, r in found.items()
        }
