"""Layout of the two disc graders' outputs: the one home of the logit offsets, used by the torch
networks and losses (:mod:`training.grading.networks`) and by the runtime (numpy, after ONNX).

Each grader exports ONE output tensor of concatenated logits:

* SpineNetV2 grader: ``(B, 29)`` — one block per :data:`~operators.core.gradings.SPINENET_GRADINGS`
  entry, in that dict's order, ``len(classes)`` logits each (5 + 4 + 4 + 8 × 2);
* multi-view RSNA grader: ``(B, 20)`` — one block of ``len(RSNA_SEVERITIES)`` = 3 logits per
  :data:`~operators.core.gradings.RSNA_CONDITIONS` entry, in order, then the auxiliary disc-level
  head: ``len(RSNA_DISCS)`` = 5 logits (L1/L2 … L5/S1).

The offsets are derived from those tuples, so adding a grading or a class moves every user at once.
Python ``slice`` objects index numpy arrays and torch tensors alike (``logits[:, head]``).
"""

from __future__ import annotations

import numpy as np

from operators.core.gradings import RSNA_CONDITIONS, RSNA_SEVERITIES, SPINENET_GRADINGS
from operators.core.levels import RSNA_DISCS


def _blocks(sizes: dict[str, int], start: int = 0) -> dict[str, slice]:
    """Consecutive column ranges, one per name, of the given sizes."""
    blocks: dict[str, slice] = {}
    for name, size in sizes.items():
        blocks[name] = slice(start, start + size)
        start += size
    return blocks


_GRADING_SLICES = _blocks({name: len(classes) for name, classes in SPINENET_GRADINGS.items()})
_CONDITION_SLICES = _blocks({condition: len(RSNA_SEVERITIES) for condition in RSNA_CONDITIONS})

#: Width of the SpineNetV2 grader output (29).
SPINENET_OUTPUTS: int = sum(len(classes) for classes in SPINENET_GRADINGS.values())
#: Columns of the multi-view grader's auxiliary disc-level head (after the condition blocks).
RSNA_LEVEL_SLICE: slice = slice(len(RSNA_CONDITIONS) * len(RSNA_SEVERITIES),
                                len(RSNA_CONDITIONS) * len(RSNA_SEVERITIES) + len(RSNA_DISCS))
#: Width of the multi-view grader output (5 × 3 + 5 = 20).
RSNA_OUTPUTS: int = RSNA_LEVEL_SLICE.stop


def grading_slices() -> dict[str, slice]:
    """SPINENET_GRADINGS name → its columns of the ``(B, 29)`` SpineNetV2 logits, in dict order."""
    return dict(_GRADING_SLICES)


def condition_slices() -> dict[str, slice]:
    """RSNA_CONDITIONS entry → its 3 columns (RSNA_SEVERITIES order) of the ``(B, 20)`` multi-view logits."""
    return dict(_CONDITION_SLICES)


def _check_width(logits: np.ndarray, width: int, model: str) -> np.ndarray:
    array = np.asarray(logits)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{model} logits must have shape (B, {width}), not {array.shape}")
    return array


def split_spinenet_logits(logits: np.ndarray) -> dict[str, np.ndarray]:
    """``(B, 29)`` SpineNetV2 logits → SPINENET_GRADINGS name → ``(B, len(classes))`` logits (views)."""
    array = _check_width(logits, SPINENET_OUTPUTS, "SpineNetV2 grader")
    return {name: array[:, head] for name, head in _GRADING_SLICES.items()}


def split_rsna_logits(logits: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(B, 20)`` multi-view logits → (RSNA_CONDITIONS entry → ``(B, 3)`` logits, level logits ``(B, 5)``)."""
    array = _check_width(logits, RSNA_OUTPUTS, "multi-view grader")
    return {condition: array[:, head] for condition, head in _CONDITION_SLICES.items()}, array[:, RSNA_LEVEL_SLICE]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along ``axis`` (float64, sum 1); the max is subtracted first so large logits do not overflow."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=axis, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=axis, keepdims=True)


def spinenet_probabilities(logits: np.ndarray) -> dict[str, np.ndarray]:
    """``(B, 29)`` SpineNetV2 logits → SPINENET_GRADINGS name → ``(B, len(classes))`` class probabilities,
    classes in the order of ``SPINENET_GRADINGS[name]``."""
    return {name: softmax(head) for name, head in split_spinenet_logits(logits).items()}


def rsna_probabilities(logits: np.ndarray) -> dict[str, np.ndarray]:
    """``(B, 20)`` multi-view logits → RSNA_CONDITIONS entry → ``(B, 3)`` probabilities in
    RSNA_SEVERITIES order (Normal/Mild, Moderate, Severe). The auxiliary level head is a training
    aid and is not reported; :func:`split_rsna_logits` returns it."""
    conditions, _ = split_rsna_logits(logits)
    return {condition: softmax(head) for condition, head in conditions.items()}
