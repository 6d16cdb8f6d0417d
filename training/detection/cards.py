"""Model cards (``models/<name>.md``) for the detector and labeller networks, from the manifest entry,
the training record and the detection evaluation (``docs/evaluation/detection.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.cards import CardText
from training.cards import write_card as write_model_card

#: What each network is for, and its limits; the numbers come from the manifest and evaluation.
PURPOSE: dict[str, str] = {
    "vertebra_detector": (
        "Vector-field-regression vertebral body detector (SpineNetV2 §3.1). MONAI FlexibleUNet "
        "(ResNet-10 encoder, U-Net decoder) run on every sagittal slice resampled to 1.5 mm pixels; "
        "outputs Gaussian heatmaps at the 4 body corners and the centroid plus, for each corner, a "
        "vector field pointing to its body's centroid (grouping)."
    ),
    "level_appearance": (
        "Level appearance network (SpineNetV2 §3.2): a 2D ResNet-10 (width ×0.5) over a 16-slice "
        "sagittal volume around one detected body, 3× its in-plane size and 2× its lateral extent, "
        "resampled to 112×112 (half the paper's 224×224, for CPU speed); 23 classes C3…S1."
    ),
    "level_context": (
        "Level context network (SpineNetV2 §3.2): a 1D MONAI UNet over the height-probability map "
        "(2 mm bins, caudal → cranial) that refines each body's level probabilities from its "
        "neighbours; decoded by a width-100 beam search with penalties for missed levels and "
        "transitional L6/T13, S2/C2 double detections relabelled."
    ),
}

TRAINING_DATA = (
    "Synthetic studies only, made by `python -m training generate` (training/synthetic): "
    "235 training studies (seeds 100000–100049 cervical, 110000–110049 thoracic, 120000–120059 lumbar, "
    "130000–130049 whole spine, each with sagittal T1, T2 and STIR; 140000–140024 CT with sagittal "
    "reformats) and 24 validation studies (seeds 800000–800023). Evaluation studies use seeds "
    "from 910000 and are never trained on. No patient data."
)

def _metrics_table(evaluation: dict[str, Any]) -> str:
    lines = ["| perturbation | field of view | sequences | studies | vertebrae | precision % | recall % | IDR % | LE mm |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, m in evaluation["table"].items():
        perturbation, fov, sequences = key.split("|")
        lines.append(f"| {perturbation} | {fov} | {sequences} | {m['studies']} | {m['vertebrae']} | "
                     f"{100 * m['precision']:.2f} | {100 * m['recall']:.2f} | {100 * m['idr']:.2f} | {m['le_mm']:.2f} |")
    return "\n".join(lines)


#: Training-config fields that are command-line flags of ``train-vertebrae``.
_CONFIG_FLAGS = {"steps": "--detector-steps", "patch_px": "--patch-px",
                 "appearance_steps": "--appearance-steps", "context_steps": "--context-steps"}


def _training_flags(config: dict[str, Any]) -> str:
    """The flags that reproduce ``config`` (all shown, defaults included)."""
    return "".join(f" {flag} {config[field]}" for field, flag in _CONFIG_FLAGS.items() if field in config)


def write_card(models: Path, name: str, evaluation_path: Path | None) -> Path:
    """Write ``models/<name>.md`` from the manifest (and the detection evaluation JSON when it exists)."""
    config = json.loads((models / "manifest.json").read_text())["models"][name].get("training", {}).get("config", {})
    metrics = []
    if evaluation_path is not None and evaluation_path.exists():
        evaluation = json.loads(evaluation_path.read_text())
        metrics = [
            "## Metrics (whole pipeline: detector + labeller)",
            f"Measured by `{evaluation.get('command', 'python -m training evaluate detection')}` "
            f"on fresh synthetic studies (first seed {evaluation['first_seed']}); definitions in design §6.",
            _metrics_table(evaluation),
        ]
    return write_model_card(models, name, CardText(
        purpose=PURPOSE[name],
        training_data=TRAINING_DATA,
        command="python -m training train-vertebrae --train data/train --val data/val --work work --models models"
                + _training_flags(config),
        metrics=metrics,
        intended_use="Find and label vertebral bodies C2–S1 on sagittal MR (T1, T2, STIR) and CT sagittal images "
                     "as the first stage of spine-map.",
    ))
