"""Volume extraction (:mod:`operators.core.volume_extraction`): where the extracted volumes sit in
patient space, whatever the anatomy's rotation and the scanner's planes and spacings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.volume_extraction import (
    AXIAL_SLAB_SHAPE,
    DISC_VOLUME_SHAPE,
    DiscFrame,
    SeriesVolume,
    axial_disc_slab,
    disc_frames,
    disc_frames_from_points,
    extract_disc_views,
    grids_may_overlap,
    sagittal_disc_volume,
    vertebra_grid,
    vertebra_volume,
)
from training.synthetic.dicom_writer import PatientStudy, write_series

BODY_DEPTH_MM = 22.0
BODY_HALF_HEIGHT_MM = 9.0
CENTROID_STEP_MM = 26.0  # centroid to centroid: body plus disc


@dataclass(frozen=True)
class Body:
    level: str
    centroid_mm: np.ndarray
    corners_mm: np.ndarray


def spine(levels: list[str], rotation: Rotation, origin_mm: np.ndarray) -> list[Body]:
    """Straight column of boxes, cranial first, in a frame rotated by ``rotation`` about ``origin_mm``:
    in the unrotated frame +z is superior, −y anterior, +x left (LPS)."""
    bodies = []
    for index, level in enumerate(levels):
        centre = np.array([0.0, 0.0, -index * CENTROID_STEP_MM])
        d, h = BODY_DEPTH_MM / 2, BODY_HALF_HEIGHT_MM
        corners = centre + np.array([[0, -d, h], [0, d, h], [0, d, -h], [0, -d, -h]])
        bodies.append(Body(level, rotation.apply(centre) + origin_mm, rotation.apply(corners) + origin_mm))
    return bodies


rotations = st.tuples(*[st.floats(-0.6, 0.6)] * 3).map(lambda v: Rotation.from_rotvec(v))
origins = st.tuples(*[st.floats(-80.0, 80.0)] * 3).map(np.array)


@given(rotation=rotations, origin=origins)
def test_disc_frame_follows_the_rotated_spine(rotation: Rotation, origin: np.ndarray) -> None:
    bodies = spine(["L3", "L4", "L5"], rotation, origin)
    frames = disc_frames(bodies)
    assert [f.level for f in frames] == ["L3/L4", "L4/L5"]
    frame = frames[1]
    np.testing.assert_allclose(frame.centre_mm, (bodies[1].centroid_mm + bodies[2].centroid_mm) / 2, atol=1e-9)
    np.testing.assert_allclose(frame.superior, rotation.apply([0, 0, 1]), atol=1e-9)
    np.testing.assert_allclose(frame.anterior, rotation.apply([0, -1, 0]), atol=1e-9)
    np.testing.assert_allclose(frame.left, rotation.apply([1, 0, 0]), atol=1e-9)
    assert frame.width_mm == 2 * frame.height_mm
    assert abs(frame.width_mm - 2 * BODY_DEPTH_MM) < 1e-9


def test_discs_only_between_adjacent_levels() -> None:
    identity = Rotation.identity()
    gap = spine(["L1", "L2", "L4", "L5"], identity, np.zeros(3))
    assert [f.level for f in disc_frames(gap)] == ["L1/L2", "L4/L5"]
    transitional = spine(["L5", "L6", "S1"], identity, np.zeros(3))
    assert [f.level for f in disc_frames(transitional)] == ["L5/L6", "L6/S1"]
    shuffled = spine(["T12", "L1", "L2"], identity, np.zeros(3))[::-1]
    assert [f.level for f in disc_frames(shuffled)] == ["T12/L1", "L1/L2"]


def test_frames_from_points_point_up_the_spine() -> None:
    frames = disc_frames_from_points({"L5/S1": [0, 5, -40], "L4/L5": [0, 0, 0], "L3/L4": [0, 0, 40]})
    assert [f.level for f in frames] == ["L3/L4", "L4/L5", "L5/S1"]
    for frame in frames:
        assert frame.superior[2] > 0.99 and frame.anterior[1] < -0.99
        np.testing.assert_allclose(frame.left, np.cross(frame.superior, frame.anterior), atol=1e-12)
    moved = disc_frames_from_points({"L4/L5": [0, 20, 0], "L3/L4": [0, 20, 40]}, behind_disc_mm=20.0)
    np.testing.assert_allclose(moved[1].centre_mm, [0, 0, 0], atol=1e-9)


def source_around(centre_mm: np.ndarray, rotation: Rotation, spacing_mm: tuple[float, float, float], extent_mm: float) -> VolumeGeometry:
    """A stack of ``extent_mm`` cube centred on ``centre_mm``, axes rotated, given spacings."""
    shape = tuple(int(np.ceil(extent_mm / s)) for s in spacing_mm)
    axes = rotation.as_matrix() * np.asarray(spacing_mm)
    affine = np.eye(4)
    affine[:3, :3] = axes
    affine[:3, 3] = centre_mm - axes @ ((np.asarray(shape, dtype=float) - 1) / 2)
    return VolumeGeometry(affine, shape)


def paint_disc(geometry: VolumeGeometry, frame: DiscFrame, half_axes_mm: tuple[float, float, float]) -> np.ndarray:
    """Background 100 with a bright ellipsoid (1000) in the disc frame: half axes along left,
    superior, anterior."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in geometry.shape], indexing="ij"), axis=-1)
    offset = geometry.index_to_lps(grid) - frame.centre_mm
    local = np.stack([offset @ frame.left, offset @ frame.superior, offset @ frame.anterior], axis=-1)
    inside = np.sum((local / np.asarray(half_axes_mm)) ** 2, axis=-1) <= 1.0
    return np.where(inside, 1000.0, 100.0).astype(np.float32)


