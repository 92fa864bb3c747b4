"""Settings from GROUNDQA_* environment variables, and what they open: the model and the index.

The lowest layer both faces (service/ and eval/) build on; it imports neither.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from index.index import MAX_DOC_CHARS, Index
from index.lexical import BM25Params
from index.model import DEFAULT_CACHE, DEFAULT_MODEL, Embedder
from index.storage import Storage


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GROUNDQA_")

    index_dir: Path = Path("var/index")
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: SecretStr | None = None
    model: str = DEFAULT_MODEL
    # The encoder: ONNX Runtime on the graph exported from the weights (onnx, or onnx-int8), or torch.
    runtime: str = "onnx"
    # Where the exported graph is kept, one folder per weights' sha256.
    model_cache: Path = DEFAULT_CACHE
    cors_origins: str = ""
    # Largest request body accepted (413 above): about 1,000 pages of plain text.
    max_body_bytes: int = 5_000_000
    # Seconds a client has to send a request body (408 after): stalled clients do not hold sockets.
    body_timeout: float = 30
    # Longest document, in characters (longer ones are refused with the limit in the message).
    max_doc_chars: int = MAX_DOC_CHARS
    # Most documents in one bulk request.
    max_batch_docs: int = 1000
    # A file or folder `serve` ingests first when the index holds no document.
    seed: str | None = None
    # uvicorn worker processes for `serve`, each with its own encoder, sharing the index's files.
    workers: int = 1
    # uvicorn's log level for `serve`.
    log: str = "info"
    # The index in Qdrant instead of index_dir: a server or cluster URL, or local:DIR for
    # qdrant-client's local mode (one process; for trials and tests).
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    # Collections are named PREFIX_documents, PREFIX_passages and PREFIX_sentences.
    qdrant_prefix: str = "groundqa"
    # Set when the collections are made: shards spread over the cluster's nodes, copies of each.
    qdrant_shards: int = 1
    qdrant_replicas: int = 1

    @field_validator("api_key")
    @classmethod
    def blank_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or not value.get_secret_value().strip() else value

    def where(self) -> str:
        """Where the index lives, for messages."""
        if self.qdrant_url:
            return f"Qdrant at {self.qdrant_url} (collections {self.qdrant_prefix}_*)"
        return str(self.index_dir)

    def cors_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def get_settings() -> Settings:
    return Settings()


def prepare_process() -> None:
    """Process-wide settings, made once at start by the CLI, the server and the tests."""
    from threadpoolctl import threadpool_limits
    from transformers.utils import logging as hf_logging

    # Nothing is downloaded at run time: the model is a local folder, checked by hash.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # numpy's OpenBLAS threads spin for a while after each product and take the cores from
    # the model's next forward pass: one thread takes query latency from 95 to 34 ms on 2 cores.
    threadpool_limits(1, user_api="blas")
    hf_logging.set_verbosity_error()  # passage lengths are checked by the index, not warned about
    hf_logging.disable_progress_bar()


@lru_cache(maxsize=4)
def load_embedder(name: str, runtime: str = "onnx", cache: Path = DEFAULT_CACHE) -> Embedder:
    """One model per process, name and runtime: loading it takes seconds."""
    return Embedder(name, runtime=runtime, cache_dir=cache)


def embedder_of(settings: Settings) -> Embedder:
    return load_embedder(settings.model, settings.runtime, settings.model_cache)


def open_index(settings: Settings, merge_in_background: bool = False) -> Index:
    embedder = embedder_of(settings)
    return Index(
        settings.index_dir,
        embedder,
        merge_in_background=merge_in_background,
        max_doc_chars=settings.max_doc_chars,
        backend=qdrant_backend(settings, embedder.info.dimension) if settings.qdrant_url else None,
    )


def qdrant_backend(settings: Settings, dimension: int) -> Callable[[dict[str, object]], Storage]:
    from index.qdrant import QdrantStorage

    url, key = settings.qdrant_url or "", settings.qdrant_api_key
    return lambda meta: QdrantStorage(
        url,
        meta,
        dimension,
        BM25Params(),
        prefix=settings.qdrant_prefix,
        api_key=key.get_secret_value() if key else None,
        shards=settings.qdrant_shards,
        replicas=settings.qdrant_replicas,
    )
