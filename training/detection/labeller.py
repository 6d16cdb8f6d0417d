"""Level labeller: appearance network, context network and their training (SpineNetV2 §3.2, §4.4.2).

* Appearance network: a 2D ResNet-10 (MONAI ``ResNet``) whose 16 input channels are the 16 lateral
  slices of an :func:`~operators.core.level_labelling.appearance_volume` (shape
  :data:`~operators.core.level_labelling.APPEARANCE_SHAPE`), → 23 logits (``LABELLER_CLASSES``, C3…S1).
  Trained with cross-entropy on volumes around true bodies, with in-plane jitter, rotation and scale
  (the box a real detection gives is never exact) and the shared intensity augmentation.
* Context network: a 1D MONAI ``UNet`` over the height axis of the height-probability map
  (23 channels in, 23 logits out per bin), trained with cross-entropy at every bin covered by a true
  body — including bodies dropped from the input with probability 0.1 (paper), so the network learns
  to infer a level from its neighbours. Its input maps are built from the appearance network's
  logits on augmented volumes, with a few bodies given another body's appearance: on its own training
  bodies the appearance network is far surer than on a new study, and a context network trained on
  those clean maps follows a confidently wrong appearance (a T10 named S1) instead of the column.

Transitional anatomy: an L6 is trained as class L5 and a T13 as class T12, so a six-lumbar spine
shows two consecutive "L5" bodies (and a thirteen-thoracic one two "T12"s); the beam search turns the
lower of such a pair into L6 / T13 at a penalty (:func:`operators.core.level_labelling.beam_search_levels`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import UNet
from monai.networks.nets.resnet import ResNet
from monai.transforms import RandAffined
from torch import nn

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.level_labelling import (
    APPEARANCE_SHAPE,
    N_CLASSES,
    appearance_volume,
    context_targets,
    detection_bins,
    height_probability_map,
    pad_bins,
    temperature_softmax,
)
from operators.core.levels import LABELLER_CLASSES, TRANSITIONAL_AFTER
from operators.core.vertebra_detection import SliceQuad, Vertebra3D, normalise_intensity
from training.augment import intensity_augmentation
from training.progress import TrainingProgress, training_autocast
from training.detection.slice_cache import SAGITTAL_KINDS, SOURCES, is_real, mixed_draw
from training.detection.truth_projection import slice_quads
from training.stages import start_from

@dataclass(frozen=True)
class LabellerConfig:
    """Labeller architecture and training settings (stored in the model cards)."""

    widen_factor: float = 0.5
    appearance_steps: int = 1500
    context_steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    drop_probability: float = 0.1
    real_fraction: float = 0.5
    seed: int = 0


def make_appearance_net(config: LabellerConfig) -> nn.Module:
    """(N, 16, 112, 112) normalised volume (lateral slices as channels) → (N, 23) level logits."""
    return ResNet(
        block="basic", layers=[1, 1, 1, 1], block_inplanes=[64, 128, 256, 512], spatial_dims=2,
        n_input_channels=APPEARANCE_SHAPE[0], conv1_t_size=7, conv1_t_stride=2,
        widen_factor=config.widen_factor, num_classes=N_CLASSES,
    )


def make_context_net() -> nn.Module:
    """(N, 23, B) height-probability map (B bins, a multiple of 8) → (N, 23, B) refined level logits."""
    return UNet(
        spatial_dims=1, in_channels=N_CLASSES, out_channels=N_CLASSES,
        channels=(32, 64, 128, 128), strides=(2, 2, 2), num_res_units=1, norm="batch",
    )


#: Levels trained as another class: transitional bodies as the level they extend (the beam search
#: turns the lower of two "L5"s into L6, of two "T12"s into T13) and C2 as C3 (the upper of two
#: "C3"s becomes C2, paper §3.2 step 6).
TRAINED_AS: dict[str, str] = {**TRANSITIONAL_AFTER, "C2": "C3"}


def level_class(level: str) -> int:
    """Training class (index in ``LABELLER_CLASSES``) of a true level; see :data:`TRAINED_AS`."""
    return LABELLER_CLASSES.index(TRAINED_AS.get(level, level))


S1_CLASS = LABELLER_CLASSES.index("S1")

#: How often a context training example that starts at S1 gets sacral-segment detections below it,
#: and how many at most (S2, S3): the detector finds them on some studies.
SACRAL_SEGMENT_PROBABILITY = 0.3
MAX_SACRAL_SEGMENTS = 2

#: Appearance passes per training body whose logits feed the context network: the first on the
#: cached volume, the others on augmented copies (see :func:`context_appearance_logits`).
CONTEXT_APPEARANCE_PASSES = 4

#: How often a body of a context training example takes the appearance of a random other body: the
#: appearance network sometimes names a body confidently and wrongly, and the column must win then.
APPEARANCE_SWAP_PROBABILITY = 0.1


def truth_vertebrae(truth: dict, series_instance_uid: str, pixels_shape: tuple[int, int, int], geometry) -> list[tuple[Vertebra3D, str]]:
    """True bodies of one sagittal stack as detector-style :class:`Vertebra3D` (score 1) with levels.

    A body is kept when its centroid falls inside the image in at least one slice where it is visible.
    """
    per_level: dict[str, list[SliceQuad]] = {}
    rows, cols = pixels_shape[1:]
    for index in range(pixels_shape[0]):
        outlines, levels = slice_quads(truth["vertebrae"], geometry, index)
        for outline, level in zip(outlines, levels):
            row, col = outline[4]
            if 0 <= row < rows and 0 <= col < cols:
                per_level.setdefault(level, []).append(SliceQuad(index, outline[4], outline[:4], 1.0))
    by_level = {v["level"]: v for v in truth["vertebrae"]}
    result = []
    for level, quads in per_level.items():
        entry = by_level[level]
        vertebra = Vertebra3D(
            series_instance_uid=series_instance_uid,
            centroid_mm=np.asarray(entry["centroid_mm"], dtype=float),
            corners_mm=np.asarray(entry["corners_mm"], dtype=float),
            detection_score=1.0,
            slice_quads=tuple(quads),
        )
        result.append((vertebra, level))
    return result


def write_labeller_cache(
    out: Path, stacks: Sequence[tuple[np.ndarray, VolumeGeometry, Sequence[tuple[Vertebra3D, str]]]], source: str = "synthetic"
) -> Path | None:
    """Appearance volumes of the true bodies of one study's sagittal stacks.

    Args:
        out: the ``.npz`` to write.
        stacks: per stack, its pixels after :func:`normalise_intensity` (S, R, C), its geometry and its
            true bodies as detector-style bodies with their levels.
        source: one of :data:`SOURCES`.

    Writes ``volumes`` (n, 16, 112, 112) float16, ``series`` (n,) the stack index, ``spans_mm``
    (n, 2) (inferior, superior z of the corners), ``levels`` (n,) str (classes are derived from the
    levels when loading, :func:`level_class`) and ``source``. Returns ``out``, or ``None`` when no
    stack holds a body.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    volumes, series_ids, spans, levels = [], [], [], []
    for series_id, (pixels, geometry, bodies) in enumerate(stacks):
        for vertebra, level in bodies:
            z = vertebra.corners_mm[:, 2]
            volumes.append(appearance_volume(pixels, geometry, vertebra).astype(np.float16))
            series_ids.append(series_id)
            spans.append((z.min(), z.max()))
            levels.append(level)
    if not volumes:
        return None
    np.savez(out, volumes=np.stack(volumes), series=np.asarray(series_ids),
             spans_mm=np.asarray(spans, dtype=np.float32), levels=np.asarray(levels, dtype=str), source=source)
    return out


