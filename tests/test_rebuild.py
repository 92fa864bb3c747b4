"""`groundqa rebuild` beside a live server: it refuses to move the folder of a running server, a
server whose folder was swapped under it writes nothing into the folder moved away, and rebuild
mends a folder left by the old behaviour (a server that went on writing into the folder moved
away). Real server processes, a real `groundqa rebuild`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from groundqa.eval.server import running
from tests.conftest import ARTICLE, groundqa

KEY = "rebuild-key"
AUTH = {"Authorization": f"Bearer {KEY}"}

pytestmark = pytest.mark.slow


def _serving(folder: Path) -> Any:
    return running(folder, "--workers", "1", env={"GROUNDQA_API_KEY": KEY})


def _put(url: str, doc_id: str, text: str) -> httpx.Response:
    return httpx.put(f"{url}/v1/documents/{doc_id}", json={"text": text}, headers=AUTH, timeout=120)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    index = tmp_path / "index"
    assert groundqa("ingest", str(ARTICLE), index=index).returncode == 0
    return index


def test_rebuild_refuses_while_a_server_serves_the_folder(folder: Path) -> None:
    with _serving(folder) as (_, url):
        assert _put(url, "before", "Ferries leave from Pier 3.").status_code == 201
        refused = groundqa("rebuild", index=folder)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1
        assert "a groundqa server is serving" in refused.stderr and "stop it" in refused.stderr
        assert _put(url, "after", "Trams leave from the station.").status_code == 201
    assert not list(folder.parent.glob("index.damaged-*"))  # nothing was moved
    with _serving(folder) as (_, url):
        ids = {d["doc_id"] for d in httpx.get(f"{url}/v1/documents").json()["documents"]}
        assert {"before", "after", "putin-china-visit"} <= ids
    done = groundqa("rebuild", index=folder)  # with no server: as before
    assert done.returncode == 0 and "rebuilt" in done.stdout, done.stderr


def test_a_server_writes_nothing_into_a_folder_swapped_under_it(folder: Path) -> None:
    with _serving(folder) as (_, url):
        moved = folder.with_name("index.moved")
        folder.rename(moved)  # as a rebuild of before 0.9.0 did, under the running server
        shutil.copytree(moved, folder)
        refused = _put(url, "lost", "This write must not be acknowledged.")
        assert refused.status_code == 503 and "was replaced" in refused.json()["detail"]
        assert httpx.get(f"{url}/readyz").status_code == 503
    with _serving(folder) as (_, url):
        assert _put(url, "kept", "A write after the restart.").status_code == 201


def test_rebuild_mends_a_folder_left_by_the_old_rebuild(folder: Path) -> None:
    """The old behaviour's state: the rebuilt folder holds revision 1, while the server went on
    committing into the folder moved away (index.damaged-*) and wrote the revision it reached
    into the committed file by path, in the new folder."""
    away = folder.with_name("index.damaged-20261130-101010")
    shutil.copytree(folder, away)
    note = folder.parent / "written.txt"
    note.write_text("The acknowledged write: the ferry leaves at noon.")
    assert groundqa("ingest", str(note), index=away).returncode == 0
    (folder / "committed").write_text((away / "committed").read_text())
    damaged = groundqa("docs", index=folder)
    assert damaged.returncode == 1 and "lost committed writes" in damaged.stderr
    mended = groundqa("rebuild", index=folder)
    assert mended.returncode == 0, mended.stderr
    assert mended.stdout.count("\n") == 1 and f"from {away}" in mended.stdout
    listed = groundqa("docs", index=folder)
    assert listed.returncode == 0 and "written\t" in listed.stdout and "putin-china-visit\t" in listed.stdout
