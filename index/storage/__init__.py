"""The storage interface: what ranking reads and what the index writes, whatever holds the data.

A backend implements Storage (writes, documents, dump) and Reader (one committed state, read by
ranking); factory.open_storage is the one place that picks one. This module defines every type
that crosses the interface and imports no backend. Passages and sentences are named by opaque
integer keys that are valid within one Reader. Upkeep that only some backends need is an optional
protocol (Merging, FixedLengths), never a method left empty.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from groundqa.index.errors import DocumentConflict, DocumentNotFound, IndexMismatch

State = Literal["added", "replaced", "unchanged"]
# The model's vocabulary has 30,522 word pieces: their ids fit in 16 bits.
PIECE_ID = np.uint16


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    source: str | None  # the file name or URL it came from
    sha256: str
    chars: int
    passages: int
    created_at: str
    format: str = "text"  # text, markdown, html, pdf or docx (formats.FORMATS)
    page_starts: tuple[int, ...] = ()  # where each page begins in the text: PDFs only
    published: str | None = None  # the date in a web page's metadata

    @property
    def pages(self) -> int | None:
        return len(self.page_starts) or None

    def page_at(self, offset: int) -> int | None:
        return page_at(self.page_starts, offset)


def page_at(page_starts: tuple[int, ...], offset: int) -> int | None:
    """The 1-based page holding the character at offset; None for a text without pages."""
    return bisect.bisect_right(page_starts, offset) or None if page_starts else None


@dataclass(frozen=True)
class Original:
    """The file a document was extracted from, kept to be served back as it came."""

    content_type: str
    data: bytes


@dataclass(frozen=True)
class NewDocument:
    """A document's row and text (and original file, if it came as one), before it is stored."""

    document: Document
    text: str
    original: Original | None = None


class StoredText(NamedTuple):
    """What ranking reads of a document besides its vectors."""

    title: str
    text: str
    page_starts: tuple[int, ...] = ()


class PassagePieces(NamedTuple):
    """One passage's word pieces, compressed (see codec.py), with their spans in the text."""

    codes: np.ndarray  # [n, dim / 4] uint8
    centroids: np.ndarray  # [n] uint16
    scales: np.ndarray  # [n] float16
    spans: np.ndarray  # [n, 2] int32
    ids: np.ndarray  # [n] PIECE_ID


@dataclass(frozen=True)
class DocumentVectors:
    """What the model made of one document, ready to be stored."""

    doc_id: str
    sha256: str  # of the text the offsets index
    passages: np.ndarray  # [p, 2] int32: start, end in the text
    passage_vectors: np.ndarray  # [p, dim] float32
    passage_texts: list[str]  # as BM25 reads them (title included)
    pieces: list[PassagePieces]  # one per passage
    sentences: np.ndarray  # [s, 2] int32
    sentence_vectors: np.ndarray  # [s, dim]
    sentence_texts: list[str]


@dataclass(frozen=True)
class Ingested:
    """What a write did with one document."""

    document: Document
    state: State

    @property
    def created(self) -> bool:
        return self.state == "added"


@dataclass(frozen=True)
class Prepared:
    """A document with its vectors, made outside any lock, ready to commit."""

    new: NewDocument
    vectors: DocumentVectors


def decide(before: Document | None, doc: Document, replace: bool) -> State:
    """What storing doc does where `before` is stored: identical text is a no-op (and so is a
    changed title, unless replacing); other text conflicts unless replacing."""
    if before is None:
        return "added"
    if before.sha256 == doc.sha256 and (before.title == doc.title or not replace):
        return "unchanged"
    if not replace:
        raise DocumentConflict(
            f"doc_id {doc.doc_id!r} already holds different text; "
            "replace it with PUT or choose another doc_id",
            doc.doc_id,
        )
    return "replaced"


def settle(stored: dict[str, Document], docs: list[Document], replace: bool) -> list[Ingested]:
    """What storing each of docs does, given the stored documents of their doc_ids: the index
    asks before the model runs, and each backend again while it holds its write lock (another
    writer may have stored one of them meanwhile). An unchanged document keeps its stored row."""
    out = []
    for doc in docs:
        state = decide(stored.get(doc.doc_id), doc, replace)
        out.append(Ingested(stored[doc.doc_id] if state == "unchanged" else doc, state))
    return out


class StaleRead(Exception):
    """A reader's rows and the stored texts no longer agree: read again from a newer state."""


def compare_meta(have: dict[str, object], want: dict[str, object], where: str) -> None:
    """IndexMismatch naming each setting an index was built with that differs from want's."""
    if have.get("format") != want["format"]:
        raise IndexMismatch(
            f"index {where} has format {have.get('format')!r} (groundqa "
            f"{have.get('groundqa_version', 'before 0.3.0')}); this version reads format {want['format']}. "
            "Ingest the documents again into a new index (see the README's changelog)"
        )
    differ = [
        f"{key} is {have.get(key)!r} in the index but {value!r} here"
        for key, value in want.items()
        if key != "groundqa_version" and have.get(key) != value
    ]
    if differ:
        raise IndexMismatch(
            f"index {where} was built with other settings: {'; '.join(differ)}. "
            "Use the settings it was built with, or ingest into a new index"
        )


