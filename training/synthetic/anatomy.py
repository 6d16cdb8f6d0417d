"""Geometry of the synthetic spine: segment layout, curved centreline, local spine frame, tables.

Coordinates
-----------
The phantom is built in a *local spine frame* ``(s, a, l)`` and placed in patient LPS mm:

* ``s`` — arc length along the centreline through the vertebral-body centres, mm, increasing
  **caudally**; ``s = 0`` is the top of the C2 body.
* ``a`` — distance along the local **anterior** axis (⟂ centreline), mm.
* ``l`` — distance along the local **left** axis (``l = u × a``, ``u`` the superior axis), mm.

World point of a local point: ``P(s) + a·A(s) + l·L(s)`` (then the subject placement). The map
back (:meth:`SpineFrame.to_local`) uses a sagittal lookup table for a first guess of ``s`` and two
Newton steps on the dense centreline, all vectorised; it is exact for points closer to the
centreline than its radius of curvature (≥ ~100 mm everywhere except at wedge fractures).

Because every structure is defined in this curved frame, lordosis/kyphosis wedge discs and bodies
the way real spines are (anterior side longer on a lordotic segment), scoliosis bends and rotates
the whole column, and slices in any orientation cut the structures correctly.

Variation ranges (per subject): body size ×0.85–1.15 (sex and random), each vertebra ±5 %, disc
heights ±12 %, cervical lordosis −10…35°, thoracic kyphosis 20…60° (×``kyphosis_scale``), lumbar
lordosis 25…70° (×``lordosis_scale``), sacral curve, scoliosis Cobb 0…``scoliosis_deg`` with
thoracic / thoracolumbar / lumbar / double curves and apical rotation ≈ 0.4 × Cobb, subcutaneous
fat 4…45 mm, abdominal girth, conus tip L1 ± 12 mm, whole-spine tilt ±8° (pitch), ±6° (roll),
±8° (yaw) and a ±60 mm shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from operators.core.levels import LUMBAR as LUMBAR_LEVELS
from operators.core.levels import disc_name
from training.synthetic.pathology import DiscPathology, SubjectPathology

# Segment kinds (index into the per-kind parameter tables).
C1, C2, CERVICAL, THORACIC, LUMBAR, S1, SACRAL, COCCYX = range(8)

#: Mean adult vertebral-body height (cranio-caudal), depth (AP) and width, mm.
_BODY_DIMENSIONS: dict[str, tuple[float, float, float]] = {
    "C1": (10.0, 9.0, 0.0), "C2": (15.0, 15.0, 17.0), "C3": (13.5, 15.5, 17.0), "C4": (13.5, 16.0, 18.0),
    "C5": (13.5, 16.0, 19.0), "C6": (13.5, 16.5, 21.0), "C7": (14.5, 17.0, 24.0),
    "T1": (16.0, 18.0, 27.0), "T2": (17.0, 19.0, 27.0), "T3": (17.5, 20.0, 27.0), "T4": (18.0, 21.0, 27.5),
    "T5": (18.5, 22.0, 28.0), "T6": (19.0, 24.0, 29.0), "T7": (19.5, 25.0, 30.0), "T8": (20.0, 26.0, 31.0),
    "T9": (21.0, 27.0, 33.0), "T10": (22.0, 28.0, 36.0), "T11": (23.0, 29.0, 39.0), "T12": (24.0, 30.0, 42.0),
    "T13": (24.5, 31.0, 42.5), "L1": (25.0, 32.0, 43.0), "L2": (26.0, 33.0, 45.0), "L3": (27.0, 34.0, 47.0),
    "L4": (27.0, 35.0, 49.0), "L5": (27.0, 35.0, 50.0), "L6": (26.0, 35.0, 50.0), "S1": (28.0, 37.0, 50.0),
    "S2": (23.0, 30.0, 40.0), "S3": (19.0, 23.0, 32.0), "S4": (15.0, 17.0, 25.0), "S5": (12.0, 13.0, 19.0),
    "Co1": (10.0, 10.0, 14.0), "Co2": (8.0, 8.0, 10.0), "Co3": (7.0, 6.0, 8.0),
}
#: Mean disc height (mm) by the disc's lower vertebra.
_DISC_HEIGHT: dict[str, float] = {
    "C3": 4.5, "C4": 5.0, "C5": 5.5, "C6": 5.5, "C7": 5.5, "T1": 5.0, "T2": 4.0, "T3": 4.0, "T4": 4.2,
    "T5": 4.5, "T6": 4.8, "T7": 5.0, "T8": 5.3, "T9": 5.6, "T10": 6.0, "T11": 6.5, "T12": 7.0, "T13": 7.5,
    "L1": 8.0, "L2": 9.0, "L3": 10.0, "L4": 11.0, "L5": 12.0, "L6": 11.0, "S1": 11.0,
    "S2": 1.8, "S3": 1.0, "S4": 1.0, "S5": 1.0, "Co1": 1.6, "Co2": 1.4, "Co3": 1.2,
}
_SACRO_COCCYGEAL = ("S2", "S3", "S4", "S5", "Co1", "Co2", "Co3")

# Per-kind posterior-element and canal parameters (mm):
# canal AP semi, canal lateral semi, sac AP semi, sac lateral semi, pedicle s-semi, pedicle l-semi,
# lamina thickness, spinous length, spinous s-semi, spinous tilt (ds per mm posterior),
# transverse process length, facet column a-semi, facet column l-semi.
_KIND_PARAMS = np.array([
    [10.0, 13.0, 7.5, 11.0, 4.0, 3.5, 6.0, 12.0, 4.0, 0.3, 25.0, 8.0, 8.0],  # C1
    [8.5, 12.5, 6.8, 10.5, 4.0, 3.5, 6.5, 24.0, 5.0, 0.4, 12.0, 7.0, 7.0],  # C2
    [8.0, 12.5, 6.5, 10.0, 3.5, 2.8, 5.0, 17.0, 3.5, 0.45, 14.0, 6.5, 6.5],  # cervical
    [7.5, 8.5, 5.6, 7.0, 6.0, 3.5, 6.0, 36.0, 4.0, 0.75, 24.0, 5.0, 4.5],  # thoracic
    [9.0, 12.0, 7.0, 9.5, 7.5, 4.5, 7.0, 30.0, 10.0, 0.15, 22.0, 7.0, 6.0],  # lumbar
    [8.0, 14.0, 6.0, 10.0, 9.0, 9.0, 6.0, 14.0, 6.0, 0.2, 48.0, 0.0, 0.0],  # S1 (ala as "TP")
    [5.5, 10.0, 2.0, 3.0, 0.0, 0.0, 5.0, 8.0, 4.0, 0.2, 38.0, 0.0, 0.0],  # S2-S5
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # coccyx
])
(P_CANAL_A, P_CANAL_L, P_SAC_A, P_SAC_L, P_PED_S, P_PED_L, P_LAMINA, P_SP_LEN, P_SP_S, P_SP_TILT,
 P_TP_LEN, P_FACET_A, P_FACET_L) = range(13)

#: Table resolution along s (mm).
DS = 0.5


def _kind(name: str) -> int:
    if name == "C1":
        return C1
    if name == "C2":
        return C2
    if name.startswith("Co"):
        return COCCYX
    if name == "S1":
        return S1
    return {"C": CERVICAL, "T": THORACIC, "L": LUMBAR, "S": SACRAL}[name[0]]


@dataclass
class Segments:
    """Per-segment arrays (C1 … S1 levels, then S2 … S5 and Co1 … Co3), cranial → caudal.

    All lengths in mm, positions in the local frame. ``top``/``bottom`` are the s of the
    mid-endplates (at a = l = 0); ``shift`` the anterior offset of spondylolisthesis.
    """

    names: list[str]
    kind: np.ndarray
    centre: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    height: np.ndarray  # nominal (pre-fracture) cranio-caudal height
    depth: np.ndarray
    width: np.ndarray
    shift: np.ndarray
    params: np.ndarray  # (n, 13) _KIND_PARAMS rows scaled to the subject
    concavity_top: np.ndarray  # central endplate depression (mm)
    concavity_bottom: np.ndarray
    waist: np.ndarray  # relative narrowing of the body at mid-height


@dataclass
class Discs:
    """Per-disc arrays between consecutive segments (C2/C3 downwards; sacral remnants included)."""

    names: list[str]
    upper: np.ndarray  # index of the upper segment
    centre: np.ndarray
    height: np.ndarray
    fused: np.ndarray  # bool: sacral fusion line (rendered as bone), not a disc
    pathology: list[DiscPathology | None]


class SpineFrame:
    """The curved centreline with its orthonormal frames and the subject's placement.

    Attributes:
        s: (M,) sample arc lengths (mm, cranial → caudal, step :data:`DS`).
        points_body, tangent, anterior, left: (M, 3) centreline and frame in body coordinates.
        rotation, translation: placement, ``world = rotation @ body + translation``.
    """

    def __init__(self, s: np.ndarray, points_body: np.ndarray, tangent: np.ndarray, anterior: np.ndarray,
                 left: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> None:
        self.s = s
        self.points_body = points_body.astype(np.float32)
        self.tangent = tangent.astype(np.float32)
        self.anterior = anterior.astype(np.float32)
        self.left = left.astype(np.float32)
        self.rotation = rotation
        self.translation = translation
        self.s0 = float(s[0])
        self.n = len(s)
        # Sagittal (y, z) lookup table of the nearest centreline sample: the first guess for to_local
        # (5 mm cells; one Newton step then removes the error).
        step = 5.0
        lo = points_body[:, 1:].min(axis=0) - 260.0
        hi = points_body[:, 1:].max(axis=0) + 260.0
        ny, nz = (np.ceil((hi - lo) / step).astype(int) + 1)
        grid_y, grid_z = np.meshgrid(lo[0] + step * np.arange(ny), lo[1] + step * np.arange(nz), indexing="ij")
        tree = cKDTree(points_body[::4, 1:])
        _, nearest = tree.query(np.stack([grid_y.ravel(), grid_z.ravel()], axis=1))
        nearest = 4 * nearest
        # Store a first-order guess per cell: s at the cell centre (projected on the tangent) and its
        # gradient in (y, z), so the guess is accurate to ~0.1 mm away from the medial axis.
        d = np.stack([grid_y.ravel(), grid_z.ravel()], axis=1) - points_body[nearest, 1:]
        cell_s = (s[nearest] + np.einsum("ij,ij->i", d, tangent[nearest, 1:])).reshape(ny, nz)
        grad_y, grad_z = np.gradient(cell_s, step)
        self._guess_s = cell_s.astype(np.float32).ravel()
        self._guess_gy = np.clip(grad_y, -2.0, 2.0).astype(np.float32).ravel()
        self._guess_gz = np.clip(grad_z, -2.0, 2.0).astype(np.float32).ravel()
        self._guess_shape = (int(ny), int(nz))
        self._guess_lo = lo.astype(np.float32)
        self._guess_step = np.float32(step)
        self._rot32 = rotation.astype(np.float32)
        self._trans32 = translation.astype(np.float32)
        # Component arrays: 1-D gathers are much faster than row gathers of (M, 3) arrays.
        self._s32 = s.astype(np.float32)
        self._p = [np.ascontiguousarray(self.points_body[:, k]) for k in range(3)]
        self._t = [np.ascontiguousarray(self.tangent[:, k]) for k in range(3)]
        self._a = [np.ascontiguousarray(self.anterior[:, k]) for k in range(3)]
        self._l = [np.ascontiguousarray(self.left[:, k]) for k in range(3)]
        curvature = np.gradient(tangent.astype(float), DS, axis=0)  # dT/ds
        self._k = [np.ascontiguousarray(curvature[:, k].astype(np.float32)) for k in range(3)]

    def index_of(self, s: np.ndarray) -> np.ndarray:
        """Nearest sample index for arc lengths ``s`` (clipped to the table)."""
        # intp indices: numpy gathers with them are ~2x faster than with int32.
        idx = ((s - self.s0) * (1.0 / DS) + 0.5).astype(np.intp)
        return np.clip(idx, 0, self.n - 1, out=idx)

    def to_local(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map (N, 3) LPS points to local ``(s, a, l)`` float32 arrays (mm)."""
        q = (np.asarray(points_mm, dtype=np.float32) - self._trans32) @ self._rot32
        qx, qy, qz = np.ascontiguousarray(q.T)
        ny, nz = self._guess_shape
        fy = (qy - self._guess_lo[0]) * (1.0 / self._guess_step)
        fz = (qz - self._guess_lo[1]) * (1.0 / self._guess_step)
        iy = (fy + 0.5).astype(np.intp)
        iz = (fz + 0.5).astype(np.intp)
        np.clip(iy, 0, ny - 1, out=iy)
        np.clip(iz, 0, nz - 1, out=iz)
        cell = iy * nz + iz
        s = self._guess_s.take(cell)
        s += self._guess_gy.take(cell) * ((fy - iy) * self._guess_step)
        s += self._guess_gz.take(cell) * ((fz - iz) * self._guess_step)
        px, py, pz = self._p
        tx, ty, tz = self._t
        # One Newton step with the curvature term (the guess ignores the lateral coordinate), then the
        # final first-order projection.
        idx = self.index_of(s)
        dx = qx - px.take(idx)
        dy = qy - py.take(idx)
        dz = qz - pz.take(idx)
        kx, ky, kz = self._k
        along = dx * tx.take(idx) + dy * ty.take(idx) + dz * tz.take(idx)
        slope = 1.0 - (dx * kx.take(idx) + dy * ky.take(idx) + dz * kz.take(idx))
        s = self._s32.take(idx) + along / np.maximum(slope, 0.2)
        idx = self.index_of(s)
        dx = qx - px.take(idx)
        dy = qy - py.take(idx)
        dz = qz - pz.take(idx)
        s = self._s32.take(idx) + dx * tx.take(idx) + dy * ty.take(idx) + dz * tz.take(idx)
        ax, ay, az = self._a
        lx, ly, lz = self._l
        a = dx * ax.take(idx) + dy * ay.take(idx) + dz * az.take(idx)
        l = dx * lx.take(idx) + dy * ly.take(idx) + dz * lz.take(idx)
        return s, a, l

    def to_world(self, s: float, a: float, l: float) -> np.ndarray:
        """LPS point (3,) of a local point (linear interpolation between centreline samples)."""
        x = (s - self.s0) / DS
        i = int(np.clip(np.floor(x), 0, self.n - 2))
        f = float(np.clip(x - i, 0.0, 1.0))

        def lerp(table: np.ndarray) -> np.ndarray:
            return (1 - f) * table[i].astype(float) + f * table[i + 1].astype(float)

        body = lerp(self.points_body) + a * lerp(self.anterior) + l * lerp(self.left)
        return self.rotation @ body + self.translation

    def axes_at(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World unit (superior, anterior, left) axes at arc length ``s``."""
        i = int(self.index_of(np.array([s], dtype=np.float32))[0])
        superior = self.rotation @ (-self.tangent[i].astype(float))
        anterior = self.rotation @ self.anterior[i].astype(float)
        left = self.rotation @ self.left[i].astype(float)
        return superior / np.linalg.norm(superior), anterior / np.linalg.norm(anterior), left / np.linalg.norm(left)


@dataclass
class Subject:
    """Whole-body parameters of one subject (see module docstring for ranges)."""

    age_years: float
    sex: str
    size_scale: float
    subcutaneous_fat_mm: float
    abdominal_girth_mm: float
    cervical_lordosis_deg: float
    thoracic_kyphosis_deg: float
    lumbar_lordosis_deg: float
    scoliosis_deg: float
    scoliosis_pattern: str
    conus_offset_mm: float


def sample_segments(rng: np.random.Generator, levels: list[str], size_scale: float) -> tuple[list[str], np.ndarray]:
    """Names of all rendered segments and their jittered (height, depth, width) (n, 3) mm."""
    names = list(levels) + list(_SACRO_COCCYGEAL)
    dims = np.array([_BODY_DIMENSIONS[name] for name in names]) * size_scale
    dims *= np.exp(rng.normal(0.0, 0.05, dims.shape))
    return names, dims


def layout(rng: np.random.Generator, names: list[str], dims: np.ndarray, pathology: SubjectPathology,
           size_scale: float) -> tuple[Segments, Discs]:
    """Stack segments and discs along s (fracture height loss and disc narrowing applied)."""
    n = len(names)
    kind = np.array([_kind(name) for name in names])
    height = dims[:, 0].copy()
    effective = height.copy()
    concavity_top = np.clip(0.045 * height * rng.uniform(0.7, 1.3, n), 0.3, 2.0)
    concavity_bottom = np.clip(0.05 * height * rng.uniform(0.7, 1.3, n), 0.3, 2.2)
    for i, name in enumerate(names):
        vertebra = pathology.vertebrae.get(name)
        if vertebra is None or vertebra.fracture == "none":
            continue
        loss = vertebra.height_loss
        if vertebra.fracture == "wedge":  # anterior collapse; the frame bend makes the wedge
            effective[i] = height[i] * (1.0 - loss / 2.0)
        elif vertebra.fracture == "biconcave":  # central collapse of both endplates
            effective[i] = height[i] * (1.0 - 0.25 * loss)
            concavity_top[i] += 0.375 * loss * height[i]
            concavity_bottom[i] += 0.375 * loss * height[i]
        else:
            effective[i] = height[i] * (1.0 - loss)
    params = _KIND_PARAMS[kind] * size_scale
    params[:, P_SP_TILT] = _KIND_PARAMS[kind, P_SP_TILT]
    params *= np.exp(rng.normal(0.0, 0.06, params.shape))
    # Mid-thoracic spinous processes point steeply caudally; C7 (vertebra prominens) is long.
    for i, name in enumerate(names):
        if name in ("T5", "T6", "T7", "T8", "T9"):
            params[i, P_SP_TILT] *= 1.2
        if name == "C7":
            params[i, P_SP_LEN] *= 1.8
        if name == "L3":
            params[i, P_TP_LEN] *= 1.15
    disc_names: list[str] = []
    upper_index: list[int] = []
    disc_heights: list[float] = []
    fused: list[bool] = []
    disc_pathology: list[DiscPathology | None] = []
    centre = np.zeros(n)
    top = np.zeros(n)
    bottom = np.zeros(n)
    # C2 body top at s = 0; C1 (ring) sits around the dens above it.
    dens_length = 15.0 * size_scale
    top[1], bottom[1] = 0.0, effective[1]
    centre[1] = effective[1] / 2
    centre[0] = -0.55 * dens_length
    top[0], bottom[0] = centre[0] - effective[0] / 2, centre[0] + effective[0] / 2
    cursor = bottom[1]
    for i in range(2, n):
        name = names[i]
        d_name = f"{names[i - 1]}/{name}" if name in _SACRO_COCCYGEAL else disc_name(names[i - 1], name)
        mean_height = _DISC_HEIGHT.get(name, 6.0) * size_scale
        h = mean_height * float(np.exp(rng.normal(0.0, 0.12 if name not in _SACRO_COCCYGEAL else 0.05)))
        disc = pathology.discs.get(d_name)
        if disc is not None:
            h *= 1.0 - disc.height_loss
        disc_names.append(d_name)
        upper_index.append(i - 1)
        disc_heights.append(h)
        fused.append(name in ("S3", "S4", "S5"))
        disc_pathology.append(disc)
        top[i] = cursor + h
        bottom[i] = top[i] + effective[i]
        centre[i] = (top[i] + bottom[i]) / 2
        cursor = bottom[i]
    shift = np.zeros(n)
    for k, disc in enumerate(disc_pathology):
        if disc is not None and disc.listhesis_fraction > 0:
            u = upper_index[k]
            shift[: u + 1] += disc.listhesis_fraction * dims[u, 1]
    segments = Segments(
        names=names, kind=kind, centre=centre, top=top, bottom=bottom, height=height,
        depth=dims[:, 1], width=dims[:, 2], shift=shift, params=params,
        concavity_top=concavity_top, concavity_bottom=concavity_bottom,
        waist=rng.uniform(0.03, 0.08, n),
    )
    disc_centre = np.array([(bottom[u] + top[u + 1]) / 2 for u in upper_index])
    discs = Discs(names=disc_names, upper=np.array(upper_index), centre=disc_centre,
                  height=np.array(disc_heights), fused=np.array(fused), pathology=disc_pathology)
    return segments, discs


def _scoliosis_angle(rng: np.random.Generator, sample_s: np.ndarray, seg: Segments, cobb_deg: float,
                     pattern: str) -> np.ndarray:
    """Coronal tangent angle φ(s) (deg) of the scoliotic curve(s) with total Cobb ``cobb_deg``."""
    phi = np.zeros_like(sample_s)
    if cobb_deg <= 0.0:
        return phi
    ends = {"thoracic": [("T5", "T12")], "thoracolumbar": [("T9", "L3")], "lumbar": [("T12", "L4")],
            "double": [("T5", "T11"), ("T11", "L4")]}[pattern]
    centre = dict(zip(seg.names, seg.centre))
    sign = rng.choice([-1.0, 1.0])
    for k, (upper, lower) in enumerate(ends):
        if upper not in centre or lower not in centre:
            continue
        cobb = cobb_deg * (1.0 if k == 0 else rng.uniform(0.6, 1.0))
        su, sl = centre[upper], centre[lower]
        span = sl - su
        knots = np.array([su - 0.7 * span, su, sl, sl + 0.7 * span])
        values = np.array([0.0, cobb / 2, -cobb / 2, 0.0]) * sign * (1 if k == 0 else -1)
        inside = (sample_s > knots[0]) & (sample_s < knots[-1])
        phi[inside] += PchipInterpolator(knots, values)(sample_s[inside])
    return phi


def build_frame(rng: np.random.Generator, seg: Segments, subject: Subject, pathology: SubjectPathology) -> SpineFrame:
    """Integrate the sagittal and coronal curves into a centreline with frames and place it."""
    centre = dict(zip(seg.names, seg.centre))
    s_top = centre["C1"] - 280.0
    s_bottom = seg.bottom[-1] + 300.0
    sample_s = np.arange(s_top, s_bottom + DS, DS)
    lc, tk, ll = subject.cervical_lordosis_deg, subject.thoracic_kyphosis_deg, subject.lumbar_lordosis_deg
    base = rng.normal(0.0, 4.0)
    lumbar = [lv for lv in LUMBAR_LEVELS + ("L6",) if lv in centre]
    last_lumbar = lumbar[-1]
    knots = [
        (centre["C1"] - 60.0, base - lc / 2 - 8.0),
        (centre["C2"], base - lc / 2),
        (centre["C7"], base + lc / 2),
        (centre["T4"], tk / 2),
        (centre["T12"], -tk / 2),
        (centre["L1"], -tk / 2 - 3.0),
        (centre["L3"], -tk / 2 - 3.0 + 0.35 * ll),
        (centre[last_lumbar], -tk / 2 - 3.0 + 0.78 * ll),
        (centre["S1"], -tk / 2 - 3.0 + ll),
        (centre["S3"], -tk / 2 - 3.0 + ll - 18.0),
        (centre["Co1"], -tk / 2 - 3.0 + ll - 50.0),
        (centre["Co3"], -tk / 2 - 3.0 + ll - 75.0),
    ]
    knot_s, knot_theta = np.array(knots).T
    theta = PchipInterpolator(knot_s, knot_theta, extrapolate=False)(sample_s)
    theta[sample_s < knot_s[0]] = knot_theta[0]
    theta[sample_s > knot_s[-1]] = knot_theta[-1]
    # Wedge fractures bend the column kyphotically across the fractured body.
    for i, name in enumerate(seg.names):
        vertebra = pathology.vertebrae.get(name)
        if vertebra is not None and vertebra.fracture == "wedge":
            alpha = np.degrees(np.arctan(vertebra.height_loss * seg.height[i] / seg.depth[i]))
            ramp = np.clip((sample_s - seg.top[i]) / max(seg.bottom[i] - seg.top[i], 1.0), 0.0, 1.0)
            theta -= alpha * (3 * ramp**2 - 2 * ramp**3)
    phi = _scoliosis_angle(rng, sample_s, seg, subject.scoliosis_deg, subject.scoliosis_pattern)
    th, ph = np.radians(theta), np.radians(phi)
    tangent = np.stack([np.sin(ph), np.cos(ph) * np.sin(th), -np.cos(ph) * np.cos(th)], axis=1)
    points = np.stack([np.concatenate([[0.0], np.cumsum(0.5 * (tangent[1:, k] + tangent[:-1, k]) * DS)])
                       for k in range(3)], axis=1)
    # Apical rotation: bodies turn towards the convexity, ≈ 0.4 × Cobb at the apex.
    lateral = points[:, 0]
    kernel = np.exp(-0.5 * (np.arange(-400, 401) * DS / 120.0) ** 2)
    kernel /= kernel.sum()
    trend = np.convolve(np.pad(lateral, 400, mode="edge"), kernel, mode="valid")
    deviation = lateral - trend
    peak = float(np.max(np.abs(deviation))) if subject.scoliosis_deg > 0 else 0.0
    psi = np.radians(0.4 * subject.scoliosis_deg) * (deviation / peak if peak > 1e-6 else np.zeros_like(deviation))
    superior = -tangent
    anterior0 = np.array([0.0, -1.0, 0.0])[None, :] - (superior @ np.array([0.0, -1.0, 0.0]))[:, None] * superior
    anterior0 /= np.linalg.norm(anterior0, axis=1, keepdims=True)
    left0 = np.cross(superior, anterior0)
    anterior = np.cos(psi)[:, None] * anterior0 + np.sin(psi)[:, None] * left0
    left = np.cross(superior, anterior)
    angles = [rng.uniform(-8, 8), rng.uniform(-6, 6), rng.uniform(-8, 8)]  # pitch (x), roll (y), yaw (z)
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    anchor = points[int(np.argmin(np.abs(sample_s - centre["L1"])))]
    translation = -rotation @ anchor + rng.uniform(-60, 60, 3)
    return SpineFrame(sample_s, points, tangent, anterior, left, rotation, translation)


def sample_subject(rng: np.random.Generator, scoliosis_deg: float | None, lordosis_scale: float | None,
                   kyphosis_scale: float | None, cancer: bool) -> Subject:
    """Draw whole-body parameters; configured values (not None) are used as given."""
    sex = str(rng.choice(["F", "M"]))
    age = float(rng.uniform(45, 88) if cancer else rng.uniform(18, 85))
    size = float(np.clip(rng.normal(0.95 if sex == "F" else 1.04, 0.05), 0.85, 1.15))
    if scoliosis_deg is None:
        draw = rng.random()
        scoliosis_deg = 0.0 if draw < 0.45 else float(rng.uniform(1, 8) if draw < 0.8 else rng.uniform(8, 40))
    lordosis = float(rng.uniform(0.5, 1.4)) if lordosis_scale is None else float(lordosis_scale)
    kyphosis = float(rng.uniform(0.5, 1.5)) if kyphosis_scale is None else float(kyphosis_scale)
    return Subject(
        age_years=age, sex=sex, size_scale=size,
        subcutaneous_fat_mm=float(rng.uniform(4, 45)),
        abdominal_girth_mm=float(rng.uniform(0, 90)),
        cervical_lordosis_deg=float(rng.uniform(-10, 35) * min(lordosis, 1.2)),
        thoracic_kyphosis_deg=40.0 * kyphosis,
        lumbar_lordosis_deg=50.0 * lordosis,
        scoliosis_deg=float(scoliosis_deg),
        scoliosis_pattern=str(rng.choice(["thoracic", "thoracolumbar", "lumbar", "double"], p=[0.35, 0.25, 0.25, 0.15])),
        conus_offset_mm=float(rng.normal(0.0, 12.0)),
    )


@dataclass
class Tables:
    """Per-s lookup tables on the frame's samples (all shape (M,)), local-frame mm.

    Canal/sac/cord are ellipses in the axial (a, l) plane centred at (``*_a``, 0). Stenosis
    intrusions are depths from the canal walls; ``mass_depth`` is the epidural tumour front
    depth from the canal wall it grows from (0 = none) and ``bilsky`` the grade index
    (into ``BILSKY_MR_GRADES``) that front produces at that cross-section.
    """

    seg_owner: np.ndarray
    disc_owner: np.ndarray
    shift: np.ndarray
    depth: np.ndarray
    width: np.ndarray
    canal_a: np.ndarray
    canal_ra: np.ndarray
    canal_rl: np.ndarray
    sac_a: np.ndarray
    sac_ra: np.ndarray
    sac_rl: np.ndarray
    cord_a: np.ndarray
    cord_ra: np.ndarray
    cord_rl: np.ndarray
    roots: np.ndarray
    anterior_intrusion: np.ndarray
    flavum: np.ndarray
    effaced: np.ndarray
    recess_left: np.ndarray
    recess_right: np.ndarray
    mass_depth: np.ndarray
    mass_anterior: np.ndarray
    mass_kappa: np.ndarray
    bilsky: np.ndarray
    body_a: np.ndarray
    body_ra: np.ndarray
    body_rl: np.ndarray
    fat: np.ndarray
    ribcage_a: np.ndarray
    ribcage_ra: np.ndarray
    ribcage_rl: np.ndarray


# Body outline landmarks for a lean adult: level → (posterior, anterior, half-width) from the body axis, mm.
_OUTLINE: dict[str, tuple[float, float, float]] = {
    "C1": (62, 60, 60), "C3": (70, 55, 58), "C6": (82, 65, 66), "C7": (88, 72, 85), "T1": (88, 85, 150),
    "T2": (86, 110, 165), "T4": (82, 150, 158), "T7": (80, 172, 150), "T10": (82, 180, 148), "T12": (86, 180, 148),
    "L2": (90, 172, 150), "L4": (90, 160, 160), "S1": (78, 145, 172), "S3": (58, 140, 170), "Co3": (42, 120, 160),
}


def _bump(s: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """Flat-topped bump (1 at ``centre``, ~0 beyond ``1.6 × half_width``)."""
    return np.exp(-0.5 * ((s - centre) / max(half_width, 0.5)) ** 4)


def bilsky_index(depth: np.ndarray, x_sac: np.ndarray, x_cord: np.ndarray, free: np.ndarray,
                 x_sac_far: np.ndarray, cord_ra: np.ndarray) -> np.ndarray:
    """Bilsky grade index per cross-section from the tumour front depth and the sac/cord geometry.

    All arguments are depths (mm) from the canal wall the mass grows from: ``x_sac`` the near
    sac wall, ``x_cord`` the near cord surface, ``free`` the CSF depth behind the cord, ``x_sac_far``
    the far sac wall. Rules (Bilsky 2010): front in the epidural space only → 1a; front deforming
    the sac but short of the cord → 1b; front on the cord, cord displaced but not flattened → 1c;
    cord flattened to ≥ 55 % of its diameter (CSF still visible) → 2; flatter → 3 (CSF effaced).
    """
    grade = np.zeros(depth.shape, dtype=np.int8)
    has_cord = cord_ra > 0.5
    grade[depth > 0.05] = 1
    grade[depth > x_sac + 0.05] = 2
    touching = has_cord & (depth >= x_cord)
    grade[touching] = 3
    compressed = touching & (depth > x_cord + free + 1e-3)
    ratio = (x_sac_far - depth) / np.maximum(2.0 * cord_ra, 1e-3)
    grade[compressed & (ratio >= 0.55)] = 4
    grade[compressed & (ratio < 0.55)] = 5
    return grade


def build_tables(rng: np.random.Generator, seg: Segments, discs: Discs, subject: Subject,
                 pathology: SubjectPathology, frame: SpineFrame) -> Tables:
    """Evaluate every smoothly varying cross-section quantity on the frame's s samples."""
    s = frame.s
    n = len(seg.names)
    index = {name: i for i, name in enumerate(seg.names)}
    # Ownership: each segment owns s up to the middle of the disc below it.
    bounds = np.array([seg.top[1] - 3.0] + [discs.centre[k] for k in range(len(discs.names))])
    seg_owner = np.searchsorted(bounds, s).astype(np.intp)
    disc_bounds = 0.5 * (discs.centre[1:] + discs.centre[:-1])
    disc_owner = np.searchsorted(disc_bounds, s).astype(np.intp)
    knots_s = np.concatenate([[seg.top[i], seg.bottom[i]] for i in range(1, n)])
    knots_v = np.repeat(seg.shift[1:], 2)
    shift = np.interp(s, knots_s, knots_v)
    centres = seg.centre[1:]
    depth = np.interp(s, centres, seg.depth[1:])
    width = np.interp(s, centres, seg.width[1:])
    params = seg.params[1:]
    canal_ra = np.interp(s, centres, params[:, P_CANAL_A])
    canal_rl = np.interp(s, centres, params[:, P_CANAL_L])
    # Above C2 the canal widens into the foramen magnum and the posterior fossa.
    above = np.clip((seg.top[1] - s) / 30.0, 0.0, 1.0)
    canal_ra = canal_ra * (1 + 0.5 * above)
    canal_rl = canal_rl * (1 + 0.4 * above)
    canal_a = shift - depth / 2 - canal_ra
    sac_ra = np.interp(s, centres, params[:, P_SAC_A]) * (1 + 0.5 * above)
    sac_rl = np.interp(s, centres, params[:, P_SAC_L]) * (1 + 0.4 * above)
    sac_end = seg.centre[index["S2"]] + rng.uniform(-6, 6)
    taper = np.clip((sac_end - s) / 25.0, 0.0, 1.0)
    sac_ra, sac_rl = sac_ra * taper, sac_rl * taper
    lumbar_gap = np.where(seg.kind[seg_owner] >= LUMBAR, 0.8, 1.6)
    sac_a = canal_a + canal_ra - np.minimum(lumbar_gap, canal_ra - sac_ra) - sac_ra
    # Cord radii: cervical and lumbar enlargements, conus tapering to the tip near L1/L2.
    conus_tip = seg.bottom[index["L1"]] + subject.conus_offset_mm
    cord_knots = [
        (seg.centre[0] - 90, 10.0, 12.0), (seg.centre[0] - 40, 6.0, 8.0), (seg.centre[0], 4.2, 6.0),
        (seg.centre[index["C5"]], 4.0, 6.8), (seg.centre[index["T2"]], 3.3, 4.4), (seg.centre[index["T9"]], 3.0, 4.0),
        (seg.centre[index["T12"]], 3.5, 4.8), (conus_tip - 22, 3.3, 4.2), (conus_tip, 0.0, 0.0),
    ]
    cs, cra, crl = np.array(sorted(cord_knots)).T
    scale = subject.size_scale
    cord_ra = np.interp(s, cs, cra, right=0.0) * scale
    cord_rl = np.interp(s, cs, crl, right=0.0) * scale
    cord_ra = np.minimum(cord_ra, np.maximum(sac_ra - 1.0, 0.0))
    cord_rl = np.minimum(cord_rl, np.maximum(sac_rl - 1.5, 0.0))
    # Supine: the cord rests slightly dorsal in the sac.
    cord_a = np.maximum(sac_a - 0.15 * sac_ra, sac_a - sac_ra + cord_ra + 0.8)
    cord_a = np.minimum(cord_a, sac_a + sac_ra - cord_ra - 0.8)
    roots = np.clip((s - conus_tip + 5.0) / 10.0, 0.0, 1.0) * (sac_ra > 1.0)

    # Degenerative narrowing at each disc: bulge/osteophyte anteriorly, ligamentum flavum posteriorly,
    # lateral-recess (subarticular) hypertrophy, CSF effacement at grade 3.
    base_flavum = np.minimum(2.5 * scale, np.maximum(2 * canal_ra - 2 * sac_ra - lumbar_gap - 0.3, 0.5))
    flavum = base_flavum.copy()
    anterior_intrusion = np.zeros_like(s)
    effaced = np.zeros_like(s)
    recess_left = np.zeros_like(s)
    recess_right = np.zeros_like(s)
    reductions = ((0.0, 0.12), (0.25, 0.36), (0.45, 0.58), (0.68, 0.80))
    for k, disc in enumerate(discs.pathology):
        if disc is None:
            continue
        c = discs.centre[k]
        j = frame.index_of(np.array([c], dtype=np.float32))[0]
        reduction = rng.uniform(*reductions[disc.central_stenosis]) * 2 * sac_ra[j]
        bump = _bump(s, c, discs.height[k] / 2 + 2.5)
        front_gap = canal_ra[j] + canal_a[j] - (sac_a[j] + sac_ra[j])
        back_gap = (sac_a[j] - sac_ra[j]) - (canal_a[j] - canal_ra[j])
        anterior_intrusion = np.maximum(anterior_intrusion, (front_gap + 0.55 * reduction + disc.bulge_mm * 0.3) * bump)
        flavum = np.maximum(flavum, (back_gap + 0.45 * reduction) * bump)
        if disc.central_stenosis == 3:
            effaced = np.maximum(effaced, (bump > 0.5).astype(float))
        radius = {0: 0.0, 1: 2.2, 2: 3.6, 3: 5.0}
        recess_left = np.maximum(recess_left, radius[disc.subarticular_left] * scale * bump)
        recess_right = np.maximum(recess_right, radius[disc.subarticular_right] * scale * bump)

    # Epidural disease: tumour front depth per cross-section, and the cord it displaces/compresses.
    mass_depth = np.zeros_like(s)
    mass_anterior = np.ones_like(s, dtype=bool)
    mass_kappa = np.full_like(s, 0.05)
    for i, name in enumerate(seg.names):
        vertebra = pathology.vertebrae.get(name)
        if vertebra is None or vertebra.epidural_grade == "0":
            continue
        j = frame.index_of(np.array([seg.centre[i]], dtype=np.float32))[0]
        anterior = vertebra.epidural_anterior
        x_sac, x_cord, free, x_far = _depths(anterior, j, canal_a, canal_ra, sac_a, sac_ra, cord_a, cord_ra)
        grade = vertebra.epidural_grade
        if grade == "1a":
            target = max(x_sac * rng.uniform(0.75, 1.0), 0.6)
        elif grade == "1b":
            target = x_sac + rng.uniform(0.3, 0.7) * (x_cord - x_sac)
        elif grade == "1c":
            target = x_cord + rng.uniform(0.25, 0.7) * free
        elif grade == "2":
            target = x_far - rng.uniform(0.62, 0.85) * 2 * cord_ra[j]
        else:
            target = x_far - rng.uniform(0.3, 0.45) * 2 * cord_ra[j]
        h = seg.bottom[i] - seg.top[i]
        distance = np.abs(s - seg.centre[i]) - 0.3 * h
        profile = np.where(distance <= 0, 1.0, np.cos(np.clip(distance / (0.5 * h), 0, 1) * np.pi / 2) ** 2)
        stronger = target * profile > mass_depth
        mass_depth = np.where(stronger, target * profile, mass_depth)
        mass_anterior = np.where(stronger, anterior, mass_anterior)
        mass_kappa = np.where(stronger, 1.0 / (2.0 * (30.0 if grade == "1a" else rng.uniform(7, 12))), mass_kappa)
    x_sac, x_cord, free, x_far = _depths(mass_anterior, slice(None), canal_a, canal_ra, sac_a, sac_ra, cord_a, cord_ra)
    bilsky = bilsky_index(mass_depth, x_sac, x_cord, free, x_far, cord_ra)
    # Move / flatten the cord where the front reaches it.
    displacement = np.clip(mass_depth - x_cord, 0.0, np.maximum(free, 0.0)) * (bilsky >= 3)
    thickness = np.where(bilsky >= 4, x_far - mass_depth, 2 * cord_ra)
    new_near = np.where(bilsky >= 4, mass_depth, x_cord + displacement)
    direction = np.where(mass_anterior, -1.0, 1.0)  # a-direction the depth grows in
    wall = np.where(mass_anterior, canal_a + canal_ra, canal_a - canal_ra)
    flattened = bilsky >= 4
    cord_rl = np.where(flattened, np.minimum(cord_rl * np.sqrt(2 * cord_ra / np.maximum(thickness, 0.3)),
                                             np.where(bilsky == 4, sac_rl - 1.5, sac_rl)), cord_rl)
    cord_ra = np.where(flattened, thickness / 2, cord_ra)
    cord_a = np.where(bilsky >= 3, wall + direction * (new_near + cord_ra), cord_a)

    # Body outline, subcutaneous fat, trunk regions, rib cage.
    marks = [(seg.centre[index[name]], values) for name, values in _OUTLINE.items() if name in index]
    ms = np.array([m[0] for m in marks])
    post, ant, half = (np.array([m[1][k] for m in marks]) * scale for k in range(3))
    fat_scale = np.interp(s, [seg.centre[index["C3"]], seg.centre[index["T6"]], seg.centre[index["L3"]],
                              seg.centre[index["S3"]]], [0.55, 0.8, 1.0, 1.25])
    fat = np.maximum(subject.subcutaneous_fat_mm * fat_scale, 3.0)
    abdomen = np.interp(s, [seg.centre[index["T9"]], seg.centre[index["L3"]], seg.centre[index["S2"]]], [0.2, 1.0, 0.5])
    extra = fat - 8.0
    post_d = np.interp(s, ms, post) + extra
    ant_d = np.interp(s, ms, ant) + 1.3 * extra + subject.abdominal_girth_mm * abdomen
    half_w = np.interp(s, ms, half) + extra + 0.4 * subject.abdominal_girth_mm * abdomen
    body_a = (ant_d - post_d) / 2
    body_ra = (ant_d + post_d) / 2
    ribcage_post = -(depth / 2 + 2 * canal_ra + 9.0)
    ribcage_ant = ant_d - fat * 1.3 - 12.0
    ribcage_a = (ribcage_ant + ribcage_post) / 2
    ribcage_ra = (ribcage_ant - ribcage_post) / 2
    ribcage_rl = half_w - fat - 14.0
    f32 = np.float32
    return Tables(
        seg_owner=seg_owner, disc_owner=disc_owner, shift=shift.astype(f32), depth=depth.astype(f32),
        width=width.astype(f32), canal_a=canal_a.astype(f32), canal_ra=canal_ra.astype(f32),
        canal_rl=canal_rl.astype(f32), sac_a=sac_a.astype(f32), sac_ra=sac_ra.astype(f32),
        sac_rl=sac_rl.astype(f32), cord_a=cord_a.astype(f32), cord_ra=cord_ra.astype(f32),
        cord_rl=cord_rl.astype(f32), roots=roots.astype(f32), anterior_intrusion=anterior_intrusion.astype(f32),
        flavum=flavum.astype(f32), effaced=effaced.astype(f32), recess_left=recess_left.astype(f32),
        recess_right=recess_right.astype(f32), mass_depth=mass_depth.astype(f32), mass_anterior=mass_anterior,
        mass_kappa=mass_kappa.astype(f32), bilsky=bilsky, body_a=body_a.astype(f32), body_ra=body_ra.astype(f32),
        body_rl=half_w.astype(f32), fat=fat.astype(f32), ribcage_a=ribcage_a.astype(f32),
        ribcage_ra=ribcage_ra.astype(f32), ribcage_rl=ribcage_rl.astype(f32),
    )


def _depths(anterior: np.ndarray | bool, j: int | slice, canal_a: np.ndarray, canal_ra: np.ndarray,
            sac_a: np.ndarray, sac_ra: np.ndarray, cord_a: np.ndarray, cord_ra: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Depths from the mass's canal wall: near sac wall, near cord surface, CSF behind the cord, far sac wall."""
    ca, cr, sa, sr, ka, kr = canal_a[j], canal_ra[j], sac_a[j], sac_ra[j], cord_a[j], cord_ra[j]
    x_sac = np.where(anterior, (ca + cr) - (sa + sr), (sa - sr) - (ca - cr))
    x_cord = np.where(anterior, (ca + cr) - (ka + kr), (ka - kr) - (ca - cr))
    x_cord_far = np.where(anterior, (ca + cr) - (ka - kr), (ka + kr) - (ca - cr))
    x_far = np.where(anterior, (ca + cr) - (sa - sr), (sa + sr) - (ca - cr))
    return x_sac, x_cord, x_far - x_cord_far, x_far
