"""Questions: POST and GET /v1/query (with a written, verified answer on request), POST /v1/verify,
and the limits a client keeps to."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from groundqa.index.conversation import MAX_HISTORY_CHARS, MAX_TURN_CHARS, MAX_TURNS
from groundqa.index.ranking import (
    DEFAULT_K,
    DEFAULT_MODE,
    MAX_DOC_IDS,
    MAX_K,
    MAX_QUESTION_CHARS,
    MODES,
    Mode,
)
from groundqa.index.verify import MAX_VERIFY_CHARS, verify_text
from groundqa.service.deps import IndexDep, LLMDep, SearcherDep, SettingsDep
from groundqa.service.fields import DocIds, K, MinConfidence, QuestionText
from groundqa.service.generation import checked_sentences, whole, written_stream
from groundqa.service.schemas import (
    BODY_ERRORS,
    GeneratedOut,
    Limits,
    QueryRequest,
    QueryResponse,
    Responses,
    SentenceOut,
    VerifyRequest,
    VerifyResponse,
    errors,
    turns_of,
)

router = APIRouter(tags=["query"])


# With "stream": true (and "generate"), the answer comes as server-sent events.
STREAMED: Responses = {
    200: {
        "content": {
            "text/event-stream": {
                # Each event: its name, and its data (JSON: a sentence, or the whole response).
                "schema": {
                    "type": "object",
                    "properties": {
                        "event": {"type": "string", "enum": ["sentence", "result"]},
                        "data": {"type": "string", "contentMediaType": "application/json"},
                    },
                    "required": ["event", "data"],
                },
                "example": 'event: sentence\ndata: {"text": "...", "supported": true, ...}\n\n'
                'event: result\ndata: {"question": "...", ...}\n\n',
            }
        }
    }
}


@router.post("/v1/query", response_model=QueryResponse, responses={**STREAMED, **errors(404, *BODY_ERRORS)})
async def query(
    body: QueryRequest, index: IndexDep, searcher: SearcherDep, settings: SettingsDep, llm: LLMDep
) -> Response:
    """The answer sentence and the passages; with "generate": true, also a written answer whose
    every sentence is checked against the passages and cited by the span that supports it."""
    history = turns_of(body.history)
    args = (body.question, body.k, body.mode, body.doc_ids, body.min_confidence, history)
    result = await searcher.search("query", *args)
    response = QueryResponse.of(result)
    if not body.generate:
        return _rendered(response)
    keep = settings.keep_unsupported if body.keep_unsupported is None else body.keep_unsupported
    found = written_stream(index, llm, body.question, history, result, keep, searcher)
    if body.stream:
        return StreamingResponse(_events(found, response), media_type="text/event-stream")
    response.generated = await whole(found)
    return _rendered(response)


async def _events(
    found: AsyncIterator[SentenceOut | GeneratedOut], response: QueryResponse
) -> AsyncIterator[str]:
    """Server-sent events: each written sentence as it is checked and kept, then the response."""
    async for written in found:
        if isinstance(written, GeneratedOut):
            response.generated = written
            yield f"event: result\ndata: {response.as_text()}\n\n"
        else:
            yield f"event: sentence\ndata: {written.model_dump_json()}\n\n"


@router.post("/v1/verify", response_model=VerifyResponse, responses=errors(404, *BODY_ERRORS))
async def verify(body: VerifyRequest, index: IndexDep, searcher: SearcherDep) -> VerifyResponse:
    """Check any text, sentence by sentence, against the index (doc_ids: only these documents):
    each sentence with whether a passage supports it, how closely, and the span that does. No
    LLM is needed: a pipeline of your own can check its output here."""
    check = functools.partial(verify_text, index, body.text, body.doc_ids, 5, paced=searcher.pace)
    found = await searcher.run_heavy(check)
    out = checked_sentences(index, found)
    done = sum(s.supported for s in out)
    return VerifyResponse(sentences=out, supported=done, unsupported=len(out) - done)


@router.get("/v1/query", response_model=QueryResponse, responses=errors(404, 422, 503))
async def query_get(
    searcher: SearcherDep,
    q: Annotated[QuestionText, Query(description="the question")],
    k: Annotated[K, Query()] = DEFAULT_K,
    mode: Annotated[Mode, Query()] = DEFAULT_MODE,
    doc_ids: Annotated[DocIds, Query(description=f"repeat to search several (at most {MAX_DOC_IDS})")] = None,
    min_confidence: Annotated[MinConfidence, Query()] = None,
) -> Response:
    return _rendered(QueryResponse.of(await searcher.search("query", q, k, mode, doc_ids, min_confidence)))


@router.get("/v1/limits", response_model=Limits)
def limits(settings: SettingsDep) -> Limits:
    return Limits(
        question_chars=MAX_QUESTION_CHARS,
        k_max=MAX_K,
        k_default=DEFAULT_K,
        modes=list(MODES),
        default_mode=DEFAULT_MODE,
        doc_chars=settings.max_doc_chars,
        batch_documents=settings.max_batch_docs,
        doc_ids=MAX_DOC_IDS,
        body_bytes=settings.max_body_bytes,
        file_bytes=settings.max_file_bytes,
        pdf_pages=settings.max_pages,
        min_confidence=settings.answer_floor(),
        history_turns=MAX_TURNS,
        history_turn_chars=MAX_TURN_CHARS,
        history_chars=MAX_HISTORY_CHARS,
        generation=settings.llm() is not None,
        verify_chars=MAX_VERIFY_CHARS,
    )


def _rendered(response: QueryResponse) -> Response:
    """The answer rendered once (FastAPI would check the model a second time)."""
    return Response(response.as_text(), media_type="application/json")
