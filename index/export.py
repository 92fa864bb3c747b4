"""The encoder exported to ONNX from the checked weights, once, and kept with its hash.

`exported()` returns the graph for a weights file, exporting it on first use (torch.export, about
10 s) into the cache folder, one folder per weights' sha256, beside a record of the file's own
sha256. Each later load hashes the file and compares it with the record, as the weights are
checked against their pinned hashes, so a damaged or altered export is refused, not run. The
int8 variant is the fp32 graph with its weights quantized dynamically (onnxruntime).
Nothing is downloaded: the graph comes from the weights on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

from filelock import FileLock

from groundqa.index.errors import ModelError

OPSET = 18
FILES = {"fp32": "model.onnx", "int8": "model-int8.onnx"}


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def exported(model_dir: Path, weights_sha256: str, cache: Path, variant: str = "fp32") -> Path:
    folder = cache / weights_sha256[:16]
    path = folder / FILES[variant]
    record = path.with_suffix(".json")
    fp32 = exported(model_dir, weights_sha256, cache) if variant == "int8" else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(folder / "export.lock", timeout=600):  # one process exports, others wait
            if not path.exists():
                if fp32 is not None:
                    _quantize(fp32, path)
                else:
                    _export(model_dir, path)
                with path.open("rb") as f:
                    os.fsync(f.fileno())
                meta = {"weights_sha256": weights_sha256, "sha256": sha256_file(path), "opset": OPSET}
                record.write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as exc:
        raise ModelError(
            f"cannot write the exported encoder to {folder}: {exc.strerror or exc}; "
            "set GROUNDQA_MODEL_CACHE to a folder you can write"
        ) from exc
    _check(path, record, weights_sha256)
    return path


def _check(path: Path, record: Path, weights_sha256: str) -> None:
    try:
        meta = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"the record {record} of the exported encoder is missing or damaged; delete {path.parent}"
        ) from exc
    got = sha256_file(path)
    if meta.get("weights_sha256") != weights_sha256 or meta.get("sha256") != got:
        raise ModelError(
            f"the exported encoder {path} has sha256 {got}, but its record says {meta.get('sha256')} "
            f"(from weights {meta.get('weights_sha256')}); it is damaged or altered: delete "
            f"{path.parent} to export it again"
        )


def _export(model_dir: Path, path: Path) -> None:
    """The transformer alone (last hidden state): pooling and normalizing are done in numpy."""
    _check_pooling(model_dir)
    import torch
    from transformers import AutoModel

    class Encoder(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state  # type: ignore[no-any-return]

    model = Encoder(AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval())
    example = torch.tensor([[101, 7592, 2088, 1012, 102], [101, 7592, 102, 0, 0]])
    mask = (example > 0).long()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
    shapes = {name: {0: batch, 1: length} for name in ("input_ids", "attention_mask", "token_type_ids")}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress and notices: the result is checked
        program = torch.onnx.export(
            model,
            (example, mask, torch.zeros_like(example)),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=shapes,
            verbose=False,
        )
    if program is None:
        raise ModelError("torch.onnx.export returned no program")
    program.save(str(tmp))
    tmp.replace(path)


def _quantize(fp32: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
    tmp.replace(path)


def _check_pooling(model_dir: Path) -> None:
    """The ONNX encoder pools by the mean and normalizes; other models need GROUNDQA_RUNTIME=torch."""
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    pooling = json.loads((model_dir / modules[kinds.index("Pooling")]["path"] / "config.json").read_text())
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
        raise ModelError(f"model modules {kinds} are not transformer, pooling; set GROUNDQA_RUNTIME=torch")
    if not pooling.get("pooling_mode_mean_tokens") or any(
        v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
    ):
        raise ModelError("the model does not pool by the mean of its word pieces; set GROUNDQA_RUNTIME=torch")
