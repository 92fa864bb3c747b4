"""The verifier (index/verify.py) on the shared SQuAD half, reproducibly:

    python -m groundqa.eval.verifier ../shared/data/squad/dev-v1.1-even-articles.json \
        --v2 ../shared/data/squad/dev-v2.0-even-articles.json --out reports/verifier

1. Swapped sentences. The answer-bearing sentence of each answerable question (its gold sentence,
   true) and the same sentence with a name or a number (dates are both) swapped for another of
   the same article that the sentence lacks (false). Each is checked against the 5 passages that
   hybrid search finds for it in an index of every article, as POST /v1/verify does: the share
   of false sentences flagged, of true ones kept, and whether a kept true sentence's citation
   covers where it stands.
2. With --llm URL, generation: questions of the shared half answered by that LLM (an
   OpenAI-compatible server: llama.cpp's with Gemma 3 270M here) through the service's own
   code: the share of reply sentences supported, of replies with one at least, the answer_hit of
   the kept sentences' citations beside the extractive answer's, and the latency, the LLM's apart.
3. With --v2, abstention: the confidence model's rows (eval/train_confidence.py), each with the
   verifier's signals of the question against the passages found for it added; SQuAD 2.0's AUROC
   and refusals, cross-validated by article, with and without them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from groundqa.eval import server
from groundqa.eval import train_confidence as tc
from groundqa.eval.data import Article, load_squad
from groundqa.eval.metrics import Located, covers
from groundqa.eval.runner import articles_input, index_all
from groundqa.index.config import prepare_process
from groundqa.index.index import Index
from groundqa.index.lexical import OPENERS, keys, terms, word_set
from groundqa.index.model import Embedder
from groundqa.index.progress import progress
from groundqa.index.text import sentences
from groundqa.index.verify import (
    Support,
    ended,
    judge,
    negated,
    repeats,
    verify_text,
)

SEED = 0
SENTENCES = 600  # true sentences sampled (each with its swapped twin)
K = 5
# The verifier's signals of a question, added to the confidence model's.
SIGNALS = ("verify_score", "verify_lost_keys", "verify_negation")


@dataclass(frozen=True)
class Pair:
    doc_id: str
    start: int
    end: int
    true: str
    swapped: str


def pairs(articles: list[Article], v1: Any, count: int, rng: random.Random) -> list[Pair]:
    """Gold sentences of answerable questions, each with a twin that swaps one name or number
    for another of its article's that the sentence lacks (the way eval/train_confidence.py makes
    unanswerable questions)."""
    texts = {a.doc_id: a.text for a in articles}
    seen, out = set(), []
    for q in v1.questions:
        text = texts.get(q.doc_id or "")
        if text is None or not q.spans:
            continue
        at = q.spans[0][0]
        span = next((s for s in sentences(text) if s.start <= at < s.end), None)
        if span is None or (q.doc_id, span.start) in seen:
            continue
        seen.add((q.doc_id, span.start))
        sentence = text[span.start : span.end]
        for pattern in rng.sample([tc.NAME, tc.NUMBER_PHRASE], 2):
            found = [m for m in pattern.finditer(sentence) if m.start() > 0]
            others = sorted(tc.phrases(pattern, text) - set(pattern.findall(sentence)))
            if found and others:
                chosen = rng.choice(found)
                swapped = sentence[: chosen.start()] + rng.choice(others) + sentence[chosen.end() :]
                out.append(Pair(q.doc_id or "", span.start, span.end, sentence, swapped))
                break
    return rng.sample(out, min(count, len(out)))


# The false sentences built from the true ones, besides a swapped name or number (see constructions).
KINDS = ("phrase_swapped", "clause_grafted", "roles_swapped", "title")


def constructions(articles: list[Article], v1: Any, count: int, rng: random.Random) -> dict[str, list[str]]:
    """False sentences of other kinds, each built from a gold sentence of an answerable question:
    its answer phrase (any kind of phrase) swapped for another question's answer of the same
    article that the sentence lacks; a clause of another paragraph grafted on with ", and";
    two of its names swapped (the roles exchanged); and an article's title alone."""
    texts = {a.doc_id: a.text for a in articles}
    answers: dict[str, set[str]] = {}
    for q in v1.questions:
        answers.setdefault(q.doc_id or "", set()).update([q.answer] if q.answer else [])
    made: dict[str, list[str]] = {kind: [] for kind in KINDS}
    made["title"] = [a.title for a in articles]
    seen = set()
    for q in v1.questions:
        text = texts.get(q.doc_id or "")
        if text is None or not q.spans or not q.answer:
            continue
        s, e = q.spans[0]
        span = next((x for x in sentences(text) if x.start <= s and e <= x.end), None)
        if span is None or (q.doc_id, span.start) in seen:
            continue
        seen.add((q.doc_id, span.start))
        sentence, at = text[span.start : span.end], s - span.start
        others = sorted(
            a
            for a in answers[q.doc_id or ""]
            if a.lower() not in sentence.lower() and q.answer.lower() not in a.lower()
        )
        if others:
            made["phrase_swapped"].append(sentence[:at] + rng.choice(others) + sentence[at + e - s :])
        far = [x for x in sentences(text) if abs(x.start - span.start) > 600 and x.end - x.start > 40]
        if far:
            other = rng.choice(far)
            clause = text[other.start : other.end].rstrip(" .!?")
            first = clause.split(" ", 1)[0]
            clause = clause if first.lower() not in OPENERS else clause[0].lower() + clause[1:]
            made["clause_grafted"].append(f"{sentence.rstrip(' .!?')}, and {clause}.")
        names = list(dict.fromkeys(m.group() for m in tc.NAME.finditer(sentence) if m.start() > 0))
        if len(names) >= 2:
            a, b = names[:2]
            swapped = sentence.replace(a, "\0").replace(b, a).replace("\0", b)
            if swapped != sentence:
                made["roles_swapped"].append(swapped)
    return {kind: rng.sample(found, min(count, len(found))) for kind, found in made.items()}


