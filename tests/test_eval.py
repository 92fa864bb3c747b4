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


CSV = ROOT / "eval" / "questions" / "putin-china-visit.csv"


@pytest.fixture(scope="module")
def csv_and_spans(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The bundled questions asked twice over HTTP: as CSV answer text (two answers no article
    holds), and as JSONL with their spans; the two report folders and the CSV run's stderr."""
    out = tmp_path_factory.mktemp("reports")
    texts = groundqa("eval", "questions", str(CSV), "--url", server.url, "--out", str(out / "csv"))
    assert texts.returncode == 0, texts.stderr
    spans = groundqa("eval", "questions", str(QUESTIONS), "--url", server.url, "--out", str(out / "spans"))
    assert spans.returncode == 0, spans.stderr
    return out / "csv", out / "spans", texts.stderr


@pytest.mark.slow
def test_eval_questions_from_a_csv_of_answer_text(csv_and_spans: tuple[Path, Path, str]) -> None:
    csv_out, spans_out, stderr = csv_and_spans
    by_text = json.loads((csv_out / "report.json").read_text())
    by_spans = json.loads((spans_out / "report.json").read_text())
    assert by_text["questions"] == by_spans["questions"] == 40
    assert abs(by_text["modes"]["hybrid"]["hit@5"] - by_spans["modes"]["hybrid"]["hit@5"]) <= 0.03
    assert by_text["answers"]["normalised"] == 6 and by_text["answers"]["exact"] == 34
    unfound = [u["id"] for u in by_text["answers"]["unfound"]]
    assert unfound == ["none-1", "none-2"]
    assert "question none-1: its answer 'Zenit Saint Petersburg' is in no document" in stderr
    assert "none-2: How many pandas" in (csv_out / "report.md").read_text()


@pytest.mark.slow
def test_eval_compare_prints_both_runs_and_what_changed(
    csv_and_spans: tuple[Path, Path, str], tmp_path: Path
) -> None:
    csv_out, spans_out, _ = csv_and_spans
    page = tmp_path / "compare.html"
    result = groundqa("eval", "compare", str(spans_out), str(csv_out), "--html", str(page))
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("By mode") and " hit@5 " in line]
    a, b, diff = row.split()[4:7]
    assert (float(a), float(b), diff) == (1.0, 1.0, "+0.0000")
    assert "hybrid, hit@5: 0 from hit to miss, 0 from miss to hit" in result.stdout
    assert "<td>hit@5</td>" in page.read_text()
    # A run that answered one question worse shows it as lost, with an interval around -1/40.
    worse = json.loads((csv_out / "report.json").read_text())
    first = next(q for q in worse["per_question"]["hybrid"] if q["rank"] == 1 and q["answer_hit"])
    first["rank"], first["answer_hit"] = None, False
    worse["modes"]["hybrid"]["answer_hit"] = round(worse["modes"]["hybrid"]["answer_hit"] - 1 / 40, 4)
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    result = groundqa("eval", "compare", str(csv_out), str(tmp_path / "worse.json"), "--metric", "hit@1")
    assert result.returncode == 0, result.stderr
    assert f"hit -> miss: {first['id']}: {first['question']}" in result.stdout
    assert "hybrid, hit@1: 1 from hit to miss, 0 from miss to hit" in result.stdout
    [row] = [
        line for line in result.stdout.splitlines() if line.startswith("By mode") and " answer_hit " in line
    ]
    low, high = (float(x) for x in row[row.index("[") + 1 : row.index("]")].split(","))
    assert row.split()[6] == "-0.0250" and low < -0.025 and high == 0.0


def test_eval_compare_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"a": 1}')
    result = groundqa("eval", "compare", str(tmp_path / "x.json"), str(tmp_path / "missing"))
    assert result.returncode == 1
    assert result.stderr.strip().endswith("x.json is not a groundqa eval report (no modes or rows)")


@pytest.mark.slow
@pytest.mark.browser
def test_report_html_renders_with_a_plot_and_a_missed_question_marked(
    browser, csv_and_spans: tuple[Path, Path, str]
) -> None:  # type: ignore[no-untyped-def]
    csv_out = csv_and_spans[0]
    missed = json.loads((csv_out / "report.json").read_text())["missed"]["hybrid"]
    assert missed, "the bundled questions have answer sentences that miss"
    context = browser.new_context(viewport={"width": 390, "height": 844}, offline=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((csv_out / "report.html").as_uri())
    assert page.locator("th", has_text="hit@5").count() >= 1
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("img").count() >= 1
    # The first missed questions are open, their gold spans marked without a click.
    marked = page.locator("details[open] mark").first
    assert marked.is_visible()
    gold = missed[0]["gold"][0]
    assert marked.inner_text() == CSV_TEXT[gold[1] : gold[2]]
    # Nothing wider than a phone's screen but the tables, which scroll inside their box.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert not errors
    context.close()


CSV_TEXT = (ROOT / "corpus" / "putin-china-visit.txt").read_text(encoding="utf-8")
