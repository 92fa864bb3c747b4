"""Files as people keep articles: plain text, Markdown, web pages, PDFs and Word files, read into
the text the index stores (its offsets index that text), with a title, pages and warnings.

The format is told by the content (a PDF's header, a Word file's zip entries, a web page's tags),
the file name only telling Markdown from plain text. Parsing a file from outside runs in a child
process (isolated) under a time and memory limit: a hostile PDF or a zip bomb costs that process,
never the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import multiprocessing
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from groundqa.index.errors import IndexBusy, InvalidDocument

FORMATS = ("text", "markdown", "html", "pdf", "docx")
CONTENT_TYPES = {
    "text": "text/plain; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
SUFFIXES = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
# Pages join with a blank line, so that no sentence runs from one page into the next.
PAGE_BREAK = "\n\n"
# A web page whose article has fewer characters is likely drawn by scripts.
FEW_CHARS = 200
# A page of more bytes whose article is under a thousandth of them gets a warning (a page of one
# paragraph repeated reads as that paragraph once).
SPARSE_PAGE_BYTES = 1_000_000
# A PDF page whose text has at least this share of characters no font maps to Unicode is garbage.
GARBAGE_SHARE = 0.2
OCR_DPI = 300
# Most pixels a page is rendered to for OCR: an A0 sheet at 300 dpi is 140 million; a page
# larger than this is refused before it is rendered (a 682-byte PDF can declare a 5 m page).
MAX_OCR_PIXELS = 150_000_000
# A PDF line at least this share of the page's full line width runs on into the next.
REFLOW_WIDTH = 0.8
_LIGATURES = {chr(c): unicodedata.normalize("NFKC", chr(c)) for c in range(0xFB00, 0xFB07)}


class FileRefused(InvalidDocument):
    """A file that cannot be read as an article (422), saying why and what to do."""


class FileTooLarge(FileRefused):
    """Over a size or page limit (413)."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 50_000_000  # the file as it comes
    max_pages: int = 2000  # pages of one PDF
    max_unpacked: int = 200_000_000  # bytes a Word file's entries unpack to
    timeout: float = 300  # seconds to parse one file, OCR included
    memory: int = 4 << 30  # bytes of address space for the parsing process (machine_defaults())
    parses: int = 2  # files parsed at once, in every process that shares `slots`
    slots: str | None = None  # the folder of the parse slots' lock files (None: this process only)
    wait: float = 60  # seconds a parse waits for a slot before ParseBusy
    ocr: bool = True  # read pages without a text layer with tesseract, where it is installed
    fetch_deadline: float = 120  # seconds for `groundqa ingest URL` to fetch the whole file


def machine_defaults() -> tuple[int, int]:
    """Parses at once and address space for each, from this machine's memory: a parse may take
    an eighth of it (1 GB at least, 4 GB at most), and all of them together half of it (a 4 GB
    machine: 2 parses of 1 GB; a 24 GB one: 4 of 3 GB)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    memory = min(4 << 30, max(1 << 30, total // 8))
    return max(1, (total // 2) // memory), memory


class ParseBusy(IndexBusy):
    """Every parse slot stayed taken for as long as a parse may wait (503, try again)."""


@dataclass(frozen=True)
class Extracted:
    text: str
    format: str
    title: str | None = None
    date: str | None = None  # the page's publication date, from its metadata (HTML)
    page_starts: tuple[int, ...] = ()  # where each page begins in text (PDF)
    warnings: tuple[str, ...] = field(default=())


def detect(data: bytes, name: str = "") -> str:
    """The format of a file, by its content; the name's suffix only tells Markdown from text."""
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "docx"  # _docx() says so if the zip holds no Word document
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise FileRefused(
            "an encrypted Word file or an old .doc: save it as .docx without a password, then send it"
        )
    suffix = Path(name).suffix.lower()
    if SUFFIXES.get(suffix) == "pdf":
        raise FileRefused("the file is named .pdf but is not a PDF (no %PDF- header): it is damaged")
    # Markup from its first character (a saved page may open with "<!-- saved from url=... -->"
    # or a long head), or a .html name: a text that only mentions <html> stays text.
    markup = head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") or SUFFIXES.get(suffix) == "html"
    if markup and re.search(rb"<svg[\s>]", head.lower()) and not re.search(rb"<html[\s>]", head.lower()):
        raise FileRefused(
            "the file is an SVG image, not an article: send a web page, PDF, Word file, text or Markdown"
        )
    if markup and re.search(rb"<!doctype html|<html[\s>]|<head[\s>]|<body[\s>]", data[:8192].lower()):
        return "html"
    if b"\x00" in data[:8192]:
        raise FileRefused(
            "the file is binary and not a PDF, Word file or web page; send one of those, or UTF-8 text"
        )
    return "markdown" if SUFFIXES.get(suffix) == "markdown" else "text"


