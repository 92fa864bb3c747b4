"""The groundqa command line: domain errors become one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from eval.runner import progress
from index.errors import GroundQAError
from index.index import check_query
from index.ranking import MODES
from service.articles import UsageError, add_article, article_files, read_article
from service.settings import Settings, get_settings, open_index

EXAMPLES = {
    "ingest": "example: groundqa ingest corpus/putin-china-visit.txt",
    "ask": 'example: groundqa ask "How long is the Power of Siberia 2 pipeline?" --json',
    "serve": "example: groundqa serve --port 8000  (HTTP writes need GROUNDQA_API_KEY set)",
    "docs": "example: groundqa docs",
    "rm": "example: groundqa rm putin-china-visit",
    "eval": "example: groundqa eval squad data.json --limit 200 --modes hybrid,dense",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = get_settings()
    if getattr(args, "index", None):
        settings.index_dir = Path(args.index)
    try:
        return int(args.run(args, settings) or 0)
    except GroundQAError as exc:
        print(f"groundqa: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("groundqa: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundqa",
        description="Grounded question answering over articles, with exact character offsets.",
        epilog='example: groundqa ingest corpus/ && groundqa ask "Who visited China?"',
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, epilog=EXAMPLES[name])
        sub.add_argument("--index", metavar="DIR", help="index folder (GROUNDQA_INDEX_DIR, var/index)")
        return sub

    ingest = command("ingest", "add .txt and .md files, or folders of them, to the index")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--title", help="title of the document (one file only)")
    ingest.add_argument("--doc-id", help="doc_id of the document (one file only)")
    ingest.set_defaults(run=run_ingest)

    ask = command("ask", "ask a question; prints the answer sentence and the best passages")
    ask.add_argument("question")
    ask.add_argument("-k", type=int, default=5, help="passages to return (1 to 50)")
    ask.add_argument("--mode", choices=MODES, default="hybrid")
    ask.add_argument("--json", action="store_true", help="print the QueryResponse as JSON")
    ask.add_argument("--url", help="ask a running server, e.g. http://127.0.0.1:8000")
    ask.set_defaults(run=run_ask)

    serve = command("serve", "serve the HTTP API and the chat page")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--seed", metavar="PATH", help="ingest PATH first when the index holds no document")
    serve.set_defaults(run=run_serve)

    docs = command("docs", "list the documents in the index")
    docs.set_defaults(run=run_docs)

    rm = command("rm", "delete a document from the index")
    rm.add_argument("doc_id")
    rm.set_defaults(run=run_rm)

    from eval.cli import add_eval_parser

    add_eval_parser(command("eval", "measure retrieval and answers on questions with gold spans"))
    return parser


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    files = article_files(args.paths)
    if (args.title or args.doc_id) and len(files) > 1:
        raise UsageError("--title and --doc-id name one document; give one file")
    texts = [(path, read_article(path)) for path in files]  # read all before writing any
    index = open_index(settings)
    counts = {"added": 0, "replaced": 0, "unchanged": 0}
    for path, text in progress(texts, "ingest", unit="doc"):
        added = add_article(index, path, text, args.title, args.doc_id)
        counts[added.state] += 1
        print(f"{added.document.doc_id}\t{added.document.passages} passages\t{added.state}")
    docs = index.documents()
    print(
        f"{len(texts)} files: {counts['added']} added, {counts['replaced']} replaced, "
        f"{counts['unchanged']} unchanged; the index holds {len(docs)} documents, "
        f"{sum(d.passages for d in docs)} passages"
    )
    return 0


def run_ask(args: argparse.Namespace, settings: Settings) -> int:
    if args.url:
        response = ask_url(args.url, args.question, args.k, args.mode)
    else:
        check_query(args.question.strip(), args.k, args.mode)  # before the model loads
        response = open_index(settings).search(args.question, args.k, args.mode).as_json()
    if args.json:
        print(json.dumps(response, ensure_ascii=False, indent=2))
    else:
        print(format_response(response))
    return 0


def ask_url(url: str, question: str, k: int, mode: str) -> dict[str, Any]:
    import httpx

    try:
        reply = httpx.post(
            url.rstrip("/") + "/v1/query", json={"question": question, "k": k, "mode": mode}, timeout=60
        )
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {url}: {exc}") from exc
    if reply.status_code != 200:
        raise UsageError(f"{url} answered {reply.status_code}: {_detail(reply)}")
    result: dict[str, Any] = reply.json()
    return result


def _detail(reply: Any) -> str:
    try:
        return str(reply.json().get("detail"))
    except ValueError:
        return reply.text[:200]


def format_response(r: dict[str, Any]) -> str:
    lines = []
    a = r["answer"]
    if a is None:
        lines.append("No answer: nothing relevant was found.")
    else:
        lines.append(f"Answer: {a['text']}")
        lines.append(f"        {a['doc_id']} [{a['start']}:{a['end']}]")
    for p in r["passages"]:
        excerpt = " ".join(p["text"].split())
        excerpt = excerpt if len(excerpt) <= 160 else excerpt[:157] + "..."
        lines.append(f"\n{p['rank']}. {p['doc_id']} [{p['start']}:{p['end']}] score {p['score']:.3f}")
        lines.append(f"   {excerpt}")
    lines.append(f"\n({r['took_ms']} ms, {r['mode']})")
    return "\n".join(lines)


def run_docs(args: argparse.Namespace, settings: Settings) -> int:
    docs = open_index(settings).documents()
    for d in docs:
        print(f"{d.doc_id}\t{d.passages} passages\t{d.chars} chars\t{d.created_at}\t{d.title}")
    print(f"{len(docs)} documents")
    return 0


def run_rm(args: argparse.Namespace, settings: Settings) -> int:
    open_index(settings).delete(args.doc_id)
    print(f"deleted {args.doc_id}")
    return 0


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.app import create_app

    settings.host = args.host or settings.host
    settings.port = args.port or settings.port
    seed = article_files([args.seed]) if args.seed else []
    app = create_app(settings, seed=[(p, read_article(p)) for p in seed])
    print(
        f"groundqa: serving {settings.index_dir} on http://{settings.host}:{settings.port}", file=sys.stderr
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=os.environ.get("GROUNDQA_LOG", "info"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
