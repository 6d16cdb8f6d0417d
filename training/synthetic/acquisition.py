"""Image formation for the synthetic study generator: how a scanner turns the phantom into pixels.

Everything here works in scanner LPS millimetres. The phantom lives in its own frame; a
:class:`PatientPose` (table offset + small patient roll/pitch/yaw) maps between the two, so the same
phantom can lie anywhere in the scanner and every truth coordinate is reported where the images are.

MR stack formation (:func:`form_mr_stack`)
-----------------------------------------
1. Acquisition grid: the display field of view sampled at the *acquired* resolution (0.8–1.2 mm
   frequency, 1.0–1.35× coarser along the phase-encoding direction), never finer than the display.
2. Partial volume: every slice is rendered at ``n`` sub-planes spread over the slice thickness along
   the slice normal (``n = ceil(thickness / 2.5 mm)``: 1 for ≤2.5 mm, 2 up to 5 mm) and averaged
   (rectangular slice profile).
3. Artefacts (optional): phase wrap-around (``StackGrid.wrap_samples``: anatomy beyond the phase
   FOV edges folds onto the opposite side) and motion ghosts (1–2 copies at 3–10 % shifted along
   the phase direction).
4. Surface-coil bias: smooth multiplicative field, strongest at the posterior spine array and falling
   off anteriorly (e-fold length 70–180 mm, floor 0.25–0.55), modulated along z by the coil elements
   (±5–25 %). Applied as ``signal × bias``; 45 % of MR series are intensity-normalised by the vendor
   (:meth:`CoilBias.normalized`, 20–50 % of the field left).
5. Noise: complex Gaussian with σ = (95th percentile of the tissue signal) / SNR, SNR 8–45
   (DWI half), added to the acquired samples.
6. k-space zero-filling to the display matrix with a raw-data filter (apodization 0–0.5: from visible
   Gibbs ringing to slight blur), then the magnitude: Rician, spatially correlated noise as on
   real magnitude images.
7. Vendor scaling: the 99.5th percentile maps to 600–4000 (12-bit style) or 4000–30000 (16-bit style).

CT formation (:func:`form_ct_stack`): rendered in HU on a 0.9–1.2 mm grid (one plane per slice: CT
slices are ≤ 3 mm), correlated Gaussian noise 8–35 HU (×1.4 and sharper for bone kernels),
zero-fill interpolation to the 512² display matrix with a kernel-like window, clipped to
−1024…3071 HU so that the writer's RescaleIntercept −1024 reads back exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy import fft as sp_fft

from operators.core.geometry import VolumeGeometry

#: ``render(points_mm (N, 3)) -> (N, K) float32``: the phantom's signal for K contrasts at once
#: (``SpinePhantom.render_many``); points are in the phantom's frame.
RenderFn = Callable[[np.ndarray], np.ndarray]

#: Largest spacing (mm) of the sub-planes that integrate a slice's thickness (partial volume).
MR_SUB_STEP_MM = 2.5
CT_SUB_STEP_MM = 3.0  # CT slices (≤ 3 mm) have a narrow sensitivity profile: one plane each

#: Upper bound on points per phantom call (memory: N×3 float64 plus the phantom's temporaries).
_RENDER_CHUNK = 1_500_000


def rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation about LPS x, then y, then z by the given angles (degrees); returns a 3×3 matrix."""
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation (3×3) taking unit vector ``a`` onto unit vector ``b``.

    Built as frame-to-frame rotation ``[b, n, b×n] @ [a, n, a×n]ᵀ`` about the axis ``n = a×b``:
    it maps ``a`` onto ``b`` to rounding even when the two are nearly opposite, where the
    Rodrigues form divides by ``1 + a·b`` and loses all precision.
    """
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    if np.linalg.norm(axis) < 1e-12:
        # Parallel or opposite: any axis perpendicular to a gives the right turn (0° or 180°).
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])

    def frame(u: np.ndarray) -> np.ndarray:
        n = axis - (axis @ u) * u  # exactly perpendicular to u, whatever rounding did to the axis
        n = n / np.linalg.norm(n)
        return np.stack([u, n, np.cross(u, n)], axis=1)

    return frame(b) @ frame(a).T


@dataclass(frozen=True)
class PatientPose:
    """Rigid map phantom frame → scanner LPS: ``scanner = rotation @ phantom + offset_mm``."""

    rotation: np.ndarray
    offset_mm: np.ndarray

    def to_scanner(self, points: np.ndarray) -> np.ndarray:
        """Phantom-frame points ``(..., 3)`` → scanner LPS mm."""
        return np.asarray(points, dtype=float) @ self.rotation.T + self.offset_mm

    @property
    def scanner_to_phantom(self) -> np.ndarray:
        """4×4 homogeneous matrix of :meth:`to_phantom`."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.rotation.T
        matrix[:3, 3] = -self.rotation.T @ self.offset_mm
        return matrix

    def to_phantom(self, points: np.ndarray) -> np.ndarray:
        """Scanner LPS points ``(..., 3)`` → phantom frame mm."""
        return (np.asarray(points, dtype=float) - self.offset_mm) @ self.rotation

    def direction_to_scanner(self, vectors: np.ndarray) -> np.ndarray:
        """Rotate direction vectors ``(..., 3)`` (no translation)."""
        return np.asarray(vectors, dtype=float) @ self.rotation.T


