"""DICOM patient geometry: array index ↔ patient LPS millimetres.

This module is the one home for coordinates in spine-map. Every coordinate the app writes is a
DICOM patient coordinate (LPS: +x towards the patient's Left, +y Posterior, +z Superior/head)
in millimetres.

Array convention
----------------
A volume is a numpy array ``pixels[slice, row, column]`` (shape ``(S, R, C)``), slices sorted
along the slice normal (not by file name or InstanceNumber). Its :class:`VolumeGeometry` holds a
4×4 ``affine`` that maps *array indices in that same order* to LPS mm::

    [x, y, z, 1]ᵀ = affine @ [slice, row, column, 1]ᵀ

so ``affine[:3, 0]`` is the step between slices, ``affine[:3, 1]`` the step between rows
(DICOM column direction × PixelSpacing[0]) and ``affine[:3, 2]`` the step between columns
(DICOM row direction × PixelSpacing[1]); ``affine[:3, 3]`` is ImagePositionPatient of slice 0.
Indices are continuous: integer values are pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

Plane = Literal["sagittal", "coronal", "axial"]

#: The patient axis a plane's normal points along (LPS index): sagittal ⟂ x, coronal ⟂ y, axial ⟂ z.
_PLANE_OF_AXIS: tuple[Plane, Plane, Plane] = ("sagittal", "coronal", "axial")


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError("direction vector has zero length")
    return vector / norm


def orientation_vectors(image_orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ImageOrientationPatient into unit vectors.

    Args:
        image_orientation: the 6 values of (0020,0037).

    Returns:
        ``(row_direction, column_direction, normal)``: the direction of increasing column index
        along a row, the direction of increasing row index down a column, and their cross product
        (the slice normal), each a unit 3-vector in LPS.

    Raises:
        ValueError: if there are not 6 finite values or the two directions are degenerate/parallel.
    """
    values = np.asarray(image_orientation, dtype=float)
    if values.shape != (6,) or not np.all(np.isfinite(values)):
        raise ValueError("ImageOrientationPatient must hold 6 finite numbers")
    row_direction = _unit(values[:3])
    column_direction = _unit(values[3:])
    if abs(float(row_direction @ column_direction)) > 1e-2:
        raise ValueError("ImageOrientationPatient row and column directions are not orthogonal")
    normal = _unit(np.cross(row_direction, column_direction))
    # Re-orthogonalise the column direction so that the affine is exactly orthogonal.
    column_direction = np.cross(normal, row_direction)
    return row_direction, column_direction, normal


def plane_of_normal(normal: Sequence[float]) -> Plane:
    """The anatomical plane whose normal is closest to ``normal`` (sagittal, coronal or axial)."""
    return _PLANE_OF_AXIS[int(np.argmax(np.abs(np.asarray(normal, dtype=float))))]


def plane_crossing(polyline_mm: np.ndarray, point_mm: np.ndarray, normal: np.ndarray) -> np.ndarray | None:
    """Where the ``(N, 3)`` polyline crosses the plane through ``point_mm`` with ``normal`` (LPS mm):
    of several crossings the one nearest ``point_mm``; ``None`` when it does not reach the plane."""
    side = (np.asarray(polyline_mm, dtype=float) - point_mm) @ normal
    best: tuple[float, np.ndarray] | None = None
    for i in range(len(side) - 1):
        if side[i] == side[i + 1] == 0 or side[i] * side[i + 1] > 0:
            continue  # a segment in the plane, or one on one side of it
        t = side[i] / (side[i] - side[i + 1]) if side[i] != side[i + 1] else 0.0
        crossing = polyline_mm[i] + t * (polyline_mm[i + 1] - polyline_mm[i])
        distance = float(np.linalg.norm(crossing - point_mm))
        if best is None or distance < best[0]:
            best = (distance, crossing)
    return None if best is None else best[1]


