"""A file becomes a document: one function for the upload route and the job that runs an upload
in the background, so both read, bound and count the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from prometheus_client import Gauge

from groundqa.index.index import Index, Progress
from groundqa.ingest.isolation import parse_slot
from groundqa.ingest.limits import FileLimits
from groundqa.ingest.sources import SourceFile, article_input
from groundqa.service.schemas import Uploaded

# Told of each stage as it begins ("reading" the pages, "embedding" the texts); gives the
# stage's progress.
Stages = Callable[[str], Progress | None]


def store_file(
    index: Index,
    name: str,
    data: BinaryIO,
    limits: FileLimits,
    writes: Gauge,
    title: str | None = None,
    doc_id: str | None = None,
    replace: bool = False,
    stages: Stages = lambda stage: None,
) -> Uploaded:
    """The file's text extracted (in a child process, under the limits) and stored with its
    original, counted in writes while it is embedded and committed: what an upload answers. The
    file is read into memory only once a parse slot is free: uploads waiting for one hold none."""
    with parse_slot(limits):
        article = SourceFile(name, data.read())
        item, found = article_input(article, limits, title, doc_id, progress=stages("reading"), slotted=True)
    with writes.track_inprogress():
        added = index.add_many([item], replace=replace, progress=stages("embedding"))[0]
    return Uploaded.of(added.document, state=added.state, warnings=list(found.warnings))
