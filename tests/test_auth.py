"""One write rule (service/auth.py) for every face: each route that changes the documents (or reads
the upload jobs) refuses a request without the key, and every other route that takes a body is
one of the few public ones named here. Deleting a route's WriteKey fails these tests: the body
guard reads the write routes off the same dependency, so nothing else would refuse it."""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from groundqa.service import auth
from groundqa.service.routes import api_routes
from tests.conftest import LiveServer

KEY = "test-key-123"
# Every route that needs the key, as method and path.
WRITES = {
    ("POST", "/v1/documents"),
    ("POST", "/v1/documents/upload"),
    ("POST", "/v1/documents/batch"),
    ("PUT", "/v1/documents/{doc_id}"),
    ("DELETE", "/v1/documents/{doc_id}"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
}
# Routes that take a body and need no key: questions and checks, which change nothing.
PUBLIC_BODIES = {
    ("POST", "/v1/query"),
    ("POST", "/v1/verify"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
}
EXAMPLE = {"{doc_id}": "putin-china-visit", "{job_id}": "0" * 32, "{model}": "groundqa"}


@pytest.fixture(scope="module")
def server(seeded_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("auth") / "index"
    shutil.copytree(seeded_index, folder)
    with LiveServer(folder, api_key=KEY) as live:
        yield live


def _url(path: str) -> str:
    return re.sub(r"\{\w+\}", lambda m: EXAMPLE[m.group(0)], path)


def test_the_write_routes_are_the_ones_that_need_the_key(server: LiveServer) -> None:
    routes = list(api_routes(server.app.routes))
    guarded = {
        (m, r.path)
        for r in routes
        for m in r.methods or ()
        if auth.is_write(auth.write_routes([r]), m, _url(r.path))
    }
    assert guarded == WRITES
    with_body = {
        (m, r.path) for r in routes for m in r.methods or () if m in ("POST", "PUT", "DELETE", "PATCH")
    }
    assert with_body - WRITES == PUBLIC_BODIES


@pytest.mark.parametrize(("method", "path"), sorted(WRITES))
@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": f"Basic {KEY}"}, 401)],
)
def test_each_write_route_refuses_a_missing_or_wrong_key(
    server: LiveServer, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    body = {"json": {"text": "Some text."}} if method in ("POST", "PUT") else {}
    reply = httpx.request(method, server.url + _url(path), headers=headers, timeout=60, **body)  # type: ignore[arg-type]
    assert reply.status_code == status, (method, path, reply.text)
    assert "GROUNDQA_API_KEY" in reply.json()["detail"] and reply.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server.url}/v1/documents", timeout=60).json()["count"] == 1  # nothing changed


def test_a_write_without_the_key_is_refused_before_its_body_is_read(server: LiveServer) -> None:
    """The guard answers at the head: a body announced at 1 GB is never waited for."""
    head = b"POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head + b"Content-Length: 1000000000\r\n\r\n{")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer


def test_mcp_writes_follow_the_same_rule(server: LiveServer) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add_document", "arguments": {"text": "Some text.", "doc_id": "mcp-doc"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    refused = httpx.post(f"{server.url}/mcp", json=call, headers=headers, timeout=60).json()
    assert refused["result"]["isError"] and "GROUNDQA_API_KEY" in refused["result"]["content"][0]["text"]
    done = httpx.post(
        f"{server.url}/mcp", json=call, headers=headers | {"Authorization": f"Bearer {KEY}"}, timeout=60
    ).json()
    assert not done["result"].get("isError"), done
    assert (
        httpx.delete(
            f"{server.url}/v1/documents/mcp-doc", headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        ).status_code
        == 204
    )
