"""Real annotated lumbar MRI in the FastCleverSeg layout, as detector/labeller samples and DICOM studies.

The public repository ``JonathanRamos/fastcleverseg`` holds, under ``ImageDatasets/``, sagittal
lumbar MRI resampled to a 1 mm isotropic grid with manual masks. Each subject is one MATLAB file
``<dataset folder>/NN.mat`` with two arrays of the same grid:

* ``I`` — the image, (rows, columns, lateral slices): rows run head → feet, columns front → back
  (checked on every subject by :func:`load_subject`: bodies lie in front of the canal). 8-bit
  (VB2, VB3: the authors rescaled the 16-bit scans to 1..256) or 16-bit (IVD);
* ``GT`` — the label map: 0 background, one value per structure.

What the values mean (the datasets' readmes, and checked here):

* ``VB3`` (MyoSegmenTUM spine, Burian et al. 2019; 54 volunteers, T1 FFE water-fat) — bodies, 1..5 = L1..L5;
* ``VB2`` (Zukić et al. 2014; 23 T2 TSE lower spines, "T11–L5") — bodies in no level order, so levels
  are counted up from the lowest body (L5); :attr:`RealSubject.level_doubt` says why a count is not
  trusted (not seven bodies, or a gap where a body is missing);
* ``IVD`` (Menezes-Reis et al. 2016; 54 volunteers, T2 SE) — discs, 1..5 = L5/S1..L1/L2.

``VB1`` is reserved for independent evaluation: :func:`load_subject` refuses it. Nothing here is
committed to the repository; every function takes the user's ``--data-root`` (the folder holding
``ImageDatasets``). The mirror may list files without their content: :func:`find_subjects` skips
those.

The stored grid is 1 mm across the body, but the scans were acquired as 2D slices of 3.3–4.4 mm:
:func:`sagittal_stack` averages :data:`ACQUIRED_SLICE_MM` of 1 mm planes into one slice, the
thick-slice stack a scanner would write, and derives each body's 4 corners and centroid per slice
from the mask (:func:`body_outline`).

Geometry: the files carry none. The grid is 1 mm, so only the patient axes are assumed — rows to
the feet (−S), columns to the back (+P), slices to the patient's right (−L, the DICOM normal of those
rows and columns, so a reader keeps the slice order; left and right are not
recorded, and a lumbar detector does not depend on it) — see :func:`stack_geometry`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from operators.core.geometry import VolumeGeometry
from operators.core.levels import LEVELS
from operators.core.vertebra_detection import SliceQuad, Vertebra3D

logger = logging.getLogger(__name__)

#: Thickness (mm) of the slices :func:`sagittal_stack` rebuilds from the 1 mm grid (the scans had 3.3–4.4 mm).
ACQUIRED_SLICE_MM = 4

#: A body is outlined in a slice where its section covers at least this fraction of its largest section.
MIN_SECTION_FRACTION = 0.5

#: Consecutive bodies further apart than this multiple of the median spacing mean a body is missing.
GAP_FACTOR = 1.5

#: Subject splits, by a hash of (dataset, subject): tenths 0-5 train, 6-7 val, 8-9 test.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Dataset:
    """One FastCleverSeg dataset: where it lives, what its labels mean, how it was scanned.

    Attributes:
        name: ``VB2``, ``VB3`` or ``IVD``.
        folder: path under the data root holding ``NN.mat``.
        structure: ``"vertebra"`` (body masks) or ``"disc"`` (disc masks).
        label_levels: level of each label value 1, 2, … (cranial → caudal order is checked), or
            ``None`` when labels carry no level and levels are counted up from ``lowest_level``.
        lowest_level: the level of the lowest annotated structure when ``label_levels`` is ``None``.
        expected_count: structures the readme promises per subject (the level count is doubted otherwise).
        series_description, repetition_time_ms, echo_time_ms: what the DICOM written from a subject says.
        evaluation_only: never trained on (its masks are not the structures the detector learns).
        reference: the publication the readme asks users to cite.
    """

    name: str
    folder: str
    structure: str
    label_levels: tuple[str, ...] | None
    lowest_level: str
    expected_count: int
    series_description: str
    repetition_time_ms: float
    echo_time_ms: float
    evaluation_only: bool
    reference: str


DATASETS: dict[str, Dataset] = {
    "VB3": Dataset(
        "VB3", "ImageDatasets/VBs/VB3/Isotropic/Matlab", "vertebra", ("L1", "L2", "L3", "L4", "L5"), "L5", 5,
        "SAG T1 FFE water-fat", 11.0, 1.4, False,
        "Burian E et al. Lumbar muscle and vertebral bodies segmentation of chemical shift encoding-based water-fat "
        "MRI: the reference database MyoSegmenTUM spine. BMC Musculoskelet Disord 20, 152 (2019). "
        "https://doi.org/10.1186/s12891-019-2528-x",
    ),
    "VB2": Dataset(
        "VB2", "ImageDatasets/VBs/VB2/Isotropic/Matlab", "vertebra", None, "L5", 7,
        "SAG T2 TSE", 5240.0, 101.0, False,
        "Zukic D et al. Robust Detection and Segmentation for Diagnosis of Vertebral Diseases Using Routine MR "
        "Images. Computer Graphics Forum 33: 190-204 (2014). https://doi.org/10.1111/cgf.12343",
    ),
    "IVD": Dataset(
        "IVD", "ImageDatasets/IVD/Isotropic/Matlab", "disc", ("L5/S1", "L4/L5", "L3/L4", "L2/L3", "L1/L2"), "L5/S1", 5,
        "SAG T2 SE", 3900.0, 160.0, True,
        "Menezes-Reis R et al. Lumbar intervertebral discs T2 relaxometry and T1rho relaxometry correlation with age "
        "in asymptomatic young adults. Quant Imaging Med Surg 6(4): 402-412 (2016). "
        "https://doi.org/10.21037/qims.2016.08.01",
    ),
}

#: Reserved for independent evaluation by the project (issue 9): never read.
RESERVED_FOLDERS = ("ImageDatasets/VBs/VB1",)

#: The terms under which the data are used (the readmes ask for citation; the repository is GPL-3.0).
TERMS = ("FastCleverSeg repository (GPL-3.0); the dataset readmes set no further terms than citing each dataset's "
         "publication, which the model cards do")


@dataclass(frozen=True)
class AnnotatedBody:
    """One annotated vertebral body of a subject, on the 1 mm grid.

    Attributes:
        level: ``"L3"``.
        centroid_mm: (3,) LPS mm, the mask's centre of mass.
        mask: (lateral slices, rows, columns) bool on the subject grid.
    """

    level: str
    centroid_mm: np.ndarray
    mask: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class RealSubject:
    """One subject of a FastCleverSeg dataset in sagittal stack order.

    Attributes:
        dataset: ``VB3`` …; subject: the file stem (``"07"``).
        image: (lateral slices, rows, columns) float32, the 1 mm grid.
        geometry: index → LPS mm of ``image`` (:func:`stack_geometry`).
        bodies: annotated vertebral bodies, cranial → caudal (empty for disc datasets).
        disc_centres_mm: disc level → (3,) LPS mm (disc datasets).
        level_doubt: why the levels of this subject are not trusted, or ``None``.
    """

    dataset: str
    subject: str
    image: np.ndarray = field(repr=False)
    geometry: VolumeGeometry
    bodies: tuple[AnnotatedBody, ...]
    disc_centres_mm: dict[str, np.ndarray]
    level_doubt: str | None

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.subject}"


def stack_geometry(shape: tuple[int, int, int], slice_mm: float = 1.0) -> VolumeGeometry:
    """(slice, row, column) → LPS mm for a FastCleverSeg grid in stack order: slices −L (row × column,
    the DICOM slice normal) at ``slice_mm`` (the first slice centred on the 1 mm planes it averages),
    rows −S and columns +P at 1 mm."""
    affine = np.eye(4)
    affine[:3, 0] = (-slice_mm, 0.0, 0.0)
    affine[:3, 1] = (0.0, 0.0, -1.0)
    affine[:3, 2] = (0.0, 1.0, 0.0)
    affine[:3, 3] = (-(slice_mm - 1.0) / 2.0, 0.0, 0.0)
    return VolumeGeometry(affine, shape)


def subject_split(dataset: str, subject: str) -> str:
    """``train``/``val``/``test`` of a subject: fixed by a hash of its name, so a split never moves
    when files are added; disc-only datasets are test only (see :class:`Dataset`)."""
    if DATASETS[dataset].evaluation_only:
        return "test"
    tenth = int(hashlib.sha256(f"{dataset}:{subject}".encode()).hexdigest()[:8], 16) % 10
    return "train" if tenth < 6 else "val" if tenth < 8 else "test"


def find_subjects(data_root: Path, datasets: Sequence[str] = tuple(DATASETS), split: str | None = None) -> list[tuple[str, Path]]:
    """``(dataset, file)`` of every subject with content, optionally of one split, sorted."""
    found = []
    for name in datasets:
        for path in sorted((data_root / DATASETS[name].folder).glob("*.mat")):
            if path.stat().st_size > 0 and (split is None or subject_split(name, path.stem) == split):
                found.append((name, path))
    return found


def load_subject(dataset: str, path: Path) -> RealSubject:
    """Read one ``NN.mat`` (``I`` image and ``GT`` labels) into stack order with levels.

    Raises:
        ValueError: the file is in a reserved folder, lacks ``I``/``GT``, or its grids disagree by
            more than one plane (one plane happens in VB2 and is cropped).
    """
    if any(reserved in path.as_posix() for reserved in RESERVED_FOLDERS):
        raise ValueError(f"{path} is in a folder reserved for independent evaluation")
    spec = DATASETS[dataset]
    contents = scipy.io.loadmat(path)
    if "I" not in contents or "GT" not in contents:
        raise ValueError(f"{path.name}: expected arrays I and GT")
    image, labels = np.asarray(contents["I"]), np.asarray(contents["GT"])
    common = tuple(min(a, b) for a, b in zip(image.shape, labels.shape))
    if image.ndim != 3 or labels.ndim != 3 or max(abs(a - b) for a, b in zip(image.shape, labels.shape)) > 1:
        raise ValueError(f"{path.name}: image {image.shape} and labels {labels.shape} are not one grid")
    crop = tuple(slice(0, n) for n in common)
    # (rows, columns, lateral) → (lateral, rows, columns): sagittal slices first, as the app's stacks.
    image = np.ascontiguousarray(image[crop].transpose(2, 0, 1), dtype=np.float32)
    labels = np.ascontiguousarray(labels[crop].transpose(2, 0, 1))
    geometry = stack_geometry(image.shape)
    values = [int(v) for v in np.unique(labels) if v != 0]
    centroids = {v: geometry.index_to_lps(np.argwhere(labels == v).mean(axis=0)[None])[0] for v in values}
    # Cranial first: LPS z grows towards the head.
    cranial_first = sorted(values, key=lambda v: -centroids[v][2])
    levels, doubt = _levels(spec, values, cranial_first, [centroids[v] for v in cranial_first])
    if doubt:
        logger.info("%s %s: levels doubtful (%s)", dataset, path.stem, doubt)
    by_value = dict(zip(cranial_first, levels))
    if spec.structure == "vertebra":
        bodies = tuple(AnnotatedBody(by_value[v], centroids[v], labels == v) for v in cranial_first)
        discs: dict[str, np.ndarray] = {}
    else:
        bodies, discs = (), {by_value[v]: centroids[v] for v in cranial_first}
    subject = RealSubject(dataset, path.stem, image, geometry, bodies, discs, doubt)
    _check_orientation(subject, labels)
    return subject


def _levels(spec: Dataset, values: list[int], cranial_first: list[int], centroids: list[np.ndarray]) -> tuple[list[str], str | None]:
    """Levels of the structures (cranial first) and a reason to doubt them (or ``None``)."""
    doubts = []
    if len(values) != spec.expected_count:
        doubts.append(f"{len(values)} structures annotated, the dataset has {spec.expected_count}")
    steps = np.linalg.norm(np.diff(np.asarray(centroids), axis=0), axis=1) if len(centroids) > 1 else np.zeros(0)
    if len(steps) > 1 and steps.max() > GAP_FACTOR * np.median(steps):
        doubts.append(f"a {steps.max():.0f} mm gap between neighbours (median {np.median(steps):.0f} mm)")
    if spec.label_levels is not None:
        if sorted(values) != cranial_first[:: 1 if spec.structure == "vertebra" else -1]:
            doubts.append("label values are not in cranio-caudal order")
        levels = [spec.label_levels[v - 1] if 1 <= v <= len(spec.label_levels) else f"label {v}" for v in cranial_first]
    else:
        levels = _counted_up(spec.lowest_level, len(cranial_first))[::-1]
    return levels, "; ".join(doubts) or None


def _counted_up(lowest: str, count: int) -> list[str]:
    """``count`` body levels from ``lowest`` upwards (``"L5", 3`` → L5, L4, L3)."""
    start = LEVELS.index(lowest)
    return [LEVELS[start - i] for i in range(count)]


def _check_orientation(subject: RealSubject, labels: np.ndarray) -> None:
    """The axis assumption of :func:`stack_geometry` needs the annotated structures stacked along the
    rows (head → feet); a grid stored another way is refused rather than mislabelled."""
    points = np.argwhere(labels > 0)
    if len(points) == 0:
        raise ValueError(f"{subject.name}: no annotated structure")
    extent = points.max(axis=0) - points.min(axis=0)
    if extent[1] < extent[2]:
        raise ValueError(f"{subject.name}: annotations run along the columns, not the rows; unknown orientation")


def spine_axes_2d(centroids_rc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per body (cranial first), the superior and anterior in-plane unit vectors in (row, column).

    Superior follows the line through the neighbouring bodies' centroids (one-sided at the ends);
    anterior is perpendicular to it, towards smaller columns (the front).
    """
    n = len(centroids_rc)
    superior = np.zeros((n, 2))
    for i in range(n):
        upper, lower = centroids_rc[max(i - 1, 0)], centroids_rc[min(i + 1, n - 1)]
        direction = upper - lower if n > 1 else np.array([-1.0, 0.0])
        superior[i] = direction / (np.linalg.norm(direction) + 1e-12)
    anterior = np.stack([superior[:, 1], -superior[:, 0]], axis=1)
    anterior *= np.where(anterior[:, 1] > 0, -1.0, 1.0)[:, None]
    return superior, anterior


