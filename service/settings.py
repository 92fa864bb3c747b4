"""Settings from GROUNDQA_* environment variables; CLI flags override them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from index.index import Index
from index.model import DEFAULT_MODEL, Embedder


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GROUNDQA_")

    index_dir: Path = Path("var/index")
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: SecretStr | None = None
    model: str = DEFAULT_MODEL
    cors_origins: str = ""
    # Largest request body accepted (413 above): about 1,000 pages of plain text.
    max_body_bytes: int = 5_000_000

    def cors_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def get_settings() -> Settings:
    return Settings()


@lru_cache(maxsize=4)
def load_embedder(name: str) -> Embedder:
    """One model per process and name: loading it takes seconds."""
    return Embedder(name)


def open_index(settings: Settings) -> Index:
    return Index(settings.index_dir, load_embedder(settings.model))
