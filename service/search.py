"""One search path for every face (the HTTP query routes and the page, the OpenAI route, MCP):
the question waits for the shared encoder, ranks on the ranking threads, and its time is counted
in groundqa_query_seconds with the face as a label. A written answer's checks run on the same
threads (bounded by the LLM's reply). Checking a whole text (/v1/verify, up to 100 searches) is
heavy: it runs on a lane of its own under admission control, so ordinary questions keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar

from groundqa.index.conversation import Turn
from groundqa.index.errors import Overloaded
from groundqa.index.index import Index, SearchResult
from groundqa.index.ranking import DEFAULT_K, DEFAULT_MODE, Mode
from groundqa.service.prometheus import Metrics

# Threads that rank queries, per process: a few threads keep the GIL for the work at hand (16
# threads ranking at once answered a third less).
RANKING_THREADS = 2
# Who asked: the label of groundqa_query_seconds.
Face = Literal["query", "openai", "mcp"]
P = ParamSpec("P")
T = TypeVar("T")
# Heavy requests a process takes at once (one checking, the others waiting); past them, 503
# with Retry-After. Each has HEAVY_SECONDS from its admission: what is not done by then is
# reported unchecked, so none holds the lane longer.
HEAVY_ADMITTED = 4
HEAVY_SECONDS = 55.0
# While questions are being asked (one in the last QUESTIONS_LATELY seconds), heavy work pauses
# after each step for this many times as long as the step took: it takes at most a third of a
# core, and questions the rest; alone, it runs at full speed.
HEAVY_REST = 2.0
QUESTIONS_LATELY = 1.0


def _lowest_priority() -> None:
    """The heavy lane's thread runs at the lowest CPU priority (nice 19): at full speed on an idle
    machine, behind every question on a busy one, whichever worker the questions go to."""
    with contextlib.suppress(OSError, AttributeError):  # (not on every system)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class Searcher:
    """Searches the index that index() returns (loaded lazily by the caller: IndexBusy until it is)."""

    def __init__(self, index: Callable[[], Index], metrics: Metrics) -> None:
        self.index = index
        self.metrics = metrics
        self.threads = ThreadPoolExecutor(RANKING_THREADS, thread_name_prefix="ranking")
        self.heavy = ThreadPoolExecutor(1, thread_name_prefix="checking", initializer=_lowest_priority)
        self.admitted = 0  # heavy requests running or waiting (counted on the event loop)
        self.asked = 0.0  # when the latest question came or was answered (time.monotonic())

    async def search(
        self,
        face: Face,
        question: str,
        k: int = DEFAULT_K,
        mode: Mode = DEFAULT_MODE,
        doc_ids: list[str] | None = None,
        min_confidence: float | None = None,
        history: Sequence[Turn] = (),
    ) -> SearchResult:
        """Index.search, on the ranking threads, counted."""
        index = self.index()
        self.asked = time.monotonic()
        result = await index.search_async(self.threads, question, k, mode, doc_ids, min_confidence, history)
        self.asked = time.monotonic()
        self.metrics.query_seconds.labels(mode, face).observe(result.took_ms / 1000)
        return result

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Other ranking work, on the same threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.threads, functools.partial(work, *args, **kwargs))

    async def run_heavy(self, work: Callable[[float], T]) -> T:
        """Heavy work, on its own lane, admitted up to HEAVY_ADMITTED at once (Overloaded past
        them): work(deadline) is given the monotonic time by which it stops."""
        if self.admitted >= HEAVY_ADMITTED:
            waiting = f"{self.admitted} texts are being checked or wait for it"
            raise Overloaded(f"{waiting}; the most is {HEAVY_ADMITTED}: try again shortly")
        self.admitted += 1
        try:
            deadline = time.monotonic() + HEAVY_SECONDS
            return await asyncio.get_running_loop().run_in_executor(self.heavy, work, deadline)
        finally:
            self.admitted -= 1

    def pace(self, took: float) -> None:
        """Heavy work's pause after a step that took this long (on its own thread)."""
        if time.monotonic() - self.asked < QUESTIONS_LATELY:
            time.sleep(HEAVY_REST * took)

    def stop(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)
        self.heavy.shutdown(wait=False, cancel_futures=True)
