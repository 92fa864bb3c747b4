"""The embedded backend under real use: merges, deletes, crashes at each step of a commit, and
several writer processes and a server on one index folder at once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from filelock import FileLock

from groundqa.eval.server import groundqa_command
from groundqa.index.errors import IndexBusy
from groundqa.index.index import DocumentInput, Index
from groundqa.index.storage.embedded import FAILPOINTS
from groundqa.index.storage.store import IDLE_CONNECTIONS
from tests.conftest import ROOT, LiveServer
from tests.test_index import HEADLINES, assert_whole

# Writer processes, kills at every step, merges: tens of seconds each.
pytestmark = pytest.mark.slow

QUESTIONS = ["How far does the fuel pipe go?", "Who won the final match?", "satellites in orbit", "vaccine"]
MODES = ("hybrid", "dense", "lexical")


def _results(index: Index) -> list[object]:
    out = []
    for question in QUESTIONS:
        for mode in MODES:
            r = index.search(question, 10, mode)  # type: ignore[arg-type]
            out.append((r.hits, r.answer))
    return out


def _found(index: Index, doc_id: str, text: str, mode: str) -> bool:
    hits = index.search(text[:200], 5, mode, doc_ids=[doc_id]).hits  # type: ignore[arg-type]
    return bool(hits) and hits[0].passage.doc_id == doc_id


def test_a_merge_gives_the_same_results(make_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index: Index = make_index()
    for doc_id, text in HEADLINES.items():  # one segment each
        index.add(text, doc_id=doc_id)
    assert len(list((tmp_path / "index" / "segments").iterdir())) == len(HEADLINES)
    before = _results(index)
    index.compact()
    assert len(list((tmp_path / "index" / "segments").iterdir())) == 1
    assert _results(index) == before
    assert _results(make_index()) == before  # and from a fresh open


def test_deletes_never_reappear_after_a_merge(make_index, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index: Index = make_index()
    for doc_id, text in HEADLINES.items():
        index.add(text, doc_id=doc_id)
    index.delete("rocket")
    index.add("Sunny skies all week across the plains.", doc_id="storm", replace=True)
    for _ in range(2):  # the merge, then a merge of the merged segment with a new one
        index.compact()
        index.add(f"Filler document number {_}.", doc_id=f"filler-{_}")
        for reopened in (index, Index(tmp_path / "index", embedder)):
            for mode in MODES:
                texts = [
                    h.passage.text
                    for q in QUESTIONS + ["winter storm closed schools"]
                    for h in reopened.search(q, 50, mode).hits
                ]  # type: ignore[arg-type]
                assert not any("rocket" in t or "winter storm" in t for t in texts), mode
            assert {d.doc_id for d in reopened.documents()} == set(HEADLINES) - {"rocket"} | {
                f"filler-{i}" for i in range(_ + 1)
            }
            assert_whole(reopened)


def test_many_small_writes_are_merged_by_size(make_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index: Index = make_index()
    for i in range(25):
        index.add(f"Note {i}: the ferry leaves pier {i} at {i} o'clock.", doc_id=f"note-{i}")
    segments = len(list((tmp_path / "index" / "segments").iterdir()))
    assert segments < 10  # merged as they came: ten one-passage segments make one
    assert index.counts() == (25, 25)
    assert index.search("When does the ferry leave pier 17?", 1).hits[0].passage.doc_id == "note-17"


def test_a_writer_that_finds_the_lock_held_says_so(make_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index: Index = make_index(lock_timeout=0.5)
    index.add("First.", doc_id="first")
    with FileLock(tmp_path / "index" / "write.lock"), pytest.raises(IndexBusy, match="try again"):
        index.add("Second.", doc_id="second")
    assert [d.doc_id for d in index.documents()] == ["first"]
    assert list((tmp_path / "index" / "tmp").iterdir()) == []  # its segment file went with it


KILLED_WRITER = """
import sys
from groundqa.index.config import prepare_process
from groundqa.index.index import Index, DocumentInput
from groundqa.index.model import Embedder
prepare_process()
index = Index(sys.argv[1], Embedder(), failpoint=sys.argv[2])
if sys.argv[2].startswith("merge"):
    index.compact()
else:
    index.add_many([DocumentInput(f"Batch document {i} about harbour cranes.", doc_id=f"batch-{i}") for i in range(5)])
