"""Synthetic spine study generator: the scanner side (what series a site acquires and how they look).

:func:`generate_study` makes one complete DICOM study with ground truth from a seed:

* a phantom (``training.synthetic.phantom.make_phantom``) placed in the scanner with a random pose,
* a set of series chosen like a real site's spine protocol (sagittal T1/T2/STIR, axial T2, CT …,
  plus distractors and duplicates), each with vendor-like tags (:mod:`training.synthetic.protocols`),
* images formed like a scanner does (:mod:`training.synthetic.acquisition`): partial volume, bias
  field, Rician noise, interpolation, vendor scaling,
* ``out_dir/study/`` (the folder a user would drop into the app), ``out_dir/truth.json`` (the contract
  in the project brief) and ``out_dir/report.txt`` (free text).

Everything is deterministic by seed (UIDs included); :class:`StudyConfig` can force any choice.

Variation ranges
----------------
Study
  * Field of view: cervical (C1–T2 region), thoracic (C7–L1), lumbar (T11–S1), whole spine (C1–S1);
    uniform unless forced. Whole spine: one tall composed series (30 %; ImageType DERIVED\\PRIMARY\\…\\
    COMPOSED) or 2 (45 %) / 3 (25 %) station series overlapping 20–60 mm along the spine, each
    within 5° of true sagittal.
  * Modalities: MR only 80 %, CT only 12 %, MR + CT 8 % (one study, one frame of reference).
  * Vendor: Siemens / GE / Philips / Canon uniform; 1.5 T 55 %, 3 T 45 %; StationName per vendor.
  * Patient pose: table offset LR ±25 mm, AP ±30 mm, SI ±120 mm; roll/pitch/yaw ±4° / ±4° / ±3°.
  * Anatomy: ``AnatomyConfig`` fields left to the phantom's own randomisation (scoliosis,
    lordosis/kyphosis scale, cancer) except ``pathology_rate`` ~ U(0.1, 0.9). Standard C1–S1
    segmentation: a transitional L6/T13 spine only when ``StudyConfig.anatomy`` asks for one.
Series (probabilities per MR study)
  * sag_t2 95 %, sag_t1 85 %, sag_stir 55 % / sag_t2_fs 20 % (both 7 %; a T2 FS is then planned on the
    STIR's grid with a lower SeriesNumber), ax_t2 (lumbar 90 %, cervical 60 %, whole 50 %,
    thoracic 45 %), ax_t2_gre (cervical 35 %, else 3 %), localizer 55 %, dwi (+ADC) 10 %, cor_t2 10 %,
    sag_t1_fs 7 %, sag_t1_post 10 %, ax_t1 8 %. At least one of sag_t1/sag_t2 is always present.
  * Duplicates of sag_t2: a repeat (same grid and protocol, higher SeriesNumber) 8 %; a lower-resolution
    copy (same FOV and slices, 1.3–2× coarser pixels) 6 %.
  * CT: ct_axial always; ct_sag_reformat 60 %, ct_cor_reformat 35 %, ct_scout 50 %.
Geometry
  * Sagittal FOV height: cervical 200–300 mm, thoracic 320–450, lumbar 240–380, whole composed
    820–1000; stations split the spine in 2–3 parts overlapping 20–60 mm (≈ 260–450 mm each,
    centre ±8 mm); AP width 0.7–1.0 × height (≥ 160 mm). Centre jittered ±15 % of the
    height along the spine and ±20 mm anteroposteriorly, so vertebrae are cut at the edges.
  * Pixel spacing 0.4–1.2 mm (diagnostic series; localisers, DWI and CT scouts are coarser, up to
    1.9 mm); display matrix larger side 256–640 (composed whole spine up to 1024),
    smaller side ≥ 0.5× the larger; acquired at 0.8–1.4 mm and interpolated.
  * Slice thickness: sagittal 2.5–5 mm (cervical 2.5–3.5) + gap 0–30 %; slab 45–95 mm (cervical
    30–60) → 9–25 slices.
  * Axial: 3–5 mm (cervical per-disc 2.5–3.5) + gap 0–25 %; per-disc stacks of 3–6 slices on 3…all
    lumbar discs (ending at the lowest) or 3–5 cervical discs; contiguous stacks 8–60 slices; thoracic
    work-up 1–3 stacks of 5–12 slices through diseased (else random) vertebrae. Whole spine: lumbar
    45 %, thoracic 30 %, both 25 % (two series; the thoracic one then stops at T10). FOV 140–230 mm,
    pixels 0.4–0.9 mm, FOV centred 5–25 mm behind the spine axis (on the canal).
  * Orientation: sagittal optionally aligned to the regional spine tilt, then jittered: 45 % of series
    within ~1°, the rest up to ±20° about one to three axes (total ≤ 20°). Per-disc axial stacks follow
    each disc's endplate normal (±4°) up to 35° from true axial (steeper discs get 35°). Slice
    order along ±normal at random; InstanceNumber reversed 30 %; file names never follow position
    order (random hex names, or a shuffled counter).
  * CT: targeted spine DFOV 200–260 mm, 512² matrix (0.39–0.51 mm pixels), 1.5–3 mm slices (whole
    spine 3 mm), spacing = thickness or 0.8× (overlapping reconstruction); covering 70–100 % of the
    region (whole spine: all of it); reformats 2–3 mm, 15–30 slices; scout lateral or AP.
Images: see :mod:`training.synthetic.acquisition` (SNR 8–45, bias field, ghosts 10 % of series, phase
wrap-around 6 % of sagittal/axial MR grids, k-space apodization 0–0.5, vendor scaling).
DICOM
  * Transfer syntax: 70 % of studies all Explicit VR Little Endian; otherwise each series independently
    RLE / JPEG-LS / JPEG 2000 lossless / Explicit VR (JPEG baseline 8-bit lossy only for MR, 5 %).
  * Descriptions: vendor names (75 %) or RSNA style ("Sagittal T1", "Sagittal T2/STIR", "Axial T2",
    25 %); per series 5 % empty, 5 % generic ("SPINE", "series 5"), 5 % misleading (another kind's
    name: a T1 labelled T2, an axial labelled sag). Tags always stay physically true.
  * SeriesNumber: Philips style n×100+1 or sequential; folder layout flat with random names (with
    ``.dcm``, ``.IMA`` or no extension), one folder per series, or nested ``DICOM/Sxxxxxxx/Ixxxxxxx``.

Roles (``expected_role``) follow the brief's selection rules (:func:`assign_roles`); a series'
cranio-caudal range is its axial slice centres ± half a step, or the z-extent of the outer edges of
its middle sagittal/coronal slice (:func:`operators.core.series_roles.cranio_caudal_range`, shared with
the selector so both sides measure coverage alike).

``fully_in_view`` is computed from the written geometry with :func:`body_outline_mm`.

Truth extras beyond the brief's schema: ``acquisition`` (vendor, field strength, layout, pose),
``series[].role_reason``, ``series[].cranio_caudal_range_mm``, ``discs[].normal``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from operators.core.geometry import VolumeGeometry, obliquity_degrees, plane_crossing
from operators.core.gradings import bilsky_ct_class
from operators.core.levels import level_order
from operators.core.series_roles import cranio_caudal_range, overlap_fraction
from training.synthetic import acquisition as acq
from training.synthetic.dicom_writer import PatientStudy, write_series
from training.synthetic.phantom import AnatomyConfig, SpinePhantom, make_phantom
from training.synthetic.protocols import (
    CT_CONTRAST_AGENTS,
    RSNA_DESCRIPTIONS,
    VENDORS,
    CTProtocol,
    MRProtocol,
    Vendor,
    sample_ct_protocol,
    sample_mr_protocol,
    vendor_station,
)
from training.synthetic.report_text import write_report

TRUTH_SCHEMA = "spine-map-synthetic-truth/1"
GENERATOR_VERSION = "0.1.0"
FIELDS_OF_VIEW: tuple[str, ...] = ("cervical", "thoracic", "lumbar", "whole")
MR_KINDS: tuple[str, ...] = (
    "sag_t1", "sag_t2", "sag_stir", "sag_t2_fs", "sag_t1_fs", "sag_t1_post",
    "ax_t2", "ax_t2_gre", "ax_t1", "cor_t2", "localizer", "dwi",
)  # fmt: skip
CT_KINDS: tuple[str, ...] = ("ct_axial", "ct_sag_reformat", "ct_cor_reformat", "ct_scout")
KINDS: tuple[str, ...] = MR_KINDS + CT_KINDS
DUPLICATES: tuple[str, ...] = ("repeat_sag_t2", "lowres_sag_t2")
LAYOUTS: tuple[str, ...] = ("flat", "per_series", "nested")

#: Kinds that are candidates for a role, and their rank within it (lower wins: a true STIR beats a
#: fat-saturated T2, a TSE axial T2 beats a GRE T2*).
CANDIDATE_ROLE: dict[str, tuple[str, int]] = {
    "sag_t1": ("sag_t1", 0),
    "sag_t2": ("sag_t2", 0),
    "sag_stir": ("sag_stir", 0),
    "sag_t2_fs": ("sag_stir", 1),
    "ax_t2": ("ax_t2", 0),
    "ax_t2_gre": ("ax_t2", 1),
    "ct_axial": ("ct_axial", 0),
}
#: Why every other kind is never used for a role.
UNUSED_REASON: dict[str, str] = {
    "sag_t1_fs": "fat-saturated T1",
    "sag_t1_post": "post-contrast T1 (ContrastBolusAgent)",
    "ax_t1": "axial T1 (no axial T1 role)",
    "cor_t2": "coronal series",
    "localizer": "localizer (ImageType LOCALIZER, mixed orientations)",
    "dwi": "diffusion series (DiffusionBValue / ADC)",
    "ct_sag_reformat": "CT reformat (DERIVED, sagittal)",
    "ct_cor_reformat": "CT reformat (DERIVED, coronal)",
    "ct_scout": "CT scout (LOCALIZER)",
}
#: Kinds whose images get a per-image Bilsky entry in the truth.
BILSKY_KINDS: frozenset[str] = frozenset({"ax_t2", "ax_t2_gre", "ax_t1", "ct_axial"})

#: Region of the spine each field of view targets: (top level, bottom level, margin above, below) mm.
_REGIONS: dict[str, tuple[str, str, float, float]] = {
    "cervical": ("C1", "T2", 30.0, 10.0),
    "thoracic": ("C7", "L1", 10.0, 10.0),
    "lumbar": ("T11", "S1", 10.0, 30.0),
    "whole": ("C1", "S1", 30.0, 30.0),
}
_SAG_HEIGHT_MM: dict[str, tuple[float, float]] = {
    "cervical": (200.0, 300.0),
    "thoracic": (320.0, 450.0),
    "lumbar": (240.0, 380.0),
    "whole": (820.0, 1000.0),
}
#: Axial stacks follow disc/vertebra normals but stay within this angle of true axial (technologists
#: stop angling there; steeper lumbosacral discs get a compromise angle).
_MAX_AXIAL_TILT_DEG = 35.0
_BODY_PART: dict[str, str] = {"cervical": "CSPINE", "thoracic": "TSPINE", "lumbar": "LSPINE", "whole": "SPINE"}
_DISPLAY_MATRICES: tuple[int, ...] = (256, 288, 320, 384, 416, 448, 512, 576, 640, 768, 896, 1024)
_GENERIC_DESCRIPTIONS: tuple[str, ...] = ("SPINE", "MRI SPINE", "series {n}", "Ser{n}", "MR", "routine")
_MISLEADING: dict[str, tuple[str, ...]] = {
    "sag_t1": ("T2 SAG", "Sag STIR", "t2_tse_sag"),
    "sag_t2": ("T1 SAG", "sag T1", "STIR"),
    "sag_stir": ("Sag T1", "T2 TSE SAG"),
    "sag_t2_fs": ("SAG T1", "sag T2"),
    "ax_t2": ("SAG T2", "sag t2_tse", "Sagittal T2"),
    "ax_t2_gre": ("AX T2 FSE",),
    "cor_t2": ("SAG T2", "ax T2"),
    "localizer": ("SAG T2", "t1_tse_sag"),
    "sag_t1_post": ("Sag T1",),
    "sag_t1_fs": ("Sagittal T1",),
}


@dataclass
class StudyConfig:
    """Choices :func:`generate_study` would otherwise draw from the seed. ``None`` = random.

    Attributes:
        field_of_view: ``cervical`` | ``thoracic`` | ``lumbar`` | ``whole``.
        modalities: ``mr`` | ``ct`` | ``mr+ct``.
        series_kinds: exact set of kinds to acquire (overrides ``modalities``); duplicates are extra.
        duplicates: subset of :data:`DUPLICATES` (needs ``sag_t2``).
        whole_spine_stations: 1 (one tall composed series per contrast) | 2 | 3.
        axial_mode: ``angled`` (one stack per disc, one multi-stack series) | ``contiguous``.
        vendor: key of :data:`~training.synthetic.protocols.VENDORS`.
        field_strength_t: 1.5 | 3.0.
        layout: one of :data:`LAYOUTS`.
        transfer_syntax: one UID for every series (CT never gets JPEG baseline).
        description_corruption_rate: probability per series of an empty/generic/misleading description.
        max_oblique_deg: cap on series obliquity (0 gives true planes, handy for tests).
        ghost_rate: probability per MR series of motion ghosts.
        wrap_rate: probability per MR sagittal/axial grid of phase wrap-around.
        anatomy: passed to ``make_phantom``.
        cancer: force a subject with (True) or without (False) cancer when ``anatomy`` is None
            (training sets for the cancer model are enriched; every other draw stays the same).
        transitional: ``"L6"`` or ``"T13"`` forces that transitional anatomy when ``anatomy`` is None
            (the generator's own draw is standard C1…S1; every other draw stays the same).
        ct_contrast: True renders every CT series of the study as a contrast-enhanced (portal
            venous) CT at a strength drawn from 0.6–1.4 of a typical staging CT, with
            ContrastBolusAgent recorded; the generator's own CT is unenhanced. The strength and agent
            come from their own random stream, so every other draw stays the same.
        reverse_instance_numbers: force InstanceNumber order against (True) or along (False) slices.
        sagittal_slices: force the slices per sagittal series (the slab keeps its slice step, so it
            gets wider or narrower); for scaling benchmarks.
        sagittal_matrix: force the display matrix of the larger in-plane side of sagittal series, same
            FOV (pixel spacing becomes FOV / matrix; :func:`~training.synthetic.acquisition.rescale_grid`).
            Both are applied after the generator's own draw, so every other random choice (anatomy,
            pose, protocols, axial series) stays the same as without them.
    """

    field_of_view: str | None = None
    modalities: str | None = None
    series_kinds: tuple[str, ...] | None = None
    duplicates: tuple[str, ...] | None = None
    whole_spine_stations: int | None = None
    axial_mode: str | None = None
    vendor: str | None = None
    field_strength_t: float | None = None
    layout: str | None = None
    transfer_syntax: str | None = None
    description_corruption_rate: float = 0.15
    max_oblique_deg: float = 20.0
    ghost_rate: float = 0.1
    wrap_rate: float = 0.06
    anatomy: AnatomyConfig | None = None
    cancer: bool | None = None
    transitional: str | None = None
    ct_contrast: bool = False
    reverse_instance_numbers: bool | None = None
    sagittal_slices: int | None = None
    sagittal_matrix: int | None = None


# --------------------------------------------------------------------------------------------
# The spine as seen by the scanner
# --------------------------------------------------------------------------------------------
@dataclass
class SpineView:
    """Phantom anatomy mapped into scanner LPS, with an arc-length parameter along the spine axis."""

    levels: list[str]
    centroids: np.ndarray  # (V, 3)
    superior: np.ndarray  # (V, 3)
    anterior: np.ndarray  # (V, 3)
    disc_names: list[str]
    disc_centres: np.ndarray  # (D, 3)
    disc_normals: np.ndarray  # (D, 3)
    axis: np.ndarray  # (M, 3) cranial → caudal
    arc: np.ndarray  # (M,) mm from the first axis point

    @classmethod
    def from_phantom(cls, phantom: SpinePhantom, pose: acq.PatientPose) -> "SpineView":
        """Read the phantom's truth and map it through ``pose`` into scanner LPS."""
        vertebrae = phantom.vertebrae
        discs = phantom.discs
        axis = pose.to_scanner(np.asarray(phantom.spine_axis_points_mm, dtype=float))
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(axis, axis=0), axis=1))])
        return cls(
            levels=[v.level for v in vertebrae],
            centroids=pose.to_scanner(np.array([v.centroid_mm for v in vertebrae], dtype=float)),
            superior=pose.direction_to_scanner(np.array([v.superior_axis for v in vertebrae], dtype=float)),
            anterior=pose.direction_to_scanner(np.array([v.anterior_axis for v in vertebrae], dtype=float)),
            disc_names=[d.level for d in discs],
            disc_centres=pose.to_scanner(np.array([d.centre_mm for d in discs], dtype=float).reshape(-1, 3)),
            disc_normals=pose.direction_to_scanner(np.array([d.normal for d in discs], dtype=float).reshape(-1, 3)),
            axis=axis,
            arc=arc,
        )

    def arc_of(self, point: np.ndarray) -> float:
        """Arc length of the axis sample nearest to ``point``."""
        return float(self.arc[int(np.argmin(np.linalg.norm(self.axis - point, axis=1)))])

    def point_at(self, s: float) -> np.ndarray:
        """Axis point at arc length ``s`` (clamped to the axis ends)."""
        return np.array([np.interp(s, self.arc, self.axis[:, i]) for i in range(3)])

    def direction_at(self, s: float, half_window_mm: float = 40.0) -> np.ndarray:
        """Unit cranial → caudal direction of the axis around ``s``."""
        d = self.point_at(s + half_window_mm) - self.point_at(s - half_window_mm)
        return d / max(float(np.linalg.norm(d)), 1e-6)

    def level_index(self, level: str) -> int:
        """Index of ``level`` or, if the phantom lacks it, of the nearest level by cranio-caudal order."""
        if level in self.levels:
            return self.levels.index(level)
        order = level_order(level)
        return int(np.argmin([abs(level_order(lv) - order) for lv in self.levels]))

    def region_arcs(self, fov: str) -> tuple[float, float]:
        """Arc-length interval ``(top, bottom)`` that a field of view targets."""
        top, bottom, above, below = _REGIONS[fov]
        s_top = self.arc_of(self.centroids[self.level_index(top)]) - above
        s_bottom = self.arc_of(self.centroids[self.level_index(bottom)]) + below
        return max(s_top, float(self.arc[0])), min(s_bottom, float(self.arc[-1]))

    def mean_anterior(self) -> np.ndarray:
        """Unit mean anterior direction of the vertebrae (the patient's front)."""
        a = self.anterior.mean(axis=0)
        return a / np.linalg.norm(a)


