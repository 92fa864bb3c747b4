"""The queue in front of the query encoder: one pass for questions that arrive together."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from groundqa.index.batching import QueryBatcher
from groundqa.index.model import Embedder

QUESTIONS = [
    "How long is the Power of Siberia 2 pipeline?",
    "Who visited China?",
    "What did Putin expect from the visit to Beijing in May?",
    "Which company reported its first loss in decades?",
] * 8


def test_batched_answers_equal_one_at_a_time(embedder: Embedder) -> None:
    batcher = QueryBatcher(embedder, max_wait=0.05)
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        got = list(pool.map(batcher.embed, QUESTIONS))
    assert batcher.batches < len(QUESTIONS)  # some questions shared a pass
    assert batcher.largest > 1
    for question, (vector, pieces) in zip(QUESTIONS, got, strict=True):
        alone, alone_pieces = embedder.embed_with_pieces([question])
        assert np.allclose(vector, alone[0], atol=1e-4)
        assert np.array_equal(pieces.spans, alone_pieces[0].spans)
        assert np.array_equal(pieces.ids, alone_pieces[0].ids)
        assert np.allclose(pieces.vectors, alone_pieces[0].vectors, atol=1e-4)


def test_a_lone_question_does_not_wait_for_company(embedder: Embedder) -> None:
    batcher = QueryBatcher(embedder, max_wait=0.001)
    for question in QUESTIONS[:4]:
        batcher.embed(question)
    assert batcher.batches == 4 and batcher.largest == 1


def test_an_error_reaches_only_the_caller_it_belongs_to(embedder: Embedder) -> None:
    batcher = QueryBatcher(embedder, max_wait=0.2)
    bad = "a lone surrogate \ud800 the tokenizer cannot read"
    results: dict[str, object] = {}

    def ask(text: str) -> None:
        try:
            results[text] = batcher.embed(text)
        except Exception as exc:
            results[text] = exc

    threads = [threading.Thread(target=ask, args=(t,)) for t in [QUESTIONS[0], bad, QUESTIONS[1]]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results[bad], Exception)
    for good in QUESTIONS[:2]:
        vector, _ = results[good]  # type: ignore[misc]
        assert np.allclose(vector, embedder.embed([good])[0], atol=1e-4)


@pytest.mark.slow
def test_no_caller_starves_under_a_steady_stream(embedder: Embedder) -> None:
    batcher = QueryBatcher(embedder, max_wait=0.002, max_batch=4)
    served = [0] * 8
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set():
            batcher.embed(QUESTIONS[i])
            served[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    stop.wait(5)
    stop.set()
    for t in threads:
        t.join()
    assert min(served) >= 1 and max(served) <= 3 * min(served) + 3, served
