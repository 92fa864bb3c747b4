"""Prometheus metrics, one registry per app, and the middleware that observes each request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from groundqa.service.guards import refuse


class Metrics:
    def __init__(self, index: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "groundqa_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "groundqa_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.query_seconds = Histogram(
            "groundqa_query_seconds",
            "Search latency inside the service, by mode and by face (query, openai, mcp)",
            ["mode", "face"],
            registry=self.registry,
        )
        # Writes past their checks, embedding or committing: a stopping server cuts these short.
        self.writes = Gauge(
            "groundqa_writes_in_progress", "Document writes in progress", registry=self.registry
        )
        documents = Gauge("groundqa_documents", "Documents in the index", registry=self.registry)
        passages = Gauge("groundqa_passages", "Passages in the index", registry=self.registry)
        documents.set_function(lambda: index().counts()[0] if index() else 0)
        passages.set_function(lambda: index().counts()[1] if index() else 0)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


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
            await refuse(
                send, status, "the server stopped before this request finished; send it again", scope
            )
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - began)
