"""Training loops of the canal detector and the Bilsky graders on cached studies (:mod:`training.bilsky.cache`).

* **Canal detector**: random 96-pixel crops of the detector images of both modalities (rotated,
  rescaled, mirrored, usually around the canal, sometimes anywhere so that the canal is off the
  patch) with MONAI intensity changes; weighted squared error of the sac-centre heatmap. The kept
  checkpoint has the lowest validation mean error (mm) over whole validation images, detector alone.
* **Graders** (one per modality): batches drawn with probability ∝ ``count^-½`` per grade (grade 0
  outnumbers every other grade tens of times); cross-entropy on the prototype logits +
  ``compact_weight`` × compactness + ``vat_weight`` × virtual adversarial loss (Hallinan 2022);
  MR ROIs also get MONAI intensity changes, CT windows Gaussian noise; the virtual adversarial loss
  is taken on the first ``vat_batch_size`` ROIs of each batch. The kept checkpoint has the
  best validation balanced accuracy (mean recall over grades); its ``class_bias`` is then set on
  validation (:func:`calibrate_class_bias`: prior correction and high-grade offset, MR held to the
  issue's high-grade sensitivity and specificity).

AdamW with warm-up and cosine decay throughout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from operators.core.bilsky_pipeline import BILSKY_CLASSES, DETECTOR_PIXEL_MM, decode_canal
from operators.core.gradings import bilsky_is_high_grade
from training.augment import intensity_augmentation, random_patch_affine, warp_image
from training.bilsky.agreement import cohen_kappa, gwet_ac1
from training.bilsky.cache import BilskyStudy
from training.bilsky.networks import (
    CanalDetector,
    PrototypeGrader,
    compactness_loss,
    heatmap_loss,
    heatmap_target,
    virtual_adversarial_loss,
)
from training.grading.train import warmup_cosine_schedule
from training.progress import TrainingProgress

logger = logging.getLogger(__name__)

#: Detector training crop (pixels at DETECTOR_PIXEL_MM: 192 mm).
DETECTOR_PATCH_PX = 96


@dataclass(frozen=True)
class BilskyConfig:
    """Training settings (stored in the histories and the model cards)."""

    detector_steps: int = 1500
    detector_batch_size: int = 16
    grader_steps: int = 2000
    grader_batch_size: int = 32
    #: ROIs of each batch that also get the virtual adversarial loss (it costs two more passes).
    vat_batch_size: int = 12
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    compact_weight: float = 0.01
    vat_weight: float = 0.3
    validate_every: int = 250
    log_every: int = 50
    #: Off only for smoke tests that check a few steps can fit a handful of images.
    augment: bool = True
    seed: int = 0


def detector_batch(studies: Sequence[BilskyStudy], rng: np.random.Generator, size: int,
                   augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(size, 1, 96, 96)`` crops and their heatmap targets (module docstring)."""
    images, targets = [], []
    intensity = intensity_augmentation() if augment else None
    while len(images) < size:
        study = studies[int(rng.integers(len(studies)))]
        stack = int(rng.integers(len(study.detector_images)))
        k = int(rng.integers(len(study.detector_images[stack])))
        image, canal = study.detector_images[stack][k].astype(np.float32), study.canal_pixels[stack][k]
        centre = canal + rng.normal(0.0, 12.0, 2) if rng.random() < 0.85 else None
        affine = random_patch_affine(rng, image.shape, DETECTOR_PATCH_PX, flip_rows=0.05, centre_source=centre) if augment else \
            random_patch_affine(np.random.default_rng(0), image.shape, DETECTOR_PATCH_PX, max_rotation_deg=0.0,
                                scale_range=(1.0, 1.0), flip_rows=0.0, flip_cols=0.0, centre_source=canal)
        patch = warp_image(image, affine, DETECTOR_PATCH_PX)
        if intensity is not None:
            patch = np.asarray(intensity({"image": patch[None]})["image"], dtype=np.float32)[0]
        where = affine.map_points(canal)
        inside = bool(np.all(where >= 0) and np.all(where <= DETECTOR_PATCH_PX - 1))
        images.append(patch)
        targets.append(heatmap_target((DETECTOR_PATCH_PX, DETECTOR_PATCH_PX), tuple(np.round(where)) if inside else None))
    return torch.as_tensor(np.stack(images))[:, None], torch.stack(targets)[:, None]


