"""Asks every question in every mode and scores the answers on gold spans."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from groundqa.eval.data import Article, Question
from groundqa.eval.metrics import Located, Outcome, covers, first_rank
from groundqa.index.index import DocumentInput, Index, SearchResult
from groundqa.index.progress import progress

# The contract asks every question with k = 20: enough for hit@20.
ASK_K = 20
# The passages a report shows for a missed question.
TOP_SHOWN = 3


@dataclass(frozen=True)
class Reply:
    """What scoring reads of an answer, wherever it came from."""

    passages: list[Located]
    answer: Located | None  # asked with min_confidence 0: the best sentence, whatever its confidence
    answer_chars: int | None
    confidence: float | None = None  # None: the system gives none (the peer)


Ask = Callable[[str, int, str], Reply]


def reply_of_result(result: SearchResult) -> Reply:
    a = result.answer
    return Reply(
        [Located(h.passage.doc_id, h.passage.start, h.passage.end, h.page) for h in result.hits],
        None if a is None else Located(a.passage.doc_id, a.span.start, a.span.end, a.page),
        None if a is None else len(a.text),
        result.confidence,
    )


def reply_of_json(body: dict[str, Any]) -> Reply:
    """From the contract's QueryResponse."""
    a = body.get("answer")
    return Reply(
        [Located(p["doc_id"], p["start"], p["end"], p.get("page")) for p in body["passages"]],
        None if not a else Located(a["doc_id"], a["start"], a["end"], a.get("page")),
        None if not a else len(a["text"]),
        body.get("confidence"),
    )


def index_all(index: Index, items: list[DocumentInput], label: str = "index", batch: int = 32) -> Index:
    """Add documents to an evaluation index, a commit per batch (one model call per kind each)."""
    for at in progress(range(0, len(items), batch), label, unit="batch"):
        index.add_many(items[at : at + batch])
    return index


def articles_input(articles: list[Article]) -> list[DocumentInput]:
    return [DocumentInput(a.text, a.title, a.doc_id) for a in articles]


def ask_index(index: Index) -> Ask:
    """Asks with min_confidence 0, so that scoring sees every answer with its confidence and
    applies the index's threshold itself: one pass gives both behaviours."""

    def ask(question: str, k: int, mode: str) -> Reply:
        return reply_of_result(index.search(question, k, mode, min_confidence=0.0))  # type: ignore[arg-type]

    return ask


def score(
    question: Question,
    doc_id: str,
    reply: Reply,
    latency_ms: float,
    floor: float = 0.0,
    outside: bool = False,
) -> Outcome:
    """An answer counts when it holds a gold span and its confidence reaches the floor; a question
    asked outside the index (its article left out) and an unanswerable one have no gold span.
    doc_id is the question's document; the gold spans of its other documents count too."""
    golds = question.golds(doc_id)
    right = reply.answer is not None and not outside and any(covers(reply.answer, d, s) for d, s in golds)
    answered = reply.answer is not None and (reply.confidence is None or reply.confidence >= floor)
    ranks = [r for d, s in golds if (r := first_rank(reply.passages, d, s)) is not None]
    rank = None if outside or not ranks else min(ranks)
    page_right = None
    if question.page is not None:  # the page of what holds the gold span: the answer, else a passage
        holder = reply.answer if right else (reply.passages[rank - 1] if rank else None)
        page_right = holder is not None and holder.page == question.page
    return Outcome(
        rank=rank,
        answer_hit=right and answered,
        answer_chars=reply.answer_chars if answered else None,
        latency_ms=latency_ms,
        kind="outside" if outside else ("answerable" if question.spans else "unanswerable"),
        confidence=reply.confidence,
        right=right,
        answered=answered,
        page_right=page_right,
        top=tuple(reply.passages[:TOP_SHOWN]),
        answer=reply.answer,
    )


def evaluate(
    questions: list[Question],
    modes: list[str],
    ask: Ask,
    default_doc: str | None = None,
    floor: float = 0.0,
    outside: frozenset[str] = frozenset(),
) -> dict[str, list[Outcome]]:
    """Every question in every mode; those whose doc_id is in outside were left out of the index."""
    results: dict[str, list[Outcome]] = {}
    for mode in modes:
        outcomes = []
        for q in progress(questions, f"eval {mode}"):
            began = time.perf_counter()
            reply = ask(q.question, ASK_K, mode)
            latency = (time.perf_counter() - began) * 1000
            doc_id = q.doc_id or default_doc or ""
            outcomes.append(score(q, doc_id, reply, latency, floor, doc_id in outside))
        results[mode] = outcomes
    return results
