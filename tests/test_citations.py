"""Citations a person can check from any client: the citation view in Chromium, the links in the
text of OpenAI replies (LangChain's ChatOpenAI keeps only the text), links from configuration
and never from the request, the OpenAI surface where clients look (models.retrieve, usage,
max_tokens, n, stream usage, errors in its shape), pages, MCP errors in one sentence, and
citations that never overlap."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import httpx2
import openai
import pytest
from langchain_openai import ChatOpenAI
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from groundqa.index.text import count_tokens
from tests.conftest import LiveServer
from tests.files import make_pdf

KEY = "citations-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = "How long is the Power of Siberia 2 pipeline?"
SENTENCE = (
    "The Power of Siberia 2 pipeline, once completed, will help Russia export gas from the Yamal "
    "Peninsula field in western Siberia, through eastern Mongolia to northern China, stretching more "
    "than 2,500 km."
)
LINK = re.compile(r"\[(\d+)\] [^\n]*: <(http[^>]+)>")
HOSTILE = "Harmless intro.\n\n<script>document.title='PWNED'</script> The museum opens at nine o'clock."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(
        tmp_path_factory.mktemp("citations") / "index", api_key=KEY, max_body_bytes=200_000
    ) as live:
        pdf = make_pdf([["Harbour notes."], ["The lighthouse was built in 1874.", "Its lamp burns oil."]])
        made = httpx.post(
            f"{live.url}/v1/documents/upload", files={"file": ("harbour.pdf", pdf)}, headers=AUTH
        )
        assert made.status_code == 201, made.text
        hostile = {"text": HOSTILE, "title": "<b>Museum</b>"}
        assert httpx.put(f"{live.url}/v1/documents/museum", json=hostile, headers=AUTH).status_code == 201
        yield live


def _client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="any", max_retries=0)


def _ask(server: LiveServer, question: str = QUESTION, **extra: Any) -> Any:
    messages = [{"role": "user", "content": question}]
    return _client(server).chat.completions.create(model="groundqa", messages=messages, **extra)  # type: ignore[call-overload]


@pytest.mark.browser
def test_langchain_keeps_the_text_and_its_link_shows_the_cited_sentence(
    server: LiveServer, browser: Any
) -> None:
    chat = ChatOpenAI(base_url=f"{server.url}/v1", api_key="any", model="groundqa", max_retries=0)  # type: ignore[arg-type]
    text = str(chat.invoke(QUESTION).content)
    links = dict(LINK.findall(text))
    assert "2,500 km" in text and "[1]" in text and set(links) >= {"1", "2"}
    streamed = "".join(str(c.content) for c in chat.stream(QUESTION))
    assert dict(LINK.findall(streamed)) == links
    for width in (1100, 390):  # a desktop and a phone
        context = browser.new_context(viewport={"width": width, "height": 800})
        page = context.new_page()
        page.goto(links["1"])
        mark = page.locator("mark#cited")
        assert mark.inner_text() == SENTENCE
        assert mark.is_visible() and mark.bounding_box()["y"] < 800  # scrolled to it
        assert page.locator("h1").inner_text() == "President Putin's expectations from his visit to China"
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        context.close()


@pytest.mark.browser
def test_the_view_of_a_pdf_names_its_page_and_runs_no_script_of_a_document(
    server: LiveServer, browser: Any
) -> None:
    reply = _ask(server, "When was the lighthouse built?")
    cited = (reply.model_extra or {})["citations"]
    assert cited[0]["doc_id"] == "harbour" and cited[0]["page"] == 2
    assert "Harbour notes., p. 2: <" in (reply.choices[0].message.content or "") or ", p. 2: <" in (
        reply.choices[0].message.content or ""
    )
    page = browser.new_page()
    page.goto(cited[0]["url"])
    assert "p. 2" in page.locator(".where").inner_text()
    assert page.locator(".where a").get_attribute("href") == "/v1/documents/harbour/source#page=2"
    assert "1874" in page.locator("mark#cited").inner_text()
    text = httpx.get(f"{server.url}/v1/documents/museum").json()["text"]
    start = text.index("<script>")
    page.goto(f"{server.url}/view/museum?start={start}&end={len(text)}")
    assert page.title() != "PWNED" and "<script>" in page.locator("mark#cited").inner_text()
    assert page.locator("h1").inner_text() == "<b>Museum</b>"
    page.close()


def test_the_view_refuses_what_it_cannot_show(server: LiveServer) -> None:
    missing = httpx.get(f"{server.url}/view/nope?start=0&end=5")
    assert missing.status_code == 404 and "No document has the doc_id &#x27;nope&#x27;" in missing.text
    outside = httpx.get(f"{server.url}/view/museum?start=5&end=99999")
    assert outside.status_code == 422 and "does not lie in" in outside.text
    shown = httpx.get(f"{server.url}/view/museum?start=0&end=5")
    assert "default-src 'none'" in shown.headers["content-security-policy"]
    assert "<script>" not in shown.text and "&lt;script&gt;" in shown.text


def test_links_come_from_configuration_never_from_the_request(server: LiveServer) -> None:
    body = {"model": "groundqa", "messages": [{"role": "user", "content": QUESTION}]}
    for headers in (
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"},
    ):
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers)
        assert reply.status_code == 200 and "evil.example" not in reply.text
        assert all(c["url"].startswith(f"{server.url}/view/") for c in reply.json()["citations"])


def test_public_url_sets_the_links(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("public") / "index"
    with LiveServer(folder, public_url="https://qa.example.org/") as live:
        reply = httpx.post(
            f"{live.url}/v1/chat/completions",
            json={"model": "groundqa", "messages": [{"role": "user", "content": QUESTION}]},
        ).json()
        assert reply["citations"][0]["url"].startswith("https://qa.example.org/view/putin-china-visit?start=")
        assert "<https://qa.example.org/view/" in reply["choices"][0]["message"]["content"]


def test_the_openai_surface_behaves_as_openais(server: LiveServer) -> None:
    client = _client(server)
    assert client.models.retrieve("groundqa").id == "groundqa"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-nope")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    reply = _ask(server)
    content = reply.choices[0].message.content or ""
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_tokens(QUESTION)
    assert reply.usage.completion_tokens == count_tokens(content) > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    short = _ask(server, max_tokens=5)
    assert short.choices[0].finish_reason == "length"
    assert count_tokens(short.choices[0].message.content or "") <= 5 and short.usage.completion_tokens <= 5  # type: ignore[union-attr]
    assert _ask(server, max_completion_tokens=4000).choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as many:
        _ask(server, n=2)
    assert many.value.body["param"] == "n" and "n is 2" in many.value.body["message"]  # type: ignore[index]
    chunks = list(_ask(server, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_tokens(
        "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    )
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.usage is None for c in _ask(server, stream=True))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"model": "groundqa", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
        (b"x" * 300_000, 413),
    ],
)
def test_every_openai_error_is_in_its_shape(server: LiveServer, body: bytes, status: int) -> None:
    reply = httpx.post(
        f"{server.url}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == status
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    wrong = httpx.get(f"{server.url}/v1/chat/completions")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_no_two_citations_of_a_reply_overlap(server: LiveServer) -> None:
    for question in (
        QUESTION,
        "Who invited Putin to China?",
        "What did Gazprom report?",
        "Who is James Char?",
    ):
        cited = (_ask(server, question).model_extra or {})["citations"]
        spans = sorted((c["start"], c["end"]) for c in cited)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans


def test_mcp_results_carry_links_and_pages_and_errors_read_as_one_sentence(server: LiveServer) -> None:
    async def run() -> dict[str, Any]:
        async with (
            httpx2.AsyncClient(timeout=120, headers=AUTH) as http,
            streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return {
                "ask": await session.call_tool("ask", {"question": "When was the lighthouse built?", "k": 2}),
                "k": await session.call_tool("ask", {"question": QUESTION, "k": 99}),
                "missing": await session.call_tool("get_document", {"doc_id": "nope"}),
                "filter": await session.call_tool("ask", {"question": QUESTION, "doc_ids": ["nope"]}),
                "unknown": await session.call_tool("ask", {"question": QUESTION, "top_k": 3}),
                "needs": await session.call_tool("ask", {}),
                "conflict": await session.call_tool(
                    "add_document", {"text": "Other text.", "doc_id": "museum"}
                ),
            }

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        found = thread.submit(asyncio.run, run()).result()
    body = found["ask"].structured_content
    assert body["answer"]["page"] == 2 and body["citations"][0]["page"] == 2
    assert body["citations"][0]["url"].startswith(f"{server.url}/view/harbour?start=")
    errors = {name: found[name] for name in ("k", "missing", "filter", "unknown", "needs", "conflict")}
    for name, result in errors.items():
        text = result.content[0].text
        assert result.is_error, name
        assert "\n" not in text and "pydantic" not in text and "Error executing" not in text, text
        assert text.count(". ") == 0 and text.endswith("."), text  # one sentence
    assert "'k' of ask" in errors["k"].content[0].text and "50" in errors["k"].content[0].text
    assert "call list_documents" in errors["missing"].content[0].text
    assert "call list_documents" in errors["filter"].content[0].text
    assert "'top_k'" in errors["unknown"].content[0].text
    assert "'question'" in errors["needs"].content[0].text
    assert "replace: true" in errors["conflict"].content[0].text
