"""Model cards (``models/<name>.md``) for the detector and labeller networks, from the manifest entry,
the training record and the detection evaluation (``docs/evaluation/detection.json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.cards import CardText
from training.cards import write_card as write_model_card
from training.evaluate_detection import markdown_table
from training.real.fastcleverseg import TERMS

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
        "sagittal volume around one detected body: a cube 3× its in-plane size (the paper sizes the "
        "lateral side by the slices the body was detected on, which depends on the detector and the "
        "scanner; operators/core/level_labelling.py appearance_box_mm), resampled to 112×112 (half the "
        "paper's 224×224, for CPU speed); 23 classes C3…S1."
    ),
    "level_context": (
        "Level context network (SpineNetV2 §3.2): a 1D MONAI UNet over the height-probability map "
        "(2 mm bins, caudal → cranial) that refines each body's level probabilities from its "
        "neighbours; decoded by a width-100 beam search with penalties for missed levels and "
        "transitional L6/T13; up to four S1-rated bodies below S1 named S2…S5 and a double C3 named C2."
    ),
}

SYNTHETIC_DATA = (
    "Synthetic studies made by `python -m training generate` (training/synthetic): trained from scratch "
    "on 235 studies (seeds 100000–100049 cervical, 110000–110049 thoracic, 120000–120059 lumbar, "
    "130000–130049 whole spine, each with sagittal T1, T2 and STIR; 140000–140024 CT with sagittal "
    "reformats), validation 24 studies (seeds 800000–800023). Evaluation studies use seeds "
    "from 910000 and are never trained on."
)

REAL_DATA = (
    "Then fine-tuned (`--init-models`) on the same synthetic training and validation studies mixed with "
    "real annotated lumbar MRI, drawn for the fraction `real_fraction` (configuration below) of every "
    "batch: the FastCleverSeg datasets (GitHub "
    "JonathanRamos/fastcleverseg, `ImageDatasets/`) VB3 (MyoSegmenTUM, Burian et al., BMC Musculoskelet "
    "Disord 2019, doi:10.1186/s12891-019-2528-x; bodies L1–L5) and VB2 (Zukić et al., Comput Graph Forum "
    "2014, doi:10.1111/cgf.12343; seven bodies to L5), split per subject by a hash of its name "
    "(training/real/fastcleverseg.py `subject_split`): train VB3 32 + VB2 10 subjects, validation "
    "VB3 11 + VB2 2 (used to keep the best checkpoint), test VB3 11 + VB2 5 and IVD 5 (only "
    "evaluated). VB1 is reserved for independent evaluation and was never read; 6 of the 23 VB2 "
    "files and 50 of the 55 IVD images are absent from the mirror. Terms: " + TERMS + "."
)

REAL_LIMITS = (
    "Its patient data are 42 subjects' lumbar MRI from two public datasets (32 healthy volunteers' "
    "water-fat T1 of VB3, 10 routine T2 TSE of VB2): it has not seen real cervical or thoracic spines, "
    "CT, implants, fractures, tumours, severe deformity, paediatric or post-operative anatomy. Validate "
    "on a site's own annotated studies before clinical use. Not a medical device."
)


def _real_metrics(path: Path) -> list[str]:
    """Card section for the real test split (``evaluate real --json``)."""
    evaluation = json.loads(path.read_text())
    lines = ["| dataset | subjects | vertebrae | precision % | recall % | IDR % | LE mm |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    discs = []
    for dataset, m in evaluation["table"].items():
        if "vertebrae" in m:
            lines.append(f"| {dataset} | {m['subjects']} | {m['vertebrae']} | {100 * m['precision']:.2f} | "
                         f"{100 * m['recall']:.2f} | {100 * m['idr']:.2f} | {m['le_mm']:.2f} |")
        else:
            discs.append(f"{dataset} ({m['subjects']} subjects, {m['discs']} discs, no body masks): disc recall "
                         f"{100 * m['disc_recall']:.1f} %, disc IDR {100 * m['disc_idr']:.1f} %, "
                         f"disc LE {m['disc_le_mm']:.2f} mm.")
    return [
        "## Metrics on real annotated MRI (whole pipeline)",
        f"Measured by `python -m training evaluate real --data-root D --split {evaluation['split']}` on the "
        f"{evaluation['split']} split (subjects never trained on or used for selection); a prediction beyond the "
        "annotated bodies, where the annotated spacing places an unannotated neighbour, is not scored (training/evaluate_real.py).",
        "\n".join(lines),
        *discs,
    ]


#: ``trained_on`` (manifest, report ``software.models[]``, SR) of models trained without and with the
#: real subjects (``train-vertebrae --real-root``).
TRAINED_ON_SYNTHETIC = "synthetic spine-map studies only (training/synthetic, seeds 100000-140024); no patient data"
TRAINED_ON_REAL = ("synthetic spine-map studies and public annotated lumbar MRI: FastCleverSeg VB3/VB2 train split "
                   "(42 subjects; GPL-3.0, cite the datasets, see the model card)")


#: Training-config fields that are command-line flags of ``train-vertebrae``.
_CONFIG_FLAGS = {"steps": "--detector-steps", "patch_px": "--patch-px",
                 "appearance_steps": "--appearance-steps", "context_steps": "--context-steps"}


def _training_flags(config: dict[str, Any]) -> str:
    """The flags that reproduce ``config`` (all shown, defaults included)."""
    return "".join(f" {flag} {config[field]}" for field, flag in _CONFIG_FLAGS.items() if field in config)


def _transitional_metrics(paths: Sequence[Path]) -> list[str]:
    """Card section for the transitional-anatomy runs (``evaluate detection --anatomy L6|T13 --json``)."""
    section = []
    for path in paths:
        if path.exists():
            evaluation = json.loads(path.read_text())
            section += [f"Spines with {evaluation['anatomy']}, all sagittal sequences fused "
                        f"(`{evaluation.get('command', 'python -m training evaluate detection')}`):",
                        markdown_table(evaluation, fused_only=True)]
    return ["## Metrics on transitional anatomy", *section] if section else []


def write_card(models: Path, name: str, evaluation_path: Path | None, real_evaluation_path: Path | None = None,
               transitional_paths: Sequence[Path] = ()) -> Path:
    """Write ``models/<name>.md`` from the manifest (and the synthetic, transitional-anatomy and real
    evaluation JSONs that exist); the training data are described from the manifest's ``trained_on``."""
    entry = json.loads((models / "manifest.json").read_text())["models"][name]
    config = entry.get("training", {}).get("config", {})
    real = entry.get("trained_on") == TRAINED_ON_REAL
    metrics = []
    if evaluation_path is not None and evaluation_path.exists():
        evaluation = json.loads(evaluation_path.read_text())
        metrics = [
            "## Metrics (whole pipeline: detector + labeller)",
            f"Measured by `{evaluation.get('command', 'python -m training evaluate detection')}` "
            f"on fresh synthetic studies (first seed {evaluation['first_seed']}); definitions in design §6.",
            markdown_table(evaluation),
            "L6/T13 found: true transitional vertebrae in view that got their level; false L6/T13: predictions "
            "named L6 or T13 where the matched vertebra is another level or none.",
        ]
    metrics += _transitional_metrics(transitional_paths)
    if real_evaluation_path is not None and real_evaluation_path.exists():
        metrics += _real_metrics(real_evaluation_path)
    command = ("python -m training train-vertebrae --train data/train --val data/val --work work --models models"
               + _training_flags(config))
    if real:
        command += (f" (fine-tuning: --real-root D --init-models models --learning-rate {config.get('learning_rate')}"
                    f" --real-fraction {config.get('real_fraction')}; README, Real annotated lumbar MRI)")
    return write_model_card(models, name, CardText(
        purpose=PURPOSE[name],
        training_data=SYNTHETIC_DATA + (" " + REAL_DATA if real else " No patient data."),
        command=command,
        metrics=metrics,
        intended_use="Find and label vertebral bodies C2–S1 on sagittal MR (T1, T2, STIR) and CT sagittal images "
                     "as the first stage of spine-map.",
        **({"limits": REAL_LIMITS} if real else {}),
    ))
