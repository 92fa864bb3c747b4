"""Request and response models: the JSON shapes of the contract, checked at the edge."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from groundqa.index.conversation import (
    MAX_HISTORY_CHARS,
    MAX_TURN_CHARS,
    MAX_TURNS,
    Role,
    Turn,
    check_history,
)
from groundqa.index.index import SearchResult, passage_id
from groundqa.index.ranking import DEFAULT_K, DEFAULT_MODE, Mode
from groundqa.index.storage import Document, Ingested
from groundqa.index.text import NOT_BLANK_PATTERN, check_text
from groundqa.index.verify import MAX_CLAIMS, MAX_VERIFY_CHARS
from groundqa.ingest.formats import FORMATS
from groundqa.service.fields import DocId, DocIds, K, MinConfidence, QuestionText

# Request bodies take JSON types as declared: no "5" for 5, no 0 for false.
STRICT = ConfigDict(strict=True)


class TurnIn(BaseModel):
    """An earlier turn of the conversation, in OpenAI's message shape."""

    model_config = ConfigDict(strict=True, extra="forbid")
    role: Role
    # (The limits are check_history's, run on the whole history; the schema only describes them.)
    content: str = Field(json_schema_extra={"maxLength": MAX_TURN_CHARS})

    def turn(self) -> Turn:
        return Turn(self.role, self.content)


def _checked_history(turns: list[TurnIn] | None) -> list[TurnIn] | None:
    check_history(turns_of(turns))
    return turns


History = Annotated[
    list[TurnIn] | None,
    Field(
        json_schema_extra={"maxItems": MAX_TURNS},
        description="the conversation's earlier turns, oldest first: the question is read in their "
        f"light (a follow-up such as 'How long is it?'); at most {MAX_TURNS} turns of "
        f"{MAX_TURN_CHARS} characters, {MAX_HISTORY_CHARS} in all",
    ),
    AfterValidator(_checked_history),
]


def turns_of(history: list[TurnIn] | None) -> list[Turn]:
    return [t.turn() for t in history or ()]


class QueryRequest(BaseModel):
    model_config = STRICT
    question: QuestionText
    k: K = DEFAULT_K
    mode: Mode = DEFAULT_MODE
    doc_ids: DocIds = None
    min_confidence: MinConfidence = None
    history: History = None
    generate: bool = Field(
        False,
        description="also write an answer with the server's LLM (GROUNDQA_LLM_URL), every sentence "
        "checked against the passages and cited; see `generated`",
    )
    keep_unsupported: bool | None = Field(
        None, description="keep the written sentences no passage supports, marked (GROUNDQA_KEEP_UNSUPPORTED)"
    )
    stream: bool = Field(
        False,
        description="with generate: reply with server-sent events, an `event: sentence` for each "
        "written sentence as soon as it is checked and kept, then an `event: result` holding this "
        "response whole",
    )


Page = Field(description="the page the span begins on: 1-based in a PDF, null in other formats")


def _checked(what: str) -> AfterValidator:
    """A text field checked by the index's rule (not blank, valid Unicode), naming it as what."""

    def check(text: str) -> str:
        check_text(text, what)
        return text

    return AfterValidator(check)


class CitationOut(BaseModel):
    """The span of a document that supports a sentence, found by groundqa."""

    doc_id: str
    start: int
    end: int
    page: int | None = Page
    text: str = Field(description="the document's text[start:end]")


class Cited(BaseModel):
    """A numbered citation of a reply ([n]), with a link a person can open to check it."""

    index: int
    doc_id: str
    title: str
    start: int
    end: int
    page: int | None = Page
    text: str = Field(description="the document's text[start:end]")
    url: str | None = Field(
        description="the citation view: the document with this span highlighted (null where no "
        "server is known to show it: `groundqa mcp` without GROUNDQA_PUBLIC_URL)"
    )


class URLCitation(BaseModel):
    url: str
    title: str
    start_index: int = Field(description="where the marker begins in the reply's text")
    end_index: int


class Annotation(BaseModel):
    """OpenAI's url_citation annotation: what Open WebUI and other clients show as a source."""

    type: str = "url_citation"
    url_citation: URLCitation


