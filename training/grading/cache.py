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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.core.dicom_io import StudyScan, scan_study_folder
from operators.core.grading_pipeline import extract_study_views, multiview_input, spinenet_input
from operators.core.gradings import RSNA_CONDITIONS, RSNA_SEVERITIES, SPINENET_GRADINGS
from operators.core.levels import RSNA_DISCS
from operators.core.onnx_models import open_model
from operators.core.series_roles import SeriesDecision, assign_roles
from operators.core.vertebra_pipeline import (
    APPEARANCE_MODEL,
    CONTEXT_MODEL,
    DETECTOR_MODEL,
    SagittalStack,
    detect_vertebrae,
    label_vertebrae,
    report_entries,
    sagittal_stacks,
)
from operators.core.volume_extraction import DiscViews, VertebraLike

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


@dataclass(frozen=True)
class GeneratedStudy:
    """A generated study folder read the way the app reads it: truth, scan, series roles and the
    sagittal stacks the detector would load."""

    truth: dict
    scan: StudyScan
    decisions: list[SeriesDecision]
    stacks: list[SagittalStack]

    @classmethod
    def read(cls, study_dir: Path) -> "GeneratedStudy":
        """``study_dir`` holds ``truth.json`` and the DICOM folder ``study/`` (``python -m training generate``)."""
        truth = json.loads((study_dir / "truth.json").read_text())
        scan = scan_study_folder(study_dir / "study")
        decisions = assign_roles(scan.series)
        stacks, _ = sagittal_stacks(scan, decisions)
        return cls(truth, scan, decisions, stacks)

    def vertebrae_in_view(self, jitter_mm: float, rng: np.random.Generator) -> list[TruthVertebra]:
        """True bodies (jittered) whose centroid a sagittal stack shows, as the detector would report
        them (the truth lists the whole spine)."""
        return [v for v in truth_vertebrae(self.truth, jitter_mm, rng)
                if any(stack.geometry.contains(v.centroid_mm) for stack in self.stacks)]

    def vertebrae(self, source: str, models: Path) -> Sequence[VertebraLike]:
        """The vertebrae an evaluation frames its volumes from: ``truth`` (unjittered, the later stage
        alone) or ``detected`` (the app's detector and labeller with the models in ``models``)."""
        if source == "truth":
            return truth_vertebrae(self.truth, 0.0, np.random.default_rng(0))
        if not self.stacks:
            return []
        fused = detect_vertebrae(self.stacks, open_model(DETECTOR_MODEL, models))
        if not fused:
            return []
        labelled = label_vertebrae(fused, self.stacks, open_model(APPEARANCE_MODEL, models), open_model(CONTEXT_MODEL, models))[0]
        return list(report_entries(labelled))


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
    study = GeneratedStudy.read(study_dir)
    in_view = study.vertebrae_in_view(jitter_mm, np.random.default_rng(int(study.truth["seed"])))
    views, _ = extract_study_views(study.scan, study.decisions, study.stacks, in_view)
    truth_discs = {disc["level"]: disc for disc in study.truth["discs"]}
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
