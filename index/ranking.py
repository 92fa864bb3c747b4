"""Ranking passages (dense, lexical, hybrid) and picking the answer sentence, over any storage.

Per-query work is bounded by the candidates: the retrievers propose `candidates` passages each,
and only those passages, their sentences and their word pieces are scored further.
"""

from __future__ import annotations

import dataclasses
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
        raise InvalidQuery(f"doc_ids has {len(doc_ids)} ids; the limit is {MAX_DOC_IDS}")
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
    allowed = None if query.doc_ids is None else reader.allowed(query.doc_ids)
    if allowed is not None and len(allowed) == 0:
        return [], None  # (an empty index needs no check here: its searches find nothing)
    terms = query_terms(query.question)
    keys = _candidates(reader, query, terms, allowed, ranking.candidates)
    if len(keys) == 0:
        return [], None
    sentences = Sentences(reader, reader.sentences_of(keys), query.vector, terms)
    passage_sim = reader.passage_vectors(keys) @ query.vector
    passage_bm25 = reader.passage_bm25(keys, terms)
    dense = _mix(passage_sim, sentences.best(sentences.similarity), ranking.sentence_weight)
    lexical = _mix(
        _minmax(passage_bm25), _minmax(sentences.best(sentences.bm25)), ranking.lexical_sentence_weight
    )
    # Hybrid: a passage holding an identifier of the question (a part number) goes first.
    exact = np.zeros(len(keys), dtype=bool)
    identifiers = identifier_terms(query.question) if query.mode == "hybrid" else np.zeros(0, np.uint64)
    if len(identifiers):
        exact = reader.passage_bm25(keys, identifiers) > 0
    if query.mode == "dense":
        scores = dense
    elif query.mode == "lexical":
        scores = lexical
    else:
        scores = _mix(_minmax(dense), lexical, 1 - ranking.dense_weight) + exact
    relevant = (passage_sim >= ranking.min_similarity) | (passage_bm25 > 0)
    best_first = np.argsort(-scores, kind="stable")
    pool = best_first[relevant[best_first]][: max(query.k, ranking.rerank)].astype(np.int64)
    pool_scores = scores[pool]
    match = WordMatch(reader, query.question, query.pieces)
    if query.mode == "hybrid" and len(pool):
        matched = match.scores(keys[pool])
        pool_scores = _minmax(pool_scores) + ranking.match_weight * matched
        pool_scores = pool_scores + EXACT_FIRST * exact[pool]
        resort = np.argsort(-pool_scores, kind="stable")
        pool, pool_scores = pool[resort], pool_scores[resort]
    shown = pool[: max(query.k, ranking.answer_passages)]
    places = reader.passages(keys[shown])
    texts = reader.texts(keys[shown])
    for d, s, e in places:  # rows a checksum missed (segments before 0.7.0 have none)
        if not 0 <= s < e <= len(texts[d].text):
            raise IndexDamaged(
                f"a passage of {d!r} lies at {s}-{e}, outside its text: the index is damaged; "
                "run 'groundqa rebuild'"
            )
    # Unit vectors: a cosine past 1, or a score that is not finite, is damage a checksum missed.
    if not (np.abs(passage_sim) <= 1.01).all() or not np.isfinite(scores).all():
        raise IndexDamaged(
            "a passage scored a number that is not finite: the index is damaged; run 'groundqa rebuild'"
        )
    passages = [Passage(d, s, e, texts[d][1][s:e]) for d, s, e in places]
    hits = [
        Hit(p, texts[p.doc_id].title, round(float(score), 4), page_at(texts[p.doc_id].page_starts, p.start))
        for p, score in zip(passages[: query.k], pool_scores[: query.k], strict=False)
    ]
    top = list(range(min(ranking.answer_passages, len(pool))))
    answer = _answer(
        query.question,
        [(int(keys[pool[i]]), passages[i], int(pool[i])) for i in top],
        _minmax(pool_scores)[: len(top)],
        sentences,
        passage_sim,
        texts,
        match,
        ranking,
        query.given,
    )
    return hits, answer


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


def _answer(
    question: str,
    top: list[tuple[int, Passage, int]],
    passage_scores: np.ndarray,
    sentences: Sentences,
    passage_sim: np.ndarray,
    texts: dict[str, StoredText],
    match: WordMatch,
    ranking: Ranking,
    given: tuple[str, ...] = (),
) -> Answer | None:
    """The sentence of the best passages that is most like the question, as a whole and word by
    word, favouring the better passages, and not one of the answers given (unless all are).
    top: (key, passage, candidate number) of each."""
    # score, passage key, candidate number, sentence, passage, span, word match
    best: tuple[float, int, int, int, Passage, Span, float] | None = None
    repeated: tuple[float, int, int, int, Passage, Span, float] | None = None
    for (key, passage, candidate), passage_score in zip(top, passage_scores, strict=True):
        text = texts[passage.doc_id][1]
        for at in sentences.positions(candidate):
            start, end = (int(v) for v in sentences.spans[at])
            span = _clip(text, Span(start, end), passage)
            if span is None:
                continue
            matched = match.score(key, span)
            score = (
                float(sentences.similarity[at])
                + ranking.match_weight * matched
                + ranking.rank_weight * float(passage_score)
            )
            here = (score, key, candidate, int(at), passage, span, matched)
            if given and any(text[span.start : span.end] in g for g in given):
                repeated = here if repeated is None or score > repeated[0] else repeated
            elif best is None or score > best[0]:
                best = here
    if best is None and repeated is None:
        return None
    found = [_sentence(question, b, sentences, passage_sim, texts, match) for b in (best, repeated) if b]
    return found[0] if len(found) == 1 else dataclasses.replace(found[0], given=found[1])


def _sentence(
    question: str,
    best: tuple[float, int, int, int, Passage, Span, float],
    sentences: Sentences,
    passage_sim: np.ndarray,
    texts: dict[str, StoredText],
    match: WordMatch,
) -> Answer:
    score, key, candidate, at, passage, span, matched = best
    title, text, page_starts = texts[passage.doc_id]
    sentence = text[span.start : span.end]
    found = {
        "answer_cosine": float(sentences.similarity[at]),
        "answer_match": matched,
        "passage_cosine": float(passage_sim[candidate]),
        "best_cosine": float(passage_sim.max()),
        "passage_match": match.score(key),
        "weakest_word": match.weakest(key),
        **text_signals(question, sentence, passage.text),
    }
    signals = tuple(round(found[name], 6) for name in SIGNALS)
    return Answer(passage, title, span, sentence, round(score, 4), signals, page_at(page_starts, span.start))


def _clip(text: str, sentence: Span, passage: Passage) -> Span | None:
    """The part of a sentence inside a passage, so the answer always comes from a returned passage."""
    start, end = strip_span(text, max(sentence.start, passage.start), min(sentence.end, passage.end))
    return Span(start, end) if end > start else None