class SentenceOut(BaseModel):
    text: str
    supported: bool = Field(
        description="a passage holds it: its names, numbers and negations, in close words"
    )
    score: float = Field(description="how closely the cited span says it, 0 to 1")
    citation: CitationOut | None = Field(
        description="the span that supports it best; null when none comes close"
    )
    also: list[CitationOut] = Field(
        default_factory=list,
        description="a sentence joining facts of one passage: the spans of its other parts, each cited",
    )
    reason: str | None = Field(None, description="why it is not supported")


class GeneratedOut(BaseModel):
    text: str | None = Field(description="the written answer: its kept sentences (null: abstained)")
    sentences: list[SentenceOut] = Field(description="the kept sentences, each with its citation")
    unsupported: list[SentenceOut] = Field(description="sentences of the LLM's reply left out, with why")
    model: str | None
    llm_ms: float | None = Field(description="the LLM's time, apart from the search's")
    fallback: str | None = Field(
        description="extractive: the LLM's reply was unusable or unsupported, so the answer sentence "
        "stands; abstained: nothing to say; null: the LLM's reply, verified"
    )
    warnings: list[str]


class VerifyRequest(BaseModel):
    model_config = STRICT
    text: Annotated[str, _checked("the text to check")] = Field(
        max_length=MAX_VERIFY_CHARS,
        description=f"any text: each sentence (the first {MAX_CLAIMS}) is checked against the index",
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},
    )
    doc_ids: DocIds = None


class VerifyResponse(BaseModel):
    sentences: list[SentenceOut]
    supported: int
    unsupported: int


class AnswerOut(BaseModel):
    doc_id: str
    title: str
    start: int
    end: int
    text: str
    score: float
    page: int | None = Page


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
    page: int | None = Page


class QueryResponse(BaseModel):
    question: str
    mode: str
    k: int
    answer: AnswerOut | None = Field(
        description="the sentence that answers; null when nothing relevant was found or its "
        "confidence is under min_confidence (the passages are then the closest ones)"
    )
    confidence: float = Field(
        ge=0, le=1, description="the calibrated chance that the best answer sentence answers the question"
    )
    passages: list[PassageOut]
    took_ms: float
    searched_for: str | None = Field(
        None,
        description="only with a history: what was searched, the question read in the light of the "
        "conversation (the question itself when it needs none)",
    )
    generated: GeneratedOut | None = Field(None, description='only with "generate": true: the written answer')

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
                page=a.page,
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
                page=h.page,
            )
            for rank, h in enumerate(result.hits, start=1)
        ]
        return cls(
            question=result.question,
            mode=result.mode,
            k=result.k,
            answer=answer,
            confidence=result.confidence,
            passages=passages,
            took_ms=result.took_ms,
            searched_for=result.searched_for,
            generated=None,
        )

    def as_json(self) -> dict[str, Any]:
        """The contract's shape: searched_for only where a history was given."""
        return self.model_dump(mode="json", exclude=self._absent())

    def as_text(self) -> str:
        return self.model_dump_json(exclude=self._absent())

    def _absent(self) -> set[str] | None:
        """The keys only some requests get (searched_for: a history; generated: generate), left
        out of the others."""
        left = {k for k in ("searched_for", "generated") if getattr(self, k) is None}
        return left or None


class DocumentUpdate(BaseModel):
    model_config = STRICT
    text: Annotated[str, _checked("the document text")] = Field(
        description="the article, stored exactly as given; not blank, "
        "at most GROUNDQA_MAX_DOC_CHARS characters",
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},
    )
    title: str | None = Field(None, max_length=500)
    source: str | None = Field(None, max_length=2000)


class DocumentIn(DocumentUpdate):
    doc_id: DocId | None = None


class DocumentBatch(BaseModel):
    model_config = STRICT
    documents: list[DocumentIn] = Field(min_length=1, description="stored in one commit: all or none")
    replace: bool = Field(False, description="replace documents whose doc_id holds other text (else 409)")


class DocumentOut(BaseModel):
    doc_id: str
    title: str
    sha256: str = Field(description="of the stored text (the extracted text, for a file)")
    chars: int
    passages: int
    source: str | None = Field(description="the file name or URL it came from, if given")
    created_at: str
    format: str = Field(description=f"what it came as: {', '.join(FORMATS)}")
    pages: int | None = Field(description="a PDF's pages; null in other formats")
    published: str | None = Field(description="the date in a web page's metadata, if any")

    @classmethod
    def of(cls, doc: Document, **more: Any) -> Self:
        return cls(**doc.__dict__, pages=doc.pages, **more)


