from __future__ import annotations

import math
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from groundqa.index.lexical import BM25Params, Postings, query_terms, scores, scores_of, stats, terms

TEXTS = [
    "The pipeline runs from Siberia to China.",
    "Pipelines and more pipelines: gas flows through pipelines.",
    "A storm closed the schools.",
    "China signed the gas deal; the gas deal was long delayed.",
]


def test_terms_are_stemmed_and_stopwords_dropped() -> None:
    assert terms("The Pipelines were running to China") == ["pipelin", "run", "china"]


def test_bm25_is_the_textbook_formula() -> None:
    params = BM25Params(k1=0.9, b=0.4)
    postings = Postings.build(TEXTS)
    ids = query_terms("gas pipeline")
    got = scores(postings, ids, stats([postings], ids), params)
    docs = [terms(t) for t in TEXTS]
    mean = sum(len(d) for d in docs) / len(docs)
    want = []
    for d in docs:
        total = 0.0
        for q in ["gas", "pipelin"]:
            df = sum(q in other for other in docs)
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = d.count(q)
            total += idf * tf * (params.k1 + 1) / (tf + params.k1 * (1 - params.b + params.b * len(d) / mean))
        want.append(total)
    assert np.allclose(got, want, atol=1e-5)
    assert got[2] == 0 and got[1] > got[0]


def test_statistics_span_segments() -> None:
    """Two segments score as one segment holding both."""
    ids = query_terms("gas deal china")
    whole = Postings.build(TEXTS)
    parts = [Postings.build(TEXTS[:2]), Postings.build(TEXTS[2:])]
    st = stats(parts, ids)
    split = np.concatenate([scores(p, ids, st, BM25Params()) for p in parts])
    assert np.allclose(split, scores(whole, ids, stats([whole], ids), BM25Params()))


def test_scores_of_some_rows_equal_the_full_scores() -> None:
    postings = Postings.build(TEXTS)
    ids = query_terms("gas pipeline china storm")
    st = stats([postings], ids)
    full = scores(postings, ids, st, BM25Params())
    rows = np.array([0, 2, 3], dtype=np.int64)
    assert np.allclose(scores_of(postings, rows, ids, st, BM25Params()), full[rows])


def test_a_term_no_segment_holds_scores_nothing() -> None:
    postings = Postings.build(TEXTS)
    ids = query_terms("zebra")
    assert not scores(postings, ids, stats([postings], ids), BM25Params()).any()
    empty = Postings.build([])
    assert len(scores(empty, ids, stats([empty], ids), BM25Params())) == 0


def test_triples_rebuild_the_same_postings() -> None:
    postings = Postings.build(TEXTS)
    again = Postings.from_triples(*postings.triples(), postings.lengths)
    for name in ("term_ids", "starts", "rows", "counts"):
        assert np.array_equal(getattr(again, name), getattr(postings, name))


@pytest.mark.parametrize("threads", [8])
def test_stemming_from_many_threads_agrees(threads: int) -> None:
    text = " ".join(TEXTS) * 20
    want = terms(text)
    with ThreadPoolExecutor(threads) as pool:
        assert all(got == want for got in pool.map(lambda _: terms(text), range(200)))


def test_matching_ignores_unicode_form_and_case() -> None:
    nfc = "Café in Ｔｏｋｙｏ serves STRASSE coffee"
    assert terms(unicodedata.normalize("NFD", nfc)) == terms(nfc)
    assert terms("tokyo café") == terms("ＴＯＫＹＯ CAFÉ")
    assert terms("Straße") == terms("STRASSE")
