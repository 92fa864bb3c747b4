"""The Qdrant backend: the index in a Qdrant server or cluster, shared by stateless replicas.

Three collections under a prefix: `documents` (one point per document: its text, title, sha256 and
current version, plus one point of metadata), `passages` (dense vector, BM25 sparse vector with
Qdrant's IDF modifier, the word pieces as a MaxSim multivector on disk, and a payload with doc_id,
version, offsets, the pieces' spans and ids) and `sentences` (dense and BM25, doc_id, version,
offsets). Ranking stays in index/ranking.py: Qdrant proposes candidates and returns rows.

A document's points are written under a new version (a random id) before its document point names
that version, so readers see a document's passages all together or not at all: a reader accepts a
point only when its version is the one the document point names (and checks it again when it
reads the text). The old version's points are deleted after the switch; points orphaned by a
writer that died in between are removed by `compact` once they are older than ORPHAN_AGE.
Two replicas that write the same doc_id at once: the last switch wins, nothing else is lost.

`GROUNDQA_QDRANT_URL=local:DIR` runs qdrant-client's local mode (one process, brute-force search)
and `edge:DIR` Qdrant's own engine in this process (index/qdrant_edge.py): for trials and tests.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as m

from groundqa.index import codec
from groundqa.index.errors import DocumentNotFound, IndexMismatch, SetupError
from groundqa.index.lexical import BM25Params, lexical_input, piece_idf, term_id, term_weight, terms
from groundqa.index.storage import (
    PIECE_ID,
    Document,
    DocumentVectors,
    Ingested,
    NewDocument,
    Original,
    Prepared,
    Reader,
    StaleRead,
    Storage,
    StoredText,
    compare_meta,
    not_found,
    settle,
)

# Points of a version that no document names are removed by compact only after this long: a
# writer may be between writing them and switching its document to them.
ORPHAN_AGE = 600.0
# BM25's mean length (in terms) is fixed when the collections are made, since Qdrant stores each
# row's BM25 weight: the means over 2,000 SQuAD paragraphs (3,760 passages, titles included).
# `groundqa migrate` uses the source index's own means instead.
PASSAGE_TERMS = 49.1
SENTENCE_TERMS = 13.7
# Extra candidates asked of Qdrant, for the points of other versions a reader drops.
SLACK = 20
UPSERT_BATCH = 64
# Seconds between looks at the revision token that renews the cached word-piece frequencies.
REVISION_CHECK = 1.0
_META_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "groundqa:meta"))


def sparse_index(term: int) -> int:
    """Qdrant's sparse indices are 32-bit: the low half of lexical.term_id's 64-bit id."""
    return int(term) & 0xFFFFFFFF


def bm25_document(text: str, mean_length: float, params: BM25Params) -> m.SparseVector:
    """A row's BM25 term weights without idf (Qdrant multiplies by idf at query time)."""
    words = terms(text)
    counts: Counter[int] = Counter(sparse_index(term_id(t)) for t in words)
    indices = sorted(counts)
    tf = np.array([counts[i] for i in indices], dtype=np.float64)
    values = term_weight(tf, np.full(len(tf), float(len(words))), mean_length, params)
    return m.SparseVector(indices=indices, values=[float(v) for v in values])


def bm25_query(term_ids: np.ndarray) -> m.SparseVector:
    """A query's terms (lexical.query_terms, repeated as they occur) as a sparse vector."""
    counts = Counter(sparse_index(t) for t in term_ids)
    return m.SparseVector(indices=sorted(counts), values=[float(counts[i]) for i in sorted(counts)])


def piece_set(ids: np.ndarray) -> m.SparseVector:
    """Which word pieces a passage holds: Qdrant's IDF of this vector gives their document frequency."""
    unique = sorted({int(i) for i in ids})
    return m.SparseVector(indices=unique, values=[1.0] * len(unique))


