"""Ranking passages (dense, lexical, hybrid) and picking the answer sentence, over any storage.

Per-query work is bounded by the candidates: the retrievers propose `candidates` passages each,
and only those passages, their sentences and their word pieces are scored further.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from groundqa.index.confidence import SIGNALS, text_signals
from groundqa.index.errors import IndexDamaged, InvalidQuery
from groundqa.index.lexical import identifier_terms, query_terms
from groundqa.index.model import PieceVectors
from groundqa.index.storage import Reader, StoredText, page_at
from groundqa.index.text import SPACE, Passage, Span, lone_surrogate, strip_span

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[Mode, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "hybrid"
MAX_QUESTION_CHARS = 1000
MAX_K = 50
# Added to the hybrid score of a passage holding an identifier of the question: more than word
# match and the rest can give (at most 1 + match_weight), so it ranks first.
EXACT_FIRST = 100.0
# Most documents one query may name in doc_ids (each is a bound SQL parameter).
MAX_DOC_IDS = 1000
DEFAULT_K = 5


# 1 to MAX_QUESTION_CHARS characters once trimmed: clean_question's rule, for the JSON Schema.
QUESTION_PATTERN = f"^[{SPACE}]*[^{SPACE}](?:[\\s\\S]{{0,{MAX_QUESTION_CHARS - 2}}}[^{SPACE}])?[{SPACE}]*$"


def clean_question(question: str) -> str:
    """The question as searched: trimmed, 1 to MAX_QUESTION_CHARS characters."""
    question = question.strip()
    if not question:
        raise InvalidQuery("the question is empty; ask something")
    if lone_surrogate(question) is not None:
        raise InvalidQuery("the question holds a lone surrogate (invalid Unicode); send UTF-8 text")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidQuery(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    return question


def check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise InvalidQuery(f"k is {k}; it must be from 1 to {MAX_K}")
    return k


def check_doc_ids(doc_ids: list[str] | None) -> list[str] | None:
    if doc_ids is not None and len(doc_ids) > MAX_DOC_IDS:
        raise InvalidQuery(f"doc_ids: List should have at most {MAX_DOC_IDS} items, not {len(doc_ids)}")
    return doc_ids


def check_min_confidence(value: float | None, name: str = "min_confidence") -> float | None:
    if value is not None and not 0 <= value <= 1:
        raise InvalidQuery(f"{name} is {value}; give a number from 0 to 1")
    return value


def check_query(
    question: str, k: int, mode: str, doc_ids: list[str] | None = None, min_confidence: float | None = None
) -> str:
    """The question as searched, once every argument of a query is checked: the rules of a
    query, each written once here, and run at the edge by the faces' field types (service/fields.py)."""
    check_doc_ids(doc_ids)
    check_k(k)
    if mode not in MODES:
        raise InvalidQuery(f"mode {mode!r} is unknown; use one of {', '.join(MODES)}")
    check_min_confidence(min_confidence)
    return clean_question(question)


@dataclass(frozen=True)
class Ranking:
    """Defaults tuned on the shared SQuAD half; the README has the figures."""

    # Passages each retriever proposes before fusion (30 to 200 made no difference).
    candidates: int = 100
    # Hybrid = dense_weight * dense + (1 - dense_weight) * lexical, both min-max scaled over the
    # candidates: 0.6 beat RRF and 0.5 by about 1 point of hit@1.
    dense_weight: float = 0.6
    # A passage's dense score mixes its own vector and its best sentence's: +1.5 points of hit@1
    # over the passage vector alone.
    sentence_weight: float = 0.7
    # Its lexical score likewise mixes its BM25 and its best sentence's BM25: +1 point of hit@1.
    lexical_sentence_weight: float = 0.5
    # Hybrid reorders this many of its best passages (or k, if more) by word match (below):
    # +3.4 points of hit@1 and +1 of hit@5 on all 5397 questions; 10 gave 0.2 point less hit@5.
    rerank: int = 20
    # Word match: each question word piece's best cosine with a passage's (or sentence's) word
    # pieces, as the model read them in context, averaged with idf weights. Added with this
    # weight to the min-max scaled hybrid score (4 to 16: within 0.2 point) and to the answer
    # sentence's score.
    match_weight: float = 8.0
    # The answer sentence is picked from this many of the best passages (2 to 4: within 0.2 point).
    answer_passages: int = 3
    # Answer sentence score = its cosine + match_weight * its word match + rank_weight * its
    # passage's scaled score: 0.756 answer_hit, against 0.707 without word match. Adding the
    # sentence's BM25 as well changed nothing, so it is left out.
    rank_weight: float = 0.5
    # With no query word in common and a cosine below this, a passage is not relevant at all:
    # nonsense questions score up to 0.22 against emoji-heavy text.
    min_similarity: float = 0.3


