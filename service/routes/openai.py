"""OpenAI-compatible routes: GET /v1/models, GET /v1/models/{model}, POST /v1/chat/completions and
POST /v1/completions (plain and streamed). The reply is the grounded answer (written by the
server's LLM and verified sentence by sentence, where GROUNDQA_LLM_URL is set) with numbered
markers, each a Markdown link to the citation view with its url_citation annotation, then its
sources as a Markdown list (so a client that keeps only the text still lets a person check each
claim), and a `citations` array (on the response and on the message) whose offsets index the
stored text. Usage is counted in cl100k tokens. Errors come in OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from groundqa.index.conversation import Turn, question_in
from groundqa.index.errors import GroundQAError, IndexBusy
from groundqa.index.index import Index, SearchResult
from groundqa.index.ranking import DEFAULT_K
from groundqa.index.text import count_tokens, encoding
from groundqa.service.citations import citations, marked, marker, sources, url_citations, written_citations
from groundqa.service.config import LLM, Settings
from groundqa.service.deps import LLMDep, SearcherDep, SettingsDep
from groundqa.service.generation import LLMFailed, reply_of, written_stream
from groundqa.service.http_errors import OpenAIError
from groundqa.service.openai_shapes import (
    MODEL,
    ChatRequest,
    CompletionRequest,
    Made,
    ModelList,
    ModelObject,
    Task,
    Usage,
    conversation_of,
    task_of,
    text_of,
)
from groundqa.service.schemas import Cited, GeneratedOut, SentenceOut
from groundqa.service.search import Searcher

ABSTAINED = "The articles don't seem to answer this question."
NOTHING = "Nothing in the articles answers this question."


# The reply as it is made: each piece of text, with the citations known so far.
Pieces = AsyncIterator[tuple[str, list[Cited]]]
# What a reply is: a chat completion's message, or a text completion's text.
Shape = Literal["chat", "text"]
R = TypeVar("R", bound=BaseModel)


def reply_text(result: SearchResult, cited: list[Cited]) -> str:
    if result.answer is None:
        return ABSTAINED if result.hits else NOTHING
    text = f"{result.answer.text} {marker(cited[0])}"
    if len(cited) > 1:
        others = ", ".join(marker(c) for c in cited[1:])
        text += f"\n\nSee also {others} in {cited[0].title}."
    return f"{text}\n\n{sources(cited)}"


async def _reply(pieces: Pieces) -> tuple[str, list[Cited]]:
    """The whole reply, as the stream sends it (its pieces, joined): its text and citations."""
    text, cited = "", []
    async for piece, known in pieces:
        text, cited = text + piece, known
    return text, cited


def cut(text: str, max_tokens: int | None) -> tuple[str, str]:
    """The reply within max_tokens cl100k tokens, cut at a word (a marker's link whole or not at
    all), and the finish reason ("length" when cut). Its citations stay: a cut reply keeps its sources."""
    tokens = encoding().encode(text, disallowed_special=())
    if max_tokens is None or len(tokens) <= max_tokens:
        return text, "stop"
    kept = encoding().decode_bytes(tokens[:max_tokens]).decode("utf-8", errors="ignore")
    if not text[len(kept) : len(kept) + 1].isspace():
        kept = kept[: max(kept.rfind(" "), kept.rfind("\n"), 0)]
    return kept.rstrip(), "length"


# The routes follow OpenAI's API reference, with its error shape, not groundqa's OpenAPI document
# (which promises {"detail"} errors): they are left out of it, and the official client tests them
# (tests/test_integrations.py).
router = APIRouter(include_in_schema=False)


@router.get("/v1/models")
def models() -> ModelList:
    """The one model: groundqa's grounded answers."""
    return ModelList(data=[ModelObject()])


@router.get("/v1/models/{model}")
def model(model: str) -> ModelObject:
    if model != MODEL:
        raise OpenAIError(404, f"the model {model!r} does not exist; use {MODEL!r}", param="model")
    return ModelObject()


