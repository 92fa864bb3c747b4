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


def write(out: Path, report: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.md", out / "hit_at_k.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    return paths


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# groundqa evaluation: {report['dataset']}", ""]
    if report.get("command"):
        lines += ["Made by:", "", f"    {report['command']}", ""]
    lines += [
        f"{report['questions']} questions; passages of {report['passage_tokens_mean']} cl100k tokens"
        " on average.",
        "",
        "| mode | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for mode, m in report["modes"].items():
        cells = ["n/a" if m.get(c) is None else f"{m[c]}" for c in COLUMNS]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "hit@k: a passage in the top k from the gold document contains a whole gold span. "
        "answer_hit: the answer sentence contains one. Peers give no answer sentence (n/a).",
        "",
    ]
    if report.get("settings"):
        lines += ["Settings:", ""]
        lines += [f"- {key}: {value}" for key, value in report["settings"].items()]
        lines.append("")
    return "\n".join(lines)


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
