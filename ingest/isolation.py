"""Parsing a file from outside in a child process (isolated), under a time and memory limit, in one
of a few parse slots shared by every process on the index: a hostile PDF or a zip bomb costs
that process, never the server, and many uploads at once never parse more than the machine holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from groundqa.index.errors import FileRefused, FileTooLarge, ParseBusy
from groundqa.ingest.formats import Extracted, Progress, check_size, detect, extract
from groundqa.ingest.limits import FileLimits


def isolated(
    data: bytes,
    name: str = "",
    limits: FileLimits = FileLimits(),
    progress: Progress | None = None,
    slotted: bool = False,
) -> Extracted:
    """extract() in a child process that is killed after limits.timeout seconds and may use
    limits.memory bytes: parsing a file from outside never hangs or bloats the caller. Plain
    text needs no child. progress hears of the pages read as the child reads them; slotted: the
    caller holds a parse slot (parse_slot) already."""
    if detect(data, name) in ("text", "markdown"):
        return extract(data, name, limits)
    check_size(data, limits)  # before the bytes go to the child
    if slotted:
        return _in_child(data, name, limits, progress)
    with parse_slot(limits):
        return _in_child(data, name, limits, progress)


def _in_child(data: bytes, name: str, limits: FileLimits, progress: Progress | None) -> Extracted:
    context = multiprocessing.get_context("forkserver")
    ours, theirs = context.Pipe(duplex=False)
    # The child's temporary files (OCR's page images) go here, removed whatever becomes of it.
    workdir = tempfile.mkdtemp(prefix="groundqa-parse-")
    child = context.Process(
        target=_child, args=(theirs, data, name, limits, progress is not None, workdir), daemon=True
    )
    child.start()
    theirs.close()
    deadline = time.monotonic() + limits.timeout
    try:
        while True:
            if not ours.poll(max(0.0, deadline - time.monotonic())):
                raise FileRefused(
                    f"reading the file took longer than {limits.timeout:g} s (GROUNDQA_PARSE_TIMEOUT); "
                    "it may be damaged, or too large to read here"
                )
            try:
                kind, value = ours.recv()
            except EOFError as exc:  # the child died: out of memory, or a crash in a parser
                raise FileRefused(
                    "reading the file ran out of memory or crashed the parser: it may be damaged "
                    "or built to exhaust memory"
                ) from exc
            if kind != "page":
                break
            if progress is not None:
                progress(*value)
    finally:
        ours.close()
        _kill_group(child.pid)  # the child and what it started (tesseract), all of them
        if child.is_alive():
            child.kill()
        child.join()
        shutil.rmtree(workdir, ignore_errors=True)
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    raise (FileTooLarge if kind == "large" else FileRefused)(value)


_waiting = threading.BoundedSemaphore(64)  # parses of this process waiting for a slot, at most
_local_slots: dict[int, threading.BoundedSemaphore] = {}


@contextlib.contextmanager
def parse_slot(limits: FileLimits) -> Iterator[None]:
    """One of limits.parses slots, shared by every process whose limits name the same folder
    (lock files there; the kernel frees a dead process's), else by this process's threads."""
    if not _waiting.acquire(blocking=False):
        raise ParseBusy("too many files are waiting to be read; try again shortly")
    try:
        deadline = time.monotonic() + limits.wait
        while True:
            held = _take(limits)
            if held is not None:
                break
            if time.monotonic() > deadline:
                raise ParseBusy(
                    f"{limits.parses} files are being read and none finished within {limits.wait:g} s "
                    "(GROUNDQA_MAX_PARSES); try again shortly"
                )
            time.sleep(0.05)
    finally:
        _waiting.release()
    try:
        yield
    finally:
        held()


def _take(limits: FileLimits) -> Callable[[], None] | None:
    """A free slot and what frees it, or None."""
    if limits.slots is None:
        semaphore = _local_slots.setdefault(limits.parses, threading.BoundedSemaphore(limits.parses))
        return semaphore.release if semaphore.acquire(blocking=False) else None
    folder = Path(limits.slots)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(limits.parses):
        fd = os.open(folder / f"slot-{number}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return lambda fd=fd: os.close(fd)  # type: ignore[misc]
    return None


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _child(out: Connection, data: bytes, name: str, limits: FileLimits, pages: bool, workdir: str) -> None:
    os.setsid()  # a process group of its own, which the parent kills whole
    tempfile.tempdir = workdir
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
    told = (lambda done, total: out.send(("page", (done, total)))) if pages else None
    try:
        result: tuple[str, Any] = ("ok", extract(data, name, limits, told))
    except FileTooLarge as exc:
        result = ("large", str(exc))
    except FileRefused as exc:
        result = ("refused", str(exc))
    except MemoryError:
        result = ("refused", "reading the file ran out of memory: it may be built to exhaust memory")
    except Exception as exc:  # any parser's failure on a bad file is the file's, said in one line
        result = ("refused", f"the file cannot be read ({type(exc).__name__}: {exc})"[:500])
    out.send(result)
    out.close()
