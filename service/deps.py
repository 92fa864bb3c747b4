"""What routes depend on: the loaded index and the settings, in one place."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from groundqa.index.errors import IndexBusy
from groundqa.index.index import Index
from groundqa.service.config import Settings, get_settings


def loaded(app: FastAPI) -> Index:
    """The index, or IndexBusy (503 over HTTP, a tool error in MCP) saying why there is none yet."""
    index: Index | None = app.state.index
    if index is None:
        error = app.state.load_error
        raise IndexBusy(f"the index failed to load: {error}" if error else "the index is loading; try again")
    return index


async def get_index(request: Request) -> Index:
    """(async: FastAPI runs a plain function dependency on a thread of its pool.)"""
    return loaded(request.app)


IndexDep = Annotated[Index, Depends(get_index)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