def df_from_idf(idf: np.ndarray, rows: int) -> np.ndarray:
    """Invert Qdrant's IDF (lexical.bm25_idf's formula) to the document frequency."""
    x = np.expm1(idf.astype(np.float64))
    return np.clip(np.rint((rows + 0.5 - 0.5 * x) / (1 + x)), 0, rows)


def document_points(
    vectors: DocumentVectors, version: str, lengths: tuple[float, float], params: BM25Params
) -> tuple[list[m.PointStruct], list[m.PointStruct]]:
    """A document's sentence and passage points, under a version."""
    p_lengths, s_lengths = lengths
    common = {"doc_id": vectors.doc_id, "version": version, "written": time.time()}
    s_keys = [point_key("s", version, i) for i in range(len(vectors.sentences))]
    sentences = [
        m.PointStruct(
            id=key,
            vector={
                "dense": vectors.sentence_vectors[i].astype(np.float32).tolist(),
                "bm25": bm25_document(vectors.sentence_texts[i], s_lengths, params),
            },
            payload={**common, "start": int(start), "end": int(end)},
        )
        for i, (key, (start, end)) in enumerate(zip(s_keys, vectors.sentences, strict=True))
    ]
    lo = np.searchsorted(vectors.sentences[:, 1], vectors.passages[:, 0], side="right")
    hi = np.searchsorted(vectors.sentences[:, 0], vectors.passages[:, 1], side="left")
    passages = []
    for i, (start, end) in enumerate(vectors.passages):
        found = vectors.pieces[i]
        passages.append(
            m.PointStruct(
                id=point_key("p", version, i),
                vector={
                    "dense": vectors.passage_vectors[i].astype(np.float32).tolist(),
                    "bm25": bm25_document(vectors.passage_texts[i], p_lengths, params),
                    "pieces": codec.codebook().decode(found.codes, found.centroids, found.scales).tolist(),
                    "piece_set": piece_set(found.ids),
                },
                payload={
                    **common,
                    "start": int(start),
                    "end": int(end),
                    "sentences": s_keys[int(lo[i]) : max(int(lo[i]), int(hi[i]))],
                    "piece_spans": found.spans.reshape(-1).tolist(),
                    "piece_ids": found.ids.tolist(),
                },
            )
        )
    return sentences, passages


def point_key(kind: str, version: str, number: int) -> int:
    """A point id unique without coordination: a hash of the version and the row's number."""
    digest = hashlib.blake2b(f"{kind}:{version}:{number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFFFFFFFFFF


def doc_point(doc_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"groundqa:doc:{doc_id}"))


class Client:
    """qdrant-client's methods for a server; in this process, qdrant-client's local mode
    (local:DIR, serialized: it is not thread-safe) or Qdrant's engine through qdrant-edge-py
    (edge:DIR, index/qdrant_edge.py)."""

    raw: Any

    def __init__(self, url: str, api_key: str | None, timeout: float = 60) -> None:
        self.local = url.startswith(("local:", "edge:"))  # in this process: no payload indexes
        self._lock = threading.RLock() if url.startswith("local:") else None
        if self.local:
            self.raw = _open_folder(url)
        else:
            self.raw = QdrantClient(url=url, api_key=api_key, timeout=int(timeout))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.raw, name)
        if self._lock is None:
            return method

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:  # type: ignore[union-attr]
                return method(*args, **kwargs)

        return locked

    def close(self) -> None:
        self.raw.close()


def _open_folder(url: str) -> Any:
    """local:DIR or edge:DIR, which one process at a time may open: another process holding it,
    or a missing optional package, is one line (SetupError), not the engine's traceback."""
    kind, _, folder = url.partition(":")
    try:
        if kind == "local":
            return QdrantClient(path=folder)
        from groundqa.index.qdrant_edge import EdgeClient

        return EdgeClient(folder)
    except ImportError as exc:
        raise SetupError(
            f"{url} needs the qdrant-edge-py package ({exc.name} is missing): "
            "pip install 'groundqa[edge]', or use local:DIR or a Qdrant server"
        ) from exc
    except Exception as exc:
        said = str(exc)
        if "already accessed" in said or "WouldBlock" in said:
            raise SetupError(
                f"the Qdrant folder {folder} is open in another process ({kind}: allows one process "
                "per folder); stop that process, or use a Qdrant server"
            ) from exc
        raise


