"""Ranking passages (dense, lexical, hybrid) and picking the answer sentence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from index.model import TokenVectors
from index.snapshot import Snapshot
from index.text import Passage, Span, strip_span

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "dense", "lexical")


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
class Hit:
    passage: Passage
    title: str
    score: float


@dataclass(frozen=True)
class Answer:
    passage: Passage
    title: str
    span: Span
    text: str
    score: float


def rank(
    snap: Snapshot,
    question: str,
    qvec: np.ndarray,
    qtokens: TokenVectors,
    k: int,
    mode: Mode,
    doc_ids: list[str] | None,
    ranking: Ranking,
) -> tuple[list[Hit], Answer | None]:
    allowed = _allowed_rows(snap, doc_ids)
    if allowed is not None and len(allowed) == 0 or not snap.rows.passages:
        return [], None
    lexical = snap.lexical.scores(question)
    rows = _candidates(snap, qvec, lexical, mode, allowed, ranking.candidates)
    if len(rows) == 0:
        return [], None
    sentence_sim = snap.sentence_vectors @ qvec
    sentence_lex = snap.sentence_lexical.scores(question)
    members = [snap.passage_sentences[r] for r in rows]
    passage_sim = snap.passage_vectors[rows] @ qvec
    dense = _mix(passage_sim, _best_of(sentence_sim, members), ranking.sentence_weight)
    lex = _mix(
        _minmax(lexical[rows]), _minmax(_best_of(sentence_lex, members)), ranking.lexical_sentence_weight
    )
    if mode == "dense":
        scores = dense
    elif mode == "lexical":
        scores = lex
    else:
        scores = _mix(_minmax(dense), lex, 1 - ranking.dense_weight)
    relevant = (passage_sim >= ranking.min_similarity) | (lexical[rows] > 0)
    order = [i for i in np.argsort(-scores, kind="stable") if relevant[i]][: max(k, ranking.rerank)]
    pool, pool_scores = rows[order], scores[order]
    match = WordMatch(snap, question, qtokens)
    if mode == "hybrid" and len(pool):
        pool_scores = _minmax(pool_scores) + ranking.match_weight * np.array([match.score(r) for r in pool])
        resort = np.argsort(-pool_scores, kind="stable")
        pool, pool_scores = pool[resort], pool_scores[resort]
    hits = [_hit(snap, int(r), float(s)) for r, s in zip(pool[:k], pool_scores[:k], strict=True)]
    top = [int(r) for r in pool[: ranking.answer_passages]]
    answer = _answer(snap, top, _minmax(pool_scores)[: len(top)], sentence_sim, match, ranking)
    return hits, answer


class WordMatch:
    """How closely a passage or sentence holds each of the question's words: for every word
    piece of the question, its best cosine with the text's word pieces, averaged with weights
    that favour rare pieces. Unlike one vector per text, it sees which words are matched."""

    def __init__(self, snap: Snapshot, question: str, qtokens: TokenVectors) -> None:
        self.snap = snap
        words = np.array([any(c.isalnum() for c in question[a:b]) for a, b in qtokens.spans], dtype=bool)
        self.vectors = qtokens.vectors[words]  # punctuation left out
        self.weights = snap.piece_idf(qtokens.pieces[words])
        self._cosines: dict[int, np.ndarray] = {}

    def score(self, row: int, span: Span | None = None) -> float:
        """The match with passage row, or with the part of it inside span."""
        doc_tokens, lo, hi = self.snap.passage_tokens[row]
        if row not in self._cosines:
            self._cosines[row] = self.vectors @ np.asarray(doc_tokens.vectors[lo:hi], dtype=np.float32).T
        cosines = self._cosines[row]
        if span is not None:
            spans = doc_tokens.spans[lo:hi]
            cosines = cosines[:, (spans[:, 0] >= span.start) & (spans[:, 1] <= span.end)]
        total = float(self.weights.sum())
        if cosines.size == 0 or total <= 0:
            return 0.0
        return float(cosines.max(axis=1) @ self.weights) / total


def _mix(a: np.ndarray, b: np.ndarray, weight_b: float) -> np.ndarray:
    return (1 - weight_b) * a + weight_b * b


def _best_of(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    return np.array([float(values[g].max()) if len(g) else 0.0 for g in groups], dtype=np.float32)


def _allowed_rows(snap: Snapshot, doc_ids: list[str] | None) -> np.ndarray | None:
    if doc_ids is None:
        return None
    parts = [snap.doc_passages[d] for d in doc_ids if d in snap.doc_passages]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _candidates(
    snap: Snapshot, qvec: np.ndarray, lexical: np.ndarray, mode: Mode, allowed: np.ndarray | None, n: int
) -> np.ndarray:
    found: list[np.ndarray] = []
    if mode != "lexical":
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)  # kept alive until the search is done
            params = faiss.SearchParameters()
            params.sel = selector
        _, rows = snap.dense.search(qvec[None, :], min(n, snap.dense.ntotal), params=params)
        found.append(rows[0][rows[0] >= 0])
    if mode != "dense":
        scores = lexical if allowed is None else _masked(lexical, allowed)
        top = np.argsort(-scores, kind="stable")[:n]
        found.append(top[scores[top] > 0])
    return np.unique(np.concatenate(found)).astype(np.int64)


def _masked(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    out = np.zeros_like(scores)
    out[allowed] = scores[allowed]
    return out


def _minmax(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if len(values) == 0:
        return values
    span = float(values.max() - values.min())
    return (values - values.min()) / span if span > 0 else np.ones_like(values)


def _hit(snap: Snapshot, row: int, score: float) -> Hit:
    passage = snap.rows.passages[row]
    return Hit(passage, snap.rows.documents[passage.doc_id].title, round(score, 4))


def _answer(
    snap: Snapshot,
    rows: list[int],
    passage_scores: np.ndarray,
    sentence_sim: np.ndarray,
    match: WordMatch,
    ranking: Ranking,
) -> Answer | None:
    """The sentence of the best passages that is most like the question, as a whole and word by
    word, favouring the better passages."""
    best: tuple[float, int, Span] | None = None
    for row, passage_score in zip(rows, passage_scores, strict=True):
        passage = snap.rows.passages[row]
        text = snap.rows.texts[passage.doc_id]
        for s in snap.passage_sentences[row]:
            span = _clip(text, snap.rows.sentences[s][1], passage)
            if span is None:
                continue
            score = (
                float(sentence_sim[s])
                + ranking.match_weight * match.score(row, span)
                + ranking.rank_weight * float(passage_score)
            )
            if best is None or score > best[0]:
                best = (score, row, span)
    if best is None:
        return None
    score, row, span = best
    passage = snap.rows.passages[row]
    text = snap.rows.texts[passage.doc_id]
    title = snap.rows.documents[passage.doc_id].title
    return Answer(passage, title, span, text[span.start : span.end], round(score, 4))


def _clip(text: str, sentence: Span, passage: Passage) -> Span | None:
    """The part of a sentence inside a passage, so the answer always comes from a returned passage."""
    start, end = strip_span(text, max(sentence.start, passage.start), min(sentence.end, passage.end))
    return Span(start, end) if end > start else None
