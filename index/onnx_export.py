"""The encoder exported to ONNX from the checked weights, once, and kept with its hash.

`exported()` returns the graph for a weights file, exporting it on first use (torch's exporter,
then onnxruntime's transformer optimizer, about 15 s) into the cache folder, one folder per
weights' sha256, beside a record of the file's own sha256. Each later load hashes the file and
compares it with the record, as the weights are checked against their pinned hashes, so a damaged
or altered export is refused, not run. The int8 variant is the fp32 graph with its weights
quantized dynamically (onnxruntime). Nothing is downloaded: the graph comes from the weights on
disk.
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

OPSET = 17
# Named for the graph's make: a cache made by an earlier version (model.onnx, unfused) is left
# alone and this one made beside it.
FILES = {"fp32": "encoder-fused.onnx", "int8": "encoder-fused-int8.onnx"}


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
    """The transformer alone (last hidden state): pooling and normalizing are done in numpy.

    Exported with the plain attention and the TorchScript exporter, whose graph onnxruntime's
    transformer optimizer recognizes: each layer's attention becomes one fused Attention node
    (and the embeddings and layer norms fused ops). On 2 cores a batch of 64 passages of 200
    word pieces took 3.19 s against 5.03 s unfused, and a question 7.2 ms against 10.8 ms; the
    vectors differ by at most 5e-6 (tests/test_export.py holds them to torch's)."""
    _check_pooling(model_dir)
    import torch
    from onnxruntime.transformers import optimizer
    from transformers import AutoConfig, AutoModel

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

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    example = torch.tensor([[101, 7592, 2088, 1012, 102], [101, 7592, 102, 0, 0]])
    mask = (example > 0).long()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    plain = path.with_name(f"{path.name}.{os.getpid()}.plain")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notices: the result is checked
            torch.onnx.export(
                Encoder(model.eval()),
                (example, mask, torch.zeros_like(example)),
                str(plain),
                input_names=names,
                output_names=["last_hidden_state"],
                opset_version=OPSET,
                dynamo=False,
                dynamic_axes={name: {0: "batch", 1: "length"} for name in names},
            )
            fused = optimizer.optimize_model(
                str(plain),
                model_type="bert",
                num_heads=config.num_attention_heads,
                hidden_size=config.hidden_size,
            )
        fused.save_model_to_file(str(tmp))
        tmp.replace(path)
    finally:
        plain.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _quantize(fp32: Path, path: Path) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    # The fused graph's com.microsoft nodes have no shape inference: their outputs are float.
    quantize_dynamic(
        str(fp32),
        str(tmp),
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
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
