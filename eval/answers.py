"""Gold spans from answer text: where a question's expected answer stands in the indexed documents.

People write the answer they expect, not its character offsets. Each occurrence counts as a gold
span, as SQuAD keeps every annotator's span: first the exact text; where it is nowhere, the text
normalised (case, white space, quotes and punctuation, digit-group separators: "2,500 km" finds
"2500 km").
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from groundqa.eval.data import DataError, Question
from groundqa.eval.metrics import Span

# A number with digit-group separators (2,500 / 2'500 / 2 500 with a no-break space) is one
# token; other words are runs of letters and digits, so quotes, dashes and punctuation never count.
_TOKEN = re.compile(r"\d{1,3}(?:[,'\u00a0\u202f]\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?|\w+")
_SEPARATORS = re.compile(r"[,'\u00a0\u202f]")


@dataclass(frozen=True)
class Found:
    """Where one answer stands: its spans in each document that holds it, and how it was matched."""

    spans: dict[str, list[Span]]
    how: str  # "exact", "normalised" or "" (found nowhere)

    @property
    def ambiguous(self) -> bool:
        return len(self.spans) > 1


def find_answer(answer: str, texts: dict[str, str]) -> Found:
    """The answer's spans in each of texts (doc_id to text): exact where it stands as written in
    any document, else normalised."""
    exact = {doc_id: spans for doc_id, text in texts.items() if (spans := _exact(answer, text))}
    if exact:
        return Found(exact, "exact")
    wanted = [_norm(m.group()) for m in _TOKEN.finditer(answer)]
    typed = answer.strip()
    # An answer typed with its quotes or brackets keeps the document's own around the words.
    wrap = (bool(typed) and not typed[0].isalnum(), bool(typed) and not typed[-1].isalnum())
    loose = {doc_id: spans for doc_id, text in texts.items() if (spans := _loose(wanted, text, wrap))}
    return Found(loose, "normalised" if loose else "")


def _exact(answer: str, text: str) -> list[Span]:
    """Where the answer stands as written, beginning and ending outside any word or number
    ("500 km" is not in "2,500 km")."""
    needle = answer.strip()
    if not needle:
        return []
    inside = bytearray(len(text) + 1)  # 1 where a position lies within a token, past its start
    for t in _TOKEN.finditer(text):
        inside[t.start() + 1 : t.end()] = b"\x01" * (t.end() - t.start() - 1)
    found, at = [], text.find(needle)
    while at >= 0:
        if not inside[at] and not inside[at + len(needle)]:
            found.append((at, at + len(needle)))
        at = text.find(needle, at + 1)
    return found


def _loose(wanted: list[str], text: str, wrap: tuple[bool, bool]) -> list[Span]:
    """Runs of the document's tokens equal to the answer's, as spans from the first token's start
    to the last one's end (offsets of the document as it is), widened over the punctuation next
    to them on the sides wrap says."""
    if not wanted:
        return []
    tokens = list(_TOKEN.finditer(text))
    words = [_norm(t.group()) for t in tokens]
    n = len(wanted)
    found = []
    for i in range(len(words) - n + 1):
        if words[i] == wanted[0] and words[i : i + n] == wanted:
            start, end = tokens[i].start(), tokens[i + n - 1].end()
            while wrap[0] and start > 0 and _mark(text[start - 1]):
                start -= 1
            while wrap[1] and end < len(text) and _mark(text[end]):
                end += 1
            found.append((start, end))
    return found


def _mark(char: str) -> bool:
    return not char.isalnum() and not char.isspace()


def _norm(token: str) -> str:
    return _SEPARATORS.sub("", token).casefold()


@dataclass(frozen=True)
class Resolved:
    """A question set with every answer text turned into gold spans, and what could not be."""

    questions: list[Question]  # those to score
    unfound: list[Question]  # answer text found in no document: left out of the scores
    ambiguous: dict[str, list[str]]  # question id to the documents that hold its answer
    matched: dict[str, int]  # how many answers were found exactly, and normalised


def resolve(questions: list[Question], texts: dict[str, str]) -> Resolved:
    """Gold spans for the questions given as answer text: in their doc_id's text when they name
    one, else in every document (several holding it: each one's spans count, and it is reported
    as ambiguous). Questions with spans pass as they are."""
    kept, unfound, ambiguous = [], [], {}
    matched = {"exact": 0, "normalised": 0}
    for q in questions:
        if not q.answer_only:
            kept.append(q)
            continue
        if q.doc_id is not None and q.doc_id not in texts:
            raise DataError(f"question {q.id}: doc_id {q.doc_id!r} is not in the index")
        where = texts if q.doc_id is None else {q.doc_id: texts[q.doc_id]}
        found = find_answer(q.answer or "", where)
        if not found.how:
            unfound.append(q)
            continue
        matched[found.how] += 1
        (doc_id, spans), *others = found.spans.items()
        if others:
            ambiguous[q.id] = list(found.spans)
        elsewhere = tuple((d, tuple(s)) for d, s in others)
        kept.append(
            dataclasses.replace(q, doc_id=doc_id, spans=spans, answer_only=False, elsewhere=elsewhere)
        )
    return Resolved(kept, unfound, ambiguous, matched)
