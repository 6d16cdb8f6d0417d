"""Agreement between two raters on a categorical scale (design §6, Bilsky): Gwet's AC1, Cohen's
kappa, and sensitivity/specificity of a dichotomy.

Gwet's AC1 (Gwet 2008) is what both Hallinan papers report ("Gwet's kappa"): unlike Cohen's kappa it
does not collapse when one category (Bilsky 0) dominates. For ``K`` categories with observed
agreement ``pa`` and mean marginal proportions ``π_k`` of the two raters::

    pe(AC1)   = Σ_k π_k (1 − π_k) / (K − 1)        AC1   = (pa − pe) / (1 − pe)
    pe(Cohen) = Σ_k p_k(rater 1) · p_k(rater 2)     kappa = (pa − pe) / (1 − pe)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _proportions(reference: Sequence[int], rated: Sequence[int], categories: int) -> tuple[float, np.ndarray, np.ndarray]:
    a, b = np.asarray(reference, dtype=int), np.asarray(rated, dtype=int)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("agreement needs two equally long, non-empty 1-D rating lists")
    if a.min() < 0 or b.min() < 0 or max(a.max(), b.max()) >= categories:
        raise ValueError(f"ratings must be category indices 0..{categories - 1}")
    return float(np.mean(a == b)), np.bincount(a, minlength=categories) / len(a), np.bincount(b, minlength=categories) / len(b)


def gwet_ac1(reference: Sequence[int], rated: Sequence[int], categories: int) -> float:
    """Gwet's AC1 of two raters over ``categories`` categories (indices 0..K−1)."""
    if categories < 2:
        raise ValueError("AC1 needs at least 2 categories")
    agreement, p_a, p_b = _proportions(reference, rated, categories)
    mean = (p_a + p_b) / 2.0
    chance = float(np.sum(mean * (1.0 - mean))) / (categories - 1)
    return (agreement - chance) / (1.0 - chance)


def cohen_kappa(reference: Sequence[int], rated: Sequence[int], categories: int) -> float:
    """Cohen's (unweighted) kappa; 1.0 when both raters use a single category and agree."""
    agreement, p_a, p_b = _proportions(reference, rated, categories)
    chance = float(np.sum(p_a * p_b))
    return 1.0 if chance >= 1.0 else (agreement - chance) / (1.0 - chance)


def sensitivity_specificity(reference: Sequence[bool], rated: Sequence[bool]) -> tuple[float | None, float | None]:
    """Sensitivity and specificity of ``rated`` against ``reference`` (``None`` without positives /
    negatives in the reference)."""
    truth, call = np.asarray(reference, dtype=bool), np.asarray(rated, dtype=bool)
    sensitivity = float(np.mean(call[truth])) if truth.any() else None
    specificity = float(np.mean(~call[~truth])) if (~truth).any() else None
    return sensitivity, specificity