def cache_labeller_study(study_dir: Path, cache_dir: Path, max_series: int = 2) -> Path | None:
    """:func:`write_labeller_cache` of up to ``max_series`` sagittal series of a generated study
    (``study_dir/study`` + ``truth.json``) into ``<cache>/<study>.npz``; kept if already there."""
    out = cache_dir / f"{study_dir.name}.npz"
    if out.exists():
        return out
    truth = json.loads((study_dir / "truth.json").read_text())
    kinds = {s["series_instance_uid"]: s["kind"] for s in truth["series"]}
    rng = np.random.default_rng(int(truth["seed"]))
    scan = scan_study_folder(study_dir / "study")
    candidates = [s for s in scan.series if kinds.get(s.series_instance_uid) in SAGITTAL_KINDS]
    rng.shuffle(candidates)
    stacks = []
    for series in candidates[:max_series]:
        loaded = series.stacks[0].load()
        if loaded.geometry is None:
            continue
        pixels = normalise_intensity(loaded.pixels)
        stacks.append((pixels, loaded.geometry, truth_vertebrae(truth, series.series_instance_uid, pixels.shape, loaded.geometry)))
    return write_labeller_cache(out, stacks)


@dataclass
class LabellerData:
    """All cached labeller studies in memory."""

    volumes: np.ndarray  # (n, 16, 112, 112) float16
    classes: np.ndarray  # (n,) int, index in LABELLER_CLASSES (level_class)
    groups: list[np.ndarray]  # indices of the bodies of each (study, series), caudal → cranial
    spans_mm: np.ndarray  # (n, 2)
    real: np.ndarray  # (n,) bool, from a ``real`` cache file

    @classmethod
    def load(cls, files: Sequence[Path]) -> "LabellerData":
        volumes, classes, spans, groups, real = [], [], [], [], []
        offset = 0
        for path in files:
            with np.load(path) as data:
                volumes.append(data["volumes"])
                classes.append(np.array([level_class(str(level)) for level in data["levels"]], dtype=np.int64))
                spans.append(data["spans_mm"])
                real.append(np.full(len(data["levels"]), is_real(data)))
                for series_id in np.unique(data["series"]):
                    members = np.flatnonzero(data["series"] == series_id)
                    order = np.argsort(data["spans_mm"][members].mean(axis=1))
                    groups.append(offset + members[order])
                offset += len(data["levels"])
        return cls(np.concatenate(volumes), np.concatenate(classes), groups, np.concatenate(spans), np.concatenate(real))

    def subset(self, real: bool) -> "LabellerData":
        """The bodies and groups of one source (indices renumbered)."""
        keep = np.flatnonzero(self.real == real)
        renumber = np.full(len(self.real), -1)
        renumber[keep] = np.arange(len(keep))
        groups = [renumber[g] for g in self.groups if len(g) and self.real[g[0]] == real]
        return LabellerData(self.volumes[keep], self.classes[keep], groups, self.spans_mm[keep], self.real[keep])