def _pad(image: np.ndarray, multiple: int = 16) -> np.ndarray:
    rows, columns = (int(np.ceil(n / multiple) * multiple) for n in image.shape)
    return np.pad(image, ((0, rows - image.shape[0]), (0, columns - image.shape[1])))


@torch.no_grad()
def detector_errors_mm(model: CanalDetector, studies: Sequence[BilskyStudy]) -> np.ndarray:
    """Distance (mm) between the detected and true sac centre on every image, detector alone
    (``inf`` where nothing is found)."""
    model.eval()
    errors = []
    for study in studies:
        for images, canals in zip(study.detector_images, study.canal_pixels):
            logits = model(torch.as_tensor(np.stack([_pad(i.astype(np.float32)) for i in images]))[:, None]).numpy()[:, 0]
            for heat, canal in zip(logits, canals):
                found = decode_canal(heat, None)
                errors.append(np.inf if found is None else float(np.linalg.norm(found[0] - canal)) * DETECTOR_PIXEL_MM)
    return np.asarray(errors)


def train_detector(train: Sequence[BilskyStudy], val: Sequence[BilskyStudy], config: BilskyConfig, out_path: Path) -> dict:
    """Train the :class:`CanalDetector`; keeps the checkpoint with the lowest validation mean error
    (misses count as 50 mm)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = CanalDetector()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = warmup_cosine_schedule(optimiser, config.detector_steps, config.warmup_steps)
    progress = TrainingProgress("canal_detector", out_path, {"config": asdict(config)}, log_every=config.log_every,
                                higher_is_better=False)
    for step in range(1, config.detector_steps + 1):
        model.train()
        images, targets = detector_batch(train, rng, config.detector_batch_size, config.augment)
        loss = heatmap_loss(model(images), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        progress.loss(step, loss.item())
        if step % config.validate_every == 0 or step == config.detector_steps:
            errors = detector_errors_mm(model, val)
            progress.history.setdefault("val_within_5mm", []).append((step, float(np.mean(errors <= 5.0))))
            progress.validation(step, float(np.mean(np.minimum(errors, 50.0))), model)
    return progress.finish()


@dataclass(frozen=True)
class BiasCalibration:
    """What the class bias is chosen by on validation (:func:`calibrate_class_bias`).

    Attributes:
        metric: ``metric(labels, predicted, classes)``, the issue's target measure (Hallinan 2022
            reports Gwet's AC1 for MR, Hallinan 2023 Cohen's kappa for CT).
        high_grade_floor: ``(sensitivity, specificity)`` of the high-grade call validation must
            reach, where some bias reaches it; ``None``: the metric alone.
    """

    metric: Callable[[np.ndarray, np.ndarray, int], float]
    high_grade_floor: tuple[float, float] | None = None


#: MR: the issue's high-grade sensitivity 97.6 % / specificity 93.6 % (Hallinan 2022) bound AC1's
#: choice: AC1 alone, dominated by the nine in ten grade-0 images, chose a bias that missed a
#: quarter of the validation high-grade images (1c called 0). CT has a kappa target only.
CALIBRATION: dict[str, BiasCalibration] = {"MR": BiasCalibration(gwet_ac1, (0.976, 0.936)), "CT": BiasCalibration(cohen_kappa)}


def grade_sampling_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Per-ROI sampling probability ∝ ``count(grade)^-½`` (module docstring)."""
    counts = np.bincount(labels, minlength=classes).astype(float)
    weights = 1.0 / np.sqrt(np.maximum(counts[labels], 1.0))
    return weights / weights.sum()


@torch.no_grad()
def grader_window_logits(model: PrototypeGrader, rois: np.ndarray, batch: int = 256) -> torch.Tensor:
    """``(W, N, classes)`` logits of cached ROIs, without ``class_bias``."""
    model.eval()
    return torch.cat([model.window_logits(torch.as_tensor(rois[i:i + batch].astype(np.float32)))
                      for i in range(0, len(rois), batch)], dim=1)