print("survived")
"""


@pytest.mark.slow
@pytest.mark.parametrize("step", FAILPOINTS)
def test_a_kill_at_any_step_of_a_commit_leaves_the_last_revision_whole(
    step: str, make_index, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "index"
    index: Index = make_index()
    for doc_id, text in HEADLINES.items():
        index.add(text, doc_id=doc_id)
    index.delete("storm")  # a dead row for the merge to drop
    before = {d.doc_id: d.sha256 for d in index.documents()}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(folder), step],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert killed.returncode == -9 and "survived" not in killed.stdout, killed.stderr
    after = Index(folder, embedder)
    docs = {d.doc_id: d.sha256 for d in after.documents()}
    committed = step in ("committed", "swept")
    if committed:
        assert docs == before | {
            f"batch-{i}": hashlib.sha256(f"Batch document {i} about harbour cranes.".encode()).hexdigest()
            for i in range(5)
        }
    else:
        assert docs == before
    assert_whole(after)
    for doc_id in docs:
        assert _found(after, doc_id, after.document(doc_id)[1], "hybrid")
    assert list((folder / "tmp").iterdir()) == []
    committed_segments = {f"seg-{s}.bin" for s in after.storage.store.state().segments}
    assert {p.name for p in (folder / "segments").iterdir()} == committed_segments


def _article(i: int) -> str:
    topics = ["harbour cranes", "glacier melt", "violin makers", "bee keeping", "tram lines", "salt mines"]
    return (
        f"Report {i} on {topics[i % len(topics)]}.\n\n"
        f"The {topics[i % len(topics)]} story number {i} mentions the code word zq{i}x. "
        f"Officials counted {i * 7} visitors in district {i}."
    )


@pytest.mark.slow
def test_two_writer_processes_and_a_server_lose_nothing(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    """Two CLI ingests of folders run while HTTP clients add, replace and delete on the same index;
    afterwards every acknowledged document is there, exact, and found in every mode."""
    folder = tmp_path / "index"
    folders = [tmp_path / "a", tmp_path / "b"]
    expected: dict[str, str] = {}
    for n, sub in enumerate(folders):
        sub.mkdir()
        for i in range(n * 100, n * 100 + 40):
            (sub / f"cli-{i}.txt").write_text(_article(i), encoding="utf-8")
            expected[f"cli-{i}"] = _article(i)
    key = {"Authorization": "Bearer k"}
    server = LiveServer(folder, api_key="k")
    server.start()
    expected["putin-china-visit"] = server.seed_text
    try:
        env = {**os.environ, "GROUNDQA_INDEX_DIR": str(folder)}
        writers = [
            subprocess.Popen(
                groundqa_command("ingest", str(sub), "--batch", "8"),
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for sub in folders
        ]

        def client(t: int) -> dict[str, str | None]:
            """Thread t adds its documents, replaces every second one, deletes every third."""
            final: dict[str, str | None] = {}
            with httpx.Client(base_url=server.url, timeout=300) as c:
                for j in range(6):
                    doc_id, text = f"http-{t}-{j}", _article(1000 + 10 * t + j)
                    reply = c.post("/v1/documents", json={"text": text, "doc_id": doc_id}, headers=key)
                    assert reply.status_code == 201, reply.text
                    final[doc_id] = text
                    if j % 2:
                        text = _article(2000 + 10 * t + j)
                        reply = c.put(f"/v1/documents/{doc_id}", json={"text": text}, headers=key)
                        assert reply.status_code == 200, reply.text
                        final[doc_id] = text
                    if j % 3 == 2:
                        assert c.delete(f"/v1/documents/{doc_id}", headers=key).status_code == 204
                        final[doc_id] = None
                    reply = c.get("/v1/query", params={"q": "harbour cranes visitors", "k": 20})
                    assert reply.status_code == 200, reply.text
            return final

        with ThreadPoolExecutor(3) as pool:
            for final in pool.map(client, range(3)):
                expected.update({d: t for d, t in final.items() if t is not None})
        for w in writers:
            out, err = w.communicate(timeout=900)
            assert w.returncode == 0 and "Traceback" not in err, err
            assert out.count("\tadded") == 40, out
        listing = httpx.get(server.url + "/v1/documents").json()["documents"]
        assert {d["doc_id"]: d["sha256"] for d in listing} == {
            d: hashlib.sha256(t.encode()).hexdigest() for d, t in expected.items()
        }
        body = httpx.get(server.url + "/v1/query", params={"q": "code word zq117x", "k": 1}).json()
        assert body["passages"][0]["doc_id"] == "cli-117"  # the server reads the CLI's commits
    finally:
        server.stop()
    index = Index(folder, embedder)
    assert_whole(index)
    for doc_id, text in expected.items():
        for mode in MODES:
            assert _found(index, doc_id, text, mode), (doc_id, mode)


def test_a_large_segment_searches_an_approximate_index(make_index, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from groundqa.index.storage import segment

    monkeypatch.setattr(segment, "ANN_MIN_PASSAGES", 20)
    index: Index = make_index()
    index.add_many(
        [
            DocumentInput(f"Note {i}: the ferry leaves pier {i} at {i} o'clock.", doc_id=f"note-{i}")
            for i in range(40)
        ]
    )
    index.delete("note-17")
    index.compact()
    assert [p.suffix for p in sorted((tmp_path / "index" / "segments").iterdir())] == [".bin", ".ivf"]
    assert index.search("When does the ferry leave pier 23?", 1, "dense").hits[0].passage.doc_id == "note-23"
    dense = [h.passage.doc_id for h in index.search("ferry pier 17", 50, "dense").hits]
    assert "note-17" not in dense and len(dense) > 10
    index.add("Note 41: trams.", doc_id="note-41")
    index.compact()  # the merged segment gets its own index; the old one's files are removed
    assert len(list((tmp_path / "index" / "segments").glob("*.ivf"))) == 1


def test_open_files_do_not_grow_with_the_documents(make_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "index"
    index: Index = make_index(merge_in_background=False)

    def held() -> list[str]:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
        return [link for link in links if link.startswith(str(folder))]

    for i in range(60):  # writes only: no query reloads the reader meanwhile
        index.add(f"Note {i}: the ferry leaves pier {i} at {i} o'clock.", doc_id=f"note-{i}")
    index.search("ferry")
    segments = list((folder / "segments").iterdir())
    assert len(segments) < 10
    in_segments = [link for link in held() if "/segments/" in link]
    assert len(in_segments) <= len(segments), held()  # one descriptor per live segment, no deleted file
    assert not any("(deleted)" in link for link in held())
    # SQLite: the idle connections kept for reuse, each with its database, WAL and shared memory.
    assert len(held()) - len(in_segments) <= 3 * IDLE_CONNECTIONS, held()
