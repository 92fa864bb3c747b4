"""The embedded backend: immutable segment files plus SQLite, in one folder, shared by processes.

Writes cost what they change: a batch of documents becomes one new segment; a delete or a
replace only changes which rows SQLite names as live. Segments of similar size are merged (Lucene's
log merge policy), which drops dead rows; `groundqa compact` merges everything.

Across processes and threads, every commit holds the folder's writer lock (write.lock) from
reading the current state to the commit, and allocates segment ids inside its SQLite transaction.
A writer builds its segment in a file of its own, outside the lock, so the model never runs while
the lock is held. Only the lock holder removes files that no committed state names.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from groundqa.index.errors import DiskFull, IndexBusy, IndexDamaged, IndexMoved, disk_full
from groundqa.index.lexical import BM25Params, lexical_input, stats
from groundqa.index.storage import (
    Document,
    DocumentVectors,
    Ingested,
    NewDocument,
    Original,
    Prepared,
    Storage,
    compare_meta,
    not_found,
    segment,
    settle,
    store,
)
from groundqa.index.storage.embedded_reader import SegmentReader
from groundqa.index.storage.segment import Segment
from groundqa.index.storage.store import Store

# Merge when this many segments share a size level (sizes within a factor of it): each passage
# is rewritten about log_10(N) times over the life of an index.
MERGE_FACTOR = 10
# A segment with more than this share of dead rows is rewritten on its own.
MAX_DEAD_SHARE = 0.5
# The steps of a commit and of a merge, in order, at which a crash test can kill the writer.
FAILPOINTS = ("written", "locked", "renamed", "committed", "swept", "merge-written", "merge-renamed")


class SegmentStorage(Storage):
    def __init__(
        self,
        folder: Path,
        meta: dict[str, object],
        dimension: int,
        bm25: BM25Params,
        lock_timeout: float = 120,
        failpoint: str | None = None,
        salvage: bool = False,
    ) -> None:
        """The index in folder (made if missing), checked against the settings in meta. salvage:
        only its documents, read as the database holds them, whatever the revision last committed
        and the segments (a rebuild reads them back; nothing is checked, made or removed)."""
        self.folder = folder
        try:
            with self._disk("the index cannot be opened"):
                if salvage:
                    self.store = Store(folder / "store.sqlite", check_committed=False)
                else:
                    self._make(meta)
        except OSError as exc:
            raise IndexDamaged(
                f"cannot open the index at {folder}: {exc.strerror or exc}; "
                "give a folder you can write with --index or GROUNDQA_INDEX_DIR"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise IndexDamaged(
                f"the index file {folder / 'store.sqlite'} is damaged ({exc}): restore the index "
                "folder from a backup (the document texts live in that file)"
            ) from exc
        except json.JSONDecodeError as exc:
            raise IndexDamaged(
                f"the index file {folder / 'meta.json'} is damaged ({exc}): restore it from a backup"
            ) from exc
        self.dimension = dimension
        self.bm25 = bm25
        self.lock_timeout = lock_timeout
        # For crash tests: the step of a commit at which this process kills itself (FAILPOINTS).
        self.failpoint = failpoint
        self._file_lock = FileLock(folder / "write.lock", thread_local=False)
        self._merge_lock = FileLock(folder / "merge.lock", thread_local=False)
        self._thread_lock = threading.Lock()  # one writer thread of this process at a time
        self._merge_thread_lock = threading.Lock()
        self._reload = threading.Lock()
        self._open: dict[int, Segment] = {}
        self._open_lock = threading.Lock()
        self._seen: tuple[int, ...] = ()
        self._reader: SegmentReader | None = None
        self._place = _identity(folder)
        if not salvage:
            self._sweep_if_free()

    def _make(self, meta: dict[str, object]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "meta.json"
        if path.exists():
            compare_meta(json.loads(path.read_text()), meta, str(self.folder))
        else:
            tmp = path.with_name(f"meta.json.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(meta, indent=2))
            tmp.replace(path)
        self.segments_dir = self.folder / "segments"
        self.tmp_dir = self.folder / "tmp"
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        self.store = Store(self.folder / "store.sqlite")

    # --- reading ---------------------------------------------------------------------------

    def reader(self, fresh: bool = False) -> SegmentReader:
        """The reader of the latest commit; a stat of the SQLite files tells whether there is one.
        A stat can miss a commit (where the file system's timestamps are coarse, two commits in one
        tick that leave the WAL the same size): fresh, after a read found its state stale, asks
        SQLite for the revision itself."""
        self._check_place()
        seen = self._signature()
        current = self._reader
        if current is not None and seen == self._seen and not fresh:
            return current
        with self._reload:
            if self._reader is None or fresh or self._signature() != self._seen:
                self._seen = self._signature()
                if self._reader is None or self.store.revision() != self._reader.revision:
                    self._reader = self._load()
            return self._reader

    def _signature(self) -> tuple[int, ...]:
        out: list[int] = []
        for name in ("store.sqlite", "store.sqlite-wal"):
            try:
                st = os.stat(self.folder / name)
                out += [st.st_mtime_ns, st.st_size, st.st_ino]
            except FileNotFoundError:
                out += [0, 0, 0]
        return tuple(out)

    def _load(self) -> SegmentReader:
        for _ in range(20):
            state = self.store.state()
            try:
                opened = self._segments(list(state.segments))
            except FileNotFoundError as exc:  # merged away after the state was read: read it again
                if self.store.revision() == state.revision:  # no writer moved on: it is gone
                    raise segment.damaged(Path(exc.filename), "it is missing") from exc
                continue
            parts = [(opened[s], np.array(live, dtype=np.int64)) for s, live in state.segments.items()]
            return SegmentReader(state.revision, parts, self.store, self.dimension, self.bm25)
        raise IndexBusy(f"{self.folder} kept changing while it was read; try again")

    def _segments(self, numbers: list[int]) -> dict[int, Segment]:
        """These segments, opened once and kept while a state names them: the cache forgets the
        others, so a merged-away file is closed once no reader holds it."""
        with self._open_lock:
            self._open = {n: self._open.get(n) or Segment.open(self._path(n)) for n in numbers}
            return self._open

    def existing(self, doc_ids: list[str]) -> dict[str, Document]:
        with self.store.transaction() as db:
            return store.existing(db, doc_ids)

    def documents(self) -> list[Document]:
        return self.store.documents()

    def document(self, doc_id: str) -> tuple[Document, str]:
        found = self.store.document(doc_id)
        if found is None:
            raise not_found(doc_id)
        return found

    def original(self, doc_id: str) -> Original | None:
        self.document(doc_id)
        return self.store.original(doc_id)

    def counts(self) -> tuple[int, int]:
        return self.store.counts()

    def revisions(self) -> tuple[int | None, int]:
        """The revision last committed (None: not recorded) and the one the database holds."""
        return self.store.committed(), self.store.revision()

    def mean_lengths(self) -> tuple[float, float]:
        """Measured over the latest commit's rows (the embedded index scores with the current means)."""
        reader = self.reader()
        return tuple(  # type: ignore[return-value]
            stats([getattr(s, name) for s in reader.segments], np.zeros(0, dtype=np.uint64)).mean_length
            for name in ("passage_postings", "sentence_postings")
        )

    def drop(self) -> None:
        """Remove the index's files; the folder itself stays."""
        self.close()
        for path in (self.segments_dir, self.tmp_dir):
            shutil.rmtree(path, ignore_errors=True)
        for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "committed", "meta.json"):
            (self.folder / name).unlink(missing_ok=True)

    def close(self) -> None:
        self.store.close()
        with self._open_lock:
            self._open = {}
        self._reader = None

    def dump(self, doc_ids: list[str]) -> list[tuple[NewDocument, DocumentVectors]]:
        """These documents as the latest commit holds them: one query for the places, one for the
        rows, the texts BM25 reads made again from the text."""
        places, docs = self.store.places(doc_ids), self.existing(doc_ids)
        texts = self.store.texts(set(doc_ids))
        missing = [d for d in doc_ids if d not in places or d not in texts]
        if missing:
            raise not_found(missing[0])
        opened = {n: Segment.open(self._path(n)) for n in {number for number, _ in places.values()}}
        out = []
        for d in doc_ids:
            vectors, text, title = opened[places[d][0]].dump(places[d][1]), texts[d][1], docs[d].title
            vectors = dataclasses.replace(
                vectors,
                passage_texts=[lexical_input(title, text[s:e]) for s, e in vectors.passages],
                sentence_texts=[text[s:e] for s, e in vectors.sentences],
            )
            out.append((NewDocument(docs[d], text, self.store.original(d)), vectors))
        return out

    # --- writing ---------------------------------------------------------------------------

    def commit(self, batch: list[Prepared], replace: bool) -> list[Ingested]:
        if not batch:
            return []
        tmp = self._tmp_path()
        try:
            with self._disk("nothing of this write was stored"):
                arrays = segment.build([p.vectors for p in batch], self.dimension)
                segment.write(tmp, [(p.vectors.doc_id, p.vectors.sha256) for p in batch], arrays)
                self._at("written")
                with self._locked():
                    self._at("locked")
                    with self.store.transaction(write=True) as db:
                        results = self._commit(db, tmp, batch, replace)
                    self._at("committed")
        finally:
            tmp.unlink(missing_ok=True)
        return results

    def _commit(
        self, db: sqlite3.Connection, tmp: Path, batch: list[Prepared], replace: bool
    ) -> list[Ingested]:
        old = store.existing(db, [p.new.document.doc_id for p in batch])
        results = settle(old, [p.new.document for p in batch], replace)
        states = [r.state for r in results]
        if any(s != "unchanged" for s in states):
            number = store.next_segment(db)
            for seg_doc, (p, s) in enumerate(zip(batch, states, strict=True)):
                if s != "unchanged":
                    store.put_document(db, p.new, number, seg_doc)
            store.add_segment(db, number, sum(len(p.vectors.passages) for p in batch))
            os.replace(tmp, self._path(number))
            segment.sync_folder(self.segments_dir)
            self._at("renamed")
            store.drop_dead_segments(db)
            store.bump_revision(db)
        return results

    def delete(self, doc_id: str) -> None:
        with (
            self._disk("the document was not deleted"),
            self._locked(),
            self.store.transaction(write=True) as db,
        ):
            if not store.delete_document(db, doc_id):
                raise not_found(doc_id)
            store.drop_dead_segments(db)
            store.bump_revision(db)

    def merge(self, everything: bool = False) -> None:
        """Merge segments that share a size level (or all of them), unless another writer is at it."""
        if not self._merge_thread_lock.acquire(blocking=everything):
            return
        try:
            try:
                self._merge_lock.acquire(timeout=self.lock_timeout if everything else 0)
            except Timeout:
                if everything:
                    raise IndexBusy(f"another process is merging {self.folder}; try again later") from None
                return
            try:
                while True:
                    state = self.store.state()
                    chosen = _choose(state.segments, self._passages(state.segments), everything)
                    if not chosen:
                        return
                    self._merge(chosen, state.segments)
                    if everything:
                        return
            finally:
                self._merge_lock.release()
        finally:
            self._merge_thread_lock.release()

    def compact(self) -> None:
        with self._disk("the compaction stopped, the index is as it was"):
            self.merge(everything=True)

    @contextmanager
    def _disk(self, what: str) -> Iterator[None]:
        """A full disk, from the segment files or from SQLite, as DiskFull: nothing of the write
        was committed (SQLite rolls back; the temporary segment is removed)."""
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            if not disk_full(exc, self.folder):
                raise
            raise DiskFull(
                f"no space left on the disk of {self.folder}: {what}; free some space, then try again"
            ) from exc

    def _passages(self, segments: dict[int, list[int]]) -> dict[int, tuple[int, int]]:
        """Live and total passages of each segment."""
        opened = self._segments(list(segments))
        out = {}
        for number, live in segments.items():
            bounds, docs = opened[number].arrays["doc_passages"], np.array(live, dtype=np.int64)
            out[number] = (int((bounds[docs + 1] - bounds[docs]).sum()), opened[number].passages)
        return out

    def _merge(self, chosen: list[int], segments: dict[int, list[int]]) -> None:
        opened = self._segments(list(segments))
        parts = [(opened[s], np.array(sorted(segments[s]), dtype=np.int64)) for s in chosen]
        docs, arrays = segment.merge(parts)
        tmp = self._tmp_path()
        passages = sum(len(c) for c in arrays["passage_doc"])
        try:
            segment.write(tmp, docs, arrays)
            if passages >= segment.ANN_MIN_PASSAGES:
                segment.write_ann(segment.ann_path(tmp), Segment.open(tmp).arrays["passage_vectors"])
            self._at("merge-written")
            with self._locked(), self.store.transaction(write=True) as db:
                number = store.next_segment(db)
                store.add_segment(db, number, passages)
                if segment.ann_path(tmp).exists():
                    os.replace(segment.ann_path(tmp), segment.ann_path(self._path(number)))
                os.replace(tmp, self._path(number))
                segment.sync_folder(self.segments_dir)
                self._at("merge-renamed")
                new = 0
                for seg, live in parts:
                    for local in live:
                        store.move_document(db, seg.doc_ids[local], (seg.number, int(local)), (number, new))
                        new += 1
                store.drop_segments(db, chosen)
                store.drop_dead_segments(db)
                store.bump_revision(db)
        finally:
            tmp.unlink(missing_ok=True)
            segment.ann_path(tmp).unlink(missing_ok=True)

    def _at(self, step: str) -> None:
        if step == self.failpoint:
            os.kill(os.getpid(), signal.SIGKILL)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The writer lock of the folder, across threads and processes; then a sweep of leftovers."""
        if not self._thread_lock.acquire(timeout=self.lock_timeout):
            raise IndexBusy(f"another writer held {self.folder} for {self.lock_timeout:.0f} s; try again")
        try:
            try:
                self._file_lock.acquire(timeout=self.lock_timeout)
            except Timeout:
                raise IndexBusy(
                    f"another process held the lock of {self.folder} for {self.lock_timeout:.0f} s; try again"
                ) from None
            try:
                self._check_place()  # under the lock: a rebuild swaps the folder under its own
                yield
                self._sweep()
                self._at("swept")
            finally:
                self._file_lock.release()
        finally:
            self._thread_lock.release()

    def _check_place(self) -> None:
        """IndexMoved when the folder at this path is no longer the one this process opened (an
        earlier groundqa rebuild moved it away under a running server): its open files would
        read and write the folder moved away."""
        if _identity(self.folder) != self._place:
            raise IndexMoved(
                f"the index folder {self.folder} was replaced after this process opened it: "
                "restart the server (or run the command again) to use the folder there now"
            )

    def _sweep_if_free(self) -> None:
        """At open, remove what a killed writer left, unless a writer is at work."""
        try:
            self._file_lock.acquire(timeout=0)
        except Timeout:
            return
        try:
            self._sweep()
        finally:
            self._file_lock.release()

    def _sweep(self) -> None:
        """Remove segment files no committed state names, and temporary files of writers that died.
        Runs under the writer lock, after the commit."""
        with self.store.transaction() as db:
            live = {int(s) for (s,) in db.execute("SELECT id FROM segments")}
        for path in self.segments_dir.glob("seg-*.*"):
            if segment.segment_number(path) not in live:
                path.unlink(missing_ok=True)
        for path in self.tmp_dir.glob("*.*"):
            pid = int(path.name.split("-", 1)[0])
            if not _alive(pid):
                path.unlink(missing_ok=True)

    def _path(self, number: int) -> Path:
        return self.segments_dir / f"seg-{number}.bin"

    def _tmp_path(self) -> Path:
        return self.tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.bin"


def _identity(folder: Path) -> tuple[int, int]:
    try:
        found = folder.stat()
    except OSError:
        return (-1, -1)
    return (found.st_dev, found.st_ino)


def _choose(segments: dict[int, list[int]], sizes: dict[int, tuple[int, int]], everything: bool) -> list[int]:
    """Which segments to merge next: all (when compacting and there is something to gain), the
    oldest MERGE_FACTOR of one size level, or one with mostly dead rows."""
    if everything:
        dead = any(live < total for live, total in sizes.values())
        return sorted(segments) if len(segments) > 1 or dead else []
    levels: dict[int, list[int]] = {}
    for number in sorted(segments):
        live, total = sizes[number]
        if total and (total - live) / total > MAX_DEAD_SHARE:
            return [number]
        levels.setdefault(int(math.log(max(live, 1), MERGE_FACTOR)), []).append(number)
    for members in levels.values():
        if len(members) >= MERGE_FACTOR:
            return members[:MERGE_FACTOR]
    return []


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
