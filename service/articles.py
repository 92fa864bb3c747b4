"""Articles from outside: files, folders of them and URLs, read into documents (index/formats.py
extracts the text) and named."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from groundqa.index.errors import GroundQAError
from groundqa.index.formats import SUFFIXES, Extracted, Limits, Progress, isolated
from groundqa.index.index import DocumentInput, derive_doc_id

# Seconds to wait for a URL's server (to connect, and between reads).
FETCH_TIMEOUT = 30
# What a URL may serve: web pages, PDFs, Word files, text.
FETCHED_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "application/pdf",
    "text/plain",
    "text/markdown",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
)
USER_AGENT = "groundqa (article ingest; +https://github.com/groundqa)"


class UsageError(GroundQAError):
    pass


@dataclass(frozen=True)
class Article:
    """A file's bytes as they came, and where from (a path or a URL)."""

    source: str
    data: bytes

    @property
    def name(self) -> str:
        """The file name: a path's, or a URL path's last part (its host if it has none)."""
        if is_url(self.source):
            url = urllib.parse.urlsplit(self.source)
            return Path(url.path).name or url.hostname or "page"
        return Path(self.source).name


def is_url(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def article_sources(names: list[str]) -> list[str]:
    """Files and URLs as given, folders expanded to the files in them that have a known suffix."""
    found: list[str] = []
    for name in names:
        path = Path(name)
        if is_url(name):
            found.append(name)
        elif path.is_dir():
            found.extend(
                str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES
            )
        elif path.is_file():
            found.append(name)
        elif "://" in name:
            raise UsageError(f"{name}: only http:// and https:// URLs can be fetched")
        else:
            raise UsageError(f"{path} does not exist")
    if not found:
        raise UsageError(f"no {', '.join(sorted(SUFFIXES))} files in {' '.join(names)}")
    return found


def read_source(source: str, limits: Limits = Limits()) -> Article:
    """A file's bytes, or a URL's, fetched with a timeout, a size limit and a content-type check."""
    if is_url(source):
        return Article(source, fetch(source, limits.max_bytes))
    try:
        return Article(source, Path(source).read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from exc


def fetch(url: str, max_bytes: int, timeout: float = FETCH_TIMEOUT) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 (http and https only)
            kind = reply.headers.get_content_type()
            if kind not in FETCHED_TYPES:
                raise UsageError(f"{url} serves {kind}; groundqa reads web pages, PDFs, Word files and text")
            length = reply.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise UsageError(
                    f"{url} has {int(length):,} bytes; the limit is {max_bytes:,} (GROUNDQA_MAX_FILE_BYTES)"
                )
            data: bytes = reply.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise UsageError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UsageError(f"cannot fetch {url}: {reason}") from exc
    if len(data) > max_bytes:
        raise UsageError(f"{url} is larger than {max_bytes:,} bytes (GROUNDQA_MAX_FILE_BYTES)")
    return data


def article_input(
    article: Article,
    limits: Limits = Limits(),
    title: str | None = None,
    doc_id: str | None = None,
    progress: Progress | None = None,
) -> tuple[DocumentInput, Extracted]:
    """The document of an article: its extracted text, kept with the original file. Its doc_id is
    the file name without the suffix, unless given. progress hears of the pages read."""
    try:
        found = isolated(article.data, article.name, limits, progress)
    except GroundQAError as exc:
        raise type(exc)(f"{article.source}: {exc}") from exc
    doc_id = doc_id or derive_doc_id(Path(article.name).stem)
    return DocumentInput.of_file(found, article.data, article.source, title, doc_id), found