def prior_log_ratio(labels: np.ndarray, sampling: np.ndarray, classes: int) -> np.ndarray:
    """``log(p_k / q_k)`` per grade: ``p`` the grade mix of the training images, ``q`` the mix the
    batches were drawn with (``sampling``, per-ROI probabilities). Added to the logits it turns a
    classifier trained on ``q`` into one for ``p`` (Bayes' rule; Menon et al. 2021's logit adjustment)."""
    true = np.bincount(labels, minlength=classes) / max(len(labels), 1)
    drawn = np.bincount(labels, weights=sampling, minlength=classes)
    return np.log(np.maximum(true, 1e-9) / np.maximum(drawn, 1e-9))


#: Fractions of the full prior correction tried on validation (0: none, 1: Bayes' rule).
CLASS_BIAS_SCALES: tuple[float, ...] = tuple(np.round(np.arange(0.0, 1.01, 0.1), 2))
#: Logit offsets added to the high grades on top of the prior correction (e^6 ≈ 400× the odds).
HIGH_GRADE_BOOSTS: tuple[float, ...] = tuple(np.round(np.arange(0.0, 6.01, 0.25), 2))


def calibrate_class_bias(model: PrototypeGrader, log_ratio: np.ndarray, high_grade: np.ndarray, val_rois: np.ndarray,
                         val_labels: np.ndarray, calibration: BiasCalibration) -> tuple[tuple[float, float], dict[tuple[float, float], dict]]:
    """Set ``model.class_bias`` to ``scale × log_ratio + boost × high_grade`` (``high_grade`` the
    ``(classes,)`` mask of high grades) with the :data:`CLASS_BIAS_SCALES` × :data:`HIGH_GRADE_BOOSTS`
    pair that scores best on validation by ``calibration.metric`` among the pairs that reach
    ``calibration.high_grade_floor`` (where none does, the pairs that come closest: smallest largest
    shortfall of sensitivity or specificity); returns ``(scale, boost)`` and every
    pair's metric, high-grade sensitivity and specificity (keys ``(scale, boost)``). Why a scale: the
    full correction maximises accuracy, which on a scale where nine in ten images are grade 0 would
    give up the rare grades the agreement measures count; why a boost: it moves the high-grade call
    alone, which the floor is about."""
    classes = len(log_ratio)
    logits = grader_window_logits(model, val_rois)
    high = np.asarray(high_grade, dtype=bool)
    true_high = high[val_labels]
    scores: dict[tuple[float, float], dict] = {}
    for scale in CLASS_BIAS_SCALES:
        for boost in HIGH_GRADE_BOOSTS:
            bias = torch.as_tensor(scale * log_ratio + boost * high, dtype=logits.dtype)
            predicted = torch.softmax(logits + bias, dim=-1).mean(dim=0).argmax(dim=1).numpy()
            called_high = high[predicted]
            scores[(float(scale), float(boost))] = {
                "metric": float(calibration.metric(val_labels, predicted, classes)),
                "high_sensitivity": float(np.mean(called_high[true_high])) if true_high.any() else None,
                "high_specificity": float(np.mean(~called_high[~true_high])) if (~true_high).any() else None,
            }

    def shortfall(score: dict) -> float:
        """How far the pair stays below the floor (0 when it reaches it)."""
        floor = calibration.high_grade_floor
        if floor is None:
            return 0.0
        rates = (score["high_sensitivity"], score["high_specificity"])
        return max(0.0, *(minimum - value for value, minimum in zip(rates, floor) if value is not None))

    # Where no pair reaches the floor, the pairs that come closest to it compete.
    closest = min(shortfall(score) for score in scores.values())
    candidates = [pair for pair, score in scores.items() if shortfall(score) == closest]
    # Ties go to the smallest boost, then the smallest scale: the least change to what training learnt.
    scale, boost = max(candidates, key=lambda pair: (scores[pair]["metric"], -pair[1], -pair[0]))
    model.class_bias.copy_(torch.as_tensor(scale * log_ratio + boost * high, dtype=model.class_bias.dtype))
    return (scale, boost), scores


