"""Trains the confidence model (index/confidence.py) on the shared SQuAD half, reproducibly:

    python -m groundqa.eval.train_confidence ../shared/data/squad/dev-v1.1-even-articles.json \
        ../shared/data/squad/dev-v2.0-even-articles.json --out index/data/confidence.json

Every fourth article (positions 3, 7, 11, ...) is held out of training, for the figures the model
carries. Rows, each the signals of hybrid's answer sentence:
- answerable questions about indexed articles: 1 when the answer sentence holds a gold span;
- SQuAD 2.0's unanswerable questions, written against indexed paragraphs to look answerable: 0;
- questions about articles left out of the index (half of the training articles indexed, the
  other half's questions asked): 0;
- for training only, unanswerable questions made from answerable ones the way SQuAD 2.0's were
  written: a name or a number swapped for another of the same article that the gold paragraph
  lacks, or a negation added (synthesize()): 0.
The model is logistic regression with an L2 penalty, fitted by L-BFGS; the threshold is the
highest that still answers 97% of the answerable training questions whose answer is right.
The model also carries cross-validated figures (every article held out once, in 4 folds, twice
over): a single held-out split of six articles is too few to quote alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from groundqa.eval.data import Article, Dataset, Question, load_squad
from groundqa.eval.metrics import Located, auroc, covers
from groundqa.eval.runner import articles_input, index_all
from groundqa.index.confidence import SIGNALS, ConfidenceModel, expand
from groundqa.index.config import prepare_process
from groundqa.index.index import Index
from groundqa.index.model import Embedder
from groundqa.index.progress import progress

SEED = 0
HOLD_EVERY = 4  # articles at positions 3, 7, 11, ... are held out
L2 = 1.0
# Share of right answers the default threshold keeps: answer_hit may fall by 3 % at most.
KEEP = 0.97
OUTSIDE = 1500  # questions asked about articles left out of the index, per split
SYNTHETIC = 2000  # unanswerable twins of answerable training questions
FOLDS, REPEATS = 4, 2  # cross-validation by article


class Table(NamedTuple):
    x: np.ndarray  # signals
    y: np.ndarray  # labels
    kind: np.ndarray
    doc: np.ndarray


@dataclass
class Rows:
    x: list[np.ndarray]
    y: list[float]
    kind: list[str]  # answerable, unanswerable, synthetic, outside
    doc: list[str]  # the article the question was written about

    def add(self, signals: np.ndarray, label: float, kind: str, doc: str | None) -> None:
        self.x.append(signals)
        self.y.append(label)
        self.kind.append(kind)
        self.doc.append(doc or "")

    def arrays(self) -> Table:
        return Table(np.array(self.x), np.array(self.y), np.array(self.kind), np.array(self.doc))


def signals_of(index: Index, question: Question) -> tuple[np.ndarray, bool]:
    """Hybrid's answer sentence's signals (zeros when it gives none), and whether it holds a gold span."""
    result = index.search(question.question, k=5, mode="hybrid", min_confidence=0.0)
    a = result.answer
    if a is None:
        return np.zeros(len(SIGNALS)), False
    where = Located(a.passage.doc_id, a.span.start, a.span.end)
    return np.array(a.signals), bool(question.spans) and covers(where, question.doc_id or "", question.spans)


def build(folder: Path, embedder: Embedder, articles: list[Article]) -> Index:
    index = Index(folder, embedder, confidence=ConfidenceModel.neutral())
    return index_all(index, articles_input(articles), f"index {folder.name}", batch=8)


def collect(
    v1: Dataset,
    v2: Dataset,
    articles: list[Article],
    work: Path,
    embedder: Embedder,
    everything: Index,
    synthetic: bool,
    signals: Callable[[Index, Question], tuple[np.ndarray, bool]] = signals_of,
) -> Rows:
    """The rows of these articles' questions: in the index of every article, and outside one of
    half of them."""
    rows = Rows([], [], [], [])
    ids = {a.doc_id for a in articles}
    for q in progress([q for q in v1.questions if q.doc_id in ids], "answerable"):
        found, hit = signals(everything, q)
        rows.add(found, float(hit), "answerable", q.doc_id)
    for q in progress([q for q in v2.questions if q.doc_id in ids and not q.spans], "unanswerable"):
        rows.add(signals(everything, q)[0], 0.0, "unanswerable", q.doc_id)
    if synthetic:
        rng = random.Random(SEED)
        texts = {a.doc_id: a.text for a in articles}
        made = []
        for q in [q for q in v1.questions if q.doc_id in ids]:
            twin = synthesize(q, texts[q.doc_id or ""], rng)
            if twin is not None:
                made.append(Question(q.id + "-twin", twin, q.doc_id, []))
        for q in progress(rng.sample(made, min(SYNTHETIC, len(made))), "synthetic"):
            rows.add(signals(everything, q)[0], 0.0, "synthetic", q.doc_id)
    inside = articles[::2]
    outside_ids = {a.doc_id for a in articles[1::2]}
    half = build(work / f"half-{len(articles)}", embedder, inside)
    pool = [q for q in v1.questions if q.doc_id in outside_ids]
    asked = random.Random(SEED).sample(pool, min(OUTSIDE, len(pool)))
    for q in progress(asked, "outside"):
        rows.add(signals(half, q)[0], 0.0, "outside", q.doc_id)
    return rows


_AUXILIARY = re.compile(r"\b(is|was|are|were|did|does|do|can|could|has|had|have|will|would)\b", re.I)
NUMBER_PHRASE = re.compile(r"\b\d+(?:[.,]\d+)*\b")
_OPENERS = frozenset(
    "The A An In On At No It He She They This That These However After Before During".split()
)
NAME = re.compile(r"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)*\b")


def phrases(pattern: re.Pattern[str], text: str) -> set[str]:
    """The pattern's matches inside sentences (a capital after a full stop starts a sentence,
    not a name), less those that open with a common word."""
    return {
        m.group()
        for m in pattern.finditer(text)
        if m.start() > 1
        and text[m.start() - 2 : m.start()] not in (". ", "\n\n")
        and m.group().split()[0] not in _OPENERS
    }


def synthesize(question: Question, text: str, rng: random.Random) -> str | None:
    """An unanswerable twin of an answerable question: a name or number in it swapped for
    another of the article's that the gold paragraph lacks, else a negation added after its
    first auxiliary verb. None when none applies."""
    start = text.rfind("\n\n", 0, question.spans[0][0]) + 2
    end = text.find("\n\n", question.spans[0][1])
    paragraph = text[start : end if end >= 0 else len(text)]
    for pattern in (NAME, NUMBER_PHRASE):
        found = [m for m in pattern.finditer(question.question) if m.start() > 0]
        others = sorted(phrases(pattern, text) - phrases(pattern, paragraph))
        if found and others:
            chosen = rng.choice(found)
            return (
                question.question[: chosen.start()] + rng.choice(others) + question.question[chosen.end() :]
            )
    auxiliary = _AUXILIARY.search(question.question)
    if auxiliary is None:
        return None
    return question.question[: auxiliary.end()] + " not" + question.question[auxiliary.end() :]


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    features = expand(x)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    z = (features - mean) / scale

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        logits = z @ w + b
        p = 1 / (1 + np.exp(-logits))
        eps = 1e-12
        value = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)) + L2 / len(y) * (w @ w) / 2
        grad_w = z.T @ (p - y) / len(y) + L2 / len(y) * w
        return float(value), np.append(grad_w, np.mean(p - y))

    from scipy.optimize import minimize  # here: the CLI imports this module for its patterns

    found = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return mean, scale, found.x[:-1], float(found.x[-1])


def trained(x: np.ndarray, y: np.ndarray) -> ConfidenceModel:
    """The model fitted on these rows, with its threshold: the highest that keeps KEEP of the
    right answers."""
    mean, scale, weights, bias = fit(x, y)
    right = ConfidenceModel(mean, scale, weights, bias, 0.0, {}).probability(x)[y > 0]
    threshold = round(float(np.quantile(right, 1 - KEEP)), 3)
    return ConfidenceModel(mean, scale, weights, bias, threshold, {})


def cross_validated(x: np.ndarray, y: np.ndarray, kind: np.ndarray, doc: np.ndarray) -> dict[str, Any]:
    """The figures of models trained without a quarter of the articles, on that quarter's
    questions (synthesized twins left out), over FOLDS x REPEATS splits of the shuffled
    articles: mean, lowest and highest. One split's held-out articles can flatter: on the
    first model, their AUROC on SQuAD 2.0 was the best of the eight."""
    articles = sorted(set(doc))
    rng = np.random.default_rng(SEED)
    found: dict[str, list[float]] = {}
    for _ in range(REPEATS):
        order = rng.permutation(articles)
        for fold in range(FOLDS):
            out = np.isin(doc, order[fold::FOLDS])
            test = out & (kind != "synthetic")
            model = trained(x[~out], y[~out])
            for name, value in figures(model, x[test], y[test], kind[test]).items():
                if value is not None:
                    found.setdefault(name, []).append(value)
    return {
        "splits": f"{FOLDS} folds of the articles x {REPEATS} shuffles, seed {SEED}",
        **{
            name: {"mean": round(float(np.mean(v)), 4), "min": min(v), "max": max(v)}
            for name, v in found.items()
        },
    }


def figures(
    model: ConfidenceModel, x: np.ndarray, y: np.ndarray, kind: np.ndarray
) -> dict[str, float | None]:
    p = model.probability(x)
    answered = p >= model.threshold
    answerable = kind == "answerable"

    def mean(values: np.ndarray) -> float | None:  # None where these rows hold no such question
        return round(float(values.mean()), 4) if len(values) else None

    return {
        "answerable_answered": mean(answered[answerable]),
        "answer_hit_no_abstention": mean(y[answerable]),
        "answer_hit_with_abstention": mean((y * answered)[answerable]),
        "unanswerable_refused": mean(1 - answered[kind == "unanswerable"]),
        "outside_refused": mean(1 - answered[kind == "outside"]),
        "auroc_squad2": _round(auroc(p[kind != "outside"], answerable[kind != "outside"])),
        "auroc_outside": _round(auroc(p[kind != "unanswerable"], answerable[kind != "unanswerable"])),
        "auroc_right_answer": _round(auroc(p, y > 0)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("v1", type=Path, help="SQuAD v1.1 file (the shared even half)")
    parser.add_argument("v2", type=Path, help="SQuAD v2.0 file of the same articles")
    parser.add_argument("--out", type=Path, default=Path("index/data/confidence.json"))
    parser.add_argument(
        "--rows", type=Path, help="also save the rows (signals, labels, kinds, articles) as .npz"
    )
    args = parser.parse_args()
    prepare_process()
    v1, v2 = load_squad(args.v1), load_squad(args.v2)
    train = [a for i, a in enumerate(v1.articles) if i % HOLD_EVERY != HOLD_EVERY - 1]
    held = [a for i, a in enumerate(v1.articles) if i % HOLD_EVERY == HOLD_EVERY - 1]
    embedder = Embedder()
    with tempfile.TemporaryDirectory(prefix="groundqa-confidence-") as folder:
        work = Path(folder)
        everything = build(work / "all", embedder, v1.articles)
        rows = {
            "train": collect(v1, v2, train, work, embedder, everything, synthetic=True),
            "held": collect(v1, v2, held, work, embedder, everything, synthetic=False),
        }
    arrays = {split: r.arrays() for split, r in rows.items()}
    train_rows, held_rows = arrays["train"], arrays["held"]
    model = trained(train_rows.x, train_rows.y)
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (args.v1, args.v2)}
    about = {
        "command": "python -m groundqa.eval.train_confidence " + " ".join(sys.argv[1:]),
        "seed": SEED,
        "data_sha256": sha,
        "held_out_articles": [a.doc_id for a in held],
        "rows": {split: len(r.y) for split, r in rows.items()},
        "train": figures(model, train_rows.x, train_rows.y, train_rows.kind),
        "held_out": figures(model, held_rows.x, held_rows.y, held_rows.kind),
        "cross_validated": cross_validated(
            *(np.concatenate(parts) for parts in zip(train_rows, held_rows, strict=True))
        ),
    }
    model = dataclasses.replace(model, about=about)
    args.out.write_text(model.to_json() + "\n", encoding="utf-8")
    if args.rows:
        saved: dict[str, Any] = {
            f"{split}_{name}": a
            for split, found in arrays.items()
            for name, a in zip("xykd", found, strict=True)
        }
        np.savez(args.rows, **saved)
    print(json.dumps(about, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
