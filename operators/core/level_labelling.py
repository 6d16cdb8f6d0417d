"""Vertebral level labelling: appearance volumes, the height-probability map and beam search.

SpineNetV2 §3.2 labels detected vertebral bodies in three steps, and this module holds the
numpy/scipy parts of each (the two networks run elsewhere, on onnxruntime):

1. **Appearance.** :func:`appearance_volume` cuts a fixed-size volume (:data:`APPEARANCE_SHAPE`)
   around each detected vertebra; the appearance network turns it into 23 logits (``C3 … S1``,
   :data:`~operators.core.levels.LABELLER_CLASSES`), recalibrated by :func:`temperature_softmax`.
2. **Context.** :func:`height_probability_map` paints each detection's probability vector over
   the detection's height span into a 1-D map ``P`` (23 × height bins, :class:`HeightMap`); the
   context network refines ``P`` into ``P'``. :func:`context_targets` gives the matching per-bin
   class targets for training, :func:`detection_bins` the bin at which to read ``P'`` for each
   detection at inference.
3. **Decoding.** :func:`beam_search_levels` finds the most probable *valid* level sequence, with
   the paper's penalties for missed detections and transitional vertebrae and its relabelling of
   double S1 / C3 detections as S2 / C2 (:class:`LabelSequence`).

Conventions: heights are LPS ``z`` in mm (+z superior). Detections and map bins run from caudal
(index 0) to cranial. Class indices follow ``LABELLER_CLASSES`` (C3 = 0 … S1 = 22), so going up
the spine the class index decreases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from operators.core.geometry import VolumeGeometry
from operators.core.levels import LABELLER_CLASSES, SACRAL_SEGMENTS_BELOW_S1, TRANSITIONAL_AFTER

if TYPE_CHECKING:  # only the attributes are used, so the detector module is not a runtime import
    from operators.core.vertebra_detection import Vertebra3D

#: Input of the appearance network: (lateral slices, rows = superior → inferior, columns =
#: anterior → posterior) samples.
APPEARANCE_SHAPE: tuple[int, int, int] = (16, 112, 112)
#: Softmax temperature recalibrating the appearance network's logits (SpineNetV2 §3.2 step 3:
#: ``softmax(logits / T)`` with T = 10).
TEMPERATURE: float = 10.0
#: Height of one bin of the height-probability map, in mm.
HEIGHT_BIN_MM: float = 2.0
#: Number of labeller classes (C3 … S1).
N_CLASSES: int = len(LABELLER_CLASSES)
#: The context network halves the height axis three times, so its input length must be a
#: multiple of this (:func:`pad_bins`).
CONTEXT_SIZE_MULTIPLE: int = 8

#: In-plane side of the appearance box as a multiple of the vertebra's larger in-plane size: the
#: tight box grown by 100 % on each side (SpineNetV2 §3.2 step 1).
_IN_PLANE_BOX_FACTOR = 3.0
#: The lateral side is never less than this many slice spacings, so that a box in thick slices
#: still holds the body's neighbouring slices.
_MIN_LATERAL_SLICES = 3.0

_S1 = LABELLER_CLASSES.index("S1")
_C3 = LABELLER_CLASSES.index("C3")
#: S1 may repeat this many times going up without penalty: the lower bodies are the sacral
#: segments S2…S5 below it. A double C3 (C2 above it) is free as well.
_SACRAL_REPEATS = len(SACRAL_SEGMENTS_BELOW_S1)
#: Repeat counts a search state tracks (0 = the class has not repeated).
_REPEAT_STATES = _SACRAL_REPEATS + 1
#: A double detection of these classes (L5, T12) means a transitional vertebra: the lower one is
#: the transitional level (L6, T13).
_TRANSITIONAL_DOUBLES: dict[int, str] = {
    LABELLER_CLASSES.index(parent): name for name, parent in TRANSITIONAL_AFTER.items()
}
#: Longest sequence any spine can be labelled with: every class once, plus S2…S5, C2 and one
#: transitional vertebra.
MAX_LABELLED_DETECTIONS: int = N_CLASSES + _SACRAL_REPEATS + 2
#: Most detections the labeller takes from one study: C2 … S1, one sacral segment and one
#: transitional vertebra. Beyond that the least confident go first: a whole spine with more
#: detections holds strays (generated L6 study 911000: one 105 mm above C2, which, labelled, moved
#: every level of the spine down by one).
MAX_SPINE_DETECTIONS: int = N_CLASSES + 3
#: Default penalty of a transitional vertebra (L6, T13) in the beam search. The context network's
#: refined probabilities are sharp (a wrong level often at 1.00), so a shifted reading of the bodies
#: above costs the search more than 0.02 and it called a body L6 or T13 instead. Chosen from
#: 0.02 / 0.002 / 0.0002 on the real validation subjects and the synthetic tuning studies (seeds
#: 920000-920004; standard, L6 and T13 spines) with the shipped networks: 0.0002 removed both false
#: L6 of the real VB3 validation split and changed nothing on the tuning studies.
TRANSITIONAL_PENALTY = 2e-4
#: Probabilities are floored here before taking logs, so that a class the network rules out
#: completely is very unlikely rather than impossible.
_PROBABILITY_FLOOR = 1e-30


# ------------------------------------------------------------------------------------------------
# Appearance
# ------------------------------------------------------------------------------------------------
def _canonical_axes(geometry: VolumeGeometry) -> tuple[int, int, np.ndarray]:
    """Which stack index axes become the appearance volume's (lateral, row, column) axes.

    The appearance network must see every vertebra the same way up whatever the stack's
    orientation, so the output axes are the stack's own axes, permuted and flipped: the output
    row axis is the in-plane axis closer to the patient's z, pointing inferior; the output column
    axis is the other in-plane axis, pointing posterior (+y); the lateral axis is the slice axis,
    pointing towards the patient's left (+x).

    Returns:
        ``(row_axis, column_axis, signs)``: the stack index axes (1 = row, 2 = column) of the
        output rows and columns, and ``(3,)`` ±1 factors for steps along the output (lateral, row,
        column) axes.
    """
    steps = geometry.affine[:3, :3]  # column k = LPS step of index axis k
    z_share = np.abs(steps[2]) / np.linalg.norm(steps, axis=0)  # |cos| of each axis with the patient's z
    row_axis = 1 if z_share[1] >= z_share[2] else 2
    column_axis = 3 - row_axis
    signs = np.array(
        [
            1.0 if steps[0, 0] >= 0 else -1.0,  # towards the patient's left
            -1.0 if steps[2, row_axis] > 0 else 1.0,  # towards inferior
            1.0 if steps[1, column_axis] >= 0 else -1.0,  # towards posterior
        ]
    )
    return row_axis, column_axis, signs


def appearance_box_mm(geometry: VolumeGeometry, vertebra: Vertebra3D) -> tuple[float, float]:
    """Size of the box :func:`appearance_volume` samples around ``vertebra``.

    Args:
        geometry: geometry of the stack the vertebra was detected in.
        vertebra: the detection; uses ``corners_mm`` and ``height_mm``.

    Returns:
        ``(in_plane_side_mm, lateral_side_mm)``: the side of the square in the slice plane
        (3 × the larger of height and antero-posterior depth, never less than one pixel) and the
        lateral side: the same as the in-plane side (a cube), at least 3 slice spacings.

    The paper sizes the lateral side by the slices the body was detected on. That extent is the
    detector's, not the body's: a detector stops short of a body's lateral edges, where its
    section is small, and by how much depends on the scanner. On the real FastCleverSeg
    validation scans the shipped detector saw 63 % of the slices the masks cover, on generated
    studies 94 %, so the network, which learns from true outlines, saw boxes at run time up to
    twice narrower than any it was trained on (appearance top-1 on detected real bodies 0.56
    against 0.91 on their true outlines). The in-plane size comes from the corners, which the
    detector places well everywhere, and a body's width follows its depth (25–50 mm wide, 15–37 mm
    deep), so a cube holds the body with its lateral surroundings at every level.
    """
    corners = np.asarray(vertebra.corners_mm, dtype=float)
    # VERTEBRA_CORNERS order: 0 sup-ant, 1 sup-post, 2 inf-post, 3 inf-ant.
    depth_mm = 0.5 * (np.linalg.norm(corners[0] - corners[1]) + np.linalg.norm(corners[3] - corners[2]))
    slice_mm, row_mm, column_mm = (float(s) for s in geometry.spacing_mm)
    in_plane = _IN_PLANE_BOX_FACTOR * max(float(vertebra.height_mm), float(depth_mm), row_mm, column_mm)
    return in_plane, max(in_plane, _MIN_LATERAL_SLICES * slice_mm)


def _sample_offsets(n: int, side: float) -> np.ndarray:
    """``n`` sample positions (mm) spread evenly over ``[-side/2, side/2]``, at the centres of
    ``n`` equal cells, so the box's centre falls midway between the two middle samples."""
    return ((np.arange(n) + 0.5) / n - 0.5) * side