# --------------------------------------------------------------------------------------------
# Series plans
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)  # identity semantics: plans are looked up in lists and used as cache keys
class SeriesPlan:
    """One series before rendering: its stacks, protocol and identity."""

    kind: str
    modality: str
    stacks: list[acq.StackGrid]
    protocol: MRProtocol | CTProtocol
    description: str = ""
    series_number: int = 0
    series_instance_uid: str = ""
    stack_protocols: list[MRProtocol] | None = None  # DWI: one protocol (b-value) per stack
    adc_of: "SeriesPlan | None" = None  # ADC maps are computed from this DWI series
    composed: bool = False
    role: str = "unused"
    role_reason: str = ""
    folder: str = "."
    transfer_syntax: str = ExplicitVRLittleEndian
    formed: list[np.ndarray] = field(default_factory=list)
    instance_numbers: list[int] = field(default_factory=list)

    @property
    def image_type(self) -> list[str]:
        """ImageType written for this series."""
        return list(self.protocol.tags["ImageType"])

    @property
    def original(self) -> bool:
        """True for ORIGINAL images (preferred over DERIVED by the role rules)."""
        return self.image_type[0] == "ORIGINAL"

    @property
    def n_instances(self) -> int:
        """Images in the series, all stacks together."""
        return sum(s.geometry.shape[0] for s in self.stacks)

    def cranio_caudal_range(self) -> tuple[float, float]:
        """LPS z interval (mm) the series covers, by the selector's own definition."""
        return cranio_caudal_range([stack.geometry for stack in self.stacks])


