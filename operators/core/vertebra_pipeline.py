"""Detection and level labelling of a study's sagittal stacks: the core the two operators call.

The networks are passed in as plain callables (``numpy in → numpy out``) so this module stays free
of any runtime: the operators hand in onnxruntime sessions, tests and training hand in torch models
or fakes.

Flow (SpineNetV2 §2.1): every sagittal stack → detector grid → network (batched, tiled for large
fields of view; slices swept outwards from the middle until the spine ends) → per-slice
quadrilaterals → tracked across slices → fused over the sagittal series of the study → appearance
volumes → appearance network (logits averaged over the series that saw the body) →
height-probability map → context network → beam search → levels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from operators.core.dicom_io import LoadedStack, SeriesReadError, StudyScan
from operators.core.geometry import VolumeGeometry, resample_volume, sagittal_grid
from operators.core.level_labelling import (
    MAX_SPINE_DETECTIONS,
    appearance_volume,
    beam_search_levels,
    detection_bins,
    height_probability_map,
    pad_bins,
    temperature_softmax,
)
from operators.core.levels import LABELLER_CLASSES, LUMBAR, SACRAL_SEGMENTS_BELOW_S1
from operators.core.report import VertebraEntry
from operators.core.series_roles import SeriesDecision
from operators.core.study_warning import StudyWarning
from operators.core.threads import thread_map
from operators.core.vertebra_detection import (
    FusedVertebra,
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
    resample_to_grid,
    slice_grid,
    squeezed_between_bodies,
    touching_neighbours,
    track_across_slices,
)

#: A network as the core sees it: a float32 batch in, the first output out (an
#: :class:`~operators.core.onnx_models.OnnxModel`, a torch model wrapper, or a test fake).
Network = Callable[[np.ndarray], np.ndarray]

#: Names of the three networks in ``models/manifest.json``.
DETECTOR_MODEL = "vertebra_detector"
APPEARANCE_MODEL = "level_appearance"
CONTEXT_MODEL = "level_context"

#: Patches per detector call (bounds memory on large whole-spine slices).
DETECTOR_BATCH = 8

#: Levels the beam search may produce that are not reported as vertebrae (sacral segments below S1).
UNREPORTED_LEVELS = SACRAL_SEGMENTS_BELOW_S1


@dataclass(frozen=True)
class SagittalStack:
    """One sagittal stack ready for the networks.

    Attributes:
        series_instance_uid: its series.
        pixels: (slices, rows, cols) float32 after :func:`normalise_intensity`.
        geometry: index (slice, row, col) → LPS mm.
    """

    series_instance_uid: str
    pixels: np.ndarray
    geometry: VolumeGeometry

    @classmethod
    def from_pixels(cls, series_instance_uid: str, pixels: np.ndarray, geometry: VolumeGeometry) -> "SagittalStack":
        return cls(series_instance_uid, normalise_intensity(pixels), geometry)


@dataclass(frozen=True)
class LabelledVertebra:
    """A fused detection with its level (``"L4"``; ``"L6"``/``"T13"``/``"C2"`` from the beam search)."""

    level: str
    level_probability: float
    vertebra: FusedVertebra


def detect_in_stack(stack: SagittalStack, detector: Network) -> list[Vertebra3D]:
    """VFR detection on the slices of one stack that cut the spine (:func:`lateral_sweep`), tracked
    into 3D bodies."""
    grid = slice_grid(stack.geometry, stack.pixels.shape[1], stack.pixels.shape[2])
    grid_slices = resample_to_grid(stack.pixels, grid)
    quads_of: dict[int, list[SliceQuad]] = {}
    for slices in lateral_sweep(len(grid_slices), lambda index: bool(quads_of[index])):
        batch, origins = network_inputs(grid_slices[slices])
        outputs = np.concatenate([detector(batch[i : i + DETECTOR_BATCH]) for i in range(0, len(batch), DETECTOR_BATCH)])
        merged = merge_tiles(outputs, origins, grid.shape)
        quads_of.update({index: decode_slice(output, grid, index) for index, output in zip(slices, merged)})
    quads = [quad for index in sorted(quads_of) for quad in quads_of[index]]
    return track_across_slices(quads, stack.geometry, stack.series_instance_uid)


def detect_vertebrae(stacks: Sequence[SagittalStack], detector: Network) -> list[FusedVertebra]:
    """Bodies of the whole study, fused over its sagittal stacks, caudal → cranial."""
    geometry_of = {stack.series_instance_uid: stack.geometry for stack in stacks}

    def covers(series_instance_uid: str, point_mm: np.ndarray) -> bool:
        return bool(geometry_of[series_instance_uid].contains(np.asarray(point_mm)[None])[0])

    return fuse_series(
        [detect_in_stack(stack, detector) for stack in stacks], covers,
        series_uids=[stack.series_instance_uid for stack in stacks],
    )


def appearance_logits(vertebrae: Sequence[FusedVertebra], stacks: Sequence[SagittalStack], appearance: Network) -> np.ndarray:
    """(n, 23) appearance logits per fused body: the mean over the series that detected it, each
    series' fragments of the body joined into one detection (:func:`joined_per_series`)."""
    by_uid = {stack.series_instance_uid: stack for stack in stacks}
    geometries = {uid: stack.geometry for uid, stack in by_uid.items()}
    views = [joined_per_series(fused.members, geometries) for fused in vertebrae]
    members = [member for body in views for member in body]
    owners_array = np.asarray([index for index, body in enumerate(views) for _ in body])

    def volume(member: Vertebra3D) -> np.ndarray:
        stack = by_uid[member.series_instance_uid]
        return appearance_volume(stack.pixels, stack.geometry, member)

    logits = appearance(np.stack(thread_map(volume, members)).astype(np.float32))
    return np.stack([logits[owners_array == index].mean(axis=0) for index in range(len(vertebrae))])


