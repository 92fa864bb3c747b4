"""The groundqa command line, above both faces: it composes the commands over an index
(commands.py, serve.py) with the evaluation's and the benchmark's; domain errors become one line
on stderr."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pydantic import ValidationError

from groundqa import __version__
from groundqa.cli import commands as over_index
from groundqa.cli import evaluate as eval_cli
from groundqa.cli.serve import run_mcp, run_serve, workers_arg
from groundqa.eval import bench
from groundqa.index.config import prepare_process
from groundqa.index.errors import GroundQAError, UsageError
from groundqa.index.ranking import DEFAULT_K, DEFAULT_MODE, MAX_K, MODES
from groundqa.index.rebuild import BATCH
from groundqa.service.config import Settings

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
    ingest.add_argument("--batch", type=int, default=BATCH, help=f"documents per commit (default {BATCH})")
    ingest.add_argument(
        "--follow-links", action="store_true", help="read links in folders that lead outside them"
    )
    ingest.set_defaults(run=over_index.run_ingest)

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
    ask.set_defaults(run=over_index.run_ask)

    serve = command("serve", "serve the HTTP API and the chat page")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--seed", metavar="PATH", help="ingest PATH first when the index holds no document")
    serve.add_argument(
        "--workers",
        type=workers_arg,
        help="uvicorn worker processes, or auto: one per core (GROUNDQA_WORKERS)",
    )
    serve.set_defaults(run=run_serve)

    docs = command("docs", "list the documents in the index")
    docs.set_defaults(run=over_index.run_docs)

    rm = command("rm", "delete a document from the index")
    rm.add_argument("doc_id")
    rm.set_defaults(run=over_index.run_rm)

    compact = command("compact", "merge the index's segments into one, dropping deleted rows")
    compact.set_defaults(run=over_index.run_compact)

    rebuild = command(
        "rebuild",
        "make the embedded index again from the texts it stores (damaged segments); keeps the old folder",
    )
    rebuild.set_defaults(run=over_index.run_rebuild)

    migrate = command("migrate", "copy an embedded index into Qdrant (GROUNDQA_QDRANT_URL), vectors and all")
    migrate.add_argument("--to", choices=["qdrant"], required=True)
    migrate.add_argument("--batch", type=int, default=BATCH, help="documents per commit")
    migrate.set_defaults(run=over_index.run_migrate)

    mcp = command(
        "mcp", "serve the index to an MCP client over stdio (tools: ask, search, get_document, ...)"
    )
    mcp.set_defaults(run=run_mcp)


if __name__ == "__main__":
    sys.exit(main())
