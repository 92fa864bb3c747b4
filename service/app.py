"""The HTTP API: create_app() builds it from the routers (routes/), the guards and the error
answers; the index loads once, in the background, at start-up."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from mcp.server.mcpserver import MCPServer

from groundqa import __version__
from groundqa.index import folder_lock
from groundqa.index.config import open_index, prepare_process
from groundqa.index.errors import IndexBusy
from groundqa.index.index import DocumentInput
from groundqa.ingest.sources import article_input, article_sources, read_source
from groundqa.service import auth, mcp_server
from groundqa.service.config import Settings, get_settings
from groundqa.service.deps import Services
from groundqa.service.guards import FORM_BYTES, MCP_MAX_BODY, BodyLimit, KeyGuard
from groundqa.service.http_errors import add_error_handlers
from groundqa.service.job_queue import Jobs
from groundqa.service.prometheus import Metrics, Observe
from groundqa.service.routes import MCP, UPLOAD, documents, jobs, openai, operations, pages, query, view
from groundqa.service.routes.pages import mount_static
from groundqa.service.search import RANKING_THREADS, Searcher

log = logging.getLogger("uvicorn.error")  # shown with the server's own lines

__all__ = ["RANKING_THREADS", "create_app", "app_from_environment"]
# Seconds a stopping server waits for requests in flight before it cancels them.
GRACEFUL_SHUTDOWN = 3


def create_app(
    settings: Settings | None = None, seed: list[DocumentInput] | None = None, load_first: bool = False
) -> FastAPI:
    """load_first: take connections only once the index is loaded (one of several workers: the
    others answer meanwhile, and no request lands on a worker that would say "loading"); else
    the index loads in the background and /readyz says when it is there."""
    settings = settings or get_settings()
    metrics = Metrics(lambda: services.index)
    services = Services(settings, metrics, Searcher(lambda: services.loaded(), metrics))

    tools = mcp_server.build(services.searcher, auth.mcp_check(settings.api_key), settings.link_base())

    lifespan = _lifespan(services, seed or [], load_first, tools)

    app = FastAPI(
        title="groundqa",
        version=__version__,
        summary="Grounded answers over articles, with exact character offsets.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services  # read by service/deps.py alone
    app.dependency_overrides[get_settings] = lambda: settings
    # The last added is the outermost: CORS, then the metrics, the key, the body's limits.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        timeout=settings.body_timeout,
        # An upload's limit is the file's, plus room for the form around it; MCP's is its SDK's,
        # answered here in JSON (the SDK's own 413 is plain text).
        larger={UPLOAD: settings.max_file_bytes + FORM_BYTES, MCP: MCP_MAX_BODY},
    )
    app.add_middleware(KeyGuard, key=settings.api_key)
    app.add_middleware(Observe, metrics=metrics)
    if settings.cors_list():  # outside the guards: their refusals carry CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_list(),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Prefer"],
            expose_headers=["Location", "Retry-After", "Preference-Applied"],
        )
    add_error_handlers(app)
    for router in (
        query.router,
        documents.router,
        jobs.router,
        operations.router,
        openai.router,
        view.router,
    ):
        app.include_router(router)
    # MCP over streamable HTTP at /mcp: one JSON answer a request, no session to keep, so any
    # worker answers any request.
    mcp_app = tools.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, host=settings.host
    )
    app.router.routes.extend(mcp_app.routes)
    mount_static(app)
    app.include_router(pages.router)
    return app


def _lifespan(
    services: Services, seed: list[DocumentInput], load_first: bool, tools: MCPServer
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """What the app does as it starts (hold the folder, load the index, start the jobs) and as
    it stops."""
    settings = services.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Rebuild refuses to move the folder of a running server (index/folder_lock.py).
        held = None
        try:
            held = None if settings.qdrant_url else folder_lock.hold(Path(settings.index_dir))
        except IndexBusy as exc:  # a rebuild at work: every request says so (503)
            services.load_error = str(exc)
        services.jobs = Jobs(
            Path(settings.index_dir),
            services.loaded,
            settings.file_limits,
            settings.max_jobs,
            settings.max_job_bytes,
            services.metrics.writes,
        )
        loader = threading.Thread(target=_load, args=(services, seed), daemon=True)
        if services.load_error is None:
            loader.start()
        if load_first and loader.is_alive():
            await asyncio.to_thread(loader.join)
        async with tools.session_manager.run():
            yield
        services.jobs.stop()
        if services.index is not None:  # a write still embedding stops at its next model batch
            services.index.stop()  # (its storage stays open for it: the process is ending)
        if held is not None:
            os.close(held)
        services.searcher.stop()

    return lifespan


def app_from_environment() -> FastAPI:
    """The app as `groundqa serve` runs it in each uvicorn worker: settings from GROUNDQA_*
    (the CLI puts its flags there). A worker is a process of its own: it makes the process
    settings first (one BLAS thread above all)."""
    prepare_process()
    settings = get_settings()
    sources = article_sources([settings.seed]) if settings.seed else []
    limits = settings.file_limits()
    seed = [article_input(read_source(s, limits), limits)[0] for s in sources]
    return create_app(settings, seed, load_first=settings.worker_count() > 1)


def _load(services: Services, seed: list[DocumentInput]) -> None:
    try:
        index = open_index(services.settings, merge_in_background=True)
        if seed and not index.counts()[0]:
            done = index.add_many(seed, replace=True)
            # Several workers may seed at once: the one whose commit comes second finds the
            # documents there (unchanged) and says nothing.
            stored = [str(d.source) for d, r in zip(seed, done, strict=True) if r.state != "unchanged"]
            if stored:
                log.info("seeded the empty index with %s", ", ".join(stored))
        services.index = index
        services.running_jobs().start()  # the jobs waiting run once the index is there
    except Exception as exc:  # reported by /readyz and every query, and in the log
        log.exception("the index could not be loaded")
        services.load_error = str(exc)
