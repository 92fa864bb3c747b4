"""txtai, the peer: its Embeddings over our passages with the same model, asked the same questions."""

from __future__ import annotations

from pathlib import Path

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
