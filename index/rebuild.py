"""`groundqa rebuild`: the documents of an embedded index (texts, titles, pages, originals), read
back through the storage contract and embedded again into a new folder that then takes the
index's place; the old folder is kept beside it. Refused while a server runs on the folder (it
would go on writing into the folder moved away)."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from groundqa.index import folder_lock
from groundqa.index.config import IndexSettings, open_index
from groundqa.index.errors import IndexDamaged, UsageError
from groundqa.index.index import DocumentInput
from groundqa.index.lexical import BM25Params
from groundqa.index.storage.embedded import SegmentStorage
from groundqa.index.storage.factory import Location, open_storage

# Documents embedded and committed at a time.
BATCH = 64


@dataclass(frozen=True)
class Rebuilt:
    documents: int
    passages: int
    kept: Path  # the old folder, moved aside
    note: str  # where the documents were read from, when not the folder itself


def rebuild(settings: IndexSettings, batches: Callable[[range], Iterable[int]] = iter) -> Rebuilt:
    """batches wraps the range of batch starts (a progress bar)."""
    if settings.qdrant_url:
        raise UsageError("rebuild makes an embedded index again; Qdrant keeps its own copies")
    folder = Path(settings.index_dir)
    if not (folder / "store.sqlite").exists():
        raise UsageError(f"no index at {folder}; give --index")
    with folder_lock.alone(folder):
        source, note = _source(folder)
        items = _stored_items(source)
        fresh = folder.with_name(folder.name + ".rebuilding")
        shutil.rmtree(fresh, ignore_errors=True)
        index = open_index(settings.model_copy(update={"index_dir": fresh}))
        for at in batches(range(0, len(items), BATCH)):
            index.add_many(items[at : at + BATCH])
        docs, passages = index.counts()
        index.close()
        kept = folder.with_name(f"{folder.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(kept)
        fresh.rename(folder)
    return Rebuilt(docs, passages, kept, note)


def _salvaged(folder: Path) -> SegmentStorage:
    """The folder's segment storage, opened to salvage what it holds."""
    stored = open_storage(Location(folder), {}, 0, BM25Params(), salvage=True)
    if not isinstance(stored, SegmentStorage):  # a folder always opens one: a named error, not an assert
        stored.close()
        raise IndexDamaged(f"{folder} does not open as a segment folder; rebuild reads only those")
    return stored


def _source(folder: Path) -> tuple[Path, str]:
    """The folder whose store holds the last committed revision: the index itself, or, where its
    database is behind the revision committed (a rebuild of before 0.9.0 moved the folder away
    under a running server, which went on writing there), the moved-away folder that holds it."""
    committed, have = _revisions(folder)
    if committed is None or have is None or have >= committed:
        return folder, ""
    for sibling in sorted(folder.parent.glob(f"{folder.name}.damaged-*"), reverse=True):
        if (sibling / "store.sqlite").exists() and _revisions(sibling)[1] == committed:
            return (
                sibling,
                f" from {sibling}, which holds revision {committed}, the last committed "
                f"({folder} held {have})",
            )
    return (
        folder,
        f" from what {folder} holds (revision {have}; {committed} was committed and no folder "
        "beside it holds it)",
    )


def _revisions(folder: Path) -> tuple[int | None, int | None]:
    """The revision last committed and the one the database holds (None: unreadable)."""
    try:
        stored = _salvaged(folder)
    except IndexDamaged:
        return None, None
    try:
        return stored.revisions()
    finally:
        stored.close()


def _stored_items(folder: Path) -> list[DocumentInput]:
    try:
        stored = _salvaged(folder)  # quick_check: texts must be whole
    except IndexDamaged as exc:
        raise UsageError(str(exc)) from exc
    try:
        items = []
        for doc in stored.documents():
            _, text = stored.document(doc.doc_id)
            items.append(
                DocumentInput(
                    text,
                    doc.title,
                    doc.doc_id,
                    doc.source,
                    doc.format,
                    doc.page_starts,
                    doc.published,
                    stored.original(doc.doc_id),
                )
            )
        return items
    except sqlite3.Error as exc:
        raise UsageError(
            f"{folder / 'store.sqlite'} cannot be read ({exc}): restore it from a backup"
        ) from exc
    finally:
        stored.close()
