"""Ordinary questions while anonymous clients check the largest texts allowed: a `groundqa serve`
(default workers) on the bundled article; one client asks questions for --seconds alone, then
again while --heavy clients each send the largest /v1/verify text (100 distinct sentences,
about 20,000 characters) at once, and again after; first, one such check alone. Prints the
question client's throughput, p50 and p99 in each phase, each check's status and time, and the
load.

    .venv/bin/python docs/experiments/verify_load.py ../shared/data/squad/dev-v1.1-even-articles.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from groundqa.eval.server import running
from groundqa.index.verify import MAX_CLAIMS, MAX_VERIFY_CHARS, claims

HERE = Path(__file__).resolve().parents[2]
QUESTIONS = [
    "How long is the Power of Siberia 2 pipeline?",
    "Who invited Putin to China?",
    "How much gas will it carry?",
    "Who directs Russia's China Institute?",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("squad", type=Path, help="a SQuAD file: its sentences make the texts checked")
    parser.add_argument("--heavy", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    text = _largest(json.loads(args.squad.read_text(encoding="utf-8")))
    work = Path(tempfile.mkdtemp(prefix="verify-load-"))
    article = str(HERE / "corpus" / "putin-china-visit.txt")
    with running(work / "index", "--seed", article) as (_, url):
        print(f"text checked: {len(claims(text))} sentences, {len(text):,} characters", flush=True)
        alone: list[tuple[int, float]] = []
        _check_all(url, text, 1, alone)
        print(f"one check alone: {alone[0]} (status, seconds)", flush=True)
        _report("alone", _questions(url, time.perf_counter() + args.seconds))
        checks: list[tuple[int, float]] = []
        heavy = threading.Thread(target=_check_all, args=(url, text, args.heavy, checks))
        heavy.start()
        time.sleep(0.5)
        _report(f"with {args.heavy} checks", _questions(url, time.perf_counter() + args.seconds))
        heavy.join()
        print(f"checks: {sorted(checks)} (status, seconds); load {os.getloadavg()[0]:.2f}", flush=True)
        _report("after", _questions(url, time.perf_counter() + args.seconds / 2))


def _largest(squad: dict) -> str:
    """Distinct sentences (a repeat costs nothing) up to the limits of one /v1/verify text."""
    said: list[str] = []
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            for sentence in claims(paragraph["context"]):
                if sentence not in said and len(" ".join([*said, sentence])) <= MAX_VERIFY_CHARS:
                    said.append(sentence)
                if len(said) == MAX_CLAIMS:
                    return " ".join(said)
    return " ".join(said)


def _questions(url: str, until: float) -> list[float]:
    took = []
    with httpx.Client(base_url=url, timeout=120) as client:
        while time.perf_counter() < until:
            began = time.perf_counter()
            client.get("/v1/query", params={"q": QUESTIONS[len(took) % len(QUESTIONS)]}).raise_for_status()
            took.append((time.perf_counter() - began) * 1000)
    return took


def _check_all(url: str, text: str, n: int, checks: list[tuple[int, float]]) -> None:
    def check(_: int) -> None:
        began = time.perf_counter()
        reply = httpx.post(f"{url}/v1/verify", json={"text": text}, timeout=600)
        checks.append((reply.status_code, round(time.perf_counter() - began, 1)))

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(check, range(n)))


def _report(phase: str, took: list[float]) -> None:
    ordered = sorted(took)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    seconds = sum(took) / 1000
    print(
        f"{phase}: {len(took)} questions, {len(took) / seconds:.1f}/s, p50 {statistics.median(took):.0f} ms, "
        f"p99 {p99:.0f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
