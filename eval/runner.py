"""Asks every question in every mode and scores the answers on gold spans."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from groundqa.eval.data import Question
from groundqa.eval.metrics import Located, Outcome, covers, first_rank
from groundqa.eval.progress import progress
from groundqa.index.index import Index, SearchResult

# The contract asks every question with k = 20: enough for hit@20.
ASK_K = 20


@dataclass(frozen=True)
class Reply:
    """What scoring reads of an answer, wherever it came from."""

    passages: list[Located]
    answer: Located | None
    answer_chars: int | None


Ask = Callable[[str, int, str], Reply]


def reply_of_result(result: SearchResult) -> Reply:
    a = result.answer
    return Reply(
        [Located(h.passage.doc_id, h.passage.start, h.passage.end) for h in result.hits],
        None if a is None else Located(a.passage.doc_id, a.span.start, a.span.end),
        None if a is None else len(a.text),
    )


def reply_of_json(body: dict[str, Any]) -> Reply:
    """From the contract's QueryResponse."""
    a = body.get("answer")
    return Reply(
        [Located(p["doc_id"], p["start"], p["end"]) for p in body["passages"]],
        None if not a else Located(a["doc_id"], a["start"], a["end"]),
        None if not a else len(a["text"]),
    )


def ask_index(index: Index) -> Ask:
    return lambda question, k, mode: reply_of_result(index.search(question, k, mode))  # type: ignore[arg-type]


def score(question: Question, doc_id: str, reply: Reply, latency_ms: float) -> Outcome:
    return Outcome(
        rank=first_rank(reply.passages, doc_id, question.spans),
        answer_hit=reply.answer is not None and covers(reply.answer, doc_id, question.spans),
        answer_chars=reply.answer_chars,
        latency_ms=latency_ms,
    )


def evaluate(
    questions: list[Question], modes: list[str], ask: Ask, default_doc: str | None = None
) -> dict[str, list[Outcome]]:
    results: dict[str, list[Outcome]] = {}
    for mode in modes:
        outcomes = []
        for q in progress(questions, f"eval {mode}"):
            began = time.perf_counter()
            reply = ask(q.question, ASK_K, mode)
            latency = (time.perf_counter() - began) * 1000
            outcomes.append(score(q, q.doc_id or default_doc or "", reply, latency))
        results[mode] = outcomes
    return results
