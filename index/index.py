"""A saved index: a directory with metadata, SQLite rows and derived FAISS and BM25 files.

Crash safety: a write first saves the derived files of the next revision in their own folder,
then commits the rows and the revision number in one SQLite transaction, then removes the old
folder. Whatever is killed when, the folder named by the committed revision is whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from index import __version__, store
from index.errors import DocumentConflict, DocumentNotFound, IndexMismatch, InvalidDocument, InvalidQuery
from index.model import Embedder, TokenVectors
from index.ranking import MODES, Answer, Hit, Mode, Ranking, rank
from index.snapshot import DocTokens, Snapshot
from index.store import Document, Rows, Store
from index.text import ENCODING, Chunking, Passage, check_text, sentences

FORMAT = 2  # 2: word-piece vectors of every passage
DOC_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_QUESTION_CHARS = 1000
MAX_K = 50
TITLE_IN_VECTOR = 100


@dataclass(frozen=True)
class SearchResult:
    question: str
    mode: Mode
    k: int
    hits: list[Hit]
    answer: Answer | None
    took_ms: float

    def as_json(self) -> dict[str, Any]:
        """The contract's QueryResponse."""
        answer = None
        if self.answer is not None:
            a = self.answer
            answer = {
                "doc_id": a.passage.doc_id,
                "title": a.title,
                "start": a.span.start,
                "end": a.span.end,
                "text": a.text,
                "score": a.score,
            }
        passages = [
            {
                "rank": rank,
                "doc_id": h.passage.doc_id,
                "title": h.title,
                "passage_id": passage_id(h.passage),
                "start": h.passage.start,
                "end": h.passage.end,
                "text": h.passage.text,
                "score": h.score,
            }
            for rank, h in enumerate(self.hits, start=1)
        ]
        return {
            "question": self.question,
            "mode": self.mode,
            "k": self.k,
            "answer": answer,
            "passages": passages,
            "took_ms": self.took_ms,
        }


def vector_input(title: str, text: str) -> str:
    """What is embedded: the title gives a passage its topic (+1 point of hit@1 on SQuAD).
    Only vectors see it; offsets and returned text are the passage's own. Long titles are cut so
    that they leave room for the text."""
    return f"{title[:TITLE_IN_VECTOR]}: {text}"


def passage_id(p: Passage) -> str:
    """Stable across re-indexing of the same text: the document and the span."""
    return f"{p.doc_id}:{p.start}-{p.end}"


@dataclass(frozen=True)
class Added:
    document: Document
    state: Literal["added", "replaced", "unchanged"]

    @property
    def created(self) -> bool:
        return self.state == "added"


