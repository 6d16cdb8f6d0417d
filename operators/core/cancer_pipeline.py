"""Cancer findings per vertebra (SCT, Windsor et al. §3–4): the core the cancer operator calls and
the training cache imports, so the network sees in training exactly what it sees in the app.

Flow: the detector's sagittal stacks with their roles (T1, T2, STIR) + the labelled vertebrae →
one vertebral-body volume per (vertebra, sequence) (:func:`~operators.core.volume_extraction.vertebra_volume`,
:data:`~operators.core.volume_extraction.VERTEBRA_VOLUME_SHAPE`) → the Spinal Context Transformer
over every volume of the study at once → metastasis, fracture and cord-compression probabilities
per vertebra.

Network input layout (:class:`CancerInput`): ``volumes (B, V, Q, S, H, W)`` for ``V`` vertebrae
cranial → caudal and ``Q`` sequence slots, ``sequences (B, V, Q)`` the sequence id of each slot
(index in :data:`CANCER_SEQUENCES`, :data:`MISSING_SEQUENCE` for an empty slot) and ``levels (B, V)``
the level index in :data:`~operators.core.report.ALL_LEVELS`. Only the sequences the study has get a
slot, so a T2-only study costs a third of a three-sequence one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from operators.core.gradings import CANCER_FINDINGS
from operators.core.report import ALL_LEVELS, CANCER_SUSPICION_THRESHOLD, VertebraEntry
from operators.core.series_roles import SeriesDecision
from operators.core.study_warning import StudyWarning
from operators.core.threads import thread_map
from operators.core.vertebra_pipeline import SagittalStack
from operators.core.volume_extraction import (
    MIN_INSIDE_FRACTION,
    SAGITTAL_ROLES,
    VERTEBRA_VOLUME_SHAPE,
    SeriesVolume,
    VertebraLike,
    grids_may_overlap,
    vertebra_grid,
    vertebra_volume,
)

#: Name of the network in ``models/manifest.json``.
CANCER_MODEL = "cancer_sct"
#: Sequence ids of the network's sequence embedding (SCT uses every sagittal sequence it is given).
CANCER_SEQUENCES: tuple[str, ...] = SAGITTAL_ROLES
MISSING_SEQUENCE = len(CANCER_SEQUENCES)
#: A body volume this complete counts as fully in view; below it the vertebra is assessed on the
#: part in view and a warning says so (below MIN_INSIDE_FRACTION the volume is not used).
FULLY_IN_VIEW = 0.98

#: A probability within this distance of the decision threshold
#: (:data:`~operators.core.report.CANCER_SUSPICION_THRESHOLD`, the operating point at which ``python -m
#: training evaluate cancer`` reports sensitivity and specificity) flags the vertebra ``needs_review``:
#: the network is not sure either way and a reader should look.
REVIEW_MARGIN = 0.15

#: The network as the core sees it: ``(volumes, sequences, levels) → logits (B, V, 3)``.
CancerNetwork = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CancerInput:
    """Network input of one study (module docstring), without the batch axis.

    Attributes:
        volumes: ``(V, Q, 9, 112, 112)`` float32 normalised body volumes (zeros in empty slots).
        sequences: ``(V, Q)`` int64 sequence id per slot.
        levels: ``(V,)`` int64 level index in ``ALL_LEVELS``.
        vertebrae: the ``V`` vertebrae, in order (those with no usable volume are left out).
    """

    volumes: np.ndarray
    sequences: np.ndarray
    levels: np.ndarray
    vertebrae: tuple[VertebraLike, ...]


def cancer_sources(decisions: Sequence[SeriesDecision], stacks: Sequence[SagittalStack]) -> list[SeriesVolume]:
    """The detector's sagittal stacks that have a cancer sequence role (whole-spine stations stay
    separate stacks: each vertebra is read from the station that shows most of it)."""
    role_of = {decision.series_instance_uid: decision.role for decision in decisions}
    return [SeriesVolume(stack.series_instance_uid, role_of[stack.series_instance_uid], stack.pixels, stack.geometry)
            for stack in stacks if role_of.get(stack.series_instance_uid) in CANCER_SEQUENCES]


def vertebra_sequence_volumes(
    vertebra: VertebraLike, sources: Sequence[SeriesVolume]
) -> dict[str, tuple[np.ndarray, float]]:
    """Per sequence role, the body volume from the stack that holds most of it, with its inside
    fraction; roles whose best volume is under ``MIN_INSIDE_FRACTION`` in view are left out."""
    best: dict[str, tuple[np.ndarray, float]] = {}
    grid = vertebra_grid(vertebra)
    for source in sources:
        # A whole-spine study's stations each show only part of the spine: resampling every
        # vertebra from the stacks that miss it entirely cost most of the stage.
        if not grids_may_overlap(source.geometry, grid):
            continue
        extracted = vertebra_volume(source, vertebra)
        if extracted.inside_fraction >= MIN_INSIDE_FRACTION and (
            source.role not in best or extracted.inside_fraction > best[source.role][1]
        ):
            best[source.role] = (extracted.pixels, extracted.inside_fraction)
    return best


def pack_cancer_input(
    per_vertebra: Sequence[Mapping[str, np.ndarray]], levels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack per-vertebra ``{role: (9, 112, 112) volume}`` into ``(volumes, sequences, levels)``
    network arrays (:class:`CancerInput`) with one slot per sequence present anywhere in the study
    (:data:`CANCER_SEQUENCES` order)."""
    roles = [role for role in CANCER_SEQUENCES if any(role in volumes for volumes in per_vertebra)]
    count = len(per_vertebra)
    volumes = np.zeros((count, max(len(roles), 1), *VERTEBRA_VOLUME_SHAPE), dtype=np.float32)
    sequences = np.full((count, max(len(roles), 1)), MISSING_SEQUENCE, dtype=np.int64)
    for v, by_role in enumerate(per_vertebra):
        for slot, role in enumerate(roles):
            if role in by_role:
                volumes[v, slot] = by_role[role]
                sequences[v, slot] = CANCER_SEQUENCES.index(role)
    level_index = np.asarray([ALL_LEVELS.index(level) for level in levels], dtype=np.int64)
    return volumes, sequences, level_index


