"""txtai, the peer: its Embeddings over our passages with the same model, asked the same questions;
and its API served as `groundqa serve` serves ours, for the benchmark:

    CONFIG=txtai.yml python -m groundqa.eval.peer --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from groundqa.eval.data import DataError
from groundqa.eval.metrics import Located
from groundqa.eval.runner import Reply
from groundqa.index.text import Passage

PEER_MODES = {"txtai-dense": {}, "txtai-hybrid": {"hybrid": True}}


class TxtaiPeer:
    def __init__(self, model_dir: Path, passages: list[Passage]) -> None:
        try:
            from txtai import Embeddings
        except ImportError as exc:
            raise DataError("--peer txtai needs txtai: pip install 'groundqa[peer]'") from exc
        self.passages = passages
        self.engines = {}
        rows = [(i, p.text, None) for i, p in enumerate(passages)]
        for mode, extra in PEER_MODES.items():
            engine = Embeddings({"path": str(model_dir), "content": False, **extra})
            engine.index(rows)
            self.engines[mode] = engine

    def ask(self, question: str, k: int, mode: str) -> Reply:
        """txtai gives passages only: no answer sentence."""
        found = self.engines[mode].search(question, limit=k)
        located = [self.passages[int(row)] for row, _ in found]
        return Reply([Located(p.doc_id, p.start, p.end) for p in located], None, None)


class NoDelayH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with Nagle's algorithm off on every connection, as groundqa's
    own (service/guards.py, GuardedH11): with several workers uvicorn binds the socket itself, and
    asyncio then leaves Nagle on (a keep-alive client waits 40 ms for each answer)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def serve_peer(port: int, workers: int) -> None:
    """txtai's API (its CONFIG file names the index) with groundqa serve's server settings: the
    same uvicorn, protocol, event loop and worker count."""
    import uvicorn

    protocol = "groundqa.eval.peer:NoDelayH11"  # by name: each worker imports it
    options: dict[str, Any] = {"workers": workers, "http": protocol, "log_level": "warning"}
    uvicorn.run("txtai.api:app", host="127.0.0.1", port=port, **options)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="txtai's API, served as groundqa serve is")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    serve_peer(args.port, args.workers)
