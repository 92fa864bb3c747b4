"""The Qdrant backend's points: how documents, passages and sentences become points and payloads,
the sparse BM25 vectors, and the client (a server, local mode or Qdrant's engine in this process)."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as m

from groundqa.index import codec
from groundqa.index.errors import SetupError
from groundqa.index.lexical import BM25Params, term_id, term_weight, terms
from groundqa.index.storage import (
    Document,
    DocumentVectors,
    NewDocument,
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
META_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "groundqa:meta"))


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
    (edge:DIR, index/storage/qdrant_edge.py)."""

    raw: Any

    def __init__(self, url: str, api_key: str | None, timeout: float = 60) -> None:
        self.local = url.startswith(("local:", "edge:"))  # in this process: no payload indexes
        self._lock = threading.RLock() if url.startswith("local:") else None
        if self.local:
            self.raw = open_folder(url)
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


def open_folder(url: str) -> Any:
    """local:DIR or edge:DIR, which one process at a time may open: another process holding it,
    or a missing optional package, is one line (SetupError), not the engine's traceback."""
    kind, _, folder = url.partition(":")
    try:
        if kind == "local":
            return QdrantClient(path=folder)
        from groundqa.index.storage.qdrant_edge import EdgeClient

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


def match_field(key: str, value: str) -> m.FieldCondition:
    return m.FieldCondition(key=key, match=m.MatchValue(value=value))


def kind_filter(kind: str) -> m.Filter:
    return m.Filter(must=[match_field("kind", kind)])


def payload_of(new: NewDocument, version: str, now: float) -> dict[str, Any]:
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


def document_of(payload: dict[str, Any]) -> Document:
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
