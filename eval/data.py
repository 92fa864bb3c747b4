"""Question sets with gold spans: SQuAD files and groundqa's JSONL format."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """JSONL: {"id", "question", "doc_id"?, "answer"?, "page"?, "spans": [[start, end], ...]} per line."""
    questions = []
    for number, item in read_jsonl(path, "question"):
        try:
            spans = [(int(s), int(e)) for s, e in item["spans"]]
            page = item.get("page")
            question = Question(
                str(item["id"]),
                str(item["question"]),
                item.get("doc_id"),
                spans,
                item.get("answer"),
                None if page is None else int(page),
            )
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
                raise DataError(
                    f"{path}:{number}: malformed {kind} line ({exc}); see the README's format"
                ) from exc
    return found


def check_spans(dataset: Dataset, texts: dict[str, str]) -> None:
    """Every question names a document the index holds, and its spans lie inside that document."""
    for q in dataset.questions:
        if q.doc_id not in texts:
            raise DataError(f"question {q.id}: doc_id {q.doc_id!r} is not in the index")
        length = len(texts[q.doc_id])
        for s, e in q.spans:
            if e > length:
                raise DataError(
                    f"question {q.id}: span [{s}, {e}] lies outside {q.doc_id!r}, "
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
