from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from index.errors import DocumentConflict, DocumentNotFound, IndexMismatch, InvalidDocument
from index.index import Index
from index.ranking import WordMatch
from index.text import Chunking

HEADLINES = {
    "pipeline": "The Power of Siberia 2 gas pipeline will run 2,500 km from Russia to China.",
    "storm": "A winter storm closed schools and roads across the northern plains.",
    "football": "The home team won the championship final with a last-minute goal.",
    "election": "Voters re-elected the mayor after a close race decided by 300 ballots.",
    "vaccine": "Researchers reported that the new vaccine prevented most severe infections.",
    "rocket": "The rocket lifted off at dawn and put three satellites into orbit.",
}


@pytest.fixture
def headlines(make_index) -> Index:  # type: ignore[no-untyped-def]
    index = make_index()
    for doc_id, text in HEADLINES.items():
        index.add(text, doc_id=doc_id)
    return index


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_the_sensible_headline_comes_first(headlines: Index, mode: str) -> None:
    queries = {
        "How far does the fuel pipe go?": "pipeline",
        "Who won the final match?": "football",
        "how many satellites did the rocket launch": "rocket",
    }
    for question, doc_id in queries.items():
        if mode == "lexical" and doc_id == "pipeline":
            continue  # no word in common: lexical search cannot find it, by design
        result = headlines.search(question, k=3, mode=mode)  # type: ignore[arg-type]
        assert result.hits[0].passage.doc_id == doc_id, (mode, question)


def test_dense_finds_paraphrases_lexical_does_not(headlines: Index) -> None:
    assert (
        headlines.search("How far does the fuel pipe go?", mode="dense").hits[0].passage.doc_id == "pipeline"
    )
    lexical = headlines.search("How far does the fuel pipe go?", mode="lexical").hits
    assert "pipeline" not in [h.passage.doc_id for h in lexical]


def test_doc_ids_restrict_the_search(headlines: Index) -> None:
    result = headlines.search("Who won the final match?", k=5, doc_ids=["storm", "rocket"])
    assert {h.passage.doc_id for h in result.hits} <= {"storm", "rocket"}
    with pytest.raises(DocumentNotFound, match="nope"):
        headlines.search("anything", doc_ids=["nope"])


def test_answer_is_an_exact_sentence(make_index, article: str) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    index.add(article, doc_id="putin")
    result = index.search("How long is the Power of Siberia 2 pipeline?")
    assert result.answer is not None
    assert "2,500 km" in result.answer.text
    assert article[result.answer.span.start : result.answer.span.end] == result.answer.text
    p = result.answer.passage
    assert p.start <= result.answer.span.start and result.answer.span.end <= p.end
    for hit in result.hits:
        assert article[hit.passage.start : hit.passage.end] == hit.passage.text


def test_nothing_relevant_gives_no_answer(make_index, article: str) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    index.add(article, doc_id="putin")
    result = index.search("xyzzy plugh qwertz")
    assert result.answer is None and result.hits == []


def test_empty_index_answers_with_no_passages(make_index) -> None:  # type: ignore[no-untyped-def]
    result = make_index().search("Anything at all?")
    assert result.hits == [] and result.answer is None


