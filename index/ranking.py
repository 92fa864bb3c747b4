"""Ranking passages (dense, lexical, hybrid) and picking the answer sentence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from index.lexical import terms
from index.snapshot import Snapshot
from index.text import Passage, Span, strip_span

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "dense", "lexical")


@dataclass(frozen=True)
class Ranking:
    # Passages each retriever proposes before fusion.
    candidates: int = 100
    # Hybrid score = dense_weight * dense + (1 - dense_weight) * BM25, both min-max scaled.
    dense_weight: float = 0.5
    # A passage's dense score mixes its own vector and its best sentence's.
    sentence_weight: float = 0.5
    # The answer sentence is picked from this many of the best passages.
    answer_passages: int = 3
    # Answer sentence score = similarity + overlap_weight * query-term overlap + rank_weight * passage score.
    overlap_weight: float = 0.5
    rank_weight: float = 0.5
    # Below this cosine, with no query word in common, a passage is not relevant at all.
    min_similarity: float = 0.2


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
    passage_sim = snap.passage_vectors[rows] @ qvec
    all_sentence_sim = snap.sentence_vectors @ qvec
    sentence_sim = [_best(all_sentence_sim[snap.passage_sentences[r]]) for r in rows]
    dense = (1 - ranking.sentence_weight) * passage_sim + ranking.sentence_weight * np.array(
        sentence_sim, dtype=np.float32
    )
    lex = lexical[rows]
    if mode == "dense":
        scores = dense
    elif mode == "lexical":
        scores = lex
    else:
        scores = ranking.dense_weight * _minmax(dense) + (1 - ranking.dense_weight) * _minmax(lex)
    relevant = (passage_sim >= ranking.min_similarity) | (lex > 0)
    order = [i for i in np.argsort(-scores, kind="stable") if relevant[i]][:k]
    hits = [_hit(snap, int(rows[i]), float(scores[i])) for i in order]
    answer = _answer(snap, question, qvec, [int(rows[i]) for i in order], _minmax(scores[order]), ranking)
    return hits, answer


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
        params = None if allowed is None else faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
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


def _best(values: np.ndarray) -> float:
    return float(values.max()) if len(values) else 0.0


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
    question: str,
    qvec: np.ndarray,
    rows: list[int],
    passage_scores: np.ndarray,
    ranking: Ranking,
) -> Answer | None:
    words = set(terms(question))
    best: Answer | None = None
    for row, passage_score in zip(rows[: ranking.answer_passages], passage_scores, strict=False):
        passage = snap.rows.passages[row]
        text = snap.rows.texts[passage.doc_id]
        for s in snap.passage_sentences[row]:
            span = _clip(text, snap.rows.sentences[s][1], passage)
            if span is None:
                continue
            sentence = text[span.start : span.end]
            overlap = len(words & set(terms(sentence))) / len(words) if words else 0.0
            score = (
                float(snap.sentence_vectors[s] @ qvec)
                + ranking.overlap_weight * overlap
                + ranking.rank_weight * float(passage_score)
            )
            if best is None or score > best.score:
                title = snap.rows.documents[passage.doc_id].title
                best = Answer(passage, title, span, sentence, score)
    if best is None:
        return None
    return Answer(best.passage, best.title, best.span, best.text, round(best.score, 4))


def _clip(text: str, sentence: Span, passage: Passage) -> Span | None:
    """The part of a sentence inside a passage, so the answer always comes from a returned passage."""
    start, end = strip_span(text, max(sentence.start, passage.start), min(sentence.end, passage.end))
    return Span(start, end) if end > start else None
