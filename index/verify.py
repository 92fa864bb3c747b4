"""Does a text say only what the articles say? Each of its sentences (a claim) is matched to the
span of the given passages that supports it best: one sentence of a passage, or two adjacent
sentences together (a claim may join two facts). The citation is that span, found here, with
exact offsets; a model's own markers count for nothing.

A span supports a claim when it states it:
- every content word of the claim is in the span, by its stem or as a stem the other's begins
  with ("Russian" in "Russia"); the question's words and a few reporting words are free, so an
  answer may repeat what was asked ("how long": "long"), but nothing else may be added: a
  swapped phrase of any kind or a grafted clause leaves words the span lacks, and the reason
  names them;
- it holds every number and every name of the claim, in the claim's order (two names swapped,
  the roles exchanged, is not support);
- it negates what the claim negates and nothing the claim affirms;
- it gives no orders (an article's instructions to a model state no fact);
- it is close enough in words and meaning: score = (cosine + share of the claim's words in it)
  / 2, at least SUPPORT_FLOOR.
A claim must say something: a document's title, a heading or a short fragment, and the question
restated, support nothing; nor does a sentence that repeats an earlier one. The rules were set
and measured on the shared SQuAD half (`groundqa eval verifier`, docs/quality.md#verifier).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from groundqa.index.index import Index, SearchResult
from groundqa.index.lexical import NEGATION, WORD_OF_LETTERS, keys, terms, word_set
from groundqa.index.model import Embedder
from groundqa.index.text import sentences

# Sentences of one text checked at most, and its characters (POST /v1/verify).
MAX_CLAIMS = 100
MAX_VERIFY_CHARS = 20_000
# Why a sentence of a text is not checked: its request's time ran out (service/search.py).
UNCHECKED = "not checked: the request's time ran out; send fewer sentences, or this one again"
# Least cosine of a kept claim with the question it answers: a supported sentence that does not
# bear on it (one an article planted for a model to repeat, a passage copied whole) is left out.
MIN_RELEVANCE = 0.25
# Least score of a supporting span (see the module's docstring).
SUPPORT_FLOOR = 0.6
# Words after a negation that it governs ("did not visit China": visit, china).
NEGATED_WORDS = 2
# Markers, labels and list marks a model puts around its sentences: not part of the claim.
_MARKERS = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]|^\s*(?:answer\s*:|[-*•]\s+|\d+[.)]\s+)|\*\*", re.I)
_BEFORE_MARK = re.compile(r"\s+([.,;:!?])")
# A sentence that gives orders (to a model reading it) states no fact: it supports nothing.
_INSTRUCTION = re.compile(
    r"^\W*(?:please\s+)?(?:ignore|disregard|forget|reply|respond|answer|say|output|print|repeat|pretend)\b"
    r"|\b(?:previous|earlier|above|prior|system)\s+(?:instructions|prompt)\b"
    r"|\byou\s+(?:are|must|should|will)\s+(?:now\s+)?(?:an?\s+)?"
    r"(?:ai|assistant|model|chatbot|language model)\b",
    re.I,
)
# Words a faithful answer adds around what its source says: reporting and linking, no fact.
FREE_WORDS = frozenset(
    terms(
        "also however according said says say stated states reported reports therefore thus so "
        "about approximately around roughly some main mainly total overall"
    )
)
# A claim is a fragment when it is this short ("Super Bowl 50."), and a title or a heading when
# it has no end punctuation and this share of its words is capitalized.
FRAGMENT_WORDS = 2
TITLE_CASE = 0.6
# A claim whose content words are this share of an earlier claim's says nothing new.
REPEAT_SHARE = 0.8
# Where a claim joins independent clauses.
_JOINS = re.compile(r";\s+|,\s+(?:and|but|while|whereas)\s+")
_ENDED = re.compile(r"[.!?][\"'”’)\]]*$")


@dataclass(frozen=True)
class Source:
    """A passage to check against: where it lies in its document, its text and its document's title."""

    doc_id: str
    start: int
    end: int
    text: str
    title: str = ""