def test_saved_index_gives_identical_results(make_index, embedder, article: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    index.add(article, doc_id="putin")
    for doc_id, text in HEADLINES.items():
        index.add(text, doc_id=doc_id)
    reopened = Index(tmp_path / "index", embedder)
    for question in ["How long is the Power of Siberia 2 pipeline?", "Who won?", "Xi Jinping Beijing visit"]:
        for mode in ("hybrid", "dense", "lexical"):
            a, b = index.search(question, 10, mode), reopened.search(question, 10, mode)  # type: ignore[arg-type]
            assert a.hits == b.hits and a.answer == b.answer
    assert reopened.documents() == index.documents()


def test_word_match_follows_the_question_words(make_index, embedder) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    index.add(
        "A winter storm closed the schools. The home team won the final in the last minute.", doc_id="d"
    )
    index.add(HEADLINES["rocket"], doc_id="rocket")
    question = "Which team won the final?"
    _, tokens = embedder.embed_with_tokens([question])
    match = WordMatch(index.snapshot, question, tokens[0])
    assert len(match.weights) == len(embedder.tokenizer.tokenize(question)) - 1  # "?" left out
    d, rocket = (index.snapshot.doc_passages[doc_id][0] for doc_id in ("d", "rocket"))
    assert match.score(d) > match.score(rocket) + 0.2
    storm, final = index.snapshot.rows.sentences[:2]
    assert storm[1].end < final[1].start
    assert match.score(d, final[1]) > match.score(d, storm[1]) + 0.2
    # "won" and "final" are in one passage of the two, "the" in both: rarer pieces weigh more
    weights = dict(zip(embedder.tokenizer.tokenize(question), match.weights, strict=False))
    assert weights["final"] > weights["the"]


def test_unchanged_documents_keep_their_word_piece_files(make_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    index.add(HEADLINES["storm"], doc_id="storm")
    before = (tmp_path / "index" / f"derived-{index.snapshot.revision}" / "tokens" / "storm.npy").stat()
    index.add(HEADLINES["rocket"], doc_id="rocket")
    after = (tmp_path / "index" / f"derived-{index.snapshot.revision}" / "tokens" / "storm.npy").stat()
    assert after.st_ino == before.st_ino  # linked into the new revision, not written again


def test_identical_content_is_a_no_op(headlines: Index) -> None:
    revision = headlines.snapshot.revision
    again = headlines.add(HEADLINES["storm"], doc_id="storm")
    assert again.state == "unchanged"
    assert headlines.snapshot.revision == revision


def test_different_text_under_a_doc_id_conflicts_or_replaces(headlines: Index) -> None:
    with pytest.raises(DocumentConflict, match="storm"):
        headlines.add("Sunny skies all week.", doc_id="storm")
    replaced = headlines.add("Sunny skies all week across the plains.", doc_id="storm", replace=True)
    assert replaced.state == "replaced"
    hits = headlines.search("winter storm closed schools", k=10).hits
    assert all("winter storm" not in h.passage.text for h in hits)
    assert headlines.search("sunny skies", k=1).hits[0].passage.doc_id == "storm"


def test_deleted_documents_leave_every_mode(headlines: Index, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    headlines.delete("rocket")
    for index in (headlines, Index(tmp_path / "index", embedder)):
        for mode in ("hybrid", "dense", "lexical"):
            hits = index.search("rocket satellites orbit", k=10, mode=mode).hits  # type: ignore[arg-type]
            assert "rocket" not in {h.passage.doc_id for h in hits}
    with pytest.raises(DocumentNotFound):
        headlines.delete("rocket")


def test_title_and_doc_id_defaults(make_index) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    added = index.add("\n\n  My Title: 2024!\nBody text here.")
    assert added.document.title == "My Title: 2024!"
    assert added.document.doc_id == "My-Title-2024"
    with pytest.raises(InvalidDocument, match="doc_id 'bad id/' is not allowed"):
        index.add("text", doc_id="bad id/")
    with pytest.raises(InvalidDocument, match="empty"):
        index.add(" \n ")


def test_opening_with_other_settings_says_what_differs(make_index) -> None:  # type: ignore[no-untyped-def]
    make_index().add("Some text.", doc_id="a")
    with pytest.raises(IndexMismatch, match=r"chunking is .*max_tokens.*128.* but .*64"):
        make_index(chunking=Chunking(max_tokens=64))


CRASH_WRITER = """
import sys
from index.index import Index
from index.ranking import WordMatch
from index.model import Embedder
index = Index(sys.argv[1], Embedder())
text = open(sys.argv[2], encoding="utf-8").read()
print("ready", flush=True)
for i in range(1000):
    index.add(text + f"\\n\\nCopy {i}.", doc_id=f"copy-{i % 7}", replace=True)
    if i % 3 == 2:
        index.delete(f"copy-{i % 7}")
"""


def test_a_killed_ingest_leaves_a_readable_index(tmp_path: Path, embedder, article: str) -> None:  # type: ignore[no-untyped-def]
    folder, source = tmp_path / "index", tmp_path / "article.txt"
    source.write_text(article, encoding="utf-8")
    for delay in (0.5, 1.3, 2.1):
        writer = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(folder), str(source)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        index = Index(folder, embedder)
        rows = index.snapshot.rows
        assert len(rows.passages) == sum(d.passages for d in index.documents())
        assert len(index.snapshot.passage_vectors) == len(rows.passages)
        for p in rows.passages:
            assert rows.texts[p.doc_id][p.start : p.end] == p.text
        if rows.passages:
            assert index.search("Power of Siberia 2 pipeline length").hits
        assert [p.name for p in folder.glob("derived-*")] == [f"derived-{index.snapshot.revision}"]
