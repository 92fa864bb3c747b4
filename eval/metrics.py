"""Span-scored metrics: pure functions over plain values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Span = tuple[int, int]
KS = (1, 5, 10, 20)
MRR_CUTOFF = 10


@dataclass(frozen=True)
class Located:
    """A passage or an answer: where it lies."""

    doc_id: str
    start: int
    end: int


@dataclass(frozen=True)
class Outcome:
    """One question asked in one mode: the rank of the first passage holding a gold span, and more."""

    rank: int | None
    answer_hit: bool
    answer_chars: int | None  # None when no answer was given
    latency_ms: float


def covers(item: Located, doc_id: str, spans: Sequence[Span]) -> bool:
    """True when the item lies in the gold document and contains a whole gold span."""
    return item.doc_id == doc_id and any(item.start <= s and e <= item.end for s, e in spans)


def first_rank(passages: Sequence[Located], doc_id: str, spans: Sequence[Span]) -> int | None:
    return next((i for i, p in enumerate(passages, start=1) if covers(p, doc_id, spans)), None)


def hit_at(ranks: Sequence[int | None], k: int) -> float:
    return _mean([1.0 if r is not None and r <= k else 0.0 for r in ranks])


def mrr(ranks: Sequence[int | None], cutoff: int = MRR_CUTOFF) -> float:
    return _mean([1.0 / r if r is not None and r <= cutoff else 0.0 for r in ranks])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below it."""
    if not values:
        return 0.0
    return float(np.percentile(values, q, method="inverted_cdf"))


def summarize(outcomes: Sequence[Outcome]) -> dict[str, float]:
    ranks = [o.rank for o in outcomes]
    summary = {f"hit@{k}": round(hit_at(ranks, k), 4) for k in KS}
    summary["mrr@10"] = round(mrr(ranks), 4)
    summary["answer_hit"] = round(_mean([1.0 if o.answer_hit else 0.0 for o in outcomes]), 4)
    summary["answer_chars_mean"] = round(
        _mean([float(o.answer_chars) for o in outcomes if o.answer_chars is not None]), 1
    )
    latencies = [o.latency_ms for o in outcomes]
    summary["latency_ms_p50"] = round(percentile(latencies, 50), 2)
    summary["latency_ms_p95"] = round(percentile(latencies, 95), 2)
    return summary


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
