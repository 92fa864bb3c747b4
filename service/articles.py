"""Article files: reading them as the contract stores them, and naming their documents."""

from __future__ import annotations

from pathlib import Path

from groundqa.index.errors import GroundQAError
from groundqa.index.index import DocumentInput, derive_doc_id

SUFFIXES = {".txt", ".md"}


class UsageError(GroundQAError):
    pass


def read_article(path: Path) -> str:
    """A file's text as stored: UTF-8, one leading BOM removed, line endings kept."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from exc
    return text.removeprefix("\ufeff")


def article_files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path} does not exist")
    if not found:
        raise UsageError(f"no .txt or .md files in {' '.join(paths)}")
    return found


def article_input(
    path: Path, text: str, title: str | None = None, doc_id: str | None = None
) -> DocumentInput:
    """A file's doc_id is its name without the suffix, unless given."""
    return DocumentInput(text, title=title, doc_id=doc_id or derive_doc_id(path.stem), source=str(path))
