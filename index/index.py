"""A saved index: a folder with metadata, SQLite rows and immutable segment files.

Writes are batches: each becomes one segment, committed with its document rows in one SQLite
transaction under the folder's writer lock; the model runs before, outside the lock. Whatever is
killed when, the last committed revision is whole (index/storage/embedded.py says how).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from groundqa import __version__
from groundqa.index import codec
from groundqa.index.batching import QueryBatcher
from groundqa.index.codec import encode_pieces
from groundqa.index.confidence import ConfidenceModel
from groundqa.index.confidence import bundled as bundled_confidence
from groundqa.index.conversation import Titles, Turn, check_history, resolve
from groundqa.index.errors import DocumentConflict, IndexBusy, IndexMismatch, InvalidDocument
from groundqa.index.lexical import BM25Params, lexical_input
from groundqa.index.model import Embedder, PieceVectors
from groundqa.index.ranking import (
    DEFAULT_K,
    DEFAULT_MODE,
    Answer,
    Hit,
    Mode,
    Query,
    Ranking,
    check_query,
    rank,
)
from groundqa.index.storage import (
    Document,
    DocumentVectors,
    FixedLengths,
    Ingested,
    Merging,
    NewDocument,
    Original,
    PassagePieces,
    Prepared,
    Reader,
    StaleRead,
    Storage,
    settle,
)
from groundqa.index.storage.factory import Location, open_storage
from groundqa.index.text import ENCODING, Chunking, Passage, check_text, sentences

FORMAT = 3  # 3: segments; 2 (0.2.0): one folder of derived files per revision
# 1 to 128 of A-Z a-z 0-9 . _ -, but not "." or ".." alone: URLs cannot name them.
DOC_ID_PATTERN = r"(?!\.\.?$)[A-Za-z0-9._-]{1,128}"
TITLE_IN_VECTOR = 100
# A query overtaken by a writer reads the new revision and tries again; under a storm of writes to
# the very documents it finds (the soak) five tries were not always enough.
STALE_RETRIES = 50
# Passages embedded between compressions of their word pieces: bounds the float copies to ~90 MB.
PIECE_BATCH = 256
# Sentences embedded between progress reports: large enough that the encoder's length buckets
# still fill (a book has tens of thousands).
SENTENCE_BATCH = 2048
# Told of the texts embedded for a write: (done, in all).
Progress = Callable[[int, int], None]
# Longest document accepted by default: a long book, about 2 minutes to embed on 2 cores.
MAX_DOC_CHARS = 1_000_000
_DOC_ID = re.compile(DOC_ID_PATTERN)


@dataclass(frozen=True)
class SearchResult:
    question: str
    mode: Mode
    k: int
    hits: list[Hit]
    answer: Answer | None  # None under the confidence asked for
    confidence: float  # that the best answer sentence answers the question (0 with none)
    took_ms: float
    searched_for: str | None = None  # the question read in the light of a history (None: no history)


@dataclass(frozen=True)
class DocumentInput:
    text: str
    title: str | None = None
    doc_id: str | None = None
    source: str | None = None
    format: str = "text"
    page_starts: tuple[int, ...] = ()
    published: str | None = None
    original: Original | None = None  # the file the text was extracted from


def vector_input(title: str, text: str) -> str:
    """What is embedded: the title gives a passage its topic (+1 point of hit@1 on SQuAD).
    Only vectors see it; offsets and returned text are the passage's own. Long titles are cut so
    that they leave room for the text."""
    return f"{title[:TITLE_IN_VECTOR]}: {text}"


def passage_id(p: Passage) -> str:
    """Stable across re-indexing of the same text: the document and the span."""
    return f"{p.doc_id}:{p.start}-{p.end}"


def derive_doc_id(name: str) -> str:
    """A doc_id from a title or a file name: its Latin letters, digits and . _ - (other runs become
    "-"), plus a short hash of the whole name when it holds other letters or nothing usable, so
    that "日本" and "Москва" get ids of their own, the same each time."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if slug and not any(c.isalnum() and not c.isascii() for c in name):
        return slug[:128]
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest()
    return f"{slug[:110]}-{digest}" if slug else f"doc-{digest}"


def default_title(text: str) -> str:
    first = next(line.strip() for line in text.splitlines() if line.strip())
    return first[:200]


def check_doc_id(doc_id: str) -> str:
    if not _DOC_ID.fullmatch(doc_id):
        raise InvalidDocument(
            f"doc_id {doc_id!r} is not allowed; use 1 to 128 of the characters A-Z a-z 0-9 . _ - "
            "(not '.' or '..' alone: URLs cannot name them)"
        )
    return doc_id


