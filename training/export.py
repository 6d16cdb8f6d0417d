"""Export trained networks for the runtime: ONNX (what the app runs) and TorchScript, plus the manifest.

Every exported model is checked against its torch outputs (ONNX through onnxruntime, TorchScript by
loading it back) before it is recorded in ``models/manifest.json`` with its sha256, opset, input and
output shapes and the training record; the model card ``models/<name>.md`` is written alongside.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSpec:
    """What to export.

    * ``name``: file stem and manifest key;
    * ``examples``: input name → example tensor, in the order of ``model.forward``'s arguments (the
      ONNX graph's inputs get these names, in this order);
    * ``output_name``: the one output's name;
    * ``dynamic_axes``: tensor name (inputs and output) → axis index → symbolic dimension name;
    * ``input_docs``: input name → shape/dtype/meaning (one per example); ``output_doc`` likewise.
    """

    name: str
    examples: Mapping[str, torch.Tensor]
    output_name: str
    dynamic_axes: Mapping[str, Mapping[int, str]]
    input_docs: Mapping[str, str]
    output_doc: str

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError(f"{self.name}: no example input")
        if list(self.input_docs) != list(self.examples):
            raise ValueError(f"{self.name}: input docs {list(self.input_docs)} do not match the inputs {list(self.examples)}")
        unknown = set(self.dynamic_axes) - {*self.examples, self.output_name}
        if unknown:
            raise ValueError(f"{self.name}: dynamic axes for unknown tensors {sorted(unknown)}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _unfused_attention() -> Iterator[None]:
    """Trace transformer layers through their plain ops: in eval mode without gradients torch runs
    ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` as fused kernels
    (``aten::_transformer_encoder_layer_fwd``) that have no ONNX export; the plain path computes the same."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def export_model(model: nn.Module, spec: ExportSpec, folder: Path) -> dict[str, Any]:
    """Write ``<name>.onnx`` and ``<name>.ts``, verify both on the examples, return the manifest entry (no card yet).

    Raises:
        RuntimeError: ONNX (onnxruntime, CPU) or TorchScript output differs from torch by more than
            :data:`EXPORT_TOLERANCE`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    onnx_path, script_path = folder / f"{spec.name}.onnx", folder / f"{spec.name}.ts"
    inputs = tuple(spec.examples.values())
    with torch.no_grad():
        expected = model(*inputs).numpy()
    with torch.no_grad(), _unfused_attention():
        torch.onnx.export(
            model, inputs, str(onnx_path), input_names=list(spec.examples), output_names=[spec.output_name],
            dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()}, opset_version=ONNX_OPSET, dynamo=False,
        )
        torch.jit.save(torch.jit.trace(model, inputs), str(script_path))
        scripted = torch.jit.load(str(script_path))(*inputs).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    exported = session.run(None, {name: example.numpy() for name, example in spec.examples.items()})[0]
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
        "inputs": dict(spec.input_docs),
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


def export_checkpoints(networks: Sequence[tuple[nn.Module, ExportSpec]], work: Path, models: Path, trained_on: str) -> None:
    """Export trained networks into ``models`` and record each in its manifest.

    Each network gets the weights of ``work/<spec.name>.pt`` (the best checkpoint its trainer kept)
    and, where ``work/<spec.name>.history.json`` exists, its training record (configuration,
    validation scores, wall time; the per-step losses stay in ``work``). A network without a
    checkpoint in ``work`` keeps the files and manifest entry it has in ``models`` (e.g. the labeller
    retrained beside the shipped detector, or the Bilsky graders beside the shipped canal detector).

    Raises:
        FileNotFoundError: when ``work`` holds none of the networks' checkpoints.
    """
    trained = []
    for network, spec in networks:
        if (work / f"{spec.name}.pt").exists():
            trained.append((network, spec))
        else:
            logger.info("%s: no checkpoint in %s, the one in %s is kept", spec.name, work, models)
    if not trained:
        raise FileNotFoundError(f"no checkpoint ({', '.join(f'{spec.name}.pt' for _, spec in networks)}) in {work}")
    for network, spec in trained:
        network.load_state_dict(torch.load(work / f"{spec.name}.pt"))
        entry = export_model(network, spec, models)
        entry["trained_on"] = trained_on
        history_path = work / f"{spec.name}.history.json"
        if history_path.exists():
            history = json.loads(history_path.read_text())
            entry["training"] = {k: v for k, v in history.items() if k != "train_loss"}
        update_manifest(models, spec.name, entry)
        logger.info("exported %s (%s)", spec.name, entry["sha256"]["onnx"][:12])
