"""``python -m training train-cancer``: cache, train and export the cancer Spinal Context Transformer.

Stages (``--stage``, default ``all`` runs them in this order):

* ``cache`` — every vertebra's body volumes and labels (truth and report-derived) from studies made
  by ``python -m training generate`` (``--train``/``--val`` folders of ``study_<seed>``), through the
  app's own extraction (:mod:`training.cancer.cache`);
* ``train`` — the SCT from ``--labels`` (``truth``: the generator's per-vertebra labels, the
  "expert" case of SCT Table 2; ``report``: labels read from each study's report, with ``unknown``
  and study-level labels and the multiple-instance loss, SCT §4);
* ``export`` — ONNX + TorchScript into ``--models`` with sha256 in ``manifest.json``;
* ``cards`` — the model card with the numbers of ``python -m training evaluate cancer --json
  docs/evaluation/cancer.json`` (and, when present, of the report-trained model,
  ``docs/evaluation/cancer_report_labels.json``).

Checkpoints and histories go to ``--work/<labels>``. Example (the shipped weights, then the
report-trained comparison, exported outside ``models/``)::

    K=sag_t1,sag_t2,sag_stir
    python -m training generate --seed 160000 --count 160 --kinds $K --cancer yes --jobs 2 --out data/cancer/train
    python -m training generate --seed 160160 --count 80 --kinds $K --jobs 2 --out data/cancer/train
    python -m training generate --seed 830000 --count 30 --kinds $K --cancer yes --jobs 2 --out data/cancer/val
    python -m training generate --seed 830030 --count 10 --kinds $K --jobs 2 --out data/cancer/val
    python -m training train-cancer --train data/cancer/train --val data/cancer/val --work work/cancer --models models
    python -m training train-cancer --train data/cancer/train --val data/cancer/val --work work/cancer \\
        --stage train --labels report
    python -m training train-cancer --train data/cancer/train --val data/cancer/val --work work/cancer \\
        --stage export --labels report --models work/cancer/report/models
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from operators.core.cancer_pipeline import CANCER_MODEL, CANCER_SEQUENCES, MISSING_SEQUENCE
from operators.core.gradings import CANCER_FINDINGS
from operators.core.report import ALL_LEVELS
from operators.core.volume_extraction import VERTEBRA_VOLUME_SHAPE
from training.cancer.cache import cache_cancer_study, load_cancer_studies
from training.cancer.cards import write_cancer_card
from training.cancer.networks import SpinalContextTransformer
from training.cancer.train import CancerConfig, train_cancer
from training.stages import add_stage_arguments, cache_folders, selected_stages
from training.export import ExportSpec, export_checkpoints
from training.grading.cache import TRAIN_JITTER_MM

logger = logging.getLogger(__name__)

STAGES = ("cache", "train", "export", "cards")

#: ``trained_on`` of the shipped model (manifest, report ``software.models[]``, SR).
TRAINED_ON: dict[str, str] = {
    labels: "synthetic spine-map MR studies only (training/synthetic, seeds 160000-160239, sagittal T1/T2/STIR, "
            f"every field of view, two thirds with cancer), {source}; no patient data"
    for labels, source in (("truth", "the generator's labels"), ("report", "labels read from the generated reports"))
}


def cancer_export_spec() -> ExportSpec:
    """What :func:`export_cancer` exports: example inputs (2 studies × 5 vertebrae × 2 slots) and docs."""
    rng = np.random.default_rng(0)
    sequences = rng.integers(0, len(CANCER_SEQUENCES), size=(2, 5, 2))
    sequences[0, 0, 1] = MISSING_SEQUENCE
    return ExportSpec(
        CANCER_MODEL,
        {"volumes": torch.as_tensor(rng.normal(size=(2, 5, 2, *VERTEBRA_VOLUME_SHAPE)), dtype=torch.float32),
         "sequences": torch.as_tensor(sequences),
         "levels": torch.as_tensor(np.tile(np.arange(10, 15), (2, 1)))},
        "logits",
        {"volumes": {0: "batch", 1: "vertebrae", 2: "slots"}, "sequences": {0: "batch", 1: "vertebrae", 2: "slots"},
         "levels": {0: "batch", 1: "vertebrae"}, "logits": {0: "batch", 1: "vertebrae"}},
        {"volumes": f"(B, V, Q, {', '.join(map(str, VERTEBRA_VOLUME_SHAPE))}) float32 vertebral-body volumes: V vertebrae "
                    "cranial → caudal, Q sequence slots; 9 sagittal slices patient right → left, 112 rows head → feet, "
                    "112 columns front → back, aligned with the endplates; normalised per volume; zeros in empty slots",
         "sequences": f"(B, V, Q) int64 sequence id per slot: {', '.join(f'{i} {r}' for i, r in enumerate(CANCER_SEQUENCES))}, "
                      f"{MISSING_SEQUENCE} empty",
         "levels": f"(B, V) int64 level index in ALL_LEVELS ({ALL_LEVELS[0]} … {ALL_LEVELS[-1]}, T13 and L6 included)"},
        f"(B, V, {len(CANCER_FINDINGS)}) float32 logits per vertebra: {', '.join(CANCER_FINDINGS)} (sigmoid → probability)",
    )


def export_cancer(work: Path, models: Path, trained_on: str = TRAINED_ON["truth"]) -> None:
    """Export ``work/cancer_sct.pt`` into ``models`` and record it in the manifest."""
    export_checkpoints(((SpinalContextTransformer(), cancer_export_spec()),), work, models, trained_on)


def main_stages(train: Path, val: Path, work: Path, models: Path, config: CancerConfig, *, threads: int = 2,
                stages: tuple[str, ...] = STAGES) -> None:
    """Run ``stages`` (in :data:`STAGES` order); see the module docstring."""
    torch.set_num_threads(threads)
    run_dir = work / config.labels
    run_dir.mkdir(parents=True, exist_ok=True)
    if "cache" in stages:
        cache_folders(cache_cancer_study, train, work / "cache" / "train", threads, jitter_mm=TRAIN_JITTER_MM)
        cache_folders(cache_cancer_study, val, work / "cache" / "val", threads, jitter_mm=0.0)
    if "train" in stages:
        train_studies, val_studies = load_cancer_studies(work / "cache" / "train"), load_cancer_studies(work / "cache" / "val")
        logger.info("%d training and %d validation studies", len(train_studies), len(val_studies))
        history = train_cancer(train_studies, val_studies, config, run_dir / f"{CANCER_MODEL}.pt")
        (run_dir / f"{CANCER_MODEL}.history.json").write_text(json.dumps(history, indent=1))
    if "export" in stages:
        export_cancer(run_dir, models, TRAINED_ON[config.labels])
    if "cards" in stages:
        write_cancer_card(models)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = CancerConfig(steps=args.steps, pretrain_steps=args.pretrain_steps, batch_size=args.batch_size, labels=args.labels)
    main_stages(args.train, args.val, args.work, args.models, config, threads=args.threads,
                stages=selected_stages(args, STAGES))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-cancer", help="train and export the cancer Spinal Context Transformer",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, STAGES)
    parser.add_argument("--labels", choices=("truth", "report"), default="truth",
                        help="train from the generator's labels or from labels read from the reports")
    parser.add_argument("--steps", type=int, default=CancerConfig.steps, help="SCT steps (studies)")
    parser.add_argument("--pretrain-steps", type=int, default=CancerConfig.pretrain_steps,
                        help="encoder-alone steps before the SCT (single volumes)")
    parser.add_argument("--batch-size", type=int, default=CancerConfig.batch_size)
    parser.set_defaults(run=run)