def bright_centre_of_mass(pixels: np.ndarray) -> np.ndarray:
    weights = np.clip(pixels - 0.5, 0.0, None)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in pixels.shape], indexing="ij"), axis=-1)
    return (grid * weights[..., None]).sum(axis=(0, 1, 2)) / weights.sum()


@settings(max_examples=25, deadline=None)
@given(
    anatomy=rotations, scanner=rotations, origin=origins,
    spacing=st.tuples(st.floats(2.0, 4.5), st.floats(0.8, 1.6), st.floats(0.8, 1.6)),
)
def test_sagittal_volume_is_centred_on_the_disc_and_horizontal(
    anatomy: Rotation, scanner: Rotation, origin: np.ndarray, spacing: tuple[float, float, float]
) -> None:
    frame = disc_frames(spine(["L4", "L5"], anatomy, origin))[0]
    geometry = source_around(frame.centre_mm, scanner, spacing, extent_mm=70.0)
    source = SeriesVolume("1.2.3", "sag_t2", paint_disc(geometry, frame, (12.0, 3.0, 14.0)), geometry)
    volume = sagittal_disc_volume(source, frame)
    assert volume.pixels.shape == DISC_VOLUME_SHAPE and volume.inside_fraction == 1.0
    centre_index = (np.asarray(DISC_VOLUME_SHAPE, dtype=float) - 1) / 2
    np.testing.assert_allclose(volume.geometry.index_to_lps(centre_index), frame.centre_mm, atol=1e-9)
    # The painted disc comes back centred (to half a source voxel) and lying along the columns.
    found_mm = volume.geometry.index_to_lps(bright_centre_of_mass(volume.pixels))
    assert np.linalg.norm(found_mm - frame.centre_mm) <= 0.5 * max(spacing)
    mid = volume.pixels[DISC_VOLUME_SHAPE[0] // 2] > 0.5
    rows, columns = np.nonzero(mid)
    assert np.ptp(columns) * volume.geometry.spacing_mm[2] > 3 * np.ptp(rows) * volume.geometry.spacing_mm[1]


def test_vertebra_volume_is_centred_on_the_body() -> None:
    body = spine(["L2", "L3", "L4"], Rotation.from_rotvec([0.3, 0.1, -0.2]), np.array([5.0, 20.0, -30.0]))[1]
    geometry = source_around(body.centroid_mm, Rotation.identity(), (3.0, 1.0, 1.0), 80.0)
    shape = (9, 112, 112)
    volume = vertebra_volume(SeriesVolume("1.2.3", "sag_t1", np.ones(geometry.shape, np.float32), geometry), body, shape)
    np.testing.assert_allclose(volume.geometry.index_to_lps((np.asarray(shape) - 1) / 2), body.centroid_mm, atol=1e-9)
    assert volume.pixels.shape == shape and volume.inside_fraction == 1.0


@settings(max_examples=60, deadline=None)
@given(offset_mm=st.tuples(*[st.floats(-90.0, 90.0)] * 3), angles=st.tuples(*[st.floats(-0.6, 0.6)] * 3))
def test_a_stack_said_to_miss_the_body_holds_none_of_it(
    offset_mm: tuple[float, float, float], angles: tuple[float, float, float]
) -> None:
    # The cancer stage skips a stack on this test alone: it must never skip one that holds any of
    # the body, and must skip a stack far away.
    body = spine(["L2", "L3", "L4"], Rotation.from_rotvec(angles), np.array([5.0, 20.0, -30.0]))[1]
    geometry = source_around(body.centroid_mm + np.asarray(offset_mm), Rotation.identity(), (3.0, 1.0, 1.0), 60.0)
    exact = vertebra_volume(SeriesVolume("1.2.3", "sag_t1", np.ones(geometry.shape, np.float32), geometry), body).inside_fraction
    overlaps = grids_may_overlap(geometry, vertebra_grid(body))
    assert overlaps or exact == 0.0
    if np.max(np.abs(offset_mm)) > 85.0:
        assert not overlaps


def axial_stack(centre_mm: np.ndarray, tilt_deg: float, n_slices: int, step_mm: float = 4.0) -> VolumeGeometry:
    """Axial stack (rows anterior→posterior, columns right→left) tilted about the left axis."""
    tilt = Rotation.from_euler("x", tilt_deg, degrees=True)
    column, row, normal = tilt.apply([1.0, 0.0, 0.0]), tilt.apply([0.0, 1.0, 0.0]), tilt.apply([0.0, 0.0, 1.0])
    pixel_mm, n_pixels = 0.8, 160
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = normal * step_mm, row * pixel_mm, column * pixel_mm
    affine[:3, 3] = centre_mm - affine[:3, :3] @ ((np.array([n_slices, n_pixels, n_pixels]) - 1) / 2)
    return VolumeGeometry(affine, (n_slices, n_pixels, n_pixels))


@given(tilt=st.floats(-30.0, 30.0), lordosis=st.floats(-15.0, 15.0))
@settings(max_examples=20, deadline=None)
def test_axial_slab_found_through_an_angled_stack(tilt: float, lordosis: float) -> None:
    frame = disc_frames(spine(["L4", "L5"], Rotation.from_euler("x", lordosis, degrees=True), np.zeros(3)))[0]
    geometry = axial_stack(frame.centre_mm, tilt, n_slices=5)
    slab = axial_disc_slab([SeriesVolume("1.2.9", "ax_t2", np.ones(geometry.shape, np.float32), geometry)], frame)
    assert slab is not None and slab.pixels.shape == AXIAL_SLAB_SHAPE
    assert abs(slab.angle_to_disc_deg - abs(tilt - lordosis)) < 0.2
    assert slab.slices_used >= 3
    # The middle slice is the stack's plane through the disc centre.
    middle = slab.geometry.index_to_lps((np.asarray(AXIAL_SLAB_SHAPE, dtype=float) - 1) / 2)
    assert abs((middle - frame.centre_mm) @ geometry.normal) < 1e-6


def test_best_aligned_stack_wins_and_missed_levels_are_named() -> None:
    bodies = spine(["L3", "L4", "L5", "S1"], Rotation.from_euler("x", 20, degrees=True), np.zeros(3))
    frames = disc_frames(bodies)
    l4_l5 = frames[1]
    sagittal = source_around(l4_l5.centre_mm, Rotation.identity(), (3.0, 1.0, 1.0), 140.0)
    contiguous = axial_stack(l4_l5.centre_mm, 0.0, n_slices=5)
    angled = axial_stack(l4_l5.centre_mm, 20.0, n_slices=5)
    sources = [
        SeriesVolume("1.2.1", "sag_t2", np.ones(sagittal.shape, np.float32), sagittal),
        SeriesVolume("1.2.2", "ax_t2", np.ones(contiguous.shape, np.float32), contiguous),
        SeriesVolume("1.2.2", "ax_t2", np.full(angled.shape, 2.0, np.float32), angled),
    ]
    views, warnings = extract_disc_views(bodies, sources)
    by_level = {v.frame.level: v for v in views}
    assert set(by_level) == {"L3/L4", "L4/L5", "L5/S1"}
    assert by_level["L4/L5"].axial is not None and by_level["L4/L5"].axial.angle_to_disc_deg < 0.5
    missed = sorted(w.message.split(":")[0] for w in warnings if w.code == "AXIAL_MISSES_LEVEL")
    assert missed == ["disc L3/L4", "disc L5/S1"]
    assert by_level["L3/L4"].axial is None and set(by_level["L3/L4"].sagittal) == {"sag_t2"}


def test_views_partly_outside_the_series_are_dropped_with_a_warning() -> None:
    bodies = spine(["L4", "L5", "S1"], Rotation.identity(), np.zeros(3))
    frames = disc_frames(bodies)
    # The series ends at the L5/S1 disc centre: that disc's volume is half outside.
    top = frames[0].centre_mm + np.array([0, 0, 40.0])
    geometry = VolumeGeometry.from_dicom([0, 1, 0, 0, 0, -1], top + np.array([-20.0, -60.0, 0.0]), [1.0, 1.0],
                                         (11, 40 + int(frames[0].centre_mm[2] - frames[1].centre_mm[2]), 120), [4.0, 0.0, 0.0])
    views, warnings = extract_disc_views(bodies, [SeriesVolume("1.2.1", "sag_t1", np.ones(geometry.shape, np.float32), geometry)])
    assert [v.frame.level for v in views] == ["L4/L5"]
    codes = {w.code: w.message for w in warnings}
    assert "L5/S1" in codes["DISC_PARTLY_OUTSIDE_VIEW"] and "L5/S1" in codes["NO_SAGITTAL_FOR_DISC"]
    assert "NO_AXIAL_SERIES" in codes


def test_disc_volume_from_real_dicom_round_trip(tmp_path: Path) -> None:
    """An oblique sagittal series written as DICOM and read back by the app's reader."""
    frame = disc_frames(spine(["L4", "L5"], Rotation.from_rotvec([0.25, 0.0, 0.1]), np.array([3.0, 10.0, 50.0])))[0]
    geometry = source_around(frame.centre_mm, Rotation.from_rotvec([0.05, 0.0, 0.2]) * Rotation.from_euler("y", 90, degrees=True),
                             (3.5, 1.0, 1.0), 70.0)
    write_series(paint_disc(geometry, frame, (12.0, 3.0, 14.0)), geometry, tmp_path / "sag", modality="MR",
                 study=PatientStudy(), series_description="t2_tse_sag")
    scan = scan_study_folder(tmp_path)
    stack = scan.series[0].stacks[0].load()
    assert stack.geometry is not None
    volume = sagittal_disc_volume(SeriesVolume(scan.series[0].series_instance_uid, "sag_t2", stack.pixels, stack.geometry), frame)
    found_mm = volume.geometry.index_to_lps(bright_centre_of_mass(volume.pixels))
    assert np.linalg.norm(found_mm - frame.centre_mm) <= 0.5 * 3.5
