"""The RSNA 2024 LSDC competition metric and the macro AUROC of the evaluation tables (numpy only).

Competition score (the official Kaggle scorer, re-implemented without pandas/sklearn)
------------------------------------------------------------------------------------
* Three condition groups — ``spinal_canal_stenosis``; ``neural_foraminal_narrowing`` (left and
  right rows together); ``subarticular_stenosis`` (left and right) — each score a sample-weighted
  log loss over their rows, weight 1 / 2 / 4 for a Normal/Mild / Moderate / Severe label
  (:data:`~operators.core.gradings.RSNA_SEVERITY_WEIGHTS`). Predictions are treated as
  ``sklearn.metrics.log_loss`` of the competition's time (scikit-learn 1.2) treats them: clipped to
  ``[eps, 1 − eps]`` with ``eps = 1e-15``, then each row divided by its sum (so a row of scores
  that sum to less than one scores as its normalised row; scores above one are clipped first).
  The loss is ``Σ wᵢ·(−log pᵢ[labelᵢ]) / Σ wᵢ``.
* ``any_severe_spinal``: per study, label 1 if any spinal canal level is Severe, prediction the
  largest submitted *severe* probability over the study's spinal canal rows (as submitted: the
  official scorer takes the max before any normalisation), binary log loss whose sample weight is
  the largest spinal canal row weight of the study — 4 for a positive study, 1 for a negative one,
  and 2 for a negative study whose worst level is Moderate (the official scorer's
  ``groupby('study_id')['sample_weight'].max()``).
* ``score``: the unweighted mean of the four losses (the official ``any_severe_scalar`` is 1).

Rows whose label is unknown (negative index; a blank ``train.csv`` cell) are not scored, as the
hidden solution has no row for them. A group without any labelled row is left out of the result
and of the mean (the official scorer would fail on it).

Macro AUROC
-----------
:func:`macro_auroc` averages one-vs-rest AUROCs (Mann–Whitney U with average ranks for ties) over
the classes that have both positives and negatives — Park et al.'s per-condition number.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from operators.core.gradings import RSNA_SEVERITIES, RSNA_SEVERITY_WEIGHTS
from training.rsna.submission import RowKey, row_id, row_order

#: Condition group → the conditions (train.csv prefixes) scored together.
CONDITION_GROUPS: dict[str, tuple[str, ...]] = {
    "spinal_canal_stenosis": ("spinal_canal_stenosis",),
    "neural_foraminal_narrowing": ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
    "subarticular_stenosis": ("left_subarticular_stenosis", "right_subarticular_stenosis"),
}
ANY_SEVERE_SPINAL = "any_severe_spinal"
#: Sample weight per severity index (1, 2, 4).
SEVERITY_WEIGHTS: np.ndarray = np.array([RSNA_SEVERITY_WEIGHTS[s] for s in RSNA_SEVERITIES])
#: Probability clipping of sklearn's ``log_loss`` (its default up to scikit-learn 1.2).
LOG_LOSS_EPS = 1e-15

_SEVERE = RSNA_SEVERITIES.index("Severe")
_GROUP_OF: dict[str, str] = {c: group for group, members in CONDITION_GROUPS.items() for c in members}


def weighted_log_loss(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> float:
    """sklearn-style sample-weighted log loss.

    Args:
        labels: ``(n,)`` class indices.
        probabilities: ``(n, k)`` non-negative scores; clipped to ``[eps, 1 − eps]``, then each row
            normalised to sum 1.
        weights: ``(n,)`` sample weights.

    Returns:
        ``Σ wᵢ·(−log pᵢ[labelᵢ]) / Σ wᵢ`` in nats.
    """
    clipped = np.clip(np.asarray(probabilities, dtype=float), LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    normalised = clipped / clipped.sum(axis=1, keepdims=True)
    losses = -np.log(normalised[np.arange(len(labels)), np.asarray(labels, dtype=int)])
    weights = np.asarray(weights, dtype=float)
    return float((weights * losses).sum() / weights.sum())


def score_arrays(*, study_ids: Sequence[Hashable], conditions: Sequence[str], levels: Sequence[str],
                 labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """The competition metric of per-(study, condition, level) predictions (module docstring).

    Args:
        study_ids: ``n`` study identifiers (any hashable: competition ids, generator seeds).
        conditions: ``n`` names from :data:`~operators.core.gradings.RSNA_CONDITIONS`.
        levels: ``n`` disc names (``"L4/L5"``); a (study, condition, level) may appear once.
        labels: ``(n,)`` int severity index 0..2, negative for unknown (not scored).
        probabilities: ``(n, 3)`` non-negative (normal_mild, moderate, severe).

    Returns:
        ``{"spinal_canal_stenosis", "neural_foraminal_narrowing", "subarticular_stenosis",
        "any_severe_spinal": log loss, "score": their mean}`` (groups without labelled rows left out).

    Raises:
        ValueError: mismatched lengths, unknown condition, label > 2, repeated (study, condition,
            level), probabilities that are not finite and non-negative, or no labelled row at all.
    """
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    n = len(labels)
    if not (len(study_ids) == len(conditions) == len(levels) == n) or probabilities.shape != (n, 3):
        raise ValueError(f"score_arrays needs n ids/conditions/levels/labels and (n, 3) probabilities, got "
                         f"{len(study_ids)}/{len(conditions)}/{len(levels)}/{n} and {probabilities.shape}")
    if not np.all(np.isfinite(probabilities)) or np.any(probabilities < 0):
        raise ValueError("probabilities must be finite and non-negative")
    if np.any(labels > len(RSNA_SEVERITIES) - 1):
        raise ValueError(f"labels must be severity indices 0..{len(RSNA_SEVERITIES) - 1} (negative: unknown)")
    unknown = sorted(set(conditions) - set(_GROUP_OF))
    if unknown:
        raise ValueError(f"unknown RSNA condition(s) {unknown}")
    keys = list(zip(study_ids, conditions, levels))
    if len(set(keys)) != n:
        raise ValueError("a (study, condition, level) appears more than once")

    known = labels >= 0
    groups = np.array([_GROUP_OF[c] for c in conditions], dtype=object)
    result: dict[str, float] = {}
    for group in CONDITION_GROUPS:
        rows = known & (groups == group)
        if rows.any():
            result[group] = weighted_log_loss(labels[rows], probabilities[rows], SEVERITY_WEIGHTS[labels[rows]])

    worst: dict[Hashable, int] = {}  # study → worst spinal canal severity index
    severe_prediction: dict[Hashable, float] = {}
    for index in np.flatnonzero(known & (groups == "spinal_canal_stenosis")):
        study = study_ids[index]
        worst[study] = max(worst.get(study, 0), int(labels[index]))
        severe_prediction[study] = max(severe_prediction.get(study, 0.0), float(probabilities[index, _SEVERE]))
    if worst:
        worst_index = np.array(list(worst.values()))
        p = np.clip(np.array([severe_prediction[s] for s in worst]), 0.0, 1.0)
        # sklearn turns a 1-D prediction p into the two columns (1 − p, p) of a binary log loss.
        result[ANY_SEVERE_SPINAL] = weighted_log_loss(
            (worst_index == _SEVERE).astype(int), np.stack([1.0 - p, p], axis=1), SEVERITY_WEIGHTS[worst_index])
    if not result:
        raise ValueError("no labelled row to score")
    result["score"] = float(np.mean(list(result.values())))
    return result


def solution_rows(labels: Mapping[int, Mapping[tuple[str, str], str | None]]) -> dict[RowKey, int]:
    """Scored rows of a solution: study_id → (condition, disc) → severity (as
    :func:`training.rsna.layout.read_labels` returns) → ``(study_id, condition, disc)`` → severity
    index, unknown cells left out."""
    return {
        (study_id, condition, disc): RSNA_SEVERITIES.index(severity)
        for study_id, cells in labels.items() for (condition, disc), severity in cells.items()
        if severity is not None
    }


def score_submission(solution: Mapping[RowKey, int], submission: Mapping[RowKey, Sequence[float]]) -> dict[str, float]:
    """The competition metric of a submission against a solution.

    Args:
        solution: ``(study_id, condition, disc)`` → severity index (:func:`solution_rows`).
        submission: ``(study_id, condition, disc)`` → ``(3,)`` probabilities
            (:func:`training.rsna.submission.read_submission`); rows the solution does not score
            are ignored.

    Returns:
        As :func:`score_arrays`.

    Raises:
        ValueError: the submission lacks rows the solution scores (the message counts them and
            names the first), or any :func:`score_arrays` error.
    """
    missing = [key for key in solution if key not in submission]
    if missing:
        raise ValueError(f"the submission lacks {len(missing)} of the {len(solution)} scored rows "
                         f"(first: {row_id(*missing[0])})")
    keys = sorted(solution, key=row_order)
    return score_arrays(
        study_ids=[k[0] for k in keys], conditions=[k[1] for k in keys], levels=[k[2] for k in keys],
        labels=np.array([solution[k] for k in keys], dtype=int),
        probabilities=np.array([np.asarray(submission[k], dtype=float) for k in keys]).reshape(len(keys), 3),
    )


def macro_auroc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Mean one-vs-rest AUROC over the classes with both positives and negatives.

    Args:
        labels: ``(n,)`` int class indices 0..k−1; negative entries (unknown) are ignored.
        probabilities: ``(n, k)`` scores; column ``c`` ranks the samples for class ``c``.

    Returns:
        The mean AUROC in [0, 1] (ties count one half), or ``None`` when no class is scorable.
    """
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0]:
        raise ValueError(f"need (n,) labels and (n, k) probabilities, got {labels.shape} and {probabilities.shape}")
    known = labels >= 0
    labels, probabilities = labels[known], probabilities[known]
    aurocs = []
    for k in range(probabilities.shape[1]):
        positive = labels == k
        n_positive, n_negative = int(positive.sum()), int((~positive).sum())
        if n_positive == 0 or n_negative == 0:
            continue
        # Average ranks (1-based) with ties sharing the mean of the ranks they span.
        _, inverse, counts = np.unique(probabilities[:, k], return_inverse=True, return_counts=True)
        ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse.ravel()]
        u = ranks[positive].sum() - n_positive * (n_positive + 1) / 2.0
        aurocs.append(u / (n_positive * n_negative))
    return float(np.mean(aurocs)) if aurocs else None
