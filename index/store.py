"""Documents, passages and sentences in SQLite: the index's source of truth."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from index.text import Passage, Span

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    source TEXT,
    sha256 TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sentences (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_id);
CREATE INDEX IF NOT EXISTS sentences_doc ON sentences(doc_id);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state VALUES ('revision', 0);
"""


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    source: str | None
    sha256: str
    chars: int
    passages: int
    created_at: str


@dataclass(frozen=True)
class Rows:
    """Everything searchable, in id order; passage and sentence text is sliced from the documents."""

    documents: dict[str, Document]
    texts: dict[str, str]
    passage_ids: list[int]
    passages: list[Passage]
    sentence_ids: list[int]
    sentences: list[tuple[str, Span]]


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        with self._read() as db:
            db.execute("PRAGMA journal_mode = WAL")  # kept in the file: readers never wait for a writer
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection that is closed afterwards (sqlite3's own context manager leaves it open)."""
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def revision(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT value FROM state WHERE key = 'revision'").fetchone()[0])

    def next_ids(self) -> tuple[int, int]:
        """The first free passage and sentence ids."""
        with self._read() as db:
            p = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM passages").fetchone()[0]
            s = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM sentences").fetchone()[0]
        return int(p), int(s)

    def document_text(self, doc_id: str) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT text FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return None if row is None else str(row[0])

    def rows(self) -> Rows:
        with self._read() as db:
            counts = dict(db.execute("SELECT doc_id, COUNT(*) FROM passages GROUP BY doc_id"))
            documents, texts = {}, {}
            for doc_id, title, source, sha, text, created in db.execute(
                "SELECT doc_id, title, source, sha256, text, created_at FROM documents"
                " ORDER BY created_at, doc_id"
            ):
                documents[doc_id] = Document(
                    doc_id, title, source, sha, len(text), counts.get(doc_id, 0), created
                )
                texts[doc_id] = text
            passage_rows = db.execute('SELECT id, doc_id, start, "end" FROM passages ORDER BY id').fetchall()
            sentence_rows = db.execute(
                'SELECT id, doc_id, start, "end" FROM sentences ORDER BY id'
            ).fetchall()
        return Rows(
            documents=documents,
            texts=texts,
            passage_ids=[r[0] for r in passage_rows],
            passages=[Passage(d, s, e, texts[d][s:e]) for _, d, s, e in passage_rows],
            sentence_ids=[r[0] for r in sentence_rows],
            sentences=[(d, Span(s, e)) for _, d, s, e in sentence_rows],
        )


def insert_document(
    db: sqlite3.Connection,
    doc: Document,
    text: str,
    passages: list[tuple[int, Passage]],
    sentences: list[tuple[int, Span]],
) -> None:
    db.execute(
        "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
        (doc.doc_id, doc.title, doc.source, doc.sha256, text, doc.created_at),
    )
    db.executemany(
        "INSERT INTO passages VALUES (?, ?, ?, ?)",
        [(i, doc.doc_id, p.start, p.end) for i, p in passages],
    )
    db.executemany(
        "INSERT INTO sentences VALUES (?, ?, ?, ?)",
        [(i, doc.doc_id, s.start, s.end) for i, s in sentences],
    )


def delete_document(db: sqlite3.Connection, doc_id: str) -> None:
    db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))


def bump_revision(db: sqlite3.Connection, revision: int) -> None:
    db.execute("UPDATE state SET value = ? WHERE key = 'revision'", (revision,))
