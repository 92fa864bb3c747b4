"""Index growth benchmark: ingest, writes, disk, memory, files and query latency as the index grows.

    python -m groundqa.eval.bench_index --data ../shared/data/squad/dev-v1.1-even-articles.json \
        --out reports/index-growth [--sizes 100000,1000000]

Real text and the real model for the 2,000-document rows (the shared SQuAD paragraphs as separate
documents, plus variations of them with their sentences rotated); the larger rows copy those
documents' stored vectors, word pieces and postings (with a little noise on the dense vectors so
that no two are equal): precomputed vectors, labelled as such. Prints the figures and writes
report.json and report.md. Timed figures are ratios within one run; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from groundqa.eval.data import load_squad
from groundqa.eval.server import groundqa_command, rss_mb, serve, wait_ready
from groundqa.index.config import prepare_process
from groundqa.index.index import Index, derive_doc_id
from groundqa.index.model import Embedder, bundled_model_dir
from groundqa.index.storage import NewDocument, segment, store
from groundqa.index.storage.segment import Segment
from groundqa.index.storage.store import Store

DOCUMENTS = 2000
POSTS = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="SQUAD.json",
        help="a SQuAD v1.1 file (the shared even half)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/index-growth"))
    parser.add_argument("--sizes", default="100000,1000000", help="passages of the precomputed rows")
    parser.add_argument("--documents", type=int, default=DOCUMENTS, help="real documents ingested")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    prepare_process()
    work = args.work or Path(tempfile.mkdtemp(prefix="groundqa-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": "python -m groundqa.eval.bench_index " + " ".join(argv or sys.argv[1:])
    }
    report["machine"] = {"cores": os.cpu_count(), "load_before": os.getloadavg()}
    squad = load_squad(args.data)
    docs = documents(args.data, args.documents)
    folder = work / "docs"
    write_documents(folder, docs[: args.documents])
    index_dir = work / "index-2k"
    report["ingest"] = ingest(folder, index_dir)
    embedder = Embedder()
    report["ingest"]["txtai_seconds"] = txtai_ingest(Index(index_dir, embedder))
    report["ingest"]["ratio_to_txtai"] = round(
        report["ingest"]["seconds"] / report["ingest"]["txtai_seconds"], 2
    )
    report["http_posts"] = http_posts(index_dir, work / "index-empty", docs[args.documents :])
    questions = [q.question for q in squad.questions[:300]]
    rows = [
        size_row(
            f"{args.documents} documents (real)",
            Index(index_dir, embedder),
            index_dir,
            questions,
            report["http_posts"],
        )
    ]
    report["ann_recall_real"] = real_recall(index_dir, work / "recall.ivf", embedder, questions)
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        grown = work / f"index-{size}"
        built = grow(index_dir, grown, size, embedder, questions)
        row = size_row(
            f"{size:,} (precomputed)", Index(grown, embedder), grown, questions, server_figures(grown)
        )
        rows.append({**row, **built})
    report["sizes"] = rows
    report["machine"]["load_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    print(markdown(report))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def documents(squad: Path, count: int) -> list[tuple[str, str, str]]:
    """(doc_id, title, text): every SQuAD paragraph, then variations with rotated sentences."""
    data = json.loads(squad.read_text(encoding="utf-8"))
    base = [
        (derive_doc_id(f"{a['title']}-{i}"), a["title"].replace("_", " "), p["context"])
        for a in data["data"]
        for i, p in enumerate(a["paragraphs"])
    ]
    out = list(base)
    turn = 1
    while len(out) < count + 2 * POSTS:
        for doc_id, title, text in base:
            parts = text.split(". ")
            rotated = ". ".join(parts[turn % len(parts) :] + parts[: turn % len(parts)])
            out.append((f"{doc_id}-v{turn}", title, rotated))
        turn += 1
    return out


def write_documents(folder: Path, docs: Sequence[tuple[str, str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, title, text in docs:
        (folder / f"{doc_id}.txt").write_text(f"{title}\n\n{text}", encoding="utf-8")


def ingest(folder: Path, index_dir: Path) -> dict[str, Any]:
    """`groundqa ingest DIR`, timed as a user runs it; per-document time from when lines appear."""
    env = {**os.environ, "GROUNDQA_INDEX_DIR": str(index_dir)}
    began = time.perf_counter()
    load = os.getloadavg()
    process = subprocess.Popen(
        groundqa_command("ingest", str(folder)),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = process.stdout or ()  # (a pipe, as asked)
    stamps = [time.perf_counter() for line in lines if "\tadded" in line]
    process.wait()
    total = time.perf_counter() - began
    # A batch's lines come together when it commits: time per document is a batch's time over its
    # documents. The first batch also loads the model, so the first tenth starts after it.
    ends, sizes = [stamps[0]], [1]
    for stamp in stamps[1:]:
        if stamp - ends[-1] < 0.05:
            ends[-1] = stamp
            sizes[-1] += 1
        else:
            ends.append(stamp)
            sizes.append(1)
    durations = np.diff(ends)
    counts = np.array(sizes[1:])
    k = max(1, -(-len(stamps) // 10 // int(np.median(counts))))
    first = durations[:k].sum() / counts[:k].sum()
    last = durations[-k:].sum() / counts[-k:].sum()
    return {
        "documents": len(stamps),
        "batches": len(ends),
        "seconds": round(total, 1),
        "first_tenth_ms_per_doc": round(first * 1000, 1),
        "last_tenth_ms_per_doc": round(last * 1000, 1),
        "last_to_first": round(last / first, 2),
        "load": load,
    }


def txtai_ingest(index: Index) -> float:
    from txtai import Embeddings

    rows = [(i, p.text, None) for i, p in enumerate(index.passages())]
    engine = Embeddings({"path": str(bundled_model_dir()), "content": False, "hybrid": True})
    began = time.perf_counter()
    engine.index(rows)
    return round(time.perf_counter() - began, 1)


def http_posts(full: Path, empty: Path, docs: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """POSTs of single documents into the 2,000-document index and into an empty one, interleaved."""
    copy = full.parent / "index-2k-posts"
    shutil.copytree(full, copy)
    times: dict[str, list[float]] = {"full": [], "empty": []}
    load = os.getloadavg()
    with Server(copy) as big, Server(empty) as small:
        for i in range(POSTS):
            for name, server in (("full", big), ("empty", small)):
                doc_id, title, text = docs[2 * i + (name == "empty")]
                began = time.perf_counter()
                reply = server.client.post(
                    "/v1/documents", json={"text": text, "title": title, "doc_id": doc_id}
                )
                times[name].append(time.perf_counter() - began)
                reply.raise_for_status()
        figures = {"full": big.figures(), "empty": small.figures()}
    shutil.rmtree(copy, ignore_errors=True)
    full_ms, empty_ms = (statistics.median(times[n]) * 1000 for n in ("full", "empty"))
    return {
        "posts": POSTS,
        "median_ms_into_2000": round(full_ms, 1),
        "median_ms_into_empty": round(empty_ms, 1),
        "ratio": round(full_ms / empty_ms, 2),
        "server": figures,
        "load": load,
    }


def server_figures(index_dir: Path) -> dict[str, Any]:
    with Server(index_dir) as server:
        for q in ("Who founded the university?", "When was the treaty signed?", "What is the capital?"):
            server.client.get("/v1/query", params={"q": q, "k": 10}).raise_for_status()
        return {"server": {"full": server.figures()}}


def size_row(
    name: str, index: Index, folder: Path, questions: list[str], http: dict[str, Any]
) -> dict[str, Any]:
    docs, passages = index.counts()
    index.search(questions[0])  # warm
    took = []
    load = os.getloadavg()
    for q in questions:
        began = time.perf_counter()
        index.search(q, 5, "hybrid")
        took.append((time.perf_counter() - began) * 1000)
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    server = http["server"]["full"]
    return {
        "size": name,
        "documents": docs,
        "passages": passages,
        "disk_bytes_per_passage": round(disk / passages),
        "hybrid_p50_ms": round(float(np.percentile(took, 50)), 1),
        "hybrid_p95_ms": round(float(np.percentile(took, 95)), 1),
        "server_rss_mb": server["rss_mb"],
        "server_open_files": server["open_files"],
        "load": load,
    }


def grow(
    source: Path, target: Path, passages: int, embedder: Embedder, questions: list[str]
) -> dict[str, Any]:
    """An index of about `passages` passages made of copies of the source's documents."""
    index = Index(source, embedder)
    index.compact()
    (seg,) = [Segment.open(p) for p in (source / "segments").glob("seg-*.bin")]
    copies = -(-passages // seg.passages)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(source / "meta.json", target / "meta.json")
    began = time.perf_counter()
    every = np.arange(len(seg.doc_ids))
    docs, arrays = segment.merge([(seg, every)] * copies)
    docs = [(f"{d}~{n // len(seg.doc_ids)}", sha) for n, (d, sha) in enumerate(docs)]
    arrays["passage_vectors"] = Noisy(seg.arrays["passage_vectors"], copies)  # type: ignore[assignment]
    (target / "segments").mkdir()
    path = target / "segments" / "seg-1.bin"
    segment.write(path, docs, arrays)
    ann_seconds = None
    if seg.passages * copies >= segment.ANN_MIN_PASSAGES:
        t = time.perf_counter()
        segment.write_ann(segment.ann_path(path), Segment.open(path).arrays["passage_vectors"])
        ann_seconds = round(time.perf_counter() - t, 1)
    db = Store(target / "store.sqlite")
    texts = {d.doc_id: index.document(d.doc_id) for d in index.documents()}
    with db.transaction(write=True) as tx:
        tx.execute("UPDATE state SET value = 2 WHERE key = 'next_segment'")
        store.add_segment(tx, 1, seg.passages * copies)
        for n, (doc_id, _) in enumerate(docs):
            doc, text = texts[doc_id.split("~")[0]]
            new = NewDocument(doc.__class__(**{**doc.__dict__, "doc_id": doc_id}), text)
            store.put_document(tx, new, 1, n)
        store.bump_revision(tx)
    grown = Index(target, embedder)
    recall = ann_recall(Segment.open(path), embedder, questions) if ann_seconds is not None else None
    return {
        "build_seconds": round(time.perf_counter() - began, 1),
        "ann_build_seconds": ann_seconds,
        "ann_recall_at_100": recall,
        "segments": len(list((target / "segments").glob("*.bin"))),
        "live_passages": grown.counts()[1],
    }


def ann_recall(seg: Segment, embedder: Embedder, questions: list[str]) -> float:
    """Recall@100 of the segment's IVF index against exact search, for SQuAD questions."""
    import faiss

    vectors = embedder.embed(questions)
    exact = faiss.IndexFlatIP(seg.dimension)
    for start in range(0, seg.passages, 200_000):
        exact.add(np.ascontiguousarray(seg.arrays["passage_vectors"][start : start + 200_000]))
    _, truth = exact.search(vectors, 100)
    _, found = seg.dense().search(vectors, 100, params=seg.search_parameters())
    hits = [len(set(t) & set(f)) for t, f in zip(truth, found, strict=True)]
    return round(sum(hits) / (100 * len(questions)), 4)


def real_recall(index_dir: Path, path: Path, embedder: Embedder, questions: list[str]) -> dict[str, Any]:
    """The same IVF recipe (4 sqrt(n) lists, NPROBE probes) over the real passages: copies of
    passages cluster tightly, so recall measured on them says less than this."""
    Index(index_dir, embedder).compact()
    (seg,) = [Segment.open(p) for p in (index_dir / "segments").glob("seg-*.bin")]
    shutil.copy(seg.path, path.with_suffix(".bin"))
    segment.write_ann(path, seg.arrays["passage_vectors"])
    copy = Segment.open(path.with_suffix(".bin"))
    lists = int(4 * np.sqrt(seg.passages))
    return {
        "passages": seg.passages,
        "lists": lists,
        "probes": segment.NPROBE,
        "recall_at_100": ann_recall(copy, embedder, questions),
    }


class Noisy(Sequence[np.ndarray]):
    """Copies of unit vectors, each nudged so that no two are equal, made chunk by chunk."""

    def __init__(self, vectors: np.ndarray, copies: int) -> None:
        self.vectors, self.copies = vectors, copies

    def __len__(self) -> int:
        return self.copies

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if i >= self.copies:
            raise IndexError(i)
        rng = np.random.default_rng(i)
        nudged = self.vectors + rng.normal(scale=0.02, size=self.vectors.shape).astype(np.float32)
        return (nudged / np.linalg.norm(nudged, axis=1, keepdims=True)).astype(np.float32)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self.copies))


