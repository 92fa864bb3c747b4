"""BM25 over stemmed words: posting lists per segment, scored with corpus-wide statistics.

A term is kept as a 64-bit hash of its stem, so segments built by different writers agree on ids
with no shared vocabulary. Document frequencies and lengths are summed over the segments at query
time (rows of deleted documents count until a merge drops them, as in Lucene).
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import Stemmer

_WORD = re.compile(r"\w+")
# Function words that carry no topic; dropping them made hit@1 better on SQuAD (see README).
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her his how
    i if in into is it its may me might my no not of on or our she should so than that the their them
    then there these they this those to too was we were what when where which who whom whose why will
    with would you your""".split()
)
# What a claim must not lose against its source: a negation, a number, a name (a capitalized word).
NEGATION = re.compile(r"\b(?:not|no|never|none|nothing|nobody|neither|nor|without|cannot)\b|n't\b", re.I)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
WORD_OF_LETTERS = re.compile(r"[^\W\d_][\w'-]*")
# The first word of a sentence is capitalized whatever it is: a name only if it is not one of these.
OPENERS = frozenset("the a an in on at it he she they this that these those there its his her".split())
# PyStemmer's stemmers must not be called from two threads at once: one per thread.
_local = threading.local()


def _stemmer() -> Stemmer.Stemmer:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return stemmer


def terms(text: str) -> list[str]:
    """Stemmed words, for matching only: NFKC and case folding make a question typed in NFD or
    full-width forms match the stored text (whose offsets are untouched)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = [w for w in _WORD.findall(folded) if w not in STOPWORDS]
    return list(_stemmer().stemWords(words))


def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest(), "little")


def lexical_input(title: str, text: str) -> str:
    """BM25 indexes the title with each passage: questions often name the article's subject."""
    return f"{title}\n{text}"


def identifier_terms(text: str) -> np.ndarray:
    """The ids of a query's words that mix letters and digits (part numbers, codes, versions:
    zqt7x7w, A320neo): looked up exactly, they must not drown in the meaning of the rest."""
    found = [w for w in terms(text) if any(c.isdigit() for c in w) and any(c.isalpha() for c in w)]
    return np.array([term_id(t) for t in found], dtype=np.uint64)


def query_terms(text: str) -> np.ndarray:
    """A query's term ids, repeated as often as the term occurs (each occurrence adds its weight)."""
    return np.array([term_id(t) for t in terms(text)], dtype=np.uint64)


@dataclass(frozen=True)
class BM25Params:
    # Lower b than the usual 0.75: passages are all about the same length, and b = 0.4 with
    # k1 = 0.9 gave +0.5 point of hit@1 on SQuAD.
    k1: float = 0.9
    b: float = 0.4


@dataclass(frozen=True)
class Postings:
    """For each term, the rows (passages or sentences) holding it and how often."""

    term_ids: np.ndarray  # [t] uint64, sorted
    starts: np.ndarray  # [t + 1] int64: term i's postings are rows[starts[i]:starts[i + 1]]
    rows: np.ndarray  # [p] int32, sorted within a term
    counts: np.ndarray  # [p] uint16
    lengths: np.ndarray  # [rows] uint32: terms in each row

    @classmethod
    def build(cls, texts: Iterable[str]) -> Postings:
        ids: list[int] = []
        rows: list[int] = []
        counts: list[int] = []
        lengths: list[int] = []
        for row, text in enumerate(texts):
            words = terms(text)
            lengths.append(len(words))
            for term, count in Counter(words).items():
                ids.append(term_id(term))
                rows.append(row)
                counts.append(count)
        return cls.from_triples(
            np.array(ids, dtype=np.uint64),
            np.array(rows, dtype=np.int32),
            np.array(counts, dtype=np.uint16),
            np.array(lengths, dtype=np.uint32),
        )

    @classmethod
    def from_triples(
        cls, ids: np.ndarray, rows: np.ndarray, counts: np.ndarray, lengths: np.ndarray
    ) -> Postings:
        order = np.lexsort((rows, ids))
        ids, rows, counts = ids[order], rows[order], counts[order]
        term_ids, first = np.unique(ids, return_index=True)
        starts = np.append(first, len(ids)).astype(np.int64)
        return cls(term_ids, starts, rows.astype(np.int32), counts.astype(np.uint16), lengths)

    def triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(term id, row, count) per posting: the inverse of from_triples, for merging."""
        return np.repeat(self.term_ids, np.diff(self.starts)), self.rows, self.counts

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Each id's term position, or -1 where this segment does not hold it."""
        if len(self.term_ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.term_ids, ids), len(self.term_ids) - 1)
        return np.where(self.term_ids[at] == ids, at, -1)

    def document_frequencies(self, ids: np.ndarray) -> np.ndarray:
        at = self.find(ids)
        return np.where(at >= 0, self.starts[at + 1] - self.starts[np.maximum(at, 0)], 0)


