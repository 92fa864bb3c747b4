"""A progress bar for long loops: ingest and evaluation."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any


def progress(items: Iterable[Any], what: str, unit: str = "q", total: int | None = None) -> Iterator[Any]:
    """A progress bar with an ETA on a terminal; silent in CI and pipes."""
    if not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=what, file=sys.stderr, unit=unit, leave=False, total=total)
