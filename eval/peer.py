"""txtai, the peer: its Embeddings over our passages with the same model, asked the same questions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from index.text import Passage

PEER_MODES = {"txtai-dense": {}, "txtai-hybrid": {"hybrid": True}}


class TxtaiPeer:
    def __init__(self, model_dir: Path, passages: list[Passage]) -> None:
        try:
            from txtai import Embeddings
        except ImportError as exc:
            from eval.data import DataError

            raise DataError("--peer txtai needs txtai: pip install 'groundqa[peer]'") from exc
        self.passages = passages
        self.engines = {}
        rows = [(i, p.text, None) for i, p in enumerate(passages)]
        for mode, extra in PEER_MODES.items():
            engine = Embeddings({"path": str(model_dir), "content": False, **extra})
            engine.index(rows)
            self.engines[mode] = engine

    def ask(self, question: str, k: int, mode: str) -> dict[str, Any]:
        found = self.engines[mode].search(question, limit=k)
        passages = []
        for rank, (row, score) in enumerate(found, start=1):
            p = self.passages[int(row)]
            passages.append(
                {
                    "rank": rank,
                    "doc_id": p.doc_id,
                    "start": p.start,
                    "end": p.end,
                    "text": p.text,
                    "score": float(score),
                }
            )
        return {"question": question, "mode": mode, "k": k, "answer": None, "passages": passages}
