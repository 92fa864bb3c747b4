"""Request and response models: the JSON shapes of the contract, checked at the edge."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from index.index import MAX_K, MAX_QUESTION_CHARS

DOC_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"


class QueryRequest(BaseModel):
    question: str
    k: int = Field(5, ge=1, le=MAX_K)
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    doc_ids: list[str] | None = None

    @field_validator("question")
    @classmethod
    def trimmed(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the question is empty; ask something")
        if len(value) > MAX_QUESTION_CHARS:
            raise ValueError(f"the question has {len(value)} characters; the limit is {MAX_QUESTION_CHARS}")
        return value


class AnswerOut(BaseModel):
    doc_id: str
    title: str
    start: int
    end: int
    text: str
    score: float


class PassageOut(BaseModel):
    # Its own fields rather than a subclass of AnswerOut: responses keep the contract's key order.
    rank: int
    doc_id: str
    title: str
    passage_id: str
    start: int
    end: int
    text: str
    score: float


class QueryResponse(BaseModel):
    question: str
    mode: str
    k: int
    answer: AnswerOut | None
    passages: list[PassageOut]
    took_ms: float


class DocumentUpdate(BaseModel):
    text: str = Field(description="the article; stored exactly as given")
    title: str | None = Field(None, max_length=500)
    source: str | None = Field(None, max_length=2000)

    @field_validator("text")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the text is empty or white space only")
        return value


class DocumentIn(DocumentUpdate):
    doc_id: str | None = Field(None, pattern=DOC_ID_PATTERN)


class DocumentOut(BaseModel):
    doc_id: str
    title: str
    sha256: str
    chars: int
    passages: int
    source: str | None
    created_at: str


class DocumentText(DocumentOut):
    text: str


class DocumentList(BaseModel):
    documents: list[DocumentOut]
    count: int