def without_sacral_segments(probabilities: np.ndarray, vertebrae: Sequence[FusedVertebra]) -> list[int]:
    """Indices (caudal → cranial) of the bodies to label, leaving out detections of the sacrum.

    Sacral segments below S1 (S2, S3) and, in lateral slices, the sacral ala look like vertebral
    bodies and are sometimes detected. The paper's double-S1 rule covers one such body; this covers
    any number.

    The lumbosacral junction is an S1-rated body with a lumbar-rated body, or none, directly above
    it; where several qualify, the one rated most confidently (its S1 probability times the lumbar
    probability of the body above). Only sacrum and coccyx lie below it, so every body there is left
    out whatever it is rated: S1, or thoracic or cervical, an appearance the network never learnt (on
    generated studies the context network rated such segments T1 or C7, and labelling them shifted
    every level above). The lowest body is left out even when rated lumbar: at the bottom edge of the
    field of view the context network has no column below to read a level from (three segments below
    S1, the lowest rated L5, on generated studies). Any other body below the junction rated lumbar at
    least as confidently as the junction contradicts it; then every body is labelled and the beam
    search weighs the two readings. A less confident lumbar rating there is a sacral segment's: on
    generated lumbar studies (seeds 835000–835024) segments below an S1 and L5 rated 1.00 were rated
    L4 or L5 at 0.4–0.5, or formed a second S1-below-L4 junction, and labelling them moved every
    level up by three.

    Of the bodies left out, S1 is kept back: the most confidently detected one level with the
    junction (within half a body height; the ala sits beside S1, not above it).

    Args:
        probabilities: (n, 23) refined level probabilities, caudal → cranial.
        vertebrae: the n fused bodies in the same order.
    """
    rated = [LABELLER_CLASSES[c] for c in np.argmax(probabilities, axis=1)]
    lumbar = probabilities[:, [LABELLER_CLASSES.index(level) for level in LUMBAR]].sum(axis=1)
    s1 = probabilities[:, LABELLER_CLASSES.index("S1")]
    everything = list(range(len(vertebrae)))
    confidence = {k: float(s1[k] * (lumbar[k + 1] if k + 1 < len(rated) else 1.0))
                  for k, level in enumerate(rated) if level == "S1" and (k + 1 == len(rated) or rated[k + 1] in LUMBAR)}
    if not confidence:
        return everything
    junction = max(confidence, key=lambda k: (confidence[k], -k))  # a tie goes to the lower
    if junction == 0:
        return everything
    run = junction + 1
    if any(rated[i] in LUMBAR and lumbar[i] >= confidence[junction] for i in range(1, run)):
        return everything
    top = vertebrae[run - 1]
    level_with_top = [i for i in range(run) if vertebrae[i].centroid_mm[2] >= top.centroid_mm[2] - 0.5 * top.height_mm]
    sacrum_one = max(level_with_top, key=lambda i: vertebrae[i].detection_score)
    return [sacrum_one, *range(run, len(vertebrae))]


