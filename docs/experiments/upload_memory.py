"""Memory of a server under many large uploads at once: a fresh `groundqa serve` (one worker),
ROUNDS rounds of CLIENTS concurrent uploads of a text file just under GROUNDQA_MAX_FILE_BYTES
(50 MB; its text is over GROUNDQA_MAX_DOC_CHARS, so each is refused with 422 once read, as the
outside probe sent them). Prints the server's resident memory (its children included) before,
at its peak during each round, and after each round.

    .venv/bin/python docs/experiments/upload_memory.py 50 3
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from groundqa.eval.server import rss_mb, running

KEY = "experiment-key"


def _watch(pid: int, peak: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        stop.wait(0.1)


def main(clients: int, rounds: int) -> None:
    data = b"Words of a long file, one line after another.\n" * (49_900_000 // 46)
    print(f"load average before: {os.getloadavg()[0]:.2f}; file: {len(data):,} bytes")
    with tempfile.TemporaryDirectory() as folder:
        env = {"GROUNDQA_API_KEY": KEY}
        with running(Path(folder) / "index", "--workers", "1", env=env) as (process, url):
            print(f"before: {rss_mb(process.pid)} MB")
            for number in range(1, rounds + 1):
                peak, stop = [0], threading.Event()

                watcher = threading.Thread(target=_watch, args=(process.pid, peak, stop))
                watcher.start()

                def upload(_: int) -> int:
                    with httpx.Client(timeout=600) as http:
                        reply = http.post(
                            f"{url}/v1/documents/upload",
                            files={"file": ("big.txt", data)},
                            headers={"Authorization": f"Bearer {KEY}"},
                        )
                        return reply.status_code

                began = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    statuses = Counter(pool.map(upload, range(clients)))
                stop.set()
                watcher.join()
                took = time.perf_counter() - began
                print(
                    f"round {number}: {dict(statuses)} in {took:.0f} s; peak {peak[0]} MB; "
                    f"after {rss_mb(process.pid)} MB"
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