def construction_figures(index: Index, made: dict[str, list[str]]) -> dict[str, Any]:
    """The share of each kind of false sentence flagged, with a few of those that were not."""
    out: dict[str, Any] = {}
    for kind, found in made.items():
        missed = [text for text in progress(found, kind) if check(index, text).supported]
        out[kind] = {
            "sentences": len(found),
            "flagged": round(1 - len(missed) / max(len(found), 1), 4),
            "kept_examples": missed[:5],
        }
    return out


def check(index: Index, text: str) -> Support:
    return verify_text(index, text, k=K)[0]


def swapped_figures(index: Index, made: list[Pair]) -> dict[str, Any]:
    kept = flagged = cited = 0
    for pair in progress(made, "swapped sentences"):
        true, false = check(index, pair.true), check(index, pair.swapped)
        kept += true.supported
        flagged += not false.supported
        cited += bool(
            true.supported
            and true.doc_id == pair.doc_id
            and (true.start or 0) <= pair.start
            and pair.end <= (true.end or 0)
        )
    n = len(made)
    supported = kept + (n - flagged)
    return {
        "pairs": n,
        "swapped_flagged": round(flagged / n, 4),
        "true_kept": round(kept / n, 4),
        "precision_supported": round(kept / supported, 4) if supported else None,
        "recall_supported": round(kept / n, 4),
        "true_cited_where_it_stands": round(cited / max(kept, 1), 4),
    }


def question_signals(index: Index, question: str) -> np.ndarray:
    """The verifier's reading of a question against the passages found for it: the best
    span's support score, the share of the question's names and numbers that no single
    sentence of them holds, and whether negations differ."""
    found = index.search(question, K, "hybrid", min_confidence=0.0)
    spans = [h.passage.text[s.start : s.end] for h in found.hits for s in sentences(h.passage.text)]
    if not spans:
        return np.zeros(len(SIGNALS))
    vectors = index.embedder.embed([question, *spans])
    numbers, names = keys(question)
    wanted = numbers | names
    best_score, best_lost = 0.0, 1.0
    for span, cosine in zip(spans, vectors[1:] @ vectors[0], strict=True):
        score, _ = judge(question, span, float(cosine))
        lost = len(wanted - word_set(span)) / len(wanted) if wanted else 0.0
        best_score, best_lost = max(best_score, score), min(best_lost, lost)
    negation = float(bool(negated(question)) and not any(negated(s) for s in spans))
    return np.array([best_score, best_lost, negation])


