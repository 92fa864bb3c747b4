"""How far the int8 encoder's sentence vectors are from the fp32 ones (cosine), on sentences of the
held-out articles (every fourth of the shared half), as the index embeds them (title first)."""

from pathlib import Path

import numpy as np

from groundqa.eval.data import load_squad
from groundqa.index.config import prepare_process
from groundqa.index.index import vector_input
from groundqa.index.model import Embedder
from groundqa.index.text import sentences

prepare_process()
articles = load_squad(Path("../shared/data/squad/dev-v1.1-even-articles.json")).articles
texts = [
    vector_input(a.title, a.text[s.start : s.end]) for a in articles[::4] for s in sentences(a.text)[:60]
]
full = Embedder(runtime="onnx").embed(texts)
int8 = Embedder(runtime="onnx-int8").embed(texts)
cosine = (full * int8).sum(axis=1)
print(
    f"{len(texts)} sentences: cosine mean {cosine.mean():.4f}, 5th percentile"
    f" {np.percentile(cosine, 5):.4f}, lowest {cosine.min():.4f}"
)
