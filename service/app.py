"""The HTTP API: create_app() builds it from the routers (routes/), the guards and the error
answers; the index loads once, in the background, at start-up."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from mcp.server.mcpserver import MCPServer

from groundqa import __version__
from groundqa.index import serving
from groundqa.index.config import open_index, prepare_process
from groundqa.index.errors import IndexBusy
from groundqa.index.index import DocumentInput
from groundqa.ingest.sources import article_input, article_sources, read_source
from groundqa.service import auth, mcp_server
from groundqa.service.config import Settings, get_settings
from groundqa.service.deps import loaded
from groundqa.service.guards import FORM_BYTES, MCP_MAX_BODY, UPLOAD, BodyGuard
from groundqa.service.http_errors import MCP, add_error_handlers
from groundqa.service.jobs import Jobs
from groundqa.service.metrics import Metrics, Observe
from groundqa.service.routes import documents, jobs, openai, operations, pages, query, view
from groundqa.service.routes.pages import mount_static

log = logging.getLogger("uvicorn.error")  # shown with the server's own lines

# Threads that rank queries, per worker.
RANKING_THREADS = 2
# Seconds a stopping server waits for requests in flight before it cancels them.
GRACEFUL_SHUTDOWN = 3


def create_app(
    settings: Settings | None = None, seed: list[DocumentInput] | None = None, load_first: bool = False
) -> FastAPI:
    """load_first: take connections only once the index is loaded (one of several workers: the
    others answer meanwhile, and no request lands on a worker that would say "loading"); else
    the index loads in the background and /readyz says when it is there."""
    settings = settings or get_settings()

    tools = mcp_server.build(lambda: loaded(app), auth.mcp_check(settings.api_key), settings.link_base())

    lifespan = _lifespan(settings, seed or [], load_first, tools)

    app = FastAPI(
        title="groundqa",
        version=__version__,
        summary="Grounded answers over articles, with exact character offsets.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.index = None
    app.state.load_error = None
    # Queries rank on these threads, and wait for the encoder holding none: a few threads keep
    # the GIL for the work at hand (16 threads ranking at once answered a third less).
    app.state.rankers = ThreadPoolExecutor(RANKING_THREADS, thread_name_prefix="ranking")
    app.state.metrics = Metrics(lambda: app.state.index)
    app.dependency_overrides[get_settings] = lambda: settings
    if settings.cors_list():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_list(),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        BodyGuard,
        key=settings.api_key,
        max_bytes=settings.max_body_bytes,
        timeout=settings.body_timeout,
        # An upload's limit is the file's, plus room for the form around it; MCP's is its SDK's,
        # answered here in JSON (the SDK's own 413 is plain text).
        larger={UPLOAD: settings.max_file_bytes + FORM_BYTES, MCP: MCP_MAX_BODY},
    )
    app.add_middleware(Observe, metrics=app.state.metrics)
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
    openai.add_error_handler(app)
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
    settings: Settings, seed: list[DocumentInput], load_first: bool, tools: MCPServer
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """What the app does as it starts (hold the folder, load the index, start the jobs) and as
    it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Rebuild refuses to move the folder of a running server (index/serving.py).
        held = None
        try:
            held = None if settings.qdrant_url else serving.hold(Path(settings.index_dir))
        except IndexBusy as exc:  # a rebuild at work: every request says so (503)
            app.state.load_error = str(exc)
        app.state.jobs = Jobs(
            Path(settings.index_dir),
            lambda: loaded(app),
            settings.file_limits,
            settings.max_jobs,
            settings.max_job_bytes,
        )
        loader = threading.Thread(target=_load, args=(app, settings, seed), daemon=True)
        if app.state.load_error is None:
            loader.start()
        if load_first and loader.is_alive():
            await asyncio.to_thread(loader.join)
        async with tools.session_manager.run():
            yield
        app.state.jobs.stop()
        if app.state.index is not None:  # a write still embedding stops at its next model batch
            app.state.index.stop()  # (its storage stays open for it: the process is ending)
        if held is not None:
            os.close(held)
        app.state.rankers.shutdown(wait=False, cancel_futures=True)

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


def _load(app: FastAPI, settings: Settings, seed: list[DocumentInput]) -> None:
    try:
        index = open_index(settings, merge_in_background=True)
        if seed and not index.counts()[0]:
            done = index.add_many(seed, replace=True)
            # Several workers may seed at once: the one whose commit comes second finds the
            # documents there (unchanged) and says nothing.
            stored = [str(d.source) for d, r in zip(seed, done, strict=True) if r.state != "unchanged"]
            if stored:
                log.info("seeded the empty index with %s", ", ".join(stored))
        app.state.index = index
        app.state.jobs.start()  # the jobs waiting run once the index is there
    except Exception as exc:  # reported by /readyz and every query, and in the log
        log.exception("the index could not be loaded")
        app.state.load_error = str(exc)
