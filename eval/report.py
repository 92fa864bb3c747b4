"""report.json, report.md and a plot of hit@k per mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from groundqa.eval import html
from groundqa.eval.data import Question
from groundqa.eval.metrics import KS, Located, Outcome

COLUMNS = [
    "hit@1",
    "hit@5",
    "hit@10",
    "hit@20",
    "mrr@10",
    "answer_hit",
    "answer_chars_mean",
    "latency_ms_p50",
    "latency_ms_p95",
]


# Per format of the questions' documents.
BY_FORMAT = ["hit@1", "hit@5", "answer_hit", "answer_or_top", "page_right"]


# Shown when the system gives a confidence (see metrics.abstention).
ABSTENTION = [
    "answered",
    "answer_hit",
    "answer_hit_min_confidence_0",
    "refused_unanswerable",
    "refused_outside",
    "auroc",
    "auroc_right",
    "ece",
    "aurc",
]


# The missed questions a report shows in each mode, with their passages.
MISSED_SHOWN = 50
# Characters either side of a gold span shown as its context.
CONTEXT = 160


def write(out: Path, report: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.md", out / "hit_at_k.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    if report.get("curves"):
        paths += [out / "reliability.png", out / "risk_coverage.png"]
        plot_curves(report, paths[3], paths[4])
    paths.append(write_html(out, report, paths[2:]))
    return paths


def write_html(out: Path, report: dict[str, Any], plots: list[Path]) -> Path:
    """report.html beside the other files: one page, the plots inside it."""
    path = out / "report.html"
    path.write_text(html.page(report, tables(report), plots), encoding="utf-8")
    return path


def tables(report: dict[str, Any]) -> list[html.Table]:
    """A report's metric tables, each a row per mode (or per way a conversation is asked)."""
    if "rows" in report:  # eval conversations
        found = [("All conversations", report["rows"]), ("Short follow-ups", report.get("short_rows") or {})]
        return [(name, rows) for name, rows in found if rows]
    modes = report["modes"]
    found = [("By mode", {m: {c: v.get(c) for c in COLUMNS} for m, v in modes.items()})]
    confident = {m: {c: v.get(c) for c in ABSTENTION} for m, v in modes.items() if v.get("auroc") is not None}
    if confident:
        found.append(("Abstention", confident))
    by_format = report.get("by_format") or {}
    for kind, by_mode in by_format.items() if len(by_format) > 1 else ():
        found.append(
            (
                f"Questions on {kind} documents",
                {m: {c: v.get(c) for c in BY_FORMAT} for m, v in by_mode.items()},
            )
        )
    return found


def per_question(
    questions: list[Question], results: dict[str, list[Outcome]], texts: dict[str, str]
) -> dict[str, Any]:
    """Each question's outcome in each mode (what `eval compare` pairs), and the answerable
    questions whose answer sentence missed, with their gold spans in context and the passages
    given (what report.html shows)."""
    outcomes = {
        mode: [_outcome(q, o) for q, o in zip(questions, found, strict=True)]
        for mode, found in results.items()
    }
    missed = {
        mode: [
            _missed(q, o, texts)
            for q, o in zip(questions, found, strict=True)
            if o.kind == "answerable" and not o.answer_hit
        ][:MISSED_SHOWN]
        for mode, found in results.items()
    }
    return {"per_question": outcomes, "missed": missed}


def _outcome(q: Question, o: Outcome) -> dict[str, Any]:
    found = {"id": q.id, "question": q.question, "rank": o.rank, "answer_hit": o.answer_hit}
    return found if o.kind == "answerable" else found | {"kind": o.kind}


