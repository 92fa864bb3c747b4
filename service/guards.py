"""The server's guards, in front of the app: the key (KeyGuard: a write without it is refused
before its body is read), the size and pace of a request body (BodyLimit), and the connection
itself (GuardedH11: Nagle off, a deadline for the request head, a cap on open connections).
CORS wraps them all (service/app.py): a browser page on an allowed origin reads their refusals."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import tempfile
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from groundqa.service import auth
from groundqa.service.config import Settings
from groundqa.service.http_errors import error_body
from groundqa.service.routes import MCP

# A request body is kept in memory up to this size, then in a temporary file; handed on in pieces.
SPOOLED = 1 << 20
REPLAYED = 1 << 16
# The MCP SDK's own limit on a request body (4 MiB).
MCP_MAX_BODY = 4 * 1024 * 1024
# Room for an upload's form fields and multipart boundaries beside the file.
FORM_BYTES = 64 * 1024


class KeyGuard:
    """401 or 403 for a write without the key, before its body is read (auth.py's one rule: the
    routes that need the key are found by their dependency on it)."""

    def __init__(self, app: ASGIApp, key: SecretStr | None) -> None:
        self.app = app
        self.key = key
        self._writes: auth.Writes | None = None  # read off the app's routes at the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            if self._writes is None:
                self._writes = auth.write_routes(scope["app"].routes)
            if auth.is_write(self._writes, scope["method"], scope["path"]):
                authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
                refused = auth.refusal(self.key, authorization)
                if refused is not None:
                    await refuse(send, *refused, scope)
                    return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over the limit (by its Content-Length, or by counting), 408 for one that does
    not arrive in time: a client that stalls half-way does not hold a connection for ever; 400 for
    an MCP message whose id JSON-RPC forbids."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float, larger: dict[str, int]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.larger = larger  # paths with a limit of their own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_bytes)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await refuse(send, 413, f"the request body is larger than {limit} bytes", scope)
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
                            await refuse(send, 413, f"the request body is larger than {limit} bytes", scope)
                            return
            except TimeoutError:
                await refuse(send, 408, f"the request body did not arrive within {self.timeout:g} s", scope)
                return
            spool.seek(0)
            if scope["path"] == MCP and (wrong := _mcp_refusal(spool.read())):
                await refuse(send, 400, wrong, scope)
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


async def refuse(send: Send, status: int, detail: str, scope: Scope) -> None:
    """An error answered before the app: {"detail"}, or OpenAI's shape on its routes."""
    headers = {"Connection": "close"} | ({"WWW-Authenticate": "Bearer"} if status == 401 else {})
    body = error_body(scope["path"], status, detail)
    await JSONResponse(body, status_code=status, headers=headers)({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b""}


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