def _grid(
    centre: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    shape: tuple[int, int, int],
    pixel_mm: tuple[float, float],
    slice_step_mm: float,
    thickness_mm: float,
    acquired: tuple[int, int],
    phase_axis: int,
    reverse: bool,
    wrap_samples: int = 0,
) -> acq.StackGrid:
    """A stack centred on ``centre``: ``row_dir`` runs along a row (column index), ``col_dir`` down a
    column (row index); slices step along ±(row_dir × col_dir)."""
    normal = np.cross(row_dir, col_dir)
    step = -normal if reverse else normal
    affine = np.eye(4)
    affine[:3, 0] = step * slice_step_mm
    affine[:3, 1] = col_dir * pixel_mm[0]
    affine[:3, 2] = row_dir * pixel_mm[1]
    half = (np.asarray(shape, dtype=float) - 1.0) / 2.0
    affine[:3, 3] = centre - affine[:3, :3] @ half
    return acq.StackGrid(VolumeGeometry(affine, shape), thickness_mm, acquired, phase_axis, wrap_samples)


def _jitter_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Random obliquity: 45 % near-true (σ 0.7°), otherwise up to ``max_deg`` about 1–3 axes."""
    if max_deg <= 0:
        return np.eye(3)
    if rng.random() < 0.45:
        angles = rng.normal(0.0, min(0.7, max_deg / 3), 3)
    else:
        mask = np.zeros(3)
        mask[rng.choice(3, size=int(rng.integers(1, 4)), replace=False)] = 1.0
        angles = rng.uniform(-max_deg, max_deg, 3) * mask
    rotation = acq.rotation_matrix(tuple(float(a) for a in angles))
    total = math.degrees(math.acos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)))
    if total > max_deg:
        rotation = acq.rotation_matrix(tuple(float(a) * max_deg / total * 0.98 for a in angles))
    return rotation


def _matrix(rng: np.random.Generator, height_mm: float, width_mm: float, max_dim: int = 640,
            spacing_range: tuple[float, float] = (0.4, 1.2)) -> tuple[int, int, float]:
    """Display matrix ``(rows, cols)`` and square pixel spacing for a FOV (see module docstring)."""
    lo, hi = spacing_range
    larger = max(height_mm, width_mm)
    options = [m for m in _DISPLAY_MATRICES if lo <= larger / m <= hi and m <= max_dim]
    if options:
        n = int(rng.choice(options))
    else:
        n = int(np.clip(round(larger / hi), 256, 1024))
    spacing = larger / n
    rows = max(2, round(height_mm / spacing))
    cols = max(2, round(width_mm / spacing))
    return int(rows), int(cols), float(spacing)


def _wrap(rng: np.random.Generator, phase_samples: int, rate: float) -> int:
    """Phase wrap-around for a fraction ``rate`` of MR grids: anatomy up to 8–25 % of the FOV beyond
    each phase edge folds onto the other side (returned in acquired samples)."""
    return int(round(phase_samples * rng.uniform(0.08, 0.25))) if rng.random() < rate else 0


def _acquired(rng: np.random.Generator, rows: int, cols: int, spacing: float, phase_axis: int) -> tuple[int, int]:
    """Acquired matrix: 0.8–1.2 mm frequency resolution, phase 1.0–1.35× coarser, ≤ display."""
    freq = rng.uniform(0.8, 1.2)
    res = [freq, freq]
    res[phase_axis - 1] *= rng.uniform(1.0, 1.35)
    ar = min(rows, max(16, round(rows * spacing / res[0])))
    ac = min(cols, max(16, round(cols * spacing / res[1])))
    return int(ar), int(ac)


@dataclass(frozen=True)
class SagittalPlanning:
    """FOV, orientation and slab of a sagittal acquisition (shared by the contrasts of one station)."""

    centre: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    height_mm: float
    width_mm: float
    n_slices: int
    thickness_mm: float
    step_mm: float
    reverse: bool


class Planner:
    """Draws series geometry for one study."""

    def __init__(self, spine: SpineView, rng: np.random.Generator, config: StudyConfig):
        self.spine = spine
        self.rng = rng
        self.config = config

    # -- sagittal -------------------------------------------------------------------------------
    def sagittal(self, fov: str, s_top: float, s_bottom: float, height_range: tuple[float, float],
                 centre_jitter_mm: float | None = None, max_oblique_deg: float | None = None) -> SagittalPlanning:
        """Plan a sagittal slab covering roughly ``[s_top, s_bottom]`` of the spine axis; the centre moves
        along the spine by up to ``centre_jitter_mm`` (default ±15 % of the FOV height) and the
        orientation by up to ``max_oblique_deg`` (default: the study's cap)."""
        rng = self.rng
        height = float(rng.uniform(*height_range))
        jitter = 0.15 * min(height, s_bottom - s_top + 60) if centre_jitter_mm is None else centre_jitter_mm
        s_centre = (s_top + s_bottom) / 2.0 + rng.uniform(-jitter, jitter)
        on_axis = self.spine.point_at(s_centre)
        anterior = self.spine.mean_anterior()
        centre = on_axis + anterior * rng.uniform(-20.0, 20.0)
        # Laterally the slab is centred on the vertebral bodies in view, as a technologist would.
        near = np.abs(self.spine.centroids[:, 2] - centre[2]) < height / 2
        if near.any():
            centre[0] = float(self.spine.centroids[near, 0].mean()) + rng.normal(0.0, 2.0)
        base_row = np.array([0.0, 1.0, 0.0])  # posterior: anterior on the left of the image
        base_col = np.array([0.0, 0.0, -1.0])  # inferior: head at the top
        max_deg = min(self.config.max_oblique_deg, max_oblique_deg if max_oblique_deg is not None else 90.0)
        if max_deg > 0 and rng.random() < 0.5:
            # Align the image's vertical axis with the regional spine tilt in the sagittal plane.
            d = self.spine.direction_at(s_centre, half_window_mm=height / 3)
            tilt = math.degrees(math.atan2(d[1], -d[2]))
            tilt = float(np.clip(tilt, -max_deg, max_deg))
            align = acq.rotation_matrix((tilt, 0.0, 0.0))
        else:
            align = np.eye(3)
        rotation = _jitter_rotation(rng, max_deg) @ align
        row_dir, col_dir = rotation @ base_row, rotation @ base_col
        if obliquity_degrees(np.cross(row_dir, col_dir)) > max_deg + 1e-6:
            row_dir, col_dir = align @ base_row, align @ base_col
        cervical = fov == "cervical"
        thickness = float(rng.uniform(2.5, 3.5) if cervical else rng.uniform(2.5, 5.0))
        step = thickness * (1.0 + rng.uniform(0.0, 0.3))
        # Slab: usually foramen to foramen (wider than the bodies), sometimes too thin for the whole body.
        slab = rng.uniform(30.0, 60.0) if cervical else rng.uniform(45.0, 95.0)
        n_slices = int(np.clip(round(slab / step), 9, 25))
        if self.config.sagittal_slices is not None:
            n_slices = int(self.config.sagittal_slices)
        width = max(160.0, height * rng.uniform(0.7, 1.0)) if height < 600 else rng.uniform(300.0, 400.0)
        reverse = bool(rng.random() < 0.5)
        return SagittalPlanning(centre, row_dir, col_dir, height, width, n_slices, thickness, step, reverse)

    def sagittal_grid(self, planning: SagittalPlanning, max_dim: int = 640) -> acq.StackGrid:
        """One series' grid on ``planning``: its own display/acquired matrix and phase direction."""
        rng = self.rng
        rows, cols, spacing = _matrix(rng, planning.height_mm, planning.width_mm, max_dim=max_dim)
        phase_axis = 2 if rng.random() < 0.7 else 1  # AP phase encoding is the usual sagittal choice
        acquired = _acquired(rng, rows, cols, spacing, phase_axis)
        grid = _grid(
            planning.centre, planning.row_dir, planning.col_dir, (planning.n_slices, rows, cols), (spacing, spacing),
            planning.step_mm, planning.thickness_mm, acquired, phase_axis, planning.reverse,
            _wrap(rng, acquired[phase_axis - 1], self.config.wrap_rate),
        )  # fmt: skip
        if self.config.sagittal_matrix is not None:
            grid = acq.rescale_grid(grid, self.config.sagittal_matrix)
        return grid

    # -- axial ----------------------------------------------------------------------------------
    def _axial_stack(self, centre: np.ndarray, normal: np.ndarray, n_slices: int, thickness: float,
                     step: float, fov_mm: float, matrix: tuple[int, int, float] | None = None,
                     oblique_deg: float = 4.0) -> acq.StackGrid:
        """An axial stack of ``n_slices`` centred at ``centre`` with slice normal ≈ ``normal``."""
        rng = self.rng
        align = acq.rotation_between(np.array([0.0, 0.0, 1.0]), _limit_tilt(normal, _MAX_AXIAL_TILT_DEG))
        rotation = _jitter_rotation(rng, min(oblique_deg, self.config.max_oblique_deg)) @ align
        row_dir = rotation @ np.array([1.0, 0.0, 0.0])  # towards patient left: right side on the image left
        col_dir = rotation @ np.array([0.0, 1.0, 0.0])  # posterior: anterior at the top
        rows, cols, spacing = matrix or _matrix(rng, fov_mm, fov_mm * rng.uniform(0.85, 1.0), max_dim=512,
                                                spacing_range=(0.4, 0.9))
        phase_axis = 2 if rng.random() < 0.6 else 1
        acquired = _acquired(rng, rows, cols, spacing, phase_axis)
        return _grid(centre, row_dir, col_dir, (n_slices, rows, cols), (spacing, spacing), step, thickness,
                     acquired, phase_axis, bool(rng.random() < 0.5), _wrap(rng, acquired[phase_axis - 1],
                                                                         self.config.wrap_rate))

    def _canal_centre(self, point: np.ndarray) -> np.ndarray:
        """Axial FOVs centre behind the body, on the canal: 5–25 mm posterior of the axis."""
        return point - self.spine.mean_anterior() * self.rng.uniform(5.0, 25.0)

    def axial_per_disc(self, discs: list[int]) -> list[acq.StackGrid]:
        """One short stack angled to each chosen disc (indices into ``spine.disc_names``)."""
        rng = self.rng
        cervical = self.spine.disc_names[discs[0]].startswith("C")
        n = int(rng.integers(3, 6) if cervical else rng.integers(3, 7))
        thickness = float(rng.uniform(2.5, 3.5) if cervical else rng.uniform(3.0, 4.5))
        step = thickness * (1.0 + rng.uniform(0.0, 0.25))
        fov = float(rng.uniform(140.0, 220.0))
        matrix = _matrix(rng, fov, fov * rng.uniform(0.85, 1.0), max_dim=512, spacing_range=(0.4, 0.9))
        return [
            self._axial_stack(self._canal_centre(self.spine.disc_centres[i]), self.spine.disc_normals[i], n,
                              thickness, step, fov, matrix)
            for i in discs
        ]

    def axial_contiguous(self, top: np.ndarray, bottom: np.ndarray) -> acq.StackGrid:
        """One straight stack from ``top`` to ``bottom`` (LPS points on the spine)."""
        rng = self.rng
        thickness = float(rng.uniform(3.0, 5.0))
        step = thickness * (1.0 + rng.uniform(0.0, 0.15))
        length = float(np.linalg.norm(top - bottom)) + rng.uniform(0.0, 20.0)
        n = int(np.clip(math.ceil(length / step) + 1, 8, 60))
        axis = top - bottom
        return self._axial_stack(self._canal_centre((top + bottom) / 2), axis / np.linalg.norm(axis), n, thickness,
                                 step, float(rng.uniform(150.0, 230.0)), oblique_deg=8.0)

    def axial_at_levels(self, vertebra_indices: list[int]) -> list[acq.StackGrid]:
        """Stacks perpendicular to the spine through chosen vertebrae (thoracic axial work-up)."""
        rng = self.rng
        thickness = float(rng.uniform(3.0, 5.0))
        step = thickness * (1.0 + rng.uniform(0.0, 0.2))
        fov = float(rng.uniform(150.0, 230.0))
        matrix = _matrix(rng, fov, fov * rng.uniform(0.85, 1.0), max_dim=512, spacing_range=(0.4, 0.9))
        n = int(rng.integers(5, 13))
        return [
            self._axial_stack(self._canal_centre(self.spine.centroids[i]), self.spine.superior[i], n, thickness,
                              step, fov, matrix)
            for i in vertebra_indices
        ]

    # -- other planes ---------------------------------------------------------------------------
    def coronal(self, planning: SagittalPlanning) -> acq.StackGrid:
        """Coronal slab through the vertebral bodies and canal."""
        rng = self.rng
        centre = planning.centre.copy()
        near = np.abs(self.spine.centroids[:, 2] - centre[2]) < planning.height_mm / 2
        if near.any():
            centre[1] = float(self.spine.centroids[near, 1].mean()) + rng.uniform(0.0, 15.0)
        thickness = float(rng.uniform(3.0, 4.5))
        step = thickness * (1.0 + rng.uniform(0.0, 0.2))
        n = int(rng.integers(9, 16))
        rotation = _jitter_rotation(rng, min(8.0, self.config.max_oblique_deg))
        row_dir = rotation @ np.array([1.0, 0.0, 0.0])
        col_dir = rotation @ np.array([0.0, 0.0, -1.0])
        rows, cols, spacing = _matrix(rng, planning.height_mm, planning.height_mm * rng.uniform(0.7, 1.0))
        return _grid(centre, row_dir, col_dir, (n, rows, cols), (spacing, spacing), step, thickness,
                     _acquired(rng, rows, cols, spacing, 2), 2, bool(rng.random() < 0.5))

    def localizer(self, centre: np.ndarray) -> list[acq.StackGrid]:
        """Three-plane localiser: 1–3 thick low-resolution slices per plane, large FOV."""
        rng = self.rng
        fov = float(rng.uniform(350.0, 480.0))
        thickness = float(rng.uniform(6.0, 10.0))
        stacks = []
        for row_dir, col_dir in (
            ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),  # sagittal
            ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),  # coronal
            ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),  # axial
        ):
            n = int(rng.integers(1, 4))
            stacks.append(_grid(centre + rng.normal(0.0, 10.0, 3), np.array(row_dir), np.array(col_dir), (n, 256, 256),
                                (fov / 256, fov / 256), thickness + rng.uniform(2.0, 15.0), thickness,
                                (int(rng.integers(128, 193)), int(rng.integers(128, 193))), 2, False))
        return stacks

    def dwi(self, planning: SagittalPlanning, axial: bool) -> acq.StackGrid:
        """Low-resolution EPI geometry (sagittal on the sagittal slab, or axial through its centre)."""
        rng = self.rng
        thickness = float(rng.uniform(4.0, 5.0))
        step = thickness * (1.0 + rng.uniform(0.0, 0.2))
        rows = cols = 256
        if axial:
            fov = float(rng.uniform(200.0, 260.0))
            n = int(rng.integers(12, 25))
            row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
            height = fov
        else:
            height = min(planning.height_mm, 400.0)
            n = int(np.clip(round(planning.n_slices * planning.step_mm / step), 9, 15))
            row_dir, col_dir = planning.row_dir, planning.col_dir
        spacing = height / rows
        acquired = int(rng.integers(96, 161))
        return _grid(planning.centre, row_dir, col_dir, (n, rows, cols), (spacing, spacing), step, thickness,
                     (acquired, acquired), 2, bool(rng.random() < 0.5))

    # -- CT -------------------------------------------------------------------------------------
    def ct_axial(self, s_top: float, s_bottom: float, whole: bool) -> acq.StackGrid:
        """Axial CT volume from ``s_top`` to ``s_bottom`` along the spine, 512² targeted DFOV."""
        rng = self.rng
        top, bottom = self.spine.point_at(s_top), self.spine.point_at(s_bottom)
        thickness = float(rng.choice([3.0] if whole else [1.5, 2.0, 2.5, 3.0]))
        step = thickness * (0.8 if rng.random() < 0.3 else 1.0)
        z_top, z_bottom = max(top[2], bottom[2]), min(top[2], bottom[2])
        n = int(math.ceil((z_top - z_bottom) / step)) + 1
        dfov = float(rng.uniform(200.0, 260.0))  # a targeted spine reconstruction, also from trauma CTs
        centre = self._canal_centre((top + bottom) / 2)
        centre[2] = (z_top + z_bottom) / 2
        spacing = dfov / 512
        acquired = int(round(dfov / rng.uniform(0.9, 1.2)))
        # CT axial planes are true axial (no gantry tilt): orientation [1,0,0,0,1,0].
        return _grid(centre, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), (n, 512, 512),
                     (spacing, spacing), step, thickness, (acquired, acquired), 2, bool(rng.random() < 0.5))

    def ct_reformat(self, volume: acq.StackGrid, sagittal: bool) -> acq.StackGrid:
        """Sagittal or coronal reformat covering the CT volume's z range (DERIVED series)."""
        rng = self.rng
        g = volume.geometry
        z = g.slice_positions()[:, 2]
        height = float(z.max() - z.min())
        in_plane = float(g.spacing_mm[1]) * 512
        spacing = float(np.clip(g.spacing_mm[1] * rng.uniform(1.0, 1.6), 0.4, 1.2))
        rows = max(16, round(height / spacing))
        cols = max(16, round(in_plane * (0.6 if sagittal else 1.0) / spacing))
        thickness = float(rng.choice([2.0, 2.5, 3.0]))
        n = int(rng.integers(15, 31))
        centre = g.centre_mm.copy()
        if sagittal:
            row_dir, col_dir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
        else:
            row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])
            centre[1] -= self.spine.mean_anterior()[1] * 10.0
        acquired = (min(rows, round(height)), min(cols, round(cols * spacing)))
        return _grid(centre, row_dir, col_dir, (n, rows, cols), (spacing, spacing), thickness, thickness, acquired,
                     2, False)

    def ct_scout(self, volume: acq.StackGrid) -> acq.StackGrid:
        """Single-image topogram plane (lateral or AP); rays run along its normal."""
        rng = self.rng
        g = volume.geometry
        z = g.slice_positions()[:, 2]
        height = float(z.max() - z.min()) + rng.uniform(60.0, 150.0)
        width = float(rng.uniform(400.0, 500.0))
        centre = g.centre_mm.copy()
        lateral = rng.random() < 0.5
        row_dir = np.array([0.0, 1.0, 0.0]) if lateral else np.array([1.0, 0.0, 0.0])
        col_dir = np.array([0.0, 0.0, -1.0])
        spacing = max(height, width) / 512
        rows, cols = round(height / spacing), round(width / spacing)
        return _grid(centre, row_dir, col_dir, (1, rows, cols), (spacing, spacing), 1.0, 1.0,
                     (round(height / 2.5), round(width / 2.5)), 2, False)