def appearance_volume(pixels: np.ndarray, geometry: VolumeGeometry, vertebra: Vertebra3D) -> np.ndarray:
    """Resample the neighbourhood of one vertebra into the appearance network's input.

    Args:
        pixels: ``(S, R, C)`` stack, already intensity-normalised
            (``vertebra_detection.normalise_intensity``).
        geometry: the stack's geometry (its shape must match ``pixels``).
        vertebra: a detection from this stack (``centroid_mm`` (3,) LPS, ``corners_mm`` (4, 3)
            LPS).

    Returns:
        float32 array of :data:`APPEARANCE_SHAPE` ``(lateral, rows, columns)``. The box is
        centred on ``vertebra.centroid_mm`` and aligned with the stack's axes
        (:func:`appearance_box_mm` gives its size); axes run left-wards, superior → inferior and
        anterior → posterior whatever the stack's orientation (see :func:`_canonical_axes`).
        Trilinear interpolation; samples outside the stack are 0.

    Raises:
        ValueError: if ``pixels`` does not have the geometry's shape.
    """
    if tuple(pixels.shape) != tuple(geometry.shape):
        raise ValueError(f"pixels shape {pixels.shape} does not match geometry shape {geometry.shape}")
    in_plane, lateral = appearance_box_mm(geometry, vertebra)
    row_axis, column_axis, signs = _canonical_axes(geometry)
    spacing = geometry.spacing_mm
    n_lat, n_row, n_col = APPEARANCE_SHAPE
    # Offsets along each output axis, converted from mm to (signed) index steps of its stack axis.
    steps = (
        (0, signs[0] * _sample_offsets(n_lat, lateral) / spacing[0]),
        (row_axis, signs[1] * _sample_offsets(n_row, in_plane) / spacing[row_axis]),
        (column_axis, signs[2] * _sample_offsets(n_col, in_plane) / spacing[column_axis]),
    )
    centre = geometry.lps_to_index(np.asarray(vertebra.centroid_mm, dtype=float))
    coordinates = np.empty((3, n_lat, n_row, n_col), dtype=float)
    for output_axis, (stack_axis, offsets) in enumerate(steps):
        shape = [1, 1, 1]
        shape[output_axis] = -1
        coordinates[stack_axis] = centre[stack_axis] + offsets.reshape(shape)
    volume = ndimage.map_coordinates(
        np.asarray(pixels, dtype=np.float32), coordinates, order=1, mode="constant", cval=0.0, prefilter=False
    )
    return volume.astype(np.float32, copy=False)


