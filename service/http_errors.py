"""Errors as HTTP answers: a domain error's status, one readable line for a bad request, the
methods a path takes for a 405, and the shape each face expects ({"detail"}, OpenAI's, JSON-RPC's):
every error shape is decided here, whoever answers (a route, the guards, a handler)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from groundqa.index.errors import (
    DiskFull,
    DocumentConflict,
    FileTooLarge,
    GroundQAError,
    IndexBusy,
    IndexDamaged,
    InvalidDocument,
    InvalidQuery,
    NotFound,
    Overloaded,
    ParseBusy,
    ShuttingDown,
)
from groundqa.service.job_queue import QueueFull
from groundqa.service.routes import MCP, api_routes

STATUS = {
    DiskFull: 507,
    IndexDamaged: 503,
    FileTooLarge: 413,  # before InvalidDocument, which it is too
    InvalidDocument: 422,
    InvalidQuery: 422,
    NotFound: 404,
    DocumentConflict: 409,
    IndexBusy: 503,
    ShuttingDown: 503,
    QueueFull: 429,
    Overloaded: 503,
}
# The paths whose errors come in OpenAI's shape, whatever answers them (the guards too).
OPENAI_PATHS = ("/v1/chat/", "/v1/completions", "/v1/models")


class OpenAIError(Exception):
    """An error of the OpenAI routes, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param


def openai_body(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    code = code or {
        401: "invalid_api_key",
        404: "model_not_found",
        408: "timeout",
        413: "request_too_large",
        503: "unavailable",
    }.get(status)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(openai_body(exc.status, str(exc), exc.kind, exc.param), status_code=exc.status)

    @app.exception_handler(GroundQAError)
    async def domain_error(request: Request, exc: GroundQAError) -> JSONResponse:
        status = next((s for t, s in STATUS.items() if isinstance(exc, t)), 500)
        headers = {"Retry-After": "5"} if isinstance(exc, (QueueFull, ParseBusy, Overloaded)) else None
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
            routes = [r for r in api_routes(request.app.routes) if r.path_regex.match(path)]
            exact = [r for r in routes if r.path == path]  # /v1/documents/batch, not /v1/documents/{doc_id}
            allowed = sorted({method for route in exact or routes for method in route.methods or ()})
            detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
            body = error_body(path, 405, detail)
            return JSONResponse(body, status_code=405, headers={"Allow": ", ".join(allowed)})
        path = request.url.path
        if exc.status_code == 404 and path.startswith("/v1/") and not _routed(request):
            detail = (
                f"Invalid URL ({request.method} {path}): groundqa speaks OpenAI's "
                "/v1/chat/completions, /v1/completions and /v1/models, and its own API (/docs)"
            )
            return JSONResponse(openai_body(404, detail, code="unknown_url"), status_code=404)
        if path.startswith(OPENAI_PATHS):
            body = openai_body(exc.status_code, str(exc.detail))
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe(exc.errors())}, status_code=422)


def _routed(request: Request) -> bool:
    """Whether any route of the app takes this path (a 404 of its own, not an unknown URL)."""
    return any(r.path_regex.match(request.url.path) for r in api_routes(request.app.routes))


def error_body(path: str, status: int, detail: str) -> dict[str, Any]:
    if path.startswith(OPENAI_PATHS):
        return openai_body(status, detail)
    if path == MCP:  # JSON-RPC's shape: "invalid request"
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": detail}}
    return {"detail": detail}


def describe(errors: Any) -> str:
    """One readable line naming each bad field, e.g. "body.k: Input should be less than or equal to 50"."""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            message = f"malformed JSON ({e.get('ctx', {}).get('error', 'cannot parse')})"
            where = "body"
        named = str(e.get("loc", ("",))[-1])  # the index's own checks name the field themselves
        said = message.startswith((f"{named}:", f"{named} ", f"{named}[")) and named != "body"
        parts.append(message if said else f"{where}: {message}")
    return "; ".join(parts)
