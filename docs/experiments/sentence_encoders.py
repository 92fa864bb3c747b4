"""Could a cheaper sentence encoder stand in for the bundled one at ingest? On the sentences of the
held-out articles (every fourth of the shared half), as the index embeds them (title first), the
mean cosine with the full model's vectors of: the int8 encoder (GROUNDQA_RUNTIME=onnx-int8, which
loses 0.4-0.5 point of answer_hit), and the named layers of the bundled MiniLM (e.g. 0,5) trained
to give the full vectors (squared error on the other articles' sentences), after each epoch.
Arguments: layers, epochs, learning rate. Seed 0."""

import copy
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from groundqa.eval.data import load_squad
from groundqa.index.config import prepare_process
from groundqa.index.index import vector_input
from groundqa.index.model import Embedder, bundled_model_dir
from groundqa.index.text import sentences

layers = [int(x) for x in sys.argv[1].split(",")] if len(sys.argv) > 1 else [0, 5]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 3e-4
prepare_process()
torch.manual_seed(0)
random.seed(0)
torch.set_num_threads(2)

articles = load_squad(Path("../shared/data/squad/dev-v1.1-even-articles.json")).articles


def sentence_inputs(chosen: list) -> list[str]:  # type: ignore[type-arg]
    return [vector_input(a.title, a.text[s.start : s.end]) for a in chosen for s in sentences(a.text)]


train = sentence_inputs([a for i, a in enumerate(articles) if i % 4])
test = sentence_inputs(articles[::4])[:1500]
print(f"{len(train)} training sentences, {len(test)} held-out", flush=True)
int8 = (Embedder(runtime="onnx").embed(test) * Embedder(runtime="onnx-int8").embed(test)).sum(axis=1)
print(f"int8 encoder: cosine {int8.mean():.4f} (5th percentile {np.percentile(int8, 5):.4f})", flush=True)
full = SentenceTransformer(str(bundled_model_dir()), device="cpu")
target_train = torch.tensor(full.encode(train, batch_size=64, normalize_embeddings=True))
target_test = full.encode(test, batch_size=64, normalize_embeddings=True)

small = copy.deepcopy(full)
bert = small[0].auto_model
bert.encoder.layer = torch.nn.ModuleList([bert.encoder.layer[i] for i in layers])
bert.config.num_hidden_layers = len(layers)


def encode(texts: list[str]) -> torch.Tensor:
    return torch.nn.functional.normalize(small(small.tokenize(texts))["sentence_embedding"], dim=-1)


def held_out() -> np.ndarray:
    small.eval()
    with torch.no_grad():
        vectors = np.concatenate([encode(test[i : i + 64]).numpy() for i in range(0, len(test), 64)])
    return (vectors * target_test).sum(axis=1)


began = time.perf_counter()
cosine = held_out()
small_s = time.perf_counter() - began
began = time.perf_counter()
full.encode(test, batch_size=64)
full_s = time.perf_counter() - began
print(f"layers {layers}, untrained: cosine {cosine.mean():.4f}; {small_s:.1f} s, all six {full_s:.1f} s")
optimizer = torch.optim.AdamW(small.parameters(), lr=rate)
order = list(range(len(train)))
for epoch in range(epochs):
    small.train()
    random.shuffle(order)
    for at in range(0, len(order), 32):
        batch = order[at : at + 32]
        loss = ((encode([train[j] for j in batch]) - target_train[batch]) ** 2).sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    cosine = held_out()
    low = np.percentile(cosine, 5)
    print(f"epoch {epoch}: held-out cosine {cosine.mean():.4f} (5th percentile {low:.4f})", flush=True)
