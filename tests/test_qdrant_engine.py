"""Layer 2: Qdrant's own engine, in this process through qdrant-edge-py, does what the backend
counts on (BM25 with IDF, MaxSim, filters, deletes), with the same figures as qdrant-client's local
mode and as the embedded index; and layer 3, the parity of both backends on ~1,000 SQuAD passages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from groundqa.eval.data import sample
from groundqa.eval.metrics import summarize
from groundqa.eval.runner import ask_index, evaluate
from groundqa.index.index import Index
from groundqa.index.lexical import query_terms
from groundqa.index.model import Embedder
from groundqa.index.ranking import WordMatch
from groundqa.index.storage import Reader
from groundqa.index.storage.qdrant import QdrantStorage
from tests.conftest import SquadSlice, qdrant_index

# Builds the SQuAD slice (about a minute) and three engines: the fast loop leaves it out.
pytestmark = pytest.mark.slow

ENGINES = ("edge", "local")


def _copy(source: Index, embedder: Embedder, folder: Path, engine: str) -> Index:
    target = qdrant_index(folder, embedder, engine)
    for _ in source.copy_to(target):
        pass
    return target


@pytest.fixture(scope="module")
def copies(
    squad_slice: SquadSlice, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Index]]:
    """The slice copied (vectors and all) onto Qdrant's engine and onto local mode."""
    out = {kind: _copy(squad_slice.index, embedder, tmp_path_factory.mktemp(kind), kind) for kind in ENGINES}
    yield out
    for index in out.values():
        assert isinstance(index.storage, QdrantStorage)
        index.close()


@pytest.fixture(scope="module")
def questions(squad_slice: SquadSlice) -> list[str]:
    return [q.question for q in sample(squad_slice.questions, 30, seed=1)]


def _places(reader: Reader, keys: np.ndarray) -> list[tuple[str, int, int]]:
    return reader.passages(keys)


def _compare(
    ours: Reader, copies: dict[str, Index], search: Callable[[Reader], tuple[np.ndarray, np.ndarray]], n: int
) -> Iterator[tuple[Reader, np.ndarray, np.ndarray]]:
    """Each copy's search against ours: the same scores, and our top n among theirs with the same
    score (ties may come in another order). Yields each copy's reader, its keys and ours."""
    keys, scores = search(ours)
    for kind, index in copies.items():
        reader = index.reader()
        found, their = search(reader)
        np.testing.assert_allclose(their, scores, rtol=1e-4, atol=1e-5, err_msg=kind)
        got = dict(zip(_places(reader, found), their, strict=True))
        for place, score in zip(_places(ours, keys)[:n], scores[:n], strict=True):
            assert got.get(place) == pytest.approx(float(score), rel=1e-4, abs=1e-5), (kind, place)
        yield reader, found, keys


def test_bm25_with_idf_scores_as_the_embedded_index(
    squad_slice: SquadSlice, copies: dict[str, Index], questions: list[str]
) -> None:
    """Qdrant's IDF modifier on weights stored with the source's mean lengths gives our BM25."""
    ours = squad_slice.index.reader()
    for question in questions:
        terms = query_terms(question)
        for reader, found, keys in _compare(
            ours, copies, lambda r, t=terms: r.lexical_search(t, 50, None), 10
        ):
            sentences = np.concatenate(reader.sentences_of(found[:5]))
            mine = np.concatenate(ours.sentences_of(keys[:5]))
            # Qdrant's N leaves out rows with no term (sentences of stopwords only): up to 0.12 %
            # apart on the four-article slice.
            np.testing.assert_allclose(
                reader.sentence_bm25(sentences, terms), ours.sentence_bm25(mine, terms), rtol=2e-3
            )


def test_dense_search_finds_the_same_passages(
    squad_slice: SquadSlice, copies: dict[str, Index], questions: list[str], embedder: Embedder
) -> None:
    ours = squad_slice.index.reader()
    for question in questions:
        vector = embedder.embed([question])[0]
        assert len(list(_compare(ours, copies, lambda r, v=vector: r.dense_search(v, 50, None), 20))) == 2


