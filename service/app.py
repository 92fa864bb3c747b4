"""The HTTP API: create_app() builds it; the index loads once, in the background, at start-up."""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as FastAPIPath
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from groundqa import __version__
from groundqa.index import serving
from groundqa.index.config import open_index, prepare_process
from groundqa.index.conversation import MAX_HISTORY_CHARS, MAX_TURN_CHARS, MAX_TURNS, Turn
from groundqa.index.errors import (
    DiskFull,
    DocumentConflict,
    DocumentNotFound,
    GroundQAError,
    IndexBusy,
    IndexDamaged,
    InvalidDocument,
    InvalidQuery,
    ShuttingDown,
)
from groundqa.index.formats import CONTENT_TYPES, FileTooLarge, ParseBusy, parse_slot
from groundqa.index.index import DocumentInput, Index
from groundqa.index.ranking import (
    DEFAULT_K,
    DEFAULT_MODE,
    MAX_DOC_IDS,
    MAX_K,
    MAX_QUESTION_CHARS,
    MODES,
    Mode,
)
from groundqa.service import mcp_server, openai_chat, view
from groundqa.service.articles import Article, article_input, article_sources, clean_name, read_source
from groundqa.service.config import Settings, get_settings
from groundqa.service.jobs import Jobs, QueueFull
from groundqa.service.metrics import Metrics
from groundqa.service.schemas import (
    BatchItem,
    BatchResult,
    DocId,
    DocIds,
    DocumentBatch,
    DocumentIn,
    DocumentList,
    DocumentOut,
    DocumentText,
    DocumentUpdate,
    JobList,
    JobOut,
    K,
    Limits,
    MinConfidence,
    QueryRequest,
    QueryResponse,
    Question,
    Uploaded,
    errors,
    stored,
    turns_of,
)

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("uvicorn.error")  # shown with the server's own lines

_STATUS = {
    DiskFull: 507,
    IndexDamaged: 503,
    FileTooLarge: 413,  # before InvalidDocument, which it is too
    InvalidDocument: 422,
    InvalidQuery: 422,
    DocumentNotFound: 404,
    DocumentConflict: 409,
    IndexBusy: 503,
    ShuttingDown: 503,
    QueueFull: 429,
}
UPLOAD = "/v1/documents/upload"
# A request body is kept in memory up to this size, then in a temporary file; handed on in pieces.
SPOOLED = 1 << 20
REPLAYED = 1 << 16
MCP = "/mcp"
# The MCP SDK's own limit on a request body (4 MiB).
MCP_MAX_BODY = 4 * 1024 * 1024
# Room for an upload's form fields and multipart boundaries beside the file.
FORM_BYTES = 64 * 1024
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

    key = settings.api_key.get_secret_value() if settings.api_key else None
    tools = mcp_server.build(lambda: loaded(app), mcp_server.bearer_check(key), settings.link_base())

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
        loader = threading.Thread(target=_load, args=(app, settings, seed or []), daemon=True)
        if app.state.load_error is None:
            loader.start()
        if load_first and loader.is_alive():
            await asyncio.to_thread(loader.join)
        async with tools.session_manager.run():
            yield
        app.state.jobs.stop()
        if app.state.index is not None:  # a write still embedding stops at its next model batch
            app.state.index.close()
        if held is not None:
            os.close(held)
        app.state.rankers.shutdown(wait=False, cancel_futures=True)

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
    _add_error_handlers(app)
    _add_routes(app)
    openai_chat.add_routes(app, lambda request: loaded(request.app), settings.link_base())
    app.state.loaded = lambda: loaded(app)  # the citation view's index
    app.include_router(view.router)
    # MCP over streamable HTTP at /mcp: one JSON answer a request, no session to keep, so any
    # worker answers any request.
    mcp_app = tools.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, host=settings.host
    )
    app.router.routes.extend(mcp_app.routes)
    _add_pages(app)
    return app


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


