"""Synthetic whole-spine phantom: "what is in the body", with its ground truth.

:func:`make_phantom` draws a subject (anatomy, tissue properties, pathology) from a numpy
``Generator``; the returned :class:`SpinePhantom` renders MR or CT signal at arbitrary patient
points (LPS mm) and exposes the truth the study generator writes to ``truth.json``.

Public API (the PHANTOM contract of the shared brief)::

    phantom = make_phantom(np.random.default_rng(seed), AnatomyConfig(transitional="L6"))
    t2 = phantom.render(points_mm, MRSequence(repetition_time_ms=3500, echo_time_ms=100))
    hu = phantom.render(points_mm, CTContrast(kvp=120))
    phantom.vertebrae, phantom.discs, phantom.level_at(p), phantom.bilsky_grade_at(p)
    phantom.spine_axis_points_mm, phantom.to_json()

Extras (documented, optional):

* ``MRSequence.flip_angle_deg`` — gradient-echo flip angle (default 25°).
* ``SpinePhantom.render_many(points, contrasts)`` — several contrasts from one geometry pass,
  (N, len(contrasts)) float32; the fast path when T1/T2/STIR share slice geometry.
* ``SpinePhantom.tissue_labels(points)`` — dominant :class:`~training.synthetic.tissue.Tissue`
  per point (segmentation truth, and what the tests measure geometry with).
* ``SpinePhantom.local_coordinates(points)`` / ``world_coordinates(local)`` — the local spine
  frame (s caudal arc length, anterior, left; mm) and its inverse.
* ``SpinePhantom.threads`` — render worker threads (default ``$SPINE_PHANTOM_THREADS`` or 1).
* ``VertebraTruth.details`` / ``DiscTruth.details`` / ``DiscTruth.height_mm`` — the continuous
  values behind the labels (fracture type, foraminal / subarticular 0–3 severities, herniation
  type and side, Modic types, listhesis …) and ``to_json()`` on both truth classes.

Speed (this 2-core machine, shared; CPU time, vectorised numpy, 64 k-point chunks): ~4 M points
per CPU-second for one MR contrast on a lumbar sagittal stack, ~3 M points/CPU-s (≈ 9 M
point-contrasts) for T1+T2+STIR together via ``render_many``, ~5 M/CPU-s on axial stacks;
``make_phantom`` ≈ 0.1 s.

Anatomy, variation ranges and the frame are described in :mod:`training.synthetic.anatomy`,
pathology sampling and label rules in :mod:`training.synthetic.pathology`, tissue values and
signal equations in :mod:`training.synthetic.tissue`, the rendering in
:mod:`training.synthetic.painter`.

Conventions of the truth:

* ``corners_mm`` — the 4 body corners in ``VERTEBRA_CORNERS`` order (superior-anterior,
  superior-posterior, inferior-posterior, inferior-anterior) on the body's mid-sagittal plane,
  1 mm inside the rounded rim. C1 has no body: its corners are those of the anterior arch.
* ``superior_axis`` / ``anterior_axis`` — the local frame at the body centre (includes
  scoliotic rotation and fracture wedging). ``height_mm`` is the mid-body height (endplate rims),
  ``depth_mm`` the AP depth, ``width_mm`` the transverse width.
* ``DiscTruth.normal`` — unit superior axis at the disc centre (the direction normal to the
  endplates, pointing cranially).
* ``level_at`` — the disc whose space (between the endplate rims) contains the point's axial
  position, otherwise the nearest vertebra; the signed distance is ``centre − point`` along the
  spine axis, positive when the point lies **cranial** to the structure's centre.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

from operators.core.gradings import BILSKY_MR_GRADES
from operators.core.levels import TRANSITIONAL_AFTER, disc_levels, discs_between, levels_with_transitional
from training.synthetic import anatomy
from training.synthetic.anatomy import Subject, SpineFrame
from training.synthetic.painter import Lesion, Painter, Scene
from training.synthetic.pathology import (
    SubjectPathology, sample_disc_pathology, sample_vertebra_pathology,
)
from training.synthetic.tissue import N_TISSUES, Tissue, TissueTable, ct_numbers, mr_signals, sample_tissue_table

__all__ = [
    "AnatomyConfig", "CTContrast", "DiscTruth", "MRSequence", "SpinePhantom", "VertebraTruth", "make_phantom",
]


@dataclass(frozen=True)
class MRSequence:
    """How an MR sequence weights tissue (the study code picks vendor-like values).

    Attributes:
        repetition_time_ms, echo_time_ms: TR and (effective) TE in ms.
        inversion_time_ms: TI for inversion recovery (STIR ~130–230 ms at 1.5 T); None otherwise.
        fat_suppressed: spectral fat saturation (T1 FS, T2 FS).
        field_strength_t: B0 in tesla (T1 lengthens with field).
        gradient_echo: spoiled gradient echo (T2*-weighted, marrow dark).
        diffusion_b: b value in s/mm² for DWI (fat suppressed, ADC weighted); None otherwise.
        flip_angle_deg: extra — gradient-echo flip angle (default 25°); ignored for spin echo.
    """

    repetition_time_ms: float
    echo_time_ms: float
    inversion_time_ms: float | None = None
    fat_suppressed: bool = False
    field_strength_t: float = 1.5
    gradient_echo: bool = False
    diffusion_b: float | None = None
    flip_angle_deg: float | None = None


@dataclass(frozen=True)
class CTContrast:
    """CT acquisition: tube voltage in kVp (bone and iodine HU rise at low kVp) and intravenous
    contrast: 0 unenhanced, 1 a typical portal venous staging CT
    (:data:`~training.synthetic.tissue.PORTAL_VENOUS_ENHANCEMENT_HU`)."""

    kvp: float = 120.0
    iv_contrast: float = 0.0


@dataclass
class AnatomyConfig:
    """Subject choices made by the study code; ``None`` fields are randomised by :func:`make_phantom`.

    Attributes:
        transitional: None (standard C1…S1), ``"L6"`` (six lumbar) or ``"T13"`` (13 rib-bearing).
        scoliosis_deg: Cobb angle of the main curve (None: 45 % none, 35 % 1–8°, 20 % 8–40°).
        lordosis_scale: multiplies lumbar (50°) and bounds cervical lordosis (None: 0.5–1.4).
        kyphosis_scale: multiplies thoracic kyphosis (40°) (None: 0.5–1.5).
        pathology_rate: 0 healthy … 1 very degenerate; shifts every degeneration threshold.
        cancer: metastases / fractures / epidural disease present (None: with probability
            ``min(0.5, 0.4 · pathology_rate)``).
    """

    transitional: str | None = None
    scoliosis_deg: float | None = None
    lordosis_scale: float | None = None
    kyphosis_scale: float | None = None
    pathology_rate: float = 0.5
    cancer: bool | None = None


@dataclass
class VertebraTruth:
    """Ground truth of one vertebra (LPS mm). See the module docstring for conventions."""

    level: str
    centroid_mm: np.ndarray
    corners_mm: np.ndarray  # (4, 3) in VERTEBRA_CORNERS order
    superior_axis: np.ndarray
    anterior_axis: np.ndarray
    height_mm: float
    depth_mm: float
    width_mm: float
    lesions: dict[str, object]
    details: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict (truth.json ``vertebrae[]`` entry without the per-series in-view flags)."""
        return {
            "level": self.level,
            "centroid_mm": _rounded(self.centroid_mm),
            "corners_mm": [_rounded(c) for c in self.corners_mm],
            "superior_axis": _rounded(self.superior_axis, 4),
            "anterior_axis": _rounded(self.anterior_axis, 4),
            "height_mm": round(self.height_mm, 2),
            "depth_mm": round(self.depth_mm, 2),
            "width_mm": round(self.width_mm, 2),
            "lesions": dict(self.lesions),
            "details": dict(self.details),
        }


