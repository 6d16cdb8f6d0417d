"""Body volumes and labels of every vertebra of generated studies, cached once per study.

Each study becomes ``<cache>/<study>.npz`` through the app's own path (series roles, the detector's
sagittal stacks, :func:`operators.core.cancer_pipeline.vertebra_sequence_volumes`), with the
generator's true vertebrae in place of detections (moved by ``jitter_mm`` per body in training, as
the disc cache does, so the model learns from bodies framed as imprecisely as the detector frames them):

* ``volumes`` (V, 3, 9, 112, 112) float16 — body volume per vertebra and CANCER_SEQUENCES slot
  (zeros where that sequence does not show the body);
* ``available`` (V, 3) bool — which slots hold a volume;
* ``levels`` (V,) str — level names, cranial → caudal (vertebrae no sequence shows are left out);
* ``truth`` (V, 3) int8 — the generator's per-vertebra labels per CANCER_FINDINGS entry (1 / 0);
* ``report`` (V, 3) int8 — labels read from the study's report by
  :func:`training.reports.labeller.label_report` (1 positive, 0 negative, −1 unknown), with the
  levels in view as the imaged levels;
* ``truth_study`` / ``report_study`` (3,) int8 — study-level labels (any vertebra), the report's
  from its own study-level statements ("widespread metastatic disease").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.core.cancer_pipeline import CANCER_SEQUENCES, cancer_sources, vertebra_sequence_volumes
from operators.core.gradings import CANCER_FINDINGS
from operators.core.levels import LEVELS_WITHOUT_BODY
from operators.core.volume_extraction import VERTEBRA_VOLUME_SHAPE
from training.grading.cache import GeneratedStudy, truth_vertebrae
from training.reports.labeller import label_report

logger = logging.getLogger(__name__)

#: Report label → training target.
REPORT_TARGETS: dict[str, int] = {"positive": 1, "negative": 0, "unknown": -1}
#: Label sources the model can be trained from.
LABEL_SOURCES: tuple[str, ...] = ("truth", "report")


def truth_labels(lesions: dict) -> np.ndarray:
    """(3,) int8 per CANCER_FINDINGS entry from a truth ``lesions`` dict."""
    return np.asarray([1 if lesions.get(name) else 0 for name in CANCER_FINDINGS], dtype=np.int8)


def cache_cancer_study(study_dir: Path, cache_dir: Path, jitter_mm: float) -> Path | None:
    """Write ``<cache_dir>/<study>.npz`` (module docstring); ``None`` when no body is in view."""
    out = cache_dir / f"{study_dir.name}.npz"
    if out.exists():
        return out
    study = GeneratedStudy.read(study_dir)
    truth = study.truth
    sources = cancer_sources(study.decisions, study.stacks)
    lesions = {v["level"]: v.get("lesions") or {} for v in truth["vertebrae"]}
    rows = []
    # Every true body, not only those whose centroid is in view: one cut by the field-of-view edge
    # still counts when enough of it is in view (the same rule the app applies).
    for vertebra in truth_vertebrae(truth, jitter_mm, np.random.default_rng(int(truth["seed"]))):
        if vertebra.level in LEVELS_WITHOUT_BODY:
            continue
        best = vertebra_sequence_volumes(vertebra, sources)
        if best:
            rows.append((vertebra.level, best))
    if not rows:
        return None
    levels = [level for level, _ in rows]
    labels = label_report(truth.get("report_text", ""), levels)
    volumes = np.zeros((len(rows), len(CANCER_SEQUENCES), *VERTEBRA_VOLUME_SHAPE), dtype=np.float16)
    available = np.zeros((len(rows), len(CANCER_SEQUENCES)), dtype=bool)
    for v, (_, best) in enumerate(rows):
        for role, (pixels, _) in best.items():
            slot = CANCER_SEQUENCES.index(role)
            volumes[v, slot], available[v, slot] = pixels, True
    truth_rows = np.stack([truth_labels(lesions.get(level, {})) for level in levels])
    report_rows = np.asarray([[REPORT_TARGETS[labels.vertebra_labels[level][name]] for name in CANCER_FINDINGS]
                              for level in levels], dtype=np.int8)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    with open(partial, "wb") as handle:
        np.savez(
            handle, volumes=volumes, available=available, levels=np.asarray(levels, dtype=str),
            truth=truth_rows, report=report_rows, truth_study=truth_rows.max(axis=0),
            report_study=np.asarray([REPORT_TARGETS[labels.study_labels[name]] for name in CANCER_FINDINGS], dtype=np.int8),
        )
    partial.rename(out)  # a killed cache run leaves no truncated file that a later run would trust
    return out


@dataclass
class CancerStudy:
    """One cached study in memory (arrays as in the module docstring)."""

    name: str
    volumes: np.ndarray
    available: np.ndarray
    levels: np.ndarray
    labels: dict[str, np.ndarray]        # label source → (V, 3)
    study_labels: dict[str, np.ndarray]  # label source → (3,)

    @classmethod
    def load(cls, path: Path) -> "CancerStudy":
        with np.load(path) as data:
            return cls(
                path.stem, data["volumes"], data["available"], data["levels"],
                {source: data[source].astype(np.int64) for source in LABEL_SOURCES},
                {source: data[f"{source}_study"].astype(np.int64) for source in LABEL_SOURCES},
            )


def load_cancer_studies(folder: Path) -> list[CancerStudy]:
    """Every cached study under ``folder``, in name order."""
    return [CancerStudy.load(path) for path in sorted(folder.glob("*.npz"))]
