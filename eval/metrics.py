"""Span-scored metrics: pure functions over plain values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

Span = tuple[int, int]
KS = (1, 5, 10, 20)
MRR_CUTOFF = 10


@dataclass(frozen=True)
class Located:
    """A passage or an answer: where it lies."""

    doc_id: str
    start: int
    end: int
    page: int | None = None  # the page it begins on, in a document with pages


@dataclass(frozen=True)
class Outcome:
    """One question asked in one mode: the rank of the first passage holding a gold span, and more."""

    rank: int | None
    answer_hit: bool  # answered (confidence at least the floor) and holding a gold span
    answer_chars: int | None  # None when no answer was given
    latency_ms: float
    kind: str = "answerable"  # or unanswerable (SQuAD 2.0), or outside (its article not indexed)
    confidence: float | None = None
    right: bool = False  # the best answer sentence holds a gold span, whatever its confidence
    answered: bool = True
    page_right: bool | None = None  # what holds the gold span names the gold page (None: no page asked)
    # What the reply gave, for the report's missed questions: its first passages and its answer.
    top: tuple[Located, ...] = ()
    answer: Located | None = None


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


def summarize(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    """Retrieval and answers over the answerable questions (abstentions count as misses), and,
    where the system gives a confidence, how well it tells answers worth giving."""
    answerable = [o for o in outcomes if o.kind == "answerable"]
    ranks = [o.rank for o in answerable]
    summary: dict[str, float | None] = {f"hit@{k}": round(hit_at(ranks, k), 4) for k in KS}
    summary["mrr@10"] = round(mrr(ranks), 4)
    summary["answer_hit"] = round(_mean([1.0 if o.answer_hit else 0.0 for o in answerable]), 4)
    # In the answer given or in the top passage: what a reader of the reply sees first.
    summary["answer_or_top"] = _share([o.answer_hit or o.rank == 1 for o in answerable])
    summary["page_right"] = _share([o.page_right for o in answerable if o.page_right is not None])
    summary["answer_chars_mean"] = round(
        _mean([float(o.answer_chars) for o in answerable if o.answer_chars is not None]), 1
    )
    latencies = [o.latency_ms for o in outcomes]
    summary["latency_ms_p50"] = round(percentile(latencies, 50), 2)
    summary["latency_ms_p95"] = round(percentile(latencies, 95), 2)
    if any(o.confidence is not None for o in outcomes):
        summary.update(abstention(outcomes))
    return summary


def abstention(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    """Answered and refused shares by kind, answer_hit with no abstention, AUROC of the
    confidence (answerable against the rest), its calibration error and the area under the
    risk-coverage curve."""
    kinds = {k: [o for o in outcomes if o.kind == k] for k in ("answerable", "unanswerable", "outside")}
    conf = [o.confidence or 0.0 for o in outcomes]
    out: dict[str, float | None] = {
        "answered": _share([o.answered for o in kinds["answerable"]]),
        "answer_hit_min_confidence_0": _share([o.right for o in kinds["answerable"]]),
        "refused_unanswerable": _share([not o.answered for o in kinds["unanswerable"]]),
        "refused_outside": _share([not o.answered for o in kinds["outside"]]),
        "auroc": _round(auroc(conf, [o.kind == "answerable" for o in outcomes])),
        "auroc_right": _round(auroc(conf, [o.right for o in outcomes])),
        "ece": calibration(conf, [o.right for o in outcomes])["ece"],  # type: ignore[dict-item]
    }
    curve = risk_coverage(conf, [o.right for o in outcomes])
    out["aurc"] = round(_mean([risk for _, risk in curve]), 4) if curve else None
    return out


def _share(values: Sequence[bool]) -> float | None:
    return round(_mean([1.0 if v else 0.0 for v in values]), 4) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# --- abstention: how well the confidence separates answers worth giving -------------------------


def auroc(scores: ArrayLike, positive: ArrayLike) -> float | None:
    """The chance that a random positive scores above a random negative (ties count half)."""
    s, pos = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # the average rank of each distinct value, from 1
    average = np.cumsum(counts) - (counts - 1) / 2
    ranks = average[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibration(confidence: Sequence[float], right: Sequence[bool], bins: int = 10) -> dict[str, object]:
    """Expected calibration error over equal-width bins, and each bin's mean confidence, share
    right and count (the reliability diagram's points)."""
    c, r = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=np.float64)
    which = np.minimum((c * bins).astype(int), bins - 1)
    table, error = [], 0.0
    for b in range(bins):
        held = which == b
        if not held.any():
            continue
        mean_c, share = float(c[held].mean()), float(r[held].mean())
        error += held.sum() / len(c) * abs(mean_c - share)
        table.append(
            {
                "bin": [b / bins, (b + 1) / bins],
                "confidence": round(mean_c, 4),
                "right": round(share, 4),
                "count": int(held.sum()),
            }
        )
    return {"ece": round(error, 4), "bins": table}


def risk_coverage(confidence: Sequence[float], right: Sequence[bool]) -> list[tuple[float, float]]:
    """(coverage, risk) when only the most confident answers are given: risk is the share wrong
    among those given, at each coverage from the most confident answer to all of them."""
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    r = np.asarray(right, dtype=np.float64)[order]
    given = np.arange(1, len(r) + 1)
    wrong = np.cumsum(1 - r)
    return [(float(g / len(r)), float(w / g)) for g, w in zip(given, wrong, strict=True)]


def curves(outcomes: Sequence[Outcome]) -> dict[str, object] | None:
    """The reliability diagram's bins and the risk-coverage curve (100 points), for the report."""
    if not any(o.confidence is not None for o in outcomes):
        return None
    conf, right = [o.confidence or 0.0 for o in outcomes], [o.right for o in outcomes]
    curve = risk_coverage(conf, right)
    step = max(1, len(curve) // 100)
    points = [curve[i] for i in range(step - 1, len(curve), step)]
    return {
        "calibration": calibration(conf, right)["bins"],
        "risk_coverage": [(round(c, 4), round(r, 4)) for c, r in points],
    }
