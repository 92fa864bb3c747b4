"""`groundqa bench`'s report: the verdict against the targets, the headline, the markdown and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLIENTS = (1, 4, 16)
# Past this share of the CPUs taken by other processes during a step, the run was not quiet.
BUSY_SHARE = 0.15
# The targets (docs/speed.md), all at equal settings.
TARGETS = {"per_core_16_ratio": 2.0, "one_worker_scaling": 1.3, "one_query_ms": 8.0, "ingest_ratio": 1.5}


def http_step(workers: int, clients: int) -> str:
    return f"http_{workers}w_{clients}c"


def verdict(report: dict[str, Any]) -> None:
    steps = report["steps"]
    busiest = max(s["other_cpu_share"] for s in steps.values())
    if busiest > BUSY_SHARE:
        report["verdict"] = None
        report["verdict_withheld"] = (
            f"other processes took up to {busiest:.0%} of the CPUs during a step (limit {BUSY_SHARE:.0%}): "
            "run it again on a quiet machine"
        )
        return
    rate = {
        (w, c): steps[http_step(w, c)]["groundqa"]["requests_per_s"]
        for w in report["workers"]
        for c in CLIENTS
    }
    checks: dict[str, bool] = {}
    most = max(report["workers"])
    if most > 1:
        target = TARGETS["per_core_16_ratio"]
        checks[f"{most} workers each, 16 clients: >= {target:g}x txtai's requests/s"] = (
            steps[http_step(most, 16)]["throughput_ratio"] >= target
        )
    if 1 in report["workers"]:
        checks[f"one worker: requests/s at 16 clients >= at 4 >= {TARGETS['one_worker_scaling']:g}x at 1"] = (
            rate[1, 16] >= rate[1, 4] >= TARGETS["one_worker_scaling"] * rate[1, 1]
        )
    checks[f"in-process hybrid p50 <= {TARGETS['one_query_ms']:g} ms"] = (
        steps["in_process"]["groundqa-hybrid"]["p50"] <= TARGETS["one_query_ms"]
    )
    checks[f"ingest <= {TARGETS['ingest_ratio']:g}x txtai's time"] = (
        steps["ingest"]["ratio"] <= TARGETS["ingest_ratio"]
    )
    report["verdict"] = checks


def headline(report: dict[str, Any]) -> str:
    """The equal-settings ratio at 16 clients, with one worker per core each."""
    most = max(report["workers"])
    f = report["steps"][http_step(most, 16)]
    return (
        f"At 16 clients, with {most} worker{'s' * (most > 1)} each and the same server settings, groundqa "
        f"answered {f['throughput_ratio']}x txtai's requests per second "
        f"({f['groundqa']['requests_per_s']} against {f['txtai']['requests_per_s']})."
    )


def markdown(report: dict[str, Any]) -> str:
    s = report["steps"]
    lines = [
        "# groundqa against txtai",
        "",
        "Made by:",
        "",
        f"    {report['command']}",
        "",
        f"{report['machine']['cores']} cores; groundqa's encoder: {report['runtime']}; txtai hybrid "
        "(its own sentence-transformers encoder) over the same passages and model.",
        "",
        f"**{headline(report)}**",
        "",
        f"Ingest of {s['ingest']['passages']} passages: groundqa {s['ingest']['groundqa_s']} s, txtai "
        f"{s['ingest']['txtai_s']} s (ratio {s['ingest']['ratio']}).",
        "",
        "In-process latency (ms), the systems taking turns question by question:",
        "",
        "| system | p50 | p95 | p99 |",
        "|---|---:|---:|---:|",
    ]
    for name, f in s["in_process"].items():
        if isinstance(f, dict) and "p50" in f:
            lines.append(f"| {name} | {f['p50']} | {f['p95']} | {f['p99']} |")
    if report.get("profile"):
        prof = report["profile"]
        lines += ["", f"Where a hybrid query's time goes (cProfile, {prof['total']} ms a query):", ""]
        lines += ["| part | ms | share |", "|---|---:|---:|"]
        lines += [
            f"| {part} | {ms} | {ms / prof['total']:.0%} |" for part, ms in prof.items() if part != "total"
        ]
    lines += [
        "",
        "HTTP, GET of a hybrid query with k=5; each system with the same uvicorn workers, HTTP "
        "protocol (h11, Nagle off) and event loop:",
        "",
        "| workers each | clients | system | requests/s | p50 ms | p95 ms | p99 ms | ratio |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for workers in report["workers"]:
        for clients in CLIENTS:
            f = s[http_step(workers, clients)]
            for name in ("groundqa", "txtai"):
                g = f[name]
                ratio = f["throughput_ratio"] if name == "groundqa" else ""
                lines.append(
                    f"| {workers} | {clients} | {name} | {g['requests_per_s']} | {g['p50']} | {g['p95']} "
                    f"| {g['p99']} | {ratio} |"
                )
    lines += [""]
    for workers, f in report["servers"].items():
        lines.append(
            f"{workers} worker(s) each: cold start to the first answer (s) {f['cold_start_s']}; "
            f"server memory, workers included (MB) {f['memory_mb']}."
        )
    lines += [
        "",
        f"Disk (MB): {report['disk_mb']}.",
        "",
        "| step | load average (before, after) | CPU share taken by other processes |",
        "|---|---|---:|",
    ]
    lines += [f"| {name} | {f['load_average']} | {f['other_cpu_share']:.1%} |" for name, f in s.items()]
    lines.append("")
    if report.get("verdict") is None:
        lines.append(f"No verdict: {report.get('verdict_withheld')}.")
    else:
        lines += ["| target | met |", "|---|---|"]
        lines += [f"| {name} | {'yes' if ok else 'no'} |" for name, ok in report["verdict"].items()]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for workers in report["workers"]:
        for name in ("groundqa", "txtai"):
            points = [report["steps"][http_step(workers, c)][name] for c in CLIENTS]
            label = f"{name}, {workers} worker{'s' * (workers > 1)}"
            rates, p50s = [p["requests_per_s"] for p in points], [p["p50"] for p in points]
            ax.plot(rates, p50s, marker="o", label=label)
            for c, x, y in zip(CLIENTS, rates, p50s, strict=True):
                ax.annotate(f"{c}", (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("requests per second")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("HTTP, hybrid queries (labels: concurrent clients)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