@dataclass(frozen=True)
class Query:
    question: str
    vector: np.ndarray  # the question's embedding
    pieces: PieceVectors  # its word pieces, from the same model pass
    k: int = 5
    mode: Mode = "hybrid"
    doc_ids: list[str] | None = None
    # Answers already given in the conversation: a follow-up is answered by another sentence
    # where one can ("How much gas?" after the pipeline's description).
    given: tuple[str, ...] = ()
    # The question as asked, when `question` is it read in the light of a conversation.
    asked: str | None = None


@dataclass(frozen=True)
class Hit:
    passage: Passage
    title: str
    score: float
    page: int | None = None  # the page the passage begins on, for a document with pages


@dataclass(frozen=True)
class Answer:
    passage: Passage
    title: str
    span: Span
    text: str
    score: float
    signals: tuple[float, ...]  # confidence.SIGNALS, for the confidence model
    page: int | None = None  # the page the sentence begins on
    # The best of the sentences already given in the conversation, when this one is not: the
    # index gives it again when this one is not confident enough ("How long is it?" asked of
    # the sentence that said so).
    given: Answer | None = None


def rank(reader: Reader, query: Query, ranking: Ranking) -> tuple[list[Hit], Answer | None]:
    """The query's best passages and answer sentence, in named steps: gather the candidates and
    their signals, fuse them into one ranking, read the passages shown (checking them for
    damage), and pick the answer sentence from the best few."""
    allowed = None if query.doc_ids is None else reader.allowed(query.doc_ids)
    if allowed is not None and len(allowed) == 0:
        return [], None  # (an empty index needs no check here: its searches find nothing)
    found = Candidates.gather(reader, query, allowed, ranking)
    if found is None:
        return [], None
    match = WordMatch(reader, query.question, query.pieces)
    pool = Fusion(ranking).pool(found, query, match)
    shown = pool.positions[: max(query.k, ranking.answer_passages)]
    passages, texts = _read(reader, found.keys[shown])
    found.check(pool)
    hits = [
        Hit(p, texts[p.doc_id].title, round(float(score), 4), page_at(texts[p.doc_id].page_starts, p.start))
        for p, score in zip(passages[: query.k], pool.scores[: query.k], strict=False)
    ]
    top = min(ranking.answer_passages, len(pool.positions))
    positions = [int(at) for at in pool.positions[:top]]
    best = [Candidate(int(found.keys[at]), passages[i], at) for i, at in enumerate(positions)]
    answer = AnswerPicker(query, found, texts, match, ranking).pick(best, _minmax(pool.scores)[:top])
    return hits, answer


