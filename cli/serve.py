"""`groundqa serve` (uvicorn, with the server's guards) and `groundqa mcp` (stdio)."""

from __future__ import annotations

import argparse
import os
import sys

from groundqa.cli.commands import open_existing
from groundqa.index.errors import UsageError
from groundqa.index.index import Index
from groundqa.ingest.sources import article_sources
from groundqa.service.config import Settings


def run_mcp(args: argparse.Namespace, settings: Settings) -> int:
    """The MCP server on stdin and stdout; the index opens at the first tool call, and writes are
    allowed (the local user owns the index). Citations link to GROUNDQA_PUBLIC_URL's server when
    it is set, else they are their text and offsets alone."""
    from groundqa.service import auth, mcp_server
    from groundqa.service.prometheus import Metrics
    from groundqa.service.search import Searcher

    opened: list[Index] = []

    def index() -> Index:
        if not opened:
            opened.append(open_existing(settings))
        return opened[0]

    searcher = Searcher(index, Metrics(lambda: opened[0] if opened else None))
    # Links only to a server that is known to run: GROUNDQA_PUBLIC_URL's.
    mcp_server.build(searcher, auth.allow_all, settings.public_base()).run()
    return 0


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from groundqa.service.app import GRACEFUL_SHUTDOWN
    from groundqa.service.guards import guarded_protocol

    updates = {k: v for k, v in (("seed", args.seed), ("workers", args.workers)) if v is not None}
    settings = settings.model_copy(update=updates)
    if settings.seed:
        article_sources([settings.seed])  # a missing seed is one line here, not an error in each worker
    workers = settings.worker_count()
    if workers < 1:
        raise UsageError(f"--workers is {workers}; give a positive number or auto")
    kind = settings.qdrant_folder()
    if workers > 1 and kind:
        raise UsageError(
            f"{kind}:DIR is opened by one process at a time: use --workers 1, or a Qdrant server"
        )
    _descriptors_for(settings.max_connections)
    # Each worker builds the app from the environment: the flags go there first.
    os.environ.update(
        GROUNDQA_INDEX_DIR=str(settings.index_dir),
        GROUNDQA_HOST=settings.host,
        GROUNDQA_PORT=str(settings.port),
        GROUNDQA_WORKERS=str(workers),
        **({"GROUNDQA_SEED": settings.seed} if settings.seed else {}),
    )
    writes = "on (bearer key)" if settings.api_key is not None else "off (GROUNDQA_API_KEY is not set)"
    where = f"http://{settings.host}:{settings.port}"
    print(
        f"groundqa: serving {settings.where()} on {where} ({workers} worker{'s' * (workers > 1)}); "
        f"HTTP writes {writes}",
        file=sys.stderr,
    )
    uvicorn.run(
        "groundqa.service.app:app_from_environment",
        factory=True,
        workers=workers,
        http=guarded_protocol(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    return 0


def _descriptors_for(connections: int) -> None:
    """Room for the connections a worker may hold, and its files: the soft limit raised toward
    the hard one (workers inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if soft < want:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard)
        )
    if hard != resource.RLIM_INFINITY and hard < want:
        print(
            f"groundqa: the process may open {hard} files: fewer than GROUNDQA_MAX_CONNECTIONS "
            f"({connections}) + 256; lower it or raise the limit (ulimit -n)",
            file=sys.stderr,
        )


def workers_arg(value: str) -> int | str:
    """--workers: a number, or auto."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number nor auto") from None