def _missed(q: Question, o: Outcome, texts: dict[str, str]) -> dict[str, Any]:
    golds = [(d, s, e) for d, spans in q.golds() for s, e in spans]

    def shown(item: Located) -> dict[str, Any]:
        return {
            "doc_id": item.doc_id,
            "start": item.start,
            "end": item.end,
            "text": texts.get(item.doc_id, "")[item.start : item.end],
        }

    context = []
    for d, s, e in golds[:3]:
        begin, end = max(0, s - CONTEXT), min(len(texts[d]), e + CONTEXT)
        context.append({"doc_id": d, "start": begin, "end": end, "text": texts[d][begin:end]})
    return {
        "id": q.id,
        "question": q.question,
        "answer": q.answer,
        "gold": [[d, s, e] for d, s, e in golds],
        "rank": o.rank,
        "confidence": o.confidence,
        "context": context,
        "answer_given": None if o.answer is None else shown(o.answer),
        "top": [shown(p) for p in o.top],
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# groundqa evaluation: {report['dataset']}", ""]
    if report.get("command"):
        lines += ["Made by:", "", f"    {report['command']}", ""]
    lines += [
        f"{report['questions']} questions"
        + (
            f"; passages of {report['passage_tokens_mean']} cl100k tokens on average."
            if report.get("passage_tokens_mean") is not None
            else "."
        ),
        "",
        *_table(COLUMNS, report["modes"]),
    ]
    lines += [
        "",
        "hit@k: a passage in the top k from the gold document contains a whole gold span. "
        "answer_hit: the answer sentence contains one. Peers give no answer sentence (n/a).",
        "",
    ]
    if len(report.get("by_format", {})) > 1:
        lines += ["By the format of the question's document:", ""]
        for kind, modes in report["by_format"].items():
            lines += [f"**{kind}**", "", *_table(BY_FORMAT, modes), ""]
        lines += [
            "answer_or_top: the answer sentence (at the confidence floor) or the top passage holds a "
            "gold span. page_right: what holds it names the gold page (questions with a page).",
            "",
        ]
    with_confidence = {mode: m for mode, m in report["modes"].items() if m.get("auroc") is not None}
    if with_confidence:
        floor = report.get("settings", {}).get("min_confidence")
        lines += [
            f"Abstention (answers under confidence {floor} left out; hit@k and answer_hit are over "
            "the answerable questions, an abstention counts as a miss):",
            "",
            *_table(ABSTENTION, with_confidence),
        ]
        lines += [
            "",
            "answered: share of the answerable questions answered. answer_hit_min_confidence_0: answer_hit "
            "when every question is answered (min_confidence 0). refused_unanswerable and refused_outside: "
            "shares refused of the unanswerable questions (SQuAD 2.0) and of the questions whose article "
            "was left out of the index. auroc: the confidence of answerable against other questions; "
            "auroc_right: of right answer sentences against the rest; ece: expected calibration error "
            "(10 bins, reliability.png); aurc: area under the risk-coverage curve (risk_coverage.png).",
            "",
        ]
    lines += _answers(report.get("answers"))
    if report.get("settings"):
        lines += ["Settings:", ""]
        lines += [f"- {key}: {value}" for key, value in report["settings"].items()]
        lines.append("")
    return "\n".join(lines)


def _answers(answers: dict[str, Any] | None) -> list[str]:
    """How the answers given as text were found in the documents (eval.answers)."""
    if not answers:
        return []
    lines = [
        f"Answers given as text: {answers['exact']} found exactly, {answers['normalised']} normalised, "
        f"{len(answers['unfound'])} found in no document (left out of the scores), "
        f"{len(answers['ambiguous'])} in several documents (each one's spans count).",
        "",
    ]
    lines += [
        f"- not found: {u['id']}: {u['question']} (answer: {u['answer']!r})" for u in answers["unfound"]
    ]
    lines += [
        f"- in several documents: {qid}: {', '.join(docs)}" for qid, docs in answers["ambiguous"].items()
    ]
    return [*lines, ""] if len(lines) > 2 else lines


def _table(columns: list[str], modes: dict[str, Any]) -> list[str]:
    """A markdown table: a row per mode, n/a where a figure is missing."""
    lines = ["| mode | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for mode, m in modes.items():
        cells = ["n/a" if m.get(c) is None else f"{m[c]}" for c in columns]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.get("modes") or report["rows"]
    ks = [k for k in KS if f"hit@{k}" in next(iter(rows.values()))]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for mode, m in rows.items():
        ax.plot(ks, [m[f"hit@{k}"] for k in ks], marker="o", label=mode)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k")
    ax.set_ylabel("hit@k")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    count = (
        f"{report['questions']} questions"
        if "questions" in report
        else f"{report['conversations']} conversations"
    )
    ax.set_title(f"{report.get('dataset') or report.get('set')}: {count}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(report: dict[str, Any], reliability: Path, coverage: Path) -> None:
    """The reliability diagram and the risk-coverage curve of each mode with a confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
    for mode, c in report["curves"].items():
        bins = c["calibration"]
        ax.plot([b["confidence"] for b in bins], [b["right"] for b in bins], marker="o", label=mode)
    ax.set_xlabel("confidence")
    ax.set_ylabel("share of answer sentences that are right")
    ax.set_title("reliability")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(reliability)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for mode, c in report["curves"].items():
        points = c["risk_coverage"]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=mode)
    ax.set_xlabel("coverage (share of questions answered, most confident first)")
    ax.set_ylabel("risk (share of given answers that are wrong)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(coverage)
    plt.close(fig)
