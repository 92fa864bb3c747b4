"""Prometheus metrics, one registry per app."""

from __future__ import annotations

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
            "groundqa_query_seconds", "Search latency inside the service", ["mode"], registry=self.registry
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
