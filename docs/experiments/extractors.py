"""How the file readers were chosen, and what reading files costs:

    .venv/bin/python docs/experiments/extractors.py

- Web pages: trafilatura's three settings (default, favor_precision, favor_recall) on the shared
  saved pages, scored by eval/questions/boilerplate.json (phrases of each article that must be
  kept, phrases of its boilerplate that must not).
- PDFs: PDFium (pypdfium2), pdfminer.six and pdfplumber on the two-column paper (ligatures left,
  words split at line ends, words glued together, a sentence read across the columns) and their
  speed on the 352-page book.
- End to end: the book through groundqa's reader (ingest/formats.py, in its child process) and
  into an index: pages/s and MB/s.

Prints a markdown report and writes reports/extractors/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from groundqa.ingest.formats import extract
from groundqa.ingest.isolation import isolated
from groundqa.ingest.sources import document_input

SHARED = Path(__file__).resolve().parents[3] / "shared" / "corpus"
QUESTIONS = Path(__file__).resolve().parent / "questions"
# A sentence of the paper's left column that runs over three lines: read whole only column by column.
COLUMN_SENTENCE = "We present an alternative compilation technique for dynamically-typed languages"


def web_pages(corpus: Path) -> dict[str, Any]:
    import trafilatura

    phrases = json.loads((QUESTIONS / "boilerplate.json").read_text(encoding="utf-8"))
    settings: dict[str, dict[str, Any]] = {
        "default": {},
        "favor_precision": {"favor_precision": True},
        "favor_recall": {"favor_recall": True},
    }
    out = {}
    for name, options in settings.items():
        kept = leaked = chars = 0
        began = time.perf_counter()
        for page, want in phrases.items():
            data = (corpus / "html" / f"{page}.html").read_bytes()
            text = trafilatura.extract(
                data, include_comments=False, include_tables=True, deduplicate=False, **options
            )
            text = text or ""
            chars += len(text)
            kept += sum(p in text for p in want["article"])
            leaked += sum(p in text for p in want["boilerplate"])
        out[name] = {
            "article_phrases_kept": f"{kept}/{sum(len(w['article']) for w in phrases.values())}",
            "boilerplate_leaked": f"{leaked}/{sum(len(w['boilerplate']) for w in phrases.values())}",
            "chars": chars,
            "ms_per_page": round((time.perf_counter() - began) * 1000 / len(phrases), 1),
        }
    return out


def _pdfium(path: Path) -> list[str]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path)
    pages = []
    for page in pdf:
        textpage = page.get_textpage()
        pages.append(textpage.get_text_bounded())
        textpage.close()
        page.close()
    pdf.close()
    return pages


def _pdfminer(path: Path) -> list[str]:
    from pdfminer.high_level import extract_text

    return extract_text(path).split("\f")


def _pdfplumber(path: Path) -> list[str]:
    import pdfplumber

    with pdfplumber.open(path) as pdf:
        out = []
        for page in pdf.pages:
            out.append(page.extract_text() or "")
            page.flush_cache()
        return out


READERS: dict[str, Callable[[Path], list[str]]] = {
    "pypdfium2 (PDFium)": _pdfium,
    "pdfminer.six": _pdfminer,
    "pdfplumber": _pdfplumber,
}


def pdf_readers(corpus: Path) -> dict[str, Any]:
    paper, book = corpus / "pdf" / "tracemonkey.pdf", corpus / "pdf" / "freeculture.pdf"
    out = {}
    for name, read in READERS.items():
        text = "\n".join(read(paper))
        # Reading order, whatever each reader does with line ends: hyphens joined, lines flattened.
        flat = " ".join(re.sub(r"-\n|\x02", "", text).split())
        began = time.perf_counter()
        pages = read(book)
        seconds = time.perf_counter() - began
        out[name] = {
            "ligatures_left": sum(0xFB00 <= ord(c) <= 0xFB06 for c in text),
            "split_at_line_end": len(re.findall(r"[a-z]-\n[a-z]", text)),
            "glued_words": sum(len(w) > 30 and w.isalpha() for w in flat.split()),
            "column_sentence_whole": COLUMN_SENTENCE in flat,
            "book_seconds": round(seconds, 2),
            "book_pages_per_s": round(len(pages) / seconds, 1),
        }
    return out


def end_to_end(corpus: Path) -> dict[str, Any]:
    """The book read by groundqa (child process, reflow) and then indexed, each timed."""
    from groundqa.index.config import IndexSettings, open_index, prepare_process

    prepare_process()
    path = corpus / "pdf" / "freeculture.pdf"
    data = path.read_bytes()
    mb = len(data) / 1e6
    began = time.perf_counter()
    found = isolated(data, path.name)
    read_s = time.perf_counter() - began
    began = time.perf_counter()
    extract(data)  # in this process: the child's own cost apart
    inline_s = time.perf_counter() - began
    pages = len(found.page_starts)
    with tempfile.TemporaryDirectory() as tmp:
        index = open_index(IndexSettings(index_dir=Path(tmp) / "index"))
        began = time.perf_counter()
        index.add_many([document_input(found, data, path.name)])
        index_s = time.perf_counter() - began
        passages = index.counts()[1]
    return {
        "file_mb": round(mb, 2),
        "pages": pages,
        "chars": len(found.text),
        "passages": passages,
        "read_s": round(read_s, 2),
        "read_in_process_s": round(inline_s, 2),
        "read_pages_per_s": round(pages / read_s, 1),
        "read_mb_per_s": round(mb / read_s, 2),
        "index_s": round(index_s, 1),
        "total_pages_per_s": round(pages / (read_s + index_s), 2),
        "total_mb_per_s": round(mb / (read_s + index_s), 3),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = ["# File readers", "", f"Load average before: {report['load_before']}", ""]
    lines += ["## Web pages (trafilatura settings, 8 saved pages)", ""]
    lines += _table(report["web_pages"])
    lines += ["", "## PDF readers (the 14-page two-column paper; speed on the 352-page book)", ""]
    lines += _table(report["pdf_readers"])
    if report.get("end_to_end"):
        lines += ["", "## The book end to end (groundqa's reader, then the index)", ""]
        lines += [f"- {k}: {v}" for k, v in report["end_to_end"].items()]
    return "\n".join(lines) + "\n"


def _table(rows: dict[str, dict[str, Any]]) -> list[str]:
    columns = list(next(iter(rows.values())))
    out = ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    out += [f"| {name} | " + " | ".join(str(r[c]) for c in columns) + " |" for name, r in rows.items()]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED)
    parser.add_argument("--no-index", action="store_true", help="leave out the end-to-end indexing")
    parser.add_argument("--out", type=Path, default=Path("reports/extractors"))
    args = parser.parse_args()
    report: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    report["web_pages"] = web_pages(args.corpus)
    report["pdf_readers"] = pdf_readers(args.corpus)
    if not args.no_index:
        report["end_to_end"] = end_to_end(args.corpus)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
