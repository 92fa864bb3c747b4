"""Documents, segments and the revision in SQLite: the index's source of truth.

A document row names where its vectors live (segment and number in it); a segment row that no
document names any more is dead, and so is every row of a segment whose document was deleted or
replaced. Readers read the revision, the segments and the live documents in one transaction.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundqa.index.storage import Document, NewDocument, Original

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    source TEXT,
    sha256 TEXT NOT NULL,
    text TEXT NOT NULL,
    chars INTEGER NOT NULL,
    passages INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    segment INTEGER NOT NULL,
    seg_doc INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_segment ON documents(segment, seg_doc);
CREATE TABLE IF NOT EXISTS originals (
    doc_id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY, passages INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state VALUES ('revision', 0);
INSERT OR IGNORE INTO state VALUES ('next_segment', 1);
"""
_DOCUMENT = "doc_id, title, source, sha256, chars, passages, created_at, format, page_starts, published"
# Columns added since the table was first made (0.7.0), each with the value older rows take.
_ADDED = {
    "format": "TEXT NOT NULL DEFAULT 'text'",
    "page_starts": "TEXT NOT NULL DEFAULT '[]'",
    "published": "TEXT",
}


def _document(row: tuple[Any, ...]) -> Document:
    doc_id, title, source, sha256, chars, passages, created, format_, page_starts, published = row
    pages = tuple(json.loads(page_starts))
    return Document(doc_id, title, source, sha256, chars, passages, created, format_, pages, published)


@dataclass(frozen=True)
class State:
    """One committed revision: its segments and, for each, the numbers of its live documents."""

    revision: int
    segments: dict[int, list[int]]


# Idle connections kept for reuse: opening one cost 0.5 ms of a 13 ms query.
IDLE_CONNECTIONS = 4


