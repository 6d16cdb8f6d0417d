"""Vertebra detection core: detector grid, tiling, target encoding <-> decoding, tracking, fusion.

The central property: whatever :func:`render_targets` draws (the training target), :func:`decode_slice`
recovers exactly, in the original pixels of the slice, through the detector grid and through tiling
with median merging. The DICOM test ties the pixel conventions to patient LPS millimetres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.levels import LABELLER_CLASSES, VERTEBRA_CORNERS
from operators.core.vertebra_detection import (
    CENTROID_CHANNEL,
    CORNER_CHANNELS,
    DETECTOR_MM_PER_PX,
    MAX_TILE_PX,
    N_OUTPUT_CHANNELS,
    RADIUS_FACTOR,
    SIGMA_FACTOR,
    SIZE_MULTIPLE,
    VECTOR_CHANNELS,
    VECTOR_SCALE_PX,
    BRIDGED_SLICES,
    SliceGrid,
    SliceQuad,
    Vertebra3D,
    decode_slice,
    far_from_column,
    fuse_series,
    joined_per_series,
    lateral_sweep,
    merge_tiles,
    network_inputs,
    normalise_intensity,
    off_column,
    quad_iou,
    quad_sigma_radius,
    render_targets,
    resample_to_grid,
    slice_grid,
    squeezed_between_bodies,
    tile_origins,
    tile_shape,
    touching_neighbours,
    track_across_slices,
    vector_mask,
)
from operators.core.vertebra_pipeline import without_sacral_segments
from training.synthetic.dicom_writer import PatientStudy, write_series

STUDY = PatientStudy(patient_name="TEST^DETECT", patient_id="DET-1", patient_birth_date="19600101", accession_number="ACC-DET")
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run head -> foot, columns anterior -> posterior
IDENTITY_GRID = SliceGrid(1.0, 1.0, (0, 0))  # shape unused by decode_slice


def spine_quads(
    n: int,
    start: tuple[float, float],
    height: float,
    depth: float,
    disc: float,
    angle: float = 0.0,
    anterior_sign: float = -1.0,
) -> list[np.ndarray]:
    """``n`` rectangular vertebral bodies stacked caudally from ``start`` (row, col) of the top one's
    superior endplate centre: ``(5, 2)`` arrays, VERTEBRA_CORNERS order then the centroid.

    ``angle`` tilts the column (radians from the row axis); ``anterior_sign`` -1 puts anterior
    towards smaller columns (the usual sagittal display), +1 mirrors it.
    """
    caudal = np.array([np.cos(angle), np.sin(angle)])
    anterior = anterior_sign * np.array([-caudal[1], caudal[0]])
    quads = []
    for i in range(n):
        centre = np.asarray(start, dtype=float) + caudal * (i * (height + disc) + height / 2)
        sup, inf = centre - caudal * height / 2, centre + caudal * height / 2
        ant, post = anterior * depth / 2, -anterior * depth / 2
        quads.append(np.array([sup + ant, sup + post, inf + post, inf + ant, centre]))
    return quads


def decoded_points(quads: list[SliceQuad]) -> np.ndarray:
    """``(n, 5, 2)``: corners then centroid of each decoded quad (original px)."""
    return np.array([np.vstack([q.corners_px, q.centroid_px]) for q in quads]).reshape(-1, 5, 2)


def sort_by_centroid_row(points: list[np.ndarray]) -> np.ndarray:
    return np.array(sorted(points, key=lambda p: p[4, 0])).reshape(-1, 5, 2)


# --------------------------------------------------------------------------------------------------
# Constants, intensity, grid
# --------------------------------------------------------------------------------------------------
def test_channel_layout() -> None:
    assert len(VERTEBRA_CORNERS) == len(CORNER_CHANNELS) == 4
    channels = [*CORNER_CHANNELS, CENTROID_CHANNEL, *VECTOR_CHANNELS]
    assert sorted(channels) == list(range(N_OUTPUT_CHANNELS)) == list(range(13))
    assert VECTOR_CHANNELS[0] == 5 and VECTOR_SCALE_PX == 32.0 and MAX_TILE_PX % SIZE_MULTIPLE == 0


@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (-1024.0, 3000.0)])  # MR-like, CT-like
def test_normalise_intensity_maps_percentiles(offset: float, scale: float) -> None:
    rng = np.random.default_rng(1)
    pixels = offset + scale * rng.random((4, 30, 30))
    low, high = np.percentile(pixels, (1.0, 99.5))
    out = normalise_intensity(pixels)
    assert out.dtype == np.float32 and out.shape == pixels.shape
    np.testing.assert_allclose(out, np.clip((pixels - low) / (high - low), -0.5, 2.0), atol=1e-5)
    spiky = pixels.copy()
    spiky[0, 0, :3] = offset + 100 * scale  # rare bright outliers are clipped, not used as the scale
    assert normalise_intensity(spiky).max() == pytest.approx(2.0)
    assert not normalise_intensity(np.full((2, 5, 5), 7.0)).any()


@given(
    row_spacing=st.floats(0.3, 3.0),
    col_spacing=st.floats(0.3, 3.0),
    rows=st.integers(1, 1024),
    cols=st.integers(1, 1024),
    points=st.lists(st.tuples(st.floats(-50, 900), st.floats(-50, 900)), min_size=1, max_size=5),
)
@settings(max_examples=60, deadline=None)
def test_slice_grid_maps_both_ways_and_stays_inside(
    row_spacing: float, col_spacing: float, rows: int, cols: int, points: list[tuple[float, float]]
) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL, (0, 0, 0), (row_spacing, col_spacing), (3, rows, cols), 4.0)
    grid = slice_grid(geometry, rows, cols)
    assert grid.scale_row == pytest.approx(DETECTOR_MM_PER_PX / row_spacing)
    assert grid.scale_col == pytest.approx(DETECTOR_MM_PER_PX / col_spacing)
    rc = np.array(points)
    np.testing.assert_allclose(grid.to_original(grid.from_original(rc)), rc, atol=1e-9)
    last = grid.to_original(np.array(grid.shape) - 1.0)
    assert np.all(last <= np.array([rows, cols]) - 1 + 1e-6)  # every detector px samples inside
    assert np.all(last + [grid.scale_row, grid.scale_col] > np.array([rows, cols]) - 1)  # and no px is lost


def test_resample_to_grid_puts_a_dot_where_the_grid_says() -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL, (0, 0, 0), (0.5, 0.75), (2, 240, 200), 4.0)
    grid = slice_grid(geometry, 240, 200)
    assert (grid.scale_row, grid.scale_col, grid.shape) == (3.0, 2.0, (80, 100))
    slices = np.zeros((2, 240, 200), dtype=np.float32)
    slices[1, 117:124, 58:63] = 1.0  # centred on original (120, 60)
    out = resample_to_grid(slices, grid)
    assert out.shape == (2, 80, 100) and out.dtype == np.float32 and not out[0].any()
    peak = np.unravel_index(np.argmax(out[1]), out.shape[1:])
    np.testing.assert_allclose(peak, grid.from_original(np.array([120.0, 60.0])))
    ramp = np.broadcast_to(np.arange(240, dtype=np.float32)[:, None], (1, 240, 200))
    # A linear ramp survives anti-aliasing and interpolation: detector row r' reads original row 3 r'.
    np.testing.assert_allclose(resample_to_grid(ramp, grid)[0, 5:-5, 50], 3.0 * np.arange(80)[5:-5], atol=1e-3)


# --------------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------------
@given(height=st.integers(1, 2000), width=st.integers(1, 1500))
@settings(max_examples=150, deadline=None)
def test_tiles_cover_the_grid_with_40_percent_overlap(height: int, width: int) -> None:
    origins = tile_origins((height, width))
    h, w = tile_shape((height, width))
    assert h % SIZE_MULTIPLE == 0 and w % SIZE_MULTIPLE == 0 and h <= MAX_TILE_PX and w <= MAX_TILE_PX
    if height <= MAX_TILE_PX and width <= MAX_TILE_PX:
        assert origins == [(0, 0)] and h >= height and w >= width
    covered = np.zeros((height, width), dtype=int)
    for r, c in origins:
        assert r >= 0 and c >= 0 and (r + h <= height or r == 0) and (c + w <= width or c == 0)
        covered[r : r + h, c : c + w] += 1
    assert covered.min() >= 1
    for axis, size in ((0, h), (1, w)):
        starts = sorted({o[axis] for o in origins})
        assert all(b - a <= 0.6 * size for a, b in zip(starts, starts[1:]))


def test_tiling_and_median_merge_reproduce_the_whole_slice() -> None:
    shape = (700, 230)  # a whole-spine grid: 1050 mm x 345 mm at 1.5 mm/px
    rng = np.random.default_rng(3)
    slices = rng.random((2, *shape)).astype(np.float32)
    batch, origins = network_inputs(slices)
    h, w = tile_shape(shape)
    assert (h, w) == (384, 256) and origins == [(0, 0), (158, 0), (316, 0)]
    assert batch.shape == (2 * len(origins), 1, h, w) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1 * 3 + 2, 0, :, :230], slices[1, 316:700])  # slice 1, tile 2
    assert not batch[:, :, :, 230:].any()  # zero padding on the right
    # A "network" that only looks at each pixel reproduces the whole-slice answer after merging.
    whole = np.stack([np.sin(slices), np.cos(slices)], axis=1)
    merged = merge_tiles(np.concatenate([np.sin(batch), np.cos(batch)], axis=1), origins, shape)
    np.testing.assert_allclose(merged, whole, atol=1e-6)
    # Where three tiles overlap, the median ignores one tile that disagrees.
    outputs = np.concatenate([np.sin(batch), np.cos(batch)], axis=1)
    outputs[1::3] += 5.0  # the middle tile of every slice is wrong
    merged = merge_tiles(outputs, origins, shape)
    np.testing.assert_allclose(merged[:, :, 316:384], whole[:, :, 316:384], atol=1e-6)
    np.testing.assert_allclose(merged[:, :, :158], whole[:, :, :158], atol=1e-6)


def test_two_dimensional_tiling_merges_by_median() -> None:
    shape = (700, 500)  # tiled along both axes: up to 6 tiles cover one pixel
    slices = np.random.default_rng(4).random((1, *shape)).astype(np.float32)
    batch, origins = network_inputs(slices)
    assert origins == [(r, c) for r in (0, 158, 316) for c in (0, 116)]
    outputs = np.concatenate([batch, 2.0 * batch], axis=1)
    outputs[3] -= 7.0  # one wrong tile among the 6 covering rows 316-384, cols 116-384 ...
    outputs[5] += 7.0  # ... and one wrong the other way: the median of the 6 is still right
    merged = merge_tiles(outputs, origins, shape)
    np.testing.assert_allclose(merged[0, :, 316:384, 116:384], np.stack([slices[0], 2 * slices[0]])[:, 316:384, 116:384], atol=1e-6)


def test_single_tile_is_padded_and_cropped_back() -> None:
    slices = np.ones((3, 200, 150), dtype=np.float32)
    batch, origins = network_inputs(slices)
    assert origins == [(0, 0)] and batch.shape == (3, 1, 224, 160)
    assert batch[:, :, :200, :150].all() and not batch[:, :, 200:].any() and not batch[:, :, :, 150:].any()
    np.testing.assert_array_equal(merge_tiles(batch, origins, (200, 150)), slices[:, None])


# --------------------------------------------------------------------------------------------------
# Encoder <-> decoder
# --------------------------------------------------------------------------------------------------
def test_render_targets_channels() -> None:
    quads = spine_quads(3, (20.0, 60.0), height=20.0, depth=30.0, disc=6.0)
    shape = (120, 120)
    targets = render_targets(quads, shape)
    mask = vector_mask(quads, shape)
    assert targets.shape == (13, *shape) and targets.dtype == np.float32 and mask.shape == (4, *shape)
    sigma, radius = quad_sigma_radius(quads[0])
    assert sigma == pytest.approx(SIGMA_FACTOR * np.sqrt(600.0)) and radius == pytest.approx(RADIUS_FACTOR * np.sqrt(600.0))
    for k, channel in enumerate((*CORNER_CHANNELS, CENTROID_CHANNEL)):
        for quad in quads:
            r, c = np.round(quad[k]).astype(int)
            assert targets[channel, r, c] == pytest.approx(1.0)  # landmarks here are on pixel centres
    assert targets[:5].max() <= 1.0 and targets[:5].min() >= 0.0
    for k in range(4):
        rows, cols = np.nonzero(mask[k])
        vectors = targets[VECTOR_CHANNELS[2 * k] : VECTOR_CHANNELS[2 * k] + 2, rows, cols].T * VECTOR_SCALE_PX
        owner = np.argmin([np.hypot(rows - q[k, 0], cols - q[k, 1]) for q in quads], axis=0)
        centroids = np.array([quads[i][4] for i in owner])
        np.testing.assert_allclose(np.column_stack([rows, cols]) + vectors, centroids, atol=1e-4)  # arrows hit
        assert np.hypot(rows - np.array([quads[i][k, 0] for i in owner]), cols - np.array([quads[i][k, 1] for i in owner])).max() <= radius
        assert not targets[VECTOR_CHANNELS[2 * k] : VECTOR_CHANNELS[2 * k] + 2][:, ~mask[k]].any()


@given(
    n=st.integers(1, 8),
    height=st.floats(9.0, 30.0),
    depth_ratio=st.floats(1.0, 1.7),
    disc=st.floats(2.0, 8.0),
    angle=st.floats(-0.6, 0.6),
    anterior_sign=st.sampled_from([-1.0, 1.0]),
    offset=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    scales=st.tuples(st.floats(0.5, 4.0), st.floats(0.5, 4.0)),
)
@settings(max_examples=80, deadline=None)
def test_render_decode_round_trip(
    n: int,
    height: float,
    depth_ratio: float,
    disc: float,
    angle: float,
    anterior_sign: float,
    offset: tuple[float, float],
    scales: tuple[float, float],
) -> None:
    quads = spine_quads(n, (25.0 + offset[0], 220.0 + offset[1]), height, height * depth_ratio, disc, angle, anterior_sign)
    shape = (int(max(q[:, 0].max() for q in quads)) + 15, int(max(q[:, 1].max() for q in quads)) + 15)
    grid = SliceGrid(scales[0], scales[1], shape)
    decoded = decode_slice(render_targets(quads, shape), grid, slice_index=4)
    assert len(decoded) == n and all(q.slice_index == 4 for q in decoded)
    truth = grid.to_original(sort_by_centroid_row(quads))
    tolerance = 1e-3 * max(scales)  # 1/1000 detector px
    np.testing.assert_allclose(decoded_points(decoded), truth, atol=tolerance)
    assert all(0.75 < q.score <= 1.0 for q in decoded)


def test_round_trip_through_tiles_of_a_whole_spine() -> None:
    shape = (700, 230)
    quads = spine_quads(24, (10.0, 110.0), height=18.0, depth=26.0, disc=6.0, angle=0.1)
    batch, origins = network_inputs(np.zeros((1, *shape), dtype=np.float32))
    h, w = batch.shape[2:]
    # Each tile's "network output" is the target rendered in the tile's own coordinates.
    tile_outputs = np.stack([render_targets([q - np.array(o) for q in quads], (h, w)) for o in origins])
    merged = merge_tiles(tile_outputs, origins, shape)
    np.testing.assert_allclose(merged[0], render_targets(quads, shape), atol=1e-4)  # float32 rounding
    decoded = decode_slice(merged[0], SliceGrid(1.0, 1.0, shape), 0)
    assert len(decoded) == 24
    np.testing.assert_allclose(decoded_points(decoded), sort_by_centroid_row(quads), atol=1e-3)


def test_decoder_drops_what_does_not_form_a_quad() -> None:
    quads = spine_quads(3, (20.0, 60.0), height=20.0, depth=30.0, disc=6.0)
    targets = render_targets(quads, (120, 120))
    targets[CENTROID_CHANNEL] = np.maximum(targets[CENTROID_CHANNEL], render_targets([quads[0] + [0, 45]], (120, 120))[CENTROID_CHANNEL])
    decoded = decode_slice(targets, IDENTITY_GRID, 0)  # a lone centroid without corners pointing at it
    np.testing.assert_allclose(decoded_points(decoded), np.array(quads), atol=1e-3)
    # The middle body's inferior-posterior arrows point nowhere (zero vectors): it loses its corner.
    k = 2
    r, c = np.round(quads[1][k]).astype(int)
    targets[VECTOR_CHANNELS[2 * k] : VECTOR_CHANNELS[2 * k] + 2, r - 5 : r + 6, c - 5 : c + 6] = 0.0
    decoded = decode_slice(targets, IDENTITY_GRID, 0)
    np.testing.assert_allclose(decoded_points(decoded), np.array([quads[0], quads[2]]), atol=1e-3)
    # Arrows that miss by more than half their length are rejected: shift the centroid heatmap.
    shifted = render_targets(quads, (120, 120))
    shifted[CENTROID_CHANNEL] = np.roll(shifted[CENTROID_CHANNEL], 12, axis=1)  # miss 12 > 18 / 2
    assert decode_slice(shifted, IDENTITY_GRID, 0) == []
    assert decode_slice(np.zeros((13, 50, 50), dtype=np.float32), IDENTITY_GRID, 0) == []
    with pytest.raises(ValueError):
        decode_slice(np.zeros((5, 50, 50), dtype=np.float32), IDENTITY_GRID, 0)


def test_a_corner_belongs_to_the_centroid_it_points_closest_to() -> None:
    quads = spine_quads(2, (20.0, 60.0), height=20.0, depth=30.0, disc=6.0)
    targets = render_targets(quads, (100, 120))
    # A duplicate centroid 7 px beside the upper one: every upper arrow is within half its length
    # (18 / 2 px) of both, but each corner goes to the centroid it hits, so no second quad appears.
    duplicate = render_targets([quads[0] + [0.0, 7.0]], (100, 120))[CENTROID_CHANNEL]
    targets[CENTROID_CHANNEL] = np.maximum(targets[CENTROID_CHANNEL], duplicate)
    decoded = decode_slice(targets, IDENTITY_GRID, 0)
    np.testing.assert_allclose(decoded_points(decoded), np.array(quads), atol=1e-3)


def test_decode_survives_noisy_network_output() -> None:
    # Speed is measured by benchmarks/, not here; this checks noise does not split or drop bodies.
    quads = spine_quads(14, (10.0, 120.0), height=20.0, depth=28.0, disc=5.0, angle=0.15)
    rng = np.random.default_rng(0)
    output = render_targets(quads, (384, 256)) + rng.normal(0.0, 0.02, (13, 384, 256)).astype(np.float32)
    decoded = decode_slice(output, SliceGrid(1.0, 1.0, (384, 256)), 0)
    assert len(decoded) == 14
    np.testing.assert_allclose(decoded_points(decoded), np.array(quads), atol=1.0)


# --------------------------------------------------------------------------------------------------
# Quad IoU
# --------------------------------------------------------------------------------------------------
def rectangle(centre: tuple[float, float], size: tuple[float, float], angle: float) -> np.ndarray:
    u = np.array([np.cos(angle), np.sin(angle)])
    v = np.array([-u[1], u[0]])
    c = np.asarray(centre)
    a, b = size[0] / 2, size[1] / 2
    return np.array([c - a * u - b * v, c + a * u - b * v, c + a * u + b * v, c - a * u + b * v])


def _shoelace_area(quad: np.ndarray) -> float:
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(float(x @ np.roll(y, -1) - y @ np.roll(x, -1)))


def raster_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU with the intersection counted on a fine grid of sample points over the overlap of the two
    bounding boxes (both quads convex, counter-clockwise) and the union from the exact areas. The
    grid step is 1/200 of the shortest side (at most 0.02), so unit-sized quads are sampled as
    finely as large ones."""
    sides = [float(np.linalg.norm(q - p)) for quad in (a, b) for p, q in zip(quad, np.roll(quad, -1, axis=0))]
    step = min(0.02, min(sides) / 200)
    lo = np.maximum(a.min(0), b.min(0))
    hi = np.minimum(a.max(0), b.max(0))
    if np.any(hi <= lo):
        return 0.0
    x, y = np.meshgrid(np.arange(lo[0] + step / 2, hi[0], step), np.arange(lo[1] + step / 2, hi[1], step), indexing="ij")

    def inside(quad: np.ndarray) -> np.ndarray:
        result = np.ones(x.shape, dtype=bool)
        for p, q in zip(quad, np.roll(quad, -1, axis=0)):
            result &= (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0]) >= 0
        return result

    intersection = float((inside(a) & inside(b)).sum()) * step * step
    return intersection / (_shoelace_area(a) + _shoelace_area(b) - intersection)