def loaded(app: FastAPI) -> Index:
    """The index, or IndexBusy (503 over HTTP, a tool error in MCP) saying why there is none yet."""
    index: Index | None = app.state.index
    if index is None:
        error = app.state.load_error
        raise IndexBusy(f"the index failed to load: {error}" if error else "the index is loading; try again")
    return index


async def get_index(request: Request) -> Index:
    """(async: FastAPI runs a plain function dependency on a thread of its pool.)"""
    return loaded(request.app)


SettingsDep = Annotated[Settings, Depends(get_settings)]


def key_refusal(key: SecretStr | None, authorization: str | None) -> tuple[int, str] | None:
    """Why a write with this Authorization header is refused (status, detail), or None."""
    if key is None:
        return 403, "HTTP writes are disabled; set GROUNDQA_API_KEY on the server to enable them"
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), key.get_secret_value().encode()
    ):
        return 401, "missing or wrong API key; send 'Authorization: Bearer <GROUNDQA_API_KEY>'"
    return None


def is_write(method: str, path: str) -> bool:
    """The routes that need the key: every change to the documents (other methods on these
    paths get their 405 from the router, as they would with the key)."""
    return any(m == method and p.fullmatch(path) for m, p in _WRITES)


_WRITES = [
    ("POST", re.compile(r"/v1/documents(/batch|/upload)?")),
    ("PUT", re.compile(r"/v1/documents/[^/]+")),
    ("DELETE", re.compile(r"/v1/documents/[^/]+")),
]


