from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from index.index import Index
from index.model import Embedder

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = ROOT / "corpus" / "putin-china-visit.txt"


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
def article() -> str:
    return ARTICLE.read_text(encoding="utf-8")


@pytest.fixture
def make_index(tmp_path: Path, embedder: Embedder) -> Callable[..., Index]:
    def make(name: str = "index", **kwargs: object) -> Index:
        return Index(tmp_path / name, embedder, **kwargs)  # type: ignore[arg-type]

    return make
