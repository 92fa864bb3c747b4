"""The server's settings: the index's and the file limits (groundqa.ingest.limits), and the HTTP ones,
from GROUNDQA_*."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr, field_validator

from groundqa.ingest.limits import IngestSettings


@dataclass(frozen=True)
class LLM:
    """The LLM that writes answers (service/generation.py), from GROUNDQA_LLM_*."""

    url: str  # the OpenAI-compatible base URL, e.g. http://127.0.0.1:8081/v1
    model: str
    api_key: str | None = None
    timeout: float = 30.0
    max_tokens: int = 200


class Settings(IngestSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: SecretStr | None = None
    cors_origins: str = ""
    # Largest request body accepted (413 above): about 1,000 pages of plain text.
    max_body_bytes: int = 5_000_000
    # Seconds a client has to send a request body (408 after): stalled clients do not hold sockets.
    body_timeout: float = 30
    # Seconds a connection has to send a whole request head, after it opens or after its last
    # answer (408 and closed after).
    header_timeout: float = 10
    # Open connections a worker holds; past them a new one gets 503 with Retry-After.
    max_connections: int = 2000
    # Most documents in one bulk request.
    max_batch_docs: int = 1000
    # Background upload jobs waiting or running, and the bytes of their files (429 past them).
    max_jobs: int = 20
    max_job_bytes: int = 500_000_000
    # A file or folder `serve` ingests first when the index holds no document.
    seed: str | None = None
    # uvicorn worker processes for `serve`, each with its own encoder, sharing the index's files:
    # a number, or auto (one per core; one for a local: or edge: Qdrant folder).
    workers: int | Literal["auto"] = "auto"
    # uvicorn's log level for `serve`.
    log: str = "info"
    # The base of the absolute links the service gives (citation views in OpenAI replies and MCP
    # results), e.g. https://qa.example.org; unset: http://HOST:PORT as configured. Never taken
    # from a request, whose Host header anyone can set.
    public_url: str | None = None
    # Requests that are a chat client's tasks (Open WebUI's "### Task:" prompts for a title, tags,
    # follow-ups) answered as tasks, not searched as questions (docs/clients.md).
    client_tasks: bool = True
    # Written answers ("generate": true): an OpenAI-compatible base URL (llama.cpp's server,
    # Ollama, vLLM, OpenAI), its model and key; unset, answers stay extractive. Seconds the LLM
    # has to answer before the extractive answer stands, and the most tokens it may write.
    llm_url: str | None = None
    llm_model: str = "default"
    llm_api_key: SecretStr | None = None
    llm_timeout: float = 30.0
    llm_max_tokens: int = 200
    # Keep the reply's sentences no passage supports (marked), instead of listing them apart.
    keep_unsupported: bool = False

    @field_validator("api_key")
    @classmethod
    def blank_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or not value.get_secret_value().strip() else value

    def qdrant_folder(self) -> str | None:
        """The kind of a Qdrant folder, which one process opens at a time: "local" for local:DIR,
        "edge" for edge:DIR; None for a Qdrant server or the embedded index."""
        kind = (self.qdrant_url or "").partition(":")[0]
        return kind if kind in ("local", "edge") else None

    def worker_count(self) -> int:
        """The workers `serve` starts: auto is one per core this process may use, except on a
        Qdrant folder, which one process opens at a time."""
        if self.workers != "auto":
            return self.workers
        if self.qdrant_folder():
            return 1
        return len(os.sched_getaffinity(0))

    def public_base(self) -> str | None:
        """GROUNDQA_PUBLIC_URL, the base of links a person opens, when it is set."""
        return self.public_url.strip().rstrip("/") if self.public_url and self.public_url.strip() else None

    def link_base(self) -> str:
        """The public URL, else this server's own address."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return self.public_base() or f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def llm(self) -> LLM | None:
        if not (self.llm_url and self.llm_url.strip()):
            return None
        key = self.llm_api_key.get_secret_value() if self.llm_api_key else None
        return LLM(self.llm_url.strip(), self.llm_model, key, self.llm_timeout, self.llm_max_tokens)

    def cors_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def get_settings() -> Settings:
    return Settings()