def _appearance_augmentation(seed: int):
    spatial = RandAffined(
        keys="image", prob=0.9, rotate_range=(math.radians(12),), scale_range=((-0.12, 0.12),),
        translate_range=((-10, 10), (-10, 10)), padding_mode="zeros",
    )
    spatial.set_random_state(seed)
    intensity = intensity_augmentation()
    intensity.set_random_state(seed + 1)
    return lambda volume: intensity(spatial({"image": volume}))["image"]


def train_appearance(
    data: LabellerData, val: LabellerData, config: LabellerConfig, out_path: Path, initial_state: dict | None = None
) -> dict:
    """Cross-entropy training of the appearance network; keeps the best validation accuracy.

    ``initial_state``: start from these weights (fine-tuning shipped models on a site's data) rather
    than from a random initialisation. Batches mix real and synthetic bodies (:func:`mixed_draw`).
    Validation accuracy is the mean over the sources present, so real bodies count as much as
    synthetic ones however few they are.
    """
    torch.manual_seed(config.seed)
    model = make_appearance_net(config)
    reinitialised = start_from(model, initial_state)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, config.appearance_steps) / config.appearance_steps))
    )
    augment = _appearance_augmentation(config.seed)
    rng = np.random.default_rng(config.seed)
    progress = TrainingProgress("appearance", out_path, {"config": asdict(config), "reinitialised": reinitialised},
                                log_every=50, higher_is_better=True)
    for step in range(1, config.appearance_steps + 1):
        model.train()
        chosen = mixed_draw(data.real, config.real_fraction, config.batch_size, rng)
        batch = torch.stack([torch.as_tensor(np.asarray(augment(data.volumes[i].astype(np.float32)))) for i in chosen])
        target = torch.as_tensor(data.classes[chosen], dtype=torch.long)
        with training_autocast():
            logits = model(batch)
        loss = nn.functional.cross_entropy(logits.float(), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        progress.loss(step, loss.item())
        if step % 250 == 0 or step == config.appearance_steps:
            correct = appearance_logits(model, val).argmax(1) == val.classes
            progress.validation(step, float(np.mean([correct[val.real == r].mean() for r in np.unique(val.real)])), model)
    return progress.finish()


@torch.no_grad()
def appearance_logits(
    model: nn.Module, data: LabellerData, batch_size: int = 64, augment: Callable[[np.ndarray], Any] | None = None
) -> np.ndarray:
    """(n, 23) logits of every cached volume, each passed through ``augment`` first when given."""
    model.eval()
    out = []
    for start in range(0, len(data.volumes), batch_size):
        volumes = data.volumes[start : start + batch_size].astype(np.float32)
        if augment is not None:
            volumes = np.stack([np.asarray(augment(volume)) for volume in volumes])
        out.append(model(torch.as_tensor(volumes, dtype=torch.float32)).numpy())
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES), np.float32)


