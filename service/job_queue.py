"""Background ingestion jobs: an upload sent with `Prefer: respond-async` is answered at once
(202, Location: /v1/jobs/{id}) and read, embedded and stored by a job, whose progress a client
polls. Jobs are kept with the index (jobs.sqlite and the waiting files in its folder), so every
worker of a server sees every job, and any worker runs the next one waiting. A job's document is
stored in one commit, whole or not at all; a job that a dead process was running is reported
failed, and uploading the file again works."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from prometheus_client import Gauge

from groundqa.index.errors import DiskFull, FileTooLarge, GroundQAError, IndexBusy, NotFound, disk_full
from groundqa.index.index import Index, Progress
from groundqa.ingest.limits import FileLimits
from groundqa.service.schemas import Uploaded
from groundqa.service.uploads import store_file

STATES = ("queued", "running", "done", "failed")
# Seconds a runner waits for a job before it looks again (a job submitted to another worker
# wakes no thread here).
IDLE = 1.0
# Jobs GET /v1/jobs lists, newest first.
LISTED = 50
# Finished jobs kept: for this many days, and this many at most.
KEPT_DAYS = 7
KEPT = 1000
# Seconds between two prunings by a runner.
PRUNE_EVERY = 60.0
# A running job's runner writes its heartbeat this often; a job of another host silent for
# ORPHANED seconds has lost its runner.
HEARTBEAT = 30.0
ORPHANED = 300.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, stage TEXT NOT NULL, done INTEGER NOT NULL,
    total INTEGER NOT NULL, name TEXT NOT NULL, doc_id TEXT, title TEXT, replace INTEGER NOT NULL,
    bytes INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, owner TEXT,
    result TEXT, error TEXT
)
"""


class QueueFull(GroundQAError):
    """More jobs or bytes waiting than the settings allow: try again later (429)."""


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    stage: str  # waiting, reading (pages), embedding (texts), saving, finished
    done: int
    total: int
    name: str
    doc_id: str | None
    title: str | None
    replace: bool
    created_at: str
    updated_at: str
    result: Uploaded | None  # when done: what the synchronous upload answers
    error: str | None


