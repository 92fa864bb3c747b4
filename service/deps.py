"""What routes depend on, typed (FastAPI's deps.py pattern): the index, the searcher, the metrics,
the jobs, the LLM and the settings. The app holds one Services; only this module reads it off
the app, so no route reaches into app.state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from groundqa.index.errors import IndexBusy
from groundqa.index.index import Index
from groundqa.service.config import LLM, Settings, get_settings
from groundqa.service.job_queue import Jobs
from groundqa.service.prometheus import Metrics
from groundqa.service.search import Searcher


@dataclass
class Services:
    """What one app (one worker) holds: made at start, the index and jobs set once loaded."""

    settings: Settings
    metrics: Metrics
    searcher: Searcher
    jobs: Jobs | None = None
    index: Index | None = None
    load_error: str | None = None  # why there is no index (IndexBusy says it)

    def loaded(self) -> Index:
        """The index, or IndexBusy (503 over HTTP, a tool error in MCP) saying why there is none yet."""
        if self.index is None:
            error = self.load_error
            raise IndexBusy(
                f"the index failed to load: {error}" if error else "the index is loading; try again"
            )
        return self.index

    def running_jobs(self) -> Jobs:
        if self.jobs is None:
            raise IndexBusy("the server is starting; try again")
        return self.jobs


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


# (async: FastAPI runs a plain function dependency on a thread of its pool.)
async def get_services(request: Request) -> Services:
    return services_of(request.app)


ServicesDep = Annotated[Services, Depends(get_services)]


# Each reads the app's Services itself: one dependency a value, not a chain (a query's few
# microseconds count).
async def get_index(request: Request) -> Index:
    return services_of(request.app).loaded()


async def get_searcher(request: Request) -> Searcher:
    return services_of(request.app).searcher


async def get_metrics(request: Request) -> Metrics:
    return services_of(request.app).metrics


async def get_jobs(request: Request) -> Jobs:
    return services_of(request.app).running_jobs()


async def get_llm(request: Request) -> LLM | None:
    return services_of(request.app).settings.llm()


IndexDep = Annotated[Index, Depends(get_index)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
LLMDep = Annotated[LLM | None, Depends(get_llm)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
