"""Where an index lives, and the one place that opens its storage: the embedded index (a folder
of segments and SQLite) or Qdrant (a server, `local:DIR` or `edge:DIR`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from groundqa.index.lexical import BM25Params
from groundqa.index.storage import Storage


@dataclass(frozen=True)
class Location:
    folder: Path  # the embedded index's folder
    qdrant_url: str | None = None  # set: the index is in Qdrant instead
    qdrant_api_key: str | None = None
    # Collections are named PREFIX_documents, PREFIX_passages and PREFIX_sentences.
    qdrant_prefix: str = "groundqa"
    # Set when the collections are made: shards spread over the cluster's nodes, copies of each.
    qdrant_shards: int = 1
    qdrant_replicas: int = 1

    def describe(self) -> str:
        """Where the index lives, for messages."""
        if self.qdrant_url:
            return f"Qdrant at {self.qdrant_url} (collections {self.qdrant_prefix}_*)"
        return str(self.folder)


def open_storage(
    where: Location,
    meta: dict[str, object],
    dimension: int,
    bm25: BM25Params,
    lock_timeout: float = 120,
    failpoint: str | None = None,
    salvage: bool = False,
) -> Storage:
    """The storage at where, checked against the settings in meta (IndexMismatch names any that
    differ). Backends are imported here only, when chosen: Qdrant's client costs a second.
    salvage: an embedded index opened to read its documents back, whatever state it is in."""
    if where.qdrant_url:
        from groundqa.index.storage.qdrant import QdrantStorage

        return QdrantStorage(
            where.qdrant_url,
            meta,
            dimension,
            bm25,
            prefix=where.qdrant_prefix,
            api_key=where.qdrant_api_key,
            shards=where.qdrant_shards,
            replicas=where.qdrant_replicas,
        )
    from groundqa.index.storage.embedded import SegmentStorage

    return SegmentStorage(where.folder, meta, dimension, bm25, lock_timeout, failpoint, salvage)