def temperature_softmax(logits: np.ndarray, temperature: float = TEMPERATURE) -> np.ndarray:
    """Recalibrated class probabilities ``softmax(logits / temperature)`` over the last axis.

    Args:
        logits: ``(..., 23)`` appearance-network outputs.
        temperature: > 0; larger values flatten the distribution.

    Returns:
        float64 array of the same shape, each row summing to 1 (numerically stable for large logits).
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    scaled = np.asarray(logits, dtype=float) / temperature
    scaled = scaled - np.max(scaled, axis=-1, keepdims=True)
    weights = np.exp(scaled)
    return weights / np.sum(weights, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# Height-probability map
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeightMap:
    """The height-probability map ``P`` (or ``P'``) of one stack.

    Attributes:
        z0_mm: height (LPS z, mm) of the centre of bin 0; bin ``b`` is centred on
            ``z0_mm + b * HEIGHT_BIN_MM``. Bins run from caudal (0) to cranial.
        probabilities: ``(23, n_bins)`` float32 class probabilities per bin, zero where no
            detection spans the bin.
    """

    z0_mm: float
    probabilities: np.ndarray

    @property
    def n_bins(self) -> int:
        return int(self.probabilities.shape[1])

    @property
    def heights_mm(self) -> np.ndarray:
        """``(n_bins,)`` height of each bin centre (mm)."""
        return self.z0_mm + HEIGHT_BIN_MM * np.arange(self.n_bins)

    def bin_of(self, z_mm: float | np.ndarray) -> np.ndarray:
        """Index of the bin whose centre is nearest to each height (int64, same shape as ``z_mm``).

        Not clipped: heights outside the map give indices outside ``[0, n_bins)``.
        """
        return np.rint((np.asarray(z_mm, dtype=float) - self.z0_mm) / HEIGHT_BIN_MM).astype(np.int64)


def _span_bins(spans_mm: np.ndarray, height_map: HeightMap) -> list[tuple[int, int]]:
    """Bin range ``[first, last]`` (inclusive) each detection's span fills.

    The rule shared by :func:`height_probability_map` and :func:`context_targets`: a detection
    spanning heights ``z_inferior … z_superior`` fills every bin whose centre lies within the
    span (SpineNetV2 §3.2 step 3, ``P(h) = p_a`` for ``h1 ≤ h ≤ h2``); a span narrower than a bin
    that contains no bin centre fills the one bin nearest to its middle. Ranges are clipped to
    the map (a span wholly outside it fills no bin).
    """
    ranges: list[tuple[int, int]] = []
    for low, high in np.sort(np.asarray(spans_mm, dtype=float).reshape(-1, 2), axis=1):
        first = int(math.ceil((low - height_map.z0_mm) / HEIGHT_BIN_MM - 1e-9))
        last = int(math.floor((high - height_map.z0_mm) / HEIGHT_BIN_MM + 1e-9))
        if last < first:
            first = last = int(height_map.bin_of(0.5 * (low + high)))
        first, last = max(first, 0), min(last, height_map.n_bins - 1)
        # A span wholly outside the map fills nothing: (0, -1) slices as ``[0:0]``.
        ranges.append((first, last) if first <= last else (0, -1))
    return ranges


def _check_spans(spans_mm: np.ndarray, n: int) -> np.ndarray:
    spans = np.asarray(spans_mm, dtype=float)
    if spans.shape != (n, 2) or not np.all(np.isfinite(spans)):
        raise ValueError(f"spans_mm must be a finite ({n}, 2) array, got shape {spans.shape}")
    return spans


def height_probability_map(spans_mm: np.ndarray, probabilities: np.ndarray, margin_mm: float = 60.0) -> HeightMap:
    """Build the height-probability map ``P`` from the detections of one stack.

    Args:
        spans_mm: ``(n, 2)`` ``(z_inferior, z_superior)`` of each detection in LPS mm (from its
            corners; the two values may come in either order).
        probabilities: ``(n, 23)`` temperature-softmaxed appearance probabilities.
        margin_mm: the map extends this far below the lowest and above the highest detection,
            so that the context network sees where the spine would continue.

    Returns:
        A :class:`HeightMap` with bin 0 centred ``margin_mm`` below the lowest span. Each
        detection fills the bins of its span (:func:`_span_bins`) with its probability vector;
        where spans overlap, the later detection (higher row index) overwrites the earlier one.
        With no detections the map has zero bins (``z0_mm = 0``).

    Raises:
        ValueError: on mismatched or non-finite inputs.
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != N_CLASSES or not np.all(np.isfinite(probs)):
        raise ValueError(f"probabilities must be a finite (n, {N_CLASSES}) array, got shape {probs.shape}")
    spans = _check_spans(spans_mm, probs.shape[0])
    if len(spans) == 0:
        return HeightMap(0.0, np.zeros((N_CLASSES, 0), dtype=np.float32))
    z0 = float(spans.min()) - margin_mm
    n_bins = int(math.ceil((float(spans.max()) + margin_mm - z0) / HEIGHT_BIN_MM)) + 1
    height_map = HeightMap(z0, np.zeros((N_CLASSES, n_bins), dtype=np.float32))
    for (first, last), row in zip(_span_bins(spans, height_map), probs):
        height_map.probabilities[:, first : last + 1] = row[:, None]
    return height_map


def context_targets(spans_mm: np.ndarray, class_indices: np.ndarray, height_map: HeightMap) -> np.ndarray:
    """Per-bin class targets for training the context network.

    Args:
        spans_mm: ``(n, 2)`` height spans of the (true) vertebrae, as for
            :func:`height_probability_map`.
        class_indices: ``(n,)`` class index of each vertebra in ``LABELLER_CLASSES`` order
            (C3 = 0 … S1 = 22).
        height_map: the map the targets go with (defines the bins).

    Returns:
        ``(n_bins,)`` int64: the class index filling each bin by the same span rule and overwrite
        order as :func:`height_probability_map`, ``-1`` where no vertebra spans the bin (the loss
        ignores those bins). Spans reaching beyond the map are clipped to it.
    """
    classes = np.asarray(class_indices, dtype=np.int64).reshape(-1)
    if np.any((classes < 0) | (classes >= N_CLASSES)):
        raise ValueError(f"class indices must lie in [0, {N_CLASSES})")
    spans = _check_spans(spans_mm, len(classes))
    targets = np.full(height_map.n_bins, -1, dtype=np.int64)
    for (first, last), cls in zip(_span_bins(spans, height_map), classes):
        targets[first : last + 1] = cls
    return targets


def pad_bins(probabilities: np.ndarray) -> np.ndarray:
    """Pad a ``(23, B)`` map with empty (zero) bins at the cranial end so that ``B`` becomes a
    multiple of :data:`CONTEXT_SIZE_MULTIPLE`, the context network's size constraint. Bin indices
    (and so :func:`detection_bins`) are unchanged by the padding."""
    extra = (-probabilities.shape[1]) % CONTEXT_SIZE_MULTIPLE
    return np.pad(probabilities, ((0, 0), (0, extra)))


def detection_bins(height_map: HeightMap, centroid_z_mm: np.ndarray) -> np.ndarray:
    """Bin of each detection's centroid, where ``P'`` is read before the beam search.

    Args:
        height_map: the map (``P`` or ``P'``, same bins).
        centroid_z_mm: ``(n,)`` centroid heights (LPS z, mm).

    Returns:
        ``(n,)`` int64 bin indices; ``P'[:, detection_bins(...)].T`` is the ``(n, 23)`` input of
        :func:`beam_search_levels`.

    Raises:
        ValueError: if a centroid lies outside the map.
    """
    bins = height_map.bin_of(np.asarray(centroid_z_mm, dtype=float).reshape(-1))
    if np.any((bins < 0) | (bins >= height_map.n_bins)):
        raise ValueError("a detection centroid lies outside the height-probability map")
    return bins


# ------------------------------------------------------------------------------------------------
# Beam search
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelSequence:
    """Decoded levels of a stack's detections (caudal → cranial, like the input rows).

    Attributes:
        levels: one name per detection: a ``LABELLER_CLASSES`` level, or ``"S2"`` … ``"S5"``
            (sacral segments below S1; the caller drops them), ``"C2"`` (the upper of two C3s) or
            ``"L6"`` / ``"T13"`` (transitional vertebrae).
        probabilities: per detection, the input probability of the class it was scored as (the
            S1 column for an S2, the L5 column for an L6, …).
        log_score: natural log of the sequence score: product of those probabilities and the
            penalties applied (0.0 for no detections).
    """

    levels: tuple[str, ...]
    probabilities: tuple[float, ...]
    log_score: float


def _relabel(classes: list[int]) -> list[str]:
    """Level names of a valid class sequence (caudal → cranial), resolving repeated classes."""
    levels = [LABELLER_CLASSES[c] for c in classes]
    top_of_sacrum = next((i for i, c in enumerate(classes) if c != _S1), len(classes)) - 1
    for i in range(top_of_sacrum):
        levels[i] = SACRAL_SEGMENTS_BELOW_S1[top_of_sacrum - i - 1]  # S2 directly below S1, then S3, …
    for i in range(max(top_of_sacrum, 0) + 1, len(classes)):
        if classes[i] != classes[i - 1]:
            continue
        if classes[i] == _C3:
            levels[i] = "C2"  # the upper of two C3s is C2
        else:
            levels[i - 1] = _TRANSITIONAL_DOUBLES[classes[i]]  # the lower of two L5s / T12s
    return levels


def _room_above(transitional_allowed: bool) -> np.ndarray:
    """``(23, 5, 2)``: how many more detections a sequence in state ``(c, d, t)`` can still take
    without a zero-probability step (see :func:`beam_search_levels` for the state).

    Going up one class at a time costs nothing, so the room is ``c`` classes, plus the free C3
    double (unless just used), plus the S1 repeats not yet used, plus one transitional double if
    none is used yet, one is still reachable and its penalty is not 0.
    """
    room = np.zeros((N_CLASSES, _REPEAT_STATES, 2), dtype=np.int64)
    for c, d, t in np.ndindex(room.shape):
        room[c, d, t] = c + int(not (c == _C3 and d >= 1)) + (_SACRAL_REPEATS - d if c == _S1 else 0)
        if transitional_allowed and t == 0:
            room[c, d, t] += int(any(k < c or (k == c and d == 0) for k in _TRANSITIONAL_DOUBLES))
    return room


def beam_search_levels(
    probabilities: np.ndarray,
    *,
    touching: np.ndarray | None = None,
    beam_width: int = 100,
    skip_penalty: float = 0.05,
    transitional_penalty: float = TRANSITIONAL_PENALTY,
) -> LabelSequence:
    """Most probable valid level sequence for a stack's detections (SpineNetV2 §3.2 steps 5–6).

    Sequences grow from the lowest detection upwards; a sequence's score is the product of its
    detections' class probabilities and its penalties (added in log space). Going up, the class
    index must strictly decrease, except:

    * up to four more S1s directly above the lowest S1: no penalty; the bodies below the top S1
      are the sacral segments ``"S2"`` (directly below it), ``"S3"``, … SpineNetV2 allows one
      (S2); the detector finds up to three bodies below S1 on generated studies (835053: two
      sacral segments below S1, which could then only be labelled by calling S1 an L6);
    * a second C3 directly above a C3: no penalty; the upper is relabelled ``"C2"``;
    * a second L5 directly above an L5 (the lower is ``"L6"``) or a second T12 directly above a
      T12 (the lower is ``"T13"``): × ``transitional_penalty``, at most one per sequence;
    * no other class appears twice in a row, and none but S1 three times;
    * skipping ``k`` levels between neighbours (a missed detection): × ``skip_penalty ** k``, and
      never between two detections marked ``touching`` (no body fits between them, so none can
      have been missed there).

    Hypotheses are recombined: two partial sequences ending in the same state (last class, how
    often it has repeated, whether a transitional vertebra was used) have identical futures, so
    only the better one is kept. At most 23 × 2 + 2 × (1 + 4 + 1) = 58 states are reachable (every
    class unrepeated, with or without a transitional vertebra; the C3 double, the S1 repeats and
    the transitional double itself), so with the default width of 100 the search is exact (a
    Viterbi decode); smaller widths keep the
    ``beam_width`` best states per step. States without room for the detections still above
    them are dropped before pruning, so even a width of 1 ends in a valid sequence.

    Args:
        probabilities: ``(n, 23)`` class probabilities of the detections ordered caudal →
            cranial (row 0 the lowest); usually ``P'`` read at :func:`detection_bins`.
            Probabilities are floored at 1e-30 before taking logs, so that a class the network
            rules out is very unlikely rather than impossible.
        touching: ``(n - 1,)`` bool, optional: entry ``i`` marks detections ``i`` and ``i + 1`` as
            touching bodies (:func:`~operators.core.vertebra_detection.touching_neighbours`).
            SpineNetV2's search prices a missed level the same wherever it falls; with sharp
            context probabilities that let it skip a level between two touching bodies to keep both
            halves of a study at their own confident reading (generated study 835024: T12 → L2 over
            the true L1, every level above one too high).
        beam_width: hypotheses kept per step (≥ 1).
        skip_penalty, transitional_penalty: multiplicative penalties in ``[0, 1]`` (0 forbids).

    Returns:
        The best :class:`LabelSequence`; empty (log score 0) for no detections. Ties are broken
        deterministically.

    Raises:
        ValueError: on a malformed input, or when no valid sequence is that long: more than
            :data:`MAX_LABELLED_DETECTIONS` detections (one fewer when ``transitional_penalty``
            is 0). The caller decides which detections to drop.
    """
    probs = np.asarray(probabilities, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != N_CLASSES or not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError(f"probabilities must be a non-negative finite (n, {N_CLASSES}) array, got shape {probs.shape}")
    if beam_width < 1:
        raise ValueError("beam_width must be at least 1")
    if not (0.0 <= skip_penalty <= 1.0 and 0.0 <= transitional_penalty <= 1.0):
        raise ValueError("penalties must lie in [0, 1]")
    n = probs.shape[0]
    pairs = max(n - 1, 0)
    if touching is not None and np.shape(touching) != (pairs,):
        raise ValueError(f"touching must have one entry per pair of neighbours ({pairs}), got shape {np.shape(touching)}")
    if n == 0:
        return LabelSequence((), (), 0.0)
    room = _room_above(transitional_penalty > 0)
    if n > 1 + int(room[:, 0, 0].max()):
        raise ValueError(f"{n} detections cannot be labelled: no valid level sequence is that long")

    with np.errstate(divide="ignore"):
        log_p = np.log(np.maximum(probs, _PROBABILITY_FLOOR))
        log_skip = np.log(skip_penalty)
        log_transitional = np.log(transitional_penalty)
    # step[c, c2]: log penalty of class c2 directly above class c (c2 < c), -inf otherwise.
    c_from, c_to = np.meshgrid(np.arange(N_CLASSES), np.arange(N_CLASSES), indexing="ij")
    gap = c_from - c_to - 1
    with np.errstate(invalid="ignore"):  # 0 * -inf for adjacent classes when skip_penalty == 0
        step = np.where(gap >= 0, np.where(gap > 0, gap * log_skip, 0.0), -np.inf)
    step_without_skip = np.where(gap == 0, 0.0, -np.inf)
    steps = [step_without_skip if touching is not None and touching[i - 1] else step for i in range(1, n)]

    def prune(scores: np.ndarray, remaining: int) -> None:
        scores[room < remaining] = -np.inf
        if beam_width < scores.size:
            flat = scores.reshape(-1)
            flat[np.argsort(-flat, kind="stable")[beam_width:]] = -np.inf

    # State (c, d, t): last class c, repeated d times directly below, t = a transitional vertebra is used.
    shape = (N_CLASSES, _REPEAT_STATES, 2)
    scores = np.full(shape, -np.inf)
    scores[:, 0, 0] = log_p[0]
    prune(scores, n - 1)
    back: list[np.ndarray] = []  # per step >= 1: flat index of the predecessor state
    for i in range(1, n):
        new = np.full(shape, -np.inf)
        parent = np.zeros(shape, dtype=np.int64)
        for t in (0, 1):
            # Decreasing class: from (c, any d, t) to (c2, 0, t).
            best_d = np.argmax(scores[:, :, t], axis=1)  # (23,)
            best = scores[np.arange(N_CLASSES), best_d, t]
            candidates = best[:, None] + steps[i - 1]  # (from, to)
            c_best = np.argmax(candidates, axis=0)
            new[:, 0, t] = candidates[c_best, np.arange(N_CLASSES)] + log_p[i]
            parent[:, 0, t] = np.ravel_multi_index((c_best, best_d[c_best], np.full(N_CLASSES, t)), shape)
            new[_C3, 1, t] = scores[_C3, 0, t] + log_p[i, _C3]
            parent[_C3, 1, t] = np.ravel_multi_index((_C3, 0, t), shape)
            for d in range(1, _REPEAT_STATES):
                new[_S1, d, t] = scores[_S1, d - 1, t] + log_p[i, _S1]
                parent[_S1, d, t] = np.ravel_multi_index((_S1, d - 1, t), shape)
        for c in _TRANSITIONAL_DOUBLES:
            new[c, 1, 1] = scores[c, 0, 0] + log_transitional + log_p[i, c]
            parent[c, 1, 1] = np.ravel_multi_index((c, 0, 0), shape)
        prune(new, n - 1 - i)
        scores = new
        back.append(parent.reshape(-1))

    state = int(np.argmax(scores.reshape(-1)))
    log_score = float(scores.reshape(-1)[state])
    classes = [int(np.unravel_index(state, shape)[0])]
    for parents in reversed(back):
        state = int(parents[state])
        classes.append(int(np.unravel_index(state, shape)[0]))
    classes.reverse()
    return LabelSequence(
        levels=tuple(_relabel(classes)),
        probabilities=tuple(float(probs[i, c]) for i, c in enumerate(classes)),
        log_score=log_score,
    )
