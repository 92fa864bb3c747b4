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
and `edge:DIR` Qdrant's own engine in this process (index/storage/qdrant_edge.py): for trials and tests.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from qdrant_client import models as m

from groundqa.index import codec
from groundqa.index.errors import IndexMismatch
from groundqa.index.lexical import BM25Params, lexical_input
from groundqa.index.storage import (
    PIECE_ID,
    Document,
    DocumentVectors,
    Ingested,
    NewDocument,
    Original,
    Prepared,
    Storage,
    compare_meta,
    not_found,
    settle,
)
from groundqa.index.storage.qdrant_points import (
    META_ID,
    ORPHAN_AGE,
    PASSAGE_TERMS,
    REVISION_CHECK,
    SENTENCE_TERMS,
    UPSERT_BATCH,
    Client,
    df_from_idf,
    doc_point,
    document_of,
    document_points,
    kind_filter,
    match_field,
    payload_of,
)
from groundqa.index.storage.qdrant_reader import QdrantReader


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
        found = self.client.retrieve(self.documents_name, [META_ID], with_payload=True)
        if not found:
            payload = {"kind": "meta", "meta": want, "mean_lengths": list(mean_lengths), "revision": "0"}
            self.client.upsert(self.documents_name, [m.PointStruct(id=META_ID, vector={}, payload=payload)])
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
        self.client.set_payload(self.documents_name, {"mean_lengths": list(self._lengths)}, points=[META_ID])

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
        return {d: document_of(p) for d, p in self.records(doc_ids).items()}

    def documents(self) -> list[Document]:
        out = [
            document_of(p)
            for p in self.scroll(self.documents_name, kind_filter("document"), exclude=["text", "original"])
        ]
        return sorted(out, key=lambda d: (d.created_at, d.doc_id))

    def document(self, doc_id: str) -> tuple[Document, str]:
        found = self.records([doc_id], text=True).get(doc_id)
        if found is None:
            raise not_found(doc_id)
        return document_of(found), str(found["text"])

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
        docs = self.client.count(self.documents_name, count_filter=kind_filter("document"), exact=True).count
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
        results = settle(
            {d: document_of(r) for d, r in old.items()}, [p.new.document for p in batch], replace
        )
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
                    payload=payload_of(p.new, version, now),
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
        self.client.set_payload(self.documents_name, {"revision": uuid.uuid4().hex}, points=[META_ID])

    def piece_df(self, pieces: set[int]) -> tuple[int, dict[int, float]]:
        """The passages and each word piece's document frequency: Qdrant's IDF of the piece_set
        vector, one query per piece not yet known, inverted. Kept until the revision changes, which
        is looked at once every REVISION_CHECK seconds: word-match weights may lag a write by that."""
        if time.monotonic() - self._df_checked > REVISION_CHECK:
            meta = self.client.retrieve(self.documents_name, [META_ID], with_payload=["revision"])
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
        where = m.Filter(must=[match_field("version", version)])
        for name in (self.passages_name, self.sentences_name):
            self.client.delete(name, points_selector=m.FilterSelector(filter=where), wait=True)

    def delete(self, doc_id: str) -> None:
        found = self.records([doc_id]).get(doc_id)
        if found is None:
            raise not_found(doc_id)
        self.client.delete(self.documents_name, points_selector=[doc_point(doc_id)], wait=True)
        self._drop_version(str(found["version"]))
        self._changed()

    def dump(self, doc_ids: list[str]) -> list[tuple[NewDocument, DocumentVectors]]:
        """These documents' current versions, vectors included (word pieces come back as float16
        and are compressed again, as a write compresses them)."""
        records = self.records(doc_ids, text=True)
        missing = [d for d in doc_ids if d not in records]
        if missing:
            raise not_found(missing[0])
        out = []
        for doc_id in doc_ids:
            record = records[doc_id]
            doc, text = document_of(record), str(record["text"])
            where = m.Filter(must=[match_field("version", str(record["version"]))])
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
            str(p["version"])
            for p in self.scroll(self.documents_name, kind_filter("document"), fields=["version"])
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
