"""Canal-detector images and grader ROIs of generated studies, cached once per study.

Each study becomes ``<cache>/<study>.npz`` through the app's own path (series roles, stack loading,
:func:`operators.core.bilsky_pipeline.detector_input` and :func:`~operators.core.bilsky_pipeline.canal_roi`),
with the generator's thecal sac centre (``truth.json`` ``bilsky[].sac_centre_mm``) as the canal:

* ``det_<i>`` ``(S, H, W)`` float16 — detector input of axial stack ``i``; ``canal_<i>`` ``(S, 2)``
  float32 — the sac centre in its pixels (row, column);
* ``rois`` ``(N, C, 64, 64)`` float16 — grader inputs, ``copies`` per image (more for images with
  epidural disease, which are rare), each centred ``N(0, jitter_mm²)`` per in-plane axis off the true
  centre, turned by up to ``rotation_deg`` and mirrored left–right half the time, as the detector
  and patient positioning frame them; ``labels`` ``(N,)`` int64 — grade index in
  :data:`~operators.core.bilsky_pipeline.BILSKY_CLASSES` of the modality; ``images`` ``(N,)`` —
  which image (index into the study's graded images) each ROI comes from;
* ``modality`` — ``"MR"`` or ``"CT"`` (one modality per study folder of the training sets).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.core.bilsky_pipeline import BILSKY_CLASSES, axial_sources, canal_roi, detector_input
from operators.core.dicom_io import scan_study_folder
from operators.core.series_roles import assign_roles

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoiSampling:
    """How many jittered ROIs each image gives (module docstring)."""

    jitter_mm: float = 1.5
    rotation_deg: float = 15.0
    copies_normal: int = 2
    copies_disease: int = 10


#: Validation and evaluation: one ROI per image at the true centre.
EXACT = RoiSampling(jitter_mm=0.0, rotation_deg=0.0, copies_normal=1, copies_disease=1)


def cache_bilsky_study(study_dir: Path, cache_dir: Path, sampling: RoiSampling) -> Path | None:
    """Write ``<cache_dir>/<study>.npz`` (module docstring); ``None`` without a graded axial image."""
    out = cache_dir / f"{study_dir.name}.npz"
    if out.exists():
        return out
    truth = json.loads((study_dir / "truth.json").read_text())
    scan = scan_study_folder(study_dir / "study")
    sources, _ = axial_sources(scan, assign_roles(scan.series))
    by_sop = {entry["sop_instance_uid"]: entry for entry in truth.get("bilsky") or []}
    rng = np.random.default_rng(int(truth["seed"]))
    arrays: dict[str, np.ndarray] = {}
    rois, labels, images = [], [], []
    modality = None
    image_index = -1
    for i, stack in enumerate(sources):
        entries = [by_sop.get(instance.sop_instance_uid) for instance in stack.instances]
        if any(entry is None for entry in entries):
            continue
        modality = stack.modality
        pixels, grid = detector_input(stack)
        arrays[f"det_{i}"] = pixels[:, 0].astype(np.float16)
        arrays[f"canal_{i}"] = grid.lps_to_index(np.asarray([e["sac_centre_mm"] for e in entries]))[:, 1:].astype(np.float32)
        classes = BILSKY_CLASSES[stack.modality]
        for entry in entries:
            image_index += 1
            grade = classes.index(entry["grade"])
            centre = np.asarray(entry["sac_centre_mm"], dtype=float)
            in_plane = np.stack([stack.geometry.affine[:3, 1] / stack.geometry.spacing_mm[1],
                                 stack.geometry.affine[:3, 2] / stack.geometry.spacing_mm[2]])
            for _ in range(sampling.copies_disease if grade else sampling.copies_normal):
                shift = rng.normal(0.0, sampling.jitter_mm, 2) @ in_plane if sampling.jitter_mm else 0.0
                rotation = float(rng.uniform(-sampling.rotation_deg, sampling.rotation_deg)) if sampling.rotation_deg else 0.0
                mirror = bool(sampling.rotation_deg and rng.random() < 0.5)
                rois.append(canal_roi(stack, centre + shift, rotation, mirror).astype(np.float16))
                labels.append(grade)
                images.append(image_index)
    if not rois:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    with open(partial, "wb") as handle:
        np.savez(handle, rois=np.stack(rois), labels=np.asarray(labels, dtype=np.int64), images=np.asarray(images, dtype=np.int64),
                 modality=np.asarray(modality), **arrays)
    partial.rename(out)  # a killed cache run leaves no truncated file that a later run would trust
    return out


@dataclass
class BilskyStudy:
    """One cached study in memory (arrays as in the module docstring)."""

    name: str
    modality: str
    detector_images: list[np.ndarray]   # (S, H, W) per stack
    canal_pixels: list[np.ndarray]      # (S, 2) per stack
    rois: np.ndarray
    labels: np.ndarray
    images: np.ndarray

    @classmethod
    def load(cls, path: Path) -> "BilskyStudy":
        with np.load(path) as data:
            stacks = sorted(int(key[4:]) for key in data.files if key.startswith("det_"))
            return cls(path.stem, str(data["modality"]), [data[f"det_{i}"] for i in stacks],
                       [data[f"canal_{i}"] for i in stacks], data["rois"], data["labels"], data["images"])


def load_bilsky_studies(folder: Path) -> list[BilskyStudy]:
    """Every cached study under ``folder``, in name order."""
    return [BilskyStudy.load(path) for path in sorted(folder.glob("*.npz"))]
