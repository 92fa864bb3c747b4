"""The HTTP routes, one router per resource: query, documents, jobs, operations, the OpenAI
protocol, the citation view and the pages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute

# Paths named outside their router: the body limits (service/guards.py) and the error shapes.
UPLOAD = "/v1/documents/upload"
MCP = "/mcp"


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute of an app, through the routers it includes (FastAPI keeps an included
    router whole, behind one entry of app.routes). The routers here have no prefix."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)
