"""Model cards (``models/<name>.md``): one layout for every shipped network, filled from its manifest
entry (files, hashes, inputs, outputs, training record) and the text and metrics its trainer supplies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Shared by every network trained on the generator's studies.
SYNTHETIC_LIMITS = (
    "Trained on our synthetic phantom only: it has not seen real patients, implants, severe "
    "deformity beyond the generator's ranges, paediatric spines or post-operative anatomy. Use the "
    "training code on a site's own annotated studies before clinical use. Not a medical device."
)


@dataclass(frozen=True)
class CardText:
    """What a trainer says about one network.

    Attributes:
        purpose: what the network is and does (architecture, paper section).
        training_data: which studies it learned from.
        command: the command that trains it (flags included).
        metrics: Markdown sections (heading + how measured + table); empty before evaluation.
        intended_use: where it sits in spine-map.
        limits: what it must not be trusted with.
    """

    purpose: str
    training_data: str
    command: str
    metrics: Sequence[str]
    intended_use: str
    limits: str = SYNTHETIC_LIMITS


def _wall_time(training: dict) -> str:
    """Training wall time; a run that pretrains a part first (``pretrain_s``, e.g. the cancer encoder)
    counts it, since ``wall_s`` covers only the main loop."""
    wall_min = training.get("wall_s", float("nan")) / 60
    if "pretrain_s" not in training:
        return f"{wall_min:.1f} min"
    pretrain_min = training["pretrain_s"] / 60
    return f"{wall_min + pretrain_min:.1f} min ({pretrain_min:.1f} min pretraining, {wall_min:.1f} min main loop)"


def write_card(models: Path, name: str, text: CardText) -> Path:
    """Write ``models/<name>.md`` from the manifest entry of ``name`` and ``text``."""
    entry = json.loads((models / "manifest.json").read_text())["models"][name]
    training = entry.get("training", {})
    sections = [
        f"# {name}",
        text.purpose,
        "## Files",
        f"- `{entry['onnx']}` (ONNX opset {entry['opset']}, what the app runs) sha256 `{entry['sha256']['onnx']}`\n"
        f"- `{entry['torchscript']}` (TorchScript) sha256 `{entry['sha256']['torchscript']}`\n"
        f"- export check: max |torch − ONNX| = {entry['export_max_abs_difference']['onnx']:.1e}, "
        f"|torch − TorchScript| = {entry['export_max_abs_difference']['torchscript']:.1e}",
        "## Inputs",
        "\n".join(f"- `{k}`: {v}" for k, v in entry["inputs"].items()),
        "## Outputs",
        "\n".join(f"- `{k}`: {v}" for k, v in entry["outputs"].items()),
        "## Training data",
        text.training_data,
        "## Training",
        f"Configuration: `{json.dumps(training.get('config', {}))}`; wall time {_wall_time(training)} on 2 CPU cores. "
        f"Command: `{text.command}` "
        "(README, Training, lists the data commands).",
        *text.metrics,
        "## Intended use",
        text.intended_use,
        "## Limits",
        text.limits,
    ]
    path = models / f"{name}.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path