def label_vertebrae(
    vertebrae: Sequence[FusedVertebra], stacks: Sequence[SagittalStack], appearance: Network, context: Network
) -> tuple[list[LabelledVertebra], list[StudyWarning]]:
    """Levels of the fused bodies (caudal → cranial input order) by appearance, context and beam search.

    Detections far in front of or behind the column
    (:func:`~operators.core.vertebra_detection.far_from_column`), then beside it between two touching
    bodies (:func:`~operators.core.vertebra_detection.off_column`), then fragments squeezed between
    two touching bodies (:func:`~operators.core.vertebra_detection.squeezed_between_bodies`), are
    dropped first. Returns the labelled bodies (sacral segments below S1 dropped,
    :func:`without_sacral_segments`) and warnings (detections dropped, a body count too small to
    label with confidence).
    """
    if not vertebrae:
        return [], []
    warnings = []
    # Applied in turn: a stray beside the column must not count as a squeezed fragment's neighbour.
    for impossible, code, what in (
        (far_from_column, "OFF_COLUMN_DETECTION", "lying far in front of or behind the spinal column"),
        (off_column, "OFF_COLUMN_DETECTION", "lying beside the spinal column between two touching bodies"),
        (squeezed_between_bodies, "DUPLICATE_DETECTION",
         "on the column where no further body fits and less confident than the bodies around them "
         "(a disc, an endplate or a body detected twice)"),
    ):
        dropped = impossible(vertebrae)
        if dropped:
            warnings.append(StudyWarning(code, f"{len(dropped)} detection(s) {what} were dropped"))
            vertebrae = [v for i, v in enumerate(vertebrae) if i not in dropped]
    if len(vertebrae) > MAX_SPINE_DETECTIONS:
        # More bodies than a spine has (false positives, sacral segments): keep the most confident.
        keep = sorted(np.argsort([-v.detection_score for v in vertebrae])[:MAX_SPINE_DETECTIONS])
        warnings.append(StudyWarning(
            "TOO_MANY_DETECTIONS",
            f"{len(vertebrae)} vertebral bodies detected, more than a spine has: the "
            f"{len(vertebrae) - MAX_SPINE_DETECTIONS} least confident were dropped",
        ))
        vertebrae = [vertebrae[i] for i in keep]
    probabilities = temperature_softmax(appearance_logits(vertebrae, stacks, appearance))
    spans = np.array([[v.corners_mm[:, 2].min(), v.corners_mm[:, 2].max()] for v in vertebrae])
    height_map = height_probability_map(spans, probabilities)
    refined_logits = context(pad_bins(height_map.probabilities)[None].astype(np.float32))[0]
    refined = temperature_softmax(refined_logits.T, temperature=1.0)
    bins = detection_bins(height_map, np.array([v.centroid_mm[2] for v in vertebrae]))
    kept = without_sacral_segments(refined[bins], vertebrae)
    sequence = beam_search_levels(refined[bins][kept], touching=touching_neighbours([vertebrae[i] for i in kept]))
    labelled = [
        LabelledVertebra(level, float(probability), vertebrae[index])
        for level, probability, index in zip(sequence.levels, sequence.probabilities, kept)
        if level not in UNREPORTED_LEVELS
    ]
    if len(vertebrae) < 3:
        warnings.append(StudyWarning(
            "FEW_VERTEBRAE",
            f"only {len(vertebrae)} vertebral bodies found in the sagittal series: levels rest on appearance alone",
        ))
    return labelled, warnings


#: Series roles whose stacks the detector reads.
SAGITTAL_ROLES: tuple[str, ...] = ("sag_t1", "sag_t2", "sag_stir")

#: Largest plausible extent of a volume along any axis, mm (a composed whole-spine series is ≤ ~1000 mm).
MAX_FIELD_OF_VIEW_MM = 1500.0
#: Smallest: an image narrower than this cannot show one vertebral body with its neighbours.
MIN_FIELD_OF_VIEW_MM = 30.0

#: Sagittal reformat of an axial CT when a study has no sagittal MR: ±40 mm of the volume's centre
#: (a targeted spine CT is centred on the spine) in 4 mm slices of 1 mm pixels, like an MR slab.
CT_REFORMAT_HALF_WIDTH_MM = 40.0
CT_REFORMAT_SLICE_MM = 4.0
CT_REFORMAT_PIXEL_MM = 1.0