@dataclass
class DiscTruth:
    """Ground truth of one intervertebral disc (LPS mm)."""

    level: str
    centre_mm: np.ndarray
    normal: np.ndarray
    gradings: dict[str, int]
    rsna: dict[str, str]
    height_mm: float
    details: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict (truth.json ``discs[]`` entry)."""
        return {
            "level": self.level,
            "centre_mm": _rounded(self.centre_mm),
            "normal": _rounded(self.normal, 4),
            "height_mm": round(self.height_mm, 2),
            "gradings": dict(self.gradings),
            "rsna": dict(self.rsna),
            "details": dict(self.details),
        }


def _rounded(values: np.ndarray, digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


_PFIRRMANN_NUCLEUS = {  # Pfirrmann grade → (nucleus T2 ms, proton density, edge blur mm)
    1: (130.0, 0.92, 1.6), 2: (112.0, 0.88, 1.8), 3: (82.0, 0.80, 2.6), 4: (56.0, 0.70, 3.0), 5: (36.0, 0.55, 3.0),
}


class SpinePhantom:
    """A sampled subject: renders signal at points and holds the ground truth.

    Build with :func:`make_phantom`; the constructor is internal.
    """

    def __init__(self, *, config: AnatomyConfig, subject: Subject, levels: list[str], pathology: SubjectPathology,
                 tissues: TissueTable, segments: anatomy.Segments, discs: anatomy.Discs, frame: SpineFrame,
                 tables: anatomy.Tables, scene: Scene, table_rows: TissueTable) -> None:
        self._config = config
        self._subject = subject
        self._levels = levels
        self._pathology = pathology
        self._tissues = tissues
        self._segments = segments
        self._discs = discs
        self._frame = frame
        self._tables = tables
        self._scene = scene
        self._rows = table_rows
        self._painter = Painter(scene)
        #: Extra: worker threads used by render (numpy releases the GIL; output does not depend on it).
        #: Defaults to ``SPINE_PHANTOM_THREADS`` or 1; set it to the free cores when rendering one study at a time.
        self.threads = int(os.environ.get("SPINE_PHANTOM_THREADS", "1"))
        self._vertebrae = self._vertebra_truth()
        self._disc_truth = self._disc_truth_list()

    # ------------------------------------------------------------------ rendering
    def render(self, points_mm: np.ndarray, contrast: MRSequence | CTContrast) -> np.ndarray:
        """Signal at (N, 3) LPS points: (N,) float32 — MR arbitrary units (~0…1000), CT in HU.

        No noise, bias field, slice partial volume or scanner scaling is added here.
        """
        return self.render_many(points_mm, [contrast])[:, 0]

    def render_many(self, points_mm: np.ndarray, contrasts: list[MRSequence | CTContrast]) -> np.ndarray:
        """Signals of several contrasts at the same (N, 3) points: (N, len(contrasts)) float32."""
        signals = np.stack([self._signal_rows(c) for c in contrasts], axis=1).astype(np.float32)
        texture = np.stack([
            self._tissues.ct_texture_hu if isinstance(c, CTContrast) else self._tissues.mr_texture for c in contrasts
        ], axis=1).astype(np.float32)
        additive = np.array([isinstance(c, CTContrast) for c in contrasts])
        out = self._painter.render(points_mm, signals, texture, additive, threads=self.threads)
        # Texture must not push magnitudes below zero (MR) or below the CT scale's floor.
        if np.any(~additive):
            out[:, ~additive] = np.maximum(out[:, ~additive], 0.0)
        if np.any(additive):
            out[:, additive] = np.maximum(out[:, additive], -1024.0)
        return out

    def tissue_labels(self, points_mm: np.ndarray) -> np.ndarray:
        """Extra: dominant :class:`~training.synthetic.tissue.Tissue` per point, (N,) int8 (segmentation truth)."""
        points = np.asarray(points_mm, dtype=np.float32).reshape(-1, 3)
        labels = np.empty(len(points), dtype=np.int8)
        self._painter.render(points, np.zeros((len(self._rows.hu), 1), dtype=np.float32),
                             np.zeros((N_TISSUES, 1), dtype=np.float32), np.array([True]), labels=labels)
        return labels

    def _signal_rows(self, contrast: MRSequence | CTContrast) -> np.ndarray:
        if isinstance(contrast, CTContrast):
            return ct_numbers(self._rows, contrast.kvp, contrast.iv_contrast)
        if not isinstance(contrast, MRSequence):
            raise TypeError(f"contrast must be MRSequence or CTContrast, not {type(contrast).__name__}")
        return mr_signals(
            self._rows, contrast.repetition_time_ms, contrast.echo_time_ms, contrast.inversion_time_ms,
            contrast.fat_suppressed, contrast.field_strength_t, contrast.gradient_echo, contrast.diffusion_b,
            contrast.flip_angle_deg,
        )

    # ------------------------------------------------------------------ truth
    @property
    def vertebrae(self) -> list[VertebraTruth]:
        """Vertebrae C1 … S1 (with any transitional level), cranial → caudal."""
        return self._vertebrae

    @property
    def discs(self) -> list[DiscTruth]:
        """Intervertebral discs C2/C3 … L5/S1 (or …/L6, L6/S1), cranial → caudal."""
        return self._disc_truth

    @property
    def spine_axis_points_mm(self) -> np.ndarray:
        """(M, 3) LPS points every 1 mm along the body-centre line from above C1 to the sacral tip."""
        seg = self._segments
        s = np.arange(seg.top[0] - 10.0, seg.bottom[self._segments.names.index("S5")], 1.0)
        idx = self._frame.index_of(s.astype(np.float32))
        shift = self._tables.shift[idx][:, None].astype(float)
        body = self._frame.points_body[idx].astype(float) + shift * self._frame.anterior[idx].astype(float)
        return body @ self._frame.rotation.T + self._frame.translation

    def level_at(self, point_mm: np.ndarray) -> tuple[str, float]:
        """Nearest vertebra or disc along the spine axis and the signed axial distance (mm, + cranial)."""
        s = float(self._local(point_mm)[0][0])
        seg = self._segments
        for disc in self._disc_truth:
            upper, lower = disc_levels(disc.level)
            u, w = seg.names.index(upper), seg.names.index(lower)
            if seg.bottom[u] <= s <= seg.top[w]:
                centre = 0.5 * (seg.bottom[u] + seg.top[w])
                return disc.level, float(centre - s)
        count = len(self._levels)
        centres = seg.centre[:count]
        inside = np.nonzero((seg.top[:count] <= s) & (s <= seg.bottom[:count]))[0]
        i = int(inside[0]) if len(inside) else int(np.argmin(np.abs(centres - s)))
        return self._levels[i], float(centres[i] - s)

    def bilsky_grade_at(self, point_mm: np.ndarray) -> str:
        """MR Bilsky grade of the axial cross-section through the point ("0" without epidural disease)."""
        s = self._local(point_mm)[0]
        return BILSKY_MR_GRADES[int(self._tables.bilsky[self._frame.index_of(s)[0]])]

    def sac_centre_at(self, point_mm: np.ndarray) -> np.ndarray:
        """(3,) phantom-frame mm of the thecal sac centre on the axial cross-section through the point
        (the centre of the spinal canal region a Bilsky reader looks at)."""
        s = float(self._local(point_mm)[0][0])
        return self._frame.to_world(s, float(self._tables.sac_a[self._frame.index_of(np.array([s]))[0]]), 0.0)

    def local_coordinates(self, points_mm: np.ndarray) -> np.ndarray:
        """Extra: (N, 3) local spine-frame coordinates (s caudal arc length, anterior, left) in mm."""
        return np.stack(self._frame.to_local(np.atleast_2d(np.asarray(points_mm, dtype=float))), axis=1)

    def world_coordinates(self, local_mm: np.ndarray) -> np.ndarray:
        """Extra: inverse of :meth:`local_coordinates`, (N, 3) local (s, anterior, left) → (N, 3) LPS mm."""
        local = np.atleast_2d(np.asarray(local_mm, dtype=float))
        return np.array([self._frame.to_world(*row) for row in local])

    def to_json(self) -> dict[str, object]:
        """Anatomy parameters of the subject (truth.json ``anatomy``)."""
        subject = asdict(self._subject)
        conus = float(self._scene.conus_s)
        conus_level, conus_offset = self._level_of_s(conus)
        result: dict[str, object] = {
            "transitional": self._config.transitional,
            "levels": list(self._levels),
            "scoliosis_deg": round(self._subject.scoliosis_deg, 2),
            "scoliosis_pattern": self._subject.scoliosis_pattern if self._subject.scoliosis_deg > 0 else "none",
            "cervical_lordosis_deg": round(self._subject.cervical_lordosis_deg, 2),
            "thoracic_kyphosis_deg": round(self._subject.thoracic_kyphosis_deg, 2),
            "lumbar_lordosis_deg": round(self._subject.lumbar_lordosis_deg, 2),
            "pathology_rate": self._config.pathology_rate,
            "cancer": self._pathology.has_cancer,
            "age_years": round(subject["age_years"], 1),
            "sex": subject["sex"],
            "size_scale": round(subject["size_scale"], 3),
            "subcutaneous_fat_mm": round(subject["subcutaneous_fat_mm"], 1),
            "conus_level": conus_level,
            "conus_offset_mm": round(conus_offset, 1),
            "marrow_fat_fraction": round(float(self._tissues.fat_fraction[Tissue.MARROW]), 3),
        }
        return result

    def _local(self, point_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._frame.to_local(np.asarray(point_mm, dtype=float).reshape(1, 3))

    def _level_of_s(self, s: float) -> tuple[str, float]:
        seg = self._segments
        count = len(self._levels)
        i = int(np.argmin(np.abs(seg.centre[:count] - s)))
        return self._levels[i], float(seg.centre[i] - s)

    def _bilsky_between(self, s0: float, s1: float) -> str:
        lo, hi = self._frame.index_of(np.array([s0, s1], dtype=np.float32))
        return BILSKY_MR_GRADES[int(self._tables.bilsky[lo:hi + 1].max())]

    def _vertebra_truth(self) -> list[VertebraTruth]:
        seg, frame, k = self._segments, self._frame, self._subject.size_scale
        result = []
        for i, level in enumerate(self._levels):
            shift = float(seg.shift[i])
            if i == 0:  # C1: the anterior arch (see painter: ring in front of the dens)
                c2 = 1
                dens_front = float(seg.shift[c2]) + 5.5 * k
                front, back = dens_front + 1.5 + 6.5 * k, dens_front + 1.5
                top, bottom = seg.centre[0] - 5.0 * k, seg.centre[0] + 5.0 * k
                centre_a = 0.5 * (front + back)
                depth = front - back
                width = 44.0 * k
            else:
                front, back = shift + seg.depth[i] / 2 - 1.0, shift - seg.depth[i] / 2 + 1.0
                top, bottom = seg.top[i], seg.bottom[i]
                centre_a, depth, width = shift, float(seg.depth[i]), float(seg.width[i])
            centre_s = 0.5 * (top + bottom)
            corners = np.array([
                frame.to_world(top + 0.2, front, 0.0), frame.to_world(top + 0.2, back, 0.0),
                frame.to_world(bottom - 0.2, back, 0.0), frame.to_world(bottom - 0.2, front, 0.0),
            ])
            superior, anterior_axis, _ = frame.axes_at(centre_s)
            vertebra = self._pathology.vertebrae[level]
            grade = self._bilsky_between(top, bottom)
            lesions = {
                "metastasis": vertebra.metastasis_pattern != "none",
                "metastasis_pattern": vertebra.metastasis_pattern,
                "fracture": vertebra.fracture != "none",
                "height_loss_fraction": round(vertebra.height_loss, 3),
                "cord_compression": BILSKY_MR_GRADES.index(grade) >= BILSKY_MR_GRADES.index("2"),
                "epidural_bilsky": grade,
            }
            details = {
                "fracture_type": vertebra.fracture,
                "pathological_fracture": vertebra.pathological,
                "fracture_oedema": vertebra.oedema or vertebra.pathological,
                "metastasis_foci": len(vertebra.foci),
                "metastasis_sclerotic": vertebra.diffuse_sclerotic or any(f.sclerotic for f in vertebra.foci),
                "epidural_origin": ("none" if vertebra.epidural_grade == "0"
                                    else "anterior" if vertebra.epidural_anterior else "posterior"),
                "listhesis_shift_mm": round(shift, 2),
            }
            result.append(VertebraTruth(
                level=level, centroid_mm=frame.to_world(centre_s, centre_a, 0.0), corners_mm=corners,
                superior_axis=superior, anterior_axis=anterior_axis, height_mm=float(bottom - top),
                depth_mm=float(depth), width_mm=float(width), lesions=lesions, details=details,
            ))
        return result

    def _disc_truth_list(self) -> list[DiscTruth]:
        frame, discs = self._frame, self._discs
        result = []
        for k, name in enumerate(discs.names):
            pathology = discs.pathology[k]
            if pathology is None:
                continue
            centre_s = float(discs.centre[k])
            j = frame.index_of(np.array([centre_s], dtype=np.float32))[0]
            superior, _, _ = frame.axes_at(centre_s)
            result.append(DiscTruth(
                level=name, centre_mm=frame.to_world(centre_s, float(self._tables.shift[j]), 0.0), normal=superior,
                gradings=pathology.gradings(), rsna=pathology.rsna(), height_mm=float(discs.height[k]),
                details=pathology.details(),
            ))
        return result


@lru_cache(maxsize=4)
def _base_noise(size: int, sigma: float) -> np.ndarray:
    """Periodic unit-variance Gaussian noise volume, made once per process (fixed seed)."""
    volume = gaussian_filter(np.random.default_rng(20260101 + size).normal(0.0, 1.0, (size,) * 3), sigma, mode="wrap")
    return (volume / volume.std()).astype(np.float32)


def _texture_volume(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """A subject's texture volume: the shared noise volume randomly rolled, flipped and transposed
    (cheap, deterministic by ``rng``, and different for every subject)."""
    volume = np.roll(_base_noise(size, sigma), tuple(int(x) for x in rng.integers(0, size, 3)), axis=(0, 1, 2))
    volume = volume.transpose(tuple(int(x) for x in rng.permutation(3)))
    flips = tuple(i for i in range(3) if rng.random() < 0.5)
    return np.ascontiguousarray(np.flip(volume, axis=flips) if flips else volume)


def _cord_levels(levels: list[str], subject: Subject) -> list[str]:
    """Levels whose canal holds the cord (C2 … T12/T13, plus L1 when the conus ends low)."""
    cord = [lv for lv in levels if lv[0] in "CT" and lv != "C1"]
    if subject.conus_offset_mm > 10.0:
        cord.append("L1")
    return cord


def make_phantom(rng: np.random.Generator, config: AnatomyConfig | None = None) -> SpinePhantom:
    """Draw one subject: anatomy, tissue properties and pathology (deterministic for a seeded ``rng``)."""
    config = config or AnatomyConfig()
    if config.transitional is not None and config.transitional not in TRANSITIONAL_AFTER:
        raise ValueError(f"transitional must be None or one of {sorted(TRANSITIONAL_AFTER)}, not {config.transitional!r}")
    rate = float(np.clip(config.pathology_rate, 0.0, 1.0))
    has_cancer = bool(config.cancer) if config.cancer is not None else bool(rng.random() < min(0.5, 0.4 * rate))
    subject = anatomy.sample_subject(rng, config.scoliosis_deg, config.lordosis_scale, config.kyphosis_scale, has_cancer)
    levels = list(levels_with_transitional(thirteen_thoracic=config.transitional == "T13",
                                           six_lumbar=config.transitional == "L6"))
    tissues = sample_tissue_table(rng, subject.age_years)
    disc_names = [d for d in discs_between(levels) if d != "C1/C2"]
    pathology = SubjectPathology(
        has_cancer=has_cancer,
        discs=sample_disc_pathology(rng, disc_names, subject.age_years, rate),
        vertebrae=sample_vertebra_pathology(rng, levels, subject.age_years, has_cancer, _cord_levels(levels, subject)),
    )
    names, dims = anatomy.sample_segments(rng, levels, subject.size_scale)
    segments, discs = anatomy.layout(rng, names, dims, pathology, subject.size_scale)
    frame = anatomy.build_frame(rng, segments, subject, pathology)
    tables = anatomy.build_tables(rng, segments, discs, subject, pathology, frame)
    scene, rows = _scene(rng, subject, tissues, pathology, segments, discs, frame, tables)
    return SpinePhantom(config=config, subject=subject, levels=levels, pathology=pathology, tissues=tissues,
                        segments=segments, discs=discs, frame=frame, tables=tables, scene=scene, table_rows=rows)


def _scene(rng: np.random.Generator, subject: Subject, tissues: TissueTable, pathology: SubjectPathology,
           seg: anatomy.Segments, discs: anatomy.Discs, frame: SpineFrame, tables: anatomy.Tables
           ) -> tuple[Scene, TissueTable]:
    """Per-disc/per-segment render parameters and the extended tissue table (tissues + variants)."""
    k = subject.size_scale
    n_seg, n_disc = len(seg.names), len(discs.names)
    # Disc nuclei: T2 and proton density fall with the Pfirrmann grade; vacuum phenomenon on CT at grade 5.
    nucleus = tissues.rows(np.full(n_disc, int(Tissue.NUCLEUS)))
    t2 = nucleus.t2_water_ms.copy()
    pd = nucleus.proton_density.copy()
    hu = nucleus.hu.copy()
    blur = np.zeros(n_disc)
    cleft = np.zeros(n_disc, dtype=bool)
    bulge = np.zeros(n_disc)
    foraminal = np.zeros((n_disc, 2), dtype=np.intp)
    herniations: list[tuple[int, float, float, float, float, bool]] = []
    schmorl: list[Lesion] = []
    modic = np.zeros((n_seg, 2, 2))
    osteophytes = np.zeros((n_seg, 2))
    reference_t2 = float(tissues.t2_water_ms[Tissue.NUCLEUS]) / 130.0
    for d in range(n_disc):
        disc = discs.pathology[d]
        grade = disc.pfirrmann if disc is not None else 4
        t2_grade, pd_grade, blur[d] = _PFIRRMANN_NUCLEUS[grade]
        t2[d] = t2_grade * reference_t2 * float(np.exp(rng.normal(0, 0.06)))
        pd[d] = pd_grade
        cleft[d] = grade >= 2 and rng.random() < (0.85 if grade == 2 else 0.5)
        if grade == 5 and rng.random() < 0.35:
            hu[d] = float(rng.uniform(-600, -200))
        if disc is None:
            continue
        bulge[d] = disc.bulge_mm
        foraminal[d] = (disc.foraminal_left, disc.foraminal_right)
        if disc.herniation != "none":
            semi = discs.height[d] / 2 + (3.5 if disc.herniation == "extrusion" else 1.0)
            herniations.append((d, float(discs.centre[d] + disc.herniation_migration_mm), disc.herniation_size_mm,
                                float(disc.herniation_side * 6.0 * k), float(semi), disc.herniation == "extrusion"))
        u = int(discs.upper[d])
        if disc.pfirrmann >= 4 and rng.random() < 0.7:  # spondylotic lipping around degenerate discs
            osteophytes[u, 1] = float(rng.uniform(1.0, 4.5)) * k
            osteophytes[u + 1, 0] = float(rng.uniform(1.0, 4.5)) * k
        for has_defect, segment, endplate_s, direction in (
            (disc.upper_endplate_defect, u, seg.bottom[u], -1.0), (disc.lower_endplate_defect, u + 1, seg.top[u + 1], 1.0),
        ):
            if has_defect:
                height = float(seg.bottom[segment] - seg.top[segment])
                depth = float(rng.uniform(0.12, 0.22)) * height
                radius = float(rng.uniform(0.07, 0.13)) * float(seg.depth[segment])
                centre = (float(endplate_s + direction * (depth * 0.6)),
                          float(seg.shift[segment] + rng.uniform(-0.2, 0.15) * seg.depth[segment]),
                          float(rng.uniform(-0.25, 0.25) * seg.width[segment]))
                schmorl.append(Lesion(segment, centre, (depth, radius, radius * 1.2), Tissue.NUCLEUS))
        for modic_type, segment, side in ((disc.upper_modic, u, 1), (disc.lower_modic, u + 1, 0)):
            if modic_type:
                modic[segment, side] = (modic_type, float(rng.uniform(4.0, 11.0)) * k)
    nucleus = nucleus.with_overrides(t2_water_ms=t2, proton_density=pd, hu=hu)
    # Marrow per segment: slight level-to-level variation, fattier sacrum; diffuse metastases replace it.
    marrow = tissues.rows(np.full(n_seg, int(Tissue.MARROW)))
    pd_m = marrow.proton_density * np.exp(rng.normal(0, 0.03, n_seg))
    ff_m = np.clip(marrow.fat_fraction + np.where(seg.kind >= anatomy.S1, 0.08, 0.0) + rng.normal(0, 0.03, n_seg), 0, 0.95)
    marrow = marrow.with_overrides(proton_density=pd_m, fat_fraction=ff_m)
    lesions: list[Lesion] = []
    oedema = np.zeros(n_seg)
    posterior_tumour = np.zeros(n_seg)
    diffuse_rows: dict[int, int] = {}
    for i, name in enumerate(seg.names):
        vertebra = pathology.vertebrae.get(name)
        if vertebra is None:
            continue
        if vertebra.metastasis_pattern == "diffuse":
            diffuse_rows[i] = int(Tissue.METASTASIS_SCLEROTIC if vertebra.diffuse_sclerotic else Tissue.METASTASIS_LYTIC)
        h = seg.bottom[i] - seg.top[i]
        for focus in vertebra.foci:
            radius = focus.radius_fraction * min(h, seg.depth[i]) if i > 0 else 0.0
            if radius <= 0:
                continue
            centre = (float(seg.centre[i] + focus.centre[0] * h), float(seg.shift[i] + focus.centre[1] * seg.depth[i]),
                      float(focus.centre[2] * seg.width[i]))
            tissue = Tissue.METASTASIS_SCLEROTIC if focus.sclerotic else Tissue.METASTASIS_LYTIC
            lesions.append(Lesion(i, centre, (radius * 0.9, radius, radius * 1.1), tissue))
        if vertebra.fracture != "none" and (vertebra.oedema or vertebra.pathological):
            oedema[i] = 0.7
        if vertebra.epidural_grade != "0" and not vertebra.epidural_anterior:
            posterior_tumour[i] = 1.0
    # Haemangiomas (T1 and T2 bright fatty-vascular foci, ~1 in 5 adults): benign mimics, never labelled.
    candidates = [i for i, name in enumerate(seg.names) if name not in ("C1", "C2") and seg.kind[i] <= anatomy.S1]
    for _ in range(int(rng.choice([0, 0, 0, 1, 1, 2]))):
        i = int(rng.choice(candidates))
        h = seg.bottom[i] - seg.top[i]
        radius = float(rng.uniform(0.1, 0.25)) * min(h, seg.depth[i])
        centre = (float(seg.centre[i] + rng.uniform(-0.25, 0.25) * h), float(seg.shift[i] + rng.uniform(-0.25, 0.25) * seg.depth[i]),
                  float(rng.uniform(-0.25, 0.25) * seg.width[i]))
        lesions.append(Lesion(i, centre, (radius, radius, radius), Tissue.MARROW_FATTY))
    marrow_rows = marrow
    if diffuse_rows:
        index = np.arange(n_seg)
        diffuse = tissues.rows(np.array([diffuse_rows.get(i, int(Tissue.MARROW)) for i in index]))
        chosen = np.array([i in diffuse_rows for i in index])
        marrow_rows = TissueTable(**{
            name: np.where(chosen, getattr(diffuse, name), getattr(marrow, name))
            for name in TissueTable.__dataclass_fields__
        })
    all_rows = TissueTable(**{
        name: np.concatenate([getattr(tissues, name), getattr(nucleus, name), getattr(marrow_rows, name)])
        for name in TissueTable.__dataclass_fields__
    })
    noise = _texture_volume(rng, 64, 1.0)
    coarse = _texture_volume(rng, 128, 4.0)
    index = {name: i for i, name in enumerate(seg.names)}
    scene = Scene(
        frame=frame, tables=tables, segments=seg, discs=discs, lesions=lesions, schmorl=schmorl,
        herniations=herniations, modic=modic, foraminal=foraminal, disc_blur=blur, disc_cleft=cleft,
        oedema=oedema, posterior_tumour=posterior_tumour, noise=noise, coarse_noise=coarse, scale=k,
        aorta_radius=float((10.0 + 0.07 * (subject.age_years - 20.0) + rng.normal(0, 1.0)) * k),
        conus_s=float(seg.bottom[index["L1"]] + subject.conus_offset_mm),
        disc_bulge=bulge, nucleus_row0=N_TISSUES, marrow_row0=N_TISSUES + n_disc, osteophytes=osteophytes,
    )
    return scene, all_rows
