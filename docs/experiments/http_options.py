"""Which uvicorn options make HTTP cheaper for groundqa: the HTTP parser (h11 or httptools) and the
event loop (asyncio or uvloop), one worker each over one index, measured interleaved at 16
clients; and what a fast JSON encoder (orjson) would save on a typical answer.

    .venv/bin/python docs/experiments/http_options.py --index /tmp/bench-work/index-2k \
        --out reports/http-options
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from groundqa.eval.bench import _hammer, _percentiles
from groundqa.eval.data import load_squad
from groundqa.eval.server import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]

CONFIGS = {  # name: (HTTP protocol, event loop)
    "h11 + asyncio (today)": ("h11", "asyncio"),
    "httptools + asyncio": ("httptools", "asyncio"),
    "h11 + uvloop": ("h11", "uvloop"),
    "httptools + uvloop": ("httptools", "uvloop"),
}
SERVE = """
import sys, uvicorn
from groundqa.service.guards import GuardedH11
http, loop, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
uvicorn.run("groundqa.service.app:app_from_environment", factory=True, port=port, log_level="warning",
            http=GuardedH11 if http == "h11" else http, loop=loop)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="an index folder to serve")
    parser.add_argument(
        "--squad", type=Path, default=ROOT.parent / "shared/data/squad/dev-v1.1-even-articles.json"
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8, help="per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("reports/http-options"))
    args = parser.parse_args()
    questions = [q.question for q in load_squad(args.squad).questions[:300]]
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    env = {**os.environ, "GROUNDQA_INDEX_DIR": str(args.index), "GROUNDQA_LOG": "warning"}
    try:
        for name, (http, loop) in CONFIGS.items():
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-c", SERVE, http, loop, str(port)], cwd=ROOT, env=env
            )
            servers[name] = (process, f"http://127.0.0.1:{port}")
        for _, url in servers.values():
            wait_ready(url)
        latencies: dict[str, list[float]] = {name: [] for name in CONFIGS}
        spent = dict.fromkeys(CONFIGS, 0.0)
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for name, (_, url) in servers.items():
                began = time.perf_counter()
                latencies[name] += _hammer(partial(_url, url), args.clients, args.seconds, questions)
                spent[name] += time.perf_counter() - began
                loads.append(os.getloadavg()[0])
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()
    report: dict[str, Any] = {
        "command": "python docs/experiments/http_options.py " + " ".join(sys.argv[1:]),
        "clients": args.clients,
        "seconds_each": args.seconds * args.rounds,
        "load_average_1min": [round(v, 2) for v in loads],
        "configs": {
            name: {"requests_per_s": round(len(v) / spent[name], 1), **_percentiles(v)}
            for name, v in latencies.items()
        },
        "json": json_costs(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _url(base: str, question: str) -> str:
    return f"{base}/v1/query?q={quote(question)}&k=5"


def json_costs() -> dict[str, float]:
    """Microseconds to render a typical answer (5 passages of 600 characters and the answer
    sentence) as FastAPI's JSONResponse does (the standard library's json.dumps), and with orjson."""
    import orjson

    passage = {"rank": 1, "doc_id": "d", "title": "A title", "passage_id": "d:0-600", "start": 0, "end": 600}
    answer = {"doc_id": "d", "title": "A title", "start": 10, "end": 150, "text": "y" * 140, "score": 2.1}
    body = {
        "question": "How long is the pipeline?",
        "mode": "hybrid",
        "k": 5,
        "answer": answer,
        "passages": [{**passage, "rank": i + 1, "text": "x" * 600, "score": 1.5} for i in range(5)],
        "took_ms": 12.3,
    }
    out = {}
    for name, encode in (
        ("stdlib_json_us", lambda: json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()),
        ("orjson_us", lambda: orjson.dumps(body)),
    ):
        began = time.perf_counter()
        for _ in range(5000):
            encode()
        out[name] = round((time.perf_counter() - began) / 5000 * 1e6, 1)
    return out


if __name__ == "__main__":
    main()