class Server:
    """`groundqa serve` as a subprocess on a free loopback port, with a key for writes."""

    def __init__(self, index_dir: Path) -> None:
        self.process, url = serve(index_dir, env={"GROUNDQA_API_KEY": "bench"})
        self.url = url
        self.client = httpx.Client(base_url=url, headers={"Authorization": "Bearer bench"}, timeout=600)

    def __enter__(self) -> Server:
        wait_ready(self.url, self.process)
        return self

    def figures(self) -> dict[str, Any]:
        files = os.listdir(f"/proc/{self.process.pid}/fd")
        return {"rss_mb": rss_mb(self.process.pid), "open_files": len(files)}

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def markdown(report: dict[str, Any]) -> str:
    i, h, m, r = report["ingest"], report["http_posts"], report["machine"], report["ann_recall_real"]
    lines = [
        "# Index growth benchmark",
        "",
        "Made by:",
        "",
        f"    {report['command']}",
        "",
        f"Machine: {m['cores']} cores; load average before {m['load_before']}, after {m['load_after']}.",
        "",
        f"- ingest of {i['documents']} documents with `groundqa ingest DIR`: {i['seconds']} s; "
        f"txtai (hybrid) indexing the same passages: {i['txtai_seconds']} s; ratio {i['ratio_to_txtai']}",
        f"- time per document, last tenth against first tenth: {i['last_tenth_ms_per_doc']} / "
        f"{i['first_tenth_ms_per_doc']} ms = {i['last_to_first']}",
        f"- IVF recall@100 against exact search over the {r['passages']} real passages ({r['lists']} lists, "
        f"{r['probes']} probed), 300 SQuAD questions: {r['recall_at_100']}",
        f"- {h['posts']} single-document POSTs, median: {h['median_ms_into_2000']} ms into the "
        f"{i['documents']}-document index, {h['median_ms_into_empty']} ms into an empty one: "
        f"ratio {h['ratio']}",
        "",
        "| size | documents | passages | disk bytes/passage | hybrid p50 ms | hybrid p95 ms | "
        "server RSS MB | server open files | ANN recall@100 | build s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["sizes"]:
        lines.append(
            f"| {r['size']} | {r['documents']} | {r['passages']} | {r['disk_bytes_per_passage']} | "
            f"{r['hybrid_p50_ms']} | {r['hybrid_p95_ms']} | {r['server_rss_mb']} | "
            f"{r['server_open_files']} | {r.get('ann_recall_at_100') or 'exact'} | "
            f"{r.get('build_seconds', '')} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