def sagittal_stacks(study: StudyScan, decisions: Sequence[SeriesDecision]) -> tuple[list[SagittalStack], list[StudyWarning]]:
    """Load the pixels of every series the selector gave a sagittal role (its main stack).

    Without any usable sagittal MR, an axial CT (role ``ct_axial``) is reformatted to sagittal
    (:data:`CT_REFORMAT_HALF_WIDTH_MM` …) and used instead, with a warning saying so. A series that
    cannot be decoded, or has no usable geometry, is skipped with a warning; the others are used.
    """
    stacks: list[SagittalStack] = []
    warnings: list[StudyWarning] = []
    for decision in decisions:
        if decision.role in SAGITTAL_ROLES:
            loaded = _load_main_stack(study, decision, warnings)
            if loaded is not None:
                stacks.append(SagittalStack.from_pixels(decision.series_instance_uid, loaded.pixels, loaded.geometry))
    if not stacks:
        for decision in decisions:
            if decision.role == "ct_axial":
                loaded = _load_main_stack(study, decision, warnings)
                if loaded is None:
                    continue
                grid = sagittal_grid(loaded.geometry, CT_REFORMAT_HALF_WIDTH_MM, CT_REFORMAT_SLICE_MM, CT_REFORMAT_PIXEL_MM)
                pixels = resample_volume(loaded.pixels, loaded.geometry, grid, fill=float(loaded.pixels.min()))
                stacks.append(SagittalStack.from_pixels(decision.series_instance_uid, pixels, grid))
                warnings.append(StudyWarning(
                    "CT_SAGITTAL_REFORMAT",
                    "no sagittal MR series: vertebrae were detected on a sagittal reformat of the axial CT",
                    decision.series_instance_uid,
                ))
                break
    if not stacks:
        warnings.append(StudyWarning(
            "NO_SAGITTAL_SERIES", "no usable sagittal MR series or axial CT: vertebrae were not detected or labelled",
        ))
    return stacks, warnings


def _load_main_stack(study: StudyScan, decision: SeriesDecision, warnings: list[StudyWarning]) -> LoadedStack | None:
    """The decision's main stack with pixels, or ``None`` (and a warning) when it cannot be used."""
    if not decision.stack_indices:
        return None
    series = study.series_by_uid(decision.series_instance_uid)
    try:
        loaded = series.stacks[decision.stack_indices[0]].load()
    except SeriesReadError as error:
        warnings.append(StudyWarning("SERIES_UNREADABLE", str(error), decision.series_instance_uid))
        return None
    warnings.extend(loaded.warnings)
    if loaded.geometry is None:
        warnings.append(StudyWarning(
            "NO_GEOMETRY", f"{series.label()}: no usable slice geometry, not used for detection",
            decision.series_instance_uid,
        ))
        return None
    extent_mm = np.asarray(loaded.geometry.shape) * loaded.geometry.spacing_mm
    if np.any(extent_mm > MAX_FIELD_OF_VIEW_MM) or np.any(extent_mm[1:] < MIN_FIELD_OF_VIEW_MM):
        # A wrong PixelSpacing would otherwise blow the image up onto a detector grid of metres.
        warnings.append(StudyWarning(
            "IMPLAUSIBLE_GEOMETRY",
            f"{series.label()}: the volume would span {' x '.join(f'{e:.3g}' for e in extent_mm)} mm "
            "(PixelSpacing or slice positions wrong?), not used for detection",
            decision.series_instance_uid,
        ))
        return None
    return loaded


@dataclass(frozen=True)
class VertebraFindings:
    """What detection + labelling hand to the report: entries in report form and the stage warnings."""

    vertebrae: tuple[VertebraEntry, ...]
    warnings: tuple[StudyWarning, ...]


def report_entries(labelled: Sequence[LabelledVertebra]) -> tuple[VertebraEntry, ...]:
    """Report entries, cranial → caudal like a radiologist reads them."""
    entries = [
        VertebraEntry(
            level=item.level,
            level_probability=item.level_probability,
            series_instance_uid=item.vertebra.series_instance_uid,
            centroid_mm=item.vertebra.centroid_mm.tolist(),
            corners_mm=item.vertebra.corners_mm.tolist(),
            detection_score=item.vertebra.detection_score,
        )
        for item in labelled
    ]
    return tuple(reversed(entries))
