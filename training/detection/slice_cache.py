"""Sagittal slices of generated studies on the detector grid, with their true body outlines.

Reading DICOM and resampling dominates a training step if done per sample, so each sagittal series
is converted once into ``<cache>/<study>_<series number>.npz``:

* ``images`` (S, H, W) float16: the stack after :func:`normalise_intensity`, resampled to the
  detector grid (``DETECTOR_MM_PER_PX``) by :func:`resample_to_grid` — exactly what the app feeds
  the network;
* ``quads`` (M, 5, 2) float32 and ``quad_slices`` (M,) int32: every labelled body outline (4 corners
  in ``VERTEBRA_CORNERS`` order + centroid) in detector-grid (row, col) px, and its slice;
* ``quad_levels`` (M,) str: level names (for the labeller and for checks).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.core.dicom_io import scan_study_folder
from operators.core.vertebra_detection import normalise_intensity, resample_to_grid, slice_grid
from training.detection.truth_projection import slice_quads

logger = logging.getLogger(__name__)

#: Series kinds of the generator the detector learns from: every sagittal MR contrast and CT reformats.
SAGITTAL_KINDS: tuple[str, ...] = (
    "sag_t1", "sag_t2", "sag_stir", "sag_t2_fs", "sag_t1_fs", "sag_t1_post", "ct_sag_reformat",
)


@dataclass(frozen=True)
class CachedSeries:
    """One cached sagittal series (see the module docstring for the arrays)."""

    path: Path
    images: np.ndarray
    quads: np.ndarray
    quad_slices: np.ndarray
    quad_levels: np.ndarray

    @classmethod
    def load(cls, path: Path) -> "CachedSeries":
        with np.load(path) as data:
            return cls(path, data["images"], data["quads"], data["quad_slices"], data["quad_levels"])

    def slice_quads(self, slice_index: int) -> np.ndarray:
        """(m, 5, 2) outlines in one slice."""
        return self.quads[self.quad_slices == slice_index]


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
            grid = slice_grid(loaded.geometry, loaded.pixels.shape[1], loaded.pixels.shape[2])
            images = resample_to_grid(normalise_intensity(loaded.pixels), grid)
            quads, quad_slices, quad_levels = [], [], []
            for index in range(loaded.pixels.shape[0]):
                outlines, levels = slice_quads(truth["vertebrae"], loaded.geometry, index)
                for outline, level in zip(outlines, levels):
                    quads.append(grid.from_original(outline))
                    quad_slices.append(index)
                    quad_levels.append(level)
            path = cache_dir / f"{study_dir.name}_{series.series_number}_{stack.index}.npz"
            np.savez(
                path,
                images=images.astype(np.float16),
                quads=np.asarray(quads, dtype=np.float32).reshape(-1, 5, 2),
                quad_slices=np.asarray(quad_slices, dtype=np.int32),
                quad_levels=np.asarray(quad_levels, dtype=str),
            )
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
