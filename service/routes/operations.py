"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from groundqa.service.deps import IndexDep, MetricsDep
from groundqa.service.schemas import errors

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
def readyz(index: IndexDep) -> dict[str, str | int]:
    index.reader()  # opens (and checks) every segment of the latest state: damage is a 503
    docs, passages = index.counts()
    return {"status": "ready", "documents": docs, "passages": passages}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(metrics: MetricsDep) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
