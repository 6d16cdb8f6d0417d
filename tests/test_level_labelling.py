"""Level labelling core: appearance volumes, the height-probability map and the beam search.

Appearance volumes are checked on stacks written as real DICOM and read back, and on analytic
"anatomy" (Gaussian blobs in patient space) sampled onto stacks of many orientations: whatever the
stack's orientation, the vertebra must land in the centre of the volume, superior structures at
the top and posterior ones on the right. The beam search is checked against an exhaustive search of
the same rules on short sequences, and on the clinical cases the rules exist for (missed
detections, S2 / C2 double detections, L6 / T13 transitional vertebrae).
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation
from scipy.special import softmax

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.level_labelling import (
    APPEARANCE_SHAPE,
    CONTEXT_SIZE_MULTIPLE,
    HEIGHT_BIN_MM,
    MAX_LABELLED_DETECTIONS,
    N_CLASSES,
    TEMPERATURE,
    HeightMap,
    appearance_box_mm,
    appearance_volume,
    beam_search_levels,
    context_targets,
    detection_bins,
    height_probability_map,
    pad_bins,
    temperature_softmax,
)
from operators.core.levels import LABELLER_CLASSES, SACRAL_SEGMENTS_BELOW_S1, level_order
from operators.core.vertebra_detection import SliceQuad, Vertebra3D
from training.synthetic.dicom_writer import PatientStudy, write_series

#: Standard sagittal orientation: rows run towards posterior (+y), columns towards inferior (-z).
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
IDX = {level: i for i, level in enumerate(LABELLER_CLASSES)}
_TIGHT = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def _vertebra(
    geometry: VolumeGeometry, centroid_mm: np.ndarray, height_mm: float, depth_mm: float, slices: range
) -> Vertebra3D:
    """A vertebral body in patient space: an upright box ``depth`` (y) × ``height`` (z) around the
    centroid, seen in ``slices`` of the stack (each slice's quad is the corners projected on it)."""
    c = np.asarray(centroid_mm, dtype=float)
    a, p = -depth_mm / 2, depth_mm / 2  # anterior is -y
    s, i = height_mm / 2, -height_mm / 2
    corners = c + np.array([[0, a, s], [0, p, s], [0, p, i], [0, a, i]])  # VERTEBRA_CORNERS order
    centre_px, corners_px = geometry.lps_to_index(c)[1:], geometry.lps_to_index(corners)[:, 1:]
    quads = tuple(SliceQuad(k, centre_px, corners_px, 1.0) for k in slices)
    return Vertebra3D("1.2.3", c, corners, 1.0, quads)


def _sagittal_geometry(shape: tuple[int, int, int], pixel_mm: float = 1.0, slice_mm: float = 3.0) -> VolumeGeometry:
    """A standard sagittal stack (slices right → left) centred on the LPS origin."""
    first = np.array([-(shape[0] - 1) / 2 * slice_mm, -(shape[2] - 1) / 2 * pixel_mm, (shape[1] - 1) / 2 * pixel_mm])
    return VolumeGeometry.from_dicom(SAGITTAL_IOP, first, (pixel_mm, pixel_mm), shape, slice_mm)


def _reoriented_geometry(shape: tuple[int, int, int], rotation: np.ndarray, flip_rows: bool, flip_cols: bool,
                         transpose: bool, flip_slices: bool) -> VolumeGeometry:
    """A sagittal-ish stack centred on the origin, rotated obliquely, with its in-plane axes
    flipped / swapped and its slice order reversed as requested (all valid DICOM orientations)."""
    row_dir = np.array([0.0, 1.0, 0.0])  # along a row (column index)
    col_dir = np.array([0.0, 0.0, -1.0])  # down a column (row index)
    if flip_rows:
        col_dir = -col_dir
    if flip_cols:
        row_dir = -row_dir
    if transpose:
        row_dir, col_dir = col_dir, row_dir
    row_dir, col_dir = rotation @ row_dir, rotation @ col_dir
    normal = np.cross(row_dir, col_dir)
    step = (-1.0 if flip_slices else 1.0) * 3.0 * normal
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = step, col_dir, row_dir  # 1 mm pixels
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return VolumeGeometry(affine, shape)


def _blobs(points_mm: np.ndarray, blobs: list[tuple[np.ndarray, float]], sigma_mm: float = 3.5) -> np.ndarray:
    """Analytic anatomy: a sum of isotropic Gaussian blobs (centre LPS, amplitude) at ``points_mm``."""
    total = np.zeros(points_mm.shape[:-1])
    for centre, amplitude in blobs:
        total += amplitude * np.exp(-np.sum((points_mm - centre) ** 2, axis=-1) / (2 * sigma_mm**2))
    return total.astype(np.float32)


def _stack_of(geometry: VolumeGeometry, blobs: list[tuple[np.ndarray, float]]) -> np.ndarray:
    index = np.stack(np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij"), axis=-1)
    return _blobs(geometry.index_to_lps(index), blobs)


def _centre_of_mass(volume: np.ndarray, level: float) -> np.ndarray:
    weights = np.where(volume > level, volume, 0.0)
    grid = np.indices(volume.shape).reshape(3, -1)
    return grid @ weights.reshape(-1) / weights.sum()


def _rows(classes: list[str], p_true: float = 0.9) -> np.ndarray:
    """(n, 23) probabilities: ``p_true`` on each detection's class, the rest spread evenly."""
    rows = np.full((len(classes), N_CLASSES), (1 - p_true) / (N_CLASSES - 1))
    rows[np.arange(len(classes)), [IDX[c] for c in classes]] = p_true
    return rows


def _is_valid(levels: tuple[str, ...]) -> bool:
    """Levels strictly ascend the spine (S2…S5 sit below S1); at most one transitional vertebra."""
    sacral = {name: level_order("S1") + 1 + k for k, name in enumerate(SACRAL_SEGMENTS_BELOW_S1)}
    order = [sacral[level] if level in sacral else level_order(level) for level in levels]
    return all(b < a for a, b in zip(order, order[1:])) and sum(level in ("L6", "T13") for level in levels) <= 1


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _brute_force(probs: np.ndarray, skip: float, transitional: float, touching: tuple[bool, ...] = ()) -> float:
    """Best log score over every class sequence, scoring the documented rules one by one."""
    best = -math.inf
    for classes in itertools.product(range(N_CLASSES), repeat=len(probs)):
        score = sum(math.log(max(probs[i, c], 1e-30)) for i, c in enumerate(classes))
        n_transitional = 0
        for k in range(1, len(classes)):
            below, above = classes[k - 1], classes[k]
            if above < below:
                gap = below - above - 1
                if gap and touching and touching[k - 1]:
                    score = -math.inf
                score += gap * _log(skip) if gap else 0.0
            elif above == below and below == IDX["S1"]:
                if k > len(SACRAL_SEGMENTS_BELOW_S1):  # S1 and at most S2…S5 below it
                    score = -math.inf
            elif above == below and (k < 2 or classes[k - 2] != below):
                if below == IDX["C3"]:
                    continue
                if below in (IDX["L5"], IDX["T12"]):
                    n_transitional += 1
                    score += _log(transitional)
                else:
                    score = -math.inf
            else:
                score = -math.inf
        if n_transitional <= 1:
            best = max(best, score)
    return best


# ------------------------------------------------------------------------------------------------
# Appearance volumes
# ------------------------------------------------------------------------------------------------
def test_bright_body_in_a_dicom_stack_lands_in_the_centre(tmp_path) -> None:
    """A sagittal stack written as DICOM and read back: the body's voxels sit at the volume's centre,
    a structure above it in the upper half and one behind it in the posterior (right) half."""
    geometry = _sagittal_geometry((15, 128, 128))
    centroid = geometry.index_to_lps([7.0, 70.0, 60.0])
    blobs = [(centroid, 1000.0), (centroid + [0, 0, 25.0], 600.0), (centroid + [0, 25.0, 0], 300.0)]
    write_series(_stack_of(geometry, blobs), geometry, tmp_path, modality="MR", study=PatientStudy())
    loaded = scan_study_folder(tmp_path).series[0].stacks[0].load()
    pixels = loaded.pixels / loaded.pixels.max()
    vertebra = _vertebra(loaded.geometry, centroid, 30.0, 30.0, range(6, 9))

    volume = appearance_volume(pixels, loaded.geometry, vertebra)

    assert volume.shape == APPEARANCE_SHAPE and volume.dtype == np.float32
    centre = (np.asarray(APPEARANCE_SHAPE) - 1) / 2
    np.testing.assert_allclose(_centre_of_mass(volume, 0.65), centre, atol=0.6)  # the 0.6 blob above stays out
    middle = volume[APPEARANCE_SHAPE[0] // 2]
    # 25 mm in the 90 mm box is 31 output pixels: rows run superior → inferior, columns anterior → posterior.
    superior = np.unravel_index(np.argmax(middle[:45]), middle[:45].shape)
    posterior = np.unravel_index(np.argmax(middle[:, 70:]), middle[:, 70:].shape)
    np.testing.assert_allclose(superior, (55.5 - 31, 55.5), atol=1.5)
    np.testing.assert_allclose((posterior[0], posterior[1] + 70), (55.5, 55.5 + 31), atol=1.5)


@_TIGHT
@given(
    angles=st.tuples(*(st.floats(-25.0, 25.0),) * 3),
    flip_rows=st.booleans(),
    flip_cols=st.booleans(),
    transpose=st.booleans(),
    flip_slices=st.booleans(),
)
def test_orientation_of_the_stack_does_not_change_the_volume(
    angles, flip_rows, flip_cols, transpose, flip_slices
) -> None:
    """Oblique, flipped, transposed and reversed stacks of the same anatomy give volumes with the body
    in the centre, the superior structure on top and the posterior one on the right."""
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    geometry = _reoriented_geometry((13, 96, 96), rotation, flip_rows, flip_cols, transpose, flip_slices)
    up, back = rotation @ [0, 0, 1.0], rotation @ [0, 1.0, 0]  # the anatomy tilts with the stack
    vertebra = _vertebra(geometry, np.zeros(3), 24.0, 24.0, range(5, 8))
    centre = (np.asarray(APPEARANCE_SHAPE) - 1) / 2
    # One structure per stack (sampling is linear, so this is the same as one stack holding all):
    # the body at the centre, and structures 20 mm above and behind it, which in the 72 mm box
    # are 31 output pixels from the centre.
    for position, offset in ((np.zeros(3), (0, 0, 0)), (20.0 * up, (0, -31, 0)), (20.0 * back, (0, 0, 31))):
        volume = appearance_volume(_stack_of(geometry, [(position, 1.0)]), geometry, vertebra)
        np.testing.assert_allclose(_centre_of_mass(volume, 0.5), centre + offset, atol=1.0)


def test_outside_the_stack_is_zero_and_inside_is_interpolated() -> None:
    geometry = _sagittal_geometry((9, 64, 64))
    pixels = np.ones(geometry.shape, dtype=np.float32)
    vertebra = _vertebra(geometry, geometry.index_to_lps([4.0, 10.0, 10.0]), 25.0, 25.0, range(3, 6))

    volume = appearance_volume(pixels, geometry, vertebra)

    assert volume[8, 0, 0] == 0.0  # 37 mm above and in front of a body 10 px inside the corner
    assert volume[8, 111, 111] == pytest.approx(1.0)


def test_box_is_a_cube_sized_by_the_body_not_by_the_slices_it_was_detected_on() -> None:
    """A detector that stops short of the body's lateral edges (fewer slices) gives the same box, and
    so the same volume, as the true outline: the labeller learns from true outlines."""
    geometry = _sagittal_geometry((20, 64, 64), slice_mm=4.0)
    pixels = np.random.default_rng(0).random(geometry.shape).astype(np.float32)
    tall_thin = _vertebra(geometry, np.zeros(3), 30.0, 20.0, range(5, 16))
    assert appearance_box_mm(geometry, tall_thin) == pytest.approx((90.0, 90.0))
    seen_on_three_slices = _vertebra(geometry, np.zeros(3), 30.0, 20.0, range(9, 12))
    assert appearance_box_mm(geometry, seen_on_three_slices) == pytest.approx((90.0, 90.0))
    np.testing.assert_array_equal(appearance_volume(pixels, geometry, seen_on_three_slices),
                                  appearance_volume(pixels, geometry, tall_thin))
    deep_single = _vertebra(geometry, np.zeros(3), 20.0, 40.0, range(9, 10))
    assert appearance_box_mm(geometry, deep_single) == pytest.approx((120.0, 120.0))
    small_in_thick_slices = _vertebra(_sagittal_geometry((5, 64, 64), slice_mm=10.0), np.zeros(3), 8.0, 8.0, range(2, 3))
    assert appearance_box_mm(_sagittal_geometry((5, 64, 64), slice_mm=10.0), small_in_thick_slices) == pytest.approx((24.0, 30.0))


def test_pixels_must_match_the_geometry() -> None:
    geometry = _sagittal_geometry((9, 64, 64))
    vertebra = _vertebra(geometry, np.zeros(3), 25.0, 25.0, range(3, 6))
    with pytest.raises(ValueError, match="does not match"):
        appearance_volume(np.zeros((9, 64, 63), np.float32), geometry, vertebra)


# ------------------------------------------------------------------------------------------------
# Temperature softmax
# ------------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4), min_size=N_CLASSES, max_size=N_CLASSES), st.floats(0.1, 100.0))
def test_temperature_softmax_is_a_calibrated_distribution(logits, temperature) -> None:
    logits = np.asarray(logits)
    probs = temperature_softmax(logits, temperature)
    assert np.all(np.isfinite(probs)) and probs.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(probs, softmax(logits / temperature), rtol=1e-9, atol=1e-300)
    assert probs[np.argmax(logits)] == probs.max()


def test_default_temperature_flattens_the_network_output() -> None:
    logits = np.linspace(-20, 20, N_CLASSES)[None].repeat(3, axis=0)
    recalibrated = temperature_softmax(logits)
    assert recalibrated.shape == (3, N_CLASSES) and TEMPERATURE == 10.0
    assert recalibrated.max() < temperature_softmax(logits, 1.0).max()
    with pytest.raises(ValueError):
        temperature_softmax(logits, 0.0)


# ------------------------------------------------------------------------------------------------
# Height-probability map
# ------------------------------------------------------------------------------------------------
def test_height_map_paints_each_span_with_its_probabilities() -> None:
    spans = np.array([[0.0, 20.0], [50.0, 30.0]])  # second span given superior first
    probs = _rows(["L5", "L4"])

    height_map = height_probability_map(spans, probs, margin_mm=60.0)

    assert height_map.heights_mm[0] == pytest.approx(-60.0)
    assert height_map.heights_mm[-1] >= 110.0 and height_map.probabilities.dtype == np.float32
    columns = height_map.probabilities.T
    for z, expected in ((0.0, probs[0]), (10.0, probs[0]), (20.0, probs[0]), (30.0, probs[1]), (50.0, probs[1])):
        np.testing.assert_allclose(columns[height_map.bin_of(z)], expected, rtol=1e-6)
    painted = columns.sum(axis=1) > 0
    assert painted.sum() == 11 + 11  # bin centres every 2 mm from 0 to 20 and from 30 to 50
    assert not painted[height_map.bin_of(25.0)]


def test_overlapping_spans_keep_the_later_detection() -> None:
    height_map = height_probability_map(np.array([[0.0, 20.0], [16.0, 36.0]]), _rows(["L5", "L4"]))
    assert np.argmax(height_map.probabilities[:, height_map.bin_of(18.0)]) == IDX["L4"]
    assert np.argmax(height_map.probabilities[:, height_map.bin_of(14.0)]) == IDX["L5"]


def test_a_span_narrower_than_a_bin_fills_one_bin() -> None:
    height_map = height_probability_map(np.array([[10.3, 10.9]]), _rows(["T4"]), margin_mm=10.0)
    painted = np.flatnonzero(height_map.probabilities.sum(axis=0))
    np.testing.assert_array_equal(painted, height_map.bin_of([10.6]))


def test_no_detections_give_an_empty_map() -> None:
    height_map = height_probability_map(np.zeros((0, 2)), np.zeros((0, N_CLASSES)))
    assert height_map.probabilities.shape == (N_CLASSES, 0) and height_map.n_bins == 0
    assert pad_bins(height_map.probabilities).shape == (N_CLASSES, 0)


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        height_probability_map(np.zeros((2, 2)), np.zeros((3, N_CLASSES)))
    with pytest.raises(ValueError):
        height_probability_map(np.zeros((1, 2)), np.zeros((1, 5)))


@_TIGHT
@given(
    heights=st.lists(st.floats(14.0, 40.0), min_size=1, max_size=12),
    gaps=st.lists(st.floats(2.0, 12.0), min_size=12, max_size=12),
    start=st.floats(-300.0, 300.0),
)
def test_targets_bins_and_map_agree(heights, gaps, start) -> None:
    """Non-overlapping bodies stacked up the spine: targets fill exactly the painted bins, and reading
    the map at each body's centroid bin gives back that body's own probabilities."""
    spans, z = [], start
    for height, gap in zip(heights, gaps):
        spans.append((z, z + height))
        z += height + gap
    spans = np.array(spans)
    classes = np.arange(len(spans))[::-1] + 3  # caudal → cranial: class index decreasing
    probs = temperature_softmax(np.random.default_rng(len(spans)).normal(size=(len(spans), N_CLASSES)) * 30)

    height_map = height_probability_map(spans, probs)
    targets = context_targets(spans, classes, height_map)
    bins = detection_bins(height_map, spans.mean(axis=1))

    assert targets.shape == (height_map.n_bins,) and targets.dtype == np.int64
    np.testing.assert_array_equal(targets >= 0, height_map.probabilities.sum(axis=0) > 0)
    np.testing.assert_array_equal(targets[bins], classes)
    np.testing.assert_allclose(height_map.probabilities[:, bins].T, probs, rtol=1e-6)
    padded = pad_bins(height_map.probabilities)
    assert padded.shape[1] % CONTEXT_SIZE_MULTIPLE == 0 and padded.shape[1] - height_map.n_bins < CONTEXT_SIZE_MULTIPLE
    np.testing.assert_array_equal(padded[:, bins], height_map.probabilities[:, bins])


def test_targets_clip_to_the_map_and_detection_bins_refuse_outside_points() -> None:
    """Training drops bodies from the input map; their targets are still painted where the map
    reaches, and nothing is painted for a body wholly outside it."""
    height_map = height_probability_map(np.array([[0.0, 20.0]]), _rows(["L1"]), margin_mm=10.0)
    spans = np.array([[0.0, 20.0], [24.0, 44.0], [-200.0, -180.0]])
    targets = context_targets(spans, np.array([IDX["L1"], IDX["T12"], IDX["L5"]]), height_map)
    assert set(targets[height_map.bin_of(np.array([22.0, 30.0]))]) == {-1, IDX["T12"]}
    assert IDX["L5"] not in targets and targets[0] == -1
    with pytest.raises(ValueError, match="outside"):
        detection_bins(height_map, np.array([10.0, 100.0]))
    with pytest.raises(ValueError):
        context_targets(spans, np.array([0, 1, N_CLASSES]), height_map)


def test_bin_of_rounds_to_the_nearest_bin_centre() -> None:
    height_map = HeightMap(5.0, np.zeros((N_CLASSES, 10), np.float32))
    np.testing.assert_array_equal(height_map.bin_of(np.array([5.0, 5.9, 6.1, 5.0 + 9 * HEIGHT_BIN_MM])), [0, 0, 1, 9])


# ------------------------------------------------------------------------------------------------
# Beam search
# ------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    top=st.integers(0, N_CLASSES - 1),
    length=st.integers(1, N_CLASSES),
    seed=st.integers(0, 2**31),
    p_true=st.floats(0.3, 0.99),
)
def test_a_clean_sequence_is_recovered(top, length, seed, p_true) -> None:
    """A contiguous run of levels whose true class is the most probable one is read back exactly."""
    classes = list(range(top, min(top + length, N_CLASSES)))[::-1]  # caudal first
    noise = np.random.default_rng(seed).dirichlet(np.ones(N_CLASSES), size=len(classes)) * (1 - p_true)
    noise[np.arange(len(classes)), classes] = 0.0
    probs = noise.copy()
    probs[np.arange(len(classes)), classes] = np.maximum(p_true, noise.max(axis=1) + 0.05)

    result = beam_search_levels(probs)

    assert result.levels == tuple(LABELLER_CLASSES[c] for c in classes)
    np.testing.assert_allclose(result.probabilities, probs[np.arange(len(classes)), classes])
    assert result.log_score == pytest.approx(float(np.sum(np.log(result.probabilities))))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    seed=st.integers(0, 2**31),
    skip=st.sampled_from([0.0, 0.05, 0.5]),
    transitional=st.sampled_from([0.0, 0.02, 1.0]),
    spread=st.floats(0.5, 8.0),
    touching_bits=st.integers(0, 3),
)
def test_beam_search_finds_the_exhaustive_optimum(n, seed, skip, transitional, spread, touching_bits) -> None:
    probs = softmax(np.random.default_rng(seed).normal(size=(n, N_CLASSES)) * spread, axis=1)
    touching = tuple(bool(touching_bits >> k & 1) for k in range(n - 1))
    expected = _brute_force(probs, skip, transitional, touching)
    result = beam_search_levels(probs, touching=np.array(touching, dtype=bool), skip_penalty=skip,
                                transitional_penalty=transitional)
    assert result.log_score == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert _is_valid(result.levels)


def test_a_missed_detection_costs_the_skip_penalty() -> None:
    probs = _rows(["S1", "L5", "L3", "L2"])  # L4 missed
    result = beam_search_levels(probs, skip_penalty=0.05)
    assert result.levels == ("S1", "L5", "L3", "L2")
    assert result.log_score == pytest.approx(4 * math.log(0.9) + math.log(0.05))
    # Two missed levels (× 0.0025) only win over relabelling a body when the network is sure enough.
    two_missed = beam_search_levels(_rows(["S1", "L5", "L2"], p_true=0.99), skip_penalty=0.05)
    assert two_missed.levels == ("S1", "L5", "L2")
    assert two_missed.log_score == pytest.approx(3 * math.log(0.99) + 2 * math.log(0.05))
    assert beam_search_levels(_rows(["S1", "L5", "L2"], p_true=0.9)).levels == ("S1", "L5", "L4")


def test_no_level_is_skipped_between_touching_bodies() -> None:
    """Generated study 835024: the context network read the upper bodies one level too high and the
    lower ones right, and the search skipped L1 between two touching bodies to keep both readings."""
    probs = _rows(["S1", "L5", "L4", "L3", "L2", "T12", "T11", "T10"], p_true=0.99)
    assert beam_search_levels(probs).levels == ("S1", "L5", "L4", "L3", "L2", "T12", "T11", "T10")
    touching = np.ones(len(probs) - 1, dtype=bool)
    labelled = beam_search_levels(probs, touching=touching).levels
    assert labelled in (("S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11"), ("L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9"))
    # Where the two bodies are apart (room for the missed one), the skip stays allowed.
    touching[4] = False
    assert beam_search_levels(probs, touching=touching).levels == ("S1", "L5", "L4", "L3", "L2", "T12", "T11", "T10")
    with pytest.raises(ValueError, match="one entry per pair"):
        beam_search_levels(probs, touching=touching[:-1])


def test_context_fills_in_an_ambiguous_detection() -> None:
    """A body the network cannot tell apart is labelled by its neighbours (no skip needed)."""
    probs = _rows(["S1", "L5", "L4", "L3", "L2"])
    probs[2] = 1.0 / N_CLASSES
    assert beam_search_levels(probs).levels == ("S1", "L5", "L4", "L3", "L2")


def test_sacral_segments_below_s1_are_named_down_the_sacrum_without_penalty() -> None:
    """Two segments below S1 rated S1 (generated study 835053): S3, S2, S1, not S2, S1 and an L6."""
    sacrum = beam_search_levels(_rows(["S1", "S1", "S1", "L5", "L4"]))
    assert sacrum.levels == ("S3", "S2", "S1", "L5", "L4")
    assert sacrum.log_score == pytest.approx(5 * math.log(0.9))
    five = beam_search_levels(_rows(["S1"] * 6 + ["L5"]))
    assert _is_valid(five.levels) and five.levels.count("S1") == 1  # S2…S5 at most below S1


def test_double_s1_and_c3_become_s2_and_c2_without_penalty() -> None:
    sacral = beam_search_levels(_rows(["S1", "S1", "L5", "L4"]))
    assert sacral.levels == ("S2", "S1", "L5", "L4")
    assert sacral.probabilities == pytest.approx((0.9,) * 4)
    assert sacral.log_score == pytest.approx(4 * math.log(0.9))
    cervical = beam_search_levels(_rows(["C5", "C4", "C3", "C3"]))
    assert cervical.levels == ("C5", "C4", "C3", "C2")
    assert cervical.log_score == pytest.approx(4 * math.log(0.9))


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        (["S1", "L5", "L5", "L4", "L3"], ("S1", "L6", "L5", "L4", "L3")),
        (["L2", "L1", "T12", "T12", "T11"], ("L2", "L1", "T13", "T12", "T11")),
    ],
)
def test_transitional_vertebrae_are_reported_at_a_penalty(classes, expected) -> None:
    result = beam_search_levels(_rows(classes), transitional_penalty=0.02)
    assert result.levels == expected
    assert result.log_score == pytest.approx(5 * math.log(0.9) + math.log(0.02))
    # The L6 / T13 body is scored with its parent class's probability.
    assert result.probabilities == pytest.approx((0.9,) * 5)


