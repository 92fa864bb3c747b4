from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import uvicorn

from eval.serving import free_port, wait_ready
from index.config import Settings, prepare_process
from index.index import Index
from index.model import Embedder
from service.app import create_app

ROOT = Path(__file__).resolve().parent.parent
prepare_process()
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


def groundqa(*args: str, index: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a fresh process, its own index folder."""
    env = {**os.environ, "GROUNDQA_INDEX_DIR": str(index or "/nonexistent/never-used")}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )


class LiveServer:
    """The real app under uvicorn on a free loopback port, seeded with the bundled article."""

    def __init__(self, folder: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = Settings(index_dir=folder, **settings)  # type: ignore[arg-type]
        self.seed_text = ARTICLE.read_text(encoding="utf-8")
        app = create_app(config, seed=[(ARTICLE, self.seed_text)])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_ready(self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
