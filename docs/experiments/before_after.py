"""The same index served by two checkouts of groundqa (before and after a change), one worker
each, asked in turns: sequential latency over GET /v1/query and the OpenAI route, and 8-client
throughput over /v1/query, each round alternating which goes first. Prints the figures, their
ratios and the load.

    git worktree add /tmp/before <commit>
    .venv/bin/python docs/experiments/before_after.py /tmp/before INDEX_DIR \
        ../shared/data/squad/dev-v1.1-even-articles.json --rounds 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from groundqa.eval.server import running

HERE = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path, help="a checkout of the earlier commit")
    parser.add_argument("index", type=Path, help="an index both can open (copied for each)")
    parser.add_argument("squad", type=Path, help="a SQuAD file: its questions are asked")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    squad = json.loads(args.squad.read_text(encoding="utf-8"))
    questions = [q["question"] for a in squad["data"] for p in a["paragraphs"] for q in p["qas"]][:400]
    work = Path(tempfile.mkdtemp(prefix="before-after-"))
    with contextlib.ExitStack() as servers:
        urls = {}
        for name, code in {"before": args.before.resolve(), "after": HERE}.items():
            shutil.copytree(args.index, work / name)
            env = {"PYTHONPATH": str(code), "GROUNDQA_MODEL_CACHE": str(HERE / "var" / "models")}
            urls[name] = servers.enter_context(running(work / name, "--workers", "1", env=env))[1]
        _measure(urls, questions, args.rounds)
    shutil.rmtree(work, ignore_errors=True)


def _sequential(url: str, face: str, questions: list[str]) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for question in questions:
            began = time.perf_counter()
            if face == "query":
                reply = client.get("/v1/query", params={"q": question})
            else:
                chat = {"model": "groundqa", "messages": [{"role": "user", "content": question}]}
                reply = client.post("/v1/chat/completions", json=chat)
            reply.raise_for_status()
            out.append((time.perf_counter() - began) * 1000)
    return out


def _throughput(url: str, questions: list[str], seconds: float = 5, clients: int = 8) -> float:
    stop, done, lock = time.perf_counter() + seconds, [0], threading.Lock()

    def run(first: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            at = first
            while time.perf_counter() < stop:
                client.get("/v1/query", params={"q": questions[at % len(questions)]}).raise_for_status()
                at += clients
                with lock:
                    done[0] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    return done[0] / seconds


def _measure(urls: dict[str, str], questions: list[str], rounds: int) -> None:
    latency: dict[str, dict[str, list[float]]] = {name: {"query": [], "openai": []} for name in urls}
    rate: dict[str, list[float]] = {name: [] for name in urls}
    for url in urls.values():  # warm
        _sequential(url, "query", questions[:20])
        _sequential(url, "openai", questions[:5])
    for r in range(rounds):
        asked = questions[r * 60 : r * 60 + 60]
        for name in list(urls) if r % 2 == 0 else list(urls)[::-1]:
            latency[name]["query"] += _sequential(urls[name], "query", asked[:40])
            latency[name]["openai"] += _sequential(urls[name], "openai", asked[40:])
            rate[name].append(_throughput(urls[name], questions))
        print(f"round {r}: load {os.getloadavg()[0]:.2f}", flush=True)
    for name in urls:
        q, o = latency[name]["query"], latency[name]["openai"]
        print(
            f"{name}: /v1/query p50 {statistics.median(q):.2f} ms (n={len(q)}); OpenAI route p50 "
            f"{statistics.median(o):.2f} ms (n={len(o)}); "
            f"8 clients {statistics.median(rate[name]):.1f} req/s "
            f"(rounds: {', '.join(f'{x:.1f}' for x in rate[name])})"
        )
    b, a = latency["before"], latency["after"]
    print(
        f"after / before: /v1/query p50 {statistics.median(a['query']) / statistics.median(b['query']):.3f}, "
        f"OpenAI p50 {statistics.median(a['openai']) / statistics.median(b['openai']):.3f}, "
        f"throughput {statistics.median(rate['after']) / statistics.median(rate['before']):.3f}"
    )


if __name__ == "__main__":
    main()
