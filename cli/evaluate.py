"""groundqa eval squad | questions: build or reach an index, ask, score, write the report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shlex
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from groundqa.cli.client import Client
from groundqa.eval import answers, compare, followups, report, server, verifier
from groundqa.eval.data import DataError, Dataset, Question, check_spans, load_questions, load_squad, sample
from groundqa.eval.metrics import KS, curves, summarize
from groundqa.eval.runner import Ask, articles_input, ask_index, evaluate, index_all, reply_of_json
from groundqa.index.config import IndexSettings, embedder_of, open_index
from groundqa.index.index import Index
from groundqa.index.model import Embedder, bundled_model_dir
from groundqa.index.ranking import DEFAULT_MODE, MODES
from groundqa.index.text import count_tokens

EXAMPLE = "example: groundqa eval squad data.json --limit 200 --modes hybrid,dense"
# Articles per commit when building an evaluation index.
BATCH = 32


def add_parser(commands: Any) -> None:
    """The `eval` command and its question sets."""
    help = "measure retrieval and answers on questions with gold spans"
    parser = commands.add_parser("eval", help=help, description=help, epilog=EXAMPLE)
    kinds = parser.add_subparsers(required=True, metavar="SET")
    squad = kinds.add_parser(
        "squad",
        help="a SQuAD v1.1 or v2.0 file: index its articles afresh, ask its questions "
        "(v2.0's unanswerable ones too)",
        epilog="example: groundqa eval squad dev.json --limit 1500 --seed 0 --modes hybrid,dense,lexical",
    )
    squad.add_argument("file", type=Path)
    squad.add_argument("--limit", type=int, help="ask N questions, sampled with --seed")
    squad.add_argument("--seed", type=int, default=0)
    squad.add_argument("--peer", choices=["txtai"], help="also score txtai over the same passages")
    squad.add_argument(
        "--leave-out",
        type=int,
        default=0,
        metavar="N",
        help="leave N articles (chosen with --seed) out of the index and ask their questions: "
        "the share refused is refused_outside",
    )
    squad.set_defaults(run=run_squad)
    questions = kinds.add_parser(
        "questions",
        help="a CSV of questions and the answers expected (columns question,answer, optional doc_id, "
        "id), or JSONL with answer text or gold spans, against --index or a running --url",
        epilog='example: groundqa eval questions "my questions.csv" --url http://127.0.0.1:8000',
    )
    questions.add_argument("file", type=Path)
    questions.add_argument("--url", help="ask a running server over HTTP instead of --index")
    questions.set_defaults(run=run_questions)
    talks = kinds.add_parser(
        "conversations",
        help="a JSONL set of conversations with gold spans for the last question: asked standalone, "
        "as a follow-up alone, with its history, and after an unrelated history",
        epilog="example: groundqa eval conversations eval/conversations/squad-even.jsonl "
        "--articles ../shared/data/squad/dev-v1.1-even-articles.json",
    )
    talks.add_argument("file", type=Path)
    talks.add_argument("--articles", type=Path, help="a SQuAD file whose articles are indexed afresh")
    talks.add_argument("--url", help="ask a running server over HTTP instead of --index")
    talks.add_argument("--mode", choices=MODES, default=DEFAULT_MODE)
    talks.add_argument(
        "--openai",
        action="store_true",
        help="also ask each follow-up through the OpenAI-compatible route (of --url, or of a "
        "groundqa serve started on the index) and count the replies whose citations hold the answer",
    )
    talks.add_argument("--out", type=Path, help="report folder (default reports/conversations-<set name>)")
    talks.add_argument("--index", metavar="DIR", help=argparse.SUPPRESS)
    talks.set_defaults(run=run_conversations)
    _add_compare_and_verifier(kinds)
    for sub in (squad, questions):
        sub.add_argument("--modes", default=None, help="comma-separated: hybrid,dense,lexical")
        sub.add_argument("--out", type=Path, help="report folder (default reports/<set name>)")
        sub.add_argument("--index", metavar="DIR", help=argparse.SUPPRESS)


def _add_compare_and_verifier(kinds: Any) -> None:
    """`eval compare` (two reports) and `eval verifier` (the verifier's measurement)."""
    compare = kinds.add_parser(
        "compare",
        help="two reports side by side (folders or report.json): each figure, B - A with a 95%% "
        "bootstrap interval, and the questions that went from hit to miss and back",
        epilog="example: groundqa eval compare reports/before reports/after --html compare.html",
    )
    compare.add_argument("a", type=Path, metavar="A")
    compare.add_argument("b", type=Path, metavar="B")
    compare.add_argument(
        "--metric",
        choices=[f"hit@{k}" for k in KS] + ["answer_hit"],
        default="hit@5",
        help="what a hit is when listing the questions that changed (default hit@5)",
    )
    compare.add_argument("--html", type=Path, metavar="FILE", help="also write the comparison as a page")
    compare.set_defaults(run=run_compare)
    checks = kinds.add_parser(
        "verifier",
        help="the verifier on a SQuAD file: false sentences of each kind flagged, true ones kept; "
        "with --llm, written answers through that LLM",
        epilog="example: groundqa eval verifier ../shared/data/squad/dev-v1.1-even-articles.json "
        "--llm http://127.0.0.1:8081/v1 --questions 60",
    )
    verifier.add_arguments(checks)
    checks.set_defaults(run=lambda args, settings: verifier.run(args, "groundqa " + shlex.join(sys.argv[1:])))


def parse_modes(text: str | None, default: str) -> list[str]:
    modes = [m.strip() for m in (text or default).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise DataError(f"unknown mode {', '.join(unknown) or '(none)'}; use some of {','.join(MODES)}")
    return modes


def run_squad(args: argparse.Namespace, settings: IndexSettings) -> int:
    modes = parse_modes(args.modes, ",".join(MODES))
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit is {args.limit}; give a positive number")
    dataset = load_squad(args.file)
    questions = sample(dataset.questions, args.limit, args.seed)
    embedder = embedder_of(settings)
    with tempfile.TemporaryDirectory(prefix="groundqa-eval-") as folder:
        # With GROUNDQA_QDRANT_URL, the index is built in Qdrant, in collections of its own.
        own = settings.model_copy(
            update={
                "index_dir": Path(folder),
                "qdrant_prefix": f"{settings.qdrant_prefix}_eval_{uuid.uuid4().hex[:8]}",
            }
        )
        index = Index(own.location(), embedder)
        try:
            where = own.where() if settings.qdrant_url else "embedded, in a temporary folder"
            return _squad(args, dataset, questions, index, modes, embedder, where)
        finally:
            index.storage.drop()


def _squad(
    args: argparse.Namespace,
    dataset: Dataset,
    questions: list[Question],
    index: Index,
    modes: list[str],
    embedder: Embedder,
    where: str,
) -> int:
    if not 0 <= args.leave_out < len(dataset.articles):
        raise DataError(f"--leave-out is {args.leave_out}; the file has {len(dataset.articles)} articles")
    left = set(random.Random(args.seed).sample([a.doc_id for a in dataset.articles], args.leave_out))
    articles = [a for a in dataset.articles if a.doc_id not in left]
    index_all(index, articles_input(articles))
    ask = ask_index(index)
    results = evaluate(questions, modes, ask, floor=index.min_confidence, outside=frozenset(left))
    summaries: dict[str, dict[str, float | None]] = {m: dict(summarize(o)) for m, o in results.items()}
    extra_curves = {m: c for m, o in results.items() if (c := curves(o)) is not None}
    if args.peer:
        from groundqa.eval.peer import PEER_MODES, TxtaiPeer

        peer = TxtaiPeer(_model_dir(embedder), list(index.passages()))
        for mode, outcomes in evaluate(questions, list(PEER_MODES), peer.ask).items():
            summaries[mode] = {**summarize(outcomes), "answer_hit": None, "answer_chars_mean": None}
    extra = {
        "seed": args.seed,
        "limit": args.limit,
        "peer": args.peer,
        "index": where,
        "left_out": sorted(left) or None,
    }
    details = report.per_question(questions, results, {a.doc_id: a.text for a in dataset.articles})
    return _finish(args, dataset, len(questions), index, summaries, extra, extra_curves, None, details)


def run_questions(args: argparse.Namespace, settings: IndexSettings) -> int:
    modes = parse_modes(args.modes, DEFAULT_MODE)
    dataset = load_questions(args.file)
    index: Index | None = None
    if args.url:
        ask, texts, formats, floor = _remote(args.url)
    else:
        if not settings.qdrant_url and not Path(settings.index_dir).exists():
            raise DataError(f"no index at {settings.index_dir}; ingest documents first or give --index")
        index = open_index(settings)
        ask = ask_index(index)
        docs = index.documents()
        texts = {d.doc_id: index.document(d.doc_id)[1] for d in docs}
        formats = {d.doc_id: d.format for d in docs}
        floor = index.min_confidence
    default_doc = next(iter(texts)) if len(texts) == 1 else None
    if default_doc is None and any(q.doc_id is None and not q.answer_only for q in dataset.questions):
        raise DataError("questions with spans and no doc_id need an index that holds exactly one document")
    given = [dataclasses.replace(q, doc_id=q.doc_id or default_doc) for q in dataset.questions]
    found = answers.resolve(given, texts)
    for q in found.unfound:
        print(
            f"question {q.id}: its answer {q.answer!r} is in no document; left out of the scores",
            file=sys.stderr,
        )
    if not found.questions:
        raise DataError(f"{args.file}: no question's answer was found in the documents")
    resolved = found.questions
    check_spans(Dataset(dataset.name, resolved), texts)
    results = evaluate(resolved, modes, ask, floor=floor)
    summaries = {mode: summarize(outcomes) for mode, outcomes in results.items()}
    plotted = {m: c for m, o in results.items() if (c := curves(o)) is not None}
    # The same figures for the questions on each format's documents (web pages, PDFs, ...).
    kind_of = [formats[q.doc_id or ""] for q in resolved]
    by_format = {
        kind: {
            mode: summarize([o for k, o in zip(kind_of, outcomes, strict=True) if k == kind])
            for mode, outcomes in results.items()
        }
        for kind in sorted(set(kind_of))
    }
    extra = {"url": args.url, "min_confidence": floor}
    details = report.per_question(resolved, results, texts)
    if any(q.answer_only for q in dataset.questions):
        details["answers"] = {
            **found.matched,
            "unfound": [{"id": q.id, "question": q.question, "answer": q.answer} for q in found.unfound],
            "ambiguous": found.ambiguous,
        }
    return _finish(args, dataset, len(resolved), index, summaries, extra, plotted, by_format, details)


def run_compare(args: argparse.Namespace, settings: IndexSettings) -> int:
    a, b = compare.load(args.a), compare.load(args.b)
    found, changed = compare.rows(a, b), compare.flips(a, b, args.metric)
    print(compare.text(str(args.a), str(args.b), found, changed, args.metric), end="")
    if args.html:
        args.html.write_text(
            compare.page(str(args.a), str(args.b), found, changed, args.metric), encoding="utf-8"
        )
        print(f"wrote {args.html}")
    return 0


def run_conversations(args: argparse.Namespace, settings: IndexSettings) -> int:
    found = followups.load(args.file)
    if args.url:
        client = Client(args.url)
        texts = {d["doc_id"]: client.text(d["doc_id"]) for d in client.documents()}
        followups.check(found, texts)
        ask = followups.ask_remote(client.query, args.mode)
        return _conversations(args, found, texts, ask, float(client.limits()["min_confidence"]), None)
    if args.articles is None:
        if not settings.qdrant_url and not Path(settings.index_dir).exists():
            raise DataError(f"no index at {settings.index_dir}; give --articles, --index or --url")
        index = open_index(settings)
        texts = {d.doc_id: index.document(d.doc_id)[1] for d in index.documents()}
        followups.check(found, texts)
        ask = followups.ask_index(index, args.mode)
        return _conversations(
            args, found, texts, ask, index.min_confidence, Path(settings.index_dir).resolve()
        )
    articles = load_squad(args.articles).articles
    texts = {a.doc_id: a.text for a in articles}
    followups.check(found, texts)
    with tempfile.TemporaryDirectory(prefix="groundqa-eval-") as folder:
        index = Index(IndexSettings(index_dir=Path(folder)).location(), embedder_of(settings))
        try:
            index_all(index, articles_input(articles))
            ask = followups.ask_index(index, args.mode)
            return _conversations(args, found, texts, ask, index.min_confidence, Path(folder))
        finally:
            index.close()


def _conversations(
    args: argparse.Namespace,
    found: list[followups.Conversation],
    texts: dict[str, str],
    ask: followups.AskWith,
    floor: float,
    index_dir: Path | None,
) -> int:
    """index_dir: the embedded index a server is started on for --openai (None: --url's)."""
    outcomes = followups.evaluate(found, ask, floor)
    result = followups.summary(found, outcomes)
    if args.openai:
        result["openai_citations_hold"] = _over_openai(found, args.url, index_dir)
    command = "groundqa " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result |= {"set": args.file.stem, "mode": args.mode, "command": command}
    result |= report.per_question(followups.golds(found), outcomes, texts)
    out = args.out or Path("reports") / f"conversations-{args.file.stem}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    text = followups.markdown(args.file.stem, command, result)
    (out / "report.md").write_text(text)
    report.plot(result, out / "hit_at_k.png")
    page = report.write_html(out, result, [out / "hit_at_k.png"])
    print(text)
    print(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'hit_at_k.png'}, {page}")
    return 0


def _over_openai(found: list[followups.Conversation], url: str | None, index_dir: Path | None) -> Any:
    if url:
        return followups.openai_citations(found, url)
    if index_dir is None:
        raise DataError("--openai needs --url, or an embedded index to serve")
    process, started = server.serve(index_dir, "--workers", "1")
    try:
        server.wait_ready(started, process)
        return followups.openai_citations(found, started)
    finally:
        process.terminate()
        process.wait(timeout=60)


def _remote(url: str) -> tuple[Ask, dict[str, str], dict[str, str], float]:
    """Asks a running server with min_confidence 0, as ask_index does an index, and gives the
    texts, the documents' formats and the server's own confidence floor."""
    client = Client(url)
    docs = client.documents()
    texts = {d["doc_id"]: client.text(d["doc_id"]) for d in docs}
    formats = {d["doc_id"]: str(d.get("format", "text")) for d in docs}
    floor = float(client.limits()["min_confidence"])
    ask: Ask = lambda question, k, mode: reply_of_json(client.query(question, k, mode, 0.0))  # noqa: E731
    return ask, texts, formats, floor


def _model_dir(embedder: Embedder) -> Path:
    return embedder.model_dir or bundled_model_dir()


def _finish(
    args: argparse.Namespace,
    dataset: Dataset,
    asked: int,
    index: Index | None,
    summaries: dict[str, Any],
    extra: dict[str, Any],
    found_curves: dict[str, Any] | None = None,
    by_format: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    settings: dict[str, Any] = {"k": 20}
    tokens = None
    if index is not None:
        passages = list(index.passages())
        tokens = round(sum(count_tokens(p.text) for p in passages) / max(len(passages), 1), 1)
        settings.update(
            model=index.embedder.info.name,
            runtime=index.embedder.runtime,
            chunking=dataclasses.asdict(index.chunking),
            ranking=dataclasses.asdict(index.ranking),
            min_confidence=index.min_confidence,
        )
    settings.update({k: v for k, v in extra.items() if v is not None})
    result = {
        "dataset": dataset.name,
        "questions": asked,
        "passage_tokens_mean": tokens,
        "modes": summaries,
        "settings": settings,
        "command": "groundqa " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }
    if by_format:
        result["by_format"] = by_format
    if found_curves:
        result["curves"] = found_curves
    result |= details or {}
    out = args.out or Path("reports") / dataset.name
    paths = report.write(out, result)
    print(report.markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
