"""The index's settings from GROUNDQA_* environment variables, and what they open: the model and
the index.

The lowest layer both faces (service/ and eval/) build on; it imports neither.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from groundqa.index.confidence import bundled as bundled_confidence
from groundqa.index.index import MAX_DOC_CHARS, Index
from groundqa.index.model import DEFAULT_CACHE, DEFAULT_MODEL, Embedder
from groundqa.index.ranking import check_min_confidence
from groundqa.index.storage.factory import Location


class IndexSettings(BaseSettings):
    """What opens an index: where it lives, the model, the document limit (GROUNDQA_*)."""

    model_config = SettingsConfigDict(env_prefix="GROUNDQA_")

    index_dir: Path = Path("var/index")
    model: str = DEFAULT_MODEL
    # The encoder: ONNX Runtime on the graph exported from the weights (onnx, or onnx-int8), or torch.
    runtime: str = "onnx"
    # Where the exported graph is kept, one folder per weights' sha256.
    model_cache: Path = DEFAULT_CACHE
    # Longest document, in characters (longer ones are refused with the limit in the message).
    max_doc_chars: int = MAX_DOC_CHARS
    # Answers under this confidence are left out (null); unset: the trained model's threshold.
    min_confidence: Annotated[float | None, AfterValidator(check_min_confidence)] = None
    # The index in Qdrant instead of index_dir: a server or cluster URL, local:DIR for
    # qdrant-client's local mode or edge:DIR for Qdrant's engine in this process.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_prefix: str = "groundqa"
    qdrant_shards: int = 1
    qdrant_replicas: int = 1

    def location(self) -> Location:
        key = self.qdrant_api_key
        return Location(
            self.index_dir,
            self.qdrant_url or None,
            key.get_secret_value() if key else None,
            self.qdrant_prefix,
            self.qdrant_shards,
            self.qdrant_replicas,
        )

    def answer_floor(self) -> float:
        """The confidence under which answers are left out."""
        return bundled_confidence().floor(self.min_confidence)

    def where(self) -> str:
        """Where the index lives, for messages."""
        return self.location().describe()


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


def embedder_of(settings: IndexSettings) -> Embedder:
    return load_embedder(settings.model, settings.runtime, settings.model_cache)


def open_index(settings: IndexSettings, merge_in_background: bool = False) -> Index:
    return Index(
        settings.location(),
        embedder_of(settings),
        merge_in_background=merge_in_background,
        max_doc_chars=settings.max_doc_chars,
        min_confidence=settings.answer_floor(),
    )
