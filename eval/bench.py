"""`groundqa bench`: groundqa and txtai side by side on the same passages, the same model and the
same machine, in one interleaved run.

    groundqa bench --out reports/bench

Steps: ingest (the shared SQuAD half into groundqa, then the passages groundqa made into txtai's
hybrid index), in-process query latency per mode (the systems take turns question by question),
HTTP throughput and latency at 1, 4 and 16 concurrent clients against `groundqa serve` and
txtai's API at equal settings (the same uvicorn, HTTP protocol with Nagle off, event loop and
worker count: one worker each, then one per core each; in turns), cold start to the first
answer, server memory and disk. Each step records the load average and the share of the CPUs
that processes other than the benchmark's own took; when that share passed BUSY_SHARE the
report prints no verdict.
Writes report.json, report.md and latency-throughput.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import numpy as np

from groundqa.eval.bench_report import CLIENTS, http_step, markdown, plot, verdict
from groundqa.eval.data import DataError, load_squad
from groundqa.eval.server import descendants, free_port, groundqa_command, rss_mb
from groundqa.index.config import IndexSettings, embedder_of
from groundqa.index.index import DocumentInput, Index
from groundqa.index.model import bundled_model_dir


def add_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure groundqa against txtai on the same passages (needs the peer extra)",
        description=__doc__.split("\n\n")[0],
        epilog="example: groundqa bench --data ../shared/data/squad/dev-v1.1-even-articles.json",
    )
    bench.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="SQUAD.json",
        help="a SQuAD v1.1 file (the shared even half)",
    )
    bench.add_argument("--out", type=Path, default=Path("reports/bench"))
    bench.add_argument("--questions", type=int, default=300, help="questions for in-process latency")
    bench.add_argument("--seconds", type=float, default=20, help="per HTTP step and system")
    bench.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=sorted({1, len(os.sched_getaffinity(0))}),
        help="worker counts to measure, each system with the same (one, and one per core)",
    )
    bench.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace, settings: IndexSettings) -> int:
    try:
        import txtai  # noqa: F401
    except ImportError as exc:
        raise DataError("groundqa bench needs txtai: pip install 'groundqa[peer]'") from exc
    dataset = load_squad(args.data)
    rng = random.Random(1)
    questions = [
        q.question for q in rng.sample(dataset.questions, min(args.questions, len(dataset.questions)))
    ]
    report: dict[str, Any] = {
        "command": "groundqa bench " + " ".join(sys.argv[2:]),
        "machine": {"cores": os.cpu_count()},
        "runtime": settings.runtime,
        "workers": args.workers,
        "steps": {},
        "servers": {},
    }
    work = Path(tempfile.mkdtemp(prefix="groundqa-bench-"))
    try:
        ours, theirs = work / "groundqa", work / "txtai"
        with step(report, "ingest") as figures:
            figures.update(ingest(dataset, ours, theirs, settings))
        with step(report, "in_process") as figures:
            figures.update(in_process(ours, theirs, questions, settings))
        report["profile"] = profile(ours, questions, settings)
        for workers in args.workers:
            with Servers(ours, theirs, workers) as servers:
                for clients in CLIENTS:
                    with step(report, http_step(workers, clients)) as figures:
                        figures.update(servers.load(clients, args.seconds, questions))
                report["servers"][str(workers)] = {
                    "cold_start_s": servers.cold_start,
                    "memory_mb": servers.rss_mb(),
                }
        report["disk_mb"] = {
            name: round(_size(p) / 2**20, 1) for name, p in (("groundqa", ours), ("txtai", theirs))
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    verdict(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    plot(report, args.out / "latency-throughput.png")
    print(markdown(report))
    return 0


def ingest(dataset: Any, ours: Path, theirs: Path, settings: IndexSettings) -> dict[str, Any]:
    from txtai import Embeddings

    index = Index(ours, embedder_of(settings))
    began = time.perf_counter()
    for at in range(0, len(dataset.articles), 8):
        index.add_many([DocumentInput(a.text, a.title, a.doc_id) for a in dataset.articles[at : at + 8]])
    index.compact()
    our_seconds = time.perf_counter() - began
    rows = [(i, p.text, None) for i, p in enumerate(index.passages())]
    began = time.perf_counter()
    engine = Embeddings({"path": str(bundled_model_dir()), "content": False, "hybrid": True})
    engine.index(rows)
    engine.save(str(theirs))
    their_seconds = time.perf_counter() - began
    return {
        "passages": len(rows),
        "groundqa_s": round(our_seconds, 1),
        "txtai_s": round(their_seconds, 1),
        "ratio": round(our_seconds / their_seconds, 2),
    }


def in_process(ours: Path, theirs: Path, questions: list[str], settings: IndexSettings) -> dict[str, Any]:
    from txtai import Embeddings

    index = Index(ours, embedder_of(settings))
    engine = Embeddings()
    engine.load(str(theirs))
    systems: dict[str, Callable[[str], object]] = {
        "groundqa-hybrid": lambda q: index.search(q, 5, "hybrid"),
        "groundqa-dense": lambda q: index.search(q, 5, "dense"),
        "groundqa-lexical": lambda q: index.search(q, 5, "lexical"),
        "txtai-hybrid": lambda q: engine.search(q, limit=5),
    }
    for ask in systems.values():  # warm up
        ask(questions[0])
    times: dict[str, list[float]] = {name: [] for name in systems}
    for question in questions:  # turns, question by question
        for name, ask in systems.items():
            began = time.perf_counter()
            ask(question)
            times[name].append((time.perf_counter() - began) * 1000)
    return {name: _percentiles(values) for name, values in times.items()}


class Servers:
    """groundqa serve and txtai's API on loopback, each with these many uvicorn workers and the
    same server settings (eval/peer.py serves txtai's API as groundqa serve serves ours)."""

    def __init__(self, ours: Path, theirs: Path, workers: int = 1) -> None:
        self.work = theirs.parent
        config = self.work / "txtai.yml"
        # `embeddings` turns on txtai's search route; the index saved at `path` is loaded.
        config.write_text(
            f"path: {theirs}\nwritable: false\n"
            f"embeddings:\n  path: {bundled_model_dir()}\n  content: false\n  hybrid: true\n"
        )
        self.ports = {name: free_port() for name in ("groundqa", "txtai")}
        env = {
            **os.environ,
            "GROUNDQA_INDEX_DIR": str(ours),
            "GROUNDQA_LOG": "warning",
            "CONFIG": str(config),
        }
        commands = {
            "groundqa": groundqa_command(
                "serve", "--port", str(self.ports["groundqa"]), "--workers", str(workers)
            ),
            "txtai": [
                sys.executable,
                "-m",
                "groundqa.eval.peer",
                "--port",
                str(self.ports["txtai"]),
                "--workers",
                str(workers),
            ],
        }
        self.paths = {"groundqa": "/v1/query?k=5&q=", "txtai": "/search?limit=5&query="}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.cold_start: dict[str, float] = {}
        for name, command in commands.items():  # one after the other: cold starts do not share cores
            began = time.perf_counter()
            self.processes[name] = subprocess.Popen(command, env=env)
            self._first_answer(name)
            self.cold_start[name] = round(time.perf_counter() - began, 1)

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    def url(self, name: str, question: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{self.paths[name]}{quote(question)}"

    def _first_answer(self, name: str) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url(name, "Who visited China?"), timeout=60).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer")

    def load(self, clients: int, seconds: float, questions: list[str]) -> dict[str, Any]:
        """Each system in turn, twice (groundqa, txtai, groundqa, txtai), seconds/2 each time."""
        latencies: dict[str, list[float]] = {"groundqa": [], "txtai": []}
        spent = {"groundqa": 0.0, "txtai": 0.0}
        for _ in range(2):
            for name in latencies:
                began = time.perf_counter()
                latencies[name] += _hammer(partial(self.url, name), clients, seconds / 2, questions)
                spent[name] += time.perf_counter() - began
        out: dict[str, Any] = {
            name: {"requests_per_s": round(len(values) / spent[name], 1), **_percentiles(values)}
            for name, values in latencies.items()
        }
        rates = [out[name]["requests_per_s"] for name in ("groundqa", "txtai")]
        out["throughput_ratio"] = round(rates[0] / rates[1], 2)
        return out

    def rss_mb(self) -> dict[str, int]:
        """Resident memory of each server with its workers."""
        return {name: rss_mb(process.pid) for name, process in self.processes.items()}


def _hammer(url: Callable[[str], str], clients: int, seconds: float, questions: list[str]) -> list[float]:
    """`clients` keep-alive connections asking in a loop for `seconds`, from one thread; the
    latencies of the answers, in ms. The client is plain asyncio over sockets: the load it puts
    on the cores the servers share stays small and the same at any concurrency (16 threads of
    httpx took more of the CPU than 4, and so lowered both systems' figures at 16 clients)."""
    return asyncio.run(_clients(url, clients, seconds, questions))


async def _clients(
    url: Callable[[str], str], clients: int, seconds: float, questions: list[str]
) -> list[float]:
    stop = time.monotonic() + seconds
    found: list[float] = []

    async def client(i: int) -> None:
        rng = random.Random(i)
        where = urlsplit(url(questions[0]))
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while time.monotonic() < stop:
                target = urlsplit(url(rng.choice(questions)))
                began = time.perf_counter()
                request = f"GET {target.path}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\n\r\n"
                writer.write(request.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                if status != b"200":
                    raise RuntimeError(f"{target.netloc} answered {status.decode()}")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                found.append((time.perf_counter() - began) * 1000)
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return found


@contextmanager
def step(report: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    """A step's figures, with the load average and the CPU share other processes took meanwhile."""
    figures: dict[str, Any] = {}
    load = os.getloadavg()[0]
    busy, ours = _cpu_busy(), _cpu_ours()
    began = time.perf_counter()
    yield figures
    elapsed = time.perf_counter() - began
    foreign = (_cpu_busy() - busy) - (_cpu_ours() - ours)
    figures["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    figures["other_cpu_share"] = round(max(0.0, foreign / (elapsed * (os.cpu_count() or 1))), 3)
    report["steps"][name] = figures


def _cpu_busy() -> float:
    """Seconds the CPUs were busy since boot (all processes)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu_ours() -> float:
    """CPU seconds of this process and its children (the servers), living or waited for."""
    total = 0.0
    for pid in [os.getpid(), *descendants(os.getpid())]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in stat[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


# Where a hybrid query's time goes: each part is the cumulative time of these functions (the
# encoder's is the wait for the encoding thread, which cProfile does not follow).
PARTS = {
    "encoder (question's forward pass)": [("index/batching.py", "embed")],
    "word pieces decoded": [("index/codec.py", "decode")],
    "word match, decoding left out": [
        ("index/ranking.py", "scores"),
        ("index/ranking.py", "score"),
        ("index/ranking.py", "weakest"),
    ],
    "texts read from SQLite": [("index/storage/embedded.py", "texts")],
    "BM25": [
        ("index/storage/embedded.py", "lexical_search"),
        ("index/storage/embedded.py", "passage_bm25"),
        ("index/storage/embedded.py", "sentence_bm25"),
    ],
    "dense search (FAISS)": [("index/storage/embedded.py", "dense_search")],
}


def profile(ours: Path, questions: list[str], settings: IndexSettings) -> dict[str, float]:
    """ms per in-process hybrid query, in total and per part (cProfile, which slows Python code
    a little: the parts are shares more than times)."""
    import cProfile
    import pstats

    index = Index(ours, embedder_of(settings))
    index.search(questions[0])
    profiler = cProfile.Profile()
    profiler.enable()
    for question in questions:
        index.search(question, 5, "hybrid")
    profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative(where: str, name: str) -> float:
        """Time in the function and below, less its calls from a function of the same part
        (WordMatch.scores calls WordMatch.score, from a list comprehension, which cProfile
        names as a caller of its own)."""
        own = {func for f in PARTS.values() if (where, name) in f for _, func in f}
        own |= {"<listcomp>"} if own else set()
        total = 0.0
        for (file, _, func), (_, _, _, ct, callers) in stats.items():
            if file.endswith(where) and func == name:
                # Called from where profiling began, it has no caller on record: all of it counts.
                total += (
                    sum(c[3] for (_, _, caller), c in callers.items() if caller not in own) if callers else ct
                )
        return total

    total = cumulative("index/index.py", "search")
    out = {part: sum(cumulative(*f) for f in funcs) for part, funcs in PARTS.items()}
    out["word match, decoding left out"] -= out["word pieces decoded"]
    out["everything else (ranking's numpy, candidates, SQLite places)"] = total - sum(out.values())
    return {"total": round(total / len(questions) * 1000, 2)} | {
        part: round(value / len(questions) * 1000, 2) for part, value in out.items()
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.array(values)
    return {
        q: round(float(np.percentile(a, n, method="inverted_cdf")), 2)
        for q, n in (("p50", 50), ("p95", 95), ("p99", 99))
    }


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
