"""The storage interface's contract, run against every backend: the embedded index, Qdrant's
local mode (qdrant-client) and Qdrant's engine in this process (qdrant-edge-py). A third backend
passes these before anything else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from groundqa.index.errors import DocumentConflict, DocumentNotFound
from groundqa.index.index import Index
from groundqa.index.model import Embedder
from groundqa.index.storage import FixedLengths, Merging
from groundqa.index.storage.factory import Location
from groundqa.index.text import Chunking

BACKENDS = ("embedded", pytest.param("local", marks=pytest.mark.slow), pytest.param("edge", marks=pytest.mark.slow))
QUESTION = "How long is the Power of Siberia 2 pipeline?"
FERRIES = "Ferries to the island leave every 40 minutes from Pier 3. The crossing takes an hour."
# Multi-byte text: offsets count code points, whatever the backend stores.
EMOJI = "Café ☕ opens at 7. 日本の店は九時に開く。 The 🚲 shop fixes bikes on Sundays."


def location(kind: str, folder: Path) -> Location:
    return Location(folder) if kind == "embedded" else Location(folder, f"{kind}:{folder}")


@pytest.fixture(params=BACKENDS)
def open_index(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> Callable[..., Index]:
    """Opens an index of this backend in a folder (one process per Qdrant folder: the last one
    opened is closed at the end)."""
    opened: list[Index] = []

    def make(name: str = "index", **kwargs: object) -> Index:
        index = Index(location(request.param, tmp_path / name), embedder, **kwargs)  # type: ignore[arg-type]
        opened.append(index)
        return index

    yield make  # type: ignore[misc]
    for index in opened:
        index.close()


def assert_exact(index: Index) -> None:
    """Every passage of every document slices its stored text exactly, and they cover it."""
    reader = index.reader()
    for doc in index.documents():
        _, text = index.document(doc.doc_id)
        places = reader.passages(reader.allowed([doc.doc_id]))
        assert len(places) == doc.passages > 0
        for doc_id, start, end in places:
            assert doc_id == doc.doc_id and 0 <= start < end <= len(text)
        assert min(s for _, s, _ in places) <= len(text) - len(text.lstrip())
        assert max(e for _, _, e in places) >= len(text.rstrip())


def test_a_document_round_trips_with_exact_offsets(open_index: Callable[..., Index], article: str) -> None:
    index = open_index()
    added = index.add(article, doc_id="putin")
    index.add(EMOJI, doc_id="cafe")
    assert added.state == "added" and added.document.sha256 == index.document("putin")[0].sha256
    assert index.document("putin")[1] == article
    assert [d.doc_id for d in index.documents()] == ["putin", "cafe"]
    assert index.counts() == (2, added.document.passages + index.document("cafe")[0].passages)
    assert_exact(index)
    result = index.search(QUESTION, k=3)
    assert result.answer is not None and "2,500 km" in result.answer.text
    assert article[result.answer.span.start : result.answer.span.end] == result.answer.text
    bikes = index.search("When does the bike shop fix bikes?", k=1, doc_ids=["cafe"])
    hit = bikes.hits[0].passage
    assert EMOJI[hit.start : hit.end] == hit.text and "🚲" in hit.text


def test_writes_are_idempotent_and_replace_what_they_say(open_index: Callable[..., Index]) -> None:
    index = open_index()
    assert index.add(FERRIES, doc_id="ferries").state == "added"
    assert index.add(FERRIES, doc_id="ferries").state == "unchanged"
    assert index.counts() == (1, 1)
    with pytest.raises(DocumentConflict, match="ferries"):
        index.add("Ferries stopped running.", doc_id="ferries")
    assert index.add("Buses leave every hour from the square.", doc_id="ferries", replace=True).state == "replaced"
    assert index.counts() == (1, 1)
    found = index.search("How often do ferries leave?", k=5, mode="lexical")
    assert all("Pier 3" not in h.passage.text for h in found.hits)  # the old text is gone
    assert index.storage.existing(["ferries", "nope"]).keys() == {"ferries"}


def test_deletes_leave_nothing_behind(open_index: Callable[..., Index]) -> None:
    index = open_index()
    index.add(FERRIES, doc_id="ferries")
    index.add(EMOJI, doc_id="cafe")
    index.delete("ferries")
    assert [d.doc_id for d in index.documents()] == ["cafe"]
    assert index.counts()[0] == 1
    with pytest.raises(DocumentNotFound):
        index.document("ferries")
    with pytest.raises(DocumentNotFound):
        index.delete("ferries")
    with pytest.raises(DocumentNotFound, match="ferries"):
        index.search("ferries", doc_ids=["ferries"])
    assert all(h.passage.doc_id == "cafe" for h in index.search("Pier 3 ferries", k=5).hits)
    index.compact()
    assert index.counts()[0] == 1
    assert_exact(index)


def test_export_copies_to_the_embedded_index_and_back(
    open_index: Callable[..., Index], embedder: Embedder, tmp_path: Path, article: str
) -> None:
    index = open_index()
    index.add(article, doc_id="putin")
    index.add(EMOJI, doc_id="cafe")
    exported = index.storage.dump(["putin", "cafe"])
    assert [new.document.doc_id for new, _ in exported] == ["putin", "cafe"]
    for new, vectors in exported:
        assert new.text == index.document(new.document.doc_id)[1]
        assert len(vectors.passages) == len(vectors.passage_vectors) == len(vectors.pieces)
        assert all(new.text[s:e] in t for (s, e), t in zip(vectors.passages, vectors.passage_texts, strict=True))
    with pytest.raises(DocumentNotFound):
        index.storage.dump(["nope"])
    copy = Index(tmp_path / "copy", embedder)
    for _ in index.copy_to(copy):
        pass
    assert [(d.doc_id, d.sha256, d.passages) for d in copy.documents()] == [
        (d.doc_id, d.sha256, d.passages) for d in index.documents()
    ]
    # Scores may differ a little (Qdrant fixes BM25's mean lengths; the embedded index measures
    # them); the passages found, their order and their offsets may not.
    ours, theirs = index.search(QUESTION, k=5), copy.search(QUESTION, k=5)
    assert [(h.passage.doc_id, h.passage.start, h.passage.end) for h in ours.hits] == [
        (h.passage.doc_id, h.passage.start, h.passage.end) for h in theirs.hits
    ]
    assert ours.answer is not None and theirs.answer is not None and ours.answer.span == theirs.answer.span


def test_settings_differ_and_are_named(open_index: Callable[..., Index]) -> None:
    index = open_index()
    index.close()
    with pytest.raises(Exception, match="max_tokens"):
        open_index(chunking=Chunking(max_tokens=64))


def test_drop_removes_everything(open_index: Callable[..., Index]) -> None:
    index = open_index()
    index.add(FERRIES, doc_id="ferries")
    index.storage.drop()
    index.close()
    assert open_index().counts() == (0, 0)


def test_upkeep_is_an_optional_protocol(open_index: Callable[..., Index], request: pytest.FixtureRequest) -> None:
    """Only what a backend needs: the embedded index merges segments, Qdrant fixes BM25 lengths."""
    storage = open_index().storage
    embedded = request.node.callspec.params["open_index"] == "embedded"
    assert isinstance(storage, Merging) == embedded
    assert isinstance(storage, FixedLengths) != embedded