def require_key(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    refused = key_refusal(settings.api_key, authorization)
    if refused is not None:
        headers = {"WWW-Authenticate": "Bearer"} if refused[0] == 401 else None
        raise HTTPException(refused[0], refused[1], headers=headers)


IndexDep = Annotated[Index, Depends(get_index)]
WriteKey = Depends(require_key)


def _add_routes(app: FastAPI) -> None:
    body = (408, 413, 422, 503)
    write = (401, 403, *body, 507)

    @app.post("/v1/query", response_model=QueryResponse, tags=["query"], responses=errors(404, *body))
    async def query(body: QueryRequest, index: IndexDep, request: Request) -> Response:
        return await _search(
            index,
            request,
            body.question,
            body.k,
            body.mode,
            body.doc_ids,
            body.min_confidence,
            turns_of(body.history),
        )

    @app.get("/v1/query", response_model=QueryResponse, tags=["query"], responses=errors(404, 422, 503))
    async def query_get(
        index: IndexDep,
        request: Request,
        q: Annotated[Question, Query(description="the question")],
        k: Annotated[K, Query()] = DEFAULT_K,
        mode: Annotated[Mode, Query()] = DEFAULT_MODE,
        doc_ids: Annotated[
            DocIds, Query(description=f"repeat to search several (at most {MAX_DOC_IDS})")
        ] = None,
        min_confidence: Annotated[MinConfidence, Query()] = None,
    ) -> Response:
        return await _search(index, request, q, k, mode, doc_ids, min_confidence)

    @app.post(
        "/v1/documents",
        status_code=201,
        response_model=DocumentOut,
        tags=["documents"],
        dependencies=[WriteKey],
        responses=stored(200, "already stored: nothing changed") | errors(409, *write),
    )
    def add_document(body: DocumentIn, index: IndexDep, request: Request, response: Response) -> DocumentOut:
        with request.app.state.metrics.writes.track_inprogress():
            added = index.add(body.text, title=body.title, doc_id=body.doc_id, source=body.source)
        if not added.created:
            response.status_code = 200
        return DocumentOut.of(added.document)

    @app.post(
        "/v1/documents/upload",
        status_code=201,
        response_model=Uploaded,
        tags=["documents"],
        dependencies=[WriteKey],
        responses=stored(200, "already stored (state unchanged), or replaced")
        | {202: {"model": JobOut, "description": "with Prefer: respond-async: the job, at Location"}}
        | errors(409, 429, *write),
    )
    def upload_document(
        file: Annotated[
            UploadFile, File(description="a web page, PDF, Word file (.docx), text or Markdown file")
        ],
        index: IndexDep,
        settings: SettingsDep,
        request: Request,
        response: Response,
        doc_id: Annotated[
            DocId | None, Form(description="the file name without its suffix by default")
        ] = None,
        title: Annotated[
            str | None, Form(max_length=500, description="the file's own title by default")
        ] = None,
        replace: Annotated[
            bool, Form(description="replace a document whose doc_id holds other text")
        ] = False,
        prefer: Annotated[
            str | None,
            Header(description="respond-async: answer 202 at once and read the file in a job (RFC 7240)"),
        ] = None,
    ) -> Any:
        """Store an article file: its text is extracted (in a child process, under a time limit)
        and the original is kept, served by GET /v1/documents/{doc_id}/source. With `Prefer:
        respond-async`, a job does it: 202 with the job, whose progress GET /v1/jobs/{id} gives."""
        if "respond-async" in [p.strip().lower() for p in (prefer or "").split(",")]:
            job = request.app.state.jobs.submit(clean_name(file.filename), file.file, doc_id, title, replace)
            headers = {"Location": f"/v1/jobs/{job.id}", "Preference-Applied": "respond-async"}
            return JSONResponse(JobOut.of(job).model_dump(mode="json"), status_code=202, headers=headers)
        limits = settings.file_limits()
        # The file stays in its temporary file until a parse slot is free: uploads waiting for
        # one hold no memory.
        with parse_slot(limits):
            article = Article(clean_name(file.filename), file.file.read())
            item, found = article_input(article, limits, title, doc_id, slotted=True)
        with request.app.state.metrics.writes.track_inprogress():
            added = index.add_many([item], replace=replace)[0]
        response.status_code = 201 if added.created else 200
        return Uploaded.of(added.document, state=added.state, warnings=list(found.warnings))

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobOut,
        tags=["documents"],
        dependencies=[WriteKey],
        responses=errors(401, 403, 404, 422),
    )
    def get_job(job_id: Annotated[str, FastAPIPath(pattern="^[0-9a-f]{32}$")], request: Request) -> JobOut:
        """A background job: its state, its progress, and the upload's result or error."""
        return JobOut.of(request.app.state.jobs.get(job_id))

    @app.get(
        "/v1/jobs",
        response_model=JobList,
        tags=["documents"],
        dependencies=[WriteKey],
        responses=errors(401, 403, 422),
    )
    def list_jobs(request: Request) -> JobList:
        """The recent jobs, newest first."""
        return JobList(jobs=[JobOut.of(j) for j in request.app.state.jobs.recent()])

    @app.post(
        "/v1/documents/batch",
        response_model=BatchResult,
        tags=["documents"],
        dependencies=[WriteKey],
        responses=errors(409, *write),
    )
    def add_documents(
        body: DocumentBatch, index: IndexDep, settings: SettingsDep, request: Request
    ) -> BatchResult:
        if len(body.documents) > settings.max_batch_docs:
            raise HTTPException(
                413, f"the batch has {len(body.documents)} documents; the limit is {settings.max_batch_docs}"
            )
        items = [DocumentInput(d.text, d.title, d.doc_id, d.source) for d in body.documents]
        with request.app.state.metrics.writes.track_inprogress():
            done = [BatchItem.of_ingested(i) for i in index.add_many(items, replace=body.replace)]
        counts = {state: sum(d.state == state for d in done) for state in ("added", "replaced", "unchanged")}
        return BatchResult(documents=done, **counts)

    @app.put(
        "/v1/documents/{doc_id}",
        response_model=DocumentOut,
        tags=["documents"],
        dependencies=[WriteKey],
        responses=stored(201, "created") | errors(*write),
    )
    def put_document(
        doc_id: Annotated[DocId, FastAPIPath()],
        body: DocumentUpdate,
        index: IndexDep,
        request: Request,
        response: Response,
    ) -> DocumentOut:
        with request.app.state.metrics.writes.track_inprogress():
            added = index.add(body.text, title=body.title, doc_id=doc_id, source=body.source, replace=True)
        response.status_code = 201 if added.created else 200
        return DocumentOut.of(added.document)

    @app.get("/v1/documents", response_model=DocumentList, tags=["documents"], responses=errors(503))
    def list_documents(index: IndexDep) -> dict[str, Any]:
        docs = index.documents()
        return {"documents": [DocumentOut.of(d) for d in docs], "count": len(docs)}

    @app.get(
        "/v1/documents/{doc_id}",
        response_model=DocumentText,
        tags=["documents"],
        responses=errors(304, 404, 422, 503),
    )
    def get_document(
        doc_id: Annotated[DocId, FastAPIPath()],
        index: IndexDep,
        response: Response,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Any:
        doc, text = index.document(doc_id)
        # The sha256 is the version: a page re-validates its copy and gets it again only if replaced.
        tag = f'"{doc.sha256}"'
        headers = {"ETag": tag, "Cache-Control": "no-cache"}
        if if_none_match is not None and tag in (t.strip() for t in if_none_match.split(",")):
            return Response(status_code=304, headers=headers)
        response.headers.update(headers)
        return DocumentText.of(doc, text=text)

    @app.get(
        "/v1/documents/{doc_id}/source",
        tags=["documents"],
        response_class=Response,
        responses=errors(404, 422, 503) | {200: {"description": "the original file, with its content type"}},
    )
    def get_source(doc_id: Annotated[DocId, FastAPIPath()], index: IndexDep) -> Response:
        """The document as it came: the original file (a PDF opens at a page with #page=N), or
        the stored text for a document sent as text."""
        doc, text = index.document(doc_id)
        original = index.original(doc_id)
        body, kind = (
            (original.data, original.content_type) if original else (text.encode(), CONTENT_TYPES["text"])
        )
        name = Path(doc.source or doc_id).name
        headers = {
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}",
            "X-Content-Type-Options": "nosniff",
            "ETag": f'"{doc.sha256}"',
        }
        if not kind.startswith("application/pdf"):
            # A saved web page runs no script here, and reaches nothing of this origin.
            headers["Content-Security-Policy"] = "sandbox"
        return Response(body, media_type=kind, headers=headers)

    @app.delete(
        "/v1/documents/{doc_id}",
        status_code=204,
        tags=["documents"],
        dependencies=[WriteKey],
        responses=errors(404, *write),
    )
    def delete_document(doc_id: Annotated[DocId, FastAPIPath()], index: IndexDep) -> Response:
        index.delete(doc_id)
        return Response(status_code=204)

    @app.get("/v1/limits", response_model=Limits, tags=["query"])
    def limits(settings: SettingsDep) -> Limits:
        return Limits(
            question_chars=MAX_QUESTION_CHARS,
            k_max=MAX_K,
            k_default=DEFAULT_K,
            modes=list(MODES),
            default_mode=DEFAULT_MODE,
            doc_chars=settings.max_doc_chars,
            batch_documents=settings.max_batch_docs,
            doc_ids=MAX_DOC_IDS,
            body_bytes=settings.max_body_bytes,
            file_bytes=settings.max_file_bytes,
            pdf_pages=settings.max_pages,
            min_confidence=settings.answer_floor(),
            history_turns=MAX_TURNS,
            history_turn_chars=MAX_TURN_CHARS,
            history_chars=MAX_HISTORY_CHARS,
        )

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses=errors(503))
    def readyz(index: IndexDep) -> dict[str, Any]:
        index.reader()  # opens (and checks) every segment of the latest state: damage is a 503
        docs, passages = index.counts()
        return {"status": "ready", "documents": docs, "passages": passages}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        body, content_type = request.app.state.metrics.render()
        return Response(body, media_type=content_type)


