"""``python -m training train-grading``: cache, train and export the two disc graders.

Stages (``--stage``, default ``all`` runs them in this order):

* ``cache`` — every disc's network inputs and labels from studies made by ``python -m training
  generate`` (``--train``/``--val`` folders of ``study_<seed>``), through the app's own extraction
  (:mod:`training.grading.cache`); with ``--rsna-root``, also every study of an RSNA 2024
  competition folder (RSNA labels only, :mod:`training.rsna.samples`) into the training split;
* ``disc_grader`` — the SpineNetV2 grader; ``rsna_grader`` — the multi-view RSNA 2024 grader;
* ``export`` — ONNX + TorchScript into ``--models`` with sha256 in ``manifest.json``;
* ``cards`` — model cards ``models/<name>.md`` with the numbers of
  ``python -m training evaluate grading --json docs/evaluation/grading.json`` (and of
  ``--vertebrae truth --json docs/evaluation/grading_true_vertebrae.json``).

Checkpoints and training histories go to ``--work``. ``--init-models DIR`` starts each grader from
the weights exported in ``DIR`` (fine-tuning, e.g. on a site's own studies; lower the learning rates
with ``--spinenet-learning-rate``/``--multiview-learning-rate``); the history records which file, and
which tensors started afresh because the layout changed their shape.
Example (the shipped weights)::

    python -m training generate --seed 150000 --count 240 --fov lumbar --modality mr --jobs 2 --out data/grade/train
    python -m training generate --seed 820000 --count 40 --fov lumbar --modality mr --jobs 2 --out data/grade/val
    python -m training train-grading --train data/grade/train --val data/grade/val --work work/grading --models models --spinenet-steps 2000 --multiview-steps 700
    # then both graders fine-tuned on 240 more studies
    python -m training generate --seed 150240 --count 240 --fov lumbar --modality mr --jobs 2 --out data/grade/train
    G="python -m training train-grading --train data/grade/train --val data/grade/val --work work/grading2 --models models"
    $G --stage cache && $G --stage disc_grader --spinenet-steps 3000 --spinenet-learning-rate 5e-4 --init-models models
    $G --stage rsna_grader --multiview-steps 700 --multiview-learning-rate 1.5e-4 --init-models models && $G --stage export
    # the shipped disc grader: fine-tuned again once its embedding kept the row axis (the embedding
    # weight starts afresh, every other tensor from the grader above)
    $G --stage disc_grader --spinenet-steps 3000 --spinenet-learning-rate 5e-4 --init-models models && $G --stage export
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from operators.core.grading_pipeline import MULTIVIEW_MODEL, MULTIVIEW_TOKENS, SPINENET_CHANNELS, SPINENET_MODEL
from operators.core.grading_outputs import condition_slices, grading_slices
from operators.core.study_warning import StudyWarning
from operators.core.volume_extraction import DISC_VOLUME_SHAPE
from training.stages import add_stage_arguments, cache_folders, initial_state, selected_stages
from training.export import ExportSpec, export_checkpoints, sha256_of
from training.grading.cache import TRAIN_JITTER_MM, GradingData, cache_grading_study
from training.grading.cards import write_grading_card
from training.grading.networks import MultiViewGrader, SpineNetGrader
from training.grading.train import GradingConfig, train_multiview, train_spinenet
from training.rsna.layout import read_rsna_layout
from training.rsna.samples import cache_rsna_study

logger = logging.getLogger(__name__)

STAGES = ("cache", SPINENET_MODEL, MULTIVIEW_MODEL, "export", "cards")

#: Where ``python -m training evaluate grading --json`` puts the numbers the model cards quote: the
#: app's path (detected vertebrae) and the graders alone (true vertebrae).
GRADING_EVALUATION_JSONS = (Path("docs/evaluation/grading.json"), Path("docs/evaluation/grading_true_vertebrae.json"))

#: ``trained_on`` of the shipped graders (manifest, report ``software.models[]``, SR).
TRAINED_ON = "synthetic spine-map lumbar MR studies only (training/synthetic, seeds 150000-150479); no patient data"


def _cache_rsna(root: Path, split_csv: str, work: Path) -> list[Path]:
    """Competition studies (``--rsna-root``) into the training cache (:mod:`training.rsna.samples`)."""
    problems: list[StudyWarning] = []
    studies = read_rsna_layout(root, split_csv, problems=problems)
    files = [f for f in (cache_rsna_study(s, work / "cache" / "train", problems) for s in studies) if f is not None]
    for code, count in Counter(p.code for p in problems).most_common():
        logger.info("RSNA layout: %d × %s", count, code)
    logger.info("RSNA layout: %d of %d studies cached", len(files), len(studies))
    return files


def _data(work: Path, split: str) -> GradingData:
    return GradingData.load(sorted((work / "cache" / split).glob("*.npz")))


def main_stages(train: Path, val: Path, work: Path, models: Path, config: GradingConfig, *, threads: int = 2,
                stages: tuple[str, ...] = STAGES, rsna_root: Path | None = None, rsna_split: str = "train.csv",
                init_models: Path | None = None) -> None:
    """Run ``stages`` (in :data:`STAGES` order), starting from ``init_models`` when given; see the
    module docstring."""
    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    if "cache" in stages:
        cache_folders(cache_grading_study, train, work / "cache" / "train", threads, jitter_mm=TRAIN_JITTER_MM)
        cache_folders(cache_grading_study, val, work / "cache" / "val", threads, jitter_mm=0.0)
        if rsna_root is not None:
            _cache_rsna(rsna_root, rsna_split, work)
    trainers = ((SPINENET_MODEL, train_spinenet), (MULTIVIEW_MODEL, train_multiview))
    if any(name in stages for name, _ in trainers):
        train_data, val_data = _data(work, "train"), _data(work, "val")
        logger.info("%d training and %d validation discs", len(train_data), len(val_data))
        for name, trainer in trainers:
            if name in stages:
                history = trainer(train_data, val_data, config, work / f"{name}.pt", initial_state(init_models, name))
                if init_models is not None:
                    history["initialised_from"] = {"file": f"{name}.ts", "sha256": sha256_of(init_models / f"{name}.ts")}
                (work / f"{name}.history.json").write_text(json.dumps(history, indent=1))
    if "export" in stages:
        export_graders(work, models)
    if "cards" in stages:
        for name in (SPINENET_MODEL, MULTIVIEW_MODEL):
            write_grading_card(models, name, GRADING_EVALUATION_JSONS)


def export_graders(work: Path, models: Path) -> None:
    """Export both grader checkpoints in ``work`` into ``models`` and record them in the manifest."""
    rng = np.random.default_rng(0)
    spinenet_columns = ", ".join(f"{name} {s.stop - s.start}" for name, s in grading_slices().items())
    tokens = np.zeros((2, MULTIVIEW_TOKENS, 3), dtype=np.int64)
    tokens[:, :, 0] = rng.integers(0, 4, size=(2, MULTIVIEW_TOKENS))
    tokens[:, :, 1] = np.tile(np.arange(MULTIVIEW_TOKENS) % DISC_VOLUME_SHAPE[0], (2, 1))
    tokens[:, :, 2] = rng.integers(0, 5, size=(2, 1))
    networks = (
        (SpineNetGrader(), ExportSpec(
            SPINENET_MODEL,
            {"volume": torch.as_tensor(rng.normal(size=(2, len(SPINENET_CHANNELS), *DISC_VOLUME_SHAPE)), dtype=torch.float32)},
            "logits", {"volume": {0: "batch"}, "logits": {0: "batch"}},
            {"volume": f"(N, 2, {', '.join(map(str, DISC_VOLUME_SHAPE))}) float32 intervertebral volume: channel 0 "
                       "sagittal T2 (or STIR), channel 1 sagittal T1 (zeros when missing); 9 sagittal slices patient "
                       "right → left, 112 rows head → feet, 224 columns along the disc; normalised per volume"},
            f"(N, 29) float32 concatenated logits per SPINENET_GRADINGS head: {spinenet_columns}",
        )),
        (MultiViewGrader(), ExportSpec(
            MULTIVIEW_MODEL,
            {"slices": torch.as_tensor(rng.normal(size=(2, MULTIVIEW_TOKENS, *DISC_VOLUME_SHAPE[1:])), dtype=torch.float32),
             "tokens": torch.as_tensor(tokens)},
            "logits", {"slices": {0: "batch", 1: "tokens"}, "tokens": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}},
            {"slices": f"(N, T, {DISC_VOLUME_SHAPE[1]}, {DISC_VOLUME_SHAPE[2]}) float32 slices of one lumbar disc: 9 sagittal T1, "
                       "9 sagittal T2/STIR, then the axial T2 slab (T = 25 in the app); normalised per view",
             "tokens": "(N, T, 3) int64 per slice: view (0 sag T1, 1 sag T2/STIR, 2 axial T2, 3 padding = missing), "
                       "slice order within the view, disc (0 L1/L2 … 4 L5/S1)"},
            "(N, 20) float32 logits: 3 severities (Normal/Mild, Moderate, Severe) for each RSNA_CONDITIONS entry "
            f"({', '.join(condition_slices())}), then 5 disc-level logits (auxiliary head)",
        )),
    )
    export_checkpoints(networks, work, models, TRAINED_ON)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = GradingConfig(spinenet_steps=args.spinenet_steps, multiview_steps=args.multiview_steps, batch_size=args.batch_size,
                           spinenet_learning_rate=args.spinenet_learning_rate, multiview_learning_rate=args.multiview_learning_rate)
    main_stages(args.train, args.val, args.work, args.models, config, threads=args.threads,
                stages=selected_stages(args, STAGES), rsna_root=args.rsna_root, rsna_split=args.rsna_split,
                init_models=args.init_models)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-grading", help="train and export the SpineNetV2 and multi-view disc graders",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, STAGES)
    parser.add_argument("--rsna-root", type=Path, help="also train the RSNA grader on an RSNA 2024 competition folder")
    parser.add_argument("--rsna-split", default="train.csv", help="label CSV choosing its studies (default: train.csv)")
    parser.add_argument("--spinenet-steps", type=int, default=GradingConfig.spinenet_steps)
    parser.add_argument("--multiview-steps", type=int, default=GradingConfig.multiview_steps)
    parser.add_argument("--batch-size", type=int, default=GradingConfig.batch_size)
    parser.add_argument("--spinenet-learning-rate", type=float, default=GradingConfig.spinenet_learning_rate)
    parser.add_argument("--multiview-learning-rate", type=float, default=GradingConfig.multiview_learning_rate)
    parser.add_argument("--init-models", type=Path, help="start from the weights in this models folder (fine-tuning)")
    parser.set_defaults(run=run)
