"""The part of QdrantClient the Qdrant backend uses, over qdrant-edge-py: Qdrant's own Rust engine
(segments, sparse IDF, MaxSim, filters, WAL) in this process, one edge shard per collection, in
one folder. `GROUNDQA_QDRANT_URL=edge:DIR` selects it. It exists so the backend can be run and
measured on the real engine where no Qdrant server can be installed; a deployment uses a server.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import qdrant_edge as e
from qdrant_client import models as m

_DISTANCE = {m.Distance.DOT: e.Distance.Dot, m.Distance.COSINE: e.Distance.Cosine}
_DATATYPE = {
    m.Datatype.FLOAT16: e.VectorStorageDatatype.Float16,
    m.Datatype.FLOAT32: e.VectorStorageDatatype.Float32,
}


class EdgeClient:
    """Collections as edge shards in folder/NAME; calls are serialized per client."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shards: dict[str, e.EdgeShard] = {}
        self._lock = threading.RLock()
        for path in sorted(self.folder.iterdir()):
            if path.is_dir():
                self.shards[path.name] = e.EdgeShard.load(str(path))

    # --- collections -------------------------------------------------------------------------

    def get_collections(self) -> Any:
        return SimpleNamespace(collections=[SimpleNamespace(name=n) for n in self.shards])

    def collection_exists(self, name: str) -> bool:
        return name in self.shards

    def create_collection(
        self,
        name: str,
        vectors_config: dict[str, m.VectorParams],
        sparse_vectors_config: dict[str, m.SparseVectorParams] | None = None,
        **_: Any,  # shards and replicas: a cluster's settings
    ) -> None:
        vectors = {
            key: e.EdgeVectorParams(
                v.size,
                _DISTANCE[v.distance],
                on_disk=v.on_disk,
                datatype=_DATATYPE.get(v.datatype) if v.datatype else None,
                multivector_config=e.MultiVectorConfig(e.MultiVectorComparator.MaxSim)
                if v.multivector_config
                else None,
            )
            for key, v in vectors_config.items()
        }
        sparse = {
            key: e.EdgeSparseVectorParams(modifier=e.Modifier.Idf if s.modifier == m.Modifier.IDF else None)
            for key, s in (sparse_vectors_config or {}).items()
        }
        if not vectors and not sparse:  # a shard needs one vector: a payload-only collection gets a dummy
            vectors = {"none": e.EdgeVectorParams(1, e.Distance.Dot)}
        with self._lock:
            self.shards[name] = e.EdgeShard.create(
                str(self.folder / name), e.EdgeConfig(vectors=vectors, sparse_vectors=sparse)
            )

    def delete_collection(self, name: str) -> None:
        with self._lock:
            shard = self.shards.pop(name, None)
            if shard is not None:
                shard.close()
                shutil.rmtree(self.folder / name, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for shard in self.shards.values():
                shard.close()
            self.shards = {}

    # --- points ------------------------------------------------------------------------------

    def upsert(self, name: str, points: list[m.PointStruct], wait: bool = True) -> None:
        converted = [e.Point(p.id, _vector(p.vector), p.payload) for p in points]  # type: ignore[arg-type]
        with self._lock:
            self.shards[name].update(e.UpdateOperation.upsert_points(converted))

    def set_payload(self, name: str, payload: dict[str, Any], points: list[Any]) -> None:
        with self._lock:
            self.shards[name].update(e.UpdateOperation.set_payload(points, payload))

    def delete(self, name: str, points_selector: Any, wait: bool = True) -> None:
        if isinstance(points_selector, m.FilterSelector):
            where = _filter(points_selector.filter) or e.Filter()
            operation = e.UpdateOperation.delete_points_by_filter(where)
        else:
            operation = e.UpdateOperation.delete_points(list(points_selector))
        with self._lock:
            self.shards[name].update(operation)

    def retrieve(
        self, name: str, ids: list[Any], with_payload: Any = True, with_vectors: Any = False
    ) -> list[Any]:
        with self._lock:
            return list(
                self.shards[name].retrieve(ids, with_payload=_payload(with_payload), with_vector=with_vectors)
            )

    def scroll(
        self,
        name: str,
        scroll_filter: m.Filter | None = None,
        limit: int = 10,
        offset: Any = None,
        with_payload: Any = True,
    ) -> tuple[list[Any], Any]:
        request = e.ScrollRequest(
            offset=offset, limit=limit, filter=_filter(scroll_filter), with_payload=_payload(with_payload)
        )
        with self._lock:
            points, after = self.shards[name].scroll(request)
        return list(points), after

    def count(self, name: str, count_filter: m.Filter | None = None, exact: bool = True) -> Any:
        request = e.CountRequest(exact=exact, filter=_filter(count_filter))
        with self._lock:
            return SimpleNamespace(count=self.shards[name].count(request))

    def query_points(
        self,
        name: str,
        query: Any,
        using: str,
        limit: int,
        query_filter: m.Filter | None = None,
        with_payload: Any = False,
    ) -> Any:
        request = _query(query, using, limit, query_filter, with_payload)
        with self._lock:
            return SimpleNamespace(points=list(self.shards[name].query(request)))

    def query_batch_points(self, name: str, requests: list[m.QueryRequest]) -> list[Any]:
        batch = e.QueryBatchRequest(
            [
                _query(r.query, r.using or "", r.limit or 10, r.filter, r.with_payload or False)
                for r in requests
            ]
        )
        with self._lock:
            return [SimpleNamespace(points=list(found)) for found in self.shards[name].query_batch(batch)]


def _query(query: Any, using: str, limit: int, where: m.Filter | None, with_payload: Any) -> e.QueryRequest:
    return e.QueryRequest(
        limit=limit,
        query=e.Query.Nearest(_named(query), using=using),
        filter=_filter(where),
        with_payload=_payload(with_payload),
    )


def _named(vector: Any) -> Any:
    if isinstance(vector, m.SparseVector):
        return e.SparseVector(list(vector.indices), [float(v) for v in vector.values])
    return vector


def _vector(vector: dict[str, Any]) -> dict[str, Any]:
    return {key: _named(value) for key, value in vector.items()} or {"none": [0.0]}


def _payload(selector: Any) -> Any:
    if isinstance(selector, m.PayloadSelectorExclude):
        return e.PayloadSelector.Exclude(list(selector.exclude))
    if isinstance(selector, list):
        return e.PayloadSelector.Include(selector) if selector else False
    return bool(selector)


def _filter(where: m.Filter | None) -> e.Filter | None:
    if where is None:
        return None
    return e.Filter(must=[_condition(c) for c in where.must or []])  # type: ignore[union-attr]


def _condition(condition: Any) -> Any:
    if isinstance(condition, m.HasIdCondition):
        return e.HasIdCondition(set(condition.has_id))
    match = condition.match
    if isinstance(match, m.MatchAny):
        return e.FieldCondition(condition.key, match=e.MatchAny(list(match.any)))  # type: ignore[arg-type]
    return e.FieldCondition(condition.key, match=e.MatchValue(match.value))