@torch.no_grad()
def context_appearance_logits(
    model: nn.Module, data: LabellerData, passes: int = CONTEXT_APPEARANCE_PASSES, seed: int = 0, batch_size: int = 64
) -> np.ndarray:
    """``(passes, n, 23)`` appearance logits of every cached body: pass 0 on the cached volume, the
    others on copies with the appearance training augmentation (jitter, rotation, scale, intensity).

    The augmented passes are less sure and more often wrong, as the network is on bodies it never
    saw; :func:`context_example` draws one pass per body.
    """
    if passes < 1:
        raise ValueError("passes must be at least 1")
    augment = _appearance_augmentation(seed)
    return np.stack([appearance_logits(model, data, batch_size, augment if index else None) for index in range(passes)])


def context_example(
    data: LabellerData, logits: np.ndarray, group: np.ndarray, rng: np.random.Generator, augment: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One context-network training pair: padded input map (23, B) and per-bin targets (B,).

    ``logits``: ``(passes, n, 23)`` appearance logits of every body (:func:`context_appearance_logits`);
    without augmentation pass 0 is used.

    Augmentation: a random contiguous run of the bodies (a smaller field of view), one appearance
    pass drawn per body, with probability :data:`APPEARANCE_SWAP_PROBABILITY` a body's appearance
    swapped for a random other body's (its target stays), heights scaled by ±10 % (body size), each
    body dropped from the input with probability 0.1 while its target stays, and — when the run
    starts at S1 — with probability :data:`SACRAL_SEGMENT_PROBABILITY` one or two (up to
    :data:`MAX_SACRAL_SEGMENTS`) sacral segments stacked below it, each a little smaller than the
    one above, with an S1 appearance and target S1: the detector sometimes finds them, and the
    labeller drops every S1-rated body below S1
    (:func:`~operators.core.vertebra_pipeline.without_sacral_segments`, the beam search's S2).
    """
    members = group
    if augment and len(members) > 2:
        length = int(rng.integers(2, len(members) + 1))
        start = int(rng.integers(0, len(members) - length + 1))
        members = members[start : start + length]
    spans = data.spans_mm[members].astype(float)
    if augment:
        member_logits = logits[rng.integers(len(logits), size=len(members)), members]
        swapped = rng.random(len(members)) < APPEARANCE_SWAP_PROBABILITY
        member_logits[swapped] = logits[0, rng.integers(logits.shape[1], size=int(swapped.sum()))]
    else:
        member_logits = logits[0, members]
    classes = data.classes[members]
    if augment and classes[0] == S1_CLASS and rng.random() < SACRAL_SEGMENT_PROBABILITY:
        for _ in range(int(rng.integers(1, MAX_SACRAL_SEGMENTS + 1))):
            height = spans[0, 1] - spans[0, 0]
            segment = spans[0, 0] - height * rng.uniform(0.05, 0.25) - np.array([height * rng.uniform(0.8, 1.0), 0.0])
            spans = np.vstack([segment, spans])
            member_logits = np.vstack([logits[rng.integers(len(logits)), members[0]], member_logits])
            classes = np.concatenate([[S1_CLASS], classes])
    if augment:
        spans = (spans - spans.mean()) * rng.uniform(0.9, 1.1) + spans.mean()
    probabilities = temperature_softmax(member_logits)
    keep = np.ones(len(spans), bool)
    if augment:
        keep = rng.random(len(spans)) >= 0.1
        if not keep.any():
            keep[rng.integers(len(spans))] = True
    height_map = height_probability_map(spans[keep], probabilities[keep])
    # Targets on the input map's bins for every body, dropped ones included.
    targets = context_targets(spans, classes, height_map)
    inputs = pad_bins(height_map.probabilities)
    return inputs, np.pad(targets, (0, inputs.shape[1] - len(targets)), constant_values=-1)


def train_context(
    data: LabellerData, logits: np.ndarray, val: LabellerData, val_logits: np.ndarray, config: LabellerConfig, out_path: Path,
    initial_state: dict | None = None,
) -> dict:
    """Cross-entropy training of the context network on height maps built from appearance outputs
    (``logits``: ``(passes, n, 23)`` of :func:`context_appearance_logits`; ``val_logits``: ``(n, 23)``).

    Validation: per-body accuracy of the refined map's argmax at each body's centroid bin, without
    augmentation (the beam search then only has to repair what is left), averaged over the sources
    present as in :func:`train_appearance`; ``initial_state`` and the real/synthetic mix as there.
    """
    torch.manual_seed(config.seed)
    model = make_context_net()
    reinitialised = start_from(model, initial_state)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.999))
    rng = np.random.default_rng(config.seed)
    groups = [g for g in data.groups if len(g)]
    group_real = np.array([data.real[g[0]] for g in groups])
    progress = TrainingProgress("context", out_path, {"config": asdict(config), "reinitialised": reinitialised},
                                log_every=100, higher_is_better=True)
    for step in range(1, config.context_steps + 1):
        model.train()
        examples = [context_example(data, logits, groups[i], rng, augment=True)
                    for i in mixed_draw(group_real, config.real_fraction, 16, rng)]
        width = max(x.shape[1] for x, _ in examples)
        inputs = torch.as_tensor(np.stack([np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x, _ in examples]), dtype=torch.float32)
        targets = torch.as_tensor(np.stack([np.pad(t, (0, width - len(t)), constant_values=-1) for _, t in examples]))
        loss = nn.functional.cross_entropy(model(inputs), targets, ignore_index=-1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        progress.loss(step, loss.item())
        if step % 500 == 0 or step == config.context_steps:
            accuracy = [context_accuracy(model, val.subset(r), val_logits[val.real == r]) for r in np.unique(val.real)]
            progress.validation(step, float(np.mean(accuracy)), model)
    return progress.finish()


@torch.no_grad()
def context_accuracy(model: nn.Module, data: LabellerData, logits: np.ndarray) -> float:
    """Fraction of bodies whose refined argmax at the centroid bin is their training class
    (``logits``: ``(n, 23)`` appearance logits of ``data``)."""
    model.eval()
    rng = np.random.default_rng(0)
    correct = total = 0
    for group in data.groups:
        inputs, targets = context_example(data, logits[None], group, rng, augment=False)
        predicted = model(torch.as_tensor(inputs[None], dtype=torch.float32))[0].argmax(0).numpy()
        spans = data.spans_mm[group]
        height_map = height_probability_map(spans, temperature_softmax(logits[group]))
        bins = detection_bins(height_map, spans.mean(axis=1))
        correct += int((predicted[bins] == data.classes[group]).sum())
        total += len(group)
    return correct / max(total, 1)