def test_quad_iou_known_values() -> None:
    square = np.array([[0.0, 0.0], [0.0, 2.0], [2.0, 2.0], [2.0, 0.0]])
    assert quad_iou(square, square) == pytest.approx(1.0)
    assert quad_iou(square, square + [1.0, 0.0]) == pytest.approx(1 / 3)
    assert quad_iou(square, square + [2.5, 0.0]) == 0.0
    assert quad_iou(square, square[::-1]) == pytest.approx(1.0)  # winding does not matter
    assert quad_iou(square, np.zeros((4, 2))) == 0.0
    bow_tie = square[[0, 2, 1, 3]]  # self-intersecting input -> its convex hull (the square)
    assert quad_iou(square, bow_tie) == pytest.approx(1.0)


@given(
    a=st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.floats(1, 8), st.floats(1, 8), st.floats(0, np.pi)),
    b=st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.floats(1, 8), st.floats(1, 8), st.floats(0, np.pi)),
    shift=st.integers(0, 3),
)
@settings(max_examples=40, deadline=None)
def test_quad_iou_matches_rasterised_area(a: tuple, b: tuple, shift: int) -> None:
    qa = rectangle(a[:2], a[2:4], a[4])
    qb = rectangle(b[:2], b[2:4], b[4])
    iou = quad_iou(qa, np.roll(qb, shift, axis=0))
    assert 0.0 <= iou <= 1.0
    assert iou == pytest.approx(quad_iou(qb[::-1], qa))  # symmetric, any winding
    assert iou == pytest.approx(raster_iou(qa, qb), abs=0.01)


