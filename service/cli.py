"""The groundqa command line: one root composes each package's commands; domain errors become
one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from groundqa import __version__
from groundqa.eval import bench
from groundqa.eval import cli as eval_cli
from groundqa.eval.client import Client
from groundqa.eval.progress import progress
from groundqa.index import serving
from groundqa.index.config import open_index, prepare_process
from groundqa.index.errors import GroundQAError
from groundqa.index.index import DocumentInput, Index, new_document
from groundqa.index.ranking import DEFAULT_K, DEFAULT_MODE, MAX_K, MODES, check_query
from groundqa.index.store import Store
from groundqa.service.articles import UsageError, article_input, article_sources, read_source
from groundqa.service.config import Settings
from groundqa.service.schemas import History, QueryResponse, TurnIn, turns_of

EXAMPLES = {
    "ingest": "example: groundqa ingest corpus/putin-china-visit.txt",
    "ask": 'example: groundqa ask "How long is it?" --history turns.json  (turns.json: '
    '[{"role": "user", "content": "What is the Power of Siberia 2 pipeline?"}])',
    "serve": "example: groundqa serve --port 8000  (HTTP writes need GROUNDQA_API_KEY set)",
    "docs": "example: groundqa docs",
    "rm": "example: groundqa rm putin-china-visit",
    "compact": "example: groundqa compact",
    "rebuild": "example: groundqa rebuild --index var/index  (after a message that an index file is damaged)",
    "migrate": "example: groundqa migrate --to qdrant --index var/index  (GROUNDQA_QDRANT_URL set)",
    "mcp": "example: groundqa mcp --index var/index  (an MCP client starts it: see the README)",
}
# Documents per commit in `ingest`: each batch is one segment, written in one transaction.
INGEST_BATCH = 64


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in (("index_dir", args.index), ("host", args.host), ("port", args.port))
        if value is not None
    }
    try:
        try:
            settings = Settings(**overrides)
        except ValidationError as exc:
            raise UsageError(settings_error(exc)) from None
        prepare_process()
        return int(args.run(args, settings) or 0)
    except GroundQAError as exc:
        print(f"groundqa: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("groundqa: interrupted", file=sys.stderr)
        return 130


def settings_error(exc: ValidationError) -> str:
    """A bad setting in one line, named as it is set: "GROUNDQA_PORT is 'abc': ..."."""
    e = exc.errors()[0]
    name = f"GROUNDQA_{'_'.join(str(p) for p in e['loc']).upper()}"
    given = os.environ.get(name, e.get("input"))
    return f"{name} is {given!r}: {e['msg'][0].lower()}{e['msg'][1:]}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundqa",
        description="Grounded question answering over articles, with exact character offsets.",
        epilog='example: groundqa ingest corpus/ && groundqa ask "Who visited China?"',
    )
    parser.add_argument("--version", action="version", version=f"groundqa {__version__}")
    parser.set_defaults(index=None, host=None, port=None)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    add_parser(commands)
    eval_cli.add_parser(commands)
    bench.add_parser(commands)
    return parser


def add_parser(commands: Any) -> None:
    """The commands over an index: ingest, ask, serve, docs, rm, compact."""

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=help, epilog=EXAMPLES[name]
        )
        sub.add_argument("--index", metavar="DIR", help="index folder (GROUNDQA_INDEX_DIR, var/index)")
        return sub

    ingest = command(
        "ingest",
        "add articles to the index: web pages, PDFs, Word files, text and Markdown; files, folders, URLs",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH|URL")
    ingest.add_argument("--title", help="title of the document (one file only)")
    ingest.add_argument("--doc-id", help="doc_id of the document (one file only)")
    ingest.add_argument(
        "--batch", type=int, default=INGEST_BATCH, help=f"documents per commit (default {INGEST_BATCH})"
    )
    ingest.add_argument(
        "--follow-links", action="store_true", help="read links in folders that lead outside them"
    )
    ingest.set_defaults(run=run_ingest)

    ask = command("ask", "ask a question; prints the answer sentence and the best passages")
    ask.add_argument("question")
    ask.add_argument("-k", type=int, default=DEFAULT_K, help=f"passages to return (1 to {MAX_K})")
    ask.add_argument("--mode", choices=MODES, default=DEFAULT_MODE)
    ask.add_argument(
        "--min-confidence",
        type=float,
        metavar="P",
        help="leave the answer out under this confidence, 0 to 1 (GROUNDQA_MIN_CONFIDENCE; 0 always answers)",
    )
    ask.add_argument("--json", action="store_true", help="print the QueryResponse as JSON")
    ask.add_argument("--url", help="ask a running server, e.g. http://127.0.0.1:8000")
    ask.add_argument(
        "--history",
        metavar="FILE",
        help='the conversation so far, a JSON list of {"role": "user"|"assistant", "content": ...}, '
        "oldest first (- reads standard input): a follow-up question is read in its light",
    )
    ask.set_defaults(run=run_ask)

    serve = command("serve", "serve the HTTP API and the chat page")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--seed", metavar="PATH", help="ingest PATH first when the index holds no document")
    serve.add_argument(
        "--workers", type=_workers, help="uvicorn worker processes, or auto: one per core (GROUNDQA_WORKERS)"
    )
    serve.set_defaults(run=run_serve)

    docs = command("docs", "list the documents in the index")
    docs.set_defaults(run=run_docs)

    rm = command("rm", "delete a document from the index")
    rm.add_argument("doc_id")
    rm.set_defaults(run=run_rm)

    compact = command("compact", "merge the index's segments into one, dropping deleted rows")
    compact.set_defaults(run=run_compact)

    rebuild = command(
        "rebuild",
        "make the embedded index again from the texts it stores (damaged segments); keeps the old folder",
    )
    rebuild.set_defaults(run=run_rebuild)

    migrate = command("migrate", "copy an embedded index into Qdrant (GROUNDQA_QDRANT_URL), vectors and all")
    migrate.add_argument("--to", choices=["qdrant"], required=True)
    migrate.add_argument("--batch", type=int, default=INGEST_BATCH, help="documents per commit")
    migrate.set_defaults(run=run_migrate)

    mcp = command(
        "mcp", "serve the index to an MCP client over stdio (tools: ask, search, get_document, ...)"
    )
    mcp.set_defaults(run=run_mcp)


def run_mcp(args: argparse.Namespace, settings: Settings) -> int:
    """The MCP server on stdin and stdout; the index opens at the first tool call, and writes are
    allowed (the local user owns the index)."""
    from groundqa.service import mcp_server

    opened: list[Index] = []

    def index() -> Index:
        if not opened:
            opened.append(_index(settings))
        return opened[0]

    mcp_server.build(index, mcp_server.allow_all, settings.link_base()).run()
    return 0


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
        check_query(args.question, args.k, args.mode)  # before the model loads
        if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
            raise UsageError(f"--min-confidence is {args.min_confidence}; give a number from 0 to 1")
        found = _index(settings).search(
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
    docs = _index(settings).documents()
    for d in docs:
        print(f"{d.doc_id}\t{d.passages} passages\t{d.chars} chars\t{d.created_at}\t{d.title}")
    print(f"{len(docs)} documents")
    return 0


def run_rm(args: argparse.Namespace, settings: Settings) -> int:
    _index(settings).delete(args.doc_id)
    print(f"deleted {args.doc_id}")
    return 0


def run_compact(args: argparse.Namespace, settings: Settings) -> int:
    index = _index(settings)
    index.compact()
    docs, passages = index.counts()
    print(f"compacted {settings.where()}: {docs} documents, {passages} passages")
    return 0


def run_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """The documents as SQLite holds them (texts, titles, pages, originals), embedded again into
    a new folder that then takes the index's place; the old one is kept beside it. Refused while
    a server runs on the folder (it would go on writing into the folder moved away)."""
    if settings.qdrant_url:
        raise UsageError("rebuild makes an embedded index again; Qdrant keeps its own copies")
    folder = Path(settings.index_dir)
    if not (folder / "store.sqlite").exists():
        raise UsageError(f"no index at {folder}; give --index")
    with serving.alone(folder):
        source, note = _rebuild_source(folder)
        items = _stored_items(source)
        fresh = folder.with_name(folder.name + ".rebuilding")
        shutil.rmtree(fresh, ignore_errors=True)
        index = open_index(settings.model_copy(update={"index_dir": fresh}))
        for at in progress(range(0, len(items), INGEST_BATCH), "rebuild", unit="batch"):
            index.add_many(items[at : at + INGEST_BATCH])
        docs, passages = index.counts()
        index.storage.close()
        kept = folder.with_name(f"{folder.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(kept)
        fresh.rename(folder)
    print(f"rebuilt {folder}: {docs} documents, {passages} passages{note}; the old folder is {kept}")
    return 0


def _rebuild_source(folder: Path) -> tuple[Path, str]:
    """The folder whose store holds the last committed revision: the index itself, or, where its
    database is behind the revision committed (a rebuild of before 0.9.0 moved the folder away
    under a running server, which went on writing there), the moved-away folder that holds it."""
    committed, have = _revisions(folder)
    if committed is None or have is None or have >= committed:
        return folder, ""
    for sibling in sorted(folder.parent.glob(f"{folder.name}.damaged-*"), reverse=True):
        if (sibling / "store.sqlite").exists() and _revisions(sibling)[1] == committed:
            return (
                sibling,
                f" from {sibling}, which holds revision {committed}, the last committed "
                f"({folder} held {have})",
            )
    return (
        folder,
        f" from what {folder} holds (revision {have}; {committed} was committed and no folder "
        "beside it holds it)",
    )


def _revisions(folder: Path) -> tuple[int | None, int | None]:
    """The revision last committed and the one the database holds (None: unreadable)."""
    try:
        stored = Store(folder / "store.sqlite", check_committed=False)
    except sqlite3.Error:
        return None, None
    try:
        return stored.committed(), stored.revision()
    finally:
        stored.close()


def _stored_items(folder: Path) -> list[DocumentInput]:
    try:
        stored = Store(folder / "store.sqlite", check_committed=False)  # quick_check: texts must be whole
    except sqlite3.Error as exc:
        raise UsageError(
            f"{folder / 'store.sqlite'} cannot be read ({exc}): restore the index folder from a backup"
        ) from exc
    try:
        items = []
        for doc in stored.documents():
            _, text = stored.document(doc.doc_id) or (doc, "")
            items.append(
                DocumentInput(
                    text,
                    doc.title,
                    doc.doc_id,
                    doc.source,
                    doc.format,
                    doc.page_starts,
                    doc.published,
                    stored.original(doc.doc_id),
                )
            )
        return items
    except sqlite3.Error as exc:
        raise UsageError(
            f"{folder / 'store.sqlite'} cannot be read ({exc}): restore it from a backup"
        ) from exc
    finally:
        stored.close()


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.qdrant_url:
        raise UsageError("set GROUNDQA_QDRANT_URL to the Qdrant server to copy the index into")
    if args.batch < 1:
        raise UsageError(f"--batch is {args.batch}; give a positive number")
    source = _index(settings.model_copy(update={"qdrant_url": None}))
    target = open_index(settings)
    counts = {"added": 0, "replaced": 0, "unchanged": 0}
    total = len(source.documents())
    for done in source.copy_to(target, args.batch):
        for d in done:
            counts[d.state] += 1
        print(f"{sum(counts.values())}/{total} documents copied", flush=True)
    print(f"copied {settings.index_dir} to {settings.where()}: {_summary(counts, target)}")
    return 0


def _descriptors_for(connections: int) -> None:
    """Room for the connections a worker may hold, and its files: the soft limit raised toward
    the hard one (workers inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if soft < want:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard)
        )
    if hard != resource.RLIM_INFINITY and hard < want:
        print(
            f"groundqa: the process may open {hard} files: fewer than GROUNDQA_MAX_CONNECTIONS "
            f"({connections}) + 256; lower it or raise the limit (ulimit -n)",
            file=sys.stderr,
        )