@torch.no_grad()
def grader_predictions(model: PrototypeGrader, rois: np.ndarray, batch: int = 256) -> np.ndarray:
    """``(N, classes)`` probabilities of cached ROIs."""
    model.eval()
    return np.concatenate([model(torch.as_tensor(rois[i:i + batch].astype(np.float32))).numpy()
                           for i in range(0, len(rois), batch)]) if len(rois) else np.zeros((0, 0))


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Mean recall over the grades present in ``labels``."""
    recalls = [float(np.mean(predicted[labels == c] == c)) for c in range(classes) if np.any(labels == c)]
    return float(np.mean(recalls)) if recalls else 0.0


def train_grader(modality: str, train: Sequence[BilskyStudy], val: Sequence[BilskyStudy], config: BilskyConfig,
                 out_path: Path) -> dict:
    """Train the :class:`PrototypeGrader` of ``modality`` (``"MR"``/``"CT"``) on its studies."""
    classes = len(BILSKY_CLASSES[modality])
    train = [s for s in train if s.modality == modality]
    val = [s for s in val if s.modality == modality]
    if not train:
        raise ValueError(f"no cached {modality} training studies")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    rois = np.concatenate([s.rois for s in train])
    labels = np.concatenate([s.labels for s in train])
    val_rois = np.concatenate([s.rois for s in val]) if val else np.zeros((0, *rois.shape[1:]), dtype=rois.dtype)
    val_labels = np.concatenate([s.labels for s in val]) if val else np.zeros(0, dtype=np.int64)
    probabilities = grade_sampling_weights(labels, classes)
    model = PrototypeGrader(classes, windows=rois.shape[1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = warmup_cosine_schedule(optimiser, config.grader_steps, config.warmup_steps)
    intensity = intensity_augmentation() if config.augment and modality == "MR" else None
    progress = TrainingProgress(
        f"bilsky_{modality.lower()}", out_path,
        {"config": asdict(config), "train_rois": int(len(labels)), "train_counts": np.bincount(labels, minlength=classes).tolist()},
        log_every=config.log_every, higher_is_better=True)
    for step in range(1, config.grader_steps + 1):
        model.train()
        chosen = rng.choice(len(labels), size=config.grader_batch_size, p=probabilities)
        batch = rois[chosen].astype(np.float32)
        if intensity is not None:
            # One draw per group of 8 ROIs (the group is the transform's channel axis): per-ROI
            # draws cost more than the network step.
            batch = np.concatenate([np.asarray(intensity({"image": group[:, 0]})["image"], dtype=np.float32)[:, None]
                                    for group in np.array_split(batch, max(len(batch) // 8, 1))])
        elif config.augment:
            batch = batch + rng.normal(0.0, 0.02, batch.shape).astype(np.float32)
        inputs, targets = torch.as_tensor(batch), torch.as_tensor(labels[chosen])
        # One pass gives the logits, the compactness term and VAT's clean predictions.
        distances = model.distances(model.embed(inputs))
        loss = F.cross_entropy(-distances.reshape(-1, classes), targets.repeat(model.windows))
        loss = loss + config.compact_weight * compactness_loss(distances, targets)
        if config.vat_weight:
            vat = config.vat_batch_size
            loss = loss + config.vat_weight * virtual_adversarial_loss(model, inputs[:vat], -distances[:, :vat])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        progress.loss(step, loss.item())
        if step % config.validate_every == 0 or step == config.grader_steps:
            predicted = grader_predictions(model, val_rois).argmax(axis=1) if len(val_labels) else np.zeros(0, dtype=int)
            score = balanced_accuracy(val_labels, predicted, classes)
            if len(val_labels):
                progress.history.setdefault("val_ac1", []).append((step, gwet_ac1(val_labels, predicted, classes)))
            progress.validation(step, score, model)
    history = progress.finish()
    if len(val_labels):
        model.load_state_dict(torch.load(out_path))
        high_grade = np.array([bilsky_is_high_grade(grade) for grade in BILSKY_CLASSES[modality]])
        (scale, boost), scores = calibrate_class_bias(model, prior_log_ratio(labels, probabilities, classes), high_grade,
                                                      val_rois, val_labels, CALIBRATION[modality])
        torch.save(model.state_dict(), out_path)
        chosen = scores[(scale, boost)]
        # Every pair's scores stay in work (hundreds of them); the manifest gets the choice.
        out_path.with_suffix(".calibration.json").write_text(
            json.dumps({f"{s:g},{b:g}": score for (s, b), score in scores.items()}, indent=1))
        history["class_bias"] = {"scale": scale, "high_grade_boost": boost, "validation": chosen, "bias": model.class_bias.tolist()}
        logger.info("bilsky_%s: class bias scale %.1f, high-grade boost %.2f (validation %s)", modality.lower(), scale, boost, chosen)
    return history