def body_outline(section: np.ndarray, superior: np.ndarray, anterior: np.ndarray) -> np.ndarray:
    """The 4 corners (VERTEBRA_CORNERS order) and centroid of a body section, (5, 2) (row, column) px.

    Corners are the section's extreme pixels along the diagonals between the body's superior and
    anterior axes: superior-anterior maximises ``s + a``, superior-posterior ``s − a``, and so on.
    """
    points = np.argwhere(section).astype(float)
    s, a = points @ superior, points @ anterior
    corners = [points[np.argmax(s + a)], points[np.argmax(s - a)], points[np.argmax(-s - a)], points[np.argmax(-s + a)]]
    return np.vstack([*corners, points.mean(axis=0)])


@dataclass(frozen=True)
class RealStack:
    """A subject as a thick-slice sagittal stack with its annotated bodies as detector-style bodies.

    Attributes:
        pixels: (slices, rows, columns) float32, :data:`ACQUIRED_SLICE_MM` mm slices.
        geometry: its geometry.
        bodies: ``(level, Vertebra3D)`` per annotated body (score 1; corners of its largest section).
    """

    pixels: np.ndarray = field(repr=False)
    geometry: VolumeGeometry
    bodies: tuple[tuple[str, Vertebra3D], ...]


def sagittal_stack(subject: RealSubject, series_instance_uid: str, slice_mm: int = ACQUIRED_SLICE_MM) -> RealStack:
    """Average ``slice_mm`` planes of the 1 mm grid per slice and outline each body in every slice
    where its section is at least :data:`MIN_SECTION_FRACTION` of its largest (see the module docstring)."""
    n_slices = subject.image.shape[0] // slice_mm
    used = n_slices * slice_mm

    def thick(volume: np.ndarray) -> np.ndarray:
        return volume[:used].reshape(n_slices, slice_mm, *volume.shape[1:]).mean(axis=1)

    pixels = thick(subject.image).astype(np.float32)
    geometry = stack_geometry(pixels.shape, float(slice_mm))
    centroids_rc = np.array([geometry.lps_to_index(b.centroid_mm[None])[0, 1:] for b in subject.bodies]).reshape(-1, 2)
    superior, anterior = spine_axes_2d(centroids_rc)
    bodies = []
    for body, up, front in zip(subject.bodies, superior, anterior):
        sections = thick(body.mask.astype(np.float32)) >= 0.5
        areas = sections.sum(axis=(1, 2))
        if areas.max() == 0:
            continue
        quads = []
        for index in np.flatnonzero(areas >= MIN_SECTION_FRACTION * areas.max()):
            outline = body_outline(sections[index], up, front)
            quads.append(SliceQuad(int(index), outline[4], outline[:4], 1.0))
        largest = max(quads, key=lambda q: areas[q.slice_index])
        corners_mm = geometry.index_to_lps(np.column_stack([np.full(4, largest.slice_index), largest.corners_px]))
        bodies.append((body.level, Vertebra3D(series_instance_uid, body.centroid_mm, corners_mm, 1.0, tuple(quads))))
    return RealStack(pixels, geometry, tuple(bodies))


