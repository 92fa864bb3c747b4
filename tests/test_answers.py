from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from groundqa.eval.answers import find_answer, resolve
from groundqa.eval.data import DataError, Question, load_questions
from tests.conftest import ARTICLE, ROOT

CSV = ROOT / "eval" / "questions" / "putin-china-visit.csv"
JSONL = ROOT / "eval" / "questions" / "putin-china-visit.jsonl"


def test_every_exact_occurrence_is_a_gold_span() -> None:
    text = "Xi met Putin. Later Xi spoke, and xi smiled."
    found = find_answer("Xi", {"d": text})
    assert found.how == "exact" and found.spans == {"d": [(0, 2), (20, 22)]}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("more than 2500 km", "more than 2,500 km"),
        ('"unlimited" partnership', "“unlimited” partnership"),
        ("50 Billion  cubic meters", "50 billion cubic meters"),
        ("63 %", "63%"),
        ("US led world order", "US-led world order"),
    ],
)
def test_normalised_answers_find_the_text_as_written(answer: str, expected: str) -> None:
    text = ARTICLE.read_text(encoding="utf-8")
    found = find_answer(answer, {"a": text})
    assert found.how == "normalised"
    assert {text[s:e] for s, e in found.spans["a"]} == {expected}


def test_an_answer_in_no_document_is_not_found() -> None:
    assert find_answer("Zenit Saint Petersburg", {"a": ARTICLE.read_text(encoding="utf-8")}).how == ""
    # Part of a number is not the number.
    assert find_answer("500 km", {"a": "It runs 2,500 km."}).how == ""


@given(
    st.lists(st.from_regex(r"[A-Za-z]{1,8}|\d{1,3}(,\d{3})?", fullmatch=True), min_size=3, max_size=30),
    st.data(),
)
def test_a_normalised_span_is_exactly_the_words_asked_for(words: list[str], data: st.DataObject) -> None:
    text = " ".join(w + data.draw(st.sampled_from(["", ",", "!", "”"])) for w in words)
    start = data.draw(st.integers(0, len(words) - 1))
    end = data.draw(st.integers(start + 1, len(words)))
    # The answer as a person might type it: other case, numbers without separators.
    answer = " ".join(w.upper().replace(",", "") for w in words[start:end])
    found = find_answer(answer, {"d": text})
    assert found.how in ("exact", "normalised")
    for s, e in found.spans["d"]:
        got = re.findall(r"\w+", text[s:e].replace(",", "").casefold())
        assert got == re.findall(r"\w+", answer.casefold())
        assert text[s:e] == text[s:e].strip() and text[s].isalnum() and text[e - 1].isalnum()


def test_resolve_names_unfound_and_ambiguous_and_keeps_given_spans() -> None:
    texts = {"one": "The river Volga flows south.", "two": "Boats on the Volga."}
    questions = [
        Question("a", "Which river?", None, [], "Volga", answer_only=True),
        Question("b", "Which sea?", None, [], "Caspian", answer_only=True),
        Question("c", "Which way?", "one", [(16, 21)], "flows"),
        Question("d", "Where boats?", "two", [], "volga", answer_only=True),
    ]
    found = resolve(questions, texts)
    assert [q.id for q in found.questions] == ["a", "c", "d"] and [q.id for q in found.unfound] == ["b"]
    assert found.ambiguous == {"a": ["one", "two"]}
    a, c, d = found.questions
    assert (a.doc_id, a.spans, a.elsewhere) == ("one", [(10, 15)], (("two", ((13, 18),)),))
    assert c.spans == [(16, 21)]
    assert (d.doc_id, d.spans, found.matched) == ("two", [(13, 18)], {"exact": 1, "normalised": 1})
    with pytest.raises(DataError, match="doc_id 'nope' is not in the index"):
        resolve([Question("e", "q", "nope", [], "x", answer_only=True)], texts)


def test_the_bundled_csv_reads_like_its_jsonl() -> None:
    csv_set, jsonl_set = load_questions(CSV), load_questions(JSONL)
    assert len(csv_set.questions) == len(jsonl_set.questions) + 2
    assert all(q.answer_only and not q.spans for q in csv_set.questions)
    assert [q.question for q in csv_set.questions[:40]] == [q.question for q in jsonl_set.questions]


def test_csv_from_a_spreadsheet_bom_semicolons_and_no_ids(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text(
        "\ufeffQuestion;Answer;doc_id\nWho?;Xi Jinping;\nWhere?;Harbin;putin-china-visit\n", encoding="utf-8"
    )
    first, second = load_questions(path).questions
    assert (first.id, first.question, first.answer, first.doc_id) == ("2", "Who?", "Xi Jinping", None)
    assert (second.id, second.doc_id) == ("3", "putin-china-visit")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "q.csv",
            "question,expected\nWho?,Xi\n",
            r"q.csv:1: the header has no 'answer' column \(it has question, expected\)",
        ),
        ("q.csv", "question,answer\nWho?,Xi\nWhere?,\n", r"q.csv:3:2: the answer is empty"),
        ("q.csv", 'question,answer\n"Who?,Xi\n', r"q.csv:\d+: unexpected end of data"),
        (
            "q.jsonl",
            '{"id": "a", "question": "q", "answer": "x"}\n{"id": "b", "question": "q", "answer": 1,}\n',
            r"q.jsonl:2:42: malformed",
        ),
        (
            "q.jsonl",
            '{"id": "a", "question": "q", "answer": "  "}\n',
            r"q.jsonl:1: malformed question line \('spans or answer'\)",
        ),
    ],
)
def test_bad_question_files_name_the_line_and_column(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_questions(path)


def test_jsonl_rows_with_answer_text_and_with_both(tmp_path: Path) -> None:
    rows = '{"id": "a", "question": "q", "answer": "Harbin"}\n{"id": "b", "question": "q", "answer": "Harbin", "spans": [[1, 4]]}\n'
    path = tmp_path / "q.jsonl"
    path.write_text(rows, encoding="utf-8")
    a, b = load_questions(path).questions
    assert a.answer_only and not a.spans
    assert not b.answer_only and b.spans == [(1, 4)]
