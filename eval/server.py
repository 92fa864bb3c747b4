"""`groundqa serve` as a process of its own, for benchmarks and tests: a free loopback port, the
wait until it is ready, its memory (uvicorn workers included)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def groundqa_command(*args: str) -> list[str]:
    """The command line as a user runs it, in a process of its own: the benchmarks measure the
    service from outside, through its public command, never by importing it."""
    return [sys.executable, "-m", "groundqa", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    index_dir: Path, *flags: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start `groundqa serve` on index_dir (warnings only in its log, kept for an error message)."""
    port = free_port()
    environment = {
        **os.environ,
        "GROUNDQA_LOG": "warning",
        **(env or {}),
        "GROUNDQA_INDEX_DIR": str(index_dir),
    }
    process = subprocess.Popen(
        groundqa_command("serve", "--port", str(port), *flags),
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, f"http://127.0.0.1:{port}"


@contextmanager
def running(
    index_dir: Path, *flags: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """serve() until ready, then stopped (SIGTERM) on the way out, unless it is gone already."""
    process, url = serve(index_dir, *flags, env=env)
    try:
        wait_ready(url, process)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)


def wait_ready(
    url: str, process: subprocess.Popen[str] | None = None, seconds: float = 600, path: str = "/readyz"
) -> None:
    """Until the server answers path with 200 (generous: a busy machine loads the model slowly);
    RuntimeError if its process exits or the time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(url + path).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def descendants(pid: int) -> list[int]:
    """Every process below pid (a server's uvicorn workers, a benchmark's servers)."""
    try:
        direct = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return direct + [below for child in direct for below in descendants(child)]


def rss_mb(pid: int) -> int:
    """Resident memory of a process and of every process below it."""
    kb = 0
    for p in [pid, *descendants(pid)]:
        status = Path(f"/proc/{p}/status").read_text()
        kb += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    return round(kb / 1024)
