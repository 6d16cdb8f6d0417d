"""Model cards of the two disc graders, from the manifest and ``docs/evaluation/grading.json``."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from operators.core.grading_pipeline import MULTIVIEW_MODEL, SPINENET_MODEL
from training.cards import CardText, write_card
from training.evaluate_grading import markdown_tables

PURPOSE: dict[str, str] = {
    SPINENET_MODEL: (
        "SpineNetV2 radiological grading network (SpineNetV2 §3.4, §4.2): a ResNet-style CNN with a 3D "
        "3×3×3 first convolution and in-plane convolutions after it, over the 9×112×224 intervertebral "
        "volume (midpoint of the adjacent centroids, endplate horizontal, width twice the larger body, "
        "2:1 aspect); one 2-layer head per grading: Pfirrmann 1–5, narrowing 0–3, central canal "
        "stenosis 0–3, spondylolisthesis, upper/lower endplate defect, upper/lower marrow change, "
        "left/right foraminal stenosis, herniation. Channel 1 adds the sagittal T1 (the paper uses T2 only). "
        "The final feature maps are averaged across the disc only, keeping the 9 sagittal slices and the 4 "
        "rows apart, so the paired left/right and upper/lower heads see where a finding lies; the embedding "
        "and head layers use leaky ReLU (with ReLU most embedding units had stopped firing)."
    ),
    MULTIVIEW_MODEL: (
        "Multi-view, multi-sequence RSNA 2024 grader (Park et al. §2): a shared 2D slice encoder over "
        "every slice of the sagittal T1 and T2/STIR disc volumes and the axial T2 disc slab, slice-order, "
        "view and disc-level embeddings, a CLS token and 3 transformer encoder layers (2 heads); one head "
        "per condition (spinal canal stenosis, left/right neural foraminal narrowing, left/right "
        "subarticular stenosis × Normal/Mild, Moderate, Severe) and an auxiliary disc-level head. "
        "Missing views are padding tokens, masked out, so it grades from whatever a study has."
    ),
}

TRAINING_DATA = (
    "Synthetic lumbar MR studies only, made by `python -m training generate --fov lumbar --modality mr`: "
    "training studies from seeds 150000–150479 and 40 validation studies (seeds 820000–820039), with the "
    "generator's own mix of sagittal T1/T2/STIR and axial T2 (angled per-disc or contiguous stacks, some "
    "studies without axial). Discs were framed from the true vertebrae moved by N(0, 1.5 mm) per axis "
    "(the detector's localisation error). Evaluation studies use seeds from 930000. No patient data. "
    "Both graders were trained from scratch on the first 240 (150000–150239), then fine-tuned "
    "(`--init-models`) on all 480; the disc grader was fine-tuned on the 480 three times more: when its "
    "embedding began keeping the row axis, with discs turned head to feet (upper and lower labels swapped) "
    "added to the augmentation, and when its embedding and heads changed from ReLU to leaky ReLU "
    "(README, Training and evaluating the disc graders)."
)


def _metrics(evaluations: list[dict[str, Any]]) -> list[str]:
    lines = ["## Metrics"]
    for evaluation in evaluations:
        lines += [f"Measured by `{evaluation['command']}` (definitions in design §6):", "\n".join(markdown_tables(evaluation))]
    return lines


#: Each grader's prefix in the ``train-grading`` flags and ``GradingConfig`` fields (``--spinenet-steps``, ``spinenet_steps``).
_OPTION_PREFIX = {SPINENET_MODEL: "spinenet", MULTIVIEW_MODEL: "multiview"}


def _training_flags(name: str, training: dict[str, Any]) -> str:
    """The flags the grader's training stage ran with; for a fine-tuning run (``initialised_from`` in
    the history) also its learning rate, the weights it started from and the tensors that started
    afresh because the layout had changed."""
    prefix, config = _OPTION_PREFIX[name], training.get("config", {})
    flags = f"--{prefix}-steps {config.get(f'{prefix}_steps')}"
    start = training.get("initialised_from")
    if start is not None:
        flags += (f" --init-models M --{prefix}-learning-rate {config[f'{prefix}_learning_rate']}"
                  f" (M: the models folder it started from, {start['file']} sha256 {start['sha256']}")
        afresh = training.get("reinitialised")
        flags += f"; started afresh, as the layout changed: {', '.join(afresh)})" if afresh else ")"
    return flags


def write_grading_card(models: Path, name: str, evaluation_paths: Sequence[Path]) -> Path:
    """Write ``models/<name>.md`` for one grader, with the metrics of the evaluation JSONs that exist
    (both graders are measured together, so both cards quote the same tables)."""
    training = json.loads((models / "manifest.json").read_text())["models"][name].get("training", {})
    evaluations = [json.loads(path.read_text()) for path in evaluation_paths if path.exists()]
    metrics = _metrics(evaluations) if evaluations else []
    return write_card(models, name, CardText(
        purpose=PURPOSE[name],
        training_data=TRAINING_DATA,
        # Each grader trains in its own stage, so its card names that stage and the flag it used.
        command="python -m training train-grading --train data/grade/train --val data/grade/val --work work/grading "
                f"--models models --stage {name} " + _training_flags(name, training),
        metrics=metrics,
        intended_use=("Grade every intervertebral disc found by spine-map's detector and labeller (SpineNetV2 gradings)"
                      if name == SPINENET_MODEL else
                      "Grade the five RSNA 2024 lumbar conditions at L1/L2 … L5/S1 from the views a study has"),
    ))
