"""Disc grading of a study: the core the volume-extractor and grader operators call, and the
training cache imports, so that a network sees in training exactly what it sees in the app.

Flow: the sagittal stacks the detector loaded + every stack of the axial T2 series → per-disc views
(:func:`operators.core.volume_extraction.extract_disc_views`, SpineNetV2 §3.3, Park §4.1) → two
networks per disc:

* the SpineNetV2 grader on a 2-channel sagittal volume (T2 or STIR, T1) → the eleven SpineNetV2
  gradings (every disc);
* the multi-view grader (Park §2) on the slices of sagittal T1, sagittal T2/STIR and the axial T2
  slab as tokens → the five RSNA 2024 conditions (lumbar discs L1/L2 … L5/S1 only).

Networks are plain callables (numpy in → numpy out) as in :mod:`operators.core.vertebra_pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from operators.core.dicom_io import StudyScan
from operators.core.grading_outputs import rsna_probabilities, spinenet_probabilities
from operators.core.levels import RSNA_DISCS
from operators.core.report import DiscEntry, VertebraEntry
from operators.core.series_roles import SeriesDecision, load_role_stacks
from operators.core.study_warning import StudyWarning
from operators.core.vertebra_pipeline import Network, SagittalStack
from operators.core.volume_extraction import (
    AXIAL_SLAB_SHAPE,
    DISC_VOLUME_SHAPE,
    DiscViews,
    SeriesVolume,
    extract_disc_views,
)

#: Names of the two grading networks in ``models/manifest.json``.
SPINENET_MODEL = "disc_grader"
MULTIVIEW_MODEL = "rsna_grader"

#: Sagittal roles feeding channel 0 of the SpineNetV2 grader, in preference order (SpineNetV2 grades
#: on T2; a STIR shows the same fluid-bright disc and canal when a study has no T2).
T2_LIKE_ROLES: tuple[str, ...] = ("sag_t2", "sag_stir")
#: Channels of the SpineNetV2 grader input: T2-like, T1. A missing sequence is all zeros.
SPINENET_CHANNELS: tuple[str, ...] = ("sag_t2", "sag_t1")

#: Views of the multi-view grader, by token view id; id ``len(MULTIVIEW_VIEWS)`` marks padding.
MULTIVIEW_VIEWS: tuple[str, ...] = ("sag_t1", "sag_t2", "ax_t2")
PADDING_VIEW = len(MULTIVIEW_VIEWS)
#: Slices per view in the token sequence (sagittal volumes, axial slab).
_VIEW_SLICES: tuple[int, ...] = (DISC_VOLUME_SHAPE[0], DISC_VOLUME_SHAPE[0], AXIAL_SLAB_SHAPE[0])
#: Tokens per disc: every slice of every view (missing views are padding).
MULTIVIEW_TOKENS = sum(_VIEW_SLICES)

#: The multi-view network as the core sees it: ``(slices (B, N, H, W), tokens (B, N, 3)) → logits``.
MultiViewNetwork = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Discs per network call (bounds memory on whole-spine studies).
GRADING_BATCH = 8


def grading_sources(
    study: StudyScan, decisions: Sequence[SeriesDecision], stacks: Sequence[SagittalStack]
) -> tuple[list[SeriesVolume], list[StudyWarning]]:
    """The views grading reads: the detector's sagittal stacks with their roles, plus every stack
    of the axial T2 series (angled per-disc stacks are separate stacks of one series).

    An axial stack that cannot be decoded or has no geometry is skipped with a warning.
    """
    role_of = {decision.series_instance_uid: decision.role for decision in decisions}
    sources = [
        SeriesVolume(stack.series_instance_uid, role_of[stack.series_instance_uid], stack.pixels, stack.geometry)
        for stack in stacks if role_of.get(stack.series_instance_uid) in (*T2_LIKE_ROLES, "sag_t1")
    ]
    loaded, warnings = load_role_stacks(study, decisions, ("ax_t2",))
    sources += [SeriesVolume(decision.series_instance_uid, "ax_t2", stack.pixels, stack.geometry) for decision, stack in loaded]
    return sources, warnings


def _t2_like(views: DiscViews):
    return next((views.sagittal[role] for role in T2_LIKE_ROLES if role in views.sagittal), None)


def spinenet_input(views: DiscViews) -> np.ndarray:
    """``(2, 9, 112, 224)`` float32 SpineNetV2 grader input: T2 (or STIR), T1; zeros where missing."""
    volume = np.zeros((len(SPINENET_CHANNELS), *DISC_VOLUME_SHAPE), dtype=np.float32)
    for channel, extracted in enumerate((_t2_like(views), views.sagittal.get("sag_t1"))):
        if extracted is not None:
            volume[channel] = extracted.pixels
    return volume


def multiview_input(views: DiscViews) -> tuple[np.ndarray, np.ndarray]:
    """Token sequence of one disc for the multi-view grader.

    Returns:
        ``slices`` ``(MULTIVIEW_TOKENS, 112, 224)`` float32 — the 9 sagittal T1 slices, the 9 sagittal
        T2/STIR slices, then the axial slab slices; and ``tokens`` ``(MULTIVIEW_TOKENS, 3)`` int64 —
        (view id, slice order within the view, RSNA disc index). A missing view's tokens carry
        :data:`PADDING_VIEW` and zero pixels; the network masks them.
    """
    level = RSNA_DISCS.index(views.frame.level) if views.frame.level in RSNA_DISCS else 0
    slices = np.zeros((MULTIVIEW_TOKENS, *DISC_VOLUME_SHAPE[1:]), dtype=np.float32)
    tokens = np.zeros((MULTIVIEW_TOKENS, 3), dtype=np.int64)
    tokens[:, 2] = level
    start = 0
    for view_id, (view, n_slices) in enumerate(zip(MULTIVIEW_VIEWS, _VIEW_SLICES)):
        extracted = {"sag_t1": views.sagittal.get("sag_t1"), "sag_t2": _t2_like(views), "ax_t2": views.axial}[view]
        block = slice(start, start + n_slices)
        tokens[block, 1] = np.arange(n_slices)
        if extracted is None:
            tokens[block, 0] = PADDING_VIEW
        else:
            tokens[block, 0] = view_id
            slices[block] = extracted.pixels
        start += n_slices
    return slices, tokens


def grade_discs(views: Sequence[DiscViews], spinenet: Network, multiview: MultiViewNetwork) -> list[DiscEntry]:
    """Report entries for every disc: SpineNetV2 gradings where a sagittal view exists, RSNA
    conditions on lumbar discs."""
    entries: list[DiscEntry] = []
    for start in range(0, len(views), GRADING_BATCH):
        batch = views[start : start + GRADING_BATCH]
        # SpineNetV2 grades sagittal appearance: a disc seen only on the axial slab gets none.
        sagittal = [i for i, v in enumerate(batch) if v.sagittal]
        gradings: dict[int, dict[str, list[float]]] = {}
        if sagittal:
            heads = spinenet_probabilities(spinenet(np.stack([spinenet_input(batch[i]) for i in sagittal])))
            gradings = {i: {name: probabilities[row].tolist() for name, probabilities in heads.items()}
                        for row, i in enumerate(sagittal)}
        lumbar = [i for i, v in enumerate(batch) if v.frame.level in RSNA_DISCS]
        rsna: dict[int, dict[str, list[float]]] = {}
        if lumbar:
            inputs = [multiview_input(batch[i]) for i in lumbar]
            conditions = rsna_probabilities(multiview(np.stack([s for s, _ in inputs]), np.stack([t for _, t in inputs])))
            rsna = {i: {name: probabilities[row].tolist() for name, probabilities in conditions.items()}
                    for row, i in enumerate(lumbar)}
        for i, disc in enumerate(batch):
            entries.append(DiscEntry(
                level=disc.frame.level,
                centre_mm=disc.frame.centre_mm.tolist(),
                gradings=gradings.get(i, {}),
                rsna=rsna.get(i, {}),
            ))
    return entries


@dataclass(frozen=True)
class DiscFindings:
    """What grading hands to the report: disc entries (cranial → caudal) and the stage warnings."""

    discs: tuple[DiscEntry, ...]
    warnings: tuple[StudyWarning, ...]


def extract_study_views(
    study: StudyScan, decisions: Sequence[SeriesDecision], stacks: Sequence[SagittalStack],
    vertebrae: Sequence[VertebraEntry],
) -> tuple[list[DiscViews], list[StudyWarning]]:
    """Every disc's views in a study: the one call of the volume-extractor operator and the cache."""
    sources, warnings = grading_sources(study, decisions, stacks)
    views, extraction_warnings = extract_disc_views(vertebrae, sources)
    return views, warnings + list(extraction_warnings)
