"""Export trained networks for the runtime: ONNX (what the app runs) and TorchScript, plus the manifest.

Every exported model is checked against its torch outputs (ONNX through onnxruntime, TorchScript by
loading it back) before it is recorded in ``models/manifest.json`` with its sha256, opset, input and
output shapes and the training record; the model card ``models/<name>.md`` is written alongside.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

#: ONNX opset of every exported model (recorded per model in the manifest).
ONNX_OPSET = 17

#: Largest |torch − exported| difference accepted at export.
EXPORT_TOLERANCE = 1e-4

MANIFEST_SCHEMA = "spine-map-models/1"


@dataclass(frozen=True)
class ExportSpec:
    """What to export: ``name`` (file stem), an example input, tensor names and their dynamic axes."""

    name: str
    example: torch.Tensor
    input_name: str
    output_name: str
    dynamic_axes: Mapping[str, Mapping[int, str]]
    input_doc: str
    output_doc: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_model(model: nn.Module, spec: ExportSpec, folder: Path) -> dict[str, Any]:
    """Write ``<name>.onnx`` and ``<name>.ts``, verify both, return the manifest entry (no card yet)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    onnx_path, script_path = folder / f"{spec.name}.onnx", folder / f"{spec.name}.ts"
    with torch.no_grad():
        expected = model(spec.example).numpy()
        torch.onnx.export(
            model, (spec.example,), str(onnx_path), input_names=[spec.input_name], output_names=[spec.output_name],
            dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()}, opset_version=ONNX_OPSET, dynamo=False,
        )
        torch.jit.save(torch.jit.trace(model, (spec.example,)), str(script_path))
        scripted = torch.jit.load(str(script_path))(spec.example).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    exported = session.run(None, {spec.input_name: spec.example.numpy()})[0]
    differences = {"onnx": float(np.abs(exported - expected).max()), "torchscript": float(np.abs(scripted - expected).max())}
    for runtime, difference in differences.items():
        if difference > EXPORT_TOLERANCE:
            raise RuntimeError(f"{spec.name}: {runtime} differs from torch by {difference:.2e} (> {EXPORT_TOLERANCE})")
    return {
        "onnx": onnx_path.name,
        "torchscript": script_path.name,
        "sha256": {"onnx": sha256_of(onnx_path), "torchscript": sha256_of(script_path)},
        "card": f"{spec.name}.md",
        "opset": ONNX_OPSET,
        "inputs": {spec.input_name: spec.input_doc},
        "outputs": {spec.output_name: spec.output_doc},
        "export_max_abs_difference": differences,
    }


def update_manifest(folder: Path, name: str, entry: Mapping[str, Any]) -> Path:
    """Add or replace one model in ``folder/manifest.json`` (other models are kept)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"schema": MANIFEST_SCHEMA, "models": {}}
    manifest["models"][name] = dict(entry)
    manifest["models"] = dict(sorted(manifest["models"].items()))
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
