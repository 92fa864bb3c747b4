"""The commands over an index: ingest, ask, docs, rm, compact, rebuild, migrate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from groundqa.cli.client import Client
from groundqa.index.config import open_index
from groundqa.index.errors import GroundQAError, UsageError
from groundqa.index.index import Index, new_document
from groundqa.index.progress import progress
from groundqa.index.ranking import check_min_confidence, check_query
from groundqa.index.rebuild import rebuild
from groundqa.ingest.sources import article_input, article_sources, read_source
from groundqa.service.config import Settings
from groundqa.service.schemas import History, QueryResponse, TurnIn, turns_of


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Every file is read and checked before anything is written; one that cannot be read is
    named on stderr and left out, the rest are ingested, and the exit code is 1 if any failed."""
    skipped: list[str] = []
    files = article_sources(args.paths, args.follow_links, skipped)
    for line in skipped:
        print(f"groundqa: {line}", file=sys.stderr)
    if (args.title or args.doc_id) and len(files) > 1:
        raise UsageError("--title and --doc-id name one document; give one file")
    if args.batch < 1:
        raise UsageError(f"--batch is {args.batch}; give a positive number")
    limits = settings.file_limits()
    inputs, failed = [], 0
    for source in files:
        try:
            item, found = article_input(read_source(source, limits), limits, args.title, args.doc_id)
            new_document(item, settings.max_doc_chars)
        except GroundQAError as exc:
            failed += 1
            print(f"groundqa: error: {exc}", file=sys.stderr, flush=True)
            continue
        for warning in found.warnings:
            print(f"groundqa: {source}: {warning}", file=sys.stderr)
        inputs.append(item)
    if not inputs:  # nothing to write: no index is made
        print(f"{len(files)} files: {failed} could not be read (named above); nothing was added")
        return 1
    index = open_index(settings)
    counts = {"added": 0, "replaced": 0, "unchanged": 0}
    batches = [inputs[i : i + args.batch] for i in range(0, len(inputs), args.batch)]
    for batch in progress(batches, "ingest", unit="batch"):
        for done in index.add_many(batch, replace=True):
            counts[done.state] += 1
            print(f"{done.document.doc_id}\t{done.document.passages} passages\t{done.state}", flush=True)
    gone = f"{failed} could not be read (named above); " if failed else ""
    print(f"{len(files)} files: {gone}{_summary(counts, index)}")
    return 1 if failed else 0


def _summary(counts: dict[str, int], index: Index) -> str:
    docs, passages = index.counts()
    done = f"{counts['added']} added, {counts['replaced']} replaced, {counts['unchanged']} unchanged"
    return f"{done}; the index holds {docs} documents, {passages} passages"


def run_ask(args: argparse.Namespace, settings: Settings) -> int:
    history = _history(args.history) if args.history else None
    if args.url:
        turns = None if history is None else [t.model_dump() for t in history]
        response = Client(args.url).query(
            args.question, args.k, args.mode, args.min_confidence, history=turns
        )
    else:
        check_min_confidence(args.min_confidence, "--min-confidence")  # before the model loads
        check_query(args.question, args.k, args.mode)
        found = open_existing(settings).search(
            args.question, args.k, args.mode, min_confidence=args.min_confidence, history=turns_of(history)
        )
        response = QueryResponse.of(found).as_json()
    if args.json:
        print(json.dumps(response, ensure_ascii=False, indent=2))
    else:
        print(format_response(response))
    return 0


def _history(path: str) -> list[TurnIn] | None:
    """The turns of a --history file, checked as the HTTP API checks them."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--history: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        found: list[TurnIn] | None = HISTORY.validate_json(text)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        raise UsageError(
            f'--history: {path} is not a list of {{"role": "user"|"assistant", "content": ...}}'
            f" ({where or 'the file'}: {e['msg']})"
        ) from exc
    return found


HISTORY: TypeAdapter[list[TurnIn] | None] = TypeAdapter(History)


def format_response(r: dict[str, Any]) -> str:
    lines = []
    if r.get("searched_for") and r["searched_for"] != r["question"]:
        lines.append(f"Searched for: {r['searched_for']}")
    a = r["answer"]
    if a is None and r["passages"]:
        lines.append(
            f"No answer: the articles don't seem to answer this (confidence {r['confidence']:.2f})."
            "\nClosest passages:"
        )
    elif a is None:
        lines.append("No answer: nothing relevant was found.")
    else:
        lines.append(f"Answer: {a['text']}")
        where = f"{a['doc_id']}{_page(a)} [{a['start']}:{a['end']}]"
        lines.append(f"        {where} confidence {r['confidence']:.2f}")
    for p in r["passages"]:
        excerpt = " ".join(p["text"].split())
        excerpt = excerpt if len(excerpt) <= 160 else excerpt[:157] + "..."
        where = f"{p['doc_id']}{_page(p)} [{p['start']}:{p['end']}]"
        lines.append(f"\n{p['rank']}. {where} score {p['score']:.3f}")
        lines.append(f"   {excerpt}")
    lines.append(f"\n({r['took_ms']} ms, {r['mode']})")
    return "\n".join(lines)


def _page(span: dict[str, Any]) -> str:
    return f" p. {span['page']}" if span.get("page") else ""


def run_docs(args: argparse.Namespace, settings: Settings) -> int:
    docs = open_existing(settings).documents()
    for d in docs:
        print(f"{d.doc_id}\t{d.passages} passages\t{d.chars} chars\t{d.created_at}\t{d.title}")
    print(f"{len(docs)} documents")
    return 0


def run_rm(args: argparse.Namespace, settings: Settings) -> int:
    open_existing(settings).delete(args.doc_id)
    print(f"deleted {args.doc_id}")
    return 0


def run_compact(args: argparse.Namespace, settings: Settings) -> int:
    index = open_existing(settings)
    index.compact()
    docs, passages = index.counts()
    print(f"compacted {settings.where()}: {docs} documents, {passages} passages")
    return 0


def run_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """The index made again from the texts it stores (index/rebuild.py); the old folder is kept."""
    done = rebuild(settings, lambda starts: progress(starts, "rebuild", unit="batch"))
    folder = settings.index_dir
    print(
        f"rebuilt {folder}: {done.documents} documents, {done.passages} passages{done.note}; "
        f"the old folder is {done.kept}"
    )
    return 0


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.qdrant_url:
        raise UsageError("set GROUNDQA_QDRANT_URL to the Qdrant server to copy the index into")
    if args.batch < 1:
        raise UsageError(f"--batch is {args.batch}; give a positive number")
    source = open_existing(settings.model_copy(update={"qdrant_url": None}))
    target = open_index(settings)
    counts = {"added": 0, "replaced": 0, "unchanged": 0}
    total = len(source.documents())
    for done in source.copy_to(target, args.batch):
        for d in done:
            counts[d.state] += 1
        print(f"{sum(counts.values())}/{total} documents copied", flush=True)
    print(f"copied {settings.index_dir} to {settings.where()}: {_summary(counts, target)}")
    return 0


def open_existing(settings: Settings) -> Index:
    if not settings.qdrant_url and not Path(settings.index_dir).exists():
        raise UsageError(f"no index at {settings.index_dir}; ingest documents first or give --index")
    return open_index(settings)