def truth_entries(stack: RealStack, series_instance_uid: str, extra_per_side: int = 8) -> list[dict[str, Any]]:
    """Vertebrae in the shape of the generator's ``truth.json`` (what
    :func:`training.evaluate_detection.score_study` reads), plus unannotated placeholders.

    The masks cover only some of the bodies in view (VB3: L1–L5, though T12 and S1 show). Bodies
    beyond the annotated ones are placed by continuing the mean step between annotated centroids,
    ``extra_per_side`` each way, with ``fully_in_view`` empty: a prediction there is neither right
    nor wrong, and one anywhere else is a false positive.
    """
    entries = []
    for level, vertebra in stack.bodies:
        entries.append({
            "level": level, "centroid_mm": vertebra.centroid_mm.tolist(), "corners_mm": vertebra.corners_mm.tolist(),
            "height_mm": float(vertebra.height_mm), "fully_in_view": {series_instance_uid: True},
        })
    if len(entries) < 2:
        return entries
    centroids = np.array([e["centroid_mm"] for e in entries])
    step = (centroids[-1] - centroids[0]) / (len(centroids) - 1)
    height = float(np.median([e["height_mm"] for e in entries]))
    for i in range(1, extra_per_side + 1):
        for end, sign in ((centroids[0], -1.0), (centroids[-1], 1.0)):
            entries.append({"level": "unannotated", "centroid_mm": (end + sign * i * step).tolist(),
                            "height_mm": height, "fully_in_view": {}})
    return entries


