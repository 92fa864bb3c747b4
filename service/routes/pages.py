"""The chat page, its files, and the API reference (Swagger UI from fastapi-offline: nothing from a CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


def mount_static(app: FastAPI) -> None:
    import fastapi_offline  # ships Swagger UI 5, which reads OpenAPI 3.1 (4.x cannot)

    swagger = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/static/swagger", StaticFiles(directory=swagger), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


@router.get("/")
def chat_page() -> FileResponse:
    return FileResponse(STATIC / "index.html")

@router.get("/favicon.ico")
def favicon() -> FileResponse:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

@router.get("/docs")
def api_reference() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="groundqa API",
        swagger_js_url="/static/swagger/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger/swagger-ui.css",
        swagger_favicon_url="/static/swagger/favicon.png",
    )


