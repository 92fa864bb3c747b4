"""Asks every question in every mode and scores the answers on gold spans."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from eval.data import Question
from eval.metrics import Located, Outcome, covers, first_rank
from index.index import Index

# The contract asks every question with k = 20: enough for hit@20.
ASK_K = 20

Ask = Callable[[str, int, str], dict[str, Any]]


def ask_index(index: Index) -> Ask:
    return lambda question, k, mode: index.search(question, k, mode).as_json()  # type: ignore[arg-type]


def score(question: Question, doc_id: str, response: dict[str, Any], latency_ms: float) -> Outcome:
    passages = [Located(p["doc_id"], p["start"], p["end"]) for p in response["passages"]]
    answer = response.get("answer")
    located = Located(answer["doc_id"], answer["start"], answer["end"]) if answer else None
    return Outcome(
        rank=first_rank(passages, doc_id, question.spans),
        answer_hit=located is not None and covers(located, doc_id, question.spans),
        answer_chars=len(answer["text"]) if answer else None,
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
            response = ask(q.question, ASK_K, mode)
            latency = (time.perf_counter() - began) * 1000
            outcomes.append(score(q, q.doc_id or default_doc or "", response, latency))
        results[mode] = outcomes
    return results


def progress(items: Iterable[Any], what: str, unit: str = "q") -> Iterator[Any]:
    """A progress bar with an ETA on a terminal; silent in CI and pipes."""
    if not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=what, file=sys.stderr, unit=unit, leave=False)
