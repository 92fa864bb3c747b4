"""Who serves an index folder: each `groundqa serve` process holds a shared lock on its
serving.lock for as long as it runs (the kernel drops it when the process dies, kill -9 too), and
`groundqa rebuild`, which moves the folder away, takes it exclusively or refuses to start."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from groundqa.index.errors import IndexBusy

LOCK = "serving.lock"


def hold(folder: Path) -> int:
    """The shared lock of a server, as an open descriptor (closing it lets go); IndexBusy while
    a rebuild holds the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise IndexBusy(
            f"groundqa rebuild is remaking {folder}; start the server again when it has finished"
        ) from None
    return fd


@contextmanager
def alone(folder: Path) -> Iterator[None]:
    """The folder held exclusively, for a command that moves it; IndexBusy while a server runs on it."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusy(
                f"a groundqa server is serving {folder}: stop it, then run this again "
                "(rebuild moves the folder away, and a running server would go on writing there)"
            ) from None
        yield
    finally:
        os.close(fd)
