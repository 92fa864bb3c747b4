"""Abstention: a calibrated confidence on every answer, the answer left out under the floor, the
same over HTTP and in the CLI, and the evaluation that measures it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from groundqa.eval.metrics import auroc, calibration, risk_coverage
from groundqa.eval.train_confidence import cross_validated
from groundqa.index.confidence import SIGNALS, ConfidenceModel, bundled, text_signals
from groundqa.index.index import Index
from groundqa.service.app import create_app
from groundqa.service.config import Settings
from tests.conftest import ARTICLE, ROOT, SQUAD, groundqa, need_shared, seed_input, wait_until_ready

ANSWERED = "How long is the Power of Siberia 2 pipeline?"
# About another article of the same kind (news on diplomacy), which the index does not hold.
ELSEWHERE = "Which country did the French president visit in March to sign a nuclear deal?"
V2 = ROOT.parent / "shared" / "data" / "squad" / "dev-v2.0-even-articles.json"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, embedder) -> Index:  # type: ignore[no-untyped-def]
    index = Index(tmp_path_factory.mktemp("confidence") / "index", embedder)
    index.add(ARTICLE.read_text(encoding="utf-8"), doc_id="putin-china-visit")
    return index


def test_a_question_the_article_answers_is_answered_with_its_confidence(index: Index) -> None:
    result = index.search(ANSWERED)
    assert result.answer is not None and "2,500 km" in result.answer.text
    assert index.min_confidence <= result.confidence <= 1
    assert len(result.answer.signals) == len(SIGNALS)


def test_a_question_about_another_article_is_not_answered(index: Index) -> None:
    result = index.search(ELSEWHERE)
    assert result.answer is None
    assert result.hits, "the closest passages are still returned"
    assert 0 <= result.confidence < index.min_confidence
    forced = index.search(ELSEWHERE, min_confidence=0.0)  # today's behaviour: always answer
    assert forced.answer is not None and forced.confidence == result.confidence


def test_the_confidence_orders_right_and_wrong_answers(index: Index) -> None:
    ours = [index.search(q).confidence for q in (ANSWERED, "Who is the president of China?")]
    theirs = [index.search(q).confidence for q in (ELSEWHERE, "How many goals did Pele score in 1958?")]
    assert min(ours) > max(theirs), (ours, theirs)


def test_text_signals_see_negations_numbers_and_names() -> None:
    s = text_signals(
        "Who did not visit Paris in 1999?", "Putin visited Beijing in 2024.", "Putin visited Beijing in 2024."
    )
    assert s["lost_negation"] == 1.0 and s["lost_numbers"] == 1.0 and s["lost_names"] == 1.0
    s = text_signals(
        "Who visited Beijing in 2024?", "Putin visited Beijing in 2024.", "Putin visited Beijing in 2024."
    )
    assert s["lost_negation"] == 0.0 and s["lost_numbers"] == 0.0 and s["lost_names"] == 0.0
    assert s["answer_words"] == 1.0


def test_the_shipped_model_says_how_it_was_made() -> None:
    model = bundled()
    about = model.about
    assert str(about["command"]).startswith("python -m groundqa.eval.train_confidence")
    assert about["seed"] == 0 and 0 < model.threshold < 1
    assert set(about["data_sha256"]) == {"dev-v1.1-even-articles.json", "dev-v2.0-even-articles.json"}  # type: ignore[arg-type]
    import hashlib

    shared = need_shared(SQUAD)
    assert (
        about["data_sha256"]["dev-v1.1-even-articles.json"] == hashlib.sha256(shared.read_bytes()).hexdigest()
    )  # type: ignore[index]
    cv = about["cross_validated"]
    assert 0.5 < cv["auroc_squad2"]["min"] <= cv["auroc_squad2"]["mean"] <= cv["auroc_squad2"]["max"]  # type: ignore[index]
    neutral = ConfidenceModel.neutral()
    assert float(neutral.probability(np.zeros(len(SIGNALS)))[0]) == 0.5


def test_cross_validation_holds_each_article_out_and_sees_what_separates() -> None:
    rng = np.random.default_rng(0)
    n = 1600
    doc = np.array([f"article-{i % 8}" for i in range(n)])
    kind = np.where(np.arange(n) % 3 == 0, "unanswerable", "answerable")
    y = (kind == "answerable").astype(float)
    x = rng.normal(size=(n, len(SIGNALS)))
    x[:, 0] += 3 * y  # the answer's cosine separates; nothing else does
    found = cross_validated(x, y, kind, doc)
    assert found["auroc_squad2"]["min"] > 0.95
    x[:, 0] = rng.normal(size=n)  # now nothing separates
    found = cross_validated(x, y, kind, doc)
    assert 0.35 < found["auroc_squad2"]["mean"] < 0.65
    assert found["splits"] == "4 folds of the articles x 2 shuffles, seed 0"


def test_metrics_of_abstention_on_hand_made_cases() -> None:
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.5], [True]) is None
    table = calibration([0.85, 0.85, 0.15, 0.15], [True, False, False, False])
    assert table["ece"] == pytest.approx((2 * abs(0.85 - 0.5) + 2 * 0.15) / 4, abs=1e-4)
    curve = risk_coverage([0.9, 0.1, 0.5], [True, False, False])
    assert curve == [(1 / 3, 0.0), (2 / 3, 0.5), (1.0, 2 / 3)]


def test_http_gives_the_confidence_and_takes_a_floor(tmp_path: Path, seeded_index: Path) -> None:
    shutil.copytree(seeded_index, tmp_path / "index")
    config = Settings(index_dir=tmp_path / "index")  # type: ignore[call-arg]
    with TestClient(create_app(config, seed=[seed_input()])) as client:
        wait_until_ready(client)
        body = client.post("/v1/query", json={"question": ELSEWHERE}).json()
        assert body["answer"] is None and body["passages"] and 0 <= body["confidence"] < 1
        assert list(body) == ["question", "mode", "k", "answer", "confidence", "passages", "took_ms"]
        forced = client.get("/v1/query", params={"q": ELSEWHERE, "min_confidence": 0}).json()
        assert forced["answer"] is not None
        assert client.post("/v1/query", json={"question": ANSWERED}).json()["answer"] is not None
        refused = client.post("/v1/query", json={"question": ANSWERED, "min_confidence": 1.5})
        assert refused.status_code == 422 and "min_confidence" in refused.json()["detail"]
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert "confidence" in schema["QueryResponse"]["properties"]
        assert "min_confidence" in schema["QueryRequest"]["properties"]
        assert client.get("/v1/limits").json()["min_confidence"] == bundled().threshold


@pytest.mark.slow
def test_the_cli_says_when_the_articles_do_not_answer(tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert groundqa("ingest", str(ARTICLE), index=index).returncode == 0
    out = groundqa("ask", ELSEWHERE, index=index)
    assert out.returncode == 0, out.stderr
    assert "don't seem to answer" in out.stdout and "Closest passages" in out.stdout
    forced = groundqa("ask", ELSEWHERE, "--min-confidence", "0", "--json", index=index)
    assert json.loads(forced.stdout)["answer"] is not None
    bad = groundqa("ask", ANSWERED, "--min-confidence", "2", index=index)
    assert bad.returncode == 1 and bad.stderr.startswith("groundqa: error: --min-confidence")


@pytest.mark.slow
def test_eval_squad_reports_abstention_on_squad2(tmp_path: Path) -> None:
    """Two articles of the v2.0 half, one of them left out of the index: unanswerable and outside
    questions are refused, answerable ones answered, the curves drawn."""
    raw = json.loads(need_shared(V2).read_text(encoding="utf-8"))
    small = tmp_path / "small-v2.json"
    data = [{"title": a["title"], "paragraphs": a["paragraphs"][:6]} for a in raw["data"][:3]]
    small.write_text(json.dumps({"version": "v2.0", "data": data}))
    out = tmp_path / "report"
    run = groundqa("eval", "squad", str(small), "--leave-out", "1", "--modes", "hybrid", "--out", str(out))
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "report.json").read_text())
    m = report["modes"]["hybrid"]
    assert m["refused_outside"] > 0.5 and m["refused_unanswerable"] > 0 and m["answered"] > 0.5
    assert 0.5 < m["auroc"] <= 1 and 0 <= m["ece"] < 0.5
    assert m["answer_hit"] <= m["answer_hit_min_confidence_0"]
    assert len(report["settings"]["left_out"]) == 1
    for name in ("reliability.png", "risk_coverage.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert "refused_unanswerable" in (out / "report.md").read_text()