# --------------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------------
def _preference(plan: SeriesPlan) -> tuple:
    """Sort key, best first: role rank, ORIGINAL, coverage (slices × mm), finer pixels, higher number."""
    low, high = plan.cranio_caudal_range()
    rank = CANDIDATE_ROLE[plan.kind][1]
    spacing = min(float(plan.stacks[0].geometry.spacing_mm[1]), float(plan.stacks[0].geometry.spacing_mm[2]))
    return (rank, 0 if plan.original else 1, -round(plan.n_instances * (high - low), 1), round(spacing, 4),
            -plan.series_number)


def _why_lost(loser: SeriesPlan, winner: SeriesPlan) -> str:
    """The first preference criterion on which ``winner`` beats ``loser``, in words."""
    a, b = _preference(winner), _preference(loser)
    reasons = ("lower-ranked sequence for the role", "DERIVED rather than ORIGINAL", "covers less of the spine",
               "coarser in-plane resolution", "lower SeriesNumber (repeat taken later)")
    for index, reason in enumerate(reasons):
        if a[index] != b[index]:
            return reason
    return "identical candidate"


def assign_roles(plans: list[SeriesPlan]) -> None:
    """Set ``role`` and ``role_reason`` on every plan by the brief's selection rules (in place)."""
    by_role: dict[str, list[SeriesPlan]] = {}
    for plan in plans:
        if plan.kind in CANDIDATE_ROLE:
            by_role.setdefault(CANDIDATE_ROLE[plan.kind][0], []).append(plan)
        else:
            plan.role, plan.role_reason = "unused", UNUSED_REASON[plan.kind]
    for role, candidates in by_role.items():
        kept: list[SeriesPlan] = []
        for plan in sorted(candidates, key=_preference):
            span = plan.cranio_caudal_range()
            rival = next((k for k in kept if overlap_fraction(span, k.cranio_caudal_range()) >= 0.5), None)
            if rival is None:
                kept.append(plan)
                plan.role, plan.role_reason = role, f"{role} candidate kept"
            else:
                plan.role = "unused"
                plan.role_reason = f"{role} candidate lost to series {rival.series_number}: {_why_lost(plan, rival)}"


