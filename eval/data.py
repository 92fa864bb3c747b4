"""Question sets: SQuAD files, groundqa's JSONL format and CSV (question and answer text)."""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundqa.eval.metrics import Span
from groundqa.index.errors import GroundQAError
from groundqa.index.index import derive_doc_id

PARAGRAPH_SEPARATOR = "\n\n"


class DataError(GroundQAError):
    pass


@dataclass(frozen=True)
class Article:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    doc_id: str | None
    spans: list[tuple[int, int]]
    answer: str | None = None
    page: int | None = None  # the page of the gold span, in a document with pages
    # Given as answer text alone: its spans are found in the documents (eval.answers).
    answer_only: bool = False
    # Gold spans in other documents (an answer text that several documents hold): any counts.
    elsewhere: tuple[tuple[str, tuple[Span, ...]], ...] = ()

    def golds(self, doc_id: str | None = None) -> list[tuple[str, list[Span]]]:
        """Each document's gold spans, this question's own document (or doc_id) first."""
        return [(doc_id or self.doc_id or "", self.spans)] + [(d, list(s)) for d, s in self.elsewhere]


@dataclass
class Dataset:
    name: str
    questions: list[Question]
    articles: list[Article] = field(default_factory=list)


def load_squad(path: Path) -> Dataset:
    """One document per article: its paragraphs joined by a blank line, gold offsets shifted."""
    raw = _read_json(path)
    articles, questions = [], []
    try:
        for entry in raw["data"]:
            doc_id = derive_doc_id(entry["title"])
            offset, parts = 0, []
            for paragraph in entry["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    spans = sorted(
                        {
                            (offset + a["answer_start"], offset + a["answer_start"] + len(a["text"]))
                            for a in qa["answers"]
                        }
                    )
                    answer = qa["answers"][0]["text"] if qa["answers"] else None
                    questions.append(Question(qa["id"], qa["question"], doc_id, spans, answer))
                parts.append(context)
                offset += len(context) + len(PARAGRAPH_SEPARATOR)
            articles.append(
                Article(doc_id, entry["title"].replace("_", " "), PARAGRAPH_SEPARATOR.join(parts))
            )
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path} is not in SQuAD format: missing or wrong field {exc}") from exc
    dataset = Dataset(path.stem, questions, articles)
    check_spans(dataset, {a.doc_id: a.text for a in articles})
    return dataset


def load_questions(path: Path) -> Dataset:
    """A .csv file (header `question,answer`, optional `doc_id`, `id`) or JSONL, one question a
    line: {"id", "question", "doc_id"?, "page"?, "spans": [[start, end], ...] and/or "answer"}.
    Without spans, the answer text's spans are found later (eval.answers); with both, the spans."""
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else read_jsonl(path, "question")
    questions = []
    for number, item in rows:
        try:
            question = _question(item, number)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{path}:{number}: malformed question line ({exc}); see the README's format"
            ) from exc
        if any(not 0 <= s < e for s, e in question.spans):
            raise DataError(
                f"{path}:{number}: spans must be a list of [start, end] with start < end "
                "(empty: the question is unanswerable)"
            )
        questions.append(question)
    if not questions:
        raise DataError(f"{path} holds no questions")
    return Dataset(path.stem, questions)


def _question(item: dict[str, Any], number: int) -> Question:
    page = item.get("page")
    answer = item.get("answer")
    if "spans" not in item and not (isinstance(answer, str) and answer.strip()):
        raise KeyError("spans or answer")
    spans = [(int(s), int(e)) for s, e in item.get("spans", [])]
    return Question(
        str(item.get("id") or number),
        str(item["question"]),
        item.get("doc_id") or None,
        spans,
        answer,
        None if page is None else int(page),
        answer_only="spans" not in item,
    )


# The columns a CSV question file may have; question and answer are required.
CSV_COLUMNS = ("question", "answer", "doc_id", "id")


def _csv_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Each row's line number and its cells by column; DataError naming the line and column for
    a missing column or an empty question or answer. Excel's byte-order mark and ; or tab
    separators are read too."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from exc
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header = [h.strip().lower() for h in next(reader, [])]
    for needed in ("question", "answer"):
        if needed not in header:
            raise DataError(
                f"{path}:1: the header has no '{needed}' column (it has {', '.join(header) or 'none'}); "
                f"columns: {', '.join(CSV_COLUMNS)}"
            )
    rows = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            item = {h: c.strip() for h, c in zip(header, cells, strict=False) if h in CSV_COLUMNS}
            for needed in ("question", "answer"):
                if not item.get(needed):
                    column = header.index(needed) + 1
                    raise DataError(f"{path}:{reader.line_num}:{column}: the {needed} is empty")
            rows.append((reader.line_num, item))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: {exc}") from exc
    return rows


def read_jsonl(path: Path, kind: str) -> list[tuple[int, Any]]:
    """Each non-blank line's number and JSON value; DataError for a file that cannot be read or a
    line that is not JSON (kind names what a line holds, for the message)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    found = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                found.append((number, json.loads(line)))
            except ValueError as exc:
                column = f"{exc.colno}:" if isinstance(exc, json.JSONDecodeError) else ""
                raise DataError(
                    f"{path}:{number}:{column} malformed {kind} line ({exc}); see the README's format"
                ) from exc
    return found


def check_spans(dataset: Dataset, texts: dict[str, str]) -> None:
    """Every question names a document the index holds, and its spans lie inside that document."""
    for q in dataset.questions:
        for doc_id, spans in q.golds():
            if doc_id not in texts:
                raise DataError(f"question {q.id}: doc_id {q.doc_id!r} is not in the index")
            length = len(texts[doc_id])
            for s, e in spans:
                if e > length:
                    raise DataError(
                        f"question {q.id}: span [{s}, {e}] lies outside {doc_id!r}, "
                        f"which has {length} characters"
                    )


def sample(questions: list[Question], limit: int | None, seed: int) -> list[Question]:
    if limit is None or limit >= len(questions):
        return questions
    return random.Random(seed).sample(questions, limit)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