@dataclass(frozen=True)
class Support:
    """One claim, checked: the span that supports it best (None: no span comes close)."""

    text: str
    supported: bool
    score: float
    doc_id: str | None = None
    start: int | None = None
    end: int | None = None
    cited: str | None = None  # the document's text[start:end]
    reason: str | None = None  # why it is not supported
    # A claim that joins facts of one passage: the spans of its other parts, each (doc_id, start, end, text).
    also: tuple[tuple[str, int, int, str], ...] = ()


@dataclass(frozen=True)
class _Span:
    doc_id: str
    start: int
    end: int
    text: str
    parts: tuple[int, ...]  # the sentences it joins, as rows of the sentence vectors
    source: int  # which of the sources it lies in


def claims(text: str) -> list[str]:
    """The sentences of a text, without the markers and labels around them."""
    out = []
    for span in sentences(text):
        claim = _BEFORE_MARK.sub(r"\1", " ".join(_MARKERS.sub(" ", text[span.start : span.end]).split()))
        if claim:
            out.append(claim)
    return out


def negated(text: str) -> set[str]:
    """The words a negation governs: the first NEGATED_WORDS words (stems) after each one."""
    out: set[str] = set()
    for match in NEGATION.finditer(text):
        out.update(terms(text[match.end() :])[:NEGATED_WORDS])
    return out


def judge(
    claim: str, span: str, cosine: float, free: frozenset[str] = frozenset()
) -> tuple[float, str | None]:
    """The support score of a span for a claim, and what it lacks (None: nothing). free: stems
    the claim may hold that the span does not (the question's)."""
    said = set(terms(claim))
    held = set(terms(span))
    coverage = len(said & held) / len(said) if said else 0.0
    score = (cosine + coverage) / 2
    numbers, names = keys(claim)
    present = word_set(span)
    # A name in another form of its family ("Russian" for "Russia") is the same name; a number is exact.
    lost = sorted(
        (numbers - present) | {n for n in names - present if not any(_close(n, p) for p in present)}
    )
    if lost:
        return score * (1 - len(lost) / len(numbers | names)), f"the sources do not say {', '.join(lost)}"
    claim_negated, span_negated = negated(claim), negated(span)
    if not claim_negated <= span_negated or span_negated & (said - claim_negated):
        return score / 2, "the sources say otherwise (a negation differs)"
    if not said:
        return 0.0, "it says nothing that can be checked"
    added = _added(claim, said - held - free - FREE_WORDS, held)
    if added:
        return score * (1 - len(added) / len(said)), f"the sources do not say: {', '.join(added)}"
    if not _in_order(claim, span):
        return score / 2, "the sources name them in another order (the roles differ)"
    if score < SUPPORT_FLOOR:
        return score, "no passage says this"
    return score, None


def _added(claim: str, unmatched: set[str], held: set[str]) -> list[str]:
    """The claim's words (as written) whose stems the span lacks, apart from those close to a
    stem of the span (one begins with the other)."""
    lacking = {u for u in unmatched if not any(_close(u, h) for h in held)}
    if not lacking:
        return []
    words = re.findall(r"\w+", claim)
    return list(dict.fromkeys(w for w in words if terms(w) and terms(w)[0] in lacking))


def _close(a: str, b: str) -> bool:
    """Stems of one word family: "russia" and "russian", "econom" and "economi" (4 letters at least)."""
    short, long = sorted((a, b), key=len)
    return a == b or (len(short) >= 4 and long.startswith(short))


def name_order(text: str) -> list[str]:
    """A text's names (as keys gives them) in the order they first stand."""
    return list(dict.fromkeys(_names(text)))


def _names(text: str) -> list[str]:
    """Every place a name stands in a text, in order (a name may come again)."""
    _, names = keys(text)
    found = (w.lower().removesuffix("'s").removesuffix("’s") for w in WORD_OF_LETTERS.findall(text))
    return [w for w in found if w in names]


def _in_order(claim: str, span: str) -> bool:
    """The claim's names that the span also has stand in the span in the claim's order (any of
    each name's places may serve)."""
    places = _names(span)
    at = 0
    for name in (n for n in name_order(claim) if n in places):
        if name not in places[at:]:
            return False
        at = places.index(name, at) + 1
    return True


