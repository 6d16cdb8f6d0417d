"""Network inputs and labels of every disc of generated studies, cached once per study.

Reading DICOM, selecting series and extracting views dominate a training step if done per sample,
so each study is converted once into ``<cache>/<study>.npz`` through the app's own path
(:func:`operators.core.grading_pipeline.extract_study_views`, :func:`spinenet_input`,
:func:`multiview_input`), with the generator's true vertebrae in place of detections:

* ``spinenet`` (n, 2, 9, 112, 224) float16 — SpineNetV2 grader inputs;
* ``slices`` (n, T, 112, 224) float16 and ``tokens`` (n, T, 3) int64 — multi-view grader inputs;
* ``gradings`` (n, 11) int64 — class index per SPINENET_GRADINGS name (−1 unknown);
* ``rsna`` (n, 5) int64 — severity index per RSNA_CONDITIONS (−1 unknown or not a lumbar disc);
* ``levels`` (n,) str — disc names.

Training studies get the true vertebrae moved by a random offset per body (``jitter_mm`` standard
deviation per axis), so that the graders learn from discs framed as imprecisely as the detector
frames them (its localisation error is 1–2 mm); validation studies use the truth unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.core.dicom_io import scan_study_folder
from operators.core.grading_pipeline import extract_study_views, multiview_input, spinenet_input
from operators.core.gradings import RSNA_CONDITIONS, RSNA_SEVERITIES, SPINENET_GRADINGS
from operators.core.levels import RSNA_DISCS
from operators.core.series_roles import assign_roles
from operators.core.vertebra_pipeline import sagittal_stacks
from operators.core.volume_extraction import DiscViews

logger = logging.getLogger(__name__)

#: Standard deviation (mm, per axis) of the offset given to each true body of a training study.
TRAIN_JITTER_MM = 1.5


@dataclass(frozen=True)
class TruthVertebra:
    """A true vertebra in the form the extractor takes (:class:`~operators.core.volume_extraction.VertebraLike`)."""

    level: str
    centroid_mm: np.ndarray
    corners_mm: np.ndarray


def truth_vertebrae(truth: dict, jitter_mm: float, rng: np.random.Generator) -> list[TruthVertebra]:
    """The study's true bodies, each moved rigidly by ``N(0, jitter_mm²)`` per axis."""
    bodies = []
    for vertebra in truth["vertebrae"]:
        offset = rng.normal(0.0, jitter_mm, 3) if jitter_mm > 0 else np.zeros(3)
        bodies.append(TruthVertebra(
            vertebra["level"], np.asarray(vertebra["centroid_mm"], dtype=float) + offset,
            np.asarray(vertebra["corners_mm"], dtype=float) + offset,
        ))
    return bodies


def disc_labels(disc: dict) -> tuple[np.ndarray, np.ndarray]:
    """(11,) grading class indices and (5,) RSNA severity indices of one truth disc (−1 unknown)."""
    gradings = np.full(len(SPINENET_GRADINGS), -1, dtype=np.int64)
    for index, (name, classes) in enumerate(SPINENET_GRADINGS.items()):
        value = disc.get("gradings", {}).get(name)
        if value is not None:
            gradings[index] = classes.index(int(value))
    rsna = np.full(len(RSNA_CONDITIONS), -1, dtype=np.int64)
    if disc["level"] in RSNA_DISCS:
        for index, condition in enumerate(RSNA_CONDITIONS):
            severity = disc.get("rsna", {}).get(condition)
            if severity is not None:
                rsna[index] = RSNA_SEVERITIES.index(severity)
    return gradings, rsna


def cache_grading_study(study_dir: Path, cache_dir: Path, jitter_mm: float) -> Path | None:
    """Write ``<cache_dir>/<study>.npz`` (see the module docstring); ``None`` when no disc has views."""
    out = cache_dir / f"{study_dir.name}.npz"
    if out.exists():
        return out
    truth = json.loads((study_dir / "truth.json").read_text())
    rng = np.random.default_rng(int(truth["seed"]))
    scan = scan_study_folder(study_dir / "study")
    decisions = assign_roles(scan.series)
    stacks, _ = sagittal_stacks(scan, decisions)
    # Only bodies a sagittal stack shows, as the detector would report (the truth lists the whole spine).
    in_view = [v for v in truth_vertebrae(truth, jitter_mm, rng)
               if any(stack.geometry.contains(v.centroid_mm) for stack in stacks)]
    views, _ = extract_study_views(scan, decisions, stacks, in_view)
    truth_discs = {disc["level"]: disc for disc in truth["discs"]}
    rows = [(v, *disc_labels(truth_discs[v.frame.level])) for v in views if v.frame.level in truth_discs and v.sagittal]
    return write_disc_cache(out, rows) if rows else None


def write_disc_cache(out: Path, rows: list[tuple[DiscViews, np.ndarray, np.ndarray]]) -> Path:
    """Write ``out`` (.npz, module docstring) from ``(views, (11,) gradings, (5,) rsna)`` per disc."""
    inputs = [multiview_input(views) for views, _, _ in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    with open(partial, "wb") as handle:
        np.savez(
            handle,
            spinenet=np.stack([spinenet_input(views) for views, _, _ in rows]).astype(np.float16),
            slices=np.stack([s for s, _ in inputs]).astype(np.float16),
            tokens=np.stack([t for _, t in inputs]),
            gradings=np.stack([g for _, g, _ in rows]),
            rsna=np.stack([r for _, _, r in rows]),
            levels=np.asarray([views.frame.level for views, _, _ in rows], dtype=str),
        )
    partial.rename(out)  # a killed cache run leaves no truncated file that a later run would trust
    return out


@dataclass
class GradingData:
    """Every cached disc of one split in memory (arrays as in the module docstring)."""

    spinenet: np.ndarray
    slices: np.ndarray
    tokens: np.ndarray
    gradings: np.ndarray
    rsna: np.ndarray
    levels: np.ndarray

    @classmethod
    def load(cls, paths: list[Path]) -> "GradingData":
        parts: dict[str, list[np.ndarray]] = {name: [] for name in ("spinenet", "slices", "tokens", "gradings", "rsna", "levels")}
        for path in paths:
            with np.load(path) as data:
                for name, part in parts.items():
                    part.append(data[name])
        return cls(**{name: np.concatenate(part) for name, part in parts.items()})

    def __len__(self) -> int:
        return len(self.levels)
