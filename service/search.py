"""One search path for every face (the HTTP query routes and the page, the OpenAI route, MCP):
the question waits for the shared encoder, ranks on the ranking threads, and its time is counted
in groundqa_query_seconds with the face as a label. Other work on the index that ranks (checking
a text, a written answer's sentences) runs on the same threads."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar

from groundqa.index.conversation import Turn
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


class Searcher:
    """Searches the index that index() returns (loaded lazily by the caller: IndexBusy until it is)."""

    def __init__(self, index: Callable[[], Index], metrics: Metrics) -> None:
        self.index = index
        self.metrics = metrics
        self.threads = ThreadPoolExecutor(RANKING_THREADS, thread_name_prefix="ranking")

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
        result = await index.search_async(self.threads, question, k, mode, doc_ids, min_confidence, history)
        self.metrics.query_seconds.labels(mode, face).observe(result.took_ms / 1000)
        return result

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Other ranking work, on the same threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.threads, functools.partial(work, *args, **kwargs))

    def stop(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)