def says_nothing(claim: str, sources: list[Source], question: str | None = None) -> str | None:
    """Why a claim states no fact to check, or None: a document's title, a heading or short
    fragment (no end punctuation), or the question restated."""
    said = set(terms(claim))
    if not said:
        return "it says nothing that can be checked"
    if any(said <= set(terms(s.title)) for s in sources if s.title):
        return "it is a document's title, not a statement"
    words = WORD_OF_LETTERS.findall(claim)
    capitalized = sum(w[0].isupper() for w in words) / max(len(words), 1)
    if len(words) <= FRAGMENT_WORDS or (not _ENDED.search(claim) and capitalized >= TITLE_CASE):
        return "it is a heading or a fragment, not a statement"
    if question is not None and said <= set(terms(question)) | FREE_WORDS:
        return "it restates the question"
    return None


def repeats(texts: list[str]) -> list[bool]:
    """Whether each text says again what an earlier one said (see _repeat)."""
    seen: list[_Said] = []
    out = []
    for text in texts:
        said = _said(text)
        out.append(_repeat(said, seen))
        seen.append(said)
    return out


# What a text says, for telling repeats: its stems, and its numbers and names.
_Said = tuple[set[str], set[str]]


def _said(text: str) -> _Said:
    return set(terms(text)), set.union(*keys(text))


def _repeat(said: _Said, seen: list[_Said]) -> bool:
    """REPEAT_SHARE of its words in an earlier text, and no number or name that one lacks (a
    changed figure is another claim, checked as such)."""
    words, named = said
    return bool(words) and any(
        len(words & before) >= REPEAT_SHARE * len(words)
        and all(any(_close(n, m) for m in names) for n in named)
        for before, names in seen
    )


def ended(claim: str) -> bool:
    """The claim ends as a sentence does (not cut off)."""
    return bool(_ENDED.search(claim))


class Checker:
    """Claims checked against one set of sources, one at a time or together: the sources'
    sentences (and the question) are embedded once, so a reply streamed sentence by sentence
    costs one model pass per sentence. Repeats are judged against every claim checked before."""

    def __init__(self, embedder: Embedder, sources: list[Source], question: str | None = None) -> None:
        self.embedder, self.sources, self.question = embedder, sources, question
        self.spans = _spans(sources)
        singles = [s for s in self.spans if len(s.parts) == 1]
        asked = [question] if question is not None else []
        vectors = embedder.embed([*asked, *(s.text for s in singles)]) if singles or asked else None
        self.asked = vectors[0] if vectors is not None and asked else None
        self.vectors = vectors[len(asked) :] if vectors is not None and singles else None
        self.free = frozenset(terms(question or ""))
        self.seen: list[_Said] = []  # what the claims checked so far said, for repeats

    def heard(self, text: str) -> None:
        """A sentence said without being checked here (the extractive answer leading): a claim
        that repeats it is a repeat."""
        self.seen.append(_said(text))

    def check(self, texts: list[str]) -> list[Support]:
        if not texts:
            return []
        again = []
        for text in texts:
            said = _said(text)
            again.append(_repeat(said, self.seen))
            self.seen.append(said)
        if self.vectors is None:
            return [Support(t, False, 0.0, reason="there is no passage to check it against") for t in texts]
        claimed = self.embedder.embed(texts)
        cosines = claimed @ self.vectors.T
        found = []
        for n, text in enumerate(texts):
            empty = (
                "it repeats an earlier sentence"
                if again[n]
                else says_nothing(text, self.sources, self.question)
            )
            if empty:
                found.append(Support(text, False, 0.0, reason=empty))
                continue
            c = _best(text, self.spans, cosines[n], self.free)
            if not c.supported and len(parts := clauses(text)) > 1:
                c = self._joined(c, parts)
            if c.supported and self.asked is not None and float(claimed[n] @ self.asked) < MIN_RELEVANCE:
                c = dataclasses.replace(c, supported=False, reason="it does not bear on the question")
            found.append(c)
        return found

    def _joined(self, whole: Support, parts: list[str]) -> Support:
        """A claim that joins two or more facts is supported when each part is, by a span of one
        and the same passage (a clause grafted on from another paragraph is not), every span
        cited; else the claim as checked whole."""
        if self.vectors is None:
            return whole
        cosines = self.embedder.embed(parts) @ self.vectors.T
        for source in sorted({s.source for s in self.spans}):
            spans = [s for s in self.spans if s.source == source]
            found = [_best(part, spans, cosines[n], self.free) for n, part in enumerate(parts)]
            if all(f.supported for f in found):
                first, *rest = found
                also = tuple((f.doc_id or "", f.start or 0, f.end or 0, f.cited or "") for f in rest)
                score = min(f.score for f in found)
                return dataclasses.replace(first, text=whole.text, score=score, also=also)
        return whole


