"""OpenAI's shapes, as groundqa reads and writes them: the chat and text completion requests, the
model list, usage, and what of a conversation is searched: the question (a long pasted message's
own question), its history, or a task a client asks of the model (a chat's title, its tags,
follow-up questions) rather than a question about the articles."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from groundqa.index.conversation import ROLES, Turn, trim_history
from groundqa.index.text import count_tokens
from groundqa.service.http_errors import OpenAIError

MODEL = "groundqa"
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
                Turn(m.role, text_of(m))  # type: ignore[arg-type]
                for m in body.messages[:at]
                if m.role in ROLES
            ]
            return text_of(body.messages[at]), trim_history([t for t in earlier if t.content.strip()])
    raise OpenAIError(
        400, "messages holds no user message: the last user message is the question", param="messages"
    )


def text_of(message: Message) -> str:
    """String content, or its text parts."""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(p.text or "" for p in message.content or [] if p.type == "text")


class CompletionRequest(BaseModel):
    """OpenAI's (legacy) text completion, as LlamaIndex's OpenAILike sends it by default: the
    prompt is the question."""

    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    max_tokens: int | None = None

    def as_chat(self) -> ChatRequest:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return ChatRequest(
            model=self.model,
            messages=[Message(role="user", content=prompt)],
            stream=self.stream,
            stream_options=self.stream_options,
            n=self.n,
            max_tokens=self.max_tokens,
        )


# Open WebUI's task prompts (a chat's title, tags, follow-ups, search queries, autocompletion)
# all begin so, quote the conversation in <chat_history>, and name the JSON key they want back.
_TASK = re.compile(r"\A\s*###\s*Task:\s*(?P<what>[^\n]*)", re.I)
_HISTORY = re.compile(r"<chat_history>(?P<chat>.*?)</chat_history>", re.S)
_KEY = re.compile(r"JSON format:\s*\{\s*\"(?P<key>\w+)\"")
KINDS = ("title", "tags", "follow_ups")


@dataclass(frozen=True)
class Task:
    """A request that is a task for the model, not a question about the articles."""

    kind: str  # title, tags, follow_ups, or the JSON key another task asks for ("queries"), or other
    json: bool  # the reply is to be a JSON object {kind: ...}
    chat: str  # the conversation it quotes ("USER: ...\nASSISTANT: ...")

    def questions(self) -> list[str]:
        """The user's turns the task quotes, first to last."""
        lines = (line.strip() for line in self.chat.splitlines())
        return [line.split(":", 1)[1].strip() for line in lines if line.upper().startswith("USER:")]


def task_of(text: str) -> Task | None:
    found = _TASK.match(text)
    if found is None:
        return None
    key = _KEY.search(text)
    said = found.group("what").lower()
    named = next((k for k in KINDS if k.replace("_", "-")[:-1] in said), "other")
    quoted = _HISTORY.search(text)
    chat = quoted.group("chat").strip() if quoted else ""
    return Task(key.group("key") if key else named, key is not None, chat)
