"""The documents: add, upload (at once, or as a job), replace, list, read, the original file,
delete. Every change needs the key (WriteKey)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Header, HTTPException, Response, UploadFile
from fastapi import Path as FastAPIPath
from fastapi.responses import JSONResponse

from groundqa.index.index import DocumentInput
from groundqa.ingest.formats import CONTENT_TYPES
from groundqa.ingest.sources import clean_name
from groundqa.service.auth import WriteKey
from groundqa.service.deps import IndexDep, JobsDep, MetricsDep, SettingsDep
from groundqa.service.fields import DocId
from groundqa.service.routes import UPLOAD
from groundqa.service.schemas import (
    WRITE_ERRORS,
    BatchItem,
    BatchResult,
    DocumentBatch,
    DocumentIn,
    DocumentList,
    DocumentOut,
    DocumentText,
    DocumentUpdate,
    JobOut,
    Uploaded,
    errors,
    stored,
)
from groundqa.service.uploads import store_file

router = APIRouter(tags=["documents"])


@router.post(
    "/v1/documents",
    status_code=201,
    response_model=DocumentOut,
    dependencies=[WriteKey],
    responses=stored(200, "already stored: nothing changed") | errors(409, *WRITE_ERRORS),
)
def add_document(body: DocumentIn, index: IndexDep, metrics: MetricsDep, response: Response) -> DocumentOut:
    with metrics.writes.track_inprogress():
        added = index.add(body.text, title=body.title, doc_id=body.doc_id, source=body.source)
    if not added.created:
        response.status_code = 200
    return DocumentOut.of(added.document)


@router.post(
    UPLOAD,
    status_code=201,
    response_model=Uploaded,
    dependencies=[WriteKey],
    responses=stored(200, "already stored (state unchanged), or replaced")
    | {202: {"model": JobOut, "description": "with Prefer: respond-async: the job, at Location"}}
    | errors(409, 429, *WRITE_ERRORS),
)
def upload_document(
    file: Annotated[
        UploadFile, File(description="a web page, PDF, Word file (.docx), text or Markdown file")
    ],
    index: IndexDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    jobs: JobsDep,
    response: Response,
    doc_id: Annotated[DocId | None, Form(description="the file name without its suffix by default")] = None,
    title: Annotated[str | None, Form(max_length=500, description="the file's own title by default")] = None,
    replace: Annotated[bool, Form(description="replace a document whose doc_id holds other text")] = False,
    prefer: Annotated[
        str | None,
        Header(description="respond-async: answer 202 at once and read the file in a job (RFC 7240)"),
    ] = None,
) -> Any:
    """Store an article file: its text is extracted (in a child process, under a time limit)
    and the original is kept, served by GET /v1/documents/{doc_id}/source. With `Prefer:
    respond-async`, a job does it: 202 with the job, whose progress GET /v1/jobs/{id} gives."""
    if "respond-async" in [p.strip().lower() for p in (prefer or "").split(",")]:
        job = jobs.submit(clean_name(file.filename), file.file, doc_id, title, replace)
        headers = {"Location": f"/v1/jobs/{job.id}", "Preference-Applied": "respond-async"}
        return JSONResponse(JobOut.of(job).model_dump(mode="json"), status_code=202, headers=headers)
    limits = settings.file_limits()
    name = clean_name(file.filename)
    stored = store_file(index, name, file.file, limits, metrics.writes, title, doc_id, replace)
    response.status_code = 201 if stored.state == "added" else 200
    return stored


@router.post(
    "/v1/documents/batch",
    response_model=BatchResult,
    dependencies=[WriteKey],
    responses=errors(409, *WRITE_ERRORS),
)
def add_documents(
    body: DocumentBatch, index: IndexDep, settings: SettingsDep, metrics: MetricsDep
) -> BatchResult:
    if len(body.documents) > settings.max_batch_docs:
        raise HTTPException(
            413, f"the batch has {len(body.documents)} documents; the limit is {settings.max_batch_docs}"
        )
    items = [DocumentInput(d.text, d.title, d.doc_id, d.source) for d in body.documents]
    with metrics.writes.track_inprogress():
        done = [BatchItem.of_ingested(i) for i in index.add_many(items, replace=body.replace)]
    counts = {state: sum(d.state == state for d in done) for state in ("added", "replaced", "unchanged")}
    return BatchResult(documents=done, **counts)


@router.put(
    "/v1/documents/{doc_id}",
    response_model=DocumentOut,
    dependencies=[WriteKey],
    responses=stored(201, "created") | errors(*WRITE_ERRORS),
)
def put_document(
    doc_id: Annotated[DocId, FastAPIPath()],
    body: DocumentUpdate,
    index: IndexDep,
    metrics: MetricsDep,
    response: Response,
) -> DocumentOut:
    with metrics.writes.track_inprogress():
        added = index.add(body.text, title=body.title, doc_id=doc_id, source=body.source, replace=True)
    response.status_code = 201 if added.created else 200
    return DocumentOut.of(added.document)


@router.get("/v1/documents", response_model=DocumentList, responses=errors(503))
def list_documents(index: IndexDep) -> DocumentList:
    docs = index.documents()
    return DocumentList(documents=[DocumentOut.of(d) for d in docs], count=len(docs))


@router.get(
    "/v1/documents/{doc_id}",
    response_model=DocumentText,
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


@router.get(
    "/v1/documents/{doc_id}/source",
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


@router.delete(
    "/v1/documents/{doc_id}",
    status_code=204,
    dependencies=[WriteKey],
    responses=errors(404, *WRITE_ERRORS),
)
def delete_document(doc_id: Annotated[DocId, FastAPIPath()], index: IndexDep) -> Response:
    index.delete(doc_id)
    return Response(status_code=204)
