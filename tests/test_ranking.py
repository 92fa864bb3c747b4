from __future__ import annotations

import pytest

from groundqa.eval.data import sample
from groundqa.index.errors import InvalidQuery
from groundqa.index.index import Index
from groundqa.index.model import Embedder
from groundqa.index.ranking import (
    MAX_K,
    MAX_QUESTION_CHARS,
    Query,
    Ranking,
    WordMatch,
    check_query,
    clean_question,
    rank,
)
from groundqa.index.text import Span
from tests.conftest import SquadSlice


def test_questions_are_trimmed_and_bounded() -> None:
    assert clean_question("  Who won?\n") == "Who won?"
    for bad in ("", "   ", "x" * (MAX_QUESTION_CHARS + 1)):
        with pytest.raises(InvalidQuery):
            clean_question(bad)
    with pytest.raises(InvalidQuery, match="k is 0"):
        check_query("ok", 0, "hybrid")
    with pytest.raises(InvalidQuery, match=f"from 1 to {MAX_K}"):
        check_query("ok", MAX_K + 1, "hybrid")
    with pytest.raises(InvalidQuery, match="mode 'fuzzy'"):
        check_query("ok", 5, "fuzzy")


def test_word_match_follows_the_question_words(make_index, embedder) -> None:  # type: ignore[no-untyped-def]
    index: Index = make_index()
    index.add(
        "A winter storm closed the schools. The home team won the final in the last minute.", doc_id="d"
    )
    index.add("The rocket lifted off at dawn and put three satellites into orbit.", doc_id="rocket")
    question = "Which team won the final?"
    _, pieces = embedder.embed_with_pieces([question])
    reader = index.reader()
    match = WordMatch(reader, question, pieces[0])
    assert len(match.weights) == len(embedder.pieces_of(question)) - 1  # "?" left out
    d, rocket = (int(reader.allowed([doc_id])[0]) for doc_id in ("d", "rocket"))
    assert match.score(d) > match.score(rocket) + 0.2
    storm, final = (Span(int(a), int(b)) for a, b in reader.sentence_spans(reader.sentences_of([d])[0]))
    assert storm.end < final.start
    assert match.score(d, final) > match.score(d, storm) + 0.2
    # "won" and "final" are in one passage of the two, "the" in both: rarer pieces weigh more
    weights = dict(zip(embedder.pieces_of(question), match.weights, strict=False))
    assert weights["final"] > weights["the"]


@pytest.mark.slow
def test_word_match_reorders_hybrid(squad_slice: SquadSlice, embedder: Embedder) -> None:
    """With word match off (weight 0), hybrid's order is the fused score's alone; with it on, the
    order changes for some questions, and more of them find the gold passage first."""
    reader = squad_slice.index.reader()
    questions = sample(squad_slice.questions, 100, seed=3)
    vectors, pieces = embedder.embed_with_pieces([q.question for q in questions])
    changed, first = 0, {"on": 0, "off": 0}
    for q, vector, piece in zip(questions, vectors, pieces, strict=True):
        query = Query(q.question, vector, piece, k=5)
        orders = {
            name: rank(reader, query, ranking)[0]
            for name, ranking in (("on", Ranking()), ("off", Ranking(match_weight=0.0)))
        }
        ids = {name: [(h.passage.doc_id, h.passage.start) for h in hits] for name, hits in orders.items()}
        changed += ids["on"] != ids["off"]
        for name, hits in orders.items():
            top = hits[0].passage
            first[name] += top.doc_id == q.doc_id and any(top.start <= s and e <= top.end for s, e in q.spans)
    assert changed >= 10, changed
    assert first["on"] > first["off"], first


def test_the_answer_lies_in_a_returned_passage(article_index: Index, article: str, embedder) -> None:  # type: ignore[no-untyped-def]
    index = article_index
    question = "How long is the Power of Siberia 2 pipeline?"
    vectors, pieces = embedder.embed_with_pieces([question])
    hits, answer = rank(index.reader(), Query(question, vectors[0], pieces[0], k=3), Ranking())
    assert answer is not None and "2,500 km" in answer.text
    assert any(h.passage.start <= answer.span.start and answer.span.end <= h.passage.end for h in hits)
    assert article[answer.span.start : answer.span.end] == answer.text