def cancer_input(
    vertebrae: Sequence[VertebraLike], sources: Sequence[SeriesVolume]
) -> tuple[CancerInput, list[StudyWarning]]:
    """Every vertebra's body volumes from every cancer sequence, packed for the network.

    A vertebra no sequence shows enough of (a body cut by the edge of the field of view) is left
    out with a warning; one seen only in part, or missing from a sequence the study has (a sequence
    with a shorter field of view or different slice geometry), is assessed on what is there, with one
    warning per sequence naming the levels.
    """
    warnings: list[StudyWarning] = []
    kept: list[VertebraLike] = []
    per_vertebra: list[dict[str, np.ndarray]] = []
    study_roles = sorted({source.role for source in sources}, key=CANCER_SEQUENCES.index)
    # One warning per sequence, listing levels: a whole-spine study whose STIR covers only the lumbar
    # spine would otherwise give a warning per thoracic level.
    missing: dict[str, list[str]] = {role: [] for role in study_roles}
    partial: dict[str, list[str]] = {role: [] for role in study_roles}
    # Resampled side by side (scipy releases the GIL); the loop below keeps the vertebrae's order.
    best_volumes = thread_map(lambda vertebra: vertebra_sequence_volumes(vertebra, sources), vertebrae)
    for vertebra, best in zip(vertebrae, best_volumes):
        if not best:
            warnings.append(StudyWarning(
                "VERTEBRA_OUT_OF_VIEW",
                f"{vertebra.level}: too little of the body is in view of any sagittal sequence; no cancer findings",
            ))
            continue
        for role in study_roles:
            if role not in best:
                missing[role].append(vertebra.level)
            elif best[role][1] < FULLY_IN_VIEW:
                partial[role].append(vertebra.level)
        kept.append(vertebra)
        per_vertebra.append({role: pixels for role, (pixels, _) in best.items()})
    for role in study_roles:
        if missing[role]:
            warnings.append(StudyWarning(
                "SEQUENCE_MISSING_AT_LEVEL",
                f"{role} does not show {', '.join(missing[role])}: cancer findings there come from the other sequences",
            ))
        if partial[role]:
            warnings.append(StudyWarning(
                "VERTEBRA_PARTLY_IN_VIEW",
                f"{role} shows only part of {', '.join(partial[role])}: assessed on the part in view",
            ))
    return CancerInput(*pack_cancer_input(per_vertebra, [v.level for v in kept]), tuple(kept)), warnings


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Elementwise logistic function (the tanh form never overflows)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


def finding_probabilities(network: CancerNetwork, inputs: CancerInput) -> np.ndarray:
    """``(V, 3)`` probability per vertebra and :data:`~operators.core.gradings.CANCER_FINDINGS` entry."""
    if not inputs.vertebrae:
        return np.zeros((0, len(CANCER_FINDINGS)))
    logits = network(inputs.volumes[None], inputs.sequences[None], inputs.levels[None])
    return sigmoid(np.asarray(logits)[0])


def needs_review(probabilities: Mapping[str, float]) -> bool:
    """Whether any finding's probability sits within :data:`REVIEW_MARGIN` of the threshold."""
    return any(abs(p - CANCER_SUSPICION_THRESHOLD) < REVIEW_MARGIN for p in probabilities.values())


@dataclass(frozen=True)
class CancerFindings:
    """What the cancer stage hands to the report: every vertebra entry (assessed ones carry
    ``findings``) and the stage warnings."""

    vertebrae: tuple[VertebraEntry, ...]
    warnings: tuple[StudyWarning, ...]


def assess_vertebrae(
    vertebrae: Sequence[VertebraEntry], decisions: Sequence[SeriesDecision], stacks: Sequence[SagittalStack],
    network: CancerNetwork,
) -> CancerFindings:
    """Cancer findings of every labelled vertebra: the one call of the cancer operator."""
    sources = cancer_sources(decisions, stacks)
    if not sources:
        return CancerFindings(tuple(vertebrae), (StudyWarning(
            "NO_CANCER_SEQUENCE", "no sagittal T1, T2 or STIR series: no cancer findings"),) if vertebrae else ())
    inputs, warnings = cancer_input(vertebrae, sources)
    probabilities = finding_probabilities(network, inputs)
    by_vertebra = {id(v): dict(zip(CANCER_FINDINGS, row.tolist())) for v, row in zip(inputs.vertebrae, probabilities)}
    entries = tuple(
        replace(v, findings=by_vertebra[id(v)], needs_review=needs_review(by_vertebra[id(v)])) if id(v) in by_vertebra else v
        for v in vertebrae
    )
    return CancerFindings(entries, tuple(warnings))
