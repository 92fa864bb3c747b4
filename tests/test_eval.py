from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from groundqa.eval.data import DataError, load_questions, load_squad
from groundqa.eval.metrics import Located, Outcome, covers, first_rank, hit_at, mrr, percentile, summarize
from tests.conftest import ROOT, SQUAD, SQUAD_SLICE, LiveServer, groundqa, need_shared

QUESTIONS = ROOT / "eval" / "questions" / "putin-china-visit.jsonl"


def P(start: int, end: int, doc: str = "d") -> Located:  # noqa: N802
    return Located(doc, start, end)


def test_a_hit_at_rank_three() -> None:
    passages = [P(0, 10), P(10, 20), P(20, 40), P(40, 60)]
    assert first_rank(passages, "d", [(25, 30)]) == 3
    ranks = [3]
    assert (hit_at(ranks, 1), hit_at(ranks, 5)) == (0.0, 1.0)
    assert mrr(ranks) == pytest.approx(1 / 3)


def test_a_span_straddling_two_passages_is_a_miss() -> None:
    assert first_rank([P(0, 100), P(100, 200)], "d", [(90, 110)]) is None


def test_overlapping_passages_catch_a_straddling_span() -> None:
    assert first_rank([P(0, 100), P(80, 180)], "d", [(90, 110)]) == 2


def test_several_gold_spans_any_counts() -> None:
    assert first_rank([P(0, 50), P(50, 100)], "d", [(10, 60), (70, 80)]) == 2


def test_the_right_span_in_the_wrong_document_is_a_miss() -> None:
    assert first_rank([P(0, 100, "other")], "d", [(10, 20)]) is None
    assert not covers(P(0, 100, "other"), "d", [(10, 20)])


def test_misses_and_late_hits_score_zero_mrr() -> None:
    assert mrr([None, 11, 1]) == pytest.approx(1 / 3)
    assert hit_at([None, 11, 1], 20) == pytest.approx(2 / 3)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile([], 50)) == (50.0, 95.0, 0.0)


def test_summary_has_the_contract_keys() -> None:
    outcomes = [Outcome(1, True, 100, 5.0), Outcome(None, False, None, 7.0), Outcome(6, False, 50, 9.0)]
    s = summarize(outcomes)
    assert set(s) == {
        "hit@1",
        "hit@5",
        "hit@10",
        "hit@20",
        "mrr@10",
        "answer_hit",
        "answer_chars_mean",
        "answer_or_top",
        "page_right",
        "latency_ms_p50",
        "latency_ms_p95",
    }
    # In the answer or the top passage: 1 of 3; no question asks for a page.
    assert (s["answer_or_top"], s["page_right"]) == (0.3333, None)
    assert (s["hit@1"], s["hit@10"], s["answer_hit"], s["answer_chars_mean"]) == (
        0.3333,
        0.6667,
        0.3333,
        75.0,
    )
    assert s["mrr@10"] == pytest.approx((1 + 1 / 6) / 3, abs=1e-4)


def test_squad_offsets_are_shifted_into_the_joined_article() -> None:
    dataset = load_squad(need_shared(SQUAD))
    texts = {a.doc_id: a.text for a in dataset.articles}
    assert len(dataset.articles) == 24 and len(dataset.questions) == 5397
    raw = json.loads(SQUAD.read_text(encoding="utf-8"))
    answers = {qa["id"]: qa["answers"] for a in raw["data"] for p in a["paragraphs"] for qa in p["qas"]}
    for q in dataset.questions:
        golds = {a["text"] for a in answers[q.id]}
        assert {texts[q.doc_id][s:e] for s, e in q.spans} <= golds


def test_bundled_question_set_matches_the_article() -> None:
    dataset = load_questions(QUESTIONS)
    text = (ROOT / "corpus" / "putin-china-visit.txt").read_text(encoding="utf-8")
    assert len(dataset.questions) >= 30
    for q in dataset.questions:
        [(s, e)] = q.spans
        assert text[s:e] == q.answer


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "question": "q", "spans": [[0, 5]]}\n{"id": "b", "question": "q"}\n', ":2: malformed"),
        ('{"id": "a", "question": "q", "spans": [[5, 2]]}\n', ":1: spans must be"),
        ("not json\n", ":1: malformed"),
        ("\n", "holds no questions"),
    ],
)
def test_malformed_question_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_questions(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("eval") / "index") as live:
        yield live


@pytest.mark.slow
def test_eval_questions_over_http_with_a_bad_span(server: LiveServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "q", "spans": [[1, 99999]]}\n')
    result = groundqa("eval", "questions", str(bad), "--url", server.url)
    assert result.returncode == 1 and "span [1, 99999] lies outside 'putin-china-visit'" in result.stderr
    wrong_doc = tmp_path / "doc.jsonl"
    wrong_doc.write_text('{"id": "x", "question": "q", "doc_id": "nope", "spans": [[1, 9]]}\n')
    result = groundqa("eval", "questions", str(wrong_doc), "--url", server.url)
    assert result.returncode == 1 and "doc_id 'nope' is not in the index" in result.stderr


@pytest.mark.slow
def test_eval_questions_over_http_writes_the_reports(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = groundqa(
        "eval",
        "questions",
        str(QUESTIONS),
        "--url",
        server.url,
        "--modes",
        "hybrid,lexical",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["modes"]) == {"hybrid", "lexical"} and report["questions"] >= 30
    assert report["modes"]["hybrid"]["hit@5"] == 1.0
    assert "| hybrid |" in (out / "report.md").read_text()
    assert (out / "hit_at_k.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_eval_squad_with_the_txtai_peer(tmp_path: Path) -> None:
    raw = json.loads(SQUAD_SLICE.read_text(encoding="utf-8"))
    small = tmp_path / "small.json"
    small.write_text(
        json.dumps(
            {
                "version": "1.1",
                "data": [{"title": a["title"], "paragraphs": a["paragraphs"][:8]} for a in raw["data"][:2]],
            }
        )
    )
    out = tmp_path / "report"
    result = groundqa(
        "eval",
        "squad",
        str(small),
        "--limit",
        "40",
        "--seed",
        "1",
        "--modes",
        "hybrid,dense",
        "--peer",
        "txtai",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["questions"] == 40 and report["dataset"] == "small"
    assert set(report["modes"]) == {"hybrid", "dense", "txtai-dense", "txtai-hybrid"}
    assert report["modes"]["txtai-hybrid"]["answer_hit"] is None
    assert 0 < report["passage_tokens_mean"] <= 128
    for mode in report["modes"].values():
        assert 0.5 < mode["hit@20"] <= 1.0
    assert report["settings"]["seed"] == 1 and report["settings"]["chunking"]["max_tokens"] == 128
    assert "txtai-hybrid" in (out / "report.md").read_text()
