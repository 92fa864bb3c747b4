"""An asynchronous upload of a large file, timed as a client sees it: a fresh `groundqa serve`
on an empty index, POST /v1/documents/upload with `Prefer: respond-async`, then GET /v1/jobs/{id}
every 0.5 s until the job ends. Prints the time to the 202, each change of stage or progress, the
longest wait between two changes, and the whole time.

    .venv/bin/python docs/experiments/async_upload.py ../shared/corpus/pdf/freeculture.pdf
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from groundqa.eval.server import running

KEY = "experiment-key"


def main(path: Path) -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        env = {"GROUNDQA_API_KEY": KEY}
        with running(Path(folder) / "index", "--workers", "1", env=env) as (process, url):
            auth = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(base_url=url, headers=auth, timeout=120) as http:
                began = time.perf_counter()
                reply = http.post(
                    "/v1/documents/upload",
                    files={"file": (path.name, path.read_bytes())},
                    headers={"Prefer": "respond-async"},
                )
                answered = time.perf_counter() - began
                print(f"{reply.status_code} in {answered:.3f} s, Location: {reply.headers['location']}")
                seen, last, gaps = None, began, []
                while True:
                    job = http.get(reply.headers["location"]).json()
                    now = time.perf_counter()
                    state = (job["state"], job["stage"], job["progress"]["done"], job["progress"]["total"])
                    if state != seen:
                        gaps.append(now - last)
                        last, seen = now, state
                        print(
                            f"{now - began:7.1f} s  {job['state']:8} {job['stage']:9} {state[2]}/{state[3]}"
                        )
                    if job["state"] in ("done", "failed"):
                        break
                    time.sleep(0.5)
                print(f"longest wait between changes: {max(gaps[1:] or [0]):.1f} s; all: {now - began:.1f} s")
                print(
                    f"result: {job['result'] and job['result']['passages']} passages, error: {job['error']}"
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