def _index(settings: Settings) -> Index:
    if not settings.qdrant_url and not Path(settings.index_dir).exists():
        raise UsageError(f"no index at {settings.index_dir}; ingest documents first or give --index")
    return open_index(settings)


def _workers(value: str) -> int | str:
    """--workers: a number, or auto."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number nor auto") from None


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from groundqa.service.app import GRACEFUL_SHUTDOWN, guarded_protocol

    updates = {k: v for k, v in (("seed", args.seed), ("workers", args.workers)) if v is not None}
    settings = settings.model_copy(update=updates)
    if settings.seed:
        article_sources([settings.seed])  # a missing seed is one line here, not an error in each worker
    workers = settings.worker_count()
    if workers < 1:
        raise UsageError(f"--workers is {workers}; give a positive number or auto")
    kind = settings.qdrant_folder()
    if workers > 1 and kind:
        raise UsageError(
            f"{kind}:DIR is opened by one process at a time: use --workers 1, or a Qdrant server"
        )
    _descriptors_for(settings.max_connections)
    # Each worker builds the app from the environment: the flags go there first.
    os.environ.update(
        GROUNDQA_INDEX_DIR=str(settings.index_dir),
        GROUNDQA_HOST=settings.host,
        GROUNDQA_PORT=str(settings.port),
        GROUNDQA_WORKERS=str(workers),
        **({"GROUNDQA_SEED": settings.seed} if settings.seed else {}),
    )
    writes = "on (bearer key)" if settings.api_key is not None else "off (GROUNDQA_API_KEY is not set)"
    where = f"http://{settings.host}:{settings.port}"
    print(
        f"groundqa: serving {settings.where()} on {where} ({workers} worker{'s' * (workers > 1)}); "
        f"HTTP writes {writes}",
        file=sys.stderr,
    )
    uvicorn.run(
        "groundqa.service.app:app_from_environment",
        factory=True,
        workers=workers,
        http=guarded_protocol(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