async def _search(
    index: Index,
    request: Request,
    question: str,
    k: int,
    mode: Mode,
    doc_ids: list[str] | None,
    min_confidence: float | None,
    history: list[Turn] | None = None,
) -> Response:
    """The query, and its answer rendered once (FastAPI would check the model a second time)."""
    state = request.app.state
    result = await index.search_async(
        state.rankers, question, k, mode, doc_ids, min_confidence, history or ()
    )
    state.metrics.query_seconds.labels(mode).observe(result.took_ms / 1000)
    return Response(QueryResponse.of(result).as_text(), media_type="application/json")


def _add_pages(app: FastAPI) -> None:
    import fastapi_offline  # ships Swagger UI 5, which reads OpenAPI 3.1 (4.x cannot)

    swagger = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/static/swagger", StaticFiles(directory=swagger), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/docs", include_in_schema=False)
    def api_reference() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="groundqa API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon.png",
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GroundQAError)
    async def domain_error(request: Request, exc: GroundQAError) -> JSONResponse:
        status = next((s for t, s in _STATUS.items() if isinstance(exc, t)), 500)
        headers = {"Retry-After": "5"} if isinstance(exc, (QueueFull, ParseBusy)) else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and request.headers.get("content-type", "").startswith("multipart/"):
            # Starlette's form parser: no boundary, too many fields or files
            detail = f"body: the multipart form cannot be read ({exc.detail}); send one part named file"
            return JSONResponse({"detail": detail}, status_code=422)
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot parse: bad UTF-8, deep JSON
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "unreadable"
            detail = f"body: cannot be read as JSON in UTF-8 ({cause}); send a valid JSON object"
            return JSONResponse({"detail": detail}, status_code=422)
        if exc.status_code == 405:  # name every method the path takes, not only one route's
            path = request.url.path
            routes = [r for r in request.app.routes if isinstance(r, APIRoute) and r.path_regex.match(path)]
            exact = [r for r in routes if r.path == path]  # /v1/documents/batch, not /v1/documents/{doc_id}
            allowed = sorted({method for route in exact or routes for method in route.methods or ()})
            detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
            body = _error_body(path, 405, detail)
            return JSONResponse(body, status_code=405, headers={"Allow": ", ".join(allowed)})
        if request.url.path.startswith(openai_chat.PATHS):
            body = openai_chat.error_body(exc.status_code, str(exc.detail))
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe(exc.errors())}, status_code=422)