def clauses(text: str) -> list[str]:
    """The independent clauses a claim joins ("X; Y", "X, and Y", "X, but Y", "X, while Y"), each
    of 3 words at least, else the claim whole."""
    parts = [p.strip(" ,;") for p in _JOINS.split(text)]
    return parts if len(parts) > 1 and all(len(p.split()) >= 3 for p in parts) else [text]


def verify(
    embedder: Embedder, texts: list[str], sources: list[Source], question: str | None = None
) -> list[Support]:
    """Each claim with its best supporting span among the sources' sentences, one or two
    adjacent ones. question: also leave out a supported claim whose cosine with it is under
    MIN_RELEVANCE."""
    return Checker(embedder, sources, question).check(texts) if texts else []


def _spans(sources: list[Source]) -> list[_Span]:
    """Every sentence of the sources, and every two adjacent ones, past those giving orders."""
    spans: list[_Span] = []
    for number, source in enumerate(sources):
        cut = [c for c in sentences(source.text) if not _INSTRUCTION.search(source.text[c.start : c.end])]
        first = sum(len(s.parts) == 1 for s in spans)
        pairs = [(i,) for i in range(len(cut))] + [(i, i + 1) for i in range(len(cut) - 1)]
        for part in pairs:
            start, end = cut[part[0]].start, cut[part[-1]].end
            rows = tuple(first + i for i in part)
            spans.append(
                _Span(
                    source.doc_id,
                    source.start + start,
                    source.start + end,
                    source.text[start:end],
                    rows,
                    number,
                )
            )
    return spans


def _best(text: str, spans: list[_Span], cosines: np.ndarray, free: frozenset[str]) -> Support:
    """Supported spans first, then the higher score, then the shorter (one sentence over two)."""
    judged = []
    for span in spans:
        score, lacks = judge(text, span.text, max(float(cosines[p]) for p in span.parts), free)
        judged.append(((lacks is None, round(score, 6), -len(span.parts)), span, score, lacks))
    _, span, score, lacks = max(judged, key=lambda j: j[0])
    if lacks is not None and score < SUPPORT_FLOOR / 2:  # nothing comes close: no citation at all
        return Support(text, False, round(score, 4), reason=lacks)
    return Support(
        text, lacks is None, round(max(score, 0.0), 4), span.doc_id, span.start, span.end, span.text, lacks
    )


def sources_of(result: SearchResult) -> list[Source]:
    """The passages a search returned, as sources to check against."""
    return [
        Source(h.passage.doc_id, h.passage.start, h.passage.end, h.passage.text, h.title) for h in result.hits
    ]


def verify_text(
    index: Index,
    text: str,
    doc_ids: list[str] | None = None,
    k: int = 5,
    deadline: float | None = None,
    paced: Callable[[float], None] | None = None,
) -> list[Support]:
    """Each sentence of a text checked against the k passages hybrid search finds for it (in
    doc_ids, if given): any text, from any pipeline, with no LLM. A sentence that repeats an
    earlier one supports nothing, as in a written answer. deadline (time.monotonic()): the
    sentences not reached by then are reported unchecked; paced: told how long each sentence
    took, after it (a server pauses there while questions wait)."""
    said = claims(text)[:MAX_CLAIMS]
    out = []
    for claim, again in zip(said, repeats(said), strict=True):
        if again:
            out.append(Support(claim, False, 0.0, reason="it repeats an earlier sentence"))
            continue
        if deadline is not None and time.monotonic() > deadline:
            out.append(Support(claim, False, 0.0, reason=UNCHECKED))
            continue
        began = time.monotonic()
        found = index.search(claim, k, "hybrid", doc_ids, min_confidence=0.0)
        out.extend(verify(index.embedder, [claim], sources_of(found)))
        if paced is not None:
            paced(time.monotonic() - began)
    return out