def derive_doc_id(title: str, sha: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-.")[:128]
    return slug or f"doc-{sha[:12]}"


def default_title(text: str) -> str:
    first = next(line.strip() for line in text.splitlines() if line.strip())
    return first[:200]


def check_doc_id(doc_id: str) -> None:
    if not DOC_ID.fullmatch(doc_id):
        raise InvalidDocument(
            f"doc_id {doc_id!r} is not allowed; use 1 to 128 of the characters A-Z a-z 0-9 . _ -"
        )


class Index:
    def __init__(
        self,
        folder: Path | str,
        embedder: Embedder,
        chunking: Chunking = Chunking(),
        ranking: Ranking = Ranking(),
    ) -> None:
        self.folder = Path(folder)
        self.embedder = embedder
        self.chunking = chunking
        self.ranking = ranking
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_meta()
        self.store = Store(self.folder / "store.sqlite")
        self._write_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._snapshot = self._open_snapshot()

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
            "groundqa_version": __version__,
        }

    def _check_meta(self) -> None:
        path = self.folder / "meta.json"
        want = self.meta()
        if not path.exists():
            _write_atomic(path, json.dumps(want, indent=2))
            return
        have = json.loads(path.read_text())
        differ = [
            f"{key} is {have.get(key)!r} in the index but {want[key]!r} here"
            for key in (
                "format",
                "model",
                "model_sha256",
                "dimension",
                "tokenizer",
                "vector_input",
                "chunking",
            )
            if have.get(key) != want[key]
        ]
        if differ:
            raise IndexMismatch(
                f"index {self.folder} was built with other settings: {'; '.join(differ)}. "
                "Use the settings it was built with, or ingest into a new --index folder"
            )

    # --- reading ---------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def documents(self) -> list[Document]:
        docs = self._current().rows.documents.values()
        return sorted(docs, key=lambda d: (d.created_at, d.doc_id))

    def document(self, doc_id: str) -> tuple[Document, str]:
        rows = self._current().rows
        if doc_id not in rows.documents:
            raise DocumentNotFound(f"no document with doc_id {doc_id!r}; list them with 'groundqa docs'")
        return rows.documents[doc_id], rows.texts[doc_id]

    def search(
        self, question: str, k: int = 5, mode: Mode = "hybrid", doc_ids: list[str] | None = None
    ) -> SearchResult:
        began = time.perf_counter()
        question = question.strip()
        check_query(question, k, mode)
        snap = self._current()
        if doc_ids is not None:
            unknown = [d for d in doc_ids if d not in snap.rows.documents]
            if unknown:
                raise DocumentNotFound(f"doc_ids not in the index: {', '.join(unknown)}")
        qvecs, qtokens = self.embedder.embed_with_tokens([question])
        hits, answer = rank(snap, question, qvecs[0], qtokens[0], k, mode, doc_ids, self.ranking)
        took = round((time.perf_counter() - began) * 1000, 2)
        return SearchResult(question, mode, k, hits, answer, took)

    # --- writing ---------------------------------------------------------------------------

    def add(
        self,
        text: str,
        title: str | None = None,
        doc_id: str | None = None,
        source: str | None = None,
        replace: bool = False,
    ) -> Added:
        """Store a document; identical text under the same doc_id is a no-op."""
        check_text(text)
        title = (title or "").strip() or default_title(text)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        doc_id = doc_id or derive_doc_id(title, sha)
        check_doc_id(doc_id)
        with self._write_lock:
            rows = self._current().rows
            old = rows.documents.get(doc_id)
            if old is not None and old.sha256 == sha and (old.title == title or not replace):
                return Added(old, "unchanged")
            if old is not None and not replace:
                raise DocumentConflict(
                    f"doc_id {doc_id!r} already holds different text; replace it with PUT "
                    "or choose another doc_id"
                )
            passages = self.chunking.split(doc_id, text, lambda t: self.embedder.fits(vector_input(title, t)))
            spans = sentences(text)
            doc = Document(doc_id, title, source, sha, len(text), len(passages), _now())
            self._commit(doc_id, doc, text, passages, spans)
            return Added(doc, "added" if old is None else "replaced")

    def delete(self, doc_id: str) -> None:
        with self._write_lock:
            if doc_id not in self._current().rows.documents:
                raise DocumentNotFound(f"no document with doc_id {doc_id!r}; list them with 'groundqa docs'")
            self._commit(doc_id, None, "", [], [])

    def _commit(
        self, doc_id: str, doc: Document | None, text: str, passages: list[Passage], spans: list
    ) -> None:
        """Replace doc_id's rows (or remove them, with doc None) as one new revision."""
        old = self._snapshot
        keep_p = [i for i, p in enumerate(old.rows.passages) if p.doc_id != doc_id]
        keep_s = [i for i, (d, _) in enumerate(old.rows.sentences) if d != doc_id]
        first_p, first_s = self.store.next_ids()
        new_p = list(range(first_p, first_p + len(passages)))
        new_s = list(range(first_s, first_s + len(spans)))
        title = doc.title if doc is not None else ""
        p_vectors, p_tokens = self.embedder.embed_with_tokens([vector_input(title, p.text) for p in passages])
        s_vectors = self.embedder.embed([vector_input(title, text[s.start : s.end]) for s in spans])
        documents = {d: v for d, v in old.rows.documents.items() if d != doc_id}
        texts = {d: v for d, v in old.rows.texts.items() if d != doc_id}
        tokens = {d: v for d, v in old.tokens.items() if d != doc_id}
        if doc is not None:
            documents[doc_id], texts[doc_id] = doc, text
            tokens[doc_id] = self._doc_tokens(title, passages, p_tokens)
        rows = Rows(
            documents=documents,
            texts=texts,
            passage_ids=[old.rows.passage_ids[i] for i in keep_p] + new_p,
            passages=[old.rows.passages[i] for i in keep_p] + passages,
            sentence_ids=[old.rows.sentence_ids[i] for i in keep_s] + new_s,
            sentences=[old.rows.sentences[i] for i in keep_s] + [(doc_id, s) for s in spans],
        )
        revision = old.revision + 1
        snap = Snapshot.build(
            revision,
            rows,
            np.concatenate([old.passage_vectors[keep_p], p_vectors]),
            np.concatenate([old.sentence_vectors[keep_s], s_vectors]),
            tokens,
        )
        snap = snap.save(self._derived(revision))
        with self.store.transaction() as db:
            store.delete_document(db, doc_id)
            if doc is not None:
                store.insert_document(
                    db,
                    doc,
                    text,
                    list(zip(new_p, passages, strict=True)),
                    list(zip(new_s, spans, strict=True)),
                )
            store.bump_revision(db, revision)
        self._snapshot = snap
        self._remove_stale(revision)

    def _doc_tokens(self, title: str, passages: list[Passage], tokens: list[TokenVectors]) -> DocTokens:
        """Each passage's word pieces with spans in the document; the title's are left out."""
        skip = len(vector_input(title, ""))
        blocks = []
        for p, t in zip(passages, tokens, strict=True):
            own = t.spans[:, 0] >= skip
            blocks.append((p, t.vectors[own], t.spans[own] - skip + p.start, t.pieces[own]))
        return DocTokens.build(blocks)

    def _current(self) -> Snapshot:
        """The snapshot, reloaded when another process (a CLI ingest, say) committed since."""
        snap = self._snapshot
        if self.store.revision() != snap.revision:
            with self._reload_lock:
                if self.store.revision() != self._snapshot.revision:
                    self._snapshot = self._open_snapshot()
            snap = self._snapshot
        return snap

    # --- files -----------------------------------------------------------------------------

    def _derived(self, revision: int) -> Path:
        return self.folder / f"derived-{revision}"

    def _open_snapshot(self) -> Snapshot:
        revision = self.store.revision()
        rows = self.store.rows()
        folder = self._derived(revision)
        if revision == 0 and not folder.exists():
            empty = np.zeros((0, self.embedder.info.dimension), dtype=np.float32)
            snap = Snapshot.build(0, rows, empty, empty, {}).save(folder)
        else:
            snap = Snapshot.load(folder, revision, rows)
        self._remove_stale(revision)
        return snap

    def _remove_stale(self, revision: int) -> None:
        """Old revisions, and folders of a write that never committed."""
        for path in self.folder.glob("derived-*"):
            if path.name != f"derived-{revision}":
                shutil.rmtree(path, ignore_errors=True)


def check_query(question: str, k: int, mode: str) -> None:
    if not question:
        raise InvalidQuery("the question is empty; ask something")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidQuery(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    if not 1 <= k <= MAX_K:
        raise InvalidQuery(f"k is {k}; it must be from 1 to {MAX_K}")
    if mode not in MODES:
        raise InvalidQuery(f"mode {mode!r} is unknown; use one of {', '.join(MODES)}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_atomic(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    tmp.replace(path)