def _error_body(path: str, status: int, detail: str) -> dict[str, Any]:
    if path.startswith(openai_chat.PATHS):
        return openai_chat.error_body(status, detail)
    if path == MCP:  # JSON-RPC's shape: "invalid request"
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": detail}}
    return {"detail": detail}


def _mcp_refusal(body: bytes) -> str | None:
    """What JSON-RPC forbids and the MCP SDK takes for a notification (202, no answer): an id
    that is neither a string nor a number."""
    try:
        found = json.loads(body)
    except ValueError:
        return None  # the SDK answers a parse error itself
    for message in found if isinstance(found, list) else [found]:
        if isinstance(message, dict) and "id" in message:
            given = message["id"]
            if not isinstance(given, str | int) or isinstance(given, bool):
                return f"a JSON-RPC id is a string or a number; this one is {type(given).__name__}"
    return None


def _describe(errors: Any) -> str:
    """One readable line naming each bad field, e.g. "body.k: Input should be less than or equal to 50"."""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        message = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            message = f"malformed JSON ({e.get('ctx', {}).get('error', 'cannot parse')})"
            where = "body"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


class Observe:
    """Each request's route, status and time into the metrics (plain ASGI: FastAPI's
    function middleware adds a task and a stream to every request); a 503 for a request the
    stopping server cancels."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status, started = time.perf_counter(), 500, False

        async def sent(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when a stopping server's grace period ends: say
            # so with a 503 (uvicorn's own answer would be a bare 500). Writes are idempotent.
            if started:
                raise
            status = 503
            await _refuse(
                send, status, "the server stopped before this request finished; send it again", scope
            )
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - began)


class BodyGuard:
    """Before a body is read, 401 or 403 for a write without the key (its body is never read);
    413 for a body over the limit (by its Content-Length, or by counting), 408 for one that does
    not arrive in time: a client that stalls half-way does not hold a connection for ever."""

    def __init__(
        self, app: ASGIApp, key: SecretStr | None, max_bytes: int, timeout: float, larger: dict[str, int]
    ) -> None:
        self.app = app
        self.key = key
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.larger = larger  # paths with a limit of their own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if is_write(scope["method"], scope["path"]):
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            refused = key_refusal(self.key, authorization)
            if refused is not None:
                await _refuse(send, *refused, scope)
                return
        limit = self.larger.get(scope["path"], self.max_bytes)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(send, 413, f"the request body is larger than {limit} bytes", scope)
            return
        # Bodies past SPOOLED bytes go to a temporary file: many large uploads at once keep the
        # server's memory flat.
        with tempfile.SpooledTemporaryFile(max_size=SPOOLED) as spool:
            seen, more = 0, True
            try:
                async with asyncio.timeout(self.timeout):
                    while more:
                        message = await receive()
                        if message["type"] != "http.request":
                            return  # the client went away
                        chunk = message.get("body", b"")
                        spool.write(chunk)
                        seen += len(chunk)
                        more = message.get("more_body", False)
                        if seen > limit:
                            await _refuse(send, 413, f"the request body is larger than {limit} bytes", scope)
                            return
            except TimeoutError:
                await _refuse(send, 408, f"the request body did not arrive within {self.timeout:g} s", scope)
                return
            spool.seek(0)
            if scope["path"] == MCP and (wrong := _mcp_refusal(spool.read())):
                await _refuse(send, 400, wrong, scope)
                return
            spool.seek(0)
            done = False

            async def replay() -> Message:
                """The body in pieces, then the client's own messages: a streamed response waits
                on them for the disconnect (answering at once again would spin the event loop)."""
                nonlocal done
                if done:
                    return await receive()
                piece = spool.read(REPLAYED)
                done = spool.tell() >= seen
                return {"type": "http.request", "body": piece, "more_body": not done}

            await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, detail: str, scope: Scope) -> None:
    """An error answered before the app: {"detail"}, or OpenAI's shape on its routes."""
    headers = {"Connection": "close"} | ({"WWW-Authenticate": "Bearer"} if status == 401 else {})
    body = _error_body(scope["path"], status, detail)
    await JSONResponse(body, status_code=status, headers=headers)({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b""}


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with three guards:

    - Nagle's algorithm off on every connection (with several workers uvicorn binds the socket
      itself, without the protocol number asyncio looks for, so the accepted sockets kept Nagle
      on: a keep-alive client waited 40 ms for each answer);
    - a connection that has not sent a whole request head within header_timeout seconds (after
      it opened, or after its last answer) gets 408 and is closed: silent and trickling clients
      do not hold sockets;
    - past max_connections open connections, a new one gets 503 with Retry-After at once.
    """

    def __init__(
        self, *args: Any, header_timeout: float = 10, max_connections: int = 2000, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_after: object = None  # the cycle the head timer was set after

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            detail = f"the server holds its limit of {self.max_connections} connections; try again"
            self._answer_and_close(503, detail, {"Retry-After": "1"})
            return
        self._expect_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._expect_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _expect_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._waiting_after = self.cycle
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.cycle is self._waiting_after and not self.transport.is_closing():  # no new request
            detail = f"the request head did not arrive within {self.header_timeout:g} s"
            self._answer_and_close(408, detail, {})

    def _answer_and_close(self, status: int, detail: str, headers: dict[str, str]) -> None:
        """A JSON error written straight to the socket (no request was read), then close."""
        body = json.dumps({"detail": detail}).encode()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        self.transport.write("\r\n".join(head).encode() + body)
        self.transport.close()


def guarded_protocol(settings: Settings) -> Any:
    """The protocol uvicorn builds for each connection, with the server's guards (picklable, for
    several workers)."""
    return functools.partial(
        GuardedH11, header_timeout=settings.header_timeout, max_connections=settings.max_connections
    )