class Index:
    def __init__(
        self,
        where: Location | Path | str,
        embedder: Embedder,
        chunking: Chunking = Chunking(),
        ranking: Ranking = Ranking(),
        bm25: BM25Params = BM25Params(),
        lock_timeout: float = 120,
        merge_in_background: bool = False,
        max_doc_chars: int = MAX_DOC_CHARS,
        failpoint: str | None = None,
        min_confidence: float | None = None,
        confidence: ConfidenceModel | None = None,
    ) -> None:
        """The index at where (a folder: the embedded index), opened by factory.open_storage,
        which checks that it was built with this index's settings."""
        self.where = where if isinstance(where, Location) else Location(Path(where))
        self.embedder = embedder
        self.chunking = chunking
        self.ranking = ranking
        self.bm25 = bm25
        self.merge_in_background = merge_in_background
        self.max_doc_chars = max_doc_chars
        self._closing = threading.Event()
        self.confidence = confidence or bundled_confidence()
        # Answers under this confidence are left out; the model's own threshold by default.
        self.min_confidence = self.confidence.floor(min_confidence)
        self.questions = QueryBatcher(embedder)  # concurrent questions share one forward pass
        self._title_cache: tuple[int | None, Titles] = (None, Titles())
        self.storage: Storage = open_storage(
            self.where, self.meta(), embedder.info.dimension, bm25, lock_timeout, failpoint
        )

    # --- metadata -------------------------------------------------------------------------

    def meta(self) -> dict[str, object]:
        info = self.embedder.info
        return {
            "format": FORMAT,
            "model": info.name,
            "model_sha256": info.sha256,
            "dimension": info.dimension,
            "tokenizer": ENCODING,
            "vector_input": vector_input("TITLE", "TEXT"),
            "chunking": dataclasses.asdict(self.chunking),
            "bm25": dataclasses.asdict(self.bm25),
            "word_pieces": {
                "codec": codec.NAME,
                "codebook_sha256": codec.codebook().sha256,
                "spans": "int32",
                "ids": "uint16",
            },
            "groundqa_version": __version__,
        }

    # --- reading ---------------------------------------------------------------------------

    def reader(self) -> Reader:
        return self.storage.reader()

    def documents(self) -> list[Document]:
        return self.storage.documents()

    def document(self, doc_id: str) -> tuple[Document, str]:
        return self.storage.document(doc_id)

    def original(self, doc_id: str) -> Original | None:
        return self.storage.original(doc_id)

    def rows(self, doc_ids: list[str]) -> dict[str, Document]:
        """These documents' rows (title, pages...), without their texts; unknown ones left out."""
        return self.storage.existing(doc_ids)

    def counts(self) -> tuple[int, int]:
        """Documents and passages."""
        return self.storage.counts()

    def passages(self) -> Iterator[Passage]:
        """Every passage with its text, document by document (for evaluation)."""
        reader = self.reader()
        for doc in self.documents():
            _, text = self.document(doc.doc_id)
            for doc_id, start, end in reader.passages(reader.allowed([doc.doc_id])):
                yield Passage(doc_id, start, end, text[start:end])

    def search(
        self,
        question: str,
        k: int = DEFAULT_K,
        mode: Mode = DEFAULT_MODE,
        doc_ids: list[str] | None = None,
        min_confidence: float | None = None,
        history: Sequence[Turn] = (),
    ) -> SearchResult:
        """The best k passages and the answer sentence, which is left out (None) when its
        confidence is under min_confidence (the index's own, self.min_confidence, by default;
        0 always answers). history: the conversation's earlier turns, oldest first, in whose
        light the question is read (index/conversation.py)."""
        began = time.perf_counter()
        searched, query = self._asked(question, k, mode, doc_ids, min_confidence, history)
        return self.ranked(query(*self.questions.embed(searched)), min_confidence, began)

    async def search_async(
        self,
        executor: Executor,
        question: str,
        k: int = DEFAULT_K,
        mode: Mode = DEFAULT_MODE,
        doc_ids: list[str] | None = None,
        min_confidence: float | None = None,
        history: Sequence[Turn] = (),
    ) -> SearchResult:
        """search() for an event loop: the question waits for the encoder without holding a
        thread (so the questions of many clients meet in one forward pass), and ranking runs on
        executor, whose few threads bound how many queries take turns at the GIL."""
        began = time.perf_counter()
        searched, query = self._asked(question, k, mode, doc_ids, min_confidence, history)
        encoded = query(*await asyncio.wrap_future(self.questions.submit(searched)))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self.ranked, encoded, min_confidence, began)

    def _asked(
        self,
        question: str,
        k: int,
        mode: Mode,
        doc_ids: list[str] | None,
        min_confidence: float | None,
        history: Sequence[Turn],
    ) -> tuple[str, Callable[[np.ndarray, PieceVectors], Query]]:
        """The query checked: what is searched for its question, and the query its encoding makes."""
        question = check_query(question, k, mode, doc_ids, min_confidence)
        searched, asked = question, None
        if history:
            check_history(history)
            searched, asked = resolve(question, history, self._titles()).searched_for, question
        return searched, functools.partial(
            Query, searched, k=k, mode=mode, doc_ids=doc_ids, given=_given(history), asked=asked
        )

    def _titles(self) -> Titles:
        """The documents' titles, read again only when the index has changed."""
        revision = self.reader().revision
        if self._title_cache[0] != revision:
            self._title_cache = (revision, Titles([d.title for d in self.documents()]))
        return self._title_cache[1]

    def ranked(self, query: Query, min_confidence: float | None, began: float) -> SearchResult:
        """The passages and answer of an encoded query; began: when the query came (for took_ms)."""
        reader = self.reader()
        for attempt in range(STALE_RETRIES):
            try:
                hits, answer = rank(reader, query, self.ranking)
                break
            except StaleRead:  # a writer changed a document under the query: read the new revision
                time.sleep(0.001 * attempt)  # from the second try, give a burst of writes time to end
                reader = self.storage.reader(fresh=True)
        else:
            raise IndexBusy("the documents kept changing during the query; ask again")
        confidence = self._confidence(answer)
        if answer is not None and answer.given is not None:
            # A new sentence for a follow-up where it is confident enough, else the one given.
            again = self._confidence(answer.given)
            if confidence < self.min_confidence and again > confidence:
                answer, confidence = answer.given, again
        floor = self.min_confidence if min_confidence is None else min_confidence
        if answer is not None and confidence < floor:
            answer = None
        took = round((time.perf_counter() - began) * 1000, 2)
        question, searched = (query.question, None) if query.asked is None else (query.asked, query.question)
        return SearchResult(question, query.mode, query.k, hits, answer, round(confidence, 4), took, searched)

    def _confidence(self, answer: Answer | None) -> float:
        return float(self.confidence.probability(np.array(answer.signals))[0]) if answer else 0.0

    # --- writing ---------------------------------------------------------------------------

    def add(
        self,
        text: str,
        title: str | None = None,
        doc_id: str | None = None,
        source: str | None = None,
        replace: bool = False,
    ) -> Ingested:
        """Store a document; identical text under the same doc_id is a no-op."""
        return self.add_many([DocumentInput(text, title, doc_id, source)], replace)[0]

    def add_many(
        self, items: list[DocumentInput], replace: bool = False, progress: Progress | None = None
    ) -> list[Ingested]:
        """Store documents as one commit: all or none. Unchanged ones are left as they are.
        progress hears of the texts embedded, passages then sentences: (done, in all)."""
        news = [new_document(item, self.max_doc_chars) for item in items]
        ids = [n.document.doc_id for n in news]
        twice = [d for d, n in Counter(ids).items() if n > 1]
        if twice:  # a conflict between the batch's own documents
            raise DocumentConflict(
                f"doc_id {twice[0]!r} appears twice in one batch; give each document its own"
            )
        # Unchanged documents are settled before the model runs; the storage settles the rest
        # again under its lock.
        before = settle(self.storage.existing(ids), [n.document for n in news], replace)
        results = dict(enumerate(before))
        todo = [i for i, r in enumerate(before) if r.state != "unchanged"]
        prepared = self._prepare([news[i] for i in todo], progress) if todo else []
        committed = self.storage.commit(prepared, replace)
        results.update(zip(todo, committed, strict=True))
        if todo and isinstance(self.storage, Merging):
            if self.merge_in_background:  # the server: a write does not wait for a merge
                threading.Thread(target=self.storage.merge, daemon=True).start()
            else:
                self.storage.merge()
        return [results[i] for i in range(len(news))]

    def stop(self) -> None:
        """Stop embedding: a write in progress ends with ShuttingDown before its next model batch."""
        self._closing.set()

    def close(self) -> None:
        """Stop, and close the storage this index opened."""
        self.stop()
        self.storage.close()

    def delete(self, doc_id: str) -> None:
        self.storage.delete(doc_id)

    def copy_to(self, target: Index, batch: int = 64) -> Iterator[list[Ingested]]:
        """Copy every document of this index into target's storage, vectors and all (no model
        pass), a commit per batch; yields each batch's results. Target must be built with the same
        settings (its metadata check says so)."""
        if target.meta() | {"groundqa_version": ""} != self.meta() | {"groundqa_version": ""}:
            raise IndexMismatch("the target index is built with other settings than the source")
        if isinstance(target.storage, FixedLengths):
            target.storage.adopt_lengths(self.storage.mean_lengths())
        docs = self.documents()
        for at in range(0, len(docs), batch):
            dumped = self.storage.dump([d.doc_id for d in docs[at : at + batch]])
            yield target.storage.commit([Prepared(new, vectors) for new, vectors in dumped], replace=True)

    def compact(self) -> None:
        self.storage.compact()

    def _passages(self, new: NewDocument) -> list[Passage]:
        title = new.document.title
        return self.chunking.split(
            new.document.doc_id, new.text, lambda t: self.embedder.fits(vector_input(title, t))
        )

    def _prepare(self, news: list[NewDocument], progress: Progress | None = None) -> list[Prepared]:
        """Passages, sentences and their vectors: the model's work, done before any lock, in few
        calls per kind for many documents at once (small per-document calls took twice as long)."""
        cut = [(self._passages(n), sentences(n.text)) for n in news]
        flat = [(n.document.title, p) for n, (passages, _) in zip(news, cut, strict=True) for p in passages]
        total = len(flat) + sum(len(spans) for _, spans in cut)
        told = progress or (lambda done, total: None)
        told(0, total)
        p_vectors = np.zeros((len(flat), self.embedder.info.dimension), dtype=np.float32)
        pieces: list[PassagePieces] = []
        # Word pieces are compressed as they come, so a large batch does not hold them in float.
        for at in range(0, len(flat), PIECE_BATCH):
            part = flat[at : at + PIECE_BATCH]
            vectors, found = self.embedder.embed_with_pieces(
                [vector_input(title, p.text) for title, p in part],
                stop=self._closing,
                done=lambda n, at=at: told(at + n, total),  # type: ignore[misc]
            )
            p_vectors[at : at + len(part)] = vectors
            own = []
            for (title, p), f in zip(part, found, strict=True):
                skip = len(vector_input(title, ""))  # the title's word pieces are left out
                kept = f.spans[:, 0] >= skip
                own.append((f.vectors[kept], f.spans[kept] - skip + p.start, f.ids[kept]))
            pieces.extend(encode_pieces(own))
        texts = [
            vector_input(n.document.title, n.text[s.start : s.end])
            for n, (_, spans) in zip(news, cut, strict=True)
            for s in spans
        ]
        s_vectors = np.zeros((len(texts), self.embedder.info.dimension), dtype=np.float32)
        for at in range(0, len(texts), SENTENCE_BATCH):
            s_vectors[at : at + SENTENCE_BATCH] = self.embedder.embed(
                texts[at : at + SENTENCE_BATCH],
                stop=self._closing,
                done=lambda n, at=at: told(len(flat) + at + n, total),  # type: ignore[misc]
            )
        out, p_at, s_at = [], 0, 0
        for new, (passages, spans) in zip(news, cut, strict=True):
            doc, text = new.document, new.text
            stored = DocumentVectors(
                doc_id=doc.doc_id,
                sha256=doc.sha256,
                passages=np.array([(p.start, p.end) for p in passages], dtype=np.int32).reshape(-1, 2),
                passage_vectors=p_vectors[p_at : p_at + len(passages)],
                passage_texts=[lexical_input(doc.title, p.text) for p in passages],
                pieces=pieces[p_at : p_at + len(passages)],
                sentences=np.array([(s.start, s.end) for s in spans], dtype=np.int32).reshape(-1, 2),
                sentence_vectors=s_vectors[s_at : s_at + len(spans)],
                sentence_texts=[text[s.start : s.end] for s in spans],
            )
            p_at, s_at = p_at + len(passages), s_at + len(spans)
            document = dataclasses.replace(doc, passages=len(passages))
            out.append(Prepared(dataclasses.replace(new, document=document), stored))
        return out


def _given(history: Sequence[Turn]) -> tuple[str, ...]:
    return tuple(t.content for t in history if t.role == "assistant")


def new_document(item: DocumentInput, max_doc_chars: int = MAX_DOC_CHARS) -> NewDocument:
    """The document as it would be stored, or InvalidDocument naming its source if it has one."""
    try:
        if len(item.text) > max_doc_chars:
            raise InvalidDocument(
                f"the document text has {len(item.text):,} characters; the limit is "
                f"{max_doc_chars:,} (GROUNDQA_MAX_DOC_CHARS): split it into several documents"
            )
        check_text(item.text)
        title = (item.title or "").strip() or default_title(item.text)
        doc_id = check_doc_id(item.doc_id or derive_doc_id(title))
    except InvalidDocument as exc:
        raise InvalidDocument(f"{item.source}: {exc}" if item.source else str(exc)) from exc
    sha = hashlib.sha256(item.text.encode("utf-8")).hexdigest()
    document = Document(
        doc_id,
        title,
        item.source,
        sha,
        len(item.text),
        0,
        _now(),
        item.format,
        item.page_starts,
        item.published,
    )
    return NewDocument(document, item.text, item.original)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
