"""Files as people keep articles: plain text, Markdown, web pages, PDFs and Word files, read into
the text the index stores (its offsets index that text), with a title, pages and warnings.

The format is told by the content (a PDF's header, a Word file's zip entries, a web page's tags),
the file name only telling Markdown from plain text. This module reads in the calling process;
isolation.py runs it in a child under a time and memory limit.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundqa.index.errors import FileRefused, FileTooLarge
from groundqa.ingest.limits import FileLimits

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
    data: bytes, name: str = "", limits: FileLimits = FileLimits(), progress: Progress | None = None
) -> Extracted:
    """The file's article text (in this process: isolated() runs it in a child)."""
    check_size(data, limits)
    kind = detect(data, name)
    if kind == "pdf":
        return _pdf(data, limits, progress)
    if kind == "docx":
        return _docx(data, limits)
    if kind == "html":
        return _html(data)
    return Extracted(decode_text(data), kind)


def check_size(data: bytes, limits: FileLimits) -> None:
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


def _pdf(data: bytes, limits: FileLimits, progress: Progress | None = None) -> Extracted:
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


def _docx(data: bytes, limits: FileLimits) -> Extracted:
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
