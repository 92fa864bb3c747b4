"""Articles from outside: files, folders of them and URLs, read into documents (formats.py
extracts the text, isolation.py in a child process) and named."""

from __future__ import annotations

import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx

from groundqa.index.errors import GroundQAError, SourceUnreadable
from groundqa.index.index import DocumentInput, derive_doc_id
from groundqa.index.storage import Original
from groundqa.ingest.formats import CONTENT_TYPES, SUFFIXES, Extracted, Progress
from groundqa.ingest.isolation import isolated
from groundqa.ingest.limits import FileLimits

# Seconds to wait for a URL's server (to connect, and between reads), and for the whole fetch.
FETCH_TIMEOUT = 30
FETCH_DEADLINE = FileLimits.fetch_deadline
MAX_REDIRECTS = 5
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


@dataclass(frozen=True)
class SourceFile:
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


def clean_name(name: str | None) -> str:
    """A file name as a client sent it, made safe to keep: its last part (no folders, no
    "../../"), no control characters (a NUL), at most 255 characters."""
    last = re.split(r"[/\\]", name or "")[-1]
    kept = "".join(c for c in last if c.isprintable()).strip()[:255]
    return kept if kept not in ("", ".", "..") else "upload"


def is_url(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def article_sources(
    names: list[str], follow_links: bool = False, skipped: list[str] | None = None
) -> list[str]:
    """Files and URLs as given, folders expanded to the files in them that have a known suffix.
    A link in a folder to a file outside it is left out (and said in skipped) unless
    follow_links: a folder of articles does not read /etc/passwd because a link says so."""
    found: list[str] = []
    for name in names:
        path = Path(name)
        if is_url(name):
            found.append(name)
        elif path.is_dir():
            root = path.resolve()
            for p in sorted(path.rglob("*")):
                if not p.is_file() or p.suffix.lower() not in SUFFIXES:
                    continue
                if not follow_links and not p.resolve().is_relative_to(root):
                    if skipped is not None:
                        skipped.append(
                            f"{p} links to {p.resolve()}, outside {path}: left out (--follow-links reads it)"
                        )
                    continue
                found.append(str(p))
        elif path.is_file():
            found.append(name)
        elif "://" in name:
            raise SourceUnreadable(f"{name}: only http:// and https:// URLs can be fetched")
        else:
            raise SourceUnreadable(f"{path} does not exist")
    if not found:
        raise SourceUnreadable(f"no {', '.join(sorted(SUFFIXES))} files in {' '.join(names)}")
    return found


def read_source(source: str, limits: FileLimits = FileLimits()) -> SourceFile:
    """A file's bytes, or a URL's, fetched with a timeout, a size limit and a content-type check."""
    if is_url(source):
        return SourceFile(source, fetch(source, limits.max_bytes, deadline=limits.fetch_deadline))
    try:
        return SourceFile(source, Path(source).read_bytes())
    except OSError as exc:
        raise SourceUnreadable(f"cannot read {source}: {exc.strerror}") from exc


def fetch(
    url: str, max_bytes: int, timeout: float = FETCH_TIMEOUT, deadline: float = FETCH_DEADLINE
) -> bytes:
    """The body at url: http(s) on every redirect (at most MAX_REDIRECTS), the whole fetch within
    deadline seconds (a server that trickles bytes is cut off, not stored), the size counted as
    the bytes arrive."""
    ends = time.monotonic() + deadline
    try:
        with httpx.Client(headers={"User-Agent": USER_AGENT}, timeout=min(timeout, deadline)) as http:
            for _ in range(MAX_REDIRECTS + 1):
                if not is_url(url):
                    said = f"a redirect leads to {url}: only http:// and https:// URLs are fetched"
                    raise SourceUnreadable(said)
                with http.stream("GET", url) as reply:
                    if reply.is_redirect:
                        url = str(reply.url.join(reply.headers["location"]))
                        continue
                    if reply.status_code >= 400:
                        raise SourceUnreadable(
                            f"cannot fetch {url}: HTTP {reply.status_code} {reply.reason_phrase}"
                        )
                    return _body(url, reply, max_bytes, deadline, ends)
            raise SourceUnreadable(f"{url}: more than {MAX_REDIRECTS} redirects")
    except httpx.TimeoutException as exc:
        raise SourceUnreadable(f"cannot fetch {url}: no answer within {min(timeout, deadline):g} s") from exc
    except httpx.HTTPError as exc:
        raise SourceUnreadable(f"cannot fetch {url}: {exc}") from exc


def _body(url: str, reply: httpx.Response, max_bytes: int, deadline: float, ends: float) -> bytes:
    kind = reply.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in FETCHED_TYPES:
        raise SourceUnreadable(
            f"{url} serves {kind or 'no content type'}; groundqa reads web pages, PDFs, Word files and text"
        )
    length = reply.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise SourceUnreadable(
            f"{url} has {int(length):,} bytes; the limit is {max_bytes:,} (GROUNDQA_MAX_FILE_BYTES)"
        )
    chunks, seen = [], 0
    for chunk in reply.iter_raw():
        seen += len(chunk)
        if seen > max_bytes:
            raise SourceUnreadable(f"{url} is larger than {max_bytes:,} bytes (GROUNDQA_MAX_FILE_BYTES)")
        if time.monotonic() > ends:
            raise SourceUnreadable(
                f"{url} did not arrive within {deadline:g} s (GROUNDQA_FETCH_DEADLINE): {seen:,} bytes came; "
                "nothing was stored"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def article_input(
    article: SourceFile,
    limits: FileLimits = FileLimits(),
    title: str | None = None,
    doc_id: str | None = None,
    progress: Progress | None = None,
    slotted: bool = False,
) -> tuple[DocumentInput, Extracted]:
    """The document of an article: its extracted text, kept with the original file. Its doc_id is
    the file name without the suffix, unless given. progress hears of the pages read; slotted:
    the caller holds a parse slot already."""
    try:
        found = isolated(article.data, article.name, limits, progress, slotted)
    except GroundQAError as exc:
        raise type(exc)(f"{article.source}: {exc}") from exc
    doc_id = doc_id or derive_doc_id(Path(article.name).stem)
    return document_input(found, article.data, article.source, title, doc_id), found


def document_input(
    found: Extracted, data: bytes, source: str, title: str | None = None, doc_id: str | None = None
) -> DocumentInput:
    """An extracted file, kept with its original unless it is the text itself."""
    kept = found.format not in ("text", "markdown")
    return DocumentInput(
        found.text,
        title or found.title,
        doc_id,
        source,
        found.format,
        found.page_starts,
        found.date,
        Original(CONTENT_TYPES[found.format], data) if kept else None,
    )
