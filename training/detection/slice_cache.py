"""Sagittal slices of generated studies on the detector grid, with their true body outlines.

Reading DICOM and resampling dominates a training step if done per sample, so each sagittal series
is converted once into ``<cache>/<study>_<series number>.npz``:

* ``images`` (S, H, W) float16: the stack after :func:`normalise_intensity`, resampled to the
  detector grid (``DETECTOR_MM_PER_PX``) by :func:`resample_to_grid` — exactly what the app feeds
  the network;
* ``quads`` (M, 5, 2) float32 and ``quad_slices`` (M,) int32: every labelled body outline (4 corners
  in ``VERTEBRA_CORNERS`` order + centroid) in detector-grid (row, col) px, and its slice;
* ``quad_levels`` (M,) str: level names (for the labeller and for checks);
* ``source``: ``synthetic`` or ``real`` (annotated patient scans, :mod:`training.real`);
* ``loss_mask`` (S, H, W) uint8, optional: 0 where the image shows bodies nobody outlined (a real
  scan whose masks cover L1–L5 only), so the detector is not taught that those bodies are background.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.vertebra_detection import normalise_intensity, resample_to_grid, slice_grid
from training.detection.truth_projection import slice_quads

logger = logging.getLogger(__name__)

#: Series kinds of the generator the detector learns from: every sagittal MR contrast and CT reformats.
SAGITTAL_KINDS: tuple[str, ...] = (
    "sag_t1", "sag_t2", "sag_stir", "sag_t2_fs", "sag_t1_fs", "sag_t1_post", "ct_sag_reformat",
)

#: ``source`` of a cache file (detector or labeller): generated studies or annotated patient scans.
#: Training draws a configured share of its examples from ``real`` ones when there are any.
SOURCES = ("synthetic", "real")


def is_real(data) -> bool:
    """Whether a loaded cache file (``np.load``) came from annotated patient scans (older files: no)."""
    return "source" in data and str(data["source"]) == "real"


def mixed_draw(real: np.ndarray, real_fraction: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` random indices into ``real`` (bool per item): each is a real item with probability
    ``real_fraction`` when there are real items, so a few annotated scans are not drowned by many
    synthetic ones (and the synthetic ones keep every field of view the real data lack)."""
    real_items, synthetic_items = np.flatnonzero(real), np.flatnonzero(~real)
    if not len(real_items) or not len(synthetic_items):
        return rng.integers(len(real), size=size)
    from_real = rng.random(size) < real_fraction
    return np.where(from_real, rng.choice(real_items, size), rng.choice(synthetic_items, size))


@dataclass(frozen=True)
class CachedSeries:
    """One cached sagittal series (see the module docstring for the arrays)."""

    path: Path
    images: np.ndarray
    quads: np.ndarray
    quad_slices: np.ndarray
    quad_levels: np.ndarray
    real: bool = False
    loss_mask: np.ndarray | None = None

    @classmethod
    def load(cls, path: Path) -> "CachedSeries":
        with np.load(path) as data:
            return cls(
                path, data["images"], data["quads"], data["quad_slices"], data["quad_levels"],
                real=is_real(data),
                loss_mask=data["loss_mask"] if "loss_mask" in data else None,
            )

    def slice_quads(self, slice_index: int) -> np.ndarray:
        """(m, 5, 2) outlines in one slice."""
        return self.quads[self.quad_slices == slice_index]


def write_series_cache(
    path: Path,
    pixels: np.ndarray,
    geometry: VolumeGeometry,
    quads: Sequence[tuple[int, np.ndarray, str]],
    *,
    loss_mask: np.ndarray | None = None,
    source: str = "synthetic",
) -> Path:
    """Write one cache file (module docstring) from a stack in its own pixels.

    Args:
        pixels: (S, rows, cols) after :func:`normalise_intensity`.
        geometry: the stack's geometry (its in-plane spacing sets the detector grid).
        quads: ``(slice index, (5, 2) outline in original (row, col) px, level)`` per outlined body section.
        loss_mask: (S, rows, cols) bool, optional; resampled onto the detector grid with the image.
        source: ``synthetic`` or ``real``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    grid = slice_grid(geometry, pixels.shape[1], pixels.shape[2])
    arrays = {
        "images": resample_to_grid(pixels, grid).astype(np.float16),
        "quads": np.asarray([grid.from_original(outline) for _, outline, _ in quads], dtype=np.float32).reshape(-1, 5, 2),
        "quad_slices": np.asarray([index for index, _, _ in quads], dtype=np.int32),
        "quad_levels": np.asarray([level for _, _, level in quads], dtype=str),
        "source": source,
    }
    if loss_mask is not None:
        arrays["loss_mask"] = (resample_to_grid(loss_mask.astype(np.float32), grid) >= 0.5).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def cache_study(study_dir: Path, cache_dir: Path) -> list[Path]:
    """Write the cache files of one generated study (``study_dir/study`` + ``truth.json``)."""
    truth = json.loads((study_dir / "truth.json").read_text())
    wanted = {s["series_instance_uid"]: s for s in truth["series"] if s["kind"] in SAGITTAL_KINDS}
    scan = scan_study_folder(study_dir / "study")
    written: list[Path] = []
    for series in scan.series:
        if series.series_instance_uid not in wanted:
            continue
        for stack in series.stacks:
            loaded = stack.load()
            if loaded.geometry is None or loaded.pixels.shape[0] < 1:
                continue
            quads = []
            for index in range(loaded.pixels.shape[0]):
                outlines, levels = slice_quads(truth["vertebrae"], loaded.geometry, index)
                quads.extend((index, outline, level) for outline, level in zip(outlines, levels))
            path = cache_dir / f"{study_dir.name}_{series.series_number}_{stack.index}.npz"
            write_series_cache(path, normalise_intensity(loaded.pixels), loaded.geometry, quads)
            written.append(path)
    return written


def build_cache(study_dirs: Iterable[Path], cache_dir: Path) -> list[Path]:
    """Cache every study (skipping those already cached); returns all cache files."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for study_dir in sorted(study_dirs):
        done = sorted(cache_dir.glob(f"{study_dir.name}_*.npz"))
        files.extend(done or cache_study(study_dir, cache_dir))
    return files