# --------------------------------------------------------------------------------------------------
# Tracking and fusion
# --------------------------------------------------------------------------------------------------
def slice_quad(slice_index: int, quad: np.ndarray, score: float = 0.9) -> SliceQuad:
    return SliceQuad(slice_index, quad[4].copy(), quad[:4].copy(), score)


def test_tracking_links_slices_and_bridges_one_missed_slice() -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL, (-20.0, -60.0, 80.0), (1.0, 1.0), (12, 200, 200), 4.0)
    upper, lower = spine_quads(2, (40.0, 80.0), height=25.0, depth=35.0, disc=8.0)

    def section(s: int) -> np.ndarray:  # the body drifts a little and is largest in slice 4
        return upper[4] + 0.3 * (s - 5) + (upper - upper[4]) * (1.0 - 0.03 * abs(s - 4))

    quads = [slice_quad(s, section(s), 0.5 + 0.05 * s) for s in (2, 3, 4, 6, 7, 8)]  # 5 missed
    quads += [slice_quad(s, lower) for s in (1, 2)] + [slice_quad(s, lower) for s in (5, 6)]  # 3, 4 missed
    quads.append(slice_quad(10, upper + [0.0, 100.0]))  # elsewhere: its own single-slice vertebra
    vertebrae = track_across_slices(quads[::-1], geometry, "1.2.3")
    assert sorted([q.slice_index for q in v.slice_quads] for v in vertebrae) == [[1, 2], [2, 3, 4, 6, 7, 8], [5, 6], [10]]
    assert all(v.series_instance_uid == "1.2.3" for v in vertebrae)
    assert [v.centroid_mm[2] for v in vertebrae] == sorted(v.centroid_mm[2] for v in vertebrae)  # caudal first
    (chain,) = [v for v in vertebrae if len(v.slice_quads) == 6]
    scores = np.array([q.score for q in chain.slice_quads])
    points = np.array([[q.slice_index, *q.centroid_px] for q in chain.slice_quads])
    np.testing.assert_allclose(chain.centroid_mm, (scores @ geometry.index_to_lps(points)) / scores.sum())
    assert chain.detection_score == pytest.approx(scores.mean())
    np.testing.assert_allclose(chain.corners_mm, geometry.index_to_lps(np.column_stack([[4] * 4, section(4)[:4]])))
    assert chain.height_mm == pytest.approx(25.0)  # 1 mm pixels
    assert track_across_slices([], geometry, "1.2.3") == []


