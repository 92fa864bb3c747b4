"""Soak: query clients and a writer against a live `groundqa serve` for a bounded time.

    python -m groundqa.eval.soak --seconds 600 --clients 16 --out reports/reliability/soak.json

The writer adds, replaces and deletes short documents, each holding a code word of its own
version ("zq12x3": document 12, version 3), over HTTP, one request at a time. The query clients ask
for random code words meanwhile. It counts 5xx answers, and every passage returned for a version
that was replaced or deleted before the query was sent. Afterwards every live document must be
listed with its sha256 and found in every mode. The suite runs a short one (tests/test_reliability.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from groundqa.eval.server import serve, wait_ready
from groundqa.index.ranking import MODES

KEY = "soak-key"
CODE = re.compile(r"zq(\d+)x(\d+)")
TOPICS = ["harbour cranes", "glacier melt", "violin makers", "bee keeping", "tram lines", "salt mines"]


def text_of(doc: int, version: int) -> str:
    topic = TOPICS[(doc + version) % len(TOPICS)]
    return (
        f"Report {doc} on {topic}, edition {version}.\n\n"
        f"The {topic} story mentions the code word zq{doc}x{version}. "
        f"Officials counted {doc * 7 + version} visitors in district {doc}."
    )


@dataclass
class Ledger:
    """What the writer has had acknowledged, and when versions died; shared with the readers."""

    live: dict[int, int] = field(default_factory=dict)  # document -> its live version
    died: dict[tuple[int, int], float] = field(default_factory=dict)  # (document, version) -> when
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    stale: list[str] = field(default_factory=list)
    writes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1


def soak(seconds: float, clients: int, folder: Path, seed: int = 1) -> dict[str, Any]:
    """Run the soak against a fresh server on `folder`; returns its figures."""
    server, url = serve(folder, env={"GROUNDQA_API_KEY": KEY})
    try:
        wait_ready(url, server)
        ledger, tally = Ledger(), Tally()
        load_before = os.getloadavg()[0]
        began = time.monotonic()
        stop = threading.Event()
        readers = [
            threading.Thread(target=_read, args=(url, ledger, tally, stop, seed + i)) for i in range(clients)
        ]
        for t in readers:
            t.start()
        try:
            _write(url, ledger, tally, began + seconds, random.Random(seed))
        finally:
            stop.set()
            for t in readers:
                t.join()
        elapsed = time.monotonic() - began
        missing = _check_after(url, ledger, tally)
        server.terminate()
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500)
    return {
        "seconds": round(elapsed, 1),
        "clients": clients,
        "requests": sum(tally.statuses.values()),
        "statuses": {str(s): n for s, n in sorted(tally.statuses.items())},
        "writes": dict(tally.writes),
        "live_documents": len(ledger.live),
        "server_errors": server_errors,
        "stale_answers": len(tally.stale),
        "stale_examples": tally.stale[:5],
        "missing_after": missing,
        "server_exit": server.returncode,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        # uvicorn stops cleanly on SIGTERM, then ends by the same signal: -15 is a clean stop.
        "passed": server_errors == 0 and not tally.stale and not missing and server.returncode in (0, -15),
    }


def _write(url: str, ledger: Ledger, tally: Tally, until: float, rng: random.Random) -> None:
    """Add, replace and delete until the time is up; a bulk add now and then."""
    headers = {"Authorization": f"Bearer {KEY}"}
    next_doc = 0
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        while time.monotonic() < until:
            op = rng.choice(["add", "add", "bulk", "replace", "replace", "delete"])
            if op in ("replace", "delete") and not ledger.live:
                op = "add"
            if op == "add":
                reply = client.post(
                    "/v1/documents", json={"text": text_of(next_doc, 0), "doc_id": f"d{next_doc}"}
                )
                born = [(next_doc, 0)]
                next_doc += 1
            elif op == "bulk":
                born = [(next_doc + i, 0) for i in range(rng.randint(2, 6))]
                docs = [{"text": text_of(d, v), "doc_id": f"d{d}"} for d, v in born]
                reply = client.post("/v1/documents/batch", json={"documents": docs})
                next_doc += len(born)
            else:
                doc = rng.choice(sorted(ledger.live))
                old = ledger.live[doc]
                if op == "replace":
                    reply = client.put(f"/v1/documents/d{doc}", json={"text": text_of(doc, old + 1)})
                    born = [(doc, old + 1)]
                else:
                    reply = client.delete(f"/v1/documents/d{doc}")
                    born = []
            tally.count(reply.status_code)
            if reply.status_code >= 300:
                continue  # not acknowledged: nothing changed (a 5xx is counted above)
            tally.writes[op] += 1
            with ledger.lock:
                now = time.monotonic()
                if op in ("replace", "delete"):
                    ledger.died[(doc, ledger.live.pop(doc))] = now
                for d, v in born:
                    ledger.live[d] = v


def _read(url: str, ledger: Ledger, tally: Tally, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=600) as client:
        while not stop.is_set():
            with ledger.lock:
                known = list(ledger.live.items()) + list(ledger.died)
            doc, version = rng.choice(known) if known else (0, 0)
            sent = time.monotonic()
            reply = client.post(
                "/v1/query",
                json={
                    "question": f"Which report has code word zq{doc}x{version}?",
                    "mode": rng.choice(MODES),
                },
            )
            tally.count(reply.status_code)
            if reply.status_code != 200:
                continue
            for passage in reply.json()["passages"]:
                for d, v in CODE.findall(passage["text"]):
                    died = ledger.died.get((int(d), int(v)))
                    if died is not None and died < sent:
                        with tally.lock:
                            tally.stale.append(f"zq{d}x{v} returned {sent - died:.2f} s after it was gone")


def _check_after(url: str, ledger: Ledger, tally: Tally) -> list[str]:
    """Every live document listed with its sha256 and found first, in every mode, by its code word."""
    missing = []
    with httpx.Client(base_url=url, timeout=600) as client:
        listed = {d["doc_id"]: d["sha256"] for d in client.get("/v1/documents").json()["documents"]}
        want = {
            f"d{doc}": hashlib.sha256(text_of(doc, v).encode()).hexdigest() for doc, v in ledger.live.items()
        }
        if listed != want:
            extra, lost = set(listed) - set(want), set(want) - set(listed)
            wrong = {d for d in set(listed) & set(want) if listed[d] != want[d]}
            missing.append(
                f"listing differs: extra {sorted(extra)}, lost {sorted(lost)}, changed {sorted(wrong)}"
            )
        for doc, version in sorted(ledger.live.items()):
            for mode in MODES:
                reply = client.post(
                    "/v1/query",
                    json={
                        "question": f"code word zq{doc}x{version}",
                        "mode": mode,
                        "k": 1,
                        "doc_ids": [f"d{doc}"],
                    },
                )
                tally.count(reply.status_code)
                top = reply.json()["passages"] if reply.status_code == 200 else []
                if not top or f"zq{doc}x{version}" not in top[0]["text"]:
                    missing.append(f"d{doc} not found in {mode} mode ({reply.status_code})")
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        figures = soak(args.seconds, args.clients, Path(work) / "index", args.seed)
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
