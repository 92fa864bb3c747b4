"""Quality regression tests: real questions, real model, floors a little under the measured figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from groundqa.eval.data import load_questions, load_squad, sample
from groundqa.eval.metrics import summarize
from groundqa.eval.runner import ask_index, evaluate
from groundqa.index.index import Index
from groundqa.index.model import Embedder
from tests.conftest import ARTICLE, ROOT, SQUAD_SLICE, SquadSlice

QUESTIONS = ROOT / "eval" / "questions" / "putin-china-visit.jsonl"

pytestmark = pytest.mark.slow


def test_bundled_article_questions(make_index) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    index.add(ARTICLE.read_text(encoding="utf-8"), doc_id="putin-china-visit")
    questions = load_questions(QUESTIONS).questions
    summary = summarize(evaluate(questions, ["hybrid"], ask_index(index), "putin-china-visit")["hybrid"])
    assert summary["hit@5"] == 1.0, summary
    assert summary["answer_hit"] >= 0.9, summary  # measured 0.95


def test_squad_sample(squad_slice: SquadSlice, embedder: Embedder, tmp_path: Path) -> None:
    """Four whole articles (the shipped slice) and 300 of their questions, fixed by the seed; on
    a copy of the session's slice index (embedding it again took 40 s of the suite)."""
    dataset = load_squad(SQUAD_SLICE)
    articles = dataset.articles[:4]
    shutil.copytree(squad_slice.index.where.folder, tmp_path / "index")
    index = Index(tmp_path / "index", embedder)
    ours = {a.doc_id for a in articles}
    questions = sample([q for q in dataset.questions if q.doc_id in ours], 300, seed=0)
    summary = summarize(evaluate(questions, ["hybrid"], ask_index(index))["hybrid"])
    print(summary)
    assert summary["hit@1"] >= FLOORS["hit@1"], summary
    assert summary["hit@5"] >= FLOORS["hit@5"], summary
    assert summary["mrr@10"] >= FLOORS["mrr@10"], summary
    assert summary["answer_hit"] >= FLOORS["answer_hit"], summary

    # On the same index, with the floors above held: an identifier found in one document only
    # (a part number) ranks that document first in hybrid mode, whatever the rest of the question
    # is about (round 2, defect 8: it fell out of the top 20 under "Martin Luther").
    index.add(
        "Warehouse notes. Shelf B holds the spare gaskets. The catalogue code of the blue pump is "
        "zqt7x7w; order it from the Leeds depot. Shelf C holds the filters.",
        doc_id="store",
    )
    for question in ("Martin Luther zqt7x7w", "Who won Super Bowl 50? zqt7x7w", "What is zqt7x7w?"):
        top = [h.passage.doc_id for h in index.search(question, k=3).hits]
        assert "store" in top, (question, top)


# Measured on this sample: hit@1 0.797, hit@5 0.977, MRR@10 0.874, answer_hit 0.753; floors sit
# about 2 points under, so a real regression fails and noise does not.
FLOORS = {"hit@1": 0.775, "hit@5": 0.955, "mrr@10": 0.855, "answer_hit": 0.73}
