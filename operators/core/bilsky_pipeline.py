"""Bilsky grading of epidural spinal cord compression on axial images (Hallinan 2022 MRI, 2023 CT):
the core the Bilsky operator calls and the training cache imports, so the networks see in training
exactly what they see in the app.

Flow, per axial image of the ``ax_t2`` (MR) and ``ct_axial`` (CT) series:

1. **Prior** (when the study has labelled vertebrae): the slice plane is intersected with the
   polyline of sac centres, each vertebral centroid moved behind its posterior body wall
   (:data:`SAC_BEHIND_WALL_MM`) — our own localisation projected through patient coordinates
   (:meth:`SpineLine.canal_crossing`). The same point gives the image's **level**: the body at its
   height along the spine, else the disc between two bodies (:meth:`SpineLine.level_at`).
2. **Canal detector** (network ``canal_detector``): the whole image resampled to
   :data:`DETECTOR_PIXEL_MM` pixels → a heatmap of the thecal sac centre. With a prior, the peak is
   taken under a Gaussian of :data:`PRIOR_SIGMA_MM` around it (no peak: the prior itself is used);
   without one (no sagittal series), the detector alone finds the canal and the image gets no level.
3. **ROI** (:func:`canal_roi`): a :data:`ROI_FIELD_MM` square in the image plane centred on the
   canal, :data:`ROI_SHAPE` pixels, in the image's own row/column directions. MR: percentile
   normalisation (one channel); CT: the three windows of :data:`CT_WINDOWS`, each mapped to 0–1
   (three channels).
4. **Grader** (``bilsky_mr``: 6 grades; ``bilsky_ct``: 3 classes): probabilities per image.

Network inputs: detector ``(B, 1, H, W)`` float32, ``H`` and ``W`` multiples of
:data:`DETECTOR_MULTIPLE` (zero-padded at the bottom/right); graders ``(B, C, 64, 64)`` float32 with
``C = 1`` (MR) or 3 (CT, :data:`CT_WINDOWS` order). All coordinates are LPS mm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from operators.core.dicom_io import InstanceHeader, StudyScan
from operators.core.geometry import VolumeGeometry, plane_crossing, resample_volume
from operators.core.gradings import BILSKY_CT_CLASSES, BILSKY_MR_GRADES
from operators.core.levels import disc_name, level_order
from operators.core.report import BilskyEntry
from operators.core.series_roles import SeriesDecision, load_role_stacks, records_contrast
from operators.core.study_warning import StudyWarning
from operators.core.volume_extraction import VertebraLike, adjacent_levels, body_axes, normalise_intensity

#: Names of the networks in ``models/manifest.json``.
CANAL_MODEL = "canal_detector"
BILSKY_MODELS: Mapping[str, str] = {"MR": "bilsky_mr", "CT": "bilsky_ct"}
#: Series roles graded, and their modality.
BILSKY_ROLES: Mapping[str, str] = {"ax_t2": "MR", "ct_axial": "CT"}
#: Classes per modality, in the graders' output order.
BILSKY_CLASSES: Mapping[str, tuple[str, ...]] = {"MR": BILSKY_MR_GRADES, "CT": BILSKY_CT_CLASSES}

#: CT windows (width, level) in HU (Hallinan 2023 §2.3): bone margins, epidural soft tissue.
CT_WINDOWS: Mapping[str, tuple[float, float]] = {"bone": (1500.0, 300.0), "abdomen": (400.0, 50.0), "spine": (200.0, 100.0)}
#: The detector sees CT through the bone window: the canal is the hole in the bone ring.
DETECTOR_CT_WINDOW = "bone"

#: Detector pixel size (mm): an adult thecal sac (10–20 mm across) spans 5–10 pixels.
DETECTOR_PIXEL_MM = 2.0
DETECTOR_MULTIPLE = 16
#: Heatmap peak below this: no canal on the image.
CANAL_THRESHOLD = 0.3
#: Spread (mm) of the localisation prior: the projected point is within a few mm of the sac centre
#: where the bodies are well detected; the detector decides within this range.
PRIOR_SIGMA_MM = 12.0
#: Thecal sac centre behind the posterior body wall (mm): about the canal's AP radius at every level.
SAC_BEHIND_WALL_MM = 8.0

#: Grader ROI: a square of this side (mm) centred on the canal, resampled to ROI_SHAPE pixels
#: (0.625 mm): the canal with its walls and the epidural space all round.
ROI_FIELD_MM = 40.0
ROI_SHAPE: tuple[int, int] = (64, 64)

#: ``(B, 1, H, W) → (B, 1, H, W)`` heatmap logits; ``(B, C, 64, 64) → (B, K)`` probabilities.
Network = Callable[[np.ndarray], np.ndarray]


def window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """CT values in HU → 0..1 through a display window (float32)."""
    return np.clip((np.asarray(hu, dtype=np.float32) - (level - width / 2.0)) / width, 0.0, 1.0)


@dataclass(frozen=True)
class AxialImages:
    """One decoded axial stack to grade.

    Attributes:
        series_instance_uid: its series; modality ``"MR"`` or ``"CT"``.
        pixels: ``(S, R, C)`` float32 physical values (MR signal, CT HU).
        geometry: index → LPS mm of ``pixels``.
        instances: the ``S`` image headers (SOP instance UID, InstanceNumber), in slice order.
    """

    series_instance_uid: str
    modality: str
    pixels: np.ndarray
    geometry: VolumeGeometry
    instances: tuple[InstanceHeader, ...]


def axial_sources(study: StudyScan, decisions: Sequence[SeriesDecision]) -> tuple[list[AxialImages], list[StudyWarning]]:
    """Every decodable stack of the ``ax_t2`` and ``ct_axial`` series, with load warnings."""
    loaded, warnings = load_role_stacks(study, decisions, tuple(BILSKY_ROLES))
    return [AxialImages(decision.series_instance_uid, BILSKY_ROLES[decision.role], stack.pixels, stack.geometry, stack.instances)
            for decision, stack in loaded], warnings


# ------------------------------------------------------------------------------------------------
# Localisation prior and level
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpineLine:
    """Labelled vertebrae as the prior needs them, cranial → caudal.

    Attributes:
        levels: level names.
        centroids_mm: ``(V, 3)``.
        superior: ``(V, 3)`` unit vectors along each body towards the head.
        anterior: ``(V, 3)`` unit vectors towards the front.
        half_heights_mm / depths_mm: ``(V,)`` half the body height and its AP depth.
    """

    levels: tuple[str, ...]
    centroids_mm: np.ndarray
    superior: np.ndarray
    anterior: np.ndarray
    half_heights_mm: np.ndarray
    depths_mm: np.ndarray

    @classmethod
    def from_vertebrae(cls, vertebrae: Sequence[VertebraLike]) -> "SpineLine | None":
        """``None`` without vertebrae (no sagittal localisation)."""
        ordered = sorted(vertebrae, key=lambda v: level_order(v.level))
        if not ordered:
            return None
        axes = [body_axes(v) for v in ordered]
        corners = [np.asarray(v.corners_mm, dtype=float) for v in ordered]
        heights = [0.5 * float(np.linalg.norm((c[0] + c[1]) / 2 - (c[2] + c[3]) / 2)) for c in corners]
        return cls(
            tuple(v.level for v in ordered), np.asarray([v.centroid_mm for v in ordered], dtype=float),
            np.asarray([a.superior for a in axes]), np.asarray([a.anterior for a in axes]),
            np.asarray(heights), np.asarray([a.depth_mm for a in axes]),
        )

    def canal_crossing(self, point_mm: np.ndarray, normal: np.ndarray) -> np.ndarray | None:
        """Where the plane (``point_mm``, ``normal``) crosses the line of sac centres (each centroid
        moved :data:`SAC_BEHIND_WALL_MM` behind its body's posterior wall), or ``None`` when it
        misses that line extended by one body height past each end.

        An axial image shows the canal where the canal crosses its plane. Where the spine is tilted
        against the plane (lordosis, kyphosis) that is not level with where the bodies' line
        crosses it: a point behind that crossing, moved into the plane, can land inside a body.
        """
        sac = self.centroids_mm - self.anterior * (self.depths_mm[:, None] / 2.0 + SAC_BEHIND_WALL_MM)
        first, last = 0, len(self.levels) - 1
        knots = np.concatenate([
            [sac[first] + self.superior[first] * 2 * self.half_heights_mm[first]],
            sac,
            [sac[last] - self.superior[last] * 2 * self.half_heights_mm[last]],
        ])
        return plane_crossing(knots, point_mm, normal)

    def level_at(self, point_mm: np.ndarray) -> str | None:
        """The body ``point_mm`` lies within along the spine (its height, any AP position), else the
        disc between two adjacent bodies; ``None`` beyond the labelled range."""
        offsets = np.einsum("vi,vi->v", point_mm - self.centroids_mm, self.superior) / self.half_heights_mm
        inside = np.flatnonzero(np.abs(offsets) <= 1.0)
        if len(inside):
            return self.levels[int(inside[np.argmin(np.abs(offsets[inside]))])]
        for upper in range(len(self.levels) - 1):
            if offsets[upper] < -1.0 and offsets[upper + 1] > 1.0:
                above, below = self.levels[upper], self.levels[upper + 1]
                # A gap in the labelled levels (a missed body) leaves no disc name to give.
                return disc_name(above, below) if adjacent_levels(above, below) else None
        return None


def canal_prior(line: SpineLine, geometry: VolumeGeometry, slice_index: int) -> tuple[np.ndarray, str | None] | None:
    """Projected sac centre on one slice (LPS, in the slice plane) and the slice's level, or
    ``None`` when the slice does not cross the labelled spine (module docstring, step 1)."""
    centre = geometry.index_to_lps([slice_index, (geometry.shape[1] - 1) / 2, (geometry.shape[2] - 1) / 2])
    prior = line.canal_crossing(centre, geometry.normal)
    if prior is None:
        return None
    return prior, line.level_at(prior)


# ------------------------------------------------------------------------------------------------
# Canal detector
# ------------------------------------------------------------------------------------------------
def detector_grid(geometry: VolumeGeometry) -> VolumeGeometry:
    """Every slice of ``geometry`` at :data:`DETECTOR_PIXEL_MM`, same origin and in-plane axes,
    padded up to multiples of :data:`DETECTOR_MULTIPLE`."""
    rows_mm, columns_mm = geometry.spacing_mm[1] * geometry.shape[1], geometry.spacing_mm[2] * geometry.shape[2]
    shape = tuple(int(np.ceil(extent / DETECTOR_PIXEL_MM / DETECTOR_MULTIPLE) * DETECTOR_MULTIPLE) for extent in (rows_mm, columns_mm))
    affine = geometry.affine.copy()
    for axis in (1, 2):
        affine[:3, axis] *= DETECTOR_PIXEL_MM / geometry.spacing_mm[axis]
    # Pixel centres: the first detector pixel covers the first source pixels, not centred on them.
    affine[:3, 3] += (affine[:3, 1] - geometry.affine[:3, 1] + affine[:3, 2] - geometry.affine[:3, 2]) / 2.0
    return VolumeGeometry(affine, (geometry.shape[0], *shape))


def _inside(source: VolumeGeometry, target: VolumeGeometry) -> np.ndarray:
    """Which voxels of ``target`` lie inside ``source``'s grid, shape ``target.shape`` (computed from
    the geometry: resampling a stack of ones would allocate a whole CT volume per call)."""
    indices = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in target.shape], indexing="ij"), axis=-1)
    return source.contains(target.index_to_lps(indices))


def detector_input(images: AxialImages) -> tuple[np.ndarray, VolumeGeometry]:
    """``(S, 1, H, W)`` detector input of every slice and its grid (module docstring)."""
    grid = detector_grid(images.geometry)
    values = resample_volume(images.pixels, images.geometry, grid, order=1)
    inside = _inside(images.geometry, grid)
    if images.modality == "CT":
        scaled = np.where(inside, window(values, *CT_WINDOWS[DETECTOR_CT_WINDOW]), 0.0).astype(np.float32)
    else:
        scaled = np.stack([normalise_intensity(values[k], inside[k]) for k in range(len(values))])
    return scaled[:, None], grid


def decode_canal(heatmap_logits: np.ndarray, prior_index: np.ndarray | None) -> tuple[np.ndarray, float] | None:
    """Sac centre ``(row, column)`` (detector pixels, sub-pixel) and its heatmap value from one
    ``(H, W)`` map of logits; ``None`` when no peak reaches :data:`CANAL_THRESHOLD`.

    With ``prior_index`` (``(row, column)``), the peak is searched under a Gaussian of
    :data:`PRIOR_SIGMA_MM` around it, so a bright structure elsewhere in a wide CT field cannot win.
    """
    heat = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(heatmap_logits, dtype=np.float64)))
    score = heat
    if prior_index is not None:
        rows, columns = np.indices(heat.shape)
        sigma = PRIOR_SIGMA_MM / DETECTOR_PIXEL_MM
        score = heat * np.exp(-((rows - prior_index[0]) ** 2 + (columns - prior_index[1]) ** 2) / (2 * sigma**2))
    peak = np.unravel_index(int(np.argmax(score)), score.shape)
    value = float(heat[peak])
    if value < CANAL_THRESHOLD:
        return None
    r0, r1 = max(peak[0] - 2, 0), min(peak[0] + 3, heat.shape[0])
    c0, c1 = max(peak[1] - 2, 0), min(peak[1] + 3, heat.shape[1])
    patch = heat[r0:r1, c0:c1]
    rows, columns = np.indices(patch.shape)
    weights = patch / patch.sum()
    return np.array([r0 + float((rows * weights).sum()), c0 + float((columns * weights).sum())]), value


# ------------------------------------------------------------------------------------------------
# ROI and grading
# ------------------------------------------------------------------------------------------------
def roi_grid(geometry: VolumeGeometry, centre_mm: np.ndarray, rotation_deg: float = 0.0, mirror: bool = False) -> VolumeGeometry:
    """One-slice grid of the grader ROI centred on ``centre_mm`` in the image's row/column
    directions (turned in plane by ``rotation_deg`` and mirrored left–right for training augmentation),
    on the plane of the image nearest ``centre_mm``."""
    # A centre read back from millimetres with 3 decimals, or found at 2 mm pixels, lies microns off
    # its image's plane; off the first or last plane of a stack the grid would sample nothing.
    slice_offset = float(geometry.lps_to_index(centre_mm)[0])
    centre_mm = np.asarray(centre_mm, dtype=float) + (round(slice_offset) - slice_offset) * geometry.affine[:3, 0]
    row_step = geometry.affine[:3, 1] / geometry.spacing_mm[1]
    column_step = geometry.affine[:3, 2] / geometry.spacing_mm[2]
    if rotation_deg:
        angle = np.radians(rotation_deg)
        row_step, column_step = (np.cos(angle) * row_step + np.sin(angle) * column_step,
                                 -np.sin(angle) * row_step + np.cos(angle) * column_step)
    if mirror:
        column_step = -column_step
    pixel = ROI_FIELD_MM / ROI_SHAPE[0]
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = geometry.normal, row_step * pixel, column_step * pixel
    affine[:3, 3] = centre_mm - affine[:3, 1:3] @ ((np.asarray(ROI_SHAPE, dtype=float) - 1.0) / 2.0)
    return VolumeGeometry(affine, (1, *ROI_SHAPE))


def roi_channels(values: np.ndarray, inside: np.ndarray, modality: str) -> np.ndarray:
    """``(C, 64, 64)`` grader input from ROI samples: MR one normalised channel, CT one per window."""
    if modality == "CT":
        return np.stack([np.where(inside, window(values, *w), 0.0) for w in CT_WINDOWS.values()]).astype(np.float32)
    return normalise_intensity(values, inside)[None]


def canal_roi(images: AxialImages, centre_mm: np.ndarray, rotation_deg: float = 0.0, mirror: bool = False) -> np.ndarray:
    """``(C, 64, 64)`` grader input centred on ``centre_mm`` (module docstring, step 3)."""
    grid = roi_grid(images.geometry, centre_mm, rotation_deg, mirror)
    values = resample_volume(images.pixels, images.geometry, grid, order=1)[0]
    inside = _inside(images.geometry, grid)[0]
    return roi_channels(values, inside, images.modality)


@dataclass(frozen=True)
class CanalFinding:
    """Where the canal is on one image: slice index, sac centre (LPS mm), level (``None`` without
    localisation or outside the labelled range) and whether the centre is the projected prior alone
    (the detector found no peak near it)."""

    slice_index: int
    centre_mm: np.ndarray
    level: str | None
    from_prior: bool


def find_canals(images: AxialImages, line: SpineLine | None, detector: Network) -> list[CanalFinding]:
    """The sac centre on every image of a stack where one is found (steps 1–2)."""
    inputs, grid = detector_input(images)
    logits = np.asarray(detector(inputs))[:, 0]
    findings = []
    for k in range(images.geometry.shape[0]):
        prior = canal_prior(line, images.geometry, k) if line is not None else None
        prior_index = grid.lps_to_index(prior[0])[1:] if prior is not None else None
        decoded = decode_canal(logits[k], prior_index)
        if decoded is not None:
            findings.append(CanalFinding(k, grid.index_to_lps([k, *decoded[0]]), prior[1] if prior is not None else None, False))
        elif prior is not None and images.geometry.contains(prior[0]):
            # The detector is unsure (a canal filled by tumour, an unusual contrast): the projected
            # localisation alone is within a few mm of the sac centre, well inside the 40 mm ROI.
            findings.append(CanalFinding(k, prior[0], prior[1], True))
    return findings


def grade_images(images: AxialImages, findings: Sequence[CanalFinding], grader: Network) -> list[BilskyEntry]:
    """One :class:`BilskyEntry` per found canal (step 4)."""
    if not findings:
        return []
    rois = np.stack([canal_roi(images, finding.centre_mm) for finding in findings])
    probabilities = np.asarray(grader(rois), dtype=np.float64)
    return [
        BilskyEntry(images.series_instance_uid, images.instances[f.slice_index].sop_instance_uid, f.level,
                    images.modality, row.tolist(), images.instances[f.slice_index].instance_number)
        for f, row in zip(findings, probabilities)
    ]


@dataclass(frozen=True)
class BilskyFindings:
    """What the Bilsky stage hands to the report: one entry per graded image and the warnings."""

    entries: tuple[BilskyEntry, ...]
    warnings: tuple[StudyWarning, ...]


def grade_study(
    study: StudyScan, decisions: Sequence[SeriesDecision], vertebrae: Sequence[VertebraLike],
    detector: Network, graders: Mapping[str, Network],
) -> BilskyFindings:
    """Bilsky grade of every axial image of the study: the one call of the Bilsky operator.

    ``graders`` maps modality (``"MR"``, ``"CT"``) to its network; a modality without one is not
    graded (warning). Warnings: ``CT_WITHOUT_CONTRAST`` (an axial CT without a recorded contrast
    agent: graded, but the CT grader is trained on contrast-enhanced CT), ``NO_SAGITTAL_LOCALISATION`` (no labelled vertebrae: canals found
    by the detector alone, images without level), ``AXIAL_OUTSIDE_VERTEBRAL_RANGE`` (images beyond
    the labelled vertebrae, graded without level), ``CANAL_NOT_FOUND`` (images with no canal
    found, not graded), plus the stack load warnings.
    """
    sources, warnings = axial_sources(study, decisions)
    if not sources:
        return BilskyFindings((), tuple(warnings))
    line = SpineLine.from_vertebrae(vertebrae)
    if line is None:
        warnings.append(StudyWarning(
            "NO_SAGITTAL_LOCALISATION",
            "no labelled vertebrae: axial images graded with the canal detector alone and reported without level",
        ))
    entries: list[BilskyEntry] = []
    for images in sources:
        grader = graders.get(images.modality)
        if grader is None:
            warnings.append(StudyWarning("NO_BILSKY_MODEL", f"no Bilsky model for {images.modality}: images not graded",
                                         images.series_instance_uid))
            continue
        if images.modality == "CT" and not records_contrast(study.series_by_uid(images.series_instance_uid).tags):
            warnings.append(StudyWarning(
                "CT_WITHOUT_CONTRAST", "the axial CT records no intravenous contrast (ContrastBolusAgent): the CT Bilsky "
                                       "grader is trained on contrast-enhanced staging CT and misses more epidural disease "
                                       "on unenhanced CT; graded all the same, confirm on MRI", images.series_instance_uid))
        findings = find_canals(images, line, detector)
        missed = images.geometry.shape[0] - len(findings)
        if missed:
            warnings.append(StudyWarning(
                "CANAL_NOT_FOUND", f"{missed} of {images.geometry.shape[0]} axial images show no spinal canal the detector "
                                   "could find: not graded", images.series_instance_uid))
        outside = sum(1 for f in findings if line is not None and f.level is None)
        if outside:
            warnings.append(StudyWarning(
                "AXIAL_OUTSIDE_VERTEBRAL_RANGE", f"{outside} axial images lie outside the labelled vertebrae: graded "
                                                 "without level", images.series_instance_uid))
        entries.extend(grade_images(images, findings, grader))
    return BilskyFindings(tuple(entries), tuple(warnings))
