"""report.json, report.md and a plot of hit@k per mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from groundqa.eval.metrics import KS

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


def write(out: Path, report: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.md", out / "hit_at_k.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    if report.get("curves"):
        paths += [out / "reliability.png", out / "risk_coverage.png"]
        plot_curves(report, paths[3], paths[4])
    return paths


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# groundqa evaluation: {report['dataset']}", ""]
    if report.get("command"):
        lines += ["Made by:", "", f"    {report['command']}", ""]
    lines += [
        f"{report['questions']} questions; passages of {report['passage_tokens_mean']} cl100k tokens"
        " on average.",
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
    if report.get("settings"):
        lines += ["Settings:", ""]
        lines += [f"- {key}: {value}" for key, value in report["settings"].items()]
        lines.append("")
    return "\n".join(lines)


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

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for mode, m in report["modes"].items():
        ax.plot(KS, [m[f"hit@{k}"] for k in KS], marker="o", label=mode)
    ax.set_xscale("log")
    ax.set_xticks(KS, [str(k) for k in KS])
    ax.set_xlabel("k")
    ax.set_ylabel("hit@k")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{report['dataset']}: {report['questions']} questions")
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
