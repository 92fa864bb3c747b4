"""OpenAI-compatible routes: GET /v1/models and POST /v1/chat/completions (plain and streamed).
The reply is the grounded answer with numbered markers, and a `citations` array (on the response
and on the message) whose offsets index the stored text. Errors come in OpenAI's shape."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from groundqa.index.conversation import ROLES, Turn, trim_history
from groundqa.index.errors import GroundQAError, IndexBusy
from groundqa.index.index import Index, SearchResult
from groundqa.index.ranking import DEFAULT_K

MODEL = "groundqa"
ABSTAINED = "The articles don't seem to answer this question."
NOTHING = "Nothing in the articles answers this question."
# Passages cited beside the answer sentence.
CITED = 3


class OpenAIError(Exception):
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param


# Most messages in a conversation, and parts in one message's content (422 over them).
MAX_MESSAGES = 1000


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens...: accepted, not used
    model: str
    messages: list[Message] = Field(max_length=MAX_MESSAGES)
    stream: bool = False


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
    return "\n".join(p.get("text", "") for p in message.content or [] if p.get("type") == "text")


def citations(result: SearchResult, base_url: str) -> list[dict[str, Any]]:
    """[1] the answer sentence, then the other returned passages of its document (context for it),
    each with its exact text."""
    if result.answer is None:
        return []
    a = result.answer
    found = [(a.passage.doc_id, a.title, a.span.start, a.span.end, a.text)]
    for hit in result.hits:
        p = hit.passage
        if len(found) > CITED:
            break
        holds_answer = p.start <= a.span.start and a.span.end <= p.end
        if p.doc_id == a.passage.doc_id and not holds_answer:
            found.append((p.doc_id, hit.title, p.start, p.end, p.text))
    return [
        {
            "index": i,
            "doc_id": doc_id,
            "title": title,
            "start": start,
            "end": end,
            "page": None,
            "text": text,
            "url": f"{base_url}/v1/documents/{doc_id}",
        }
        for i, (doc_id, title, start, end, text) in enumerate(found, start=1)
    ]


def reply_text(result: SearchResult, cited: list[dict[str, Any]]) -> str:
    if result.answer is None:
        return ABSTAINED if result.hits else NOTHING
    text = f"{result.answer.text} [1]"
    if len(cited) > 1:
        others = ", ".join(f"[{c['index']}]" for c in cited[1:])
        text += f"\n\nSee also {others} in {cited[0]['title']}."
    return text


def add_routes(app: FastAPI, index: Callable[[Request], Index]) -> None:
    """The routes follow OpenAI's API reference, with its error shape, not groundqa's OpenAPI
    document (which promises {"detail"} errors): they are left out of it, and the official client
    tests them (tests/test_integrations.py)."""

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        code = {401: "invalid_api_key", 404: "model_not_found", 503: "unavailable"}.get(exc.status)
        body = {"error": {"message": str(exc), "type": exc.kind, "param": exc.param, "code": code}}
        return JSONResponse(body, status_code=exc.status)

    @app.get("/v1/models", include_in_schema=False)
    def models() -> dict[str, Any]:
        """The one model: groundqa's grounded answers."""
        return {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "groundqa"}],
        }

    @app.post("/v1/chat/completions", include_in_schema=False, response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        """OpenAI's chat completion: the last user message is the question, read in the light of
        the user and assistant messages before it; the reply is the
        grounded answer with [n] markers and `citations`; `stream: true` sends server-sent
        events. Abstentions say that the articles don't answer, with no citations."""
        try:
            body = ChatRequest.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            raise OpenAIError(400, f"the request is not a chat completion: {_first(exc)}") from exc
        if body.model != MODEL:
            raise OpenAIError(404, f"the model {body.model!r} does not exist; use {MODEL!r}", param="model")
        question, history = conversation_of(body)
        try:
            search = index(request).search
            result = await run_in_threadpool(search, question, DEFAULT_K, history=history)
        except IndexBusy as exc:  # loading, or overtaken by writers
            raise OpenAIError(503, str(exc), kind="server_error") from exc
        except GroundQAError as exc:
            raise OpenAIError(400, str(exc), param="messages") from exc
        cited = citations(result, str(request.base_url).rstrip("/"))
        text = reply_text(result, cited)
        made = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": MODEL}
        if body.stream:
            return StreamingResponse(_events(made, text, cited), media_type="text/event-stream")
        return JSONResponse(
            {
                **made,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "citations": cited},
                        "finish_reason": "stop",
                    }
                ],
                "citations": cited,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        )


def _events(made: dict[str, Any], text: str, cited: list[dict[str, Any]]) -> Iterator[str]:
    """OpenAI's chunk format: the role, the text a sentence at a time, then the finish with the
    citations, then [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            **made,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(text):
        yield chunk({"content": piece})
    yield chunk({}, "stop", citations=cited)
    yield "data: [DONE]\n\n"


def _pieces(text: str, size: int = 40) -> Iterator[str]:
    for at in range(0, len(text), size):
        yield text[at : at + size]


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return "the body is not JSON"
