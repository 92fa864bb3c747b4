"""Request and response models: the JSON shapes of the contract, checked at the edge."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, field_validator

from index.index import DOC_ID_PATTERN, SearchResult, check_doc_id, passage_id
from index.ranking import MAX_K, Mode, clean_question
from index.storage import Ingested

# The index's own checks, run at the edge so that bad input is a 422 naming the field.
Question = Annotated[str, AfterValidator(clean_question)]
K = Annotated[int, Field(ge=1, le=MAX_K)]
DocId = Annotated[str, Field(pattern=f"^{DOC_ID_PATTERN}$"), AfterValidator(check_doc_id)]


class QueryRequest(BaseModel):
    question: Question
    k: K = 5
    mode: Mode = "hybrid"
    doc_ids: list[str] | None = None


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

    @classmethod
    def of(cls, result: SearchResult) -> QueryResponse:
        a = result.answer
        answer = None
        if a is not None:
            answer = AnswerOut(
                doc_id=a.passage.doc_id,
                title=a.title,
                start=a.span.start,
                end=a.span.end,
                text=a.text,
                score=a.score,
            )
        passages = [
            PassageOut(
                rank=rank,
                doc_id=h.passage.doc_id,
                title=h.title,
                passage_id=passage_id(h.passage),
                start=h.passage.start,
                end=h.passage.end,
                text=h.passage.text,
                score=h.score,
            )
            for rank, h in enumerate(result.hits, start=1)
        ]
        return cls(
            question=result.question,
            mode=result.mode,
            k=result.k,
            answer=answer,
            passages=passages,
            took_ms=result.took_ms,
        )

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


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
    doc_id: DocId | None = None


class DocumentBatch(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1, description="stored in one commit: all or none")
    replace: bool = Field(False, description="replace documents whose doc_id holds other text (else 409)")


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


class BatchItem(DocumentOut):
    state: str = Field(description="added, replaced or unchanged")

    @classmethod
    def of(cls, ingested: Ingested) -> BatchItem:
        return cls(**ingested.document.__dict__, state=ingested.state)


class BatchResult(BaseModel):
    documents: list[BatchItem]
    added: int
    replaced: int
    unchanged: int