def not_found(doc_id: str) -> DocumentNotFound:
    return DocumentNotFound(f"no document with doc_id {doc_id!r}; list them with 'groundqa docs'", [doc_id])


class Reader(ABC):
    """One committed state, read by ranking; it never changes under a query."""

    revision: int

    # --- passages -------------------------------------------------------------------------
    @abstractmethod
    def allowed(self, doc_ids: list[str]) -> np.ndarray:
        """The keys of these documents' passages; DocumentNotFound names any the index lacks."""

    @abstractmethod
    def dense_search(
        self, vector: np.ndarray, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The n passages nearest the vector: keys and inner products, best first."""

    @abstractmethod
    def lexical_search(
        self, terms: np.ndarray, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The n passages with the best positive BM25: keys and scores, best first."""

    @abstractmethod
    def passage_vectors(self, keys: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def passage_bm25(self, keys: np.ndarray, terms: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def passages(self, keys: np.ndarray) -> list[tuple[str, int, int]]:
        """doc_id, start and end of each passage."""

    # --- sentences ------------------------------------------------------------------------
    @abstractmethod
    def sentences_of(self, keys: np.ndarray) -> list[np.ndarray]:
        """The keys of the sentences overlapping each passage, in text order."""

    @abstractmethod
    def sentence_vectors(self, keys: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def sentence_bm25(self, keys: np.ndarray, terms: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def sentence_spans(self, keys: np.ndarray) -> np.ndarray:
        """[n, 2] start and end of each sentence in its document."""

    # --- word pieces ----------------------------------------------------------------------
    @abstractmethod
    def pieces(self, key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A passage's word pieces: vectors [n, dim], spans in the text [n, 2], ids [n]."""

    def word_match(self, keys: np.ndarray, folded: np.ndarray) -> np.ndarray | None:
        """Each passage's word match, sum_i max_j q_i . d_j over its word pieces d_j, for the
        question's piece vectors with their weights folded in (q_i = w_i v_i / sum w), where the
        storage computes it (Qdrant's MaxSim); None leaves it to ranking, piece by piece."""
        return None

    @abstractmethod
    def piece_idf(self, pieces: np.ndarray) -> np.ndarray:
        """log((N + 1) / (df + 1)) + 1 over the N passages: rare word pieces weigh more."""

    # --- documents ------------------------------------------------------------------------
    @abstractmethod
    def texts(self, keys: np.ndarray) -> dict[str, StoredText]:
        """Title, text and pages of the documents of these passages, as this reader's offsets
        index them."""


class Storage(ABC):
    """Where an index keeps its documents and vectors; writes are atomic per call."""

    @abstractmethod
    def reader(self, fresh: bool = False) -> Reader:
        """The latest committed state (another process's commits included); fresh: checked
        against the store itself, after a read found the state stale."""

    @abstractmethod
    def existing(self, doc_ids: list[str]) -> dict[str, Document]: ...

    @abstractmethod
    def commit(self, batch: list[Prepared], replace: bool) -> list[Ingested]:
        """Store the batch as one revision: all its documents or none."""

    @abstractmethod
    def delete(self, doc_id: str) -> None: ...

    @abstractmethod
    def documents(self) -> list[Document]: ...

    @abstractmethod
    def document(self, doc_id: str) -> tuple[Document, str]: ...

    @abstractmethod
    def original(self, doc_id: str) -> Original | None:
        """The file the document was extracted from, if it came as one; DocumentNotFound if the
        index lacks the document."""

    @abstractmethod
    def counts(self) -> tuple[int, int]:
        """Documents and passages."""

    @abstractmethod
    def compact(self) -> None:
        """Reclaim what deleted and replaced documents left behind."""

    @abstractmethod
    def mean_lengths(self) -> tuple[float, float]:
        """BM25's mean length in terms of a passage and of a sentence, as this storage scores."""

    @abstractmethod
    def dump(self, doc_ids: list[str]) -> list[tuple[NewDocument, DocumentVectors]]:
        """These documents as stored, with their vectors: what another storage's commit takes, so
        an index can be copied with no model pass."""

    @abstractmethod
    def drop(self) -> None:
        """Remove everything this storage holds (a temporary evaluation index)."""

    @abstractmethod
    def close(self) -> None:
        """Release files and connections; the storage is not used after."""


@runtime_checkable
class Merging(Protocol):
    """A storage with upkeep after each write (the embedded index merges segments), which the
    server runs in the background."""

    def merge(self) -> None: ...


@runtime_checkable
class FixedLengths(Protocol):
    """A storage that fixes BM25's mean lengths in each stored row (Qdrant): a copy of another
    index adopts the source's means first, so that it ranks as the source does."""

    def adopt_lengths(self, lengths: tuple[float, float]) -> None: ...