def test_the_fragments_a_track_split_into_are_joined_per_series() -> None:
    """A body missed on two slices in a row is two tracks of one series; joined, it is one detection
    over all seven slices, centred on them, while another series' single detection is kept as is."""
    geometry = VolumeGeometry.from_dicom(SAGITTAL, (-20.0, -60.0, 80.0), (1.0, 1.0), (12, 200, 200), 4.0)
    (quad,) = spine_quads(1, (40.0, 80.0), height=25.0, depth=35.0, disc=8.0)
    quads = [slice_quad(s, quad + [0.0, 0.2 * s], 0.5 + 0.05 * s) for s in (2, 3, 4, 7, 8, 9, 10)]  # 5, 6 missed
    fragments = track_across_slices(quads, geometry, "t2")
    assert len(fragments) == 2
    other = track_across_slices([slice_quad(5, quad)], geometry, "t1")[0]
    joined, kept = joined_per_series([fragments[0], other, fragments[1]], {"t2": geometry, "t1": geometry})
    assert kept is other
    assert [q.slice_index for q in joined.slice_quads] == [2, 3, 4, 7, 8, 9, 10]
    scores = np.array([q.score for q in quads])
    points = np.array([[q.slice_index, *q.centroid_px] for q in quads])
    np.testing.assert_allclose(joined.centroid_mm, scores @ geometry.index_to_lps(points) / scores.sum())
    assert joined.detection_score == pytest.approx(scores.mean())
    assert joined_per_series([other], {"t1": geometry}) == [other]


