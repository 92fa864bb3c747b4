"""What reading a file from outside may cost: bytes, pages, seconds, memory, parses at once; and
the settings (GROUNDQA_*) they come from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from groundqa.index.config import IndexSettings


@dataclass(frozen=True)
class FileLimits:
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


class IngestSettings(IndexSettings):
    """The index's settings, and the limits on reading files into it (GROUNDQA_*)."""

    # Files (web pages, PDFs, Word files): most bytes, most PDF pages, seconds to read one.
    max_file_bytes: int = FileLimits.max_bytes
    max_pages: int = FileLimits.max_pages
    parse_timeout: float = FileLimits.timeout
    fetch_deadline: float = FileLimits.fetch_deadline
    # Files parsed at once by every process on this index, and the address space of each parse:
    # None takes them from the machine's memory (machine_defaults).
    max_parses: int | None = None
    parse_memory: int | None = None
    # Read PDF pages that have no text layer (scans) with tesseract, when it is installed.
    ocr: bool = FileLimits.ocr

    def file_limits(self) -> FileLimits:
        parses, memory = machine_defaults()
        return FileLimits(
            max_bytes=self.max_file_bytes,
            max_pages=self.max_pages,
            timeout=self.parse_timeout,
            memory=self.parse_memory or memory,
            ocr=self.ocr,
            fetch_deadline=self.fetch_deadline,
            parses=self.max_parses or parses,
            slots=str(Path(self.index_dir) / "parsing"),
        )
