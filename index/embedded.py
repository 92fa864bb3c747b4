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
import errno
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

import faiss
import numpy as np
from filelock import FileLock, Timeout

from groundqa.index import segment, store
from groundqa.index.errors import DiskFull, DocumentNotFound, IndexBusy, IndexDamaged, IndexMoved
from groundqa.index.lexical import BM25Params, Postings, lexical_input, piece_idf, scores, scores_of, stats
from groundqa.index.segment import Segment
from groundqa.index.storage import (
    Document,
    DocumentVectors,
    Ingested,
    NewDocument,
    Original,
    Prepared,
    Reader,
    StaleRead,
    Storage,
    StoredText,
    compare_meta,
    not_found,
    settle,
)
from groundqa.index.store import Store

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
    ) -> None:
        """The index in folder (made if missing), checked against the settings in meta."""
        self.folder = folder
        try:
            with self._disk("the index cannot be opened"):
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

    def export(self, doc_ids: list[str]) -> list[tuple[NewDocument, DocumentVectors]]:
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
            vectors, text, title = opened[places[d][0]].export(places[d][1]), texts[d][1], docs[d].title
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
            if not (getattr(exc, "errno", None) == errno.ENOSPC or _sqlite_full(exc, self.folder)):
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


class SegmentReader(Reader):
    def __init__(
        self,
        revision: int,
        parts: list[tuple[Segment, np.ndarray]],
        db: Store,
        dimension: int,
        bm25: BM25Params,
    ) -> None:
        self.revision = revision
        self.segments = [s for s, _ in parts]
        self.db = db
        self.dimension = dimension
        self.bm25 = bm25
        self.live: list[np.ndarray] = []  # per segment: live mask of its passages
        self.live_docs: list[np.ndarray] = []
        for seg, docs in parts:
            live_docs = np.zeros(len(seg.doc_ids), dtype=bool)
            live_docs[docs] = True
            self.live_docs.append(live_docs)
            self.live.append(live_docs[seg.arrays["passage_doc"]])
        self.p_base = np.cumsum([0] + [s.passages for s in self.segments])
        self.s_base = np.cumsum([0] + [len(s.arrays["sentence_doc"]) for s in self.segments])
        self.rows = int(self.p_base[-1])
        df_len = max((len(s.arrays["piece_df"]) for s in self.segments), default=0)
        self.piece_df = np.zeros(df_len, dtype=np.int64)
        for s in self.segments:
            self.piece_df[: len(s.arrays["piece_df"])] += s.arrays["piece_df"]
        self.numbers = {seg.number: i for i, seg in enumerate(self.segments)}

    # --- keys --------------------------------------------------------------------------------

    def _split(self, keys: np.ndarray, base: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(segment, positions in keys, rows in the segment) for each segment the keys touch."""
        keys = np.asarray(keys, dtype=np.int64)
        which = np.searchsorted(base, keys, side="right") - 1
        for i in np.unique(which):
            at = np.nonzero(which == i)[0]
            yield int(i), at, keys[at] - base[i]

    # --- passages ----------------------------------------------------------------------------

    def allowed(self, doc_ids: list[str]) -> np.ndarray:
        places = self.db.places(doc_ids)
        unknown = [d for d in doc_ids if d not in places]
        if unknown:
            raise DocumentNotFound(f"doc_ids not in the index: {', '.join(unknown)}", list(unknown))
        parts = []
        for d, (number, n) in places.items():
            i = self.numbers.get(number)
            if i is None or not self.live_docs[i][n]:
                raise StaleRead(f"{d} changed after revision {self.revision}")
            bounds = self.segments[i].arrays["doc_passages"]
            parts.append(np.arange(bounds[n], bounds[n + 1]) + self.p_base[i])
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def dense_search(
        self, vector: np.ndarray, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None:
            sims = self.passage_vectors(allowed) @ vector
            return _top(allowed, sims, n)
        keys, sims = [], []
        for i, seg in enumerate(self.segments):
            live = self.live[i]
            if not live.any():
                continue
            params = seg.search_parameters()
            if not live.all():
                # The bitmap and the selector must outlive the search: faiss keeps pointers to them.
                bitmap = np.packbits(live, bitorder="little")
                selector = faiss.IDSelectorBitmap(len(live), faiss.swig_ptr(bitmap))
                params.sel = selector
            found_sims, rows = seg.dense().search(vector[None, :], min(n, seg.passages), params=params)
            real = rows[0] >= 0
            keys.append(rows[0][real] + self.p_base[i])
            sims.append(found_sims[0][real])
        if not keys:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return _top(np.concatenate(keys), np.concatenate(sims), n)

    def lexical_search(
        self, terms: np.ndarray, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(terms) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if allowed is not None:
            found = self.passage_bm25(allowed, terms)
            positive = found > 0
            return _top(allowed[positive], found[positive], n)
        st = stats([s.passage_postings for s in self.segments], terms)
        keys, values = [], []
        for i, seg in enumerate(self.segments):
            found = scores(seg.passage_postings, terms, st, self.bm25)
            rows = np.nonzero((found > 0) & self.live[i])[0]
            keys.append(rows + self.p_base[i])
            values.append(found[rows])
        if not keys:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return _top(np.concatenate(keys), np.concatenate(values), n)

    def _gather(self, keys: np.ndarray, base: np.ndarray, name: str, width: int, dtype: type) -> np.ndarray:
        """Rows of one segment array, for keys spread over the segments."""
        out: np.ndarray = np.zeros((len(keys), width), dtype=dtype)
        for i, at, rows in self._split(keys, base):
            out[at] = self.segments[i].arrays[name][rows]
        return out

    def passage_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self._gather(keys, self.p_base, "passage_vectors", self.dimension, np.float32)

    def passage_bm25(self, keys: np.ndarray, terms: np.ndarray) -> np.ndarray:
        return self._bm25(keys, terms, self.p_base, [s.passage_postings for s in self.segments])

    def _bm25(
        self, keys: np.ndarray, terms: np.ndarray, base: np.ndarray, parts: list[Postings]
    ) -> np.ndarray:
        out = np.zeros(len(keys), dtype=np.float32)
        if len(terms) == 0 or len(keys) == 0:
            return out
        st = stats(parts, terms)
        for i, at, rows in self._split(keys, base):
            order = np.argsort(rows)
            out[at[order]] = scores_of(parts[i], rows[order], terms, st, self.bm25)
        return out

    def passages(self, keys: np.ndarray) -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = [("", 0, 0)] * len(keys)
        for i, at, rows in self._split(keys, self.p_base):
            seg = self.segments[i]
            docs, spans = seg.arrays["passage_doc"][rows], seg.arrays["passage_span"][rows]
            for j, d, (start, end) in zip(at, docs, spans, strict=True):
                out[j] = (seg.doc_ids[d], int(start), int(end))
        return out

    # --- sentences ---------------------------------------------------------------------------

    def sentences_of(self, keys: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(keys)
        for i, at, rows in self._split(keys, self.p_base):
            ranges = self.segments[i].arrays["passage_sentences"][rows]
            for j, (lo, hi) in zip(at, ranges, strict=True):
                out[j] = np.arange(lo, hi, dtype=np.int64) + self.s_base[i]
        return out

    def sentence_vectors(self, keys: np.ndarray) -> np.ndarray:
        return self._gather(keys, self.s_base, "sentence_vectors", self.dimension, np.float32)

    def sentence_bm25(self, keys: np.ndarray, terms: np.ndarray) -> np.ndarray:
        return self._bm25(keys, terms, self.s_base, [s.sentence_postings for s in self.segments])

    def sentence_spans(self, keys: np.ndarray) -> np.ndarray:
        return self._gather(keys, self.s_base, "sentence_span", 2, np.int64)

    # --- word pieces and documents -------------------------------------------------------------

    def pieces(self, key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = int(np.searchsorted(self.p_base, key, side="right") - 1)
        return self.segments[i].piece_vectors(int(key - self.p_base[i]))

    def piece_idf(self, pieces: np.ndarray) -> np.ndarray:
        pieces = np.asarray(pieces, dtype=np.int64)
        known = pieces < len(self.piece_df)
        df = np.zeros(len(pieces), dtype=np.float64)
        df[known] = self.piece_df[pieces[known]]
        return piece_idf(df, self.rows)

    def texts(self, keys: np.ndarray) -> dict[str, StoredText]:
        """From SQLite, which may have moved on since this reader's revision: a text whose sha256
        is not the one this reader's offsets were made for raises StaleRead."""
        want: dict[str, str] = {}
        for i, _, rows in self._split(keys, self.p_base):
            seg = self.segments[i]
            for n in seg.arrays["passage_doc"][rows]:
                want[seg.doc_ids[n]] = seg.doc_sha256[n]
        found = self.db.texts(set(want))
        for doc_id, sha in want.items():
            if doc_id not in found or found[doc_id][2] != sha:
                raise StaleRead(f"{doc_id} changed after revision {self.revision}")
        return {doc_id: StoredText(title, text, pages) for doc_id, (title, text, _, pages) in found.items()}


def _sqlite_full(exc: Exception, folder: Path) -> bool:
    """SQLite's full disk: SQLITE_FULL, or an I/O error (its shared memory or journal could not
    grow) on a disk with (almost) no space left."""
    if not isinstance(exc, sqlite3.Error):
        return False
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return True
    try:
        return "disk I/O error" in str(exc) and shutil.disk_usage(folder.parent).free < 1 << 20
    except OSError:
        return False


def _top(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best, best first; ties keep key order."""
    order = np.lexsort((keys, -values))[:n]
    return keys[order].astype(np.int64), values[order].astype(np.float32)


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
