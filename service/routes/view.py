"""The citation view: GET /view/{doc_id}?start=&end= shows the document with the cited span
highlighted (a <mark id="cited">, which the link's #cited fragment scrolls to), its title, page
and offsets, and a link to the original file at that page. Rendered on the server and sent with
a policy that runs no script at all: nothing in a document runs in the service's origin."""

from __future__ import annotations

from html import escape
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse

from groundqa.index.errors import DocumentNotFound, GroundQAError, IndexBusy
from groundqa.service.deps import ServicesDep
from groundqa.service.fields import DocId

POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
router = APIRouter()


@router.get("/view/{doc_id}", include_in_schema=False, response_class=HTMLResponse)
def view(
    services: ServicesDep,
    doc_id: Annotated[DocId, Path()],
    start: Annotated[int, Query(ge=0)],
    end: Annotated[int, Query(ge=0)],
) -> HTMLResponse:
    try:
        doc, text = services.loaded().document(doc_id)
    except DocumentNotFound:
        return _page("Not found", f"No document has the doc_id {doc_id!r}.", 404)
    except IndexBusy as exc:
        return _page("Not ready", str(exc), 503)
    except GroundQAError as exc:
        return _page("Cannot show this", str(exc), 422)
    if not start < end <= len(text):
        detail = f"The span {start}-{end} does not lie in {doc.title!r}, which has {len(text)} characters."
        return _page("No such span", detail, 422)
    page = doc.page_at(start)
    source = f"/v1/documents/{quote(doc_id)}/source" + (f"#page={page}" if page else "")
    where = f"p. {page}, " if page else ""
    body = f"""<header class="head">
  <p class="crumbs"><a href="/">groundqa</a></p>
  <h1>{escape(doc.title)}</h1>
  <p class="where">{where}characters {start}–{end} ·
    <a href="{escape(source)}">the original file{f" at p. {page}" if page else ""}</a></p>
  <blockquote class="quote">{escape(text[start:end])}</blockquote>
</header>
<main><article class="text">{escape(text[:start])}<mark id="cited">{escape(text[start:end])}</mark>\
{escape(text[end:])}</article></main>"""
    return _page(f"{doc.title} ({where}characters {start}–{end})", body, 200, raw=True)


def _page(title: str, body: str, status: int, raw: bool = False) -> HTMLResponse:
    content = body if raw else f'<main class="head"><h1>{escape(title)}</h1><p>{escape(body)}</p></main>'
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="stylesheet" href="/static/view.css">
</head>
<body>
{content}
</body>
</html>
"""
    headers = {
        "Content-Security-Policy": POLICY,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }
    return HTMLResponse(html, status_code=status, headers=headers)
