"""MCP (stdio and streamable HTTP) and the OpenAI-compatible routes, through the official clients:
the mcp SDK's ClientSession and the openai package. Every citation's offsets must index the
stored text."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from groundqa.service.routes.openai import ABSTAINED
from tests.conftest import ARTICLE, ROOT, LiveServer, groundqa

KEY = "integration-key"
QUESTION = "How long is the Power of Siberia 2 pipeline?"
ELSEWHERE = "Which country did the French president visit in March to sign a nuclear deal?"
TOOLS = {"ask", "search", "get_document", "list_documents", "add_document"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("integrations") / "index", api_key=KEY)
    live.start()
    yield live
    live.stop()


def stored(server: LiveServer, doc_id: str) -> str:
    text: str = httpx.get(f"{server.url}/v1/documents/{doc_id}").json()["text"]
    return text


async def _session_calls(session: ClientSession, writes: bool) -> dict[str, Any]:
    await session.initialize()
    tools = {t.name for t in (await session.list_tools()).tools}
    asked = await session.call_tool("ask", {"question": QUESTION, "k": 3})
    passages = await session.call_tool("search", {"question": QUESTION, "k": 2})
    answer = asked.structured_content["answer"]  # type: ignore[index]
    around = await session.call_tool(
        "get_document", {"doc_id": answer["doc_id"], "start": answer["start"], "end": answer["end"]}
    )
    missing = await session.call_tool("get_document", {"doc_id": "nope"})
    listing = await session.call_tool("list_documents", {})
    out = {
        "tools": tools,
        "ask": asked,
        "search": passages,
        "around": around,
        "missing": missing,
        "listing": listing,
    }
    if writes:
        out["add"] = await session.call_tool(
            "add_document", {"text": "Ferries leave every 40 minutes from Pier 3.", "doc_id": "ferries"}
        )
    return out


def _check_answer(found: dict[str, Any], text: str) -> None:
    asked = found["ask"]
    assert not asked.is_error
    body = asked.structured_content
    answer = body["answer"]
    assert "2,500 km" in answer["text"] and 0 < body["confidence"] <= 1
    assert text[answer["start"] : answer["end"]] == answer["text"]
    for p in body["passages"]:
        assert text[p["start"] : p["end"]] == p["text"]
    assert asked.content and "2,500 km" in asked.content[0].text  # the same as text
    assert [p["rank"] for p in found["search"].structured_content["passages"]] == [1, 2]
    assert found["around"].structured_content["text"] == answer["text"]
    assert found["missing"].is_error and "nope" in found["missing"].content[0].text
    assert found["listing"].structured_content["count"] >= 1


@pytest.mark.slow
def test_mcp_over_stdio(tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert groundqa("ingest", str(ARTICLE), index=index).returncode == 0
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "groundqa", "mcp", "--index", str(index)], cwd=str(ROOT)
    )

    async def run() -> dict[str, Any]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            return await _session_calls(session, writes=True)

    found = asyncio.run(run())
    assert found["tools"] == TOOLS
    _check_answer(found, ARTICLE.read_text(encoding="utf-8"))
    assert not found["add"].is_error and found["add"].structured_content["doc_id"] == "ferries"


def test_mcp_over_http_reads_open_writes_need_the_key(server: LiveServer) -> None:
    async def run(headers: dict[str, str]) -> dict[str, Any]:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=120) as http,
            streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await _session_calls(session, writes=True)

    anonymous = asyncio.run(run({}))
    assert anonymous["tools"] == TOOLS
    _check_answer(anonymous, stored(server, "putin-china-visit"))
    refused = anonymous["add"]
    assert refused.is_error and "API key" in refused.content[0].text
    keyed = asyncio.run(run({"Authorization": f"Bearer {KEY}"}))
    assert not keyed["add"].is_error
    assert stored(server, "ferries") == "Ferries leave every 40 minutes from Pier 3."


def _client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed-for-reads", max_retries=0)


def _check_citations(server: LiveServer, citations: list[dict[str, Any]]) -> None:
    assert citations
    for c in citations:
        text = stored(server, c["doc_id"])
        assert text[c["start"] : c["end"]] == c["text"]
        assert c["url"] == f"{server.url}/view/{c['doc_id']}?start={c['start']}&end={c['end']}#cited"


def test_openai_chat_completion_with_citations(server: LiveServer) -> None:
    client = _client(server)
    assert [m.id for m in client.models.list()] == ["groundqa"]
    reply = client.chat.completions.create(
        model="groundqa",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
    )
    message = reply.choices[0].message
    assert "2,500 km" in (message.content or "") and "[1]" in (message.content or "")
    citations = (reply.model_extra or {})["citations"]
    _check_citations(server, citations)
    assert (message.model_extra or {})["citations"] == citations
    assert citations[0]["index"] == 1 and "2,500 km" in citations[0]["text"]


def test_openai_streamed_chat_completion(server: LiveServer) -> None:
    client = _client(server)
    chunks = list(
        client.chat.completions.create(
            model="groundqa", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "2,500 km" in text and "[1]" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    _check_citations(server, (chunks[-1].model_extra or {})["citations"])


def test_openai_abstention_and_errors_in_its_own_shape(server: LiveServer) -> None:
    client = _client(server)
    reply = client.chat.completions.create(
        model="groundqa", messages=[{"role": "user", "content": ELSEWHERE}]
    )
    assert reply.choices[0].message.content == ABSTAINED
    assert (reply.model_extra or {})["citations"] == []
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert "groundqa" in str(missing.value)
    with pytest.raises(openai.BadRequestError) as no_question:
        client.chat.completions.create(model="groundqa", messages=[{"role": "system", "content": "hi"}])
    assert "user message" in str(no_question.value)
    raw = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "groundqa"})
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_every_face_searches_on_one_path_counted_by_face(server: LiveServer) -> None:
    """Three questions over /v1/query, three over the OpenAI route, three over MCP: the search
    metric counts all nine, each under its face."""

    def counted() -> dict[str, float]:
        found: dict[str, float] = {}
        for line in httpx.get(f"{server.url}/metrics").text.splitlines():
            if line.startswith("groundqa_query_seconds_count{"):
                face = line.split('face="')[1].split('"')[0]
                found[face] = found.get(face, 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    before = counted()
    for n in range(3):
        assert httpx.post(f"{server.url}/v1/query", json={"question": f"{QUESTION} {n}"}).status_code == 200
        reply = _client(server).chat.completions.create(
            model="groundqa", messages=[{"role": "user", "content": f"{QUESTION} {n}"}]
        )
        assert "2,500 km" in (reply.choices[0].message.content or "")

    async def over_mcp() -> None:
        async with (
            httpx2.AsyncClient(timeout=120) as http,
            streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            for n in range(2):
                assert not (await session.call_tool("ask", {"question": f"{QUESTION} {n}"})).is_error
            assert not (await session.call_tool("search", {"question": QUESTION})).is_error

    asyncio.run(over_mcp())
    after = counted()
    assert {face: after.get(face, 0) - before.get(face, 0) for face in ("query", "openai", "mcp")} == {
        "query": 3,
        "openai": 3,
        "mcp": 3,
    }
