from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from groundqa.index.errors import DocumentConflict, DocumentNotFound, IndexMismatch, InvalidDocument
from groundqa.index.index import DocumentInput, Index, check_doc_id, derive_doc_id
from groundqa.index.lexical import BM25Params
from groundqa.index.text import Chunking

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
    result = headlines.search("What launched satellites or closed roads?", k=5, doc_ids=["storm", "rocket"])
    assert {h.passage.doc_id for h in result.hits} == {"storm", "rocket"}
    narrowed = headlines.search("Who won the final match?", k=5, doc_ids=["storm", "rocket"])
    assert "football" not in {h.passage.doc_id for h in narrowed.hits}
    assert headlines.search("Who won the final match?", k=5).hits[0].passage.doc_id == "football"
    with pytest.raises(DocumentNotFound, match="nope"):
        headlines.search("anything", doc_ids=["nope"])


def test_answer_is_an_exact_sentence(article_index: Index, article: str) -> None:
    index = article_index
    result = index.search("How long is the Power of Siberia 2 pipeline?")
    assert result.answer is not None
    assert "2,500 km" in result.answer.text
    assert article[result.answer.span.start : result.answer.span.end] == result.answer.text
    p = result.answer.passage
    assert p.start <= result.answer.span.start and result.answer.span.end <= p.end
    for hit in result.hits:
        assert article[hit.passage.start : hit.passage.end] == hit.passage.text


def test_nothing_relevant_gives_no_answer(article_index: Index) -> None:
    result = article_index.search("xyzzy plugh qwertz")
    assert result.answer is None and result.hits == []


def test_empty_index_answers_with_no_passages(make_index) -> None:  # type: ignore[no-untyped-def]
    result = make_index().search("Anything at all?")
    assert result.hits == [] and result.answer is None


def test_saved_index_gives_identical_results(article_index: Index, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index = article_index
    index.add_many([DocumentInput(text, doc_id=doc_id) for doc_id, text in HEADLINES.items()])
    reopened = Index(tmp_path / "article-index", embedder)
    for question in ["How long is the Power of Siberia 2 pipeline?", "Who won?", "Xi Jinping Beijing visit"]:
        for mode in ("hybrid", "dense", "lexical"):
            a, b = index.search(question, 10, mode), reopened.search(question, 10, mode)  # type: ignore[arg-type]
            assert a.hits == b.hits and a.answer == b.answer
    assert reopened.documents() == index.documents()


def test_a_write_adds_one_segment_and_leaves_the_others_untouched(make_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    index.add(HEADLINES["storm"], doc_id="storm")
    segments = tmp_path / "index" / "segments"
    before = {p.name: p.stat() for p in segments.iterdir()}
    index.add(HEADLINES["rocket"], doc_id="rocket")
    after = {p.name: p.stat() for p in segments.iterdir()}
    assert len(after) == len(before) + 1
    for name, stat in before.items():  # not rewritten: the same file, unchanged
        assert (after[name].st_ino, after[name].st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


def test_identical_content_is_a_no_op(headlines: Index) -> None:
    revision = headlines.reader().revision
    again = headlines.add(HEADLINES["storm"], doc_id="storm")
    assert again.state == "unchanged"
    assert headlines.reader().revision == revision


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
    with pytest.raises(IndexMismatch, match=r"bm25 is .*'k1': 0.9.* but .*'k1': 1.2"):
        make_index(bm25=BM25Params(k1=1.2))


CRASH_WRITER = """
import sys
from groundqa.index.config import prepare_process
from groundqa.index.index import Index, check_doc_id, derive_doc_id
from groundqa.index.model import Embedder
prepare_process()
index = Index(sys.argv[1], Embedder())
text = open(sys.argv[2], encoding="utf-8").read()
print("ready", flush=True)
for i in range(1000):
    index.add(text + f"\\n\\nCopy {i}.", doc_id=f"copy-{i % 7}", replace=True)
    if i % 3 == 2:
        index.delete(f"copy-{i % 7}")
"""


def assert_whole(index: Index) -> None:
    """Every document's passages are there, slice its text exactly and are found."""
    reader = index.reader()
    total = 0
    for doc in index.documents():
        _, text = index.document(doc.doc_id)
        places = reader.passages(reader.allowed([doc.doc_id]))
        assert len(places) == doc.passages
        total += doc.passages
        for doc_id, start, end in places:
            assert doc_id == doc.doc_id and 0 <= start < end <= len(text)
    assert index.counts() == (len(index.documents()), total)


@pytest.mark.slow
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
        assert_whole(index)
        if index.counts()[1]:
            assert index.search("Power of Siberia 2 pipeline length").hits
        assert list((folder / "tmp").iterdir()) == []


def test_an_index_of_the_old_format_is_refused_with_the_fix(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "meta.json").write_text('{"format": 2, "groundqa_version": "0.2.0"}')
    with pytest.raises(IndexMismatch, match=r"format 2 \(groundqa 0.2.0\).*Ingest the documents again"):
        Index(tmp_path / "old", embedder)


def test_derived_doc_ids_are_unique_and_stable_for_any_name() -> None:
    names = ["日本", "Москва", "Москва-2024", "Париж-2024", "Café", "Cafe", "My Title: 2024!", "!!!"]
    ids = [derive_doc_id(n) for n in names]
    assert len(set(ids)) == len(ids) and ids == [derive_doc_id(n) for n in names]
    assert ids[5] == "Cafe" and ids[6] == "My-Title-2024"  # Latin names keep their readable ids
    assert all(check_doc_id(i) == i for i in ids)
    assert ids[2].startswith("2024-") and ids[0].startswith("doc-")


@pytest.mark.parametrize("doc_id", [".", ".."])
def test_doc_ids_a_url_cannot_name_are_refused(make_index, doc_id: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidDocument, match="not '.' or '..'"):
        make_index().add("Some text.", doc_id=doc_id)


def test_a_document_the_model_reads_no_word_piece_of_is_searchable(make_index) -> None:  # type: ignore[no-untyped-def]
    """Found by the fuzzer: a passage with no word piece of its own broke every hybrid query."""
    index = make_index()
    index.add("\u0089\u2029\x0c", doc_id="control")
    index.add("\u200b\u200b\u200b", doc_id="zero-width")
    index.add("The ferry leaves at noon.", doc_id="ferry")
    for mode in ("hybrid", "dense", "lexical"):
        result = index.search("When does the ferry leave? \u0089", 3, mode)
        assert result.hits[0].passage.doc_id == "ferry", mode
