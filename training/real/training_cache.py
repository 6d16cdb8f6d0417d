"""Real annotated subjects as detector and labeller training samples (``train-vertebrae --real-root``).

Each FastCleverSeg subject of a split becomes the same cache files a generated study does
(:mod:`training.detection.slice_cache`, :func:`training.detection.labeller.write_labeller_cache`),
marked ``source = real`` so training mixes them in at a fixed share:

* detector: the thick-slice stack of :func:`~training.real.fastcleverseg.sagittal_stack` with every
  annotated body's per-slice outline, and a loss mask that is 0 beyond the annotated run. The masks
  cover some of the bodies in view (VB3 L1–L5, while T12 and S1 show); without the mask the detector
  would be taught that those bodies are background. The run ends halfway between the outermost
  annotated body and where the next one would be (the disc), across the spine's local axis;
* labeller: appearance volumes of the annotated bodies, one group per subject.

Subjects whose level count is doubtful (:attr:`~training.real.fastcleverseg.RealSubject.level_doubt`)
and disc-only datasets are not used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from operators.core.vertebra_detection import normalise_intensity
from training.detection.labeller import write_labeller_cache
from training.detection.slice_cache import write_series_cache
from training.real.fastcleverseg import DATASETS, RealStack, find_subjects, load_subject, sagittal_stack, spine_axes_2d

logger = logging.getLogger(__name__)

#: Datasets with body masks (what the detector and labeller learn from).
BODY_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.structure == "vertebra")


def annotated_run_mask(stack: RealStack) -> np.ndarray:
    """(S, rows, cols) bool: True between the disc above the top annotated body and the disc below
    the lowest one (see the module docstring), in every slice."""
    shape = stack.pixels.shape
    centroids_rc = np.array([stack.geometry.lps_to_index(v.centroid_mm[None])[0, 1:] for _, v in stack.bodies])
    superior, _ = spine_axes_2d(centroids_rc)
    rows, cols = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    pixels_rc = np.stack([rows, cols], axis=-1).astype(float)
    keep = np.ones(shape[1:], bool)
    for end, neighbour, sign in ((0, 1, 1.0), (-1, -2, -1.0)):
        step = float(np.linalg.norm(centroids_rc[end] - centroids_rc[neighbour]))
        outward = sign * superior[end]
        boundary = centroids_rc[end] + 0.5 * step * outward
        keep &= (pixels_rc - boundary) @ outward <= 0.0
    return np.broadcast_to(keep, shape)


def cache_real_split(data_root: Path, split: str, detector_dir: Path, labeller_dir: Path) -> tuple[list[Path], list[Path]]:
    """Write ``real_<subject>.npz`` detector and labeller files of one split (kept if already there).

    Returns the detector and labeller files of the split.
    """
    detector_dir.mkdir(parents=True, exist_ok=True)
    labeller_dir.mkdir(parents=True, exist_ok=True)
    detector_files, labeller_files = [], []
    for dataset, path in find_subjects(data_root, BODY_DATASETS, split):
        name = f"real_{dataset}_{path.stem}.npz"
        detector_out, labeller_out = detector_dir / name, labeller_dir / name
        if not (detector_out.exists() and labeller_out.exists()):
            subject = load_subject(dataset, path)
            if subject.level_doubt or len(subject.bodies) < 2:
                logger.info("%s not trained on: %s", subject.name, subject.level_doubt or "fewer than two bodies")
                continue
            stack = sagittal_stack(subject, f"real.{subject.name}")
            pixels = normalise_intensity(stack.pixels)
            quads = [
                (quad.slice_index, np.vstack([quad.corners_px, quad.centroid_px]), level)
                for level, vertebra in stack.bodies for quad in vertebra.slice_quads
            ]
            write_series_cache(detector_out, pixels, stack.geometry, quads, loss_mask=annotated_run_mask(stack), source="real")
            write_labeller_cache(labeller_out, [(pixels, stack.geometry, [(v, level) for level, v in stack.bodies])], source="real")
        detector_files.append(detector_out)
        labeller_files.append(labeller_out)
    return detector_files, labeller_files
