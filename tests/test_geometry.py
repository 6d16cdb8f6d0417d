"""Patient geometry: array index ↔ LPS mm must be exact for any DICOM orientation."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from operators.core.geometry import (
    VolumeGeometry,
    inside_source,
    obliquity_degrees,
    orientation_vectors,
    plane_of_normal,
    resample_volume,
)
from training.synthetic.dicom_writer import PatientStudy, write_series


def _rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix from intrinsic x, y, z angles in degrees."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: A true sagittal slice: rows run head→feet, columns anterior→posterior, normal along ±x.
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)

angles = st.tuples(*(st.floats(-180, 180, allow_nan=False) for _ in range(3)))
spacings = st.tuples(st.floats(0.2, 6.0), st.floats(0.2, 6.0), st.floats(0.2, 6.0))
positions = st.tuples(*(st.floats(-500, 500, allow_nan=False) for _ in range(3)))


def _geometry(rotation_deg, spacing, origin, shape=(12, 64, 48)) -> VolumeGeometry:
    rotation = _rotation(rotation_deg)
    iop = np.concatenate([rotation[:, 0], rotation[:, 1]])
    normal = np.cross(rotation[:, 0], rotation[:, 1])
    return VolumeGeometry.from_dicom(iop, origin, spacing[1:], shape, normal * spacing[0])


@settings(max_examples=200, deadline=None)
@given(angles, spacings, positions, st.tuples(*(st.floats(-20, 80) for _ in range(3))))
def test_index_lps_round_trip(rotation_deg, spacing, origin, index):
    geometry = _geometry(rotation_deg, spacing, origin)
    point = geometry.index_to_lps(index)
    np.testing.assert_allclose(geometry.lps_to_index(point), index, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(angles, spacings, positions)
def test_spacing_and_distances_are_physical(rotation_deg, spacing, origin):
    geometry = _geometry(rotation_deg, spacing, origin)
    np.testing.assert_allclose(geometry.spacing_mm, spacing, rtol=1e-9)
    # One step along each array axis moves exactly that axis' spacing in patient space.
    start = geometry.index_to_lps([1.0, 2.0, 3.0])
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = 1.0
        moved = geometry.index_to_lps(np.array([1.0, 2.0, 3.0]) + step)
        assert np.linalg.norm(moved - start) == pytest.approx(spacing[axis], rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(angles, spacings, positions)
def test_contains_matches_index_bounds(rotation_deg, spacing, origin):
    geometry = _geometry(rotation_deg, spacing, origin)
    inside = geometry.index_to_lps([[0, 0, 0], [11, 63, 47], [5.5, 30.2, 10.0]])
    outside = geometry.index_to_lps([[-1, 0, 0], [0, 64.6, 0], [3, 3, -0.6]])
    assert geometry.contains(inside).all()
    assert not geometry.contains(outside).any()


def test_sagittal_slice_matches_dicom_definition():
    """(0020,0032)/(0020,0037) worked example: pixel (row r, column c) = IPP + c·Δc·X + r·Δr·Y."""
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, [-20.0, -150.0, 200.0], [0.5, 0.8], (5, 400, 300), 4.0)
    # Row 10, column 20 of slice 0: 20 columns posterior (+y), 10 rows down (-z).
    np.testing.assert_allclose(geometry.index_to_lps([0, 10, 20]), [-20.0, -150.0 + 20 * 0.8, 200.0 - 10 * 0.5])
    assert geometry.plane == "sagittal"
    np.testing.assert_allclose(geometry.normal, [-1.0, 0.0, 0.0], atol=1e-12)


def test_geometry_survives_a_dicom_round_trip(tmp_path):
    """Write an oblique series with pydicom, rebuild the geometry from the tags, get the same affine."""
    geometry = _geometry((14.0, -9.0, 95.0), (3.3, 0.7, 0.9), (12.0, -80.0, 35.0), shape=(6, 40, 30))
    pixels = np.random.default_rng(1).uniform(0, 1000, geometry.shape)
    paths = write_series(pixels, geometry, tmp_path, modality="MR", study=PatientStudy())
    headers = [pydicom.dcmread(path) for path in paths]
    first = np.array(headers[0].ImagePositionPatient, dtype=float)
    second = np.array(headers[1].ImagePositionPatient, dtype=float)
    rebuilt = VolumeGeometry.from_dicom(
        headers[0].ImageOrientationPatient, first, headers[0].PixelSpacing, geometry.shape, second - first
    )
    np.testing.assert_allclose(rebuilt.affine, geometry.affine, atol=1e-5)


@pytest.mark.parametrize(
    ("normal", "plane"),
    [((1, 0, 0), "sagittal"), ((0, -1, 0), "coronal"), ((0, 0, 1), "axial"), ((0.9, 0.3, 0.2), "sagittal")],
)
def test_plane_of_normal(normal, plane):
    assert plane_of_normal(normal) == plane


def test_obliquity_degrees():
    assert obliquity_degrees((0, 0, 1)) == pytest.approx(0.0)
    tilted = (0.0, np.sin(np.radians(20)), np.cos(np.radians(20)))
    assert obliquity_degrees(tilted) == pytest.approx(20.0)


@pytest.mark.parametrize(
    "bad_iop",
    [(1, 0, 0, 1, 0, 0), (0, 0, 0, 0, 1, 0), (1, 0, 0, 0, 1), (1, 0, float("nan"), 0, 1, 0)],
)
def test_invalid_orientation_is_rejected(bad_iop):
    with pytest.raises(ValueError):
        orientation_vectors(bad_iop)


def test_singular_geometry_is_rejected():
    with pytest.raises(ValueError):
        VolumeGeometry.from_dicom(SAGITTAL_IOP, [0, 0, 0], [0.5, 0.5], (3, 10, 10), [0.0, 1.0, 0.0])
    with pytest.raises(ValueError):
        VolumeGeometry.from_dicom(SAGITTAL_IOP, [0, 0, 0], [0.0, 0.5], (3, 10, 10), 3.0)


@settings(max_examples=30, deadline=None)
@given(rotation=st.tuples(*[st.floats(-np.pi, np.pi)] * 3), slice_mm=st.floats(1.0, 6.0), pixel_mm=st.floats(0.3, 1.2),
       origin=st.tuples(*[st.floats(-300.0, 300.0)] * 3))
def test_resampling_a_stack_onto_its_own_images_returns_every_image_including_the_edges(
    rotation: tuple[float, float, float], slice_mm: float, pixel_mm: float, origin: tuple[float, float, float]
) -> None:
    # Oblique axial stacks put their own image planes at slice index −1e-13 through the affine
    # round trip; the first image must not come back as fill.
    axes = Rotation.from_euler("xyz", rotation).as_matrix() * np.array([slice_mm, pixel_mm, pixel_mm])
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = axes, origin
    geometry = VolumeGeometry(affine, (4, 12, 10))
    pixels = np.random.default_rng(0).random(geometry.shape).astype(np.float32) + 1.0
    for k in range(geometry.shape[0]):
        image = affine.copy()
        image[:3, 3] = geometry.index_to_lps(np.array([k, 0.0, 0.0]))
        np.testing.assert_allclose(resample_volume(pixels, geometry, VolumeGeometry(image, (1, 12, 10)))[0], pixels[k], atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(angles, spacings, positions, angles, st.floats(0.3, 3.0), st.tuples(*(st.floats(-40, 40) for _ in range(3))),
       st.booleans())
def test_inside_source_is_where_resampling_reads_the_source(
    rotation_deg, spacing, origin, target_rotation_deg, target_step_mm, shift_mm, on_source_planes
) -> None:
    # A source of values >= 1 resampled with fill 0: a sample is non-zero exactly where it was read
    # from the source. Targets: oblique grids straddling the source's edges, or (as the axial slab
    # and ROI grids are) grids lying in the source's own slice planes, whose edge samples sit on
    # whole source indices.
    geometry = _geometry(rotation_deg, spacing, origin, shape=(5, 9, 7))
    if on_source_planes:
        affine = geometry.affine.copy()
        affine[:3, 3] = geometry.index_to_lps(np.array([-1.0, -2.0, 3.0]))
        target = VolumeGeometry(affine, (7, 12, 5))
    else:
        affine = np.eye(4)
        affine[:3, :3] = _rotation(target_rotation_deg) * target_step_mm
        affine[:3, 3] = geometry.centre_mm + np.asarray(shift_mm) - affine[:3, :3] @ np.array([3.0, 4.0, 4.0])
        target = VolumeGeometry(affine, (7, 9, 9))
    source = np.random.default_rng(1).random(geometry.shape).astype(np.float32) + 1.0
    read = resample_volume(source, geometry, target, order=1, fill=0.0) > 0.0
    np.testing.assert_array_equal(inside_source(geometry, target), read)
