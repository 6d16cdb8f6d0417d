"""Training loop of the cancer Spinal Context Transformer on cached studies (:mod:`training.cancer.cache`).

One sample is one study (SCT trains on whole spines): a random contiguous run of up to
:attr:`CancerConfig.max_vertebrae` of its vertebrae (as partial fields of view do; it also bounds
the step time on 2 CPU cores), a random non-empty subset of its sequences (SCT's sequence
drop-out: each kept with probability ``1 − sequence_dropout``), a left–right flip, ±1-slice shift,
in-plane jitter and MONAI intensity changes (:func:`training.augment.intensity_augmentation`).
Loss (SCT §4): class-balanced BCE over the known vertebra labels + ``study_weight`` × the
multiple-instance study loss; AdamW with warm-up and cosine decay; the checkpoint with the best
validation mean AUROC (against the generator's truth, whatever the training labels) is kept.

Before that, the encoder is trained alone for :attr:`CancerConfig.pretrain_steps` (SCT Fig. 1b: "this
model can be trained by itself or in conjunction with the transformer"): single (vertebra, sequence)
volumes with a linear head on the same labels. Why: trained end to end from the start, the network
first learns the study-level shortcut (a vertebra in a study with cancer elsewhere scores high: in a
4000-step run, validation negatives averaged 0.42 in studies with cancer against 0.14 in studies
without) and learns slowly to tell which vertebra carries a focal lesion (validation metastasis
AUROC 0.76, fracture 0.985, cord compression 0.946); the encoder alone can only learn from what each
volume shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from operators.core.cancer_pipeline import CANCER_SEQUENCES, MISSING_SEQUENCE, pack_cancer_input
from operators.core.gradings import CANCER_FINDINGS
from training.augment import intensity_augmentation
from training.cancer.cache import CancerStudy
from training.cancer.networks import (
    SpinalContextTransformer,
    VertebraEncoder,
    positive_weights,
    study_loss,
    vertebra_loss,
)
from training.grading.train import warmup_cosine_schedule
from training.progress import TrainingProgress, training_autocast
from training.rsna.metric import macro_auroc

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CancerConfig:
    """Training settings (stored in the history and the model card)."""

    steps: int = 2500
    #: Studies per step.
    batch_size: int = 2
    #: Encoder-alone steps before the SCT (module docstring), at ``encoder_batch_size`` volumes a step.
    pretrain_steps: int = 5000
    encoder_batch_size: int = 24
    #: Peak learning rate of the encoder-alone stage. Measured on the 40 validation studies, encoder
    #: alone, 2000 steps: metastasis AUROC 0.828 at 3e-4 and 0.857 at 1e-3, and still rising with steps
    #: (0.779 at 600): the encoder is what limits metastasis, and it was under-trained.
    encoder_learning_rate: float = 1e-3
    max_vertebrae: int = 10
    learning_rate: float = 3e-4
    warmup_steps: int = 60
    sequence_dropout: float = 0.3
    study_weight: float = 0.5
    #: ``truth`` (the generator's labels, the "expert" case) or ``report`` (labels read from reports).
    labels: str = "truth"
    validate_every: int = 150
    log_every: int = 25
    #: Off only for smoke tests that check a few steps can fit a handful of studies.
    augment: bool = True
    seed: int = 0


@dataclass(frozen=True)
class CancerBatch:
    """Padded network input and targets of a batch of studies."""

    volumes: torch.Tensor     # (B, V, Q, 9, 112, 112)
    sequences: torch.Tensor   # (B, V, Q) int64, MISSING_SEQUENCE where empty or padding
    levels: torch.Tensor      # (B, V) int64
    labels: torch.Tensor      # (B, V, 3) int64, −1 unknown or padding
    study_labels: torch.Tensor  # (B, 3) int64
    present: torch.Tensor     # (B, V) bool, False for padding


def _augment_volume(volume: np.ndarray, rng: np.random.Generator, augment: Callable, mirror: bool) -> np.ndarray:
    if mirror:  # slices run patient right → left
        volume = volume[::-1]
    volume = np.roll(volume, int(rng.integers(-1, 2)), axis=0)
    volume = np.roll(volume, tuple(int(s) for s in rng.integers(-5, 6, size=2)), axis=(1, 2))
    return np.asarray(augment({"image": np.ascontiguousarray(volume)[None]})["image"], dtype=np.float32)[0]


def encoder_batch(
    studies: Sequence[CancerStudy], labels: str, rng: np.random.Generator, size: int, augment: Callable | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(size, 9, 112, 112)`` single-sequence body volumes with a known label and their ``(size, 3)``
    targets (−1 unknown), drawn uniformly over every (vertebra, sequence) of ``studies``."""
    volumes, targets = [], []
    while len(volumes) < size:
        study = studies[int(rng.integers(len(studies)))]
        row = int(rng.integers(len(study.levels)))
        slots = np.flatnonzero(study.available[row])
        target = study.labels[labels][row]
        if len(slots) == 0 or not (target >= 0).any():
            continue
        volume = study.volumes[row, int(rng.choice(slots))].astype(np.float32)
        volumes.append(_augment_volume(volume, rng, augment, rng.random() < 0.5) if augment else volume)
        targets.append(target)
    return torch.as_tensor(np.stack(volumes)), torch.as_tensor(np.stack(targets), dtype=torch.long)