class QdrantStorage(Storage):
    def __init__(
        self,
        url: str,
        meta: dict[str, Any],
        dimension: int,
        bm25: BM25Params,
        prefix: str = "groundqa",
        api_key: str | None = None,
        shards: int = 1,
        replicas: int = 1,
        mean_lengths: tuple[float, float] = (PASSAGE_TERMS, SENTENCE_TERMS),
    ) -> None:
        self.client = Client(url, api_key)
        self.dimension = dimension
        self.bm25 = bm25
        self.documents_name = f"{prefix}_documents"
        self.passages_name = f"{prefix}_passages"
        self.sentences_name = f"{prefix}_sentences"
        self._create(shards, replicas)
        self._lengths = self._check_meta(meta, mean_lengths)
        self._df_lock = threading.Lock()
        self._df: dict[int, float] = {}
        self._df_rows = 0
        self._df_token = ""
        self._df_checked = float("-inf")

    # --- collections -----------------------------------------------------------------------

    def _create(self, shards: int, replicas: int) -> None:
        have = {c.name for c in self.client.get_collections().collections}
        # Every copy of a shard confirms a write before it returns: a replica reading from any copy
        # finds a document's points once its document point names them.
        spread: dict[str, Any] = {
            "shard_number": shards,
            "replication_factor": replicas,
            "write_consistency_factor": replicas,
        }
        dense = m.VectorParams(size=self.dimension, distance=m.Distance.DOT)
        # Vectors only ever read by id (sentences, word pieces) stay on disk, with no HNSW graph.
        by_id: dict[str, Any] = {"on_disk": True, "hnsw_config": m.HnswConfigDiff(m=0)}
        idf = m.SparseVectorParams(modifier=m.Modifier.IDF)
        wanted: dict[str, dict[str, Any]] = {
            self.documents_name: {"vectors_config": {}},
            self.passages_name: {
                "vectors_config": {
                    "dense": dense,
                    # Half precision: 2 bytes a dimension; MaxSim ranks a query against them.
                    "pieces": m.VectorParams(
                        size=self.dimension,
                        distance=m.Distance.DOT,
                        datatype=m.Datatype.FLOAT16,
                        multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                        **by_id,
                    ),
                },
                "sparse_vectors_config": {"bm25": idf, "piece_set": idf},
            },
            self.sentences_name: {
                "vectors_config": {
                    "dense": m.VectorParams(size=self.dimension, distance=m.Distance.DOT, **by_id)
                },
                "sparse_vectors_config": {"bm25": idf},
            },
        }
        for name, config in wanted.items():
            if name in have:
                continue
            try:
                self.client.create_collection(name, **config, **spread)
            except Exception:  # another replica made it meanwhile
                if not self.client.collection_exists(name):
                    raise
            if not self.client.local:  # local mode has no payload indexes (and warns)
                for field in ("doc_id", "version", "kind"):
                    self.client.create_payload_index(name, field, m.PayloadSchemaType.KEYWORD)

    def _check_meta(self, want: dict[str, Any], mean_lengths: tuple[float, float]) -> tuple[float, float]:
        found = self.client.retrieve(self.documents_name, [_META_ID], with_payload=True)
        if not found:
            payload = {"kind": "meta", "meta": want, "mean_lengths": list(mean_lengths), "revision": "0"}
            self.client.upsert(self.documents_name, [m.PointStruct(id=_META_ID, vector={}, payload=payload)])
            return mean_lengths
        stored: dict[str, Any] = found[0].payload or {}
        compare_meta(stored.get("meta", {}), want, f"in Qdrant ({self.documents_name}...)")
        lengths = stored.get("mean_lengths", list(mean_lengths))
        return float(lengths[0]), float(lengths[1])

    def mean_lengths(self) -> tuple[float, float]:
        return self._lengths

    def adopt_lengths(self, lengths: tuple[float, float]) -> None:
        """Only while no passage is stored: the stored BM25 weights were made with the old ones."""
        if lengths == self._lengths:
            return
        if self.client.count(self.passages_name, exact=True).count:
            raise IndexMismatch(
                f"{self.passages_name} already holds passages scored with BM25 mean lengths "
                f"{self._lengths}; copy into new collections (another GROUNDQA_QDRANT_PREFIX)"
            )
        self._lengths = (float(lengths[0]), float(lengths[1]))
        self.client.set_payload(self.documents_name, {"mean_lengths": list(self._lengths)}, points=[_META_ID])

    def drop(self) -> None:
        for name in (self.documents_name, self.passages_name, self.sentences_name):
            self.client.delete_collection(name)

    def close(self) -> None:
        """Release the client (and, in local mode, the folder's lock)."""
        self.client.close()

    # --- reading ---------------------------------------------------------------------------

    def reader(self, fresh: bool = False) -> QdrantReader:
        """A new reader each time: it reads versions as it goes."""
        return QdrantReader(self)

    def records(self, doc_ids: Iterable[str], text: bool = False) -> dict[str, dict[str, Any]]:
        """The document points of these doc_ids that exist: their payloads."""
        ids = sorted(set(doc_ids))
        if not ids:
            return {}
        selector = m.PayloadSelectorExclude(exclude=["original"] if text else ["text", "original"])
        found = self.client.retrieve(self.documents_name, [doc_point(d) for d in ids], with_payload=selector)
        return {p.payload["doc_id"]: p.payload for p in found if p.payload}

    def existing(self, doc_ids: list[str]) -> dict[str, Document]:
        return {d: _document(p) for d, p in self.records(doc_ids).items()}

    def documents(self) -> list[Document]:
        out = [
            _document(p)
            for p in self.scroll(self.documents_name, _kind("document"), exclude=["text", "original"])
        ]
        return sorted(out, key=lambda d: (d.created_at, d.doc_id))

    def document(self, doc_id: str) -> tuple[Document, str]:
        found = self.records([doc_id], text=True).get(doc_id)
        if found is None:
            raise not_found(doc_id)
        return _document(found), str(found["text"])

    def original(self, doc_id: str) -> Original | None:
        found = self.client.retrieve(
            self.documents_name, [doc_point(doc_id)], with_payload=["original", "content_type"]
        )
        if not found:
            raise not_found(doc_id)
        payload = found[0].payload or {}
        if not payload.get("original"):
            return None
        return Original(str(payload["content_type"]), base64.b64decode(payload["original"]))

    def counts(self) -> tuple[int, int]:
        """Counted by the engine (readiness and metrics ask often): exact at rest; while a write
        is between its new points and the removal of the old ones, passages count both."""
        docs = self.client.count(self.documents_name, count_filter=_kind("document"), exact=True).count
        return int(docs), int(self.client.count(self.passages_name, exact=True).count)

    def scroll(
        self,
        collection: str,
        where: m.Filter | None,
        exclude: list[str] | None = None,
        fields: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        selector: Any = (
            fields if fields is not None else (m.PayloadSelectorExclude(exclude=exclude) if exclude else True)
        )
        offset = None
        while True:
            points, offset = self.client.scroll(
                collection, scroll_filter=where, limit=256, offset=offset, with_payload=selector
            )
            for p in points:
                yield {**(p.payload or {}), "_id": p.id}
            if offset is None:
                return

    # --- writing ---------------------------------------------------------------------------

    def commit(self, batch: list[Prepared], replace: bool) -> list[Ingested]:
        if not batch:
            return []
        old = self.records([p.new.document.doc_id for p in batch])
        results = settle({d: _document(r) for d, r in old.items()}, [p.new.document for p in batch], replace)
        written = [
            (p, uuid.uuid4().hex) for p, r in zip(batch, results, strict=True) if r.state != "unchanged"
        ]
        for p, version in written:  # 1. the points, under versions no document names yet
            self._write_points(p.vectors, version)
        now = time.time()
        self.client.upsert(
            self.documents_name,
            [
                m.PointStruct(
                    id=doc_point(p.new.document.doc_id),
                    vector={},
                    payload=_payload(p.new, version, now),
                )
                for p, version in written
            ],
            wait=True,
        )
        for p, _ in written:  # 3. what the switch replaced
            before = old.get(p.new.document.doc_id)
            if before is not None:
                self._drop_version(str(before["version"]))
        if written:
            self._changed()
        return results

    def _changed(self) -> None:
        """A new revision token in the metadata point: readers' cached statistics are renewed."""
        self.client.set_payload(self.documents_name, {"revision": uuid.uuid4().hex}, points=[_META_ID])

    def piece_df(self, pieces: set[int]) -> tuple[int, dict[int, float]]:
        """The passages and each word piece's document frequency: Qdrant's IDF of the piece_set
        vector, one query per piece not yet known, inverted. Kept until the revision changes, which
        is looked at once every REVISION_CHECK seconds: word-match weights may lag a write by that."""
        if time.monotonic() - self._df_checked > REVISION_CHECK:
            meta = self.client.retrieve(self.documents_name, [_META_ID], with_payload=["revision"])
            token = str((meta[0].payload or {}).get("revision")) if meta else ""
            with self._df_lock:
                if token != self._df_token:
                    self._df_rows = int(self.client.count(self.passages_name, exact=True).count)
                    self._df, self._df_token = {}, token
                self._df_checked = time.monotonic()
        with self._df_lock:
            token, rows, known = self._df_token, self._df_rows, dict(self._df)
        missing = sorted(pieces - set(known))
        if missing:
            requests = [
                m.QueryRequest(query=m.SparseVector(indices=[p], values=[1.0]), using="piece_set", limit=1)
                for p in missing
            ]
            for piece, answer in zip(
                missing, self.client.query_batch_points(self.passages_name, requests), strict=True
            ):
                found = answer.points  # none: no passage holds the piece
                known[piece] = float(df_from_idf(np.array([found[0].score]), rows)[0]) if found else 0.0
            with self._df_lock:
                if self._df_token == token:
                    self._df.update({p: known[p] for p in missing})
        return rows, known

    def _write_points(self, vectors: DocumentVectors, version: str) -> None:
        sentences, passages = document_points(vectors, version, self._lengths, self.bm25)
        for name, points in ((self.sentences_name, sentences), (self.passages_name, passages)):
            for at in range(0, len(points), UPSERT_BATCH):
                part = points[at : at + UPSERT_BATCH]
                self.client.upsert(name, part, wait=True)

    def _drop_version(self, version: str) -> None:
        where = m.Filter(must=[_match("version", version)])
        for name in (self.passages_name, self.sentences_name):
            self.client.delete(name, points_selector=m.FilterSelector(filter=where), wait=True)

    def delete(self, doc_id: str) -> None:
        found = self.records([doc_id]).get(doc_id)
        if found is None:
            raise not_found(doc_id)
        self.client.delete(self.documents_name, points_selector=[doc_point(doc_id)], wait=True)
        self._drop_version(str(found["version"]))
        self._changed()

    def export(self, doc_ids: list[str]) -> list[tuple[NewDocument, DocumentVectors]]:
        """These documents' current versions, vectors included (word pieces come back as float16
        and are compressed again, as a write compresses them)."""
        records = self.records(doc_ids, text=True)
        missing = [d for d in doc_ids if d not in records]
        if missing:
            raise not_found(missing[0])
        out = []
        for doc_id in doc_ids:
            record = records[doc_id]
            doc, text = _document(record), str(record["text"])
            where = m.Filter(must=[_match("version", str(record["version"]))])
            passages = self._points(self.passages_name, where, ["dense", "pieces"])
            sentences = self._points(self.sentences_name, where, ["dense"])
            spans = np.array([(p.payload["start"], p.payload["end"]) for p in passages], np.int32).reshape(
                -1, 2
            )
            s_spans = np.array([(p.payload["start"], p.payload["end"]) for p in sentences], np.int32)
            found = [
                (
                    np.array(p.vector["pieces"], dtype=np.float32).reshape(-1, self.dimension),
                    np.array(p.payload["piece_spans"], dtype=np.int32).reshape(-1, 2),
                    np.array(p.payload["piece_ids"], dtype=PIECE_ID),
                )
                for p in passages
            ]
            vectors = DocumentVectors(
                doc_id=doc_id,
                sha256=doc.sha256,
                passages=spans,
                passage_vectors=np.array([p.vector["dense"] for p in passages], np.float32).reshape(
                    -1, self.dimension
                ),
                passage_texts=[lexical_input(doc.title, text[a:b]) for a, b in spans],
                pieces=codec.encode_pieces(found),
                sentences=s_spans.reshape(-1, 2),
                sentence_vectors=np.array([p.vector["dense"] for p in sentences], np.float32).reshape(
                    -1, self.dimension
                ),
                sentence_texts=[text[a:b] for a, b in s_spans.reshape(-1, 2)],
            )
            out.append((NewDocument(doc, text, self.original(doc_id)), vectors))
        return out

    def _points(self, collection: str, where: m.Filter, vectors: list[str]) -> list[Any]:
        """The points that match, with these vectors and their payloads, in text order."""
        keys = [int(p["_id"]) for p in self.scroll(collection, where, fields=[])]
        found = (
            self.client.retrieve(collection, keys, with_payload=True, with_vectors=vectors) if keys else []
        )
        return sorted(found, key=lambda p: (p.payload["start"], p.payload["end"]))

    def compact(self) -> None:
        """Remove points of versions no document names (a writer died, or two replaced one
        document at once), once they are older than ORPHAN_AGE."""
        current = {
            str(p["version"]) for p in self.scroll(self.documents_name, _kind("document"), fields=["version"])
        }
        cutoff = time.time() - ORPHAN_AGE
        for name in (self.passages_name, self.sentences_name):
            stale = {
                str(p["version"])
                for p in self.scroll(name, None, fields=["version", "written"])
                if str(p["version"]) not in current and float(p["written"]) < cutoff
            }
            if stale:
                where = m.Filter(must=[m.FieldCondition(key="version", match=m.MatchAny(any=sorted(stale)))])
                self.client.delete(name, points_selector=m.FilterSelector(filter=where), wait=True)


class QdrantReader(Reader):
    """What one query reads. A point counts only when its version is the one its document names;
    the reader remembers each version it saw, so the texts it returns match the offsets."""

    revision = 0

    def __init__(self, storage: QdrantStorage) -> None:
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


def _match(key: str, value: str) -> m.FieldCondition:
    return m.FieldCondition(key=key, match=m.MatchValue(value=value))


def _kind(kind: str) -> m.Filter:
    return m.Filter(must=[_match("kind", kind)])


def _payload(new: NewDocument, version: str, now: float) -> dict[str, Any]:
    doc = new.document
    return {
        "kind": "document",
        "doc_id": doc.doc_id,
        "title": doc.title,
        "source": doc.source,
        "sha256": doc.sha256,
        "chars": doc.chars,
        "passages": doc.passages,
        "created_at": doc.created_at,
        "format": doc.format,
        "page_starts": list(doc.page_starts),
        "published": doc.published,
        "version": version,
        "written": now,
        "text": new.text,
        # The original file, if any: base64 in the payload, left out of every read but original().
        "content_type": new.original.content_type if new.original else None,
        "original": base64.b64encode(new.original.data).decode("ascii") if new.original else None,
    }


def _document(payload: dict[str, Any]) -> Document:
    return Document(
        str(payload["doc_id"]),
        str(payload["title"]),
        payload.get("source"),
        str(payload["sha256"]),
        int(payload["chars"]),
        int(payload["passages"]),
        str(payload["created_at"]),
        str(payload.get("format", "text")),
        tuple(payload.get("page_starts", ())),
        payload.get("published"),
    )
