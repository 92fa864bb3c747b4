"""OpenAI-compatible routes: GET /v1/models, GET /v1/models/{model} and POST /v1/chat/completions
(plain and streamed). The reply is the grounded answer with numbered markers (written by the
server's LLM and verified sentence by sentence, where GROUNDQA_LLM_URL is set), then its sources as
Markdown links to the citation view (so a client that keeps only the text still lets a person
check each claim), and a `citations` array (on the response and on the message) whose offsets
index the stored text. Usage is counted in cl100k tokens. Errors come in OpenAI's shape."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from groundqa.index.conversation import ROLES, Turn, trim_history
from groundqa.index.errors import GroundQAError, IndexBusy
from groundqa.index.index import Index, SearchResult
from groundqa.index.ranking import DEFAULT_K
from groundqa.index.text import count_tokens, encoding
from groundqa.service.citations import citations, marked, sources, written_citations
from groundqa.service.config import LLM, Settings
from groundqa.service.deps import LLMDep, SearcherDep, SettingsDep
from groundqa.service.generation import written_stream
from groundqa.service.http_errors import OpenAIError
from groundqa.service.schemas import Cited, GeneratedOut, SentenceOut
from groundqa.service.search import Searcher

MODEL = "groundqa"
ABSTAINED = "The articles don't seem to answer this question."
NOTHING = "Nothing in the articles answers this question."
# Most messages in a conversation, and parts in one message's content (422 over them).
MAX_MESSAGES = 1000


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # image_url, input_audio...: not read
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_MESSAGES)] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p...: accepted, not used
    model: str
    messages: list[Message] = Field(max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class ModelObject(BaseModel):
    id: str = MODEL
    object: str = "model"
    created: int = 0
    owned_by: str = "groundqa"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelObject]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, reply: str) -> Usage:
        made = count_tokens(reply)
        return cls(prompt_tokens=prompt_tokens, completion_tokens=made, total_tokens=prompt_tokens + made)


@dataclass(frozen=True)
class Made:
    """What every chunk of one reply, and the reply, say of it."""

    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    model: str = MODEL


def conversation_of(body: ChatRequest) -> tuple[str, list[Turn]]:
    """The last user message's text is the question; the user and assistant messages before it
    are its history, trimmed from the oldest to the query's limits (system, developer and tool
    messages are not part of the conversation searched)."""
    for at in range(len(body.messages) - 1, -1, -1):
        if body.messages[at].role == "user":
            earlier = [
                Turn(m.role, _text(m))  # type: ignore[arg-type]
                for m in body.messages[:at]
                if m.role in ROLES
            ]
            return _text(body.messages[at]), trim_history([t for t in earlier if t.content.strip()])
    raise OpenAIError(
        400, "messages holds no user message: the last user message is the question", param="messages"
    )


def _text(message: Message) -> str:
    """String content, or its text parts."""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(p.text or "" for p in message.content or [] if p.type == "text")


# The reply as it is made: each piece of text, with the citations known so far.
Pieces = AsyncIterator[tuple[str, list[Cited]]]


def reply_text(result: SearchResult, cited: list[Cited]) -> str:
    if result.answer is None:
        return ABSTAINED if result.hits else NOTHING
    text = f"{result.answer.text} [1]"
    if len(cited) > 1:
        others = ", ".join(f"[{c.index}]" for c in cited[1:])
        text += f"\n\nSee also {others} in {cited[0].title}."
    return f"{text}\n\n{sources(cited)}"


async def _reply(pieces: Pieces) -> tuple[str, list[Cited]]:
    """The whole reply, as the stream sends it (its pieces, joined): its text and citations."""
    text, cited = "", []
    async for piece, known in pieces:
        text, cited = text + piece, known
    return text, cited


def cut(text: str, cited: list[Cited], max_tokens: int | None) -> tuple[str, list[Cited], str]:
    """The reply within max_tokens cl100k tokens, the citations whose markers it keeps, and the
    finish reason ("length" when cut)."""
    tokens = encoding().encode(text, disallowed_special=())
    if max_tokens is None or len(tokens) <= max_tokens:
        return text, cited, "stop"
    kept = encoding().decode_bytes(tokens[:max_tokens]).decode("utf-8", errors="ignore")
    return kept, [c for c in cited if f"[{c.index}]" in kept], "length"


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
    markers, its sources and `citations`; `stream: true` sends server-sent events.
    Abstentions say that the articles don't answer, with no citations."""
    try:
        body = ChatRequest.model_validate(await request.json())
    except (ValidationError, ValueError) as exc:
        raise OpenAIError(400, f"the request is not a chat completion: {_first(exc)}") from exc
    if body.model != MODEL:
        raise OpenAIError(404, f"the model {body.model!r} does not exist; use {MODEL!r}", param="model")
    if body.n not in (None, 1):
        raise OpenAIError(
            400, f"n is {body.n}; groundqa gives one answer: send n = 1 or leave it out", param="n"
        )
    limit = body.max_completion_tokens or body.max_tokens
    for name in ("max_tokens", "max_completion_tokens"):
        if getattr(body, name) is not None and getattr(body, name) < 1:
            raise OpenAIError(400, f"{name} is {getattr(body, name)}; give at least 1", param=name)
    question, history = conversation_of(body)
    try:
        result = await searcher.search("openai", question, DEFAULT_K, history=history)
    except IndexBusy as exc:  # loading, or overtaken by writers
        raise OpenAIError(503, str(exc), kind="server_error") from exc
    except GroundQAError as exc:
        raise OpenAIError(400, str(exc), param="messages") from exc
    read = sum(count_tokens(t.content) for t in history) + count_tokens(question)
    made = Made()
    answer = _answer_pieces(searcher, settings, llm, question, history, result)
    if body.stream:
        counting = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(made, answer, limit, read if counting else None)
        return StreamingResponse(events, media_type="text/event-stream")
    text, cited, finish = cut(*await _reply(answer), limit)
    shown = [c.model_dump() for c in cited]
    return JSONResponse(
        {
            **asdict(made),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "citations": shown},
                    "finish_reason": finish,
                }
            ],
            "citations": shown,
            "usage": Usage.of(read, text).model_dump(),
        }
    )


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
    answer: Pieces,
    max_tokens: int | None,
    prompt_tokens: int | None,
) -> AsyncIterator[str]:
    """OpenAI's chunk format: the role, the text as it comes (a verified sentence at a time, in
    pieces), cut at max_tokens as the plain reply is, then the finish with the citations, then
    (with stream_options.include_usage: prompt_tokens given) a chunk with no choices and the
    usage, every other chunk saying "usage": null; then [DONE]."""

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
        body = {
            **asdict(made),
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **({"usage": None} if prompt_tokens is not None else {}),
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    text, cited, finish = "", [], "stop"
    async for piece, known in answer:
        whole, kept, finish = cut(text + piece, known, max_tokens)
        for part in _pieces(whole[len(text) :]):
            yield chunk({"content": part})
        text, cited = whole, kept
        if finish == "length":
            break
    yield chunk({}, finish, citations=[c.model_dump() for c in cited])
    if prompt_tokens is not None:
        usage = Usage.of(prompt_tokens, text).model_dump()
        last = {**asdict(made), "object": "chat.completion.chunk", "choices": [], "usage": usage}
        yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"


def _pieces(text: str, size: int = 40) -> Iterator[str]:
    for at in range(0, len(text), size):
        yield text[at : at + size]


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return "the body is not JSON in UTF-8"