@dataclass(frozen=True)
class CoilBias:
    """Posterior spine-array sensitivity: ``floor + (1-floor)·exp(-depth/decay)·(1 + a·cos(2πz/λ+φ))``."""

    coil_y_mm: float
    decay_mm: float
    floor: float
    ripple: float
    ripple_period_mm: float
    ripple_phase: float

    @classmethod
    def sample(cls, rng: np.random.Generator, spine_posterior_y_mm: float) -> "CoilBias":
        """A coil lying 40–90 mm behind the spinal canal (patient supine on the spine array)."""
        return cls(
            coil_y_mm=spine_posterior_y_mm + float(rng.uniform(40.0, 90.0)),
            decay_mm=float(rng.uniform(70.0, 180.0)),
            floor=float(rng.uniform(0.25, 0.55)),
            ripple=float(rng.uniform(0.05, 0.25)),
            ripple_period_mm=float(rng.uniform(120.0, 260.0)),
            ripple_phase=float(rng.uniform(0.0, 2.0 * math.pi)),
        )

    def normalized(self, residual: float) -> "CoilBias":
        """The field left after a vendor's intensity normalisation (Siemens Prescan Normalize, GE PURE,
        Philips CLEAR): falloff depth and ripple scaled by ``residual`` (0 = flat, 1 = untouched)."""
        return replace(self, floor=1.0 - (1.0 - self.floor) * residual, ripple=self.ripple * residual)

    def __call__(self, y_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        """Multiplicative gain at scanner positions given by their LPS y and z (broadcast together)."""
        depth = np.clip(self.coil_y_mm - y_mm, 0.0, None)
        falloff = self.floor + (1.0 - self.floor) * np.exp(-depth / self.decay_mm)
        ripple = 1.0 + self.ripple * np.cos(2.0 * math.pi * z_mm / self.ripple_period_mm + self.ripple_phase)
        return (falloff * ripple).astype(np.float32)

    def on_grid(self, grid: "StackGrid") -> np.ndarray:
        """Gain at every acquired sample of ``grid``, ``(S, rows_acq, cols_acq)`` float32."""
        r, c = _sample_indices(grid)
        k = np.arange(grid.geometry.shape[0], dtype=np.float32)
        a = grid.geometry.affine.astype(np.float32)
        y, z = (a[axis, 3] + k[:, None, None] * a[axis, 0] + r[None, :, None].astype(np.float32) * a[axis, 1]
                + c[None, None, :].astype(np.float32) * a[axis, 2] for axis in (1, 2))
        return self(y, z)


@dataclass(frozen=True)
class StackGrid:
    """Display geometry of one stack plus how it was acquired.

    Attributes:
        geometry: display voxel grid (what the DICOM files describe).
        slice_thickness_mm: nominal thickness (≤ slice spacing; the difference is the gap).
        acquired_shape: ``(rows, columns)`` actually sampled before interpolation to the display matrix.
        phase_axis: 1 when phase encoding runs down the columns (rows index), 2 along the rows.
        wrap_samples: phase-direction aliasing: anatomy up to this many acquired samples beyond each
            edge of the FOV folds onto the opposite side (0 = phase oversampling prevents wrap).
    """

    geometry: VolumeGeometry
    slice_thickness_mm: float
    acquired_shape: tuple[int, int]
    phase_axis: int
    wrap_samples: int = 0


def rescale_grid(grid: StackGrid, matrix: int) -> StackGrid:
    """``grid`` resampled in-plane so that its larger side has ``matrix`` pixels, same FOV and centre.

    The acquired (k-space) matrix is kept unless it would exceed the new display matrix: a scanner
    interpolates a 256 acquisition to 512 for display but never shows fewer pixels than it sampled.

    Args:
        grid: a sagittal (or any) stack grid; ``geometry.shape`` is ``(slices, rows, columns)``.
        matrix: pixels of the larger in-plane side, ≥ 2.
    """
    geometry = grid.geometry
    n_slices, rows, columns = geometry.shape
    scale = matrix / max(rows, columns)
    new_rows, new_columns = max(2, round(rows * scale)), max(2, round(columns * scale))
    affine = np.array(geometry.affine, dtype=float)
    # Same FOV (to within a pixel) with square pixels kept square; same centre: re-anchor the origin.
    centre = affine @ np.array([(n_slices - 1) / 2, (rows - 1) / 2, (columns - 1) / 2, 1.0])
    affine[:3, 1:3] /= scale
    half = np.array([(n_slices - 1) / 2, (new_rows - 1) / 2, (new_columns - 1) / 2])
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ half
    acquired = (min(grid.acquired_shape[0], new_rows), min(grid.acquired_shape[1], new_columns))
    return replace(grid, geometry=VolumeGeometry(affine, (n_slices, new_rows, new_columns)), acquired_shape=acquired)


def _sub_offsets(thickness_mm: float, slice_step_mm: float, max_step_mm: float, cap: int = 4) -> np.ndarray:
    """Slice-index offsets of the sub-planes that integrate one slice's thickness."""
    n = int(min(cap, max(1, math.ceil(thickness_mm / max_step_mm))))
    return ((np.arange(n) + 0.5) / n - 0.5) * thickness_mm / slice_step_mm


def _sample_indices(grid: StackGrid) -> tuple[np.ndarray, np.ndarray]:
    """Display-index coordinates of the acquired samples along rows and columns.

    Sample ``i`` sits at display index ``i · R / r_acq``: the alignment of k-space zero-filling, so
    :func:`fourier_resample` puts every acquired sample back exactly where it was rendered.
    """
    _, rows, cols = grid.geometry.shape
    ar, ac = grid.acquired_shape
    return np.arange(ar) * (rows / ar), np.arange(ac) * (cols / ac)


def acquisition_points(grid: StackGrid, to_frame: np.ndarray, max_sub_step_mm: float = MR_SUB_STEP_MM) -> np.ndarray:
    """Points of every acquired sample, shape ``(S, n_sub, rows_acq, cols_acq, 3)``; with
    ``grid.wrap_samples = m`` the phase axis is extended by ``m`` samples beyond each FOV edge.

    Args:
        grid: the stack.
        to_frame: 4×4 map from scanner LPS to the frame the points are wanted in (the phantom's
            frame, so no per-point transform is needed).
        max_sub_step_mm: sub-plane spacing limit for partial-volume averaging.
    """
    a = to_frame @ grid.geometry.affine
    step = float(grid.geometry.spacing_mm[0])
    offsets = _sub_offsets(grid.slice_thickness_mm, step, max_sub_step_mm)
    r, c = _sample_indices(grid)
    if grid.wrap_samples:
        m = grid.wrap_samples
        if grid.phase_axis == 1:
            r = np.concatenate([r[0] - (r[1] - r[0]) * np.arange(m, 0, -1), r, r[-1] + (r[1] - r[0]) * np.arange(1, m + 1)])
        else:
            c = np.concatenate([c[0] - (c[1] - c[0]) * np.arange(m, 0, -1), c, c[-1] + (c[1] - c[0]) * np.arange(1, m + 1)])
    k = np.arange(grid.geometry.shape[0])[:, None] + offsets[None, :]
    return (
        a[:3, 3]
        + k[:, :, None, None, None] * a[:3, 0]
        + r[None, None, :, None, None] * a[:3, 1]
        + c[None, None, None, :, None] * a[:3, 2]
    )


def render_points(render: RenderFn, points: np.ndarray, n_contrasts: int) -> np.ndarray:
    """Render points ``(..., 3)`` in chunks; returns float32 of shape ``points.shape[:-1] + (K,)``."""
    flat = points.reshape(-1, 3)
    out = np.empty((flat.shape[0], n_contrasts), dtype=np.float32)
    for start in range(0, flat.shape[0], _RENDER_CHUNK):
        out[start : start + _RENDER_CHUNK] = render(flat[start : start + _RENDER_CHUNK])
    return out.reshape(points.shape[:-1] + (n_contrasts,))


def render_acquired(render: RenderFn, n_contrasts: int, grid: StackGrid, to_frame: np.ndarray,
                    max_sub_step_mm: float = MR_SUB_STEP_MM) -> np.ndarray:
    """Render a stack on its acquisition grid with partial-volume averaging.

    Returns:
        ``(K, S, rows_acq, cols_acq)`` float32, one volume per contrast.
    """
    points = acquisition_points(grid, to_frame, max_sub_step_mm)
    signal = np.moveaxis(render_points(render, points, n_contrasts).mean(axis=1, dtype=np.float32), -1, 0)
    return _fold(signal, grid.wrap_samples, grid.phase_axis + 1) if grid.wrap_samples else signal


def _fold(signal: np.ndarray, margin: int, axis: int) -> np.ndarray:
    """Alias the ``margin`` extra samples at both ends of ``axis`` onto the opposite side of the FOV
    (the discrete Fourier sampling of the phase direction is periodic with the FOV)."""
    moved = np.moveaxis(signal, axis, -1)
    n = moved.shape[-1] - 2 * margin
    core = moved[..., margin : margin + n].copy()
    core[..., n - margin :] += moved[..., :margin]  # beyond the first edge lands at the far edge
    core[..., :margin] += moved[..., margin + n :]  # and beyond the far edge at the first
    return np.moveaxis(core, -1, axis)


def fourier_resample(image: np.ndarray, shape: tuple[int, int], apodization: float) -> np.ndarray:
    """Zero-fill interpolation of ``(S, ra, ca)`` (real or complex) to ``(S, R, C)`` complex64.

    This is how scanners reach the display matrix: the acquired k-space is padded with zeros. A
    Tukey-like window of strength ``apodization`` (0 = none, 1 = full Hann) tapers the k-space edge,
    trading ringing (Gibbs) for blur as vendors' raw-data filters and CT kernels do.
    """
    slices, ar, ac = image.shape
    rows, cols = shape
    kspace = sp_fft.fftshift(sp_fft.fft2(image.astype(np.complex64), axes=(1, 2)), axes=(1, 2))
    if apodization > 0:
        window = np.outer(_taper(ar, apodization), _taper(ac, apodization)).astype(np.float32)
        kspace *= window
    padded = np.zeros((slices, rows, cols), dtype=np.complex64)
    r0, c0 = rows // 2 - ar // 2, cols // 2 - ac // 2  # keep the DC sample at the fftshift centre
    padded[:, r0 : r0 + ar, c0 : c0 + ac] = kspace
    scale = (rows * cols) / (ar * ac)
    return (sp_fft.ifft2(sp_fft.ifftshift(padded, axes=(1, 2)), axes=(1, 2)) * scale).astype(np.complex64)


def _taper(n: int, strength: float) -> np.ndarray:
    """1-D k-space window: flat centre, cosine roll-off over the outer ``strength`` fraction."""
    x = np.abs(np.linspace(-1.0, 1.0, n))
    edge = 1.0 - strength
    window = np.ones(n)
    roll = x > edge
    window[roll] = 0.5 * (1.0 + np.cos(np.pi * (x[roll] - edge) / max(strength, 1e-6)))
    return window


def add_ghosts(image: np.ndarray, phase_axis: int, rng: np.random.Generator) -> np.ndarray:
    """Motion ghosts: 1–2 faint copies displaced along the phase-encoding axis (periodic motion)."""
    n = image.shape[phase_axis]
    ghosted = image.copy()
    shift = int(rng.integers(n // 8, n // 3))
    amplitude = float(rng.uniform(0.03, 0.10))
    for order in (1, 2)[: int(rng.integers(1, 3))]:
        for sign in (-1, 1):
            ghosted += amplitude / order * np.roll(image, sign * order * shift, axis=phase_axis)
    return ghosted


def noise_sigma(signal: np.ndarray, snr: float) -> float:
    """σ giving ``snr`` relative to the 95th percentile of the tissue (non-background) signal."""
    peak = float(signal.max())
    tissue = signal[signal > 0.05 * peak] if peak > 0 else signal
    reference = float(np.percentile(tissue, 95)) if tissue.size else 1.0
    return max(reference, 1e-3) / snr


def vendor_scale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale to a vendor-like stored range: p99.5 → 600–4000 (12-bit style) or 4000–30000 (16-bit)."""
    reference = float(np.percentile(image, 99.5)) or 1.0
    if rng.random() < 0.6:
        target, ceiling = float(rng.uniform(600.0, 4000.0)), 4095.0
    else:
        target, ceiling = float(rng.uniform(4000.0, 30000.0)), 65535.0
    return np.clip(image * (target / reference), 0.0, ceiling)


def form_mr_stack(
    signal: np.ndarray,
    grid: StackGrid,
    bias: CoilBias,
    rng: np.random.Generator,
    *,
    snr: float,
    ghosts: bool,
    apodization: float,
) -> np.ndarray:
    """Steps 3–6 of the module docstring for one stack; returns ``(S, R, C)`` float32 (unscaled).

    Args:
        signal: ``(S, rows_acq, cols_acq)`` rendered on the acquisition grid (:func:`render_acquired`).

    Noise is added to the complex acquired samples before zero-filling, so the displayed noise is
    spatially correlated and Rician exactly as on a scanner's magnitude images.
    """
    if ghosts:
        signal = add_ghosts(signal, grid.phase_axis, rng)
    signal = signal * bias.on_grid(grid)
    sigma = noise_sigma(signal, snr)
    noisy = np.empty(signal.shape, dtype=np.complex64)
    noisy.real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    noisy.imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    _, rows, cols = grid.geometry.shape
    return np.abs(fourier_resample(noisy, (rows, cols), apodization)).astype(np.float32)


def form_ct_stack(signal: np.ndarray, grid: StackGrid, rng: np.random.Generator, *, noise_hu: float,
                  sharp: bool) -> np.ndarray:
    """CT slices in HU ``(S, R, C)`` float32 with correlated noise, clipped to −1024…3071.

    Args:
        signal: ``(S, rows_acq, cols_acq)`` HU rendered on the acquisition grid.

    Bone kernels keep more high frequencies (less apodization: sharper edges with slight overshoot,
    grainier noise); soft kernels are smoother.
    """
    noise = rng.standard_normal(signal.shape, dtype=np.float32)
    _, rows, cols = grid.geometry.shape
    apodization = 0.3 if sharp else 0.8
    out = np.empty(grid.geometry.shape, dtype=np.float32)
    for start in range(0, signal.shape[0], 16):  # chunks bound the complex temporaries' memory
        part = slice(start, start + 16)
        smooth_noise = fourier_resample(noise[part], (rows, cols), apodization).real
        smooth_noise *= noise_hu / max(float(smooth_noise.std()), 1e-6)
        out[part] = fourier_resample(signal[part], (rows, cols), apodization).real + smooth_noise
    return np.clip(out, -1024.0, 3071.0)


def project_ct(render: RenderFn, grid: StackGrid, to_frame: np.ndarray, depth_mm: float, step_mm: float) -> np.ndarray:
    """A CT scout: line integrals of attenuation along the grid's normal, as HU-like values.

    Args:
        render: phantom in HU (points in the frame ``to_frame`` maps to).
        grid: single-slice display grid of the projection image (the detector plane).
        to_frame: 4×4 scanner LPS → render frame.
        depth_mm: path length integrated, centred on the grid plane.
        step_mm: sampling step along the rays.

    Returns:
        ``(1, R, C)`` float32 in −1024…3071: water-equivalent path length mapped onto the stored range
        so that the image looks like a scanner's topogram.
    """
    depths = np.arange(-depth_mm / 2, depth_mm / 2, step_mm)
    plane = acquisition_points(replace(grid, slice_thickness_mm=0.0), to_frame)[0, 0]
    normal = to_frame[:3, :3] @ grid.geometry.normal
    points = plane[None] + depths[:, None, None, None] * normal
    hu = render_points(render, points, 1)[..., 0]
    attenuation = np.clip((hu + 1000.0) / 1000.0, 0.0, None).sum(axis=0) * step_mm  # water-equivalent mm
    image = attenuation / max(float(attenuation.max()), 1e-6) * 3000.0 - 1000.0
    _, rows, cols = grid.geometry.shape
    return fourier_resample(image[None], (rows, cols), 0.5).real.clip(-1024.0, 3071.0).astype(np.float32)