@dataclass(frozen=True)
class Candidates:
    """The passages the retrievers propose for a query, with each one's signals: its dense and
    lexical scores (each mixed with its best sentence's) and whether it holds an identifier of
    the question."""

    keys: np.ndarray
    sentences: Sentences
    similarity: np.ndarray  # each passage's cosine with the question
    bm25: np.ndarray
    dense: np.ndarray
    lexical: np.ndarray
    exact: np.ndarray  # holds an identifier of the question (a part number)

    @classmethod
    def gather(
        cls, reader: Reader, query: Query, allowed: np.ndarray | None, ranking: Ranking
    ) -> Candidates | None:
        terms = query_terms(query.question)
        keys = _candidates(reader, query, terms, allowed, ranking.candidates)
        if len(keys) == 0:
            return None
        sentences = Sentences(reader, reader.sentences_of(keys), query.vector, terms)
        similarity = reader.passage_vectors(keys) @ query.vector
        bm25 = reader.passage_bm25(keys, terms)
        dense = _mix(similarity, sentences.best(sentences.similarity), ranking.sentence_weight)
        best_bm25 = _minmax(sentences.best(sentences.bm25))
        lexical = _mix(_minmax(bm25), best_bm25, ranking.lexical_sentence_weight)
        exact = np.zeros(len(keys), dtype=bool)
        identifiers = identifier_terms(query.question) if query.mode == "hybrid" else np.zeros(0, np.uint64)
        if len(identifiers):
            exact = reader.passage_bm25(keys, identifiers) > 0
        return cls(keys, sentences, similarity, bm25, dense, lexical, exact)

    def check(self, pool: Pool) -> None:
        """Unit vectors: a cosine past 1, or a score that is not finite, is damage a checksum missed."""
        if not (np.abs(self.similarity) <= 1.01).all() or not np.isfinite(pool.fused).all():
            raise IndexDamaged(
                "a passage scored a number that is not finite: the index is damaged; run 'groundqa rebuild'"
            )


@dataclass(frozen=True)
class Pool:
    """The candidates worth showing, best first: their positions among the candidates and their
    scores; fused: every candidate's fused score."""

    positions: np.ndarray
    scores: np.ndarray
    fused: np.ndarray


class Fusion:
    """Fusing the retrievers' scores into one ranking (txtai keeps hybrid fusion in a class of
    its own too): dense, lexical, or hybrid (a weighted sum of the two, min-max scaled, with a
    passage holding an identifier of the question first), then the relevant candidates, and in
    hybrid the best of them reordered by word match."""

    def __init__(self, ranking: Ranking) -> None:
        self.ranking = ranking

    def scores(self, found: Candidates, mode: Mode) -> np.ndarray:
        if mode == "dense":
            return found.dense
        if mode == "lexical":
            return found.lexical
        return _mix(_minmax(found.dense), found.lexical, 1 - self.ranking.dense_weight) + found.exact

    def pool(self, found: Candidates, query: Query, match: WordMatch) -> Pool:
        fused = self.scores(found, query.mode)
        relevant = (found.similarity >= self.ranking.min_similarity) | (found.bm25 > 0)
        best_first = np.argsort(-fused, kind="stable")
        pool = best_first[relevant[best_first]][: max(query.k, self.ranking.rerank)].astype(np.int64)
        scores = fused[pool]
        if query.mode == "hybrid" and len(pool):
            scores = _minmax(scores) + self.ranking.match_weight * match.scores(found.keys[pool])
            scores = scores + EXACT_FIRST * found.exact[pool]
            resort = np.argsort(-scores, kind="stable")
            pool, scores = pool[resort], scores[resort]
        return Pool(pool, scores, fused)


def _read(reader: Reader, keys: np.ndarray) -> tuple[list[Passage], dict[str, StoredText]]:
    """The passages of these keys, with their documents' texts; a passage lying outside its text
    is damage a checksum missed (segments before 0.7.0 have none)."""
    places = reader.passages(keys)
    texts = reader.texts(keys)
    for d, s, e in places:
        if not 0 <= s < e <= len(texts[d].text):
            raise IndexDamaged(
                f"a passage of {d!r} lies at {s}-{e}, outside its text: the index is damaged; "
                "run 'groundqa rebuild'"
            )
    return [Passage(d, s, e, texts[d][1][s:e]) for d, s, e in places], texts