# Told of pages read: (pages read, pages in all).
Progress = Callable[[int, int], None]


def extract(
    data: bytes, name: str = "", limits: Limits = Limits(), progress: Progress | None = None
) -> Extracted:
    """The file's article text (in this process: isolated() runs it in a child)."""
    _check_size(data, limits)
    kind = detect(data, name)
    if kind == "pdf":
        return _pdf(data, limits, progress)
    if kind == "docx":
        return _docx(data, limits)
    if kind == "html":
        return _html(data)
    return Extracted(decode_text(data), kind)


def _check_size(data: bytes, limits: Limits) -> None:
    if len(data) > limits.max_bytes:
        raise FileTooLarge(f"the file has {len(data):,} bytes; the limit is {limits.max_bytes:,}")


def decode_text(data: bytes) -> str:
    """UTF-8, one leading BOM removed, line endings kept (the contract stores text as it is)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"the file is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from exc


# --- web pages ------------------------------------------------------------------------------


def _html(data: bytes) -> Extracted:
    import trafilatura  # imported here: a second of start-up that plain text never needs

    found: Any = trafilatura.bare_extraction(
        data, with_metadata=True, include_comments=False, include_tables=True, deduplicate=False
    )
    text = (found.text or "") if found is not None else ""
    scripted = b"<script" in data.lower()
    if not text.strip() or (len(text) < FEW_CHARS and scripted):
        raise FileRefused(
            f"the web page has {'no' if not text.strip() else f'only {len(text)} characters of'} article "
            "text; its article may be drawn by scripts: save the page from the browser after it has "
            "loaded, or send its text"
        )
    warnings = []
    if len(data) > SPARSE_PAGE_BYTES and len(text) * 1000 < len(data):
        warnings.append(
            f"the web page has {len(data):,} bytes and its article {len(text):,} characters: repeated "
            "paragraphs are read once, and menus, scripts and styles are left out; check that it is whole"
        )
    elif len(text) < FEW_CHARS:
        warnings.append(f"the web page's article has only {len(text)} characters: check that it is whole")
    return Extracted(text, "html", found.title or None, found.date or None, warnings=tuple(warnings))


# --- PDF ------------------------------------------------------------------------------------


def clean_pdf_text(raw: str) -> str:
    """PDFium's page text, as a reader would type it: a word hyphenated at a line end joined
    (PDFium marks that hyphen with U+0002), ligatures expanded, CR LF as LF, and the lines of a
    paragraph joined (reflow)."""
    text = raw.replace("\x02", "").replace("\r\n", "\n").replace("\r", "\n").replace("\u2029", "\n")
    return reflow("".join(_LIGATURES.get(c, c) for c in text))


def reflow(text: str) -> str:
    """A line as wide as most of the page's lines runs on into the next: its line break becomes
    a space, so that a sentence wrapped over lines is one sentence. Short lines (a paragraph's
    last, headings, labels) keep theirs."""
    lines = text.split("\n")
    widths = sorted(len(line.strip()) for line in lines if line.strip())
    if len(widths) < 3:
        return text
    full = REFLOW_WIDTH * widths[len(widths) * 3 // 4]  # the upper quartile: a full line's width
    out = []
    for line, after in zip(lines, lines[1:] + [""], strict=True):
        joined = len(line.strip()) >= full and after.strip() and not line.endswith(" ")
        out.append(line + (" " if joined else "\n"))
    return "".join(out)[: len(text)]


def unreadable(text: str) -> bool:
    """Glyphs that no font maps to Unicode: control, private-use, unassigned or replacement
    characters make up a good share of the page."""
    shown = [c for c in text if not c.isspace()]
    if not shown:
        return False
    bad = sum(c == "\ufffd" or unicodedata.category(c) in ("Cc", "Co", "Cn") for c in shown)
    return bad / len(shown) >= GARBAGE_SHARE


def _pdf(data: bytes, limits: Limits, progress: Progress | None = None) -> Extracted:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise FileRefused("the PDF is encrypted: send a copy without a password") from exc
        raise FileRefused(f"the PDF cannot be read ({exc}): it is damaged or truncated") from exc
    try:
        if len(pdf) > limits.max_pages:
            raise FileTooLarge(
                f"the PDF has {len(pdf)} pages; the limit is {limits.max_pages} (GROUNDQA_MAX_PAGES)"
            )
        ocr = shutil.which("tesseract") if limits.ocr else None
        pages, missing, read_by_ocr = [], [], []
        for number in range(1, len(pdf) + 1):
            page = pdf[number - 1]
            textpage = page.get_textpage()
            text = clean_pdf_text(textpage.get_text_bounded())
            textpage.close()
            images = any(True for _ in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=2))
            # No text over an image: a scan. Garbage glyphs: fonts without a map to Unicode.
            if unreadable(text) or (not text.strip() and images):
                if ocr:
                    _check_render(page, number)
                    text = clean_pdf_text(_ocr(page, ocr))
                    read_by_ocr.append(number)
                else:
                    text = ""
                    missing.append(number)
            page.close()
            pages.append(text.strip())
            if progress is not None:
                progress(number, len(pdf))
        title = (pdf.get_metadata_value("Title") or "").strip() or None
    finally:
        pdf.close()
    if not any(pages):
        why = "its pages have no text layer or fonts without a map to Unicode"
        raise FileRefused(
            f"no page of the PDF has readable text ({why})"
            + ("" if ocr else "; with tesseract-ocr installed, GROUNDQA_OCR on, scanned pages are read")
        )
    text, starts = "", []
    for page_text in pages:
        if text and page_text:
            text += PAGE_BREAK
        starts.append(len(text))
        text += page_text
    warnings = []
    if missing:
        warnings.append(
            f"{_pages(missing)} no readable text: left out "
            "(with tesseract-ocr installed, GROUNDQA_OCR on, scanned pages are read)"
        )
    if read_by_ocr:
        warnings.append(f"{_pages(read_by_ocr)} no text layer: read by OCR (check the text)")
    return Extracted(text, "pdf", title, page_starts=tuple(starts), warnings=tuple(warnings))


def _check_render(page: Any, number: int) -> None:
    width, height = page.get_size()
    pixels = (width * OCR_DPI / 72) * (height * OCR_DPI / 72)
    if pixels > MAX_OCR_PIXELS:
        raise FileTooLarge(
            f"page {number} measures {width:,.0f} x {height:,.0f} points: read by OCR at {OCR_DPI} dpi it "
            f"would be {pixels / 1e6:,.0f} million pixels; the limit is {MAX_OCR_PIXELS / 1e6:,.0f} million"
        )


def _ocr(page: Any, tesseract: str) -> str:
    image = page.render(scale=OCR_DPI / 72, grayscale=True).to_pil()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "page.png"
        image.save(path)
        done = subprocess.run(
            [tesseract, str(path), "stdout", "-l", "eng"], capture_output=True, text=True, timeout=120
        )
    return done.stdout if done.returncode == 0 else ""


def _pages(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "pages 1-3, 7 had"; [4] -> "page 4 had"."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    named = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"page {named} had" if len(numbers) == 1 else f"pages {named} had"


# --- Word -----------------------------------------------------------------------------------


def _docx(data: bytes, limits: Limits) -> Extracted:
    import docx  # python-docx

    try:
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile as exc:
        raise FileRefused(f"the Word file cannot be unpacked ({exc}): it is damaged or truncated") from exc
    if not any(e.filename == "word/document.xml" for e in entries):
        raise FileRefused("the file is a zip archive but not a Word document (.docx)")
    unpacked = sum(e.file_size for e in entries)
    if unpacked > limits.max_unpacked:
        raise FileTooLarge(
            f"the Word file unpacks to {unpacked:,} bytes; the limit is {limits.max_unpacked:,}"
        )
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises whatever its XML and zip readers raise
        raise FileRefused(f"the Word file cannot be read ({type(exc).__name__}): it is damaged") from exc
    blocks = []
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows]
            blocks.append("\n".join(rows))
        else:
            blocks.append(block.text)
    text = "\n\n".join(b.strip() for b in blocks if b.strip())
    if not text:
        raise FileRefused("the Word file has no text")
    title = (document.core_properties.title or "").strip() or None
    return Extracted(text, "docx", title)


# --- isolation ------------------------------------------------------------------------------


def isolated(
    data: bytes,
    name: str = "",
    limits: Limits = Limits(),
    progress: Progress | None = None,
    slotted: bool = False,
) -> Extracted:
    """extract() in a child process that is killed after limits.timeout seconds and may use
    limits.memory bytes: parsing a file from outside never hangs or bloats the caller. Plain
    text needs no child. progress hears of the pages read as the child reads them; slotted: the
    caller holds a parse slot (parse_slot) already."""
    if detect(data, name) in ("text", "markdown"):
        return extract(data, name, limits)
    _check_size(data, limits)  # before the bytes go to the child
    if slotted:
        return _in_child(data, name, limits, progress)
    with parse_slot(limits):
        return _in_child(data, name, limits, progress)


def _in_child(data: bytes, name: str, limits: Limits, progress: Progress | None) -> Extracted:
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
def parse_slot(limits: Limits) -> Iterator[None]:
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


def _take(limits: Limits) -> Callable[[], None] | None:
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


def _child(out: Connection, data: bytes, name: str, limits: Limits, pages: bool, workdir: str) -> None:
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