def abstention(v1: Any, v2: Any, index: Index, embedder: Embedder, work: Path) -> dict[str, Any]:
    """Cross-validated figures of the confidence model with and without the verifier's signals."""

    def signals(found: Index, q: Any) -> tuple[np.ndarray, bool]:
        base, hit = tc.signals_of(found, q)
        return np.concatenate([base, question_signals(found, q.question)]), hit

    rows = tc.collect(v1, v2, v1.articles, work, embedder, index, synthetic=False, signals=signals)
    x, y, kind, doc = rows.arrays()
    width = x.shape[1] - len(SIGNALS)
    return {
        "rows": len(y),
        "without": tc.cross_validated(x[:, :width], y, kind, doc),
        "with": tc.cross_validated(x, y, kind, doc),
    }


def generation_figures(
    folder: Path, v1: Any, llm: str, model: str, count: int, rng: random.Random
) -> dict[str, Any]:
    """The questions asked of `groundqa serve` on the index folder, with "generate": true: what
    the kept sentences cite, and how many answers keep a sentence twice, a title or a cut-off
    sentence, or sentences with two content words that neither their span nor the question holds."""
    title_terms = [set(terms(a.title)) for a in v1.articles]

    def titles_of(text: str) -> set[str]:
        return next((t for t in title_terms if set(terms(text)) <= t), set())

    asked = rng.sample([q for q in v1.questions if q.spans], count)
    rows = []
    env = {
        "GROUNDQA_LLM_URL": llm,
        "GROUNDQA_LLM_MODEL": model,
        "GROUNDQA_LLM_TIMEOUT": "600",
        "GROUNDQA_WORKERS": "1",
    }
    with server.running(folder, env=env) as (_, url), httpx.Client(timeout=900) as client:
        for q in progress(asked, "generation"):
            began = time.perf_counter()
            body = client.post(f"{url}/v1/query", json={"question": q.question, "generate": True}).json()
            total = (time.perf_counter() - began) * 1000
            g, a = body["generated"], body["answer"]
            kept = g["sentences"] if g["fallback"] is None else []
            # What the person is shown: the written answer, or the extractive sentence in its place.
            cited = [s["citation"] for s in g["sentences"] if s["citation"]]
            texts = [s["text"] for s in kept]
            # The model's own sentences: the extractive sentence leading them is the article's.
            led = any("that sentence leads" in w for w in g["warnings"])
            written = [t for t in texts if not (led and a is not None and t == a["text"])]
            rows.append(
                {
                    "question": q.question,
                    "reply": g["text"] if g["fallback"] is None else None,
                    "unsupported": [s["text"] for s in g["unsupported"]],
                    "kept": len(kept),
                    # the model's own sentences kept (the extractive sentence may lead them)
                    "kept_written": len(kept) - led,
                    "dropped": len(g["unsupported"]),
                    "answered": g["llm_ms"] is not None,
                    "hit": any(_covers(c, q) for c in cited),
                    "extractive_hit": a is not None and _covers(a, q),
                    "llm_ms": g["llm_ms"],
                    "rest_ms": total - (g["llm_ms"] or 0.0),
                    "warnings": g["warnings"],
                    "kept_twice": len(set(texts)) < len(texts) or any(repeats(texts)),
                    "kept_title": any(set(terms(t)) <= titles_of(t) for t in texts),
                    "kept_cut": any(not ended(t) for t in written),
                    "kept_adding": sum(len(_added_words(s, q.question)) >= 2 for s in kept),
                    "kept_sentences": texts,
                }
            )
    answered = [r for r in rows if r["answered"]]
    said = sum(r["kept_written"] + r["dropped"] for r in answered)
    return {
        "questions": len(rows),
        "llm_answered": len(answered),
        "reply_sentences": said,
        "sentences_supported": round(sum(r["kept_written"] for r in answered) / said, 4) if said else None,
        "replies_with_a_supported_sentence": round(
            sum(r["kept_written"] > 0 for r in answered) / max(len(answered), 1), 4
        ),
        "answers_led_by_the_extractive_sentence": sum(r["kept"] > r["kept_written"] for r in rows),
        "answers_keeping_a_sentence_twice": sum(r["kept_twice"] for r in rows),
        "answers_keeping_a_title": sum(r["kept_title"] for r in rows),
        "answers_keeping_a_cut_sentence": sum(r["kept_cut"] for r in rows),
        "kept_sentences_adding_two_words": round(
            sum(r["kept_adding"] for r in rows) / max(sum(r["kept"] for r in rows), 1), 4
        ),
        "answer_hit_cited": round(sum(r["hit"] for r in rows) / len(rows), 4),
        "answer_hit_extractive": round(sum(r["extractive_hit"] for r in rows) / len(rows), 4),
        "llm_ms_p50": round(float(np.median([r["llm_ms"] for r in answered])), 1) if answered else None,
        "rest_ms_p50": round(float(np.median([r["rest_ms"] for r in rows])), 1),
        "examples": rows,
    }