def pretrain_encoder(train: Sequence[CancerStudy], config: CancerConfig, weights: torch.Tensor,
                     augment: Callable | None, rng: np.random.Generator) -> tuple[VertebraEncoder, list[tuple[int, float]]]:
    """Train a :class:`VertebraEncoder` + linear head on single volumes; returns the encoder and its
    losses (mean per ``log_every`` steps)."""
    encoder = VertebraEncoder()
    head = nn.Linear(encoder.channels, len(CANCER_FINDINGS))
    parameters = [*encoder.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=config.encoder_learning_rate, weight_decay=1e-2)
    schedule = warmup_cosine_schedule(optimiser, config.pretrain_steps, config.warmup_steps)
    losses, running = [], 0.0
    for step in range(1, config.pretrain_steps + 1):
        encoder.train()
        volumes, targets = encoder_batch(train, config.labels, rng, config.encoder_batch_size, augment)
        with training_autocast():
            logits = head(encoder(volumes))
        loss = vertebra_loss(logits.float(), targets, weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item()
        if step % config.log_every == 0:
            losses.append((step, running / config.log_every))
            logger.info("cancer_sct encoder step %d loss %.4f", step, losses[-1][1])
            running = 0.0
    return encoder, losses


def study_sample(
    study: CancerStudy, labels: str, rng: np.random.Generator | None, config: CancerConfig, augment: Callable | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(volumes (V, Q, …), sequences (V, Q), levels (V,), labels (V, 3), study labels (3,)) of one
    study: augmented and cropped when ``rng`` is given, else every vertebra and sequence."""
    rows = np.arange(len(study.levels))
    kept_roles = [role for slot, role in enumerate(CANCER_SEQUENCES) if study.available[:, slot].any()]
    study_labels = study.study_labels[labels]
    if rng is not None:
        if len(rows) > config.max_vertebrae:
            start = int(rng.integers(0, len(rows) - config.max_vertebrae + 1))
            rows = rows[start : start + config.max_vertebrae]
            # A cropped run is a new bag: its study label is only known when the crop keeps the
            # evidence (a positive vertebra label) or the whole study is negative.
            kept = study.labels[labels][rows]
            study_labels = np.where((kept == 1).any(axis=0), 1, np.where(study_labels == 0, 0, -1))
        dropped = [role for role in kept_roles if rng.random() < config.sequence_dropout]
        kept_roles = [role for role in kept_roles if role not in dropped] or [kept_roles[int(rng.integers(len(kept_roles)))]]
    mirror = rng is not None and rng.random() < 0.5
    per_vertebra = []
    for row in rows:
        by_role = {}
        for role in kept_roles:
            slot = CANCER_SEQUENCES.index(role)
            if study.available[row, slot]:
                volume = study.volumes[row, slot].astype(np.float32)
                by_role[role] = _augment_volume(volume, rng, augment, mirror) if (rng is not None and augment) else volume
        per_vertebra.append(by_role)
    # A vertebra left with no sequence after drop-out keeps a slot of zeros marked missing; it
    # carries no label, so it only pads.
    volumes, sequences, level_index = pack_cancer_input(per_vertebra, [str(level) for level in study.levels[rows]])
    targets = study.labels[labels][rows].copy()
    targets[~np.array([bool(v) for v in per_vertebra])] = -1
    return volumes, sequences, level_index, targets, study_labels


def collate(samples: Sequence[tuple[np.ndarray, ...]]) -> CancerBatch:
    """Pad samples of :func:`study_sample` to one batch (missing slots, unknown labels)."""
    count = max(s[0].shape[0] for s in samples)
    slots = max(s[0].shape[1] for s in samples)
    batch = len(samples)
    volumes = np.zeros((batch, count, slots, *samples[0][0].shape[2:]), dtype=np.float32)
    sequences = np.full((batch, count, slots), MISSING_SEQUENCE, dtype=np.int64)
    levels = np.zeros((batch, count), dtype=np.int64)
    labels = np.full((batch, count, len(CANCER_FINDINGS)), -1, dtype=np.int64)
    present = np.zeros((batch, count), dtype=bool)
    for b, (vol, seq, lev, lab, _) in enumerate(samples):
        n, q = seq.shape
        volumes[b, :n, :q], sequences[b, :n, :q], levels[b, :n], labels[b, :n], present[b, :n] = vol, seq, lev, lab, True
    study_labels = np.stack([s[4] for s in samples])
    return CancerBatch(*(torch.as_tensor(a) for a in (volumes, sequences, levels, labels, study_labels, present)))


@torch.no_grad()
def study_probabilities(model: nn.Module, studies: Sequence[CancerStudy], roles: Sequence[str] | None = None) -> list[np.ndarray]:
    """``(V, 3)`` probabilities per study, every vertebra, the sequences in ``roles`` (default all)."""
    model.eval()
    out = []
    for study in studies:
        per_vertebra = [{role: study.volumes[v, CANCER_SEQUENCES.index(role)].astype(np.float32)
                         for role in (roles or CANCER_SEQUENCES) if study.available[v, CANCER_SEQUENCES.index(role)]}
                        for v in range(len(study.levels))]
        keep = [v for v, volumes in enumerate(per_vertebra) if volumes]
        probabilities = np.full((len(study.levels), len(CANCER_FINDINGS)), np.nan)
        if keep:
            packed = pack_cancer_input([per_vertebra[v] for v in keep], [str(study.levels[v]) for v in keep])
            logits = model(*(torch.as_tensor(a[None]) for a in packed))
            probabilities[keep] = torch.sigmoid(logits[0]).numpy()
        out.append(probabilities)
    return out


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Binary AUROC of ``scores`` against 0/1 ``labels`` (−1 and NaN scores skipped); None if one class."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    keep = (labels >= 0) & np.isfinite(scores)
    return macro_auroc(labels[keep].astype(int), np.stack([1.0 - scores[keep], scores[keep]], axis=1))


def finding_aurocs(studies: Sequence[CancerStudy], probabilities: Sequence[np.ndarray]) -> dict[str, float | None]:
    """AUROC per finding over every vertebra, against the generator's truth."""
    labels = np.concatenate([s.labels["truth"] for s in studies])
    scores = np.concatenate(list(probabilities))
    return {name: auroc(labels[:, i], scores[:, i]) for i, name in enumerate(CANCER_FINDINGS)}


def train_cancer(train: Sequence[CancerStudy], val: Sequence[CancerStudy], config: CancerConfig, out_path: Path) -> dict:
    """Train the SCT from ``config.labels``; keeps the checkpoint with the best validation mean AUROC."""
    if config.labels not in ("truth", "report"):
        raise ValueError(f"labels must be truth or report, not {config.labels!r}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    weights = positive_weights(np.concatenate([s.labels[config.labels] for s in train]))
    augment = intensity_augmentation() if config.augment else None
    started = time.perf_counter()
    encoder, pretrain_losses = pretrain_encoder(train, config, weights, augment, rng) if config.pretrain_steps else (None, [])
    pretrain_s = time.perf_counter() - started
    model = SpinalContextTransformer(encoder=encoder)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-2)
    schedule = warmup_cosine_schedule(optimiser, config.steps, config.warmup_steps)
    progress = TrainingProgress("cancer_sct", out_path, {"config": asdict(config), "pos_weight": weights.tolist(),
                                                         "pretrain_loss": pretrain_losses, "pretrain_s": pretrain_s},
                                log_every=config.log_every, higher_is_better=True)
    for step in range(1, config.steps + 1):
        model.train()
        chosen = rng.integers(len(train), size=config.batch_size)
        batch = collate([study_sample(train[i], config.labels, rng, config, augment) for i in chosen])
        with training_autocast():
            logits = model(batch.volumes, batch.sequences, batch.levels)
        logits = logits.float()
        loss = vertebra_loss(logits, batch.labels, weights) + config.study_weight * study_loss(logits, batch.present, batch.study_labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        progress.loss(step, loss.item())
        if step % config.validate_every == 0 or step == config.steps:
            scores = finding_aurocs(val, study_probabilities(model, val))
            progress.history.setdefault("val_by_finding", []).append((step, scores))
            values = [v for v in scores.values() if v is not None]
            progress.validation(step, float(np.mean(values)) if values else 0.0, model)
    return progress.finish()