@router.post("/v1/chat/completions", response_model=None)
async def chat(
    request: Request, searcher: SearcherDep, settings: SettingsDep, llm: LLMDep
) -> JSONResponse | StreamingResponse:
    """OpenAI's chat completion: the last user message is the question, read in the light of
    the user and assistant messages before it; the reply is the grounded answer with [n]
    markers, its sources, `annotations` and `citations`; `stream: true` sends server-sent
    events. Abstentions say that the articles don't answer, with no citations."""
    body = _read(ChatRequest, await _json(request), "a chat completion")
    return await _complete(body, "chat", searcher, settings, llm)


@router.post("/v1/completions", response_model=None)
async def completions(
    request: Request, searcher: SearcherDep, settings: SettingsDep, llm: LLMDep
) -> JSONResponse | StreamingResponse:
    """OpenAI's text completion (LlamaIndex's default for an OpenAI-like server): the prompt is
    the question, `text` the reply with its sources."""
    body = _read(CompletionRequest, await _json(request), "a text completion")
    return await _complete(body.as_chat(), "text", searcher, settings, llm)


async def _complete(
    body: ChatRequest, shape: Shape, searcher: Searcher, settings: Settings, llm: LLM | None
) -> JSONResponse | StreamingResponse:
    """A chat or text completion: checked, searched (or answered as a client's task), then
    sent whole or streamed in the shape asked for."""
    if body.model != MODEL:
        raise OpenAIError(404, f"the model {body.model!r} does not exist; use {MODEL!r}", param="model")
    if body.n not in (None, 1):
        said = f"n is {body.n}; groundqa gives one answer: send n = 1 or leave it out"
        raise OpenAIError(400, said, param="n")
    limit = body.max_completion_tokens or body.max_tokens
    for name in ("max_tokens", "max_completion_tokens"):
        if getattr(body, name) is not None and getattr(body, name) < 1:
            raise OpenAIError(400, f"{name} is {getattr(body, name)}; give at least 1", param=name)
    said, history = conversation_of(body)
    task = task_of(said) if settings.client_tasks else None
    read = sum(count_tokens(t.content) for t in history) + count_tokens(said)
    if task is not None:
        answer = _task_reply(task, body, searcher, llm)
    else:
        question = question_in(said)
        try:
            result = await searcher.search("openai", question, DEFAULT_K, history=history)
        except IndexBusy as exc:  # loading, or overtaken by writers
            raise OpenAIError(503, str(exc), kind="server_error") from exc
        except GroundQAError as exc:
            raise OpenAIError(400, str(exc), param="messages") from exc
        answer = _answer_pieces(searcher, settings, llm, question, history, result)
    if body.stream:
        counting = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(Made(), shape, answer, limit, read if counting else None)
        return StreamingResponse(events, media_type="text/event-stream")
    whole, cited = await _reply(answer)
    text, finish = cut(whole, limit)
    return JSONResponse(_whole(Made(), shape, text, cited, finish, Usage.of(read, text)))


def _whole(made: Made, shape: Shape, text: str, cited: list[Cited], finish: str, usage: Usage) -> object:
    """A reply whole, in OpenAI's shape for a chat or a text completion."""
    shown = [c.model_dump() for c in cited]
    noted = [a.model_dump() for a in url_citations(text, cited)]
    if shape == "text":
        choice: dict[str, object] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        kind = "text_completion"
    else:
        message = {"role": "assistant", "content": text, "annotations": noted, "citations": shown}
        choice, kind = {"index": 0, "message": message, "finish_reason": finish}, "chat.completion"
    usage_shown = usage.model_dump()
    return {**asdict(made), "object": kind, "choices": [choice], "citations": shown, "usage": usage_shown}


async def _task_reply(task: Task, body: ChatRequest, searcher: Searcher, llm: LLM | None) -> Pieces:
    """A client's task (a chat's title, tags, follow-ups...): with an LLM, its reply to the
    request as sent, ungrounded; without one, groundqa's own: a title from the first question,
    follow-ups from the passages the last question finds, and nothing to search."""
    if llm is not None:
        messages = [{"role": m.role, "content": text_of(m)} for m in body.messages]
        try:
            yield await reply_of(llm, messages), []
            return
        except LLMFailed:
            pass  # groundqa's own answer, below
    asked = task.questions()
    found: str | list[str] = []
    if task.kind == "title":
        words = (asked[0] if asked else "").rstrip("?!. ").split()
        found = " ".join(words[:7]) or "Questions on the articles"
    elif task.kind == "tags":
        found = ["General"]
    elif task.kind == "follow_ups":
        found = await _follow_ups(asked[-1] if asked else "", searcher)
    if not task.json:
        yield found if isinstance(found, str) else "\n".join(found), []
        return
    yield json.dumps({task.kind: found}, ensure_ascii=False), []