class Sentences:
    """The candidate passages' sentences, scored against the question once."""

    def __init__(
        self, reader: Reader, members: list[np.ndarray], vector: np.ndarray, terms: np.ndarray
    ) -> None:
        self.keys = np.unique(np.concatenate(members)) if members else np.zeros(0, dtype=np.int64)
        self.similarity = reader.sentence_vectors(self.keys) @ vector
        self.bm25 = reader.sentence_bm25(self.keys, terms)
        self.spans = reader.sentence_spans(self.keys)
        # Each candidate's sentences as positions in keys, one run after the other.
        self._counts = np.array([len(m) for m in members], dtype=np.int64)
        self._starts = np.cumsum(self._counts) - self._counts
        self._flat = np.searchsorted(self.keys, np.concatenate(members)) if members else self._counts

    def positions(self, candidate: int) -> np.ndarray:
        start = self._starts[candidate]
        return self._flat[start : start + self._counts[candidate]]

    def best(self, values: np.ndarray) -> np.ndarray:
        """Each candidate passage's best value among its sentences (0 when it has none)."""
        out = np.zeros(len(self._counts), dtype=np.float32)
        some = self._counts > 0
        if some.any():  # runs of no sentences are left out, so each run ends where the next begins
            out[some] = np.maximum.reduceat(values[self._flat], self._starts[some])
        return out


class WordMatch:
    """How closely a passage or sentence holds each of the question's words: for every word
    piece of the question, its best cosine with the text's word pieces, averaged with weights
    that favour rare pieces. Unlike one vector per text, it sees which words are matched."""

    def __init__(self, reader: Reader, question: str, pieces: PieceVectors) -> None:
        self.reader = reader
        words = np.array([any(c.isalnum() for c in question[a:b]) for a, b in pieces.spans], dtype=bool)
        self.vectors = pieces.vectors[words]  # punctuation left out
        self.weights = reader.piece_idf(pieces.ids[words])
        self._cosines: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def scores(self, keys: np.ndarray) -> np.ndarray:
        """The match with each of these passages, by the storage where it can."""
        total = float(self.weights.sum())
        if len(self.vectors) and total > 0:
            found = self.reader.word_match(keys, self.vectors * (self.weights / total)[:, None])
            if found is not None:
                return found
        return np.array([self.score(int(k)) for k in keys])

    def weakest(self, key: int) -> float:
        """The best cosine of the passage's worst-matched rare question word (those weighing at
        least the median): a name or number the question has and the passage lacks shows here."""
        cosines, _ = self._cosines_of(key)
        if cosines.size == 0:
            return 0.0
        rare = self.weights >= np.median(self.weights)
        return float(cosines.max(axis=1)[rare].min())

    def _cosines_of(self, key: int) -> tuple[np.ndarray, np.ndarray]:
        """Each question piece's cosine with each of the passage's pieces, and their spans: the
        passage's pieces are read and decoded once per query."""
        if key not in self._cosines:
            vectors, spans, _ = self.reader.pieces(key)
            self._cosines[key] = (self.vectors @ vectors.T, spans)
        return self._cosines[key]

    def score(self, key: int, span: Span | None = None) -> float:
        """The match with passage `key`, or with the part of it inside span."""
        cosines, spans = self._cosines_of(key)
        if span is not None:
            cosines = cosines[:, (spans[:, 0] >= span.start) & (spans[:, 1] <= span.end)]
        total = float(self.weights.sum())
        if cosines.size == 0 or total <= 0:
            return 0.0
        return float(cosines.max(axis=1) @ self.weights) / total


def _mix(a: np.ndarray, b: np.ndarray, weight_b: float) -> np.ndarray:
    return (1 - weight_b) * a + weight_b * b


def _candidates(
    reader: Reader, query: Query, terms: np.ndarray, allowed: np.ndarray | None, n: int
) -> np.ndarray:
    found: list[np.ndarray] = []
    if query.mode != "lexical":
        found.append(reader.dense_search(query.vector, n, allowed)[0])
    if query.mode != "dense":
        found.append(reader.lexical_search(terms, n, allowed)[0])
    return np.unique(np.concatenate(found)).astype(np.int64)


