"""Questions: POST and GET /v1/query, and the limits a client keeps to."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from groundqa.index.conversation import MAX_HISTORY_CHARS, MAX_TURN_CHARS, MAX_TURNS, Turn
from groundqa.index.index import Index
from groundqa.index.ranking import (
    DEFAULT_K,
    DEFAULT_MODE,
    MAX_DOC_IDS,
    MAX_K,
    MAX_QUESTION_CHARS,
    MODES,
    Mode,
)
from groundqa.service.deps import IndexDep, SettingsDep
from groundqa.service.fields import DocIds, K, MinConfidence, QuestionText
from groundqa.service.schemas import BODY_ERRORS, Limits, QueryRequest, QueryResponse, errors, turns_of

router = APIRouter(tags=["query"])


@router.post("/v1/query", response_model=QueryResponse, responses=errors(404, *BODY_ERRORS))
async def query(body: QueryRequest, index: IndexDep, request: Request) -> Response:
    return await _search(
        index,
        request,
        body.question,
        body.k,
        body.mode,
        body.doc_ids,
        body.min_confidence,
        turns_of(body.history),
    )


@router.get("/v1/query", response_model=QueryResponse, responses=errors(404, 422, 503))
async def query_get(
    index: IndexDep,
    request: Request,
    q: Annotated[QuestionText, Query(description="the question")],
    k: Annotated[K, Query()] = DEFAULT_K,
    mode: Annotated[Mode, Query()] = DEFAULT_MODE,
    doc_ids: Annotated[DocIds, Query(description=f"repeat to search several (at most {MAX_DOC_IDS})")] = None,
    min_confidence: Annotated[MinConfidence, Query()] = None,
) -> Response:
    return await _search(index, request, q, k, mode, doc_ids, min_confidence)


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
    )


async def _search(
    index: Index,
    request: Request,
    question: str,
    k: int,
    mode: Mode,
    doc_ids: list[str] | None,
    min_confidence: float | None,
    history: list[Turn] | None = None,
) -> Response:
    """The query, and its answer rendered once (FastAPI would check the model a second time)."""
    state = request.app.state
    result = await index.search_async(
        state.rankers, question, k, mode, doc_ids, min_confidence, history or ()
    )
    state.metrics.query_seconds.labels(mode).observe(result.took_ms / 1000)
    return Response(QueryResponse.of(result).as_text(), media_type="application/json")