async def _follow_ups(last: str, searcher: Searcher) -> list[str]:
    """Questions a reader may ask next: what else the documents found for the last question say."""
    asked = question_in(last)
    if not asked.strip():
        return []
    try:
        found = await searcher.search("openai", asked, DEFAULT_K)
    except GroundQAError:
        return []
    titles = list(dict.fromkeys(h.title for h in found.hits))[:3]
    return [f"What else does “{t}” say?" for t in titles]


async def _answer_pieces(
    searcher: Searcher,
    settings: Settings,
    llm: LLM | None,
    question: str,
    history: list[Turn],
    result: SearchResult,
) -> Pieces:
    """The reply as it is made. A written answer comes a verified sentence at a time (with its
    marker), then its sources; else the extractive reply, whole."""
    base = settings.link_base()
    if llm is not None:
        index: Index = searcher.index()
        titles = {h.passage.doc_id: h.title for h in result.hits}
        said: list[SentenceOut] = []
        stream = written_stream(index, llm, question, history, result, settings.keep_unsupported, searcher)
        async for found in stream:
            if isinstance(found, GeneratedOut):
                if found.fallback is None:
                    cited = written_citations(found.sentences, titles, base)
                    yield f"\n\n{sources(cited)}", cited
                    return
                break
            said.append(found)
            cited = written_citations(said, titles, base)
            yield (" " if len(said) > 1 else "") + marked(found, cited), cited
    cited = citations(result, base)
    yield reply_text(result, cited), cited


async def _events(
    made: Made,
    shape: Shape,
    answer: Pieces,
    max_tokens: int | None,
    prompt_tokens: int | None,
) -> AsyncIterator[str]:
    """OpenAI's chunk format: the role, the text as it comes (a verified sentence at a time, in
    pieces), cut at max_tokens as the plain reply is, then the finish with the citations, then
    (with stream_options.include_usage: prompt_tokens given) a chunk with no choices and the
    usage, every other chunk saying "usage": null; then [DONE]."""

    def chunk(delta: dict[str, object], finish: str | None = None, **extra: Any) -> str:
        choice: dict[str, object] = {"index": 0, "delta": delta, "finish_reason": finish}
        if shape == "text":
            choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
        body = {
            **asdict(made),
            "object": "text_completion" if shape == "text" else "chat.completion.chunk",
            "choices": [choice],
            **({"usage": None} if prompt_tokens is not None else {}),
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    text, cited, finish = "", [], "stop"
    async for piece, known in answer:
        whole, finish = cut(text + piece, max_tokens)
        for part in _pieces(whole[len(text) :]):
            yield chunk({"content": part})
        text, cited = whole, known
        if finish == "length":
            break
    noted = [a.model_dump() for a in url_citations(text, cited)]
    yield chunk({"annotations": noted}, finish, citations=[c.model_dump() for c in cited])
    if prompt_tokens is not None:
        usage = Usage.of(prompt_tokens, text).model_dump()
        kind = "text_completion" if shape == "text" else "chat.completion.chunk"
        last = {**asdict(made), "object": kind, "choices": [], "usage": usage}
        yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"


def _pieces(text: str, size: int = 40) -> Iterator[str]:
    for at in range(0, len(text), size):
        yield text[at : at + size]


async def _json(request: Request) -> object:
    try:
        return await request.json()
    except ValueError as exc:
        raise OpenAIError(400, "the request is not JSON in UTF-8") from exc


def _read(model: type[R], body: object, what: str) -> R:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise OpenAIError(400, f"the request is not {what}: {_first(exc)}") from exc


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return "the body is not JSON in UTF-8"
