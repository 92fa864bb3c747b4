"""Micro-batching: questions that arrive together are encoded in one forward pass.

One worker thread owns the query side of the encoder. It takes the first question waiting, then
whatever else is already queued (while a pass runs, the next questions pile up) and, when
questions come close together (the previous one arrived less than `max_gap` before), whatever
arrives within `max_wait`, up to `max_batch`, and encodes them at once: 16 questions in one pass
cost about a third each of 16 passes. A lone client's question (one every 10 ms at best) is not
held at all. Questions are served in the order they came. If a pass fails, each of its
questions is encoded alone, so an error reaches the caller whose question caused it and no other.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from groundqa.index.model import Embedder, PieceVectors


@dataclass(frozen=True)
class _Job:
    text: str
    done: Future[tuple[np.ndarray, PieceVectors]]
    arrived: float


class QueryBatcher:
    def __init__(
        self, embedder: Embedder, max_wait: float = 0.001, max_batch: int = 32, max_gap: float = 0.005
    ) -> None:
        self.embedder = embedder
        self.max_wait = max_wait
        self.max_gap = max_gap
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start = threading.Lock()
        self.batches = 0  # passes made, for tests and metrics
        self.largest = 0

    def embed(self, text: str) -> tuple[np.ndarray, PieceVectors]:
        """The text's vector and word pieces, as Embedder.embed_with_pieces([text]) gives them."""
        return self.submit(text).result()

    def submit(self, text: str) -> Future[tuple[np.ndarray, PieceVectors]]:
        """embed(), without waiting: an event loop awaits the future without holding a thread."""
        job = _Job(text, Future(), time.monotonic())
        self._ensure_worker()
        self._queue.put(job)
        return job.done

    def _ensure_worker(self) -> None:
        with self._start:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="query-encoder", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        last = float("-inf")  # when the previous question arrived
        while True:
            batch = [self._queue.get()]
            close = batch[0].arrived - last < self.max_gap
            deadline = time.monotonic() + (self.max_wait if close else 0.0)
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            last = batch[-1].arrived
            self._encode(batch)

    def _encode(self, batch: list[_Job]) -> None:
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        try:
            vectors, pieces = self.embedder.embed_with_pieces([job.text for job in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].done.set_exception(exc)
            else:  # find whose question it was: each alone
                for job in batch:
                    self._encode([job])
            return
        for job, vector, found in zip(batch, vectors, pieces, strict=True):
            job.done.set_result((vector, found))