def _added_words(sentence: dict[str, Any], question: str) -> set[str]:
    """The content words (stems) of a kept sentence that neither its cited span nor the question
    holds, read plainly (no word families, no free words): what an outside reader would count."""
    cited = (sentence["citation"] or {}).get("text") or ""
    return set(terms(sentence["text"])) - set(terms(cited)) - set(terms(question))


def _covers(span: dict[str, Any], q: Any) -> bool:
    return covers(Located(span["doc_id"], span["start"], span["end"]), q.doc_id or "", q.spans)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("v1", type=Path, help="SQuAD v1.1 file (the shared even half)")
    parser.add_argument(
        "--v2", type=Path, help="SQuAD v2.0 file of the same articles: also measure abstention"
    )
    parser.add_argument("--sentences", type=int, default=SENTENCES)
    parser.add_argument("--llm", help="an OpenAI-compatible base URL: also measure generation")
    parser.add_argument("--llm-model", default="default")
    parser.add_argument("--questions", type=int, default=60, help="questions answered by the LLM")
    parser.add_argument("--out", type=Path, default=Path("reports/verifier"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    prepare_process()
    return run(args, "python -m groundqa.eval.verifier " + " ".join(sys.argv[1:]))


def run(args: argparse.Namespace, command: str) -> int:
    """Measures and writes the report (groundqa eval verifier and python -m groundqa.eval.verifier)."""
    v1 = load_squad(args.v1)
    embedder = Embedder()
    report: dict[str, Any] = {"command": command}
    with tempfile.TemporaryDirectory(prefix="groundqa-verifier-") as folder:
        index = index_all(
            Index(Path(folder) / "all", embedder), articles_input(v1.articles), "index", batch=8
        )
        made = pairs(v1.articles, v1, args.sentences, random.Random(SEED))
        report["swapped"] = swapped_figures(index, made)
        print(json.dumps(report["swapped"], indent=1), flush=True)
        built = constructions(v1.articles, v1, args.sentences, random.Random(SEED))
        report["constructed"] = construction_figures(index, built)
        print(json.dumps(report["constructed"], indent=1, ensure_ascii=False), flush=True)
        if args.llm:
            index.close()
            made_at = Path(folder) / "all"
            report["generation"] = generation_figures(
                made_at, v1, args.llm, args.llm_model, args.questions, random.Random(SEED)
            )
            index = Index(made_at, embedder)
            print(
                json.dumps({k: v for k, v in report["generation"].items() if k != "examples"}, indent=1),
                flush=True,
            )
        if args.v2:
            report["abstention"] = abstention(v1, load_squad(args.v2), index, embedder, Path(folder))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    examples = [{"true": p.true, "swapped": p.swapped} for p in made[:20]]
    (args.out / "examples.json").write_text(json.dumps(examples, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
