"""groundqa eval compare A B: two evaluation reports side by side, their differences with a paired
bootstrap interval where both hold each question's outcome, and the questions that changed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from groundqa.eval import html
from groundqa.eval.data import DataError
from groundqa.eval.metrics import MRR_CUTOFF
from groundqa.eval.report import tables

# Resamples of the paired bootstrap, and its fixed seed: the same reports give the same interval.
RESAMPLES = 2000
SEED = 0
# Questions shown in each list of changes.
SHOWN = 20


@dataclass(frozen=True)
class Row:
    table: str
    mode: str
    metric: str
    a: Any
    b: Any
    interval: tuple[float, float] | None  # 95% of B - A, paired over the shared questions

    @property
    def difference(self) -> float | None:
        if isinstance(self.a, int | float) and isinstance(self.b, int | float):
            return round(self.b - self.a, 4)
        return None


@dataclass(frozen=True)
class Flips:
    mode: str
    lost: list[dict[str, Any]]  # hit in A, miss in B
    gained: list[dict[str, Any]]


def load(path: Path) -> dict[str, Any]:
    """A report folder (its report.json) or a report.json."""
    file = path / "report.json" if path.is_dir() else path
    try:
        found = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise DataError(f"{file} is not a report (invalid JSON: {exc})") from exc
    if not isinstance(found, dict) or not ("modes" in found or "rows" in found):
        raise DataError(f"{file} is not a groundqa eval report (no modes or rows)")
    return found


def rows(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """Every figure of the tables both reports hold."""
    found = []
    b_tables = dict(tables(b))
    paired = _paired(a, b)  # each mode's questions, paired once for every figure's interval
    for name, a_rows in tables(a):
        for mode, a_metrics in a_rows.items():
            b_metrics = b_tables.get(name, {}).get(mode)
            if b_metrics is None:
                continue
            for metric, value in a_metrics.items():
                if metric in b_metrics:
                    interval = (
                        _interval(paired.get(mode, []), metric)
                        if name in ("By mode", "All conversations")
                        else None
                    )
                    found.append(Row(name, mode, metric, value, b_metrics[metric], interval))
    return found


def flips(a: dict[str, Any], b: dict[str, Any], metric: str) -> list[Flips]:
    """Per mode both report, the questions that went from hit to miss under metric, and back."""
    found = []
    for mode, pairs in _paired(a, b).items():
        lost = [x for x, y in pairs if _hit(x, metric) and not _hit(y, metric)]
        gained = [y for x, y in pairs if _hit(y, metric) and not _hit(x, metric)]
        found.append(Flips(mode, lost, gained))
    return found


def text(a_name: str, b_name: str, found: list[Row], changed: list[Flips], metric: str) -> str:
    lines = [f"A: {a_name}", f"B: {b_name}", ""]
    head = f"{'table':<18} {'mode':<24} {'metric':<28} {'A':>9} {'B':>9} {'B-A':>8}  95% interval of B-A"
    lines += [head, "-" * len(head)]
    for r in found:
        lines.append(
            f"{r.table[:18]:<18} {r.mode[:24]:<24} {r.metric[:28]:<28} {_fmt(r.a):>9} {_fmt(r.b):>9} "
            f"{_signed(r.difference):>8}  {_span(r.interval)}"
        )
    for f in changed:
        lines += ["", f"{f.mode}, {metric}: {len(f.lost)} from hit to miss, {len(f.gained)} from miss to hit"]
        for label, items in (("hit -> miss", f.lost), ("miss -> hit", f.gained)):
            lines += [f"  {label}: {q['id']}: {q.get('question', '')}" for q in items[:SHOWN]]
            if len(items) > SHOWN:
                lines.append(f"  {label}: and {len(items) - SHOWN} more")
    if not changed:
        lines += ["", "The reports share no question outcomes (made before 0.11.0, or different sets)."]
    return "\n".join(lines) + "\n"


def page(a_name: str, b_name: str, found: list[Row], changed: list[Flips], metric: str) -> str:
    cells = "".join(
        f"<tr><td>{escape(r.table)}</td><td>{escape(r.mode)}</td><td>{escape(r.metric)}</td>"
        f"<td>{_fmt(r.a)}</td><td>{_fmt(r.b)}</td><td>{_signed(r.difference)}</td><td>{_span(r.interval)}</td></tr>"
        for r in found
    )
    parts = [
        f"<h1>groundqa: two evaluations compared</h1><p>A: <code>{escape(a_name)}</code><br>"
        f"B: <code>{escape(b_name)}</code></p>",
        "<div class='scroll'><table><tr><th>table</th><th>mode</th><th>metric</th><th>A</th><th>B</th>"
        f"<th>B-A</th><th>95% interval</th></tr>{cells}</table></div>",
    ]
    for f in changed:
        parts.append(f"<h2>{escape(f.mode)}, {escape(metric)}</h2>")
        for label, items in (("From hit to miss", f.lost), ("From miss to hit", f.gained)):
            listed = "".join(f"<li>{escape(q['id'])}: {escape(q.get('question', ''))}</li>" for q in items)
            parts.append(f"<p>{label}: {len(items)}</p><ul>{listed}</ul>")
    return html.document("groundqa: two evaluations compared", parts)


def _paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Per mode both hold, the outcomes of the answerable questions both asked, in A's order."""
    found = {}
    for mode, a_items in (a.get("per_question") or {}).items():
        b_items = {x["id"]: x for x in (b.get("per_question") or {}).get(mode, [])}
        pairs = [(x, b_items[x["id"]]) for x in a_items if x["id"] in b_items and "kind" not in x]
        if pairs:
            found[mode] = pairs
    return found


def _hit(outcome: dict[str, Any], metric: str) -> bool:
    if metric == "answer_hit":
        return bool(outcome["answer_hit"])
    rank = outcome["rank"]
    return rank is not None and rank <= int(metric.removeprefix("hit@"))


def _value(outcome: dict[str, Any], metric: str) -> float | None:
    """A question's share of a metric that averages over questions; None for the others."""
    if metric == "answer_hit" or metric.startswith("hit@"):
        return 1.0 if _hit(outcome, metric) else 0.0
    if metric == f"mrr@{MRR_CUTOFF}":
        rank = outcome["rank"]
        return 1.0 / rank if rank is not None and rank <= MRR_CUTOFF else 0.0
    return None


def _interval(pairs: list[tuple[dict[str, Any], dict[str, Any]]], metric: str) -> tuple[float, float] | None:
    if len(pairs) < 2 or _value(pairs[0][0], metric) is None:
        return None
    diffs = np.array([(_value(y, metric) or 0.0) - (_value(x, metric) or 0.0) for x, y in pairs])
    rng = np.random.default_rng(SEED)
    means = np.array([diffs[rng.integers(0, len(diffs), len(diffs))].mean() for _ in range(RESAMPLES)])
    low, high = np.percentile(means, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _span(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"