@dataclass(frozen=True)
class Stats:
    """Corpus-wide BM25 statistics for a query's terms."""

    idf: np.ndarray  # [query terms] float32
    mean_length: float


# The formulas both storage backends score with (Qdrant stores term_weight per row and applies
# the same idf itself): one spelling each.


def bm25_idf(df: np.ndarray, rows: int) -> np.ndarray:
    """BM25's idf (Lucene's form, never negative) of terms held by df of rows rows."""
    return np.log(1 + (rows - df + 0.5) / (df + 0.5)).astype(np.float32)


def term_weight(tf: np.ndarray, length: np.ndarray, mean_length: float, params: BM25Params) -> np.ndarray:
    """A term's BM25 weight in a row, before idf: its count, saturated and length-normalized."""
    norm = params.k1 * (1 - params.b + params.b * length / mean_length)
    return tf * (params.k1 + 1) / (tf + norm)


def piece_idf(df: np.ndarray, rows: int) -> np.ndarray:
    """Word match's weight of a word piece held by df of rows passages: rare pieces weigh more."""
    return (np.log((rows + 1) / (np.asarray(df, dtype=np.float64) + 1)) + 1).astype(np.float32)


def stats(parts: Sequence[Postings], ids: np.ndarray) -> Stats:
    rows = sum(len(p.lengths) for p in parts)
    total_length = sum(float(p.lengths.sum()) for p in parts)
    df = sum((p.document_frequencies(ids) for p in parts), np.zeros(len(ids), dtype=np.int64))
    return Stats(bm25_idf(df, rows), max(total_length / rows, 1.0) if rows else 1.0)


def scores(postings: Postings, ids: np.ndarray, stats: Stats, params: BM25Params) -> np.ndarray:
    """BM25 of every row of one segment: zeros where no query term occurs."""
    out = np.zeros(len(postings.lengths), dtype=np.float32)
    for at, idf in zip(postings.find(ids), stats.idf, strict=True):
        if at < 0:
            continue
        rows, tf = _postings(postings, at)
        out[rows] += idf * _saturated(tf, postings.lengths[rows], stats, params)
    return out


def scores_of(
    postings: Postings, rows: np.ndarray, ids: np.ndarray, stats: Stats, params: BM25Params
) -> np.ndarray:
    """BM25 of the given rows only: the work grows with the query terms' postings, not the segment."""
    out = np.zeros(len(rows), dtype=np.float32)
    for at, idf in zip(postings.find(ids), stats.idf, strict=True):
        if at < 0 or len(rows) == 0:
            continue
        posted, tf = _postings(postings, at)
        where = np.minimum(np.searchsorted(posted, rows), len(posted) - 1)
        held = posted[where] == rows
        out[held] += idf * _saturated(tf[where[held]], postings.lengths[rows[held]], stats, params)
    return out


def _postings(postings: Postings, at: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = int(postings.starts[at]), int(postings.starts[at + 1])
    return postings.rows[lo:hi], postings.counts[lo:hi].astype(np.float32)


def _saturated(tf: np.ndarray, lengths: np.ndarray, stats: Stats, params: BM25Params) -> np.ndarray:
    return term_weight(tf, lengths.astype(np.float32), stats.mean_length, params)


def keys(text: str) -> tuple[set[str], set[str]]:
    """The numbers and the names of a text, as the verifier reads them: the numbers without
    thousands separators, and the names (capitalized words past an opener, lower-cased, without
    a possessive 's)."""
    numbers = {n.replace(",", "").rstrip(".") for n in NUMBER.findall(text)}
    words = WORD_OF_LETTERS.findall(text)
    names = {
        w.lower().removesuffix("'s").removesuffix("’s")
        for i, w in enumerate(words)
        if w[0].isupper() and not (i == 0 and w.lower() in OPENERS)
    }
    return numbers, names


def asked_keys(question: str) -> tuple[set[str], set[str]]:
    """The numbers and names of a question as the confidence model was trained on them
    (index/data/confidence.json): as written, every capitalized word past the first, each looked
    for as a substring of the passage. keys()'s reading would change lost_names for 395 of the
    shared half's 5,397 questions against their paragraphs (and lost_numbers for 21): the model
    would have to be trained again first."""
    names = {w for w in WORD_OF_LETTERS.findall(question)[1:] if w[0].isupper()}
    return set(NUMBER.findall(question)), names


def word_set(text: str) -> set[str]:
    """Every number and word of a text as keys() writes them: what a name or number is looked for in."""
    numbers = {n.replace(",", "").rstrip(".") for n in NUMBER.findall(text)}
    return numbers | {w.lower().removesuffix("'s").removesuffix("’s") for w in WORD_OF_LETTERS.findall(text)}