# --------------------------------------------------------------------------------------------
# Study assembly
# --------------------------------------------------------------------------------------------
class _Study:
    """State of one study being generated (random streams, phantom, plans)."""

    def __init__(self, seed: int, config: StudyConfig):
        self.seed = seed
        self.config = config
        self.rng = np.random.default_rng([seed, 11])
        rng = self.rng
        self.fov = config.field_of_view or str(rng.choice(FIELDS_OF_VIEW))
        if self.fov not in FIELDS_OF_VIEW:
            raise ValueError(f"unknown field of view {self.fov!r}")
        self.vendor: Vendor = VENDORS[config.vendor or str(rng.choice(sorted(VENDORS)))]
        self.field_t = float(config.field_strength_t or (1.5 if rng.random() < 0.55 else 3.0))
        self.layout = config.layout or str(rng.choice(LAYOUTS))
        anatomy = config.anatomy or AnatomyConfig(pathology_rate=float(rng.uniform(0.1, 0.9)), cancer=config.cancer,
                                                transitional=config.transitional)
        self.phantom = make_phantom(np.random.default_rng([seed, 12]), anatomy)
        rotation = acq.rotation_matrix((rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-3, 3)))
        offset = np.array([rng.uniform(-25, 25), rng.uniform(-30, 30), rng.uniform(-120, 120)])
        self.pose = acq.PatientPose(rotation, offset)
        self.spine = SpineView.from_phantom(self.phantom, self.pose)
        self.planner = Planner(self.spine, rng, config)
        self.uid_root = f"spine-map-synthetic/{GENERATOR_VERSION}/{seed}"
        self.station = vendor_station(self.vendor, rng)
        self.compressed_study = rng.random() < 0.3
        self.rsna_style = rng.random() < 0.25
        self.plans: list[SeriesPlan] = []
        self._signal_cache: dict[tuple[int, int], np.ndarray] = {}

    def uid(self, *parts: object) -> str:
        """Deterministic UID for ``parts`` of this study (pydicom hashes the concatenated sources, so
        they are joined with a separator: ("sop", 1, 11) and ("sop", 11, 1) must differ)."""
        return generate_uid(entropy_srcs=["/".join([self.uid_root, *map(str, parts)])])

    def _transfer_syntax(self, modality: str) -> str:
        """Forced syntax, or Explicit VR LE, or (compressed studies) a random one per series."""
        forced = self.config.transfer_syntax
        if forced:
            # JPEG baseline is lossy 8-bit: never for CT, whose HU must read back exactly.
            return JPEG2000Lossless if modality == "CT" and forced == JPEGBaseline8Bit else forced
        if not self.compressed_study:
            return ExplicitVRLittleEndian
        if modality == "MR" and self.rng.random() < 0.05:
            return JPEGBaseline8Bit
        return str(self.rng.choice([ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless]))

    # -- choosing what to acquire ---------------------------------------------------------------
    def choose_kinds(self) -> tuple[list[str], list[str]]:
        """The series kinds to acquire and the sag T2 duplicates to add (forced or drawn)."""
        config, rng = self.config, self.rng
        if config.series_kinds is not None:
            unknown = set(config.series_kinds) - set(KINDS)
            if unknown:
                raise ValueError(f"unknown series kinds {sorted(unknown)}")
            kinds = list(config.series_kinds)
        else:
            modalities = config.modalities or str(rng.choice(["mr", "ct", "mr+ct"], p=[0.80, 0.12, 0.08]))
            kinds = []
            if "mr" in modalities:
                kinds += self._mr_kinds()
            if "ct" in modalities:
                kinds += ["ct_axial"] + [k for k, p in (("ct_sag_reformat", 0.6), ("ct_cor_reformat", 0.35),
                                                         ("ct_scout", 0.5)) if rng.random() < p]
        if config.duplicates is not None:
            duplicates = list(config.duplicates)
        else:
            duplicates = [d for d, p in (("repeat_sag_t2", 0.08), ("lowres_sag_t2", 0.06)) if rng.random() < p]
        if "sag_t2" not in kinds:
            duplicates = []
        return kinds, duplicates

    def _mr_kinds(self) -> list[str]:
        """A site's MR spine protocol for this FOV (probabilities in the module docstring)."""
        rng, fov = self.rng, self.fov
        kinds = [k for k, p in (("sag_t1", 0.85), ("sag_t2", 0.95)) if rng.random() < p] or ["sag_t2"]
        fluid = rng.random()
        kinds += ["sag_stir"] if fluid < 0.48 else ["sag_t2_fs"] if fluid < 0.68 else \
            ["sag_stir", "sag_t2_fs"] if fluid < 0.75 else []  # fmt: skip
        ax_p = {"lumbar": 0.9, "cervical": 0.6, "whole": 0.5, "thoracic": 0.45}[fov]
        extra = (("ax_t2", ax_p), ("ax_t2_gre", 0.35 if fov == "cervical" else 0.03), ("localizer", 0.55),
                 ("dwi", 0.10), ("cor_t2", 0.10), ("sag_t1_fs", 0.07), ("sag_t1_post", 0.10), ("ax_t1", 0.08))
        return kinds + [k for k, p in extra if rng.random() < p]

    # -- planning -------------------------------------------------------------------------------
    def plan(self) -> None:
        """Choose and plan every series (geometry, protocol, number, description, syntax, role)."""
        kinds, duplicates = self.choose_kinds()
        rng, planner, spine, fov = self.rng, self.planner, self.spine, self.fov
        s_top, s_bottom = spine.region_arcs(fov)
        stations = self._stations(s_top, s_bottom)
        sag_kinds = [k for k in ("sag_t1", "sag_t2", "sag_stir", "sag_t2_fs", "sag_t1_fs", "sag_t1_post") if k in kinds]
        first_planning: SagittalPlanning | None = None
        for index, (top, bottom, heights, jitter) in enumerate(stations):
            # Stations of one exam are planned nearly true sagittal so that they can be composed.
            planning = planner.sagittal(fov, top, bottom, heights, jitter, 5.0 if len(stations) > 1 else None)
            first_planning = first_planning or planning
            composed = len(stations) == 1 and fov == "whole"
            shared_grid = planner.sagittal_grid(planning, max_dim=1024 if composed else 640)
            grids: dict[str, acq.StackGrid] = {}
            # Sites copy one planning to every sagittal contrast: 60 % of studies keep one matrix for
            # all of them, otherwise each contrast keeps it with probability 1/2.
            same_matrix = rng.random() < 0.6
            for kind in sag_kinds:
                if kind == "sag_t2_fs" and "sag_stir" in grids:
                    # Planned on the STIR's grid: only the sequence rank can decide between them.
                    grids[kind] = grids["sag_stir"]
                elif same_matrix or rng.random() < 0.5:
                    grids[kind] = shared_grid
                else:
                    grids[kind] = planner.sagittal_grid(planning, max_dim=1024 if composed else 640)
            order = list(sag_kinds)
            if "sag_stir" in order and "sag_t2_fs" in order:
                # The fat-sat T2 is acquired before the STIR here so a repeat cannot explain the choice.
                order.remove("sag_t2_fs")
                order.insert(order.index("sag_stir"), "sag_t2_fs")
            for kind in order:
                self._add_mr(kind, [grids[kind]], composed=composed)
            if index == 0 and "sag_t2" in grids:
                self._add_duplicates(duplicates)
        planning = first_planning or planner.sagittal(fov, s_top, s_bottom, _SAG_HEIGHT_MM[fov])
        if "ax_t2" in kinds:
            for stacks in self._axial_series():
                self._add_mr("ax_t2", stacks)
        if "ax_t2_gre" in kinds:
            top, bottom = self._axial_span()
            self._add_mr("ax_t2_gre", [planner.axial_contiguous(top, bottom)])
        if "ax_t1" in kinds:
            top, bottom = self._axial_span()
            self._add_mr("ax_t1", [planner.axial_contiguous(top, bottom)])
        if "cor_t2" in kinds:
            self._add_mr("cor_t2", [planner.coronal(planning)])
        if "dwi" in kinds:
            self._add_dwi(planning)
        if "localizer" in kinds:
            self._add_mr("localizer", planner.localizer(planning.centre))
        self._add_ct([k for k in kinds if k in CT_KINDS], s_top, s_bottom)
        self._number_series()
        assign_roles(self.plans)

    def _stations(self, s_top: float, s_bottom: float) -> list[tuple[float, float, tuple[float, float], float | None]]:
        """Sagittal stations as ``(top arc, bottom arc, FOV height range, centre jitter mm)``."""
        if self.fov != "whole":
            return [(s_top, s_bottom, _SAG_HEIGHT_MM[self.fov], None)]
        n = self.config.whole_spine_stations or int(self.rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
        if n == 1:
            return [(s_top, s_bottom, _SAG_HEIGHT_MM["whole"], None)]
        # Split the spine into n stations overlapping by 20–60 mm; small height/centre jitter keeps
        # neighbours overlapping far less than half a station (so the role rules keep them all).
        overlap = float(self.rng.uniform(20.0, 60.0))
        length = (s_bottom - s_top + (n - 1) * overlap) / n
        stations = []
        for i in range(n):
            top = s_top + i * (length - overlap)
            # The FOV height is the station's cranio-caudal (z) extent: along a curved spine that is
            # shorter than its arc length, and using the arc would make stations overlap by far more.
            height = abs(float(self.spine.point_at(top)[2] - self.spine.point_at(top + length)[2]))
            stations.append((top, top + length, (height, height + 10.0), 8.0))
        return stations

    def _lumbar_discs(self) -> list[int]:
        """Indices of the discs below a lumbar vertebra (L1/L2 … L5/S1, with L6 when present)."""
        return [i for i, name in enumerate(self.spine.disc_names) if name.startswith("L")]

    def _axial_series(self) -> list[list[acq.StackGrid]]:
        """Stacks of each axial T2 series: lumbar, cervical or thoracic by FOV; whole-spine studies get
        lumbar (45 %), thoracic (30 %) or both as two series (25 %)."""
        if self.fov != "whole":
            return [self._axial_stacks(self.fov)]
        roll = self.rng.random()
        regions = ["lumbar"] if roll < 0.45 else ["thoracic"] if roll < 0.75 else ["thoracic", "lumbar"]
        return [self._axial_stacks(region, lumbar_too="lumbar" in regions) for region in regions]

    def _axial_stacks(self, region: str, lumbar_too: bool = False) -> list[acq.StackGrid]:
        """Stacks of one axial T2 series for ``region`` (``lumbar``, ``cervical`` or thoracic work-up)."""
        rng, planner, spine = self.rng, self.planner, self.spine
        mode = self.config.axial_mode or ("angled" if rng.random() < 0.6 else "contiguous")
        if region == "lumbar":
            discs = self._lumbar_discs()
            if mode == "angled" and len(discs) >= 2:
                count = int(rng.integers(min(3, len(discs)), len(discs) + 1))
                return planner.axial_per_disc(discs[-count:])
            return [planner.axial_contiguous(spine.disc_centres[discs[0]] if discs else spine.centroids[-3],
                                             spine.disc_centres[discs[-1]] if discs else spine.centroids[-1])]
        if region == "cervical":
            discs = [i for i, name in enumerate(spine.disc_names) if name.startswith("C") and name != "C1/C2"]
            if mode == "angled" and len(discs) >= 2:
                start = int(rng.integers(0, max(1, len(discs) - 2)))
                return planner.axial_per_disc(discs[start : start + int(rng.integers(3, 6))])
            return [planner.axial_contiguous(spine.centroids[spine.level_index("C2")],
                                             spine.centroids[spine.level_index("T1")])]
        # Thoracic work-up: stacks through vertebrae with disease if any, else random ones (T1–T10
        # when a lumbar axial series is also acquired, so the two never overlap).
        last = "T10" if lumbar_too else "T12"
        candidates = list(range(spine.level_index("T1"), spine.level_index(last) + 1))
        diseased = [i for i in candidates if self._diseased(i)]
        pool = diseased or candidates
        chosen = sorted(rng.choice(pool, size=min(len(pool), int(rng.integers(1, 4))), replace=False).tolist())
        return planner.axial_at_levels(chosen)

    def _diseased(self, index: int) -> bool:
        """Whether vertebra ``index`` has a metastasis or epidural disease (thoracic axials target it)."""
        lesions = self.phantom.vertebrae[index].lesions
        return bool(lesions.get("metastasis")) or str(lesions.get("epidural_bilsky", "0")) != "0"

    def _axial_span(self) -> tuple[np.ndarray, np.ndarray]:
        """Top and bottom points of the contiguous axial stacks (GRE, T1) for this FOV."""
        spine = self.spine
        span = {"cervical": ("C2", "T1"), "thoracic": ("T3", "T11"), "lumbar": ("L1", "S1"), "whole": ("L1", "S1")}
        top, bottom = span[self.fov]
        return spine.centroids[spine.level_index(top)], spine.centroids[spine.level_index(bottom)]

    def _add_mr(self, kind: str, stacks: list[acq.StackGrid], *, composed: bool = False) -> SeriesPlan:
        """Append an MR series of ``kind`` on ``stacks`` with a freshly sampled protocol."""
        protocol = sample_mr_protocol(kind, self.vendor, self.field_t, self.rng)
        if composed:
            tags = dict(protocol.tags)
            # A composed series is derived from its stations but keeps what the images are (M, or
            # DIXON\WATER for a Dixon water image): dropping that would hide the fat suppression.
            tags["ImageType"] = ["DERIVED", "PRIMARY", *protocol.tags["ImageType"][2:], "COMPOSED"]
            protocol = replace(protocol, tags=tags, description=f"{protocol.description}_COMP")
        plan = SeriesPlan(kind, "MR", stacks, protocol, composed=composed)
        self.plans.append(plan)
        return plan

    def _add_duplicates(self, duplicates: list[str]) -> None:
        """Add the requested copies of the first sagittal T2 (see :data:`DUPLICATES`)."""
        original = next(p for p in self.plans if p.kind == "sag_t2")
        grid = original.stacks[0]
        if "repeat_sag_t2" in duplicates:
            # Same planning and protocol, acquired again later (the first was degraded).
            self.plans.append(SeriesPlan("sag_t2", "MR", [grid], original.protocol, composed=original.composed))
        if "lowres_sag_t2" in duplicates:
            g = grid.geometry
            factor = float(self.rng.uniform(1.3, 2.0))
            rows, cols = max(64, round(g.shape[1] / factor)), max(64, round(g.shape[2] / factor))
            row_dir = g.affine[:3, 2] / g.spacing_mm[2]
            col_dir = g.affine[:3, 1] / g.spacing_mm[1]
            height, width = g.shape[1] * g.spacing_mm[1], g.shape[2] * g.spacing_mm[2]
            coarse = _grid(g.centre_mm, row_dir, col_dir, (g.shape[0], rows, cols), (height / rows, width / cols),
                           float(g.spacing_mm[0]), grid.slice_thickness_mm,
                           (min(rows, grid.acquired_shape[0]), min(cols, grid.acquired_shape[1])), grid.phase_axis,
                           bool(g.affine[:3, 0] @ np.cross(row_dir, col_dir) < 0))
            protocol = sample_mr_protocol("sag_t2", self.vendor, self.field_t, self.rng)
            plan = SeriesPlan("sag_t2", "MR", [coarse], protocol, composed=original.composed)
            # Position the low-resolution copy before or after the original at random, so only the
            # resolution rule can decide between them.
            if self.rng.random() < 0.5:
                self.plans.insert(self.plans.index(original), plan)
            else:
                self.plans.append(plan)

    def _add_dwi(self, planning: SagittalPlanning) -> None:
        """Append a DWI series (two b-values on one grid) and its ADC map (DERIVED)."""
        rng = self.rng
        axial = rng.random() < 0.4
        grid = self.planner.dwi(planning, axial=axial)
        b_values = [float(rng.choice([0.0, 50.0])), float(rng.choice([600.0, 800.0, 1000.0]))]
        protocols = [sample_mr_protocol("dwi", self.vendor, self.field_t, rng, diffusion_b=b, axial=axial)
                     for b in b_values]
        # All b-values share the first protocol's timing (one acquisition), only the b-value differs.
        base = protocols[0]
        stack_protocols = [
            replace(base, sequence=replace(base.sequence, diffusion_b=b),
                    tags={**base.tags, "DiffusionBValue": b, "ImageType": p.tags["ImageType"]})
            for b, p in zip(b_values, protocols)
        ]
        dwi = SeriesPlan("dwi", "MR", [grid, grid], stack_protocols[-1], stack_protocols=stack_protocols)
        self.plans.append(dwi)
        adc_tags = {k: v for k, v in base.tags.items() if k != "DiffusionBValue"}
        adc_tags["ImageType"] = ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
        adc = replace(base, tags=adc_tags, description=f"{base.description}_ADC")
        self.plans.append(SeriesPlan("dwi", "MR", [grid], adc, adc_of=dwi))

    def _add_ct(self, kinds: list[str], s_top: float, s_bottom: float) -> None:
        """Append the CT series of ``kinds``: one axial volume and its scout/reformats."""
        if not kinds:
            return
        if "ct_axial" not in kinds:
            raise ValueError("CT reformats and scouts need a ct_axial series in the same study")
        rng, planner = self.rng, self.planner
        if self.fov == "whole":
            top, bottom = s_top, s_bottom
        else:
            extent = (s_bottom - s_top) * rng.uniform(0.7, 1.0)
            top = s_top + rng.uniform(0.0, s_bottom - s_top - extent)
            bottom = top + extent
        volume = planner.ct_axial(top, bottom, whole=self.fov == "whole")
        thickness = volume.slice_thickness_mm
        enhancement: dict[str, Any] = {}
        if self.config.ct_contrast:
            contrast_rng = np.random.default_rng([self.seed, 31])
            enhancement = {"iv_contrast": float(contrast_rng.uniform(0.6, 1.4)),
                           "contrast_agent": str(contrast_rng.choice(CT_CONTRAST_AGENTS))}
        axial = sample_ct_protocol("ct_axial", self.vendor, rng, slice_thickness_mm=thickness, **enhancement)
        if "ct_scout" in kinds:
            grid = planner.ct_scout(volume)
            self.plans.append(SeriesPlan("ct_scout", "CT", [grid],
                                         sample_ct_protocol("ct_scout", self.vendor, rng, slice_thickness_mm=1.0)))
        self.plans.append(SeriesPlan("ct_axial", "CT", [volume], axial))
        for kind, sagittal in (("ct_sag_reformat", True), ("ct_cor_reformat", False)):
            if kind in kinds:
                grid = planner.ct_reformat(volume, sagittal)
                protocol = sample_ct_protocol(kind, self.vendor, rng, slice_thickness_mm=grid.slice_thickness_mm,
                                              bone_kernel=axial.bone_kernel, **enhancement)
                self.plans.append(SeriesPlan(kind, "CT", [grid], protocol))

    def _number_series(self) -> None:
        """SeriesNumber, UIDs, descriptions and transfer syntaxes in acquisition order."""
        rng = self.rng
        # Localisers come first, as on every scanner (stable sort keeps the acquisition order).
        self.plans.sort(key=lambda p: 0 if p.kind in ("localizer", "ct_scout") else 1)
        philips_style = self.vendor.key == "philips" and rng.random() < 0.7
        first = int(rng.integers(1, 4))
        for index, plan in enumerate(self.plans):
            number = first + index
            plan.series_number = number * 100 + 1 if philips_style else number
            plan.series_instance_uid = self.uid("series", index)
            plan.description = self._description(plan)
            plan.transfer_syntax = self._transfer_syntax(plan.modality)

    def _description(self, plan: SeriesPlan) -> str:
        """SeriesDescription: the vendor's or RSNA-style name, sometimes empty, generic or misleading."""
        rng = self.rng
        description = plan.protocol.description
        if self.rsna_style and plan.kind in RSNA_DESCRIPTIONS:
            description = RSNA_DESCRIPTIONS[plan.kind]
        roll = rng.random()
        rate = self.config.description_corruption_rate
        if roll < rate / 3:
            return ""
        if roll < 2 * rate / 3:
            return str(rng.choice(_GENERIC_DESCRIPTIONS)).format(n=plan.series_number)
        if roll < rate and plan.kind in _MISLEADING:
            return str(rng.choice(_MISLEADING[plan.kind]))
        return description

    # -- rendering and writing ------------------------------------------------------------------
    def _contrasts(self, plan: SeriesPlan) -> list[Any]:
        """The phantom contrast of each stack of ``plan``."""
        if isinstance(plan.protocol, CTProtocol):
            return [plan.protocol.contrast] * len(plan.stacks)
        return [p.sequence for p in (plan.stack_protocols or [plan.protocol] * len(plan.stacks))]

    def _acquired_signal(self, plan: SeriesPlan, stack_index: int) -> np.ndarray:
        """Rendered signal of one stack on its acquisition grid ``(S, ra, ca)``.

        Series planned on the same grid (sagittal T1/T2/STIR copies, DWI b-values) are rendered in one
        ``render_many`` pass for every contrast still to come on that grid; the results wait in a
        cache until their series is formed.
        """
        key = (id(plan), stack_index)
        if key not in self._signal_cache:
            grid = plan.stacks[stack_index]
            users = [(id(p), k, c) for p in self.plans[self.plans.index(plan):] if p.adc_of is None
                     for k, (g, c) in enumerate(zip(p.stacks, self._contrasts(p))) if g is grid]
            phantom = self.phantom
            contrasts = [c for _, _, c in users]
            sub_step = acq.CT_SUB_STEP_MM if plan.modality == "CT" else acq.MR_SUB_STEP_MM
            signals = acq.render_acquired(lambda pts: phantom.render_many(pts, contrasts), len(contrasts), grid,
                                          self.pose.scanner_to_phantom, max_sub_step_mm=sub_step)
            for (plan_id, k, _), signal in zip(users, signals):
                self._signal_cache[(plan_id, k)] = signal
        return self._signal_cache.pop(key)

    def form(self, index: int, plan: SeriesPlan, bias: acq.CoilBias) -> list[np.ndarray]:
        """Pixel arrays (physical values) for every stack of ``plan``."""
        rng = np.random.default_rng([self.seed, 13, index])
        if plan.modality == "CT":
            protocol = plan.protocol
            assert isinstance(protocol, CTProtocol)
            if plan.kind == "ct_scout":
                phantom = self.phantom
                return [acq.project_ct(lambda pts: phantom.render_many(pts, [protocol.contrast]), plan.stacks[0],
                                       self.pose.scanner_to_phantom, depth_mm=500.0, step_mm=6.0)]
            noise = float(rng.uniform(8.0, 35.0)) * (1.4 if protocol.bone_kernel else 1.0)
            return [acq.form_ct_stack(self._acquired_signal(plan, k), stack, rng, noise_hu=noise,
                                      sharp=protocol.bone_kernel) for k, stack in enumerate(plan.stacks)]
        if plan.adc_of is not None:
            b0, bk = plan.adc_of.formed
            b = float(plan.adc_of.stack_protocols[-1].sequence.diffusion_b or 800.0)
            floor = 0.02 * float(b0.max())
            adc = np.log(np.maximum(b0, floor) / np.maximum(bk, floor)) / b * 1e6  # ×1e-6 mm²/s
            # Scanners zero the ADC where the b0 image is background noise.
            return [np.clip(np.where(b0 > 4 * floor, adc, 0.0), 0.0, 4000.0).astype(np.float32)]
        snr = float(rng.uniform(8.0, 45.0)) * (0.5 if plan.kind == "dwi" else 1.0)
        ghosts = rng.random() < self.config.ghost_rate
        apodization = float(rng.uniform(0.0, 0.5))
        if rng.random() < 0.45:  # vendor intensity normalisation flattens most of the coil profile
            bias = bias.normalized(float(rng.uniform(0.2, 0.5)))
        images = [acq.form_mr_stack(self._acquired_signal(plan, k), stack, bias, rng, snr=snr, ghosts=ghosts,
                                    apodization=apodization) for k, stack in enumerate(plan.stacks)]
        # One scale for the whole series so that stacks (and b-values) stay comparable.
        scaled = acq.vendor_scale(np.concatenate([im.reshape(-1) for im in images]), rng)
        out, start = [], 0
        for im in images:
            out.append(scaled[start : start + im.size].reshape(im.shape))
            start += im.size
        return out

    def write(self, study_dir: Path) -> None:
        """Form and write every series into ``study_dir`` (rendering shared grids once)."""
        rng = self.rng
        study = PatientStudy(
            study_instance_uid=self.uid("study"),
            frame_of_reference_uid=self.uid("frame"),
            patient_name=f"SYNTHETIC^SPINE{self.seed:06d}",
            patient_id=f"SYN{self.seed:07d}",
            patient_birth_date=f"19{int(rng.integers(30, 100)):02d}0{int(rng.integers(1, 10))}15",
            patient_sex=str(rng.choice(["F", "M"])),
            accession_number=f"SYNACC{self.seed:07d}",
            study_description=self._study_description(),
        )
        posterior_y = float(np.max(self.spine.centroids[:, 1]))
        bias = acq.CoilBias.sample(rng, posterior_y + 25.0)
        needed_later = {id(p.adc_of) for p in self.plans if p.adc_of is not None}
        for index, plan in enumerate(self.plans):
            plan.formed = self.form(index, plan, bias)
            self._write_series(index, plan, study, study_dir)
            # Free the pixels; only DWI images wait for their ADC map.
            if id(plan) not in needed_later:
                plan.formed = []
            if plan.adc_of is not None:
                plan.adc_of.formed = []

    def _study_description(self) -> str:
        """E.g. ``MRI L-SPINE``, ``CT WHOLE SPINE`` or ``MRI+CT T-SPINE`` from the modalities acquired."""
        modalities = {p.modality for p in self.plans}
        prefix = "MRI+CT" if len(modalities) == 2 else "CT" if modalities == {"CT"} else "MRI"
        region = {"cervical": "C-SPINE", "thoracic": "T-SPINE", "lumbar": "L-SPINE", "whole": "WHOLE SPINE"}[self.fov]
        return f"{prefix} {region}"

    def _folder(self, plan: SeriesPlan) -> str:
        """Folder of ``plan`` relative to the study folder, by the study's layout."""
        if self.layout == "flat":
            return "."
        if self.layout == "nested":
            return f"DICOM/S{plan.series_number:07d}"
        style = int(self.rng.integers(3))
        safe = "".join(ch if ch.isalnum() else "_" for ch in plan.description)[:24]
        return [f"{plan.series_number:03d}_{safe}" if safe else f"{plan.series_number:03d}",
                f"SE{plan.series_number:06d}", f"series_{plan.series_number}"][style]

    def _write_series(self, index: int, plan: SeriesPlan, study: PatientStudy, study_dir: Path) -> None:
        """Write all stacks of ``plan`` (continuous InstanceNumbers, shuffled file names)."""
        rng = self.rng
        plan.folder = self._folder(plan)
        folder = study_dir / plan.folder
        reverse = self.config.reverse_instance_numbers
        if reverse is None:
            reverse = bool(rng.random() < 0.3)
        total = plan.n_instances
        numbers = list(range(total, 0, -1)) if reverse else list(range(1, total + 1))
        permutation = rng.permutation(total)
        plan.instance_numbers = numbers
        ext = str(rng.choice([".dcm", "", ".IMA"]))
        name_style = int(rng.integers(3))
        start = 0
        protocols = plan.stack_protocols or [plan.protocol] * len(plan.stacks)
        for stack_index, (stack, pixels, protocol) in enumerate(zip(plan.stacks, plan.formed, protocols)):
            n = stack.geometry.shape[0]
            # File names never follow slice position: random hex (flat) or a shuffled counter.
            order = permutation[start : start + n] + 1
            if self.layout == "flat":
                names = [f"{rng.integers(0, 2**63):016x}{ext}" for _ in range(n)]
            elif self.layout == "nested":
                names = [f"I{i:07d}" for i in order]
            else:
                names = [(f"IM{i:05d}.dcm", f"{i:06d}", f"IMG{i:04d}{ext}")[name_style] for i in order]
            tags = self._series_tags(index, plan, protocol, stack)
            write_series(
                pixels, stack.geometry, folder, modality=plan.modality, study=study,
                series_instance_uid=plan.series_instance_uid, series_number=plan.series_number,
                series_description=plan.description, slice_thickness_mm=stack.slice_thickness_mm,
                extra_tags=tags, transfer_syntax=plan.transfer_syntax, instance_numbers=numbers[start : start + n],
                file_names=names, sop_instance_uids=[self.uid("sop", index, stack_index, k) for k in range(n)],
            )  # fmt: skip
            start += n

    def _series_tags(self, index: int, plan: SeriesPlan, protocol: MRProtocol | CTProtocol,
                     stack: acq.StackGrid) -> dict[str, Any]:
        """The protocol's tags plus site/acquisition attributes shared by every series."""
        tags = dict(protocol.tags)
        minutes = 4 * index  # series acquired ~4 minutes apart from 12:00
        tags.update(
            StationName=self.station,
            BodyPartExamined=_BODY_PART[self.fov],
            PatientPosition="HFS",
            SeriesTime=f"{12 + minutes // 60:02d}{minutes % 60:02d}00",
        )
        if plan.modality == "MR":
            ar, ac = stack.acquired_shape
            # AcquisitionMatrix is frequency rows\frequency columns\phase rows\phase columns.
            if stack.phase_axis == 1:  # phase encoded down the columns
                tags["InPlanePhaseEncodingDirection"] = "COL"
                tags["AcquisitionMatrix"] = [ac, 0, 0, ar]
            else:
                tags["InPlanePhaseEncodingDirection"] = "ROW"
                tags["AcquisitionMatrix"] = [0, ar, ac, 0]
        return tags

    # -- truth ----------------------------------------------------------------------------------
    def truth(self) -> dict[str, Any]:
        """The truth dict of the brief's schema (plus documented extras), minus the report text."""
        pose, phantom = self.pose, self.phantom
        sagittal = [p for p in self.plans if len(p.stacks) == 1 and p.stacks[0].geometry.plane == "sagittal"
                    and p.stacks[0].geometry.shape[0] >= 3]
        vertebrae = []
        for v in phantom.vertebrae:
            corners = pose.to_scanner(np.asarray(v.corners_mm, dtype=float))
            superior = pose.direction_to_scanner(np.asarray(v.superior_axis, dtype=float))
            anterior = pose.direction_to_scanner(np.asarray(v.anterior_axis, dtype=float))
            box = body_outline_mm(corners, superior, anterior, float(v.width_mm))
            vertebrae.append({
                "level": v.level,
                "centroid_mm": _r(pose.to_scanner(np.asarray(v.centroid_mm, dtype=float))),
                "corners_mm": [_r(c) for c in corners],
                "superior_axis": _r(superior, 5),
                "anterior_axis": _r(anterior, 5),
                "height_mm": round(float(v.height_mm), 3),
                "depth_mm": round(float(v.depth_mm), 3),
                "width_mm": round(float(v.width_mm), 3),
                "fully_in_view": {p.series_instance_uid: bool(p.stacks[0].geometry.contains(box, 0.5).all())
                                  for p in sagittal},
                "lesions": _jsonable(v.lesions),
            })  # fmt: skip
        discs = []
        for d in phantom.discs:
            entry = {"level": d.level, "centre_mm": _r(pose.to_scanner(np.asarray(d.centre_mm, dtype=float))),
                     "normal": _r(pose.direction_to_scanner(np.asarray(d.normal, dtype=float)), 5),
                     "gradings": _jsonable(d.gradings)}
            if d.rsna:
                entry["rsna"] = _jsonable(d.rsna)
            discs.append(entry)
        series = []
        for p in self.plans:
            g = p.stacks[0].geometry
            low, high = p.cranio_caudal_range()
            series.append({
                "series_instance_uid": p.series_instance_uid, "series_number": p.series_number,
                "description": p.description, "modality": p.modality, "kind": p.kind,
                "expected_role": p.role, "role_reason": p.role_reason, "plane": g.plane,
                "n_instances": p.n_instances, "rows": g.shape[1], "columns": g.shape[2],
                "pixel_spacing_mm": [round(float(g.spacing_mm[1]), 6), round(float(g.spacing_mm[2]), 6)],
                "slice_thickness_mm": round(float(p.stacks[0].slice_thickness_mm), 6), "n_stacks": len(p.stacks),
                "transfer_syntax": str(p.transfer_syntax), "folder": p.folder,
                "cranio_caudal_range_mm": [round(low, 2), round(high, 2)],
                **({"iv_contrast": round(p.protocol.contrast.iv_contrast, 4)} if isinstance(p.protocol, CTProtocol) else {}),
            })  # fmt: skip
        return {
            "schema": TRUTH_SCHEMA,
            "seed": self.seed,
            "generator_version": GENERATOR_VERSION,
            "study_instance_uid": self.uid("study"),
            "field_of_view": self.fov,
            "anatomy": _jsonable(phantom.to_json()),
            "acquisition": {
                "manufacturer": self.vendor.manufacturer,
                "field_strength_t": self.field_t,
                "layout": self.layout,
                "patient_offset_mm": _r(pose.offset_mm),
            },
            "series": series,
            "vertebrae": vertebrae,
            "discs": discs,
            "bilsky": self._bilsky(),
            "report_text": "",
        }

    def _bilsky(self) -> list[dict[str, Any]]:
        """One entry per diagnostic axial image: the thecal sac centre (LPS mm) where the sac's
        centreline crosses the image plane, and the level and Bilsky grade of the spine there."""
        entries = []
        # The thecal sac's centreline: an axial image shows the canal where this crosses its plane.
        # Where the spine is tilted against the plane (lordosis, kyphosis, obliquity) that is not the
        # sac point level with the body axis's crossing, which lies out of the plane.
        canal = self.pose.to_scanner(np.array([self.phantom.sac_centre_at(p) for p in self.pose.to_phantom(self.spine.axis)]))
        for index, plan in enumerate(self.plans):
            if plan.kind not in BILSKY_KINDS:
                continue
            start = 0
            for stack_index, stack in enumerate(plan.stacks):
                g = stack.geometry
                n = g.shape[0]
                for k in range(n):
                    centre = g.index_to_lps([k, (g.shape[1] - 1) / 2, (g.shape[2] - 1) / 2])
                    # The sac centre in the image plane (the ROI the Bilsky grader is trained to find),
                    # and the level and grade of the spine's cross-section through it.
                    sac = _plane_crossing(canal, centre, g.normal)
                    point = self.pose.to_phantom(sac)
                    level, _ = self.phantom.level_at(point)
                    grade = str(self.phantom.bilsky_grade_at(point))
                    entries.append({
                        "series_instance_uid": plan.series_instance_uid,
                        "sop_instance_uid": self.uid("sop", index, stack_index, k),
                        "instance_number": plan.instance_numbers[start + k],
                        "level": level,
                        "modality": plan.modality,
                        "grade": bilsky_ct_class(grade) if plan.modality == "CT" else grade,
                        "sac_centre_mm": _r(sac),
                    })  # fmt: skip
                start += n
        return entries


def _limit_tilt(normal: np.ndarray, max_deg: float) -> np.ndarray:
    """``normal`` turned to point cranially, tilted at most ``max_deg`` away from +z (LPS superior)."""
    n = np.asarray(normal, dtype=float) / np.linalg.norm(normal)
    if n[2] < 0:
        n = -n
    tilt = math.degrees(math.acos(min(1.0, n[2])))
    if tilt <= max_deg:
        return n
    horizontal = n - np.array([0.0, 0.0, n[2]])
    horizontal /= np.linalg.norm(horizontal)
    angle = math.radians(max_deg)
    return np.array([0.0, 0.0, math.cos(angle)]) + horizontal * math.sin(angle)


def body_outline_mm(corners: np.ndarray, superior: np.ndarray, anterior: np.ndarray, width_mm: float) -> np.ndarray:
    """Eight points bounding a vertebral body: its 4 mid-sagittal corners and the left/right extremes
    (±width/2 at mid-depth) of both endplates. ``fully_in_view`` means all 8 lie in the series volume
    (within half a voxel), i.e. the whole body is inside the FOV in all three directions.

    Args:
        corners: ``(4, 3)`` LPS corners in ``VERTEBRA_CORNERS`` order.
        superior, anterior: the body's unit axes.
        width_mm: transverse width.

    Returns:
        ``(8, 3)`` LPS points.
    """
    lateral = np.cross(superior, anterior)
    lateral = lateral / max(float(np.linalg.norm(lateral)), 1e-9)
    endplates = np.array([(corners[0] + corners[1]) / 2, (corners[2] + corners[3]) / 2])
    sides = np.concatenate([endplates + lateral * width_mm / 2, endplates - lateral * width_mm / 2])
    return np.concatenate([np.asarray(corners, dtype=float), sides])


def _plane_crossing(axis: np.ndarray, point: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Where the polyline ``axis`` crosses the plane through ``point`` with ``normal``; the crossing
    nearest to ``point``, or the nearest axis sample when the plane misses the axis."""
    crossing = plane_crossing(axis, point, normal)
    return crossing if crossing is not None else axis[int(np.argmin(np.abs((axis - point) @ normal)))]


def _r(values: np.ndarray | list[float], digits: int = 3) -> list[float]:
    """Round an array-like to a flat list of floats (JSON-friendly)."""
    return [round(float(v), digits) for v in np.asarray(values, dtype=float).reshape(-1)]


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays inside phantom-provided dicts to plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def report_rng(seed: int) -> np.random.Generator:
    """The random stream of study ``seed`` that draws its report text (apart from the image streams,
    so a report can be re-drawn from the truth alone)."""
    return np.random.default_rng([seed, 14])


def planned_truth(seed: int, config: StudyConfig | None = None) -> dict[str, Any]:
    """The truth :func:`generate_study` writes for ``seed`` and ``config``, made without forming any image.

    Every series is planned (geometry, protocol, role, imaged span) before rendering, and the truth
    is read from the phantom and the plans; only the InstanceNumbers are drawn while writing. Here
    they are numbered in slice order, so ``instance_number`` entries differ from a rendered study's;
    everything the report depends on is the same. Used where images are not needed (report labelling).
    """
    state = _Study(seed, config or StudyConfig())
    state.plan()
    for plan in state.plans:
        plan.instance_numbers = list(range(1, plan.n_instances + 1))
    return state.truth()


def generate_study(seed: int, out_dir: Path | str, config: StudyConfig | None = None) -> dict[str, Any]:
    """Generate one synthetic study.

    Writes ``out_dir/study/`` (DICOM), ``out_dir/truth.json`` and ``out_dir/report.txt``.

    Args:
        seed: the only source of randomness; equal seeds and configs give identical outputs.
        out_dir: output folder (created; an existing ``study/`` inside must be empty or absent).
        config: forced choices; ``None`` draws everything from the seed.

    Returns:
        The truth dictionary (also written as ``truth.json``).
    """
    out = Path(out_dir)
    study_dir = out / "study"
    if study_dir.exists() and any(study_dir.iterdir()):
        raise FileExistsError(f"{study_dir} is not empty")
    study_dir.mkdir(parents=True, exist_ok=True)
    state = _Study(seed, config or StudyConfig())
    state.plan()
    state.write(study_dir)
    truth = state.truth()
    truth["report_text"] = write_report(truth, report_rng(seed))
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    (out / "report.txt").write_text(truth["report_text"])
    return truth


