"""Domain errors: each carries the bad value and what to do about it."""

import errno
import shutil
import sqlite3
from pathlib import Path


class GroundQAError(Exception):
    """Base of the errors the CLI and HTTP layers turn into one clear message."""


# Bad input is also a ValueError, so that request models can run the same checks.
class InvalidDocument(GroundQAError, ValueError):
    pass


class InvalidQuery(GroundQAError, ValueError):
    pass


class NotFound(GroundQAError):
    """Nothing has the id asked for (404): a document, a job."""


class DocumentNotFound(NotFound):
    def __init__(self, message: str, doc_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.doc_ids = doc_ids or []  # the unknown ones, for a face that words its own message


class DocumentConflict(GroundQAError):
    def __init__(self, message: str, doc_id: str | None = None) -> None:
        super().__init__(message)
        self.doc_id = doc_id


class ModelError(GroundQAError):
    pass


class IndexMismatch(GroundQAError):
    pass


class DiskFull(GroundQAError):
    """No space left for a write: it stored nothing, and what was stored before is whole."""


def disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether an error is a full disk: ENOSPC, SQLite's SQLITE_FULL, or an I/O error of SQLite
    (its shared memory or journal could not grow) on a disk with (almost) no space left."""
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return True
    try:
        return "disk I/O error" in str(exc) and shutil.disk_usage(folder.parent).free < 1 << 20
    except OSError:
        return False


class SetupError(GroundQAError):
    """The index cannot be opened as set up: a missing optional package, a folder another
    process holds."""


class IndexBusy(GroundQAError):
    """The index cannot answer now; try again (503): it is still loading or failed to load,
    another writer held its lock for longer than the wait allowed, its documents kept changing
    under a query, or a rebuild holds its folder. (ParseBusy: every parse slot is taken.)"""


class IndexDamaged(GroundQAError):
    pass


class IndexMoved(IndexBusy):
    """The index folder was replaced after this process opened it (503): what it would write
    would go to the folder moved away, so it writes nothing and says so."""


class Overloaded(GroundQAError):
    """The server holds as much heavy work (checking whole texts) as it takes at once: try again
    after Retry-After (503)."""


class ShuttingDown(GroundQAError):
    """The process is stopping: work not yet committed was dropped, and can be sent again."""


class FileRefused(InvalidDocument):
    """A file that cannot be read as an article (422), saying why and what to do."""


class FileTooLarge(FileRefused):
    """Over a size or page limit (413)."""


class ParseBusy(IndexBusy):
    """Every parse slot stayed taken for as long as a parse may wait (503, try again)."""


class UsageError(GroundQAError):
    """A command line that cannot be used as given (a bad flag, a missing setting)."""


class SourceUnreadable(GroundQAError):
    """A source of articles that cannot be read as given: a missing file or folder, a URL that
    cannot be fetched (an HTTP error, no answer, too many redirects)."""