def obliquity_degrees(normal: Sequence[float]) -> float:
    """Angle in degrees between ``normal`` and the nearest patient axis (0 for a true plane)."""
    unit = _unit(np.asarray(normal, dtype=float))
    return float(np.degrees(np.arccos(np.clip(np.max(np.abs(unit)), -1.0, 1.0))))


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a ``(S, R, C)`` voxel array sits in patient space.

    Attributes:
        affine: 4×4 float array mapping ``[slice, row, column, 1]`` to ``[x, y, z, 1]`` in LPS mm.
        shape: ``(slices, rows, columns)`` of the array this geometry describes.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        affine = np.array(self.affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError("affine must be a finite 4x4 matrix")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise ValueError("affine is singular (zero spacing or coplanar axes)")
        affine.setflags(write=False)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    @classmethod
    def from_dicom(
        cls,
        image_orientation: Sequence[float],
        first_position: Sequence[float],
        pixel_spacing: Sequence[float],
        shape: tuple[int, int, int],
        slice_step: Sequence[float] | float,
    ) -> "VolumeGeometry":
        """Build the geometry of a stack of DICOM slices.

        Args:
            image_orientation: ImageOrientationPatient (6 values), shared by all slices.
            first_position: ImagePositionPatient of slice 0 (LPS mm).
            pixel_spacing: PixelSpacing ``(between rows, between columns)`` in mm.
            shape: ``(slices, rows, columns)``.
            slice_step: either the LPS vector (mm) from one slice's position to the next, or a
                scalar spacing in mm along the normal (used for single slices, where the step is
                the slice thickness).
        """
        row_direction, column_direction, normal = orientation_vectors(image_orientation)
        spacing = np.asarray(pixel_spacing, dtype=float)
        if spacing.shape != (2,) or not np.all(spacing > 0):
            raise ValueError("PixelSpacing must hold 2 positive numbers")
        step = np.asarray(slice_step, dtype=float)
        step_vector = normal * float(step) if step.ndim == 0 else step
        affine = np.eye(4)
        affine[:3, 0] = step_vector
        affine[:3, 1] = column_direction * spacing[0]
        affine[:3, 2] = row_direction * spacing[1]
        affine[:3, 3] = np.asarray(first_position, dtype=float)
        return cls(affine=affine, shape=shape)

    # -- derived properties -------------------------------------------------------------------
    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel spacing ``(between slices, between rows, between columns)`` in mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (row direction × column direction) in LPS."""
        return _unit(np.cross(self.affine[:3, 2], self.affine[:3, 1]))

    @property
    def plane(self) -> Plane:
        """Anatomical plane of the slices."""
        return plane_of_normal(self.normal)

    @property
    def centre_mm(self) -> np.ndarray:
        """LPS position of the volume's centre."""
        return self.index_to_lps((np.asarray(self.shape, dtype=float) - 1.0) / 2.0)

    # -- mapping ------------------------------------------------------------------------------
    def index_to_lps(self, indices: np.ndarray | Sequence[float]) -> np.ndarray:
        """Map array indices ``(..., 3)`` in ``(slice, row, column)`` order to LPS mm ``(..., 3)``."""
        points = np.asarray(indices, dtype=float)
        return points @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, points_mm: np.ndarray | Sequence[float]) -> np.ndarray:
        """Map LPS mm ``(..., 3)`` to continuous array indices ``(..., 3)`` (slice, row, column)."""
        points = np.asarray(points_mm, dtype=float)
        return (points - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    def contains(self, points_mm: np.ndarray | Sequence[float], margin_voxels: float = 0.5) -> np.ndarray:
        """Whether each LPS point lies inside the voxel grid (within ``margin_voxels`` of its edge)."""
        indices = self.lps_to_index(points_mm)
        upper = np.asarray(self.shape, dtype=float) - 1.0 + margin_voxels
        return np.all((indices >= -margin_voxels) & (indices <= upper), axis=-1)

    def slice_positions(self) -> np.ndarray:
        """ImagePositionPatient of every slice, shape ``(S, 3)``."""
        k = np.arange(self.shape[0], dtype=float)
        return self.affine[:3, 3] + k[:, None] * self.affine[:3, 0]


#: Index-space round-off (voxels) that :func:`resample_volume` treats as exact.
_SNAP_VOXELS = 1e-6


def _source_from_target(geometry: VolumeGeometry, target: VolumeGeometry) -> np.ndarray:
    """``(4, 4)`` map from ``target`` indices to ``geometry`` indices (through LPS)."""
    source_from_target = np.linalg.inv(geometry.affine) @ target.affine
    # Snap round-off to whole voxels: a grid in a stack's own slice plane (an axial image, its ROI)
    # maps to slice index −1e-13 rather than 0 through an oblique affine, and scipy's constant mode
    # gives the fill value to anything beyond the edge, so the first image came back blank.
    return np.where(np.abs(source_from_target - np.round(source_from_target)) < _SNAP_VOXELS,
                    np.round(source_from_target), source_from_target)


def resample_volume(
    pixels: np.ndarray, geometry: VolumeGeometry, target: VolumeGeometry, order: int = 1, fill: float = 0.0
) -> np.ndarray:
    """Resample ``pixels`` (laid out by ``geometry``) onto the grid of ``target``, shape ``target.shape``.

    Both geometries must share one frame of reference. Points outside the source (see
    :func:`inside_source`) get ``fill``.
    """
    # target index → LPS → source index is one affine map: feed it to scipy directly.
    source_from_target = _source_from_target(geometry, target)
    return ndimage.affine_transform(
        np.asarray(pixels, dtype=np.float32), source_from_target[:3, :3], source_from_target[:3, 3],
        output_shape=target.shape, order=order, mode="constant", cval=fill,
    )


def inside_source(geometry: VolumeGeometry, target: VolumeGeometry) -> np.ndarray:
    """``target.shape`` bool: which samples of :func:`resample_volume` onto ``target`` come from
    the source rather than the fill value.

    scipy's ``constant`` mode interpolates only between source voxels, so a sample is inside when
    its source index lies in ``[0, n - 1]`` on every axis. Computed from the index map, at a
    fraction of the cost of resampling a volume of ones.
    """
    source_from_target = _source_from_target(geometry, target)
    indices = np.indices(target.shape, dtype=np.float64).reshape(3, -1)
    source = source_from_target[:3, :3] @ indices + source_from_target[:3, 3:]
    limits = np.asarray(geometry.shape, dtype=np.float64)[:, None] - 1.0
    return np.all((source >= 0.0) & (source <= limits), axis=0).reshape(target.shape)


def sagittal_grid(geometry: VolumeGeometry, half_width_mm: float, slice_step_mm: float, pixel_mm: float) -> VolumeGeometry:
    """A true-sagittal grid through the middle of ``geometry``'s volume (e.g. to reformat an axial CT).

    Slices step along patient left (+x) across ``±half_width_mm`` of the volume's centre; rows run
    head → feet (−z) and columns anterior → posterior (+y), like a stored sagittal series, covering
    the volume's full extent in y and z at ``pixel_mm``.
    """
    corners = geometry.index_to_lps(
        np.array([[i, j, k] for i in (0, geometry.shape[0] - 1) for j in (0, geometry.shape[1] - 1) for k in (0, geometry.shape[2] - 1)],
                 dtype=float)
    )
    low, high = corners.min(axis=0), corners.max(axis=0)
    centre_x = float(geometry.centre_mm[0])
    n_slices = int(np.floor(2 * half_width_mm / slice_step_mm)) + 1
    n_rows = int(np.floor((high[2] - low[2]) / pixel_mm)) + 1
    n_cols = int(np.floor((high[1] - low[1]) / pixel_mm)) + 1
    affine = np.eye(4)
    affine[:3, 0] = (slice_step_mm, 0.0, 0.0)
    affine[:3, 1] = (0.0, 0.0, -pixel_mm)
    affine[:3, 2] = (0.0, pixel_mm, 0.0)
    affine[:3, 3] = (centre_x - half_width_mm, low[1], high[2])
    return VolumeGeometry(affine, (n_slices, n_rows, n_cols))
