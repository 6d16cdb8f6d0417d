"""``python -m training train-bilsky``: cache, train and export the canal detector and the MR and CT
Bilsky graders.

Stages (``--stage``, default ``all`` runs them in this order):

* ``cache`` — detector images and grader ROIs of studies made by ``python -m training generate``
  with axial T2 or axial CT series (``--train``/``--val``: one or more folders of ``study_<seed>``),
  through the app's own loading and resampling (:mod:`training.bilsky.cache`);
* ``train`` — the canal detector on every study, then one grader per modality present;
* ``export`` — ONNX + TorchScript into ``--models`` with sha256 in ``manifest.json``;
* ``cards`` — model cards with the numbers of ``python -m training evaluate bilsky --json
  docs/evaluation/bilsky.json``.

Example (the shipped weights)::

    python -m training generate --seed 170000 --count 225 --kinds sag_t2,ax_t2 --cancer yes --jobs 2 --out data/bilsky/train_mr
    python -m training generate --seed 170225 --count 75 --kinds sag_t2,ax_t2 --jobs 2 --out data/bilsky/train_mr
    python -m training generate --seed 172000 --count 200 --fov thoracic --kinds sag_t2,ax_t2 --cancer yes --jobs 2 --out data/bilsky/train_mr
    python -m training generate --seed 171000 --count 110 --kinds ct_axial --cancer yes --jobs 2 --out data/bilsky/train_ct
    python -m training generate --seed 171110 --count 40 --kinds ct_axial --jobs 2 --out data/bilsky/train_ct
    python -m training generate --seed 840000 --count 40 --kinds sag_t2,ax_t2 --cancer yes --jobs 2 --out data/bilsky/val_mr
    python -m training generate --seed 841000 --count 20 --kinds ct_axial --cancer yes --jobs 2 --out data/bilsky/val_ct
    python -m training train-bilsky --train data/bilsky/train_mr data/bilsky/train_ct \\
        --val data/bilsky/val_mr data/bilsky/val_ct --work work/bilsky --models models
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from operators.core.bilsky_pipeline import BILSKY_CLASSES, BILSKY_MODELS, CANAL_MODEL, CT_WINDOWS, DETECTOR_PIXEL_MM, ROI_FIELD_MM, ROI_SHAPE
from training.bilsky.cache import EXACT, RoiSampling, cache_bilsky_study, load_bilsky_studies
from training.bilsky.cards import write_bilsky_cards
from training.bilsky.networks import CanalDetector, PrototypeGrader
from training.bilsky.train import BilskyConfig, train_detector, train_grader
from training.export import ExportSpec, export_checkpoints
from training.stages import add_stage_arguments, cache_folders, selected_stages

logger = logging.getLogger(__name__)

STAGES = ("cache", "train", "export", "cards")

#: ``trained_on`` of the shipped models (manifest, report ``software.models[]``, SR).
TRAINED_ON = ("synthetic spine-map studies only (training/synthetic: axial T2 MR seeds 170000-170299 and 172000-172199, "
              "axial CT seeds 171000-171149, contrast-enhanced for the CT grader, every field of view, most with cancer); "
              "no patient data")


def detector_export_spec() -> ExportSpec:
    """The canal detector: two 128×112 images (any multiple of 16 works)."""
    return ExportSpec(
        CANAL_MODEL, {"image": torch.rand(2, 1, 128, 112)}, "heatmap",
        {"image": {0: "batch", 2: "height", 3: "width"}, "heatmap": {0: "batch", 2: "height", 3: "width"}},
        {"image": f"(B, 1, H, W) float32 axial image at {DETECTOR_PIXEL_MM:g} mm pixels in the image's own row/column "
                  "directions, H and W multiples of 16 (zero padding at the bottom and right); MR: 1st–99th percentile "
                  "→ 0–1, CT: bone window (1500/300 HU) → 0–1"},
        "(B, 1, H, W) float32 logits of the thecal sac centre heatmap (sigmoid → probability)",
    )


def grader_export_spec(modality: str) -> ExportSpec:
    """The ``modality`` grader: three example ROIs."""
    channels = len(CT_WINDOWS) if modality == "CT" else 1
    classes = BILSKY_CLASSES[modality]
    meaning = (f"the CT windows {', '.join(f'{n} {w:g}/{lv:g}' for n, (w, lv) in CT_WINDOWS.items())} HU, each → 0–1"
               if modality == "CT" else "axial T2, 1st–99th percentile of the ROI → 0–1")
    return ExportSpec(
        BILSKY_MODELS[modality], {"roi": torch.rand(3, channels, *ROI_SHAPE)}, "probabilities",
        {"roi": {0: "batch"}, "probabilities": {0: "batch"}},
        {"roi": f"(B, {channels}, {ROI_SHAPE[0]}, {ROI_SHAPE[1]}) float32 canal ROI: {ROI_FIELD_MM:g} mm square in the image "
                f"plane centred on the thecal sac, the image's row/column directions; {meaning}"},
        f"(B, {len(classes)}) float32 probabilities of {', '.join(classes)}",
    )


def _networks(modalities: tuple[str, ...]) -> list[tuple[torch.nn.Module, ExportSpec]]:
    networks: list[tuple[torch.nn.Module, ExportSpec]] = [(CanalDetector(), detector_export_spec())]
    for modality in modalities:
        networks.append((PrototypeGrader(len(BILSKY_CLASSES[modality]), windows=len(CT_WINDOWS) if modality == "CT" else 1),
                         grader_export_spec(modality)))
    return networks


def main_stages(train: list[Path], val: list[Path], work: Path, models: Path, config: BilskyConfig, *, threads: int = 2,
                stages: tuple[str, ...] = STAGES, sampling: RoiSampling = RoiSampling()) -> None:
    """Run ``stages`` (in :data:`STAGES` order); see the module docstring."""
    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    if "cache" in stages:
        cache_folders(cache_bilsky_study, train, work / "cache" / "train", threads, sampling=sampling)
        cache_folders(cache_bilsky_study, val, work / "cache" / "val", threads, sampling=EXACT)
    train_studies = load_bilsky_studies(work / "cache" / "train") if {"train", "export"} & set(stages) else []
    modalities = tuple(m for m in BILSKY_MODELS if any(s.modality == m for s in train_studies))
    if "train" in stages:
        val_studies = load_bilsky_studies(work / "cache" / "val")
        logger.info("%d training and %d validation studies", len(train_studies), len(val_studies))
        histories = {}
        # --detector-steps 0 keeps the canal detector in --models (export skips a missing checkpoint),
        # so the graders can be retrained without moving the ROIs the app cuts.
        if config.detector_steps:
            histories[CANAL_MODEL] = train_detector(train_studies, val_studies, config, work / f"{CANAL_MODEL}.pt")
        for modality in modalities:
            name = BILSKY_MODELS[modality]
            histories[name] = train_grader(modality, train_studies, val_studies, config, work / f"{name}.pt")
        for name, history in histories.items():
            (work / f"{name}.history.json").write_text(json.dumps(history, indent=1, default=_jsonable))
    if "export" in stages:
        export_checkpoints(_networks(modalities), work, models, TRAINED_ON)
    if "cards" in stages:
        write_bilsky_cards(models)


def _jsonable(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else str(value)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = BilskyConfig(detector_steps=args.detector_steps, grader_steps=args.grader_steps)
    main_stages(args.train, args.val, args.work, args.models, config, threads=args.threads, stages=selected_stages(args, STAGES))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-bilsky", help="train and export the canal detector and Bilsky graders",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, STAGES, several_folders=True)
    parser.add_argument("--detector-steps", type=int, default=BilskyConfig.detector_steps,
                        help="canal detector steps; 0 keeps the detector in --models")
    parser.add_argument("--grader-steps", type=int, default=BilskyConfig.grader_steps)
    parser.set_defaults(run=run)
