"""Real annotated subjects as detector and labeller training samples (``train-vertebrae --real-root``).

Each FastCleverSeg subject of a split becomes the same cache files a generated study does
(:mod:`training.detection.slice_cache`, :func:`training.detection.labeller.write_labeller_cache`),
marked ``source = real`` so training mixes them in at a fixed share:

* detector: the thick-slice stack of :func:`~training.real.fastcleverseg.sagittal_stack` with every
  annotated body's per-slice outline, and a loss mask that is 0 beyond the annotated run. The masks
  cover some of the bodies in view (VB3 L1–L5, while T12 and S1 show); without the mask the detector
  would be taught that those bodies are background. The run ends halfway between the outermost
  annotated body and where the next one would be (the disc), across the spine's local axis;
* labeller: appearance volumes of the annotated bodies, one group per subject; given a detector,
  also of the detected body next to each end of the annotated run, labelled by counting on
  (:func:`unannotated_neighbours`: S1 below VB3's and VB2's L5, T12 above VB3's L1, T10 above VB2's
  T11). Without them the labeller never sees a real S1, though the detector finds one in most real
  scans: on the real test split the true S1, rated L5, shifted every level above it by one.

Subjects whose level count is doubtful (:attr:`~training.real.fastcleverseg.RealSubject.level_doubt`)
and disc-only datasets are not used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from operators.core.levels import LABELLER_CLASSES
from operators.core.vertebra_detection import Vertebra3D, joined_per_series, normalise_intensity
from operators.core.vertebra_pipeline import Network, SagittalStack, detect_vertebrae
from training.detection.labeller import write_labeller_cache
from training.detection.slice_cache import write_series_cache
from training.real.fastcleverseg import DATASETS, RealStack, find_subjects, load_subject, sagittal_stack, spine_axes_2d

logger = logging.getLogger(__name__)

#: Datasets with body masks (what the detector and labeller learn from).
BODY_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.structure == "vertebra")

#: How far (× the end step of the annotated run) a detection may lie from where the next body
#: would be on a straight continuation of the run. S1 sits 13–20 mm off it on the real train
#: subjects (the lordosis turns at the lumbosacral junction; steps are 30–40 mm); a detection
#: beyond this is taken for S2 or a missed body and not labelled.
NEIGHBOUR_TOLERANCE = 0.6


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


def unannotated_neighbours(stack: RealStack, detections: Sequence[Vertebra3D]) -> list[tuple[str, Vertebra3D]]:
    """The detected body next to each end of the annotated run, with the level counting on gives it.

    The dataset's levels count from the sacrum, so the body directly below the lowest annotated one
    is the next class down (L5 → S1) and the one directly above the top the next class up. The
    candidate is the detection nearest to where that body would be (the end centroid plus the end
    step); it is taken when it lies within :data:`NEIGHBOUR_TOLERANCE` steps of there and more than
    half a step from every annotated body (a detection of the end body itself is not its neighbour).

    Args:
        stack: the subject's stack with its annotated bodies (cranial first, at least two).
        detections: the bodies a detector found in ``stack`` (one :class:`Vertebra3D` each).

    Returns:
        ``(level, detection)`` for each end with such a neighbour (at most two).
    """
    levels = [level for level, _ in stack.bodies]
    annotated_mm = np.array([vertebra.centroid_mm for _, vertebra in stack.bodies])
    if len(annotated_mm) < 2 or not detections:
        return []
    detected_mm = np.array([d.centroid_mm for d in detections])
    neighbours = []
    for end, inner, class_step in ((0, 1, -1), (-1, -2, 1)):  # cranial end: a class up (towards C3)
        index = LABELLER_CLASSES.index(levels[end]) + class_step
        if not 0 <= index < len(LABELLER_CLASSES):
            continue
        step_mm = annotated_mm[end] - annotated_mm[inner]
        step = float(np.linalg.norm(step_mm))
        off_mm = np.linalg.norm(detected_mm - (annotated_mm[end] + step_mm), axis=1)
        nearest = int(np.argmin(off_mm))
        clear_mm = np.linalg.norm(annotated_mm - detected_mm[nearest], axis=1).min()
        if off_mm[nearest] <= NEIGHBOUR_TOLERANCE * step and clear_mm > 0.5 * step:
            neighbours.append((LABELLER_CLASSES[index], detections[nearest]))
    return neighbours


def cache_real_split(
    data_root: Path, split: str, detector_dir: Path, labeller_dir: Path, detector: Network | None = None
) -> tuple[list[Path], list[Path]]:
    """Write ``real_<subject>.npz`` detector and labeller files of one split (kept if already there).

    With ``detector``, the labeller files also hold each subject's :func:`unannotated_neighbours`
    among the bodies it detects. Returns the detector and labeller files of the split.
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
            bodies = [(vertebra, level) for level, vertebra in stack.bodies]
            if detector is not None:
                neighbours = unannotated_neighbours(stack, _detections(stack, detector))
                logger.info("%s: %s labelled by counting on", subject.name, [level for level, _ in neighbours])
                bodies += [(vertebra, level) for level, vertebra in neighbours]
            write_labeller_cache(labeller_out, [(pixels, stack.geometry, bodies)], source="real")
        detector_files.append(detector_out)
        labeller_files.append(labeller_out)
    return detector_files, labeller_files


def _detections(stack: RealStack, detector: Network) -> list[Vertebra3D]:
    """The bodies ``detector`` finds in ``stack``, each as one detection (its fragments joined)."""
    uid = stack.bodies[0][1].series_instance_uid
    fused = detect_vertebrae([SagittalStack.from_pixels(uid, stack.pixels, stack.geometry)], detector)
    return [joined_per_series(body.members, {uid: stack.geometry})[0] for body in fused]