def test_tracking_prefers_the_best_overlap() -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL, (0.0, 0.0, 0.0), (1.0, 1.0), (3, 100, 100), 3.0)
    (quad,) = spine_quads(1, (20.0, 50.0), height=20.0, depth=30.0, disc=5.0)
    quads = [slice_quad(0, quad), slice_quad(1, quad + [0.0, 8.0]), slice_quad(1, quad + [0.0, 2.0])]
    vertebrae = track_across_slices(quads, geometry, "u")
    assert len(vertebrae) == 2
    linked = next(v for v in vertebrae if len(v.slice_quads) == 2)
    np.testing.assert_allclose(linked.slice_quads[1].centroid_px, quad[4] + [0.0, 2.0])


def _swept(has_bodies: list[bool]) -> list[list[int]]:
    return list(lateral_sweep(len(has_bodies), lambda index: has_bodies[index]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_the_lateral_sweep_visits_every_slice_a_track_could_reach(has_bodies: list[bool]) -> None:
    """Every slice linked to the visited ones through runs of at most BRIDGED_SLICES empty slices is
    visited (so tracking finds the same bodies); a slice is skipped only behind a longer empty run."""
    batches = _swept(has_bodies)
    visited = [index for batch in batches for index in batch]
    n = len(has_bodies)
    assert sorted(set(visited)) == sorted(visited) and all(0 <= index < n for index in visited)
    centre = (n - 1) // 2
    assert batches[0] == [s for s in (centre - 1, centre, centre + 1) if 0 <= s < n]
    assert all(len(batch) <= 2 for batch in batches[1:])
    if not any(has_bodies[index] for index in visited):
        assert sorted(visited) == list(range(n))
    low, high = min(visited), max(visited)
    assert visited and sorted(visited) == list(range(low, high + 1))  # one contiguous run
    run = BRIDGED_SLICES + 1
    if low > 0:
        assert not any(has_bodies[low : low + run]) and len(has_bodies[low : low + run]) == run
    if high < n - 1:
        assert not any(has_bodies[high - run + 1 : high + 1])


def test_the_lateral_sweep_stops_beside_the_spine() -> None:
    """A 15-slice whole-spine slab cutting the spine in slices 5-9 (one missed slice at 7)."""
    has_bodies = [False] * 5 + [True, True, False, True, True] + [False] * 5
    visited = sorted(index for batch in _swept(has_bodies) for index in batch)
    assert visited == list(range(3, 12))  # two empty slices each side, then stop
    assert sorted(index for batch in _swept([False] * 6 + [True]) for index in batch) == list(range(7))

def vertebra(uid: str, centroid_z: float, score: float = 0.9, height: float = 25.0, x: float = 0.0, slices: int = 1,
             y: float = 0.0) -> Vertebra3D:
    """A tracked body seen on ``slices`` slices, each with ``score`` (its pixel positions are not used)."""
    centroid = np.array([x, y, centroid_z])
    half = np.array([0.0, 0.0, height / 2])
    depth = np.array([0.0, 17.0, 0.0])
    corners = np.array([centroid + half - depth, centroid + half + depth, centroid - half + depth, centroid - half - depth])
    quads = tuple(SliceQuad(i, np.zeros(2), np.zeros((4, 2)), score) for i in range(slices))
    return Vertebra3D(uid, centroid, corners, score, quads)


def test_fusion_counts_support_only_where_a_series_sees() -> None:
    levels = [0.0, 32.0, 64.0, 96.0]
    t1 = [vertebra("t1", z, 0.9, x=1.0) for z in levels]  # sees z in [-20, 120]
    t2 = [vertebra("t2", z + 3.0, 0.6, x=-1.0) for z in levels[:2]]  # sees only z < 50
    t2.append(vertebra("t2", -40.0, 0.8))  # outside t1's view: support 1/1
    t1.append(vertebra("t1", 16.0, 0.4))  # spurious, in both views, only t1 saw it: support 1/2

    def covers(uid: str, point: np.ndarray) -> bool:
        return bool(-20.0 <= point[2] <= 120.0) if uid == "t1" else bool(point[2] < 50.0)

    fused = fuse_series([t1, t2], covers)
    assert [round(float(f.centroid_mm[2]), 3) for f in fused] == [-40.0, 1.2, 16.0, 33.2, 64.0, 96.0]
    by_z = {round(float(f.centroid_mm[2])): f for f in fused}
    assert by_z[1].support == 1.0 and len(by_z[1].members) == 2 and by_z[1].series_instance_uid == "t1"
    np.testing.assert_allclose(by_z[1].centroid_mm, (0.9 * np.array([1.0, 0, 0]) + 0.6 * np.array([-1.0, 0, 3.0])) / 1.5)
    assert by_z[1].detection_score == pytest.approx(0.75)
    np.testing.assert_array_equal(by_z[1].corners_mm, t1[0].corners_mm)
    assert by_z[-40].support == 1.0 and by_z[64].support == 1.0
    assert by_z[16].support == 0.5 and by_z[16].detection_score == pytest.approx(0.2)
    assert len(fuse_series([t1, t2], covers, min_support=0.75)) == 5
    # A third series that sees everything but detected nothing lowers every support it covers.
    fused = fuse_series([t1, t2, []], lambda uid, p: uid == "stir" or covers(uid, p), series_uids=["t1", "t2", "stir"])
    assert {round(float(f.centroid_mm[2])): round(f.support, 3) for f in fused} == {-40: 0.5, 1: 0.667, 33: 0.667, 64: 0.5, 96: 0.5}
    assert fuse_series([], covers) == []



def test_a_body_one_sequence_alone_saw_is_kept_where_the_column_has_a_gap_for_it() -> None:
    """Three series image the column; the body at z = 64 was detected by T1 alone (support 1/3, below
    0.5). Its neighbours are two levels apart, so the column has lost a body there: it is kept. Weak
    detections that no gap needs stay out: between touching bodies, beside the column, or on top of
    a neighbour."""
    levels = [0.0, 32.0, 64.0, 96.0, 128.0]
    everywhere = lambda uid, point: True  # noqa: E731
    uids = ["t1", "t2", "stir"]

    def series(uid: str, skip: float | None = None) -> list[Vertebra3D]:
        return [vertebra(uid, z) for z in levels if z != skip]

    # T1 saw it on one slice 9 mm beside the midline: kept in line with its neighbours.
    lone = vertebra("t1", 64.0, 0.5, x=9.0)
    fused = fuse_series([[*series("t1", skip=64.0), lone], series("t2", 64.0), series("stir", 64.0)], everywhere, series_uids=uids)
    assert [round(float(f.centroid_mm[2])) for f in fused] == levels
    (filled,) = [f for f in fused if f.members == (lone,)]
    assert filled.support == pytest.approx(1 / 3)
    np.testing.assert_allclose(filled.centroid_mm, [0.0, 0.0, 64.0], atol=1e-9)
    np.testing.assert_allclose(filled.corners_mm, lone.corners_mm - [9.0, 0.0, 0.0])
    # Found 12 mm above where the body lies (0.8 heights below the next body up): still the lost body.
    shifted = vertebra("t1", 76.0, 0.5)
    fused = fuse_series([[*series("t1", skip=64.0), shifted], series("t2", 64.0), series("stir", 64.0)], everywhere, series_uids=uids)
    assert [round(float(f.centroid_mm[2])) for f in fused] == [0, 32, 76, 96, 128]
    for stray in (vertebra("t1", 16.0, 0.5), vertebra("t1", 64.0, 0.5, y=-40.0), vertebra("t1", 46.0, 0.5)):
        fused = fuse_series([[*series("t1", 64.0), stray], series("t2", 64.0), series("stir", 64.0)], everywhere, series_uids=uids)
        assert [round(float(f.centroid_mm[2])) for f in fused] == [0, 32, 96, 128]


def test_a_body_split_into_fragments_across_the_slab_is_one_vertebra() -> None:
    """The sacrum's track splits across a wide slab (the ala changes its outline from slice to slice):
    fragments 15-40 mm apart laterally, the outermost 65 mm from the first, at one height. They are
    one body, centred where most of its slices are; the next body up stays separate."""
    fragments = [vertebra("t2", 0.0, 0.75, x=-15.0, slices=6), vertebra("t2", 1.0, 0.6, x=-27.0),
                 vertebra("t2", -1.0, 0.65, x=23.0), vertebra("t2", 2.0, 0.55, x=38.0)]  # fmt: skip
    above = vertebra("t2", 32.0, 0.8, x=-10.0, slices=8)
    fused = fuse_series([[*fragments, above]], lambda uid, point: True)
    assert len(fused) == 2
    body, upper = fused
    assert len(body.members) == 4 and body.members[0] is fragments[0] and upper.members == (above,)
    weights = np.array([0.75 * 6, 0.6, 0.65, 0.55])
    np.testing.assert_allclose(body.centroid_mm[0], weights @ [-15.0, -27.0, 23.0, 38.0] / weights.sum())
    score_only = np.array([0.75, 0.6, 0.65, 0.55]) @ [-15.0, -27.0, 23.0, 38.0] / 2.55
    assert abs(body.centroid_mm[0] - -15.0) < 8.0 < abs(score_only - -15.0)  # one-slice fragments count less
    # Laterally apart with nothing between them: two detections, not one body.
    assert len(fuse_series([[vertebra("t2", 0.0, x=-30.0), vertebra("t2", 0.0, x=30.0)]], lambda uid, point: True)) == 2


def test_of_two_weak_detections_in_the_room_of_one_body_the_one_off_its_middle_is_dropped() -> None:
    """A T11 detected twice, 11 mm apart (too far to fuse) and both weakly, between a confident T12
    and T10 (seen on a generated thoracic study): left in, the labeller named the T12 "T13". The one
    nearer the middle of the room is the body, even when it scores lower; two weak bodies where two
    belong stay."""
    bodies = [vertebra("t2", z, 0.75) for z in (0.0, 32.0, 96.0, 128.0)]
    second, body = vertebra("t2", 55.0, 0.35, height=20.0), vertebra("t2", 66.0, 0.3, height=20.0)
    fused = fuse_series([[*bodies, second, body]], lambda uid, point: True)
    assert [fused[i].centroid_mm[2] for i in squeezed_between_bodies(fused)] == pytest.approx([55.0])
    two_missing = [vertebra("t2", z, 0.75) for z in (0.0, 32.0, 128.0, 160.0)]
    fused = fuse_series([[*two_missing, vertebra("t2", 64.0, 0.35), vertebra("t2", 96.0, 0.3)]], lambda uid, point: True)
    assert squeezed_between_bodies(fused) == []
    # Two collapsed (fractured) bodies, weak and short, where two bodies belong: both stay although
    # their neighbours are close (seen on a generated whole spine with cancer).
    collapsed = [vertebra("t2", z, 0.7, height=20.0) for z in (0.0, 22.0, 80.0, 102.0)]
    fused = fuse_series([[*collapsed, vertebra("t2", 41.0, 0.4, height=13.0), vertebra("t2", 57.0, 0.4, height=19.0)]],
                        lambda uid, point: True)
    assert squeezed_between_bodies(fused) == []
    # As confident as the bodies around them: two bodies, not one body twice.
    fused = fuse_series([[*bodies, vertebra("t2", 55.0, 0.8, height=20.0), vertebra("t2", 66.0, 0.3, height=20.0)]], lambda uid, point: True)
    assert squeezed_between_bodies(fused) == []


def _rated(levels: list[str], confidences: list[float] | None = None) -> np.ndarray:
    """(n, 23) refined probabilities with ``confidences`` (default 0.9 each) on the named levels and
    the rest spread evenly over the other classes."""
    confidences = [0.9] * len(levels) if confidences is None else confidences
    probabilities = np.empty((len(levels), len(LABELLER_CLASSES)))
    for row, (level, confidence) in enumerate(zip(levels, confidences)):
        probabilities[row] = (1.0 - confidence) / (len(LABELLER_CLASSES) - 1)
        probabilities[row, LABELLER_CLASSES.index(level)] = confidence
    return probabilities


def test_sacral_segments_below_s1_are_left_out_even_when_the_lowest_is_misrated() -> None:
    """Three sacral segments were detected below S1 on generated studies; at the bottom edge of the
    view the lowest was rated L5, which left the run in and shifted every level above by one."""
    bodies = fuse_series([[vertebra("t2", z, 0.7) for z in (0.0, 20.0, 40.0, 62.0, 96.0, 130.0)]], lambda uid, point: True)
    assert without_sacral_segments(_rated(["L5", "S1", "S1", "S1", "L5", "L4"]), bodies) == [3, 4, 5]
    assert without_sacral_segments(_rated(["S1", "S1", "S1", "S1", "L5", "L4"]), bodies) == [3, 4, 5]
    # Nothing rated S1 at the bottom (a field of view ending in the lumbar spine): every body is labelled.
    assert without_sacral_segments(_rated(["L5", "L4", "L3", "L2", "L1", "T12"]), bodies) == list(range(6))
    assert without_sacral_segments(_rated(["L5", "L5", "S1", "L4", "L3", "L2"]), bodies) == list(range(6))


def test_bodies_below_the_lumbosacral_junction_are_sacrum_whatever_rated_unless_rated_lumbar() -> None:
    """Generated lumbar STIR studies: two or three sacral segments below S1 rated T1, C7 or T2 (an
    appearance never learnt) were labelled, and the beam search pushed S1 up to L5 to make room."""
    bodies = fuse_series([[vertebra("t2", z, 0.7) for z in (0.0, 20.0, 40.0, 62.0, 96.0, 130.0)]], lambda uid, point: True)
    assert without_sacral_segments(_rated(["T2", "T1", "T1", "S1", "L5", "L4"]), bodies) == [3, 4, 5]
    assert without_sacral_segments(_rated(["T1", "C7", "S1", "S1", "L5", "L4"]), bodies) == [3, 4, 5]
    # An S1 rating above a thoracic-rated body is no junction; a lumbar rating below one contradicts it.
    assert without_sacral_segments(_rated(["T2", "T1", "S1", "T12", "T11", "T10"]), bodies) == list(range(6))
    assert without_sacral_segments(_rated(["T2", "L5", "C7", "S1", "L5", "L4"]), bodies) == list(range(6))
    # Only the sacrum at the top of the view: the junction has nothing above it.
    assert without_sacral_segments(_rated(["L5", "L4", "L3", "L2", "S1", "S1"]), bodies) == list(range(6))
    assert without_sacral_segments(_rated(["L5", "L4", "L3", "L2", "L1", "S1"]), bodies) == list(range(6))


def test_a_confident_junction_outweighs_doubtful_ratings_of_the_segments_below_it() -> None:
    """Generated lumbar studies 835006 and 835019: S1 and the L5 above it rated 1.00, the sacral
    segments below them L4 or L5 at 0.4-0.5 (or S1 over L4, a second junction); labelling the segments
    named the true S1 L3 and every body above it three levels too high."""
    bodies = fuse_series([[vertebra("t2", z, 0.7) for z in (0.0, 20.0, 40.0, 62.0, 96.0, 130.0, 164.0)]],
                         lambda uid, point: True)
    # A doubtful lumbar rating below the junction no longer makes every body labelled.
    assert without_sacral_segments(
        _rated(["L5", "T4", "L5", "S1", "L5", "L4", "L3"], [0.38, 0.67, 0.45, 1.0, 1.0, 1.0, 1.0]), bodies) == [3, 4, 5, 6]
    # Of two junctions the more confident one is the lumbosacral junction.
    assert without_sacral_segments(
        _rated(["S1", "L4", "L4", "S1", "L5", "L4", "L3"], [0.61, 0.52, 0.43, 1.0, 1.0, 1.0, 1.0]), bodies) == [3, 4, 5, 6]
    # A lumbar rating below the junction as confident as the junction still contradicts it.
    assert without_sacral_segments(
        _rated(["L5", "T4", "L5", "S1", "L5", "L4", "L3"], [0.38, 0.67, 0.95, 0.9, 0.9, 1.0, 1.0]), bodies) == list(range(7))


def _column(bend_deg: list[float], step_mm: float = 32.0) -> list[tuple[float, float]]:
    """(y, z) of consecutive body centroids ``step_mm`` apart, turning by ``bend_deg`` at each body."""
    points, angle = [(0.0, 0.0)], 0.0
    for bend in bend_deg:
        angle += np.radians(bend)
        y, z = points[-1]
        points.append((y + step_mm * np.sin(angle), z + step_mm * np.cos(angle)))
    return points


def test_a_detection_beside_the_column_between_two_touching_bodies_is_off_column() -> None:
    column = [vertebra("t2", z, y=y) for y, z in _column([0.0, 8.0, 8.0, 8.0, 8.0])]
    bowel = vertebra("t2", 48.0, 0.4, y=-55.0)  # 55 mm anterior of the bodies at z 32 and 64
    fused = fuse_series([[*column, bowel]], lambda uid, point: True)
    assert [fused[i].detection_score for i in off_column(fused)] == [pytest.approx(0.4)]
    # Between two bodies a missed level apart there is room for a body: not judged.
    gapped = [vertebra("t2", 0.0), vertebra("t2", 32.0), vertebra("t2", 96.0), vertebra("t2", 128.0)]
    assert off_column(fuse_series([[*gapped, vertebra("t2", 64.0, 0.4, y=-40.0)]], lambda uid, point: True)) == []
    # The end detections have one neighbour only.
    assert off_column(fuse_series([[*column, vertebra("t2", 200.0, 0.4, y=-80.0)]], lambda uid, point: True)) == []


def test_bodies_a_missed_level_apart_are_not_touching() -> None:
    fused = fuse_series([[vertebra("t2", z) for z in (0.0, 32.0, 96.0, 128.0)]], lambda uid, point: True)
    assert touching_neighbours(fused).tolist() == [True, False, True]


def test_two_strays_far_in_front_of_the_column_are_far_from_it_and_a_curved_column_is_not() -> None:
    """Generated lumbar study 835022: two detections 170-180 mm in front of the column, ordered next
    to each other, were each other's neighbour, so neither lay between two touching bodies; they took
    T8 and T9 and named the true T9 T7."""
    column = [vertebra("t2", z, y=y) for y, z in _column([0.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0])]
    strays = [vertebra("t2", 60.0, 0.5, y=-180.0), vertebra("t2", 85.0, 0.5, y=-165.0)]
    fused = fuse_series([[*column, *strays]], lambda uid, point: True)
    assert sorted(fused[i].centroid_mm[1] for i in far_from_column(fused)) == [-180.0, -165.0]
    assert off_column(fused) == []  # what let them through before
    # A column bending 8° at every body (a strong kyphosis) stays whole, also with a body missing at
    # its end; three detections are too few to tell the column from a stray.
    assert far_from_column(fuse_series([column], lambda uid, point: True)) == []
    assert far_from_column(fuse_series([[*column[:-2], column[-1]]], lambda uid, point: True)) == []
    assert far_from_column(fuse_series([[*column[:2], strays[0]]], lambda uid, point: True)) == []


def test_a_weak_detection_squeezed_between_two_touching_bodies_is_dropped_and_the_bodies_stay() -> None:
    """A disc or a second detection of one body between L5 and L4 (seen on a generated study) would
    take a level and name the L5 below it L6."""
    column = [vertebra("t2", z, 0.75) for z in (0.0, 32.0, 64.0, 96.0)]
    disc = vertebra("t2", 49.0, 0.36, height=19.0)  # 17 mm above the body at z 32, 15 mm below z 64
    fused = fuse_series([[*column, disc]], lambda uid, point: True)
    assert [fused[i].detection_score for i in squeezed_between_bodies(fused)] == [pytest.approx(0.36)]
    # The bodies beside the fragment have it as a neighbour, so their own neighbours are close
    # together too; they outscore it and stay.
    assert [fused[i].centroid_mm[2] for i in range(len(fused)) if i not in squeezed_between_bodies(fused)] == \
        pytest.approx([0.0, 32.0, 64.0, 96.0])
    # Two fragments side by side: each is the other's neighbour, so only the weaker is squeezed at
    # first; judged again without it, the other is squeezed between the bodies and goes too.
    pair = [vertebra("t2", 42.0, 0.3, height=19.0), vertebra("t2", 54.0, 0.35, height=19.0)]
    fused = fuse_series([[*column, *pair]], lambda uid, point: True)
    assert sorted(fused[i].detection_score for i in squeezed_between_bodies(fused)) == pytest.approx([0.3, 0.35])
    # As confident as a neighbour: not judged a fragment (two bodies, one of them misplaced, are
    # for the labeller to sort out).
    assert squeezed_between_bodies(fuse_series([[*column, vertebra("t2", 49.0, 0.8)]], lambda uid, point: True)) == []
    # Between two bodies a missed level apart there is room for a weak body: kept.
    gapped = [vertebra("t2", 0.0, 0.75), vertebra("t2", 32.0, 0.75), vertebra("t2", 96.0, 0.75)]
    assert squeezed_between_bodies(fuse_series([[*gapped, vertebra("t2", 64.0, 0.4)]], lambda uid, point: True)) == []
    # Beside the column it is off_column's, not a fragment of the column.
    bowel = vertebra("t2", 48.0, 0.4, y=-55.0)
    assert squeezed_between_bodies(fuse_series([[*column, bowel]], lambda uid, point: True)) == []


@given(st.lists(st.floats(-20.0, 20.0), min_size=1, max_size=22), st.floats(27.0, 36.0))
@settings(max_examples=60, deadline=None)
def test_a_curved_column_of_consecutive_bodies_loses_none(bend_deg: list[float], step_mm: float) -> None:
    """Lordosis, kyphosis and scoliosis bend the column by up to ~20° per body: every body stays."""
    fused = fuse_series([[vertebra("t2", z, y=y) for y, z in _column(bend_deg, step_mm)]], lambda uid, point: True)
    assert off_column(fused) == []


# --------------------------------------------------------------------------------------------------
# End to end through real DICOM geometry
# --------------------------------------------------------------------------------------------------
def test_detections_land_on_the_vertebrae_of_a_dicom_series(tmp_path: Path) -> None:
    """Bodies drawn into a sagittal DICOM series (0.75 x 0.5 mm pixels) at known LPS positions: the
    detector-grid image shows them where the decoded quads are, and the tracked centroids come back
    in LPS mm."""
    n_slices, rows, cols = 7, 400, 300
    geometry = VolumeGeometry.from_dicom(SAGITTAL, (-12.0, -80.0, 120.0), (0.75, 0.5), (n_slices, rows, cols), 4.0)
    quads_px = spine_quads(5, (60.0, 140.0), height=40.0, depth=70.0, disc=12.0)  # original px
    pixels = np.full((n_slices, rows, cols), 100.0)
    rr, cc = np.mgrid[0:rows, 0:cols]
    for quad in quads_px:
        sides = [(q[0] - p[0]) * (cc - p[1]) - (q[1] - p[1]) * (rr - p[0]) for p, q in zip(quad[:4], np.roll(quad[:4], -1, axis=0))]
        inside = np.all(np.array(sides) <= 0, axis=0)  # corners run clockwise in (row, col)
        pixels[1:6, inside] = 900.0  # bodies visible in slices 1-5
    write_series(pixels, geometry, tmp_path, modality="MR", study=STUDY, series_description="SAG T1")
    (series,) = scan_study_folder(tmp_path).series
    stack = series.stacks[0].load()
    np.testing.assert_allclose(stack.geometry.affine, geometry.affine, atol=1e-3)

    grid = slice_grid(stack.geometry, rows, cols)
    assert (grid.scale_row, grid.scale_col) == pytest.approx((2.0, 3.0))
    images = resample_to_grid(normalise_intensity(stack.pixels), grid)
    # Stand-in for the network: the training target of each slice with visible bodies.
    quads_grid = [grid.from_original(q) for q in quads_px]
    found = [q for s in range(1, 6) for q in decode_slice(render_targets(quads_grid, grid.shape), grid, s)]
    assert len(found) == 25
    for quad in found:
        r, c = np.round(grid.from_original(quad.centroid_px)).astype(int)
        assert images[quad.slice_index, r, c] > 0.9  # the decoded centroid sits on a bright body
        np.testing.assert_allclose(min(np.abs(q[4] - quad.centroid_px).max() for q in quads_px), 0.0, atol=1e-2)

    vertebrae = track_across_slices(found, stack.geometry, series.series_instance_uid)
    assert len(vertebrae) == 5 and all(len(v.slice_quads) == 5 for v in vertebrae)
    truth_mm = [geometry.index_to_lps([3.0, *q[4]]) for q in quads_px[::-1]]  # caudal first
    np.testing.assert_allclose([v.centroid_mm for v in vertebrae], truth_mm, atol=0.02)
    np.testing.assert_allclose([v.height_mm for v in vertebrae], 40.0 * 0.75, atol=0.02)  # rows are 0.75 mm
    assert all(v.corners_mm[0][2] > v.corners_mm[3][2] for v in vertebrae)  # superior corner is cranial
