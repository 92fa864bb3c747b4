"""Train the frozen word-piece codebook (index/data/residual-2bit.npz) on a SQuAD file.

    .venv/bin/python docs/experiments/train_codebook.py ../shared/data/squad/dev-v1.1-even-articles.json

The word pieces of every paragraph as ingest embeds them (title first, the title's pieces left
out), 8,192 centroids. Run once; an index records the codebook's sha256, so a new codebook means
new indexes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from groundqa.index import codec
from groundqa.index.config import prepare_process
from groundqa.index.index import vector_input
from groundqa.index.model import Embedder

CENTROIDS = 8192


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("squad", type=Path)
    parser.add_argument("--out", type=Path, default=codec.PATH)
    args = parser.parse_args(argv)
    prepare_process()
    embedder = Embedder()
    data = json.loads(args.squad.read_text(encoding="utf-8"))
    texts = [(a["title"].replace("_", " "), p["context"]) for a in data["data"] for p in a["paragraphs"]]
    pieces = []
    for start in range(0, len(texts), 64):
        batch = texts[start : start + 64]
        _, found = embedder.embed_with_pieces([vector_input(title, text) for title, text in batch])
        for (title, _), f in zip(batch, found, strict=True):
            pieces.append(f.vectors[f.spans[:, 0] >= len(vector_input(title, ""))])
    vectors = np.concatenate(pieces)
    trained = codec.train(vectors, CENTROIDS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, centroids=trained["centroids"], cutoffs=trained["cutoffs"], weights=trained["weights"])
    print(f"{len(vectors)} word pieces of {len(texts)} paragraphs -> {CENTROIDS} centroids in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
