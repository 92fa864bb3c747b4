"""The chat clients people use, as they use them: sources as OpenAI's url_citation annotations
(where Open WebUI builds its citation chips and Sources panel) on plain, streamed and
max_tokens-cut replies; the text completions LlamaIndex calls by default; unknown /v1 routes in
OpenAI's shape; the task prompts Open WebUI really sends (recorded from it, tests/data/open_webui/)
answered with 200; an article pasted with a question; and `groundqa mcp` started the way desktop
clients start it, from a folder it cannot write."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from groundqa.index.ranking import MAX_QUESTION_CHARS
from groundqa.index.text import count_tokens
from tests.conftest import ARTICLE, ROOT, LiveServer, groundqa

QUESTION = "How long is the Power of Siberia 2 pipeline?"
RECORDED = ROOT / "tests" / "data" / "open_webui"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("clients") / "index") as live:
        yield live


def _client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="any", max_retries=0)


def _check_annotations(text: str, annotations: list[dict[str, Any]], citations: list[dict[str, Any]]) -> None:
    """One url_citation a marker, where the marker stands, linking to its citation's view."""
    urls = {c["url"]: c for c in citations}
    assert annotations and all(a["type"] == "url_citation" for a in annotations)
    for a in (a["url_citation"] for a in annotations):
        cited = urls[a["url"]]
        assert text[a["start_index"] : a["end_index"]] == f"[[{cited['index']}]]({a['url']})"
        assert a["title"].startswith(cited["title"])
    assert {a["url_citation"]["url"] for a in annotations} == set(urls)


def test_replies_carry_url_citations_where_their_markers_stand(server: LiveServer) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    reply = _client(server).chat.completions.create(model="groundqa", messages=messages)  # type: ignore[arg-type]
    message = reply.choices[0].message
    text = message.content or ""
    assert "2,500 km" in text and "[[1]](http" in text
    body = message.model_dump()
    _check_annotations(text, body["annotations"], body["citations"])
    chunks = list(_client(server).chat.completions.create(model="groundqa", messages=messages, stream=True))  # type: ignore[arg-type]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = chunks[-1].choices[0]
    assert streamed == text and last.finish_reason == "stop"
    _check_annotations(streamed, (last.delta.model_extra or {})["annotations"], body["citations"])


def test_a_reply_cut_at_max_tokens_ends_at_a_word_and_keeps_its_sources(server: LiveServer) -> None:
    whole = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "groundqa", "messages": [{"role": "user", "content": QUESTION}]},
    ).json()["choices"][0]["message"]["content"]
    for stream in (False, True):
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": "groundqa",
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 20,
                "stream": stream,
            },
        )
        if stream:
            events = [json.loads(line[5:]) for line in reply.text.splitlines() if line.startswith("data: {")]
            text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
            finish, delta = events[-1]["choices"][0]["finish_reason"], events[-1]["choices"][0]["delta"]
            citations, annotations = events[-1]["citations"], delta["annotations"]
        else:
            choice = reply.json()["choices"][0]
            text, finish = choice["message"]["content"], choice["finish_reason"]
            citations, annotations = choice["message"]["citations"], choice["message"]["annotations"]
        assert finish == "length" and count_tokens(text) <= 20
        assert whole.startswith(text) and whole[len(text)].isspace(), text  # ends at a word: "Yam" is no word
        assert citations and annotations and len(annotations) >= len(citations)


def test_text_completions_answer_plain_and_streamed(server: LiveServer) -> None:
    """LlamaIndex's OpenAILike(is_chat_model=False) calls /v1/completions."""
    reply = _client(server).completions.create(model="groundqa", prompt=QUESTION)
    assert reply.object == "text_completion" and "2,500 km" in reply.choices[0].text
    assert reply.usage is not None and reply.usage.prompt_tokens == count_tokens(QUESTION)
    streamed = list(_client(server).completions.create(model="groundqa", prompt=QUESTION, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/responses"), ("POST", "/v1/embeddings"), ("GET", "/v1/files")]
)
def test_unknown_openai_routes_answer_in_openai_shape(server: LiveServer, method: str, path: str) -> None:
    reply = httpx.request(method, f"{server.url}{path}", json={"model": "groundqa", "input": "hi"})
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "unknown_url"
    assert "/v1/chat/completions" in error["message"]
    with pytest.raises(openai.NotFoundError):
        _client(server).responses.create(model="groundqa", input=QUESTION)


def test_open_webui_task_prompts_are_answered(server: LiveServer) -> None:
    """The requests Open WebUI 0.12.4 sent for a chat's title, tags and follow-ups, as recorded
    from it (docs/experiments/open_webui.py): each over the question limit, each answered with
    200 and the JSON its template asks for."""
    recorded = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(RECORDED.glob("*.json"))}
    assert {"title", "tags", "follow_ups", "question", "second_question"} <= set(recorded)
    for kind, body in recorded.items():
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
        assert reply.status_code == 200, (kind, reply.text)
        if kind in ("question", "second_question"):  # the chat itself, streamed, with its tools list
            assert (
                body["stream"] and "2,500 km" in reply.text
                if kind == "question"
                else "50 billion" in reply.text
            )
            continue
        assert len(body["messages"][-1]["content"]) > MAX_QUESTION_CHARS, kind
        found = json.loads(reply.json()["choices"][0]["message"]["content"])
        if kind == "title":
            assert "Power of Siberia" in found["title"]
        elif kind == "tags":
            assert found["tags"]
        elif kind == "follow_ups":
            assert found["follow_ups"] and all(q.endswith("?") for q in found["follow_ups"])


def test_an_article_pasted_with_a_question_is_answered(server: LiveServer) -> None:
    pasted = ARTICLE.read_text(encoding="utf-8")[:1120].rsplit(" ", 1)[0]
    message = f"{pasted}\n\n{QUESTION}"
    assert len(message) >= 1150 > MAX_QUESTION_CHARS
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "groundqa", "messages": [{"role": "user", "content": message}]},
    )
    assert reply.status_code == 200 and "2,500 km" in reply.json()["choices"][0]["message"]["content"]
    too_long = httpx.post(f"{server.url}/v1/query", json={"question": message})
    assert too_long.status_code == 422  # /v1/query keeps its limit


@pytest.mark.slow
def test_stdio_mcp_started_from_a_folder_it_cannot_write_answers_without_dead_links(tmp_path: Path) -> None:
    """Claude Desktop and Cursor start `groundqa mcp` from a folder the server cannot write: the
    exported model goes to the user's cache folder, and citations link to no server that does
    not run (their text and offsets say where they stand)."""
    index = tmp_path / "index"
    assert groundqa("ingest", str(ARTICLE), index=index).returncode == 0
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "var").write_text("not a folder: var/models cannot be made here")
    cache = tmp_path / "cache"
    shutil.copytree(ROOT / "var" / "models", cache / "groundqa" / "models")  # the export, made once
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "groundqa", "mcp", "--index", str(index)],
        cwd=str(folder),
        env={"XDG_CACHE_HOME": str(cache), "HF_HUB_OFFLINE": "1"},
    )

    async def run() -> Any:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool("ask", {"question": QUESTION})

    asked = asyncio.run(run())
    assert not asked.is_error, asked.content
    found = asked.structured_content
    assert "2,500 km" in found["answer"]["text"]
    assert found["citations"] and all(c["url"] is None for c in found["citations"])
    assert "127.0.0.1:8000" not in json.dumps(found)