def _minmax(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if len(values) == 0:
        return values
    span = float(values.max() - values.min())
    return (values - values.min()) / span if span > 0 else np.ones_like(values)


@dataclass(frozen=True)
class Candidate:
    """One of the best passages, which the answer sentence may come from."""

    key: int  # the passage's key in the storage
    passage: Passage
    position: int  # among the candidates


@dataclass(frozen=True)
class Scored:
    """A sentence of a candidate passage, scored as an answer."""

    score: float
    candidate: Candidate
    at: int  # its position among the candidates' sentences
    span: Span  # clipped to its passage
    matched: float  # its word match


class AnswerPicker:
    """The sentence of the best passages that is most like the question, as a whole and word by
    word, favouring the better passages, and not one of the answers given in the conversation
    (unless all are)."""

    def __init__(
        self,
        query: Query,
        found: Candidates,
        texts: dict[str, StoredText],
        match: WordMatch,
        ranking: Ranking,
    ) -> None:
        self.query, self.found, self.texts, self.match, self.ranking = query, found, texts, match, ranking

    def pick(self, best: list[Candidate], passage_scores: np.ndarray) -> Answer | None:
        """passage_scores: the best passages' scores, min-max scaled."""
        fresh: Scored | None = None
        repeated: Scored | None = None
        for candidate, passage_score in zip(best, passage_scores, strict=True):
            text = self.texts[candidate.passage.doc_id].text
            for scored in self._sentences(candidate, float(passage_score), text):
                span = scored.span
                if self.query.given and any(text[span.start : span.end] in g for g in self.query.given):
                    repeated = scored if repeated is None or scored.score > repeated.score else repeated
                elif fresh is None or scored.score > fresh.score:
                    fresh = scored
        found = [self._answer(s) for s in (fresh, repeated) if s is not None]
        if not found:
            return None
        return found[0] if len(found) == 1 else dataclasses.replace(found[0], given=found[1])

    def _sentences(self, candidate: Candidate, passage_score: float, text: str) -> Iterator[Scored]:
        """The candidate's sentences (clipped to it), each scored: its cosine + match_weight x
        its word match + rank_weight x its passage's scaled score."""
        sentences = self.found.sentences
        for at in sentences.positions(candidate.position):
            start, end = (int(v) for v in sentences.spans[at])
            span = _clip(text, Span(start, end), candidate.passage)
            if span is None:
                continue
            matched = self.match.score(candidate.key, span)
            score = (
                float(sentences.similarity[at])
                + self.ranking.match_weight * matched
                + self.ranking.rank_weight * passage_score
            )
            yield Scored(score, candidate, int(at), span, matched)

    def _answer(self, best: Scored) -> Answer:
        """The sentence as an answer, with the signals the confidence model reads."""
        passage, span, key = best.candidate.passage, best.span, best.candidate.key
        title, text, page_starts = self.texts[passage.doc_id]
        sentence = text[span.start : span.end]
        similarity = self.found.similarity
        found = {
            "answer_cosine": float(self.found.sentences.similarity[best.at]),
            "answer_match": best.matched,
            "passage_cosine": float(similarity[best.candidate.position]),
            "best_cosine": float(similarity.max()),
            "passage_match": self.match.score(key),
            "weakest_word": self.match.weakest(key),
            **text_signals(self.query.question, sentence, passage.text),
        }
        signals = tuple(round(found[name], 6) for name in SIGNALS)
        page = page_at(page_starts, span.start)
        return Answer(passage, title, span, sentence, round(best.score, 4), signals, page)


def _clip(text: str, sentence: Span, passage: Passage) -> Span | None:
    """The part of a sentence inside a passage, so the answer always comes from a returned passage."""
    start, end = strip_span(text, max(sentence.start, passage.start), min(sentence.end, passage.end))
    return Span(start, end) if end > start else None
