"""Background jobs (an upload sent with Prefer: respond-async): one, and the recent ones. They
name files and documents, so reading them needs the key too."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as FastAPIPath

from groundqa.service.auth import WriteKey
from groundqa.service.deps import JobsDep
from groundqa.service.schemas import JobList, JobOut, errors

router = APIRouter(tags=["documents"])


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobOut,
    dependencies=[WriteKey],
    responses=errors(401, 403, 404, 422),
)
def get_job(job_id: Annotated[str, FastAPIPath(pattern="^[0-9a-f]{32}$")], jobs: JobsDep) -> JobOut:
    """A background job: its state, its progress, and the upload's result or error."""
    return JobOut.of(jobs.get(job_id))


@router.get(
    "/v1/jobs",
    response_model=JobList,
    dependencies=[WriteKey],
    responses=errors(401, 403, 422),
)
def list_jobs(jobs: JobsDep) -> JobList:
    """The recent jobs, newest first."""
    return JobList(jobs=[JobOut.of(j) for j in jobs.recent()])