class Store:
    def __init__(self, path: Path, check_committed: bool = True) -> None:
        """check_committed: refuse a database behind the revision last committed (off for a
        rebuild, which reads what there is)."""
        self.path = path
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        with self._connection() as db:
            # Damage shows at open, in one line, not as a query's failure later.
            problems = [" ".join(str(row[0]).split()) for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError(f"quick_check: {'; '.join(problems)}")
            db.execute("PRAGMA journal_mode = WAL")  # kept in the file: readers never wait for a writer
            db.executescript(_SCHEMA)
            if check_committed:
                self._check_committed(db)
            have = {row[1] for row in db.execute("PRAGMA table_info(documents)")}
            for column, kind in _ADDED.items():
                if column not in have:
                    db.execute(f"ALTER TABLE documents ADD COLUMN {column} {kind}")

    def _connect(self) -> sqlite3.Connection:
        # Pooled (_connection): used by one thread at a time, not always the one that opened it.
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous = FULL")  # a commit is on disk when it returns, WAL or not
        return db

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """An idle connection (or a new one), outside any transaction; kept afterwards while fewer
        than IDLE_CONNECTIONS wait, else closed (sqlite3's own context manager leaves it open)."""
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            db = self._connect()
        try:
            yield db
        except BaseException:
            db.close()
            raise
        if db.in_transaction or self._idle.qsize() >= IDLE_CONNECTIONS:
            db.close()
        else:
            self._idle.put(db)

    @property
    def _committed_path(self) -> Path:
        return self.path.with_name("committed")

    def committed(self) -> int | None:
        """The revision the last commit reached, as the file beside the database says."""
        try:
            return int(self._committed_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _check_committed(self, db: sqlite3.Connection) -> None:
        """SQLite skips write-ahead log frames that fail their checksum, and every frame after
        them, without a word: committed writes would vanish. The revision each commit reached is
        also kept in a file beside the database; a database behind it has lost writes."""
        committed = self.committed()
        if committed is None:
            return
        have = revision(db)
        if have < committed:
            raise sqlite3.DatabaseError(
                f"its write-ahead log lost committed writes: it holds revision {have}, "
                f"{committed} was committed"
            )

    def _note_committed(self, db: sqlite3.Connection) -> None:
        """After a write transaction: the revision it reached, in the file beside the database
        (replaced whole; not synced: after a power loss it may lag, never lead)."""
        tmp = self._committed_path.with_name(f"committed.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(str(revision(db)))
            os.replace(tmp, self._committed_path)
        except OSError:  # a full disk: the commit stands; the file lags, which is harmless
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the idle connections (one in use closes when its user is done)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A read transaction sees one committed state; a write one holds SQLite's write lock."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
                db.execute("COMMIT")
                if write:
                    self._note_committed(db)
            except BaseException:
                if db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    db.execute("ROLLBACK")
                raise

    def revision(self) -> int:
        with self._connection() as db:
            return revision(db)

    def state(self) -> State:
        with self.transaction() as db:
            segments: dict[int, list[int]] = {
                int(s): [] for (s,) in db.execute("SELECT id FROM segments ORDER BY id")
            }
            for segment, seg_doc in db.execute("SELECT segment, seg_doc FROM documents"):
                segments[int(segment)].append(int(seg_doc))
            return State(revision(db), segments)

    def documents(self) -> list[Document]:
        with self._connection() as db:
            rows = db.execute(f"SELECT {_DOCUMENT} FROM documents ORDER BY created_at, doc_id").fetchall()
        return [_document(row) for row in rows]

    def counts(self) -> tuple[int, int]:
        """Documents and passages."""
        with self._connection() as db:
            docs, passages = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(passages), 0) FROM documents"
            ).fetchone()
        return int(docs), int(passages)

    def document(self, doc_id: str) -> tuple[Document, str] | None:
        with self._connection() as db:
            row = db.execute(
                f"SELECT {_DOCUMENT}, text FROM documents WHERE doc_id = ?", (doc_id,)
            ).fetchone()
        return None if row is None else (_document(row[:-1]), str(row[-1]))

    def original(self, doc_id: str) -> Original | None:
        with self._connection() as db:
            row = db.execute(
                "SELECT content_type, data FROM originals WHERE doc_id = ?", (doc_id,)
            ).fetchone()
        return None if row is None else Original(str(row[0]), bytes(row[1]))

    def texts(self, doc_ids: set[str]) -> dict[str, tuple[str, str, str, tuple[int, ...]]]:
        """Title, text, sha256 and page starts of each of these documents that the index holds."""
        if not doc_ids:
            return {}
        with self._connection() as db:
            marks = ",".join("?" * len(doc_ids))
            rows = db.execute(
                f"SELECT doc_id, title, text, sha256, page_starts FROM documents WHERE doc_id IN ({marks})",
                sorted(doc_ids),
            ).fetchall()
        return {d: (title, text, sha, tuple(json.loads(pages))) for d, title, text, sha, pages in rows}

    def places(self, doc_ids: list[str]) -> dict[str, tuple[int, int]]:
        """Segment and number in it of each of these documents that the index holds."""
        with self._connection() as db:
            marks = ",".join("?" * len(doc_ids))
            rows = db.execute(
                f"SELECT doc_id, segment, seg_doc FROM documents WHERE doc_id IN ({marks})", doc_ids
            ).fetchall()
        return {d: (int(s), int(n)) for d, s, n in rows}


def revision(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM state WHERE key = 'revision'").fetchone()[0])


def existing(db: sqlite3.Connection, doc_ids: list[str]) -> dict[str, Document]:
    found: dict[str, Document] = {}
    for start in range(0, len(doc_ids), 500):  # SQLite's limit on bound parameters
        part = doc_ids[start : start + 500]
        marks = ",".join("?" * len(part))
        for row in db.execute(f"SELECT {_DOCUMENT} FROM documents WHERE doc_id IN ({marks})", part):
            found[row[0]] = _document(row)
    return found


def next_segment(db: sqlite3.Connection) -> int:
    """A segment id never used before in this index, allocated inside the commit's transaction."""
    value = int(db.execute("SELECT value FROM state WHERE key = 'next_segment'").fetchone()[0])
    db.execute("UPDATE state SET value = ? WHERE key = 'next_segment'", (value + 1,))
    return value


def add_segment(db: sqlite3.Connection, segment: int, passages: int) -> None:
    db.execute("INSERT INTO segments VALUES (?, ?)", (segment, passages))


def put_document(db: sqlite3.Connection, new: NewDocument, segment: int, seg_doc: int) -> None:
    d = new.document
    db.execute(
        "INSERT OR REPLACE INTO documents (doc_id, title, source, sha256, text, chars, passages, "
        "created_at, segment, seg_doc, format, page_starts, published) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            d.doc_id,
            d.title,
            d.source,
            d.sha256,
            new.text,
            d.chars,
            d.passages,
            d.created_at,
            segment,
            seg_doc,
            d.format,
            json.dumps(list(d.page_starts)),
            d.published,
        ),
    )
    db.execute("DELETE FROM originals WHERE doc_id = ?", (d.doc_id,))
    if new.original is not None:
        db.execute(
            "INSERT INTO originals VALUES (?, ?, ?)", (d.doc_id, new.original.content_type, new.original.data)
        )


def move_document(db: sqlite3.Connection, doc_id: str, old: tuple[int, int], new: tuple[int, int]) -> bool:
    """Point a document at its rows in a merged segment, if it still lives where the merge read it."""
    cursor = db.execute(
        "UPDATE documents SET segment = ?, seg_doc = ? WHERE doc_id = ? AND segment = ? AND seg_doc = ?",
        (*new, doc_id, *old),
    )
    return cursor.rowcount == 1


def delete_document(db: sqlite3.Connection, doc_id: str) -> bool:
    db.execute("DELETE FROM originals WHERE doc_id = ?", (doc_id,))
    return db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount == 1


def drop_dead_segments(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM segments WHERE id NOT IN (SELECT DISTINCT segment FROM documents)")


def drop_segments(db: sqlite3.Connection, segments: list[int]) -> None:
    db.executemany("DELETE FROM segments WHERE id = ?", [(s,) for s in segments])


def bump_revision(db: sqlite3.Connection) -> int:
    db.execute("UPDATE state SET value = value + 1 WHERE key = 'revision'")
    return revision(db)
