"""groundqa eval squad | questions: build or reach an index, ask, score, write the report."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from eval import report
from eval.data import DataError, Dataset, check_spans, load_questions, load_squad, sample
from eval.metrics import summarize
from eval.runner import Ask, ask_index, evaluate, progress
from index.index import Index
from index.ranking import MODES
from index.text import count_tokens


def add_eval_parser(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(required=True, metavar="SET")
    squad = kinds.add_parser(
        "squad",
        help="a SQuAD v1.1 file: index its articles afresh, ask its questions",
        epilog="example: groundqa eval squad dev.json --limit 1500 --seed 0 --modes hybrid,dense,lexical",
    )
    squad.add_argument("file", type=Path)
    squad.add_argument("--limit", type=int, help="ask N questions, sampled with --seed")
    squad.add_argument("--seed", type=int, default=0)
    squad.add_argument("--peer", choices=["txtai"], help="also score txtai over the same passages")
    squad.set_defaults(run=run_squad)
    questions = kinds.add_parser(
        "questions",
        help="a JSONL question set with gold spans, against --index or a running --url",
        epilog="example: groundqa eval questions eval/questions/putin-china-visit.jsonl --url http://127.0.0.1:8000",
    )
    questions.add_argument("file", type=Path)
    questions.add_argument("--url", help="ask a running server over HTTP instead of --index")
    questions.set_defaults(run=run_questions)
    for sub in (squad, questions):
        sub.add_argument("--modes", default=None, help="comma-separated: hybrid,dense,lexical")
        sub.add_argument("--out", type=Path, help="report folder (default reports/<set name>)")
        sub.add_argument("--index", metavar="DIR", help=argparse.SUPPRESS)


def parse_modes(text: str | None, default: str) -> list[str]:
    modes = [m.strip() for m in (text or default).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise DataError(f"unknown mode {', '.join(unknown) or '(none)'}; use some of {','.join(MODES)}")
    return modes


def run_squad(args: argparse.Namespace, settings: Any) -> int:
    from service.settings import load_embedder

    modes = parse_modes(args.modes, ",".join(MODES))
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit is {args.limit}; give a positive number")
    dataset = load_squad(args.file)
    questions = sample(dataset.questions, args.limit, args.seed)
    embedder = load_embedder(settings.model)
    with tempfile.TemporaryDirectory(prefix="groundqa-eval-") as folder:
        index = Index(folder, embedder)
        for article in progress(dataset.articles, "index"):
            index.add(article.text, title=article.title, doc_id=article.doc_id)
        results = evaluate(questions, modes, ask_index(index))
        summaries: dict[str, dict[str, float | None]] = {m: dict(summarize(o)) for m, o in results.items()}
        if args.peer:
            from eval.peer import PEER_MODES, TxtaiPeer

            peer = TxtaiPeer(_model_dir(embedder), index.snapshot.rows.passages)
            for mode, outcomes in evaluate(questions, list(PEER_MODES), peer.ask).items():
                summaries[mode] = {**summarize(outcomes), "answer_hit": None, "answer_chars_mean": None}
        extra = {"seed": args.seed, "limit": args.limit, "peer": args.peer}
        return _finish(args, dataset, len(questions), index, summaries, extra)


def run_questions(args: argparse.Namespace, settings: Any) -> int:
    modes = parse_modes(args.modes, "hybrid")
    dataset = load_questions(args.file)
    index: Index | None = None
    if args.url:
        ask, texts = _remote(args.url)
    else:
        from service.settings import open_index

        if not Path(settings.index_dir).exists():
            raise DataError(f"no index at {settings.index_dir}; ingest documents first or give --index")
        index = open_index(settings)
        ask = ask_index(index)
        texts = dict(index.snapshot.rows.texts)
    default_doc = next(iter(texts)) if len(texts) == 1 else None
    if default_doc is None and any(q.doc_id is None for q in dataset.questions):
        raise DataError("questions without doc_id need an index that holds exactly one document")
    resolved = [dataclasses.replace(q, doc_id=q.doc_id or default_doc) for q in dataset.questions]
    check_spans(Dataset(dataset.name, resolved), texts)
    results = evaluate(resolved, modes, ask)
    summaries = {mode: summarize(outcomes) for mode, outcomes in results.items()}
    return _finish(args, dataset, len(resolved), index, summaries, {"url": args.url})


def _remote(url: str) -> tuple[Ask, dict[str, str]]:
    import httpx

    client = httpx.Client(base_url=url.rstrip("/"), timeout=60)
    try:
        listing = client.get("/v1/documents").raise_for_status().json()
        texts = {
            d["doc_id"]: client.get(f"/v1/documents/{d['doc_id']}").json()["text"]
            for d in listing["documents"]
        }
    except httpx.HTTPError as exc:
        raise DataError(f"cannot read the documents of {url}: {exc}") from exc

    def ask(question: str, k: int, mode: str) -> dict[str, Any]:
        reply = client.post("/v1/query", json={"question": question, "k": k, "mode": mode})
        if reply.status_code != 200:
            raise DataError(f"{url} answered {reply.status_code} to {question!r}: {reply.text[:200]}")
        result: dict[str, Any] = reply.json()
        return result

    return ask, texts


def _model_dir(embedder: Any) -> Path:
    from index.model import DEFAULT_MODEL, bundled_model_dir

    name = embedder.info.name
    return bundled_model_dir() if name == DEFAULT_MODEL else Path(name)


def _finish(
    args: argparse.Namespace,
    dataset: Dataset,
    asked: int,
    index: Index | None,
    summaries: dict[str, Any],
    extra: dict[str, Any],
) -> int:
    settings: dict[str, Any] = {"k": 20}
    tokens = None
    if index is not None:
        passages = index.snapshot.rows.passages
        tokens = round(sum(count_tokens(p.text) for p in passages) / max(len(passages), 1), 1)
        settings.update(
            model=index.embedder.info.name,
            chunking=dataclasses.asdict(index.chunking),
            ranking=dataclasses.asdict(index.ranking),
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
    out = args.out or Path("reports") / dataset.name
    paths = report.write(out, result)
    print(report.markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