def test_maxsim_with_idf_in_the_question_is_our_word_match(
    squad_slice: SquadSlice, copies: dict[str, Index], questions: list[str], embedder: Embedder
) -> None:
    """sum_i w_i max_j q_i.d_j / sum w = sum_i max_j (w_i q_i / sum w).d_j: MaxSim over the word
    pieces (stored in float16), with the idf weights folded into the question's vectors."""
    from qdrant_client import models as m

    ours = squad_slice.index.reader()
    for question in questions[:10]:
        vector, pieces = embedder.embed_with_pieces([question])
        keys, _ = ours.dense_search(vector[0], 20, None)
        match = WordMatch(ours, question, pieces[0])
        expected = {place: match.score(int(k)) for place, k in zip(_places(ours, keys), keys, strict=True)}
        folded = match.vectors * (match.weights / match.weights.sum())[:, None]
        for kind, index in copies.items():
            storage = index.storage
            assert isinstance(storage, QdrantStorage)
            reader = index.reader()
            wanted = reader.dense_search(vector[0], 20, None)[0]
            found = storage.client.query_points(
                storage.passages_name,
                query=folded.tolist(),
                using="pieces",
                limit=20,
                query_filter=m.Filter(must=[m.HasIdCondition(has_id=[int(k) for k in wanted])]),
            ).points
            got = dict(
                zip(
                    _places(reader, np.array([int(p.id) for p in found])),
                    (p.score for p in found),
                    strict=True,
                )
            )
            assert set(got) == set(expected), kind
            for place, score in got.items():
                assert score == pytest.approx(expected[place], abs=2e-3), (kind, place)


def test_word_piece_frequencies_come_back_exact_from_idf(
    squad_slice: SquadSlice, copies: dict[str, Index]
) -> None:
    ours = squad_slice.index.reader()
    pieces = np.arange(1000, 30000, 97, dtype=np.int64)
    for kind, index in copies.items():
        reader = index.reader()
        np.testing.assert_allclose(reader.piece_idf(pieces), ours.piece_idf(pieces), rtol=1e-6, err_msg=kind)


@pytest.mark.parametrize("kind", ENGINES)
def test_filters_and_deletes_are_seen_at_once(kind: str, tmp_path: Path, embedder: Embedder) -> None:
    index = qdrant_index(tmp_path / "q", embedder, kind)
    index.add("The red fox lives in the forest near the river.", doc_id="fox")
    index.add("The red deer lives in the forest near the lake.", doc_id="deer")
    for mode in ("hybrid", "dense", "lexical"):
        hits = index.search("red forest animal", mode=mode, doc_ids=["deer"]).hits  # type: ignore[arg-type]
        assert [h.passage.doc_id for h in hits] == ["deer"]
    index.add("The grey wolf hunts at night.", doc_id="fox", replace=True)
    assert "fox" not in {h.passage.text for h in index.search("red fox river", mode="lexical").hits}
    index.delete("deer")
    for mode in ("hybrid", "dense", "lexical"):
        assert {h.passage.doc_id for h in index.search("red deer lake", mode=mode).hits} <= {"fox"}  # type: ignore[arg-type]
    storage = index.storage
    assert isinstance(storage, QdrantStorage)
    assert storage.client.count(storage.passages_name, exact=True).count == 1
    storage.close()


def test_parity_with_the_embedded_index(squad_slice: SquadSlice, copies: dict[str, Index]) -> None:
    """Layer 3: the same ~1,000 passages (copied, not embedded again) hold the same offsets and
    rank the same, on Qdrant's engine."""
    source, target = squad_slice.index, copies["edge"]
    assert sorted((p.doc_id, p.start, p.end) for p in target.passages()) == sorted(
        (p.doc_id, p.start, p.end) for p in source.passages()
    )
    questions = sample(squad_slice.questions, 300, seed=0)
    summaries, tops = {}, {}
    for name, idx in (("embedded", source), ("qdrant", target)):
        replies: list[tuple[tuple[str, int, int], ...]] = []
        asker = ask_index(idx)

        def ask(question: str, k: int, mode: str, asker=asker, replies=replies):  # type: ignore[no-untyped-def]
            reply = asker(question, k, mode)
            replies.append(tuple((p.doc_id, p.start, p.end) for p in reply.passages[:5]))
            return reply

        summaries[name] = summarize(evaluate(questions, ["hybrid"], ask)["hybrid"])
        tops[name] = replies
    print(summaries)
    for metric in ("hit@1", "hit@5", "mrr@10", "answer_hit"):
        assert abs(summaries["embedded"][metric] - summaries["qdrant"][metric]) <= 0.005, metric
    same = np.mean([a == b for a, b in zip(tops["embedded"], tops["qdrant"], strict=True)])
    assert same >= 0.97, same  # the same five passages, with the same offsets, in the same order