def write_subject_study(subject: RealSubject, out_dir: Path) -> dict[str, Any]:
    """Write the subject as a generated-study folder: ``study/`` (one sagittal MR series, the
    thick-slice stack of :func:`sagittal_stack`) and ``truth.json`` (:func:`truth_entries`, series
    kind, the subject's name and level doubt). Returns the truth written."""
    from pydicom.uid import generate_uid

    from training.synthetic.dicom_writer import PatientStudy, write_series

    spec = DATASETS[subject.dataset]
    uid = generate_uid(entropy_srcs=[subject.name, "series"])
    stack = sagittal_stack(subject, uid)
    study = PatientStudy(
        study_instance_uid=generate_uid(entropy_srcs=[subject.name, "study"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[subject.name, "frame"]),
        patient_name=f"FASTCLEVERSEG^{subject.name}", patient_id=subject.name, accession_number=subject.name,
        study_description="MRI LUMBAR SPINE", institution_name="FastCleverSeg public dataset",
    )
    write_series(
        stack.pixels, stack.geometry, out_dir / "study" / "series_1", modality="MR", study=study,
        series_instance_uid=uid, series_description=spec.series_description,
        extra_tags={"RepetitionTime": spec.repetition_time_ms, "EchoTime": spec.echo_time_ms,
                    "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"]},
    )
    truth = {
        "subject": subject.name, "dataset": subject.dataset, "level_doubt": subject.level_doubt,
        "series": [{"series_instance_uid": uid, "kind": "sag_t1" if "T1" in spec.series_description else "sag_t2"}],
        "vertebrae": truth_entries(stack, uid),
    }
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth

