"""The Qdrant backend through qdrant-client's local mode (layer 1), its parity with the embedded
index on a SQuAD slice (layer 3), and the same contract against a real server when
GROUNDQA_QDRANT_URL is set (layer 4). The engine itself is tested in test_qdrant_engine.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from groundqa.index.config import open_index
from groundqa.index.errors import DocumentConflict, DocumentNotFound, IndexMismatch, SetupError
from groundqa.index.index import Index
from groundqa.index.lexical import BM25Params
from groundqa.index.model import Embedder
from groundqa.index.ranking import Hit
from groundqa.index.storage import StaleRead, qdrant
from groundqa.index.storage.factory import Location
from groundqa.index.storage.qdrant import QdrantStorage
from groundqa.index.text import Chunking
from groundqa.service.config import Settings
from tests.conftest import ARTICLE, ROOT, groundqa, qdrant_index, server_settings

# Qdrant local mode, subprocesses: the fast loop keeps the embedded index only.
pytestmark = pytest.mark.slow

QUESTION = "How long is the Power of Siberia 2 pipeline?"
MIXED = "Intro 😀😀 emoji 🇨🇳 first.\r\n\r\n中文句子在这里。第二句话！\r\nCafe\u0301 au lait is served.\r\n\r\nThe answer is 42 kilometres."


@pytest.fixture(params=["local", "server"])
def index(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> Index:
    """Local mode always; a real server too when GROUNDQA_QDRANT_URL names one (in collections
    of its own, dropped after)."""
    if request.param == "local":
        return qdrant_index(tmp_path / "qdrant", embedder)
    opened = open_index(Settings(**server_settings()))  # type: ignore[arg-type]
    request.addfinalizer(opened.storage.drop)
    return opened


def _exact(index: Index, hits: list[Hit]) -> None:
    for hit in hits:
        _, text = index.document(hit.passage.doc_id)
        assert text[hit.passage.start : hit.passage.end] == hit.passage.text


def test_documents_round_trip_with_exact_offsets(index: Index) -> None:
    article = ARTICLE.read_text(encoding="utf-8")
    assert index.add(article, doc_id="putin").state == "added"
    assert index.add(MIXED, title="Mixed", doc_id="mixed").state == "added"
    assert index.add(article, doc_id="putin").state == "unchanged"  # idempotent by content hash
    assert {d.doc_id for d in index.documents()} == {"putin", "mixed"}
    for mode in ("hybrid", "dense", "lexical"):
        result = index.search(QUESTION, k=5, mode=mode)  # type: ignore[arg-type]
        assert result.hits and result.hits[0].passage.doc_id == "putin"
        _exact(index, result.hits)
        assert result.answer is not None and "2,500 km" in result.answer.text
        assert article[result.answer.span.start : result.answer.span.end] == result.answer.text
    emoji = index.search("What is the answer in kilometres?", doc_ids=["mixed"])
    assert [h.passage.doc_id for h in emoji.hits] == ["mixed"]
    assert (
        emoji.answer is not None
        and MIXED[emoji.answer.span.start : emoji.answer.span.end] == emoji.answer.text
    )
    assert "42" in emoji.answer.text
    with pytest.raises(DocumentNotFound):
        index.search(QUESTION, doc_ids=["nope"])


def test_replace_and_delete_leave_no_trace(index: Index) -> None:
    index.add("The red fox lives in the forest near the river.", title="Fox", doc_id="fox")
    with pytest.raises(DocumentConflict):
        index.add("The blue whale swims in the deep ocean.", title="Fox", doc_id="fox")
    assert index.add(
        "The blue whale swims in the deep ocean.", title="Whale", doc_id="fox", replace=True
    ).state == ("replaced")
    hits = index.search("Where does the whale swim?", mode="lexical").hits
    assert [h.passage.text for h in hits] == ["The blue whale swims in the deep ocean."]
    assert index.search("red fox forest", mode="lexical").hits == []
    assert index.document("fox")[0].title == "Whale"
    index.delete("fox")
    assert index.documents() == [] and index.counts() == (0, 0)
    assert index.search("whale", mode="hybrid").hits == []
    with pytest.raises(DocumentNotFound):
        index.delete("fox")
    storage = index.storage
    assert isinstance(storage, QdrantStorage)
    for name in (storage.passages_name, storage.sentences_name):  # no point left behind
        assert storage.client.count(name, exact=True).count == 0


def test_the_index_reopens_and_checks_its_settings(tmp_path: Path, embedder: Embedder) -> None:
    index = qdrant_index(tmp_path / "q", embedder)
    index.add(ARTICLE.read_text(encoding="utf-8"), doc_id="putin")
    _close(index)
    again = qdrant_index(tmp_path / "q", embedder)
    assert again.counts() == (1, 15)
    assert again.search(QUESTION).hits[0].passage.doc_id == "putin"
    _close(again)
    with pytest.raises(IndexMismatch, match=r"chunking is .* but "):
        qdrant_index(tmp_path / "q", embedder, chunking=Chunking(max_tokens=64))


def _close(index: Index) -> None:
    assert isinstance(index.storage, QdrantStorage)
    index.close()


def test_a_reader_sees_a_document_whole_while_it_is_replaced(tmp_path: Path, embedder: Embedder) -> None:
    """Two versions with different passages: every read shows all of one, never a mix."""
    index = qdrant_index(tmp_path / "q", embedder)
    article = ARTICLE.read_text(encoding="utf-8")
    versions = [article, article[: len(article) // 2]]
    spans = []
    for text in versions:
        index.add(text, title="Putin", doc_id="putin", replace=True)
        reader = index.reader()
        spans.append(sorted((s, e) for _, s, e in reader.passages(reader.allowed(["putin"]))))
    assert spans[0] != spans[1]
    stop, seen, errors = threading.Event(), [], []

    def replace() -> None:
        try:
            for i in range(6):
                index.add(versions[i % 2], title="Putin", doc_id="putin", replace=True)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            stop.set()

    writer = threading.Thread(target=replace)
    writer.start()
    while not stop.is_set():
        reader = index.reader()
        try:
            keys = reader.allowed(["putin"])
            seen.append(sorted((s, e) for _, s, e in reader.passages(keys)))
        except StaleRead:
            continue
        assert index.search(QUESTION, doc_ids=["putin"]).hits
    writer.join()
    assert not errors
    assert seen and all(s in spans for s in seen)


def test_concurrent_writers_lose_nothing(tmp_path: Path, embedder: Embedder) -> None:
    """Writers on threads of one process (local mode is one process; a server takes many)."""
    index = qdrant_index(tmp_path / "q", embedder)
    errors: list[Exception] = []

    def write(prefix: str) -> None:
        try:
            for i in range(6):
                index.add(
                    f"The {prefix} report number {i} says the {prefix}{i} bridge opened.",
                    doc_id=f"{prefix}-{i}",
                )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in ("north", "south")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(index.documents()) == 12
    for prefix in ("north", "south"):
        for i in range(6):
            for mode in ("hybrid", "dense", "lexical"):
                hits = index.search(f"{prefix}{i} bridge", mode=mode, doc_ids=[f"{prefix}-{i}"]).hits  # type: ignore[arg-type]
                assert hits and hits[0].passage.doc_id == f"{prefix}-{i}"


def test_compact_removes_what_a_dead_writer_left(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = qdrant_index(tmp_path / "q", embedder)
    index.add("The red fox lives in the forest.", doc_id="fox")
    storage = index.storage
    assert isinstance(storage, QdrantStorage)
    before = storage.client.count(storage.passages_name, exact=True).count
    # A writer that died after writing its points and before switching the document to them:
    prepared = index._prepare([index_new("The grey wolf hunts at night.", "wolf")])
    storage._write_points(prepared[0].vectors, "dead-writer")
    assert storage.client.count(storage.passages_name, exact=True).count == before + 1
    assert index.search("grey wolf", mode="lexical").hits == []  # never visible
    index.compact()  # too recent: a live writer may be about to switch
    assert storage.client.count(storage.passages_name, exact=True).count == before + 1
    monkeypatch.setattr(qdrant, "ORPHAN_AGE", 0.0)
    index.compact()
    assert storage.client.count(storage.passages_name, exact=True).count == before
    assert index.search("red fox", mode="lexical").hits[0].passage.doc_id == "fox"


def index_new(text: str, doc_id: str):  # type: ignore[no-untyped-def]
    from groundqa.index.index import DocumentInput, new_document

    return new_document(DocumentInput(text, doc_id=doc_id))


def test_the_cli_works_on_qdrant(tmp_path: Path) -> None:
    """ingest, ask, docs, rm and migrate, each a fresh process, as a user runs them."""
    env = {"GROUNDQA_QDRANT_URL": f"local:{tmp_path / 'q'}"}
    done = groundqa("ingest", str(ARTICLE), "--doc-id", "putin", env=env)
    assert done.returncode == 0, done.stderr
    asked = groundqa("ask", QUESTION, env=env)
    assert asked.returncode == 0 and "2,500 km" in asked.stdout, asked.stderr
    listed = groundqa("docs", env=env)
    assert listed.stdout.startswith("putin\t15 passages"), listed.stdout
    assert groundqa("rm", "putin", env=env).returncode == 0
    assert "0 documents" in groundqa("docs", env=env).stdout
    # migrate: an embedded index copied, vectors and all, then asked through Qdrant
    embedded = tmp_path / "embedded"
    assert groundqa("ingest", str(ARTICLE), "--doc-id", "putin", index=embedded).returncode == 0
    target = {"GROUNDQA_QDRANT_URL": f"local:{tmp_path / 'copy'}"}
    copied = groundqa("migrate", "--to", "qdrant", index=embedded, env=target)
    assert copied.returncode == 0, copied.stderr
    assert "1 added" in copied.stdout
    assert "2,500 km" in groundqa("ask", QUESTION, env=target).stdout
    missing = groundqa("migrate", "--to", "qdrant", index=embedded)
    assert missing.returncode == 1 and "GROUNDQA_QDRANT_URL" in missing.stderr


@pytest.mark.parametrize("kind", ["local", "edge"])
def test_a_qdrant_folder_is_one_process_and_says_so_in_one_line(
    tmp_path: Path, embedder: Embedder, kind: str
) -> None:
    """Defects 5 and 7 of round 2: edge: started with several workers (30 % of requests a
    permanent 503), and a second process got a traceback of 25 to 51 lines."""
    url = f"{kind}:{tmp_path / 'q'}"
    held = Index(Location(tmp_path, url), embedder)
    assert held.counts() == (0, 0)
    with pytest.raises(SetupError, match="is open in another process"):
        QdrantStorage(url, held.meta(), embedder.info.dimension, BM25Params())
    env = {"GROUNDQA_QDRANT_URL": url}
    second = groundqa("docs", env=env)
    assert second.returncode == 1 and second.stderr.count("\n") == 1, second.stderr
    assert f"the Qdrant folder {tmp_path / 'q'} is open in another process" in second.stderr
    workers = groundqa("serve", "--workers", "2", env=env)
    assert workers.returncode == 1 and workers.stderr.count("\n") == 1, workers.stderr
    assert f"{kind}:DIR is opened by one process at a time: use --workers 1" in workers.stderr
    held.close()


def test_edge_without_its_package_names_the_extra(tmp_path: Path) -> None:
    """As on a machine without the edge extra: the import of qdrant_edge fails."""
    code = (
        "import sys; sys.modules['qdrant_edge'] = None; "
        "from groundqa.cli.main import main; sys.exit(main(['docs']))"
    )
    env = {**os.environ, "GROUNDQA_QDRANT_URL": f"edge:{tmp_path / 'q'}"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "needs the qdrant-edge-py package" in done.stderr and "groundqa[edge]" in done.stderr