def test_at_most_one_transitional_vertebra_and_no_repeated_level() -> None:
    both = beam_search_levels(_rows(["S1", "L5", "L5", "L4", "L3", "L2", "L1", "T12", "T12", "T11"]))
    assert _is_valid(both.levels) and sum(level in ("L6", "T13") for level in both.levels) == 1
    repeated_l5 = beam_search_levels(_rows(["S1", "L5", "L5", "L5", "L4"]), transitional_penalty=0.02)
    assert _is_valid(repeated_l5.levels) and repeated_l5.levels.count("L5") == 1
    repeated = beam_search_levels(_rows(["S1", "L5", "L4", "L3", "L3"]))
    assert _is_valid(repeated.levels) and len(set(repeated.levels)) == 5


def test_a_whole_spine_with_both_doubles_and_a_transitional_level() -> None:
    spine = ["S1"] * 5 + ["L5", "L5"] + list(reversed(LABELLER_CLASSES[: IDX["L4"] + 1])) + ["C3"]
    result = beam_search_levels(_rows(spine, p_true=0.6))
    assert result.levels[:7] == ("S5", "S4", "S3", "S2", "S1", "L6", "L5") and result.levels[-2:] == ("C3", "C2")
    assert len(result.levels) == MAX_LABELLED_DETECTIONS