class DocumentText(DocumentOut):
    text: str


class Uploaded(DocumentOut):
    state: str = Field(description="added, replaced or unchanged")
    warnings: list[str] = Field(description="what could not be read, e.g. pages with no text layer")


class Progress(BaseModel):
    done: int = Field(description="pages read (reading) or texts embedded (embedding)")
    total: int = Field(description="of how many; 0 while not known")


class JobOut(BaseModel):
    id: str
    state: str = Field(description="queued, running, done or failed")
    stage: str = Field(
        description="waiting, reading (pages), embedding (passages and sentences), saving, finished"
    )
    progress: Progress
    name: str = Field(description="the file's name")
    doc_id: str | None
    created_at: str
    updated_at: str
    result: Uploaded | None = Field(description="when done: what the synchronous upload answers")
    error: str | None = Field(description="when failed: why, and what to do")

    @classmethod
    def of(cls, job: Any) -> JobOut:
        return cls(
            id=job.id,
            state=job.state,
            stage=job.stage,
            progress=Progress(done=job.done, total=job.total),
            name=job.name,
            doc_id=job.doc_id,
            created_at=job.created_at,
            updated_at=job.updated_at,
            result=job.result,
            error=job.error,
        )


class JobList(BaseModel):
    jobs: list[JobOut]


class DocumentList(BaseModel):
    documents: list[DocumentOut]
    count: int


class BatchItem(DocumentOut):
    state: str = Field(description="added, replaced or unchanged")

    @classmethod
    def of_ingested(cls, ingested: Ingested) -> BatchItem:
        return cls.of(ingested.document, state=ingested.state)


class BatchResult(BaseModel):
    documents: list[BatchItem]
    added: int
    replaced: int
    unchanged: int


class ErrorOut(BaseModel):
    detail: str = Field(description="what was wrong and what to do, in one line")


# Every error the API answers, with what it means; each route lists those it can give.
ERRORS = {
    304: "the document's sha256 equals the If-None-Match tag: the copy you hold is current",
    401: "missing or wrong API key",
    403: "HTTP writes are disabled (GROUNDQA_API_KEY is not set on the server)",
    404: "no document with that doc_id",
    408: "the request body did not arrive in time (GROUNDQA_BODY_TIMEOUT)",
    409: "the doc_id holds another text; send replace or use PUT",
    413: "the body, the number of documents, or a file's bytes or pages are over the limit",
    422: "invalid input: the detail names the field, or says why a file cannot be read",
    429: "too many upload jobs or bytes waiting (GROUNDQA_MAX_JOBS, GROUNDQA_MAX_JOB_BYTES): "
    "try again after Retry-After",
    503: "the index is loading, busy or stopping, or the server holds its most connections: try again",
    507: "no space left on the index's disk: the write stored nothing; free space and send it again",
}


Responses = dict[int | str, dict[str, Any]]


def errors(*codes: int) -> Responses:
    """The `responses` of a route: its error codes, each with the ErrorOut body (304 has none)."""
    return {
        code: {"description": ERRORS[code]} | ({} if code == 304 else {"model": ErrorOut}) for code in codes
    }


# The errors of a route that reads a body, and of one that writes.
BODY_ERRORS = (408, 413, 422, 503)
WRITE_ERRORS = (401, 403, *BODY_ERRORS, 507)


def stored(status: int, description: str) -> Responses:
    """A second success status of a write route, with the DocumentOut body."""
    return {status: {"model": DocumentOut, "description": description}}


class Limits(BaseModel):
    """The API's limits, for clients (the chat page reads them rather than keeping copies)."""

    question_chars: int
    k_max: int
    k_default: int
    modes: list[str]
    default_mode: str
    doc_chars: int
    batch_documents: int
    doc_ids: int
    body_bytes: int
    file_bytes: int
    pdf_pages: int
    min_confidence: float
    history_turns: int
    history_turn_chars: int
    history_chars: int
    generation: bool = Field(description='whether the server has an LLM for "generate": true')
    verify_chars: int
