"""Predict the RSNA 2024 conditions of every study of a competition layout, as a ``submission.csv``.

Each study goes through the same extraction as training (:func:`training.rsna.samples.rsna_disc_views`)
and the exported multi-view grader (ONNX, as the app runs it). The competition scores every
``(study, condition, disc)`` row, so a disc that could not be framed or seen gets the mean of this
run's predictions for its condition (the least informative honest answer); those rows are counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from operators.core.grading_outputs import rsna_probabilities
from operators.core.grading_pipeline import MULTIVIEW_MODEL, multiview_input
from operators.core.gradings import RSNA_CONDITIONS
from operators.core.levels import RSNA_DISCS
from operators.core.onnx_models import open_model
from operators.core.study_warning import StudyWarning
from training.rsna.layout import RsnaStudy
from training.rsna.samples import rsna_disc_views
from training.rsna.submission import RowKey


def predict_studies(studies: list[RsnaStudy], models: Path, problems: list[StudyWarning]) -> tuple[dict[RowKey, np.ndarray], int]:
    """Probabilities ``(3,)`` per ``(study_id, condition, disc)`` row of every study, and how many
    rows were filled with the condition's mean because their disc had no view."""
    grader = open_model(MULTIVIEW_MODEL, models)
    predictions: dict[RowKey, np.ndarray] = {}
    for study in studies:
        for views in rsna_disc_views(study, problems):
            slices, tokens = multiview_input(views)
            for condition, probabilities in rsna_probabilities(grader(slices[None], tokens[None])).items():
                predictions[(study.study_id, condition, views.frame.level)] = probabilities[0]
    filled = 0
    for condition in RSNA_CONDITIONS:
        seen = [p for (_, c, _), p in predictions.items() if c == condition]
        mean = np.mean(seen, axis=0) if seen else np.full(3, 1.0 / 3.0)
        for study in studies:
            for disc in RSNA_DISCS:
                if (study.study_id, condition, disc) not in predictions:
                    predictions[(study.study_id, condition, disc)] = mean
                    filled += 1
    return predictions, filled