def test_single_zero_and_too_many_detections() -> None:
    assert beam_search_levels(_rows(["T7"])).levels == ("T7",)
    empty = beam_search_levels(np.zeros((0, N_CLASSES)))
    assert empty.levels == () and empty.probabilities == () and empty.log_score == 0.0
    with pytest.raises(ValueError, match="cannot be labelled"):
        beam_search_levels(np.full((MAX_LABELLED_DETECTIONS + 1, N_CLASSES), 1.0 / N_CLASSES))
    with pytest.raises(ValueError, match="cannot be labelled"):  # no transitional level allowed
        beam_search_levels(np.full((MAX_LABELLED_DETECTIONS, N_CLASSES), 1.0 / N_CLASSES), transitional_penalty=0.0)
    with pytest.raises(ValueError):
        beam_search_levels(np.full((3, N_CLASSES), -0.1))
    with pytest.raises(ValueError):
        beam_search_levels(_rows(["L1"]), beam_width=0)


def test_a_narrow_beam_still_returns_a_valid_sequence() -> None:
    """A width-1 (greedy) beam must not dead-end, e.g. by starting a long sequence at C3."""
    rng = np.random.default_rng(3)
    for n in (2, 20, MAX_LABELLED_DETECTIONS):
        probs = softmax(rng.normal(size=(n, N_CLASSES)) * 3, axis=1)
        probs[0, IDX["C3"]] = 1.0  # greedy would take C3 for the lowest body
        wide = beam_search_levels(probs, beam_width=100)
        for width in (1, 5):
            narrow = beam_search_levels(probs, beam_width=width)
            assert _is_valid(narrow.levels) and len(narrow.levels) == n
            assert narrow.log_score <= wide.log_score + 1e-9


def test_beam_search_is_fast_on_a_whole_spine() -> None:
    probs = softmax(np.random.default_rng(0).normal(size=(MAX_LABELLED_DETECTIONS, N_CLASSES)) * 3, axis=1)
    beam_search_levels(probs)
    start = time.perf_counter()
    for _ in range(10):
        beam_search_levels(probs)
    # ~2 ms on the 2-core dev machine; the bound leaves room for a loaded CI runner.
    assert (time.perf_counter() - start) / 10 < 0.05
