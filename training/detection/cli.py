"""``python -m training train-vertebrae``: cache, train and export the detector and the labeller.

Stages (``--stage``, default ``all`` runs them in this order):

* ``cache`` — sagittal slices on the detector grid and appearance volumes of every true body, from
  studies made by ``python -m training generate`` (``--train``/``--val`` folders of ``study_<seed>``)
  and, with ``--real-root``, from the train/val subjects of the real FastCleverSeg datasets
  (:mod:`training.real.training_cache`; training draws ``real_fraction`` of its examples from them;
  with ``--init-models``, its detector labels the real bodies next to the annotated ones);
* ``detector`` — the VFR network; ``appearance`` and ``context`` — the labeller networks;
* ``export`` — ONNX + TorchScript into ``--models`` with sha256 in ``manifest.json``;
* ``cards`` — model cards ``models/<name>.md`` with the numbers of
  ``python -m training evaluate detection --json docs/evaluation/detection.json``.

Checkpoints and training histories go to ``--work``. ``--init-models DIR`` starts each network from
the weights in ``DIR`` (``<name>.ts``) instead of a random initialisation: fine-tuning shipped models
on a site's data. Example (the shipped weights from scratch)::

    python -m training generate --seed 120000 --count 60 --fov lumbar --kinds sag_t1,sag_t2,sag_stir --out data/train
    ... (see README "Training" for every field of view)
    python -m training train-vertebrae --train data/train --val data/val --work work/ --models models/
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from operators.core.level_labelling import APPEARANCE_SHAPE, N_CLASSES
from operators.core.onnx_models import open_model
from operators.core.vertebra_pipeline import APPEARANCE_MODEL, CONTEXT_MODEL, DETECTOR_MODEL
from training.detection.detector import DetectorConfig, make_detector, train_detector
from training.detection.labeller import (
    LabellerConfig,
    LabellerData,
    appearance_logits,
    cache_labeller_study,
    context_appearance_logits,
    make_appearance_net,
    make_context_net,
    train_appearance,
    train_context,
)
from training.detection.slice_cache import CachedSeries, build_cache
from training.detection.cards import TRAINED_ON_REAL, TRAINED_ON_SYNTHETIC, write_card
from training.real.training_cache import cache_real_split
from training.export import ExportSpec, export_checkpoints
from training.stages import add_stage_arguments, initial_state, selected_stages

logger = logging.getLogger(__name__)

STAGES = ("cache", "detector", "appearance", "context", "export", "cards")

#: Where ``python -m training evaluate detection --json`` puts the numbers the model cards quote.
DETECTION_EVALUATION_JSON = Path("docs/evaluation/detection.json")

MODEL_NAMES = (DETECTOR_MODEL, APPEARANCE_MODEL, CONTEXT_MODEL)

#: Where ``python -m training evaluate detection --anatomy L6|T13 --json`` puts the transitional numbers.
TRANSITIONAL_EVALUATION_JSONS = (Path("docs/evaluation/detection_L6.json"), Path("docs/evaluation/detection_T13.json"))

#: Where ``python -m training evaluate real --split test --json`` puts the real numbers the cards quote.
REAL_EVALUATION_JSON = Path("docs/evaluation/real_test.json")


def _studies(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (p / "truth.json").exists())


def _cache(split_folder: Path, work: Path, split: str, real_root: Path | None,
           init_models: Path | None) -> tuple[list[Path], list[Path]]:
    studies = _studies(split_folder)
    detector_dir, labeller_dir = work / "cache" / split / "detector", work / "cache" / split / "labeller"
    detector_files = build_cache(studies, detector_dir)
    labeller_dir.mkdir(parents=True, exist_ok=True)
    labeller_files = [f for f in (cache_labeller_study(s, labeller_dir) for s in studies) if f is not None]
    if real_root is not None:
        # The starting detector finds the real bodies next to the annotated ones (labelled by counting on).
        detector = None if init_models is None else open_model(DETECTOR_MODEL, init_models)
        real_detector, real_labeller = cache_real_split(real_root, split, detector_dir, labeller_dir, detector)
        logger.info("%s: %d real subjects cached", split, len(real_detector))
        detector_files += real_detector
        labeller_files += real_labeller
    return detector_files, labeller_files


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main_stages(
        args.train, args.val, args.work, args.models,
        DetectorConfig(steps=args.detector_steps, patch_px=args.patch_px, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, real_fraction=args.real_fraction),
        LabellerConfig(appearance_steps=args.appearance_steps, context_steps=args.context_steps,
                       learning_rate=args.learning_rate, real_fraction=args.real_fraction),
        threads=args.threads,
        stages=selected_stages(args, STAGES),
        real_root=args.real_root,
        init_models=args.init_models,
    )
    return 0


def main_stages(
    train: Path, val: Path, work: Path, models: Path, detector_config: DetectorConfig, labeller_config: LabellerConfig,
    *, threads: int = 2, stages: tuple[str, ...] = STAGES, real_root: Path | None = None, init_models: Path | None = None,
) -> None:
    """Run ``stages`` (in :data:`STAGES` order) on the studies in ``train``/``val`` (and the real
    subjects under ``real_root``), starting from ``init_models`` when given; see the module docstring."""
    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    if "cache" in stages:
        for split, folder in (("train", train), ("val", val)):
            detector_files, labeller_files = _cache(folder, work, split, real_root, init_models)
            logger.info("%s: %d detector series, %d labeller studies cached", split, len(detector_files), len(labeller_files))

    def series(split: str) -> list[CachedSeries]:
        return [CachedSeries.load(p) for p in sorted((work / "cache" / split / "detector").glob("*.npz"))]

    def labeller_data(split: str) -> LabellerData:
        return LabellerData.load(sorted((work / "cache" / split / "labeller").glob("*.npz")))

    if "detector" in stages:
        history = train_detector(series("train"), series("val"), detector_config, work / "vertebra_detector.pt",
                                 initial_state=initial_state(init_models, DETECTOR_MODEL))
        (work / "vertebra_detector.history.json").write_text(json.dumps(history, indent=1))
    if "appearance" in stages:
        history = train_appearance(labeller_data("train"), labeller_data("val"), labeller_config, work / "level_appearance.pt",
                                   initial_state(init_models, APPEARANCE_MODEL))
        (work / "level_appearance.history.json").write_text(json.dumps(history, indent=1))
    if "context" in stages:
        appearance = make_appearance_net(labeller_config)
        appearance.load_state_dict(torch.load(work / "level_appearance.pt"))
        train_data, val_data = labeller_data("train"), labeller_data("val")
        history = train_context(
            train_data, context_appearance_logits(appearance, train_data, seed=labeller_config.seed),
            val_data, appearance_logits(appearance, val_data),
            labeller_config, work / "level_context.pt", initial_state(init_models, CONTEXT_MODEL),
        )
        (work / "level_context.history.json").write_text(json.dumps(history, indent=1))
    if "export" in stages:
        export_all(work, models, detector_config, labeller_config)
    if "cards" in stages:
        for name in MODEL_NAMES:
            write_card(models, name, DETECTION_EVALUATION_JSON, REAL_EVALUATION_JSON, TRANSITIONAL_EVALUATION_JSONS)


def _trained_config(work: Path, name: str, default: DetectorConfig | LabellerConfig) -> DetectorConfig | LabellerConfig:
    """The configuration a checkpoint was trained with (from its history), so export rebuilds the same network."""
    path = work / f"{name}.history.json"
    if not path.exists():
        return default
    stored = json.loads(path.read_text())["config"]
    known = {f.name for f in fields(default)}
    return type(default)(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in known})


def export_all(work: Path, models: Path, detector_config: DetectorConfig, labeller_config: LabellerConfig) -> None:
    """Export the checkpoints in ``work`` into ``models`` and record them in the manifest.

    A network without a checkpoint in ``work`` keeps the files and manifest entry it has in
    ``models`` (e.g. the labeller retrained beside the shipped detector).

    Raises:
        FileNotFoundError: when ``work`` holds none of the three checkpoints.
    """
    detector_config = _trained_config(work, DETECTOR_MODEL, detector_config)
    labeller_config = _trained_config(work, APPEARANCE_MODEL, labeller_config)
    rng = np.random.default_rng(0)
    networks = (
        (make_detector(detector_config), ExportSpec(
            DETECTOR_MODEL, {"image": torch.as_tensor(rng.normal(size=(2, 1, 256, 192)), dtype=torch.float32)},
            "heatmaps_vectors", {"image": {0: "batch", 2: "height", 3: "width"},
                                 "heatmaps_vectors": {0: "batch", 2: "height", 3: "width"}},
            {"image": "(N, 1, H, W) float32 sagittal slice(s) after normalise_intensity on the 1.5 mm detector grid; "
                      "H, W multiples of 32"},
            "(N, 13, H, W) float32: 5 heatmaps (4 corners in VERTEBRA_CORNERS order, centroid), 8 vector-field channels",
        )),
        (make_appearance_net(labeller_config), ExportSpec(
            APPEARANCE_MODEL, {"volume": torch.as_tensor(rng.normal(size=(2, *APPEARANCE_SHAPE)), dtype=torch.float32)},
            "logits", {"volume": {0: "batch"}, "logits": {0: "batch"}},
            {"volume": "(N, 16, 112, 112) float32 appearance volume (lateral slices as channels), normalised intensity"},
            f"(N, {N_CLASSES}) float32 level logits, LABELLER_CLASSES order (C3..S1)",
        )),
        (make_context_net(), ExportSpec(
            CONTEXT_MODEL, {"height_map": torch.as_tensor(rng.random(size=(1, N_CLASSES, 256)), dtype=torch.float32)},
            "logits", {"height_map": {0: "batch", 2: "bins"}, "logits": {0: "batch", 2: "bins"}},
            {"height_map": f"(N, {N_CLASSES}, B) float32 height-probability map, 2 mm bins caudal to cranial, B a multiple of 8"},
            f"(N, {N_CLASSES}, B) float32 refined level logits per bin",
        )),
    )
    real = any((work / "cache" / "train" / "labeller").glob("real_*.npz"))
    export_checkpoints(networks, work, models, TRAINED_ON_REAL if real else TRAINED_ON_SYNTHETIC)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-vertebrae", help="train and export the vertebra detector and level labeller",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, STAGES)
    parser.add_argument("--detector-steps", type=int, default=DetectorConfig.steps)
    parser.add_argument("--appearance-steps", type=int, default=LabellerConfig.appearance_steps)
    parser.add_argument("--context-steps", type=int, default=LabellerConfig.context_steps)
    parser.add_argument("--patch-px", type=int, default=DetectorConfig.patch_px)
    parser.add_argument("--batch-size", type=int, default=DetectorConfig.batch_size)
    parser.add_argument("--learning-rate", type=float, default=DetectorConfig.learning_rate,
                        help="peak learning rate of every network (lower it when fine-tuning with --init-models)")
    parser.add_argument("--real-root", type=Path,
                        help="folder holding the FastCleverSeg ImageDatasets/: also train on its train/val subjects")
    parser.add_argument("--real-fraction", type=float, default=DetectorConfig.real_fraction,
                        help="share of training examples drawn from real subjects when there are any")
    parser.add_argument("--init-models", type=Path, help="start from the weights in this models folder (fine-tuning)")
    parser.set_defaults(run=run)
