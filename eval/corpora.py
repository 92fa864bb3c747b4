"""One confidence threshold on corpora of every size: the share of questions answered about what an
index holds, and the share refused about what it does not, with the default GROUNDQA_MIN_CONFIDENCE.

    python -m groundqa.eval.corpora ../shared/data/squad/dev-v1.1-even-articles.json \
        --article corpus/putin-china-visit.txt --out reports/abstention-corpora

Corpora: the bundled article alone (its 40 questions; refused: SQuAD questions), the SQuAD half's
articles with every fourth article left out (its questions refused), each SQuAD paragraph as a
document of its own (the paragraphs of the articles kept: 719 documents), and every two sentences
of those paragraphs as a document (1,991 documents).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from groundqa.eval.data import Question, load_questions, load_squad
from groundqa.eval.runner import articles_input, index_all
from groundqa.index.config import prepare_process
from groundqa.index.index import DocumentInput, Index
from groundqa.index.model import Embedder
from groundqa.index.progress import progress
from groundqa.index.text import sentences

QUESTIONS = Path(__file__).resolve().parent / "questions" / "putin-china-visit.jsonl"
ASKED = 400  # questions of each kind per corpus, sampled with seed 0


def shares(index: Index, inside: list[Question], outside: list[Question]) -> dict[str, float | int]:
    """Answered share of the questions about the index's documents, refused share of the others."""
    answered = [index.search(q.question).answer is not None for q in progress(inside, "inside")]
    refused = [index.search(q.question).answer is None for q in progress(outside, "outside")]
    return {
        "documents": index.counts()[0],
        "passages": index.counts()[1],
        "asked_inside": len(inside),
        "answered_inside": round(sum(answered) / len(answered), 4),
        "asked_outside": len(outside),
        "refused_outside": round(sum(refused) / len(refused), 4),
    }


def sentence_pairs(paragraphs: list[DocumentInput]) -> list[DocumentInput]:
    """Each paragraph cut into documents of two sentences (the last may have one)."""
    out = []
    for p in paragraphs:
        spans = sentences(p.text)
        for n in range(0, len(spans), 2):
            text = p.text[spans[n].start : spans[min(n + 1, len(spans) - 1)].end]
            out.append(DocumentInput(text, p.title, f"{p.doc_id}-{n // 2}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad", type=Path, help="the shared SQuAD v1.1 half")
    parser.add_argument(
        "--article", type=Path, required=True, help="the bundled article (corpus/putin-china-visit.txt)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/abstention-corpora"))
    args = parser.parse_args()
    prepare_process()
    rng = random.Random(0)
    data = load_squad(args.squad)
    left = {a.doc_id for i, a in enumerate(data.articles) if i % 4 == 3}
    inside = rng.sample([q for q in data.questions if q.doc_id not in left], ASKED)
    outside = rng.sample([q for q in data.questions if q.doc_id in left], ASKED)
    embedder = Embedder()
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="groundqa-corpora-") as folder:
        one = Index(Path(folder) / "one", embedder)
        one.add(args.article.read_text(encoding="utf-8"), doc_id="putin-china-visit")
        out["the bundled article"] = shares(one, load_questions(QUESTIONS).questions, outside)
        out["min_confidence"] = one.min_confidence
        kept = [a for a in data.articles if a.doc_id not in left]
        articles = index_all(Index(Path(folder) / "articles", embedder), articles_input(kept), "articles", 8)
        out["SQuAD articles"] = shares(articles, inside, outside)
        docs = [
            DocumentInput(text, a.title, f"{a.doc_id}-{n}")
            for a in kept
            for n, text in enumerate(a.text.split("\n\n"))
        ]
        paragraphs = index_all(Index(Path(folder) / "paragraphs", embedder), docs, "paragraphs", 64)
        out["SQuAD paragraphs as documents"] = shares(paragraphs, inside, outside)
        pairs = index_all(Index(Path(folder) / "pairs", embedder), sentence_pairs(docs), "pairs", 64)
        out["every two sentences as a document"] = shares(pairs, inside, outside)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
