"""Who may change the documents: one rule, for the HTTP routes, the body guard and MCP.

A write is a route that depends on require_key (WriteKey). The body guard finds the same routes by
that dependency (write_routes) and refuses a write without the key before its body is read; the
route's own dependency refuses it again should the guard ever be bypassed. MCP's add_document
asks the same question of its request's headers (mcp_check)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import SecretStr

from groundqa.service.config import Settings, get_settings
from groundqa.service.routes import api_routes


def refusal(key: SecretStr | None, authorization: str | None) -> tuple[int, str] | None:
    """Why a write with this Authorization header is refused (status, detail), or None."""
    if key is None:
        return 403, "HTTP writes are disabled; set GROUNDQA_API_KEY on the server to enable them"
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), key.get_secret_value().encode()
    ):
        return 401, "missing or wrong API key; send 'Authorization: Bearer <GROUNDQA_API_KEY>'"
    return None


# The bearer scheme, named in the OpenAPI document on every route that needs the key (the
# refusals are require_key's own: 401 or 403 with what to do).
bearer = HTTPBearer(
    scheme_name="apiKey", description="GROUNDQA_API_KEY, as 'Authorization: Bearer <key>'", auto_error=False
)


def require_key(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    refused = refusal(settings.api_key, f"Bearer {credentials.credentials}" if credentials else None)
    if refused is not None:
        headers = {"WWW-Authenticate": "Bearer"} if refused[0] == 401 else None
        raise HTTPException(refused[0], refused[1], headers=headers)


# A route that changes the documents: dependencies=[WriteKey].
WriteKey = Depends(require_key)
Writes = list[tuple[str, re.Pattern[str]]]


def write_routes(routes: Iterable[Any]) -> Writes:
    """(method, path pattern) of every route that needs the key."""
    return [
        (method, route.path_regex)
        for route in api_routes(routes)
        if any(d.call is require_key for d in route.dependant.dependencies)
        for method in route.methods or ()
    ]


def is_write(writes: Writes, method: str, path: str) -> bool:
    return any(m == method and pattern.match(path) for m, pattern in writes)


# What a write needs over MCP: raises ToolError when the caller may not write.
WriteCheck = Callable[[Context], None]


def mcp_check(key: SecretStr | None) -> WriteCheck:
    """Over HTTP, MCP's add_document needs the same key as the API's writes."""

    def check(ctx: Context) -> None:
        refused = refusal(key, (ctx.headers or {}).get("authorization"))
        if refused is not None:
            raise ToolError(refused[1])

    return check


def allow_all(ctx: Context) -> None:
    """Over stdio the local user owns the index: writes are theirs."""
