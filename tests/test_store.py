from __future__ import annotations

from pathlib import Path

import pytest

from groundqa.index.storage import store
from groundqa.index.storage.store import Document, NewDocument, Store


def _new(doc_id: str, text: str = "Some text.") -> NewDocument:
    return NewDocument(
        Document(doc_id, doc_id.title(), None, "sha-" + doc_id, len(text), 1, "2026-01-01"), text
    )


@pytest.fixture
def db(tmp_path: Path) -> Store:
    return Store(tmp_path / "store.sqlite")


def test_segment_ids_are_never_reused(db: Store) -> None:
    with db.transaction(write=True) as tx:
        first, second = store.next_segment(tx), store.next_segment(tx)
        store.add_segment(tx, second, 1)
        store.drop_segments(tx, [second])
    with db.transaction(write=True) as tx:
        assert store.next_segment(tx) == second + 1 > first


def test_a_state_names_live_documents_per_segment(db: Store) -> None:
    with db.transaction(write=True) as tx:
        store.add_segment(tx, 1, 2)
        store.put_document(tx, _new("a"), 1, 0)
        store.put_document(tx, _new("b"), 1, 1)
        store.bump_revision(tx)
    with db.transaction(write=True) as tx:
        store.add_segment(tx, 2, 1)
        store.put_document(tx, _new("a", "New text."), 2, 0)  # a replace: a's old rows are dead
        store.bump_revision(tx)
    state = db.state()
    assert state.revision == 2 and state.segments == {1: [1], 2: [0]}
    assert db.document("a") is not None and db.document("a")[1] == "New text."  # type: ignore[index]
    assert db.texts({"a", "b", "zzz"}) == {
        "a": ("A", "New text.", "sha-a", ()),
        "b": ("B", "Some text.", "sha-b", ()),
    }


def test_a_segment_no_document_names_is_dropped(db: Store) -> None:
    with db.transaction(write=True) as tx:
        store.add_segment(tx, 1, 1)
        store.put_document(tx, _new("a"), 1, 0)
    with db.transaction(write=True) as tx:
        assert store.delete_document(tx, "a") and not store.delete_document(tx, "a")
        store.drop_dead_segments(tx)
    assert db.state().segments == {}


def test_a_merge_moves_only_documents_still_where_it_read_them(db: Store) -> None:
    with db.transaction(write=True) as tx:
        store.add_segment(tx, 1, 2)
        store.put_document(tx, _new("a"), 1, 0)
        store.put_document(tx, _new("b"), 1, 1)
    with db.transaction(write=True) as tx:  # b replaced after the merge read segment 1
        store.add_segment(tx, 2, 1)
        store.put_document(tx, _new("b", "Newer."), 2, 0)
    with db.transaction(write=True) as tx:
        assert store.move_document(tx, "a", (1, 0), (3, 0))
        assert not store.move_document(tx, "b", (1, 1), (3, 1))
    assert db.places(["a", "b"]) == {"a": (3, 0), "b": (2, 0)}


def test_a_failed_transaction_changes_nothing(db: Store) -> None:
    with pytest.raises(RuntimeError), db.transaction(write=True) as tx:
        store.add_segment(tx, 1, 1)
        store.put_document(tx, _new("a"), 1, 0)
        store.bump_revision(tx)
        raise RuntimeError("killed")
    assert db.state().revision == 0 and db.documents() == []


def test_listing_holds_no_text(db: Store) -> None:
    with db.transaction(write=True) as tx:
        store.add_segment(tx, 1, 1)
        store.put_document(tx, _new("a", "x" * 10_000), 1, 0)
    (doc,) = db.documents()
    assert doc.chars == 10_000 and not hasattr(doc, "text")
    assert db.counts() == (1, 1)


def test_a_store_made_before_files_gains_their_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    """0.6.0's documents table had no format, page_starts or published, and no originals."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE documents (doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, source TEXT, "
        "sha256 TEXT NOT NULL, text TEXT NOT NULL, chars INTEGER NOT NULL, passages INTEGER NOT NULL, "
        "created_at TEXT NOT NULL, segment INTEGER NOT NULL, seg_doc INTEGER NOT NULL);"
        "INSERT INTO documents VALUES ('a', 'A', NULL, 'sha-a', 'Old text.', 9, 1, '2026-01-01', 1, 0);"
    )
    old.commit()
    old.close()
    db = Store(path)
    (doc,) = db.documents()
    assert (doc.doc_id, doc.format, doc.page_starts, doc.pages, doc.published) == (
        "a",
        "text",
        (),
        None,
        None,
    )
    assert db.original("a") is None
    with db.transaction(write=True) as tx:
        store.put_document(
            tx,
            NewDocument(Document("b", "B", "b.pdf", "sha-b", 4, 1, "2026-01-02", "pdf", (0, 2)), "x\n\ny"),
            1,
            1,
        )
    assert db.document("b")[0].page_at(3) == 2  # type: ignore[index]