class Jobs:
    """The jobs of one index folder; start() runs them on a thread of this process."""

    def __init__(
        self,
        folder: Path,
        index: Callable[[], Index],
        limits: Callable[[], FileLimits],
        max_jobs: int,
        max_bytes: int,
        writes: Gauge,
    ) -> None:
        self.folder = folder
        self.writes = writes  # the metric of writes in progress
        self.files = folder / "jobs"
        self.index, self.limits = index, limits
        self.max_jobs, self.max_bytes = max_jobs, max_bytes
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pruned = 0.0  # when this runner last pruned (time.monotonic())
        self.files.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(_SCHEMA)

    # --- the HTTP side -----------------------------------------------------------------------

    def submit(
        self, name: str, data: bytes | BinaryIO, doc_id: str | None, title: str | None, replace: bool
    ) -> Job:
        """A new queued job holding the file (bytes, or a file read in pieces), or QueueFull."""
        if isinstance(data, bytes):
            data = io.BytesIO(data)
        size = data.seek(0, io.SEEK_END)
        data.seek(0)
        if size > self.max_bytes:  # it could never be queued: no use in trying again (413, not 429)
            raise FileTooLarge(
                f"the file has {size:,} bytes; background jobs hold at most {self.max_bytes:,} "
                "(GROUNDQA_MAX_JOB_BYTES)"
            )
        job_id = uuid.uuid4().hex
        now = _now()
        try:
            self._queue(job_id, name, data, size, doc_id, title, replace, now)
        except (OSError, sqlite3.Error) as exc:
            (self.files / job_id).unlink(missing_ok=True)  # no partial file left, ever
            if disk_full(exc, self.folder):
                raise DiskFull(
                    f"no space left on the disk of {self.folder}: nothing of this upload was kept; "
                    "free some space, then send it again"
                ) from exc
            raise
        self._wake.set()
        return self.get(job_id)

    def _queue(
        self,
        job_id: str,
        name: str,
        data: BinaryIO,
        size: int,
        doc_id: str | None,
        title: str | None,
        replace: bool,
        now: str,
    ) -> None:
        """The file kept and its job queued, in one transaction, or QueueFull."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            waiting, held = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM jobs WHERE state IN ('queued', 'running')"
            ).fetchone()
            if waiting >= self.max_jobs:
                raise QueueFull(
                    f"{waiting} jobs are waiting or running; the limit is {self.max_jobs} "
                    "(GROUNDQA_MAX_JOBS): try again when one has finished"
                )
            if held + size > self.max_bytes:
                raise QueueFull(
                    f"the jobs waiting hold {held:,} bytes and this file {size:,}; the limit is "
                    f"{self.max_bytes:,} (GROUNDQA_MAX_JOB_BYTES): try again when one has finished"
                )
            with (self.files / job_id).open("wb") as path:
                shutil.copyfileobj(data, path)
            db.execute(
                "INSERT INTO jobs VALUES "
                "(?, 'queued', 'waiting', 0, 0, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                (job_id, name, doc_id, title, int(replace), size, now, now),
            )

    def get(self, job_id: str) -> Job:
        with self._db() as db:
            row = db.execute(f"SELECT {_FIELDS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}; GET /v1/jobs lists the recent ones")
        return _job(row)

    def recent(self) -> list[Job]:
        with self._db() as db:
            rows = db.execute(
                f"SELECT {_FIELDS} FROM jobs ORDER BY created_at DESC LIMIT ?", (LISTED,)
            ).fetchall()
        return [_job(r) for r in rows]

    # --- the runner --------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._run, name="jobs", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._orphans()
                if time.monotonic() - self._pruned > PRUNE_EVERY:
                    self.prune()
                    self._pruned = time.monotonic()
                job = self._claim()
            except sqlite3.Error:
                job = None
            if job is None:
                self._wake.wait(IDLE)
                self._wake.clear()
                continue
            try:
                self._work(job)
            except (OSError, sqlite3.Error):  # jobs.sqlite unwritable (a full disk): the runner goes on
                self._wake.wait(IDLE)

    def prune(self, now: datetime | None = None) -> int:
        """Finished jobs are kept KEPT_DAYS, and the latest KEPT of them at most: jobs.sqlite
        stays small however many uploads a server takes. How many were removed."""
        since = ((now or datetime.now(UTC)) - timedelta(days=KEPT_DAYS)).isoformat(timespec="milliseconds")
        with self._db() as db:
            gone = db.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed') AND (updated_at < ? OR id NOT IN "
                "(SELECT id FROM jobs WHERE state IN ('done', 'failed') ORDER BY updated_at DESC LIMIT ?))",
                (since, KEPT),
            ).rowcount
        return int(gone)

    def _claim(self) -> Job | None:
        """The oldest queued job, marked running by this process (one writer at a time decides)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', stage = 'reading', owner = ?, updated_at = ? "
                "WHERE id = ?",
                (self.owner, _now(), row[0]),
            )
        return self.get(row[0])

    def _orphans(self, now: datetime | None = None) -> None:
        """Jobs whose process has died are failed: nothing of them was stored (a commit is whole
        or absent), and their file is removed. On this host its process is looked for; a job of
        another host (a container recreated on the same volume) is dead when its runner's
        heartbeat has been silent for ORPHANED seconds."""
        host = socket.gethostname()
        silent = ((now or datetime.now(UTC)) - timedelta(seconds=ORPHANED)).isoformat(timespec="milliseconds")
        with self._db() as db:
            rows = db.execute("SELECT id, owner, updated_at FROM jobs WHERE state = 'running'").fetchall()
        for job_id, owner, updated in rows:
            where, pid, started = (owner or "::").rsplit(":", 2)
            gone = where == host and pid.isdigit() and _started(int(pid)) != started
            if gone or (where != host and updated < silent):
                self._end(
                    job_id,
                    error="the server stopped during this job, before its document was stored: "
                    "upload the file again",
                )

    def _work(self, job: Job) -> None:
        beating = threading.Event()
        threading.Thread(target=self._beat, args=(job.id, beating), name="job-heartbeat", daemon=True).start()
        try:
            self._run_job(job)
        finally:
            beating.set()

    def _beat(self, job_id: str, done: threading.Event) -> None:
        """The running job's heartbeat: updated_at every HEARTBEAT seconds, however long a step."""
        while not done.wait(HEARTBEAT):
            with contextlib.suppress(sqlite3.Error), self._db() as db:
                db.execute(
                    "UPDATE jobs SET updated_at = ? WHERE id = ? AND state = 'running'", (_now(), job_id)
                )

    def _run_job(self, job: Job) -> None:
        try:
            with (self.files / job.id).open("rb") as data:
                stages = functools.partial(self._stage, job.id)
                result = store_file(
                    self.index(),
                    job.name,
                    data,
                    self.limits(),
                    self.writes,
                    job.title,
                    job.doc_id,
                    job.replace,
                    stages,
                )
            self._update(job.id, "saving")
            self._end(job.id, result=result)
        except IndexBusy as exc:
            self._end(job.id, error=f"the index was busy: {exc}")
        except GroundQAError as exc:
            self._end(job.id, error=str(exc))
        except Exception as exc:  # a job never takes its runner down: it fails, saying why
            self._end(job.id, error=f"the job failed ({type(exc).__name__}: {exc})")

    def _stage(self, job_id: str, stage: str) -> Progress:
        """A stage begins: its progress, written at most every 0.2 s (and at the end): polling
        clients see it move."""
        self._update(job_id, stage, 0, 0)
        last = [0.0]

        def told(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.2 or done >= total:
                last[0] = now
                self._update(job_id, stage, done, total)

        return told

    def _update(self, job_id: str, stage: str, done: int | None = None, total: int | None = None) -> None:
        """The stage and, where given, the progress of a running job."""
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET stage = ?, done = COALESCE(?, done), total = COALESCE(?, total), "
                "updated_at = ? WHERE id = ? AND state = 'running'",
                (stage, done, total, _now(), job_id),
            )

    def _end(self, job_id: str, result: Uploaded | None = None, error: str | None = None) -> None:
        state = "failed" if error is not None else "done"
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state = ?, stage = 'finished', result = ?, error = ?, updated_at = ? "
                "WHERE id = ?",
                (state, None if result is None else result.model_dump_json(), error, _now(), job_id),
            )
        (self.files / job_id).unlink(missing_ok=True)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.folder / "jobs.sqlite", timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
            if db.in_transaction:
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()


# The columns of a Job, in its fields' order.
_FIELDS = "id, state, stage, done, total, name, doc_id, title, replace, created_at, updated_at, result, error"


def _job(row: tuple[Any, ...]) -> Job:
    """A row of _FIELDS (the result stored as JSON text)."""
    found = dict(zip(_FIELDS.split(", "), row, strict=True))
    result = None if found["result"] is None else Uploaded.model_validate_json(found["result"])
    return Job(**found | {"replace": bool(found["replace"]), "result": result})


def _started(pid: int) -> str:
    """When a process started (clock ticks after boot), "" if there is none: a pid alone may have
    been reused by a process started after a kill."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
