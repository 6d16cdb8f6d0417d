"""Scoring of ``python -m training evaluate detection``: matches, levels and transitional labels."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate_detection import ANATOMIES, evaluate_detection, score_study
from training.synthetic.study import StudyConfig, planned_truth

SERIES = "1.2.3"


def _truth(levels: list[str], partial: tuple[str, ...] = ()) -> dict:
    """Bodies 30 mm apart along z (cranial first), 25 mm tall, 30 mm deep, 40 mm wide, upright and
    facing anterior (LPS −y), fully in view unless named in ``partial``."""
    return {"vertebrae": [
        {"level": level, "centroid_mm": [0.0, 0.0, -30.0 * i], "height_mm": 25.0, "depth_mm": 30.0, "width_mm": 40.0,
         "superior_axis": [0.0, 0.0, 1.0], "anterior_axis": [0.0, -1.0, 0.0],
         "fully_in_view": {SERIES: level not in partial}}
        for i, level in enumerate(levels)
    ]}


def _at(truth: dict, level: str, shift_mm: float = 0.0) -> np.ndarray:
    centroid = next(v["centroid_mm"] for v in truth["vertebrae"] if v["level"] == level)
    return np.asarray(centroid) + [shift_mm, 0.0, 0.0]


def test_a_correctly_labelled_l6_counts_as_found_and_a_missed_one_shifts_the_levels_above():
    truth = _truth(["L4", "L5", "L6", "S1"])
    right = [(level, _at(truth, level, 2.0)) for level in ("L4", "L5", "L6", "S1")]
    score = score_study(truth, [SERIES], right)
    assert (score.true, score.matched, score.identified) == (4, 4, 4)
    assert (score.transitional, score.transitional_identified, score.false_transitional) == (1, 1, 0)
    assert score.distance_sum_mm == pytest.approx(8.0)

    # The labeller counted five lumbar bodies: every level above the sacrum is one too low.
    shifted = [(level, _at(truth, true_level)) for level, true_level in zip(("L3", "L4", "L5", "S1"), ("L4", "L5", "L6", "S1"))]
    score = score_study(truth, [SERIES], shifted)
    assert (score.matched, score.identified, score.transitional_identified, score.false_transitional) == (4, 1, 0, 0)


def test_a_t13_named_on_a_standard_spine_is_a_false_transitional_label():
    truth = _truth(["T11", "T12", "L1", "L2"])
    predictions = [("T12", _at(truth, "T11")), ("T13", _at(truth, "T12")), ("L1", _at(truth, "L1")),
                   ("L6", np.array([200.0, 0.0, 0.0]))]  # far from every body: unmatched
    score = score_study(truth, [SERIES], predictions)
    assert (score.true, score.predicted, score.matched, score.identified) == (4, 4, 3, 1)
    assert (score.transitional, score.false_transitional) == (0, 2)
    metrics = score.metrics()
    assert metrics["precision"] == pytest.approx(3 / 4) and metrics["idr"] == pytest.approx(1 / 4)


def test_a_transitional_body_partly_in_view_is_not_counted():
    truth = _truth(["L5", "L6", "S1"], partial=("L6",))
    score = score_study(truth, [SERIES], [("L5", _at(truth, "L5")), ("L6", _at(truth, "L6")), ("S1", _at(truth, "S1"))])
    assert (score.true, score.ignored, score.transitional, score.false_transitional) == (2, 1, 0, 0)


def test_a_body_cut_sideways_by_the_slab_is_not_a_false_positive_but_a_lateral_miss_of_a_full_one_is():
    truth = _truth(["L4", "L5", "S1"], partial=("S1",))
    # 18 mm to the side: outside 0.5 × height (12.5 mm) but inside the 40 mm wide body.
    predictions = [("L4", _at(truth, "L4")), ("L5", _at(truth, "L5", 18.0)), ("S1", _at(truth, "S1", 18.0))]
    score = score_study(truth, [SERIES], predictions)
    assert (score.true, score.matched, score.ignored) == (2, 1, 1)
    assert score.metrics()["precision"] == pytest.approx(1 / 2)
    # Beyond the body's half width a prediction is not attributed to the partial body either.
    score = score_study(truth, [SERIES], [("S1", _at(truth, "S1", 21.0))])
    assert (score.matched, score.ignored, score.predicted) == (0, 0, 1)


@pytest.mark.parametrize("level, parent", [("L6", "L5"), ("T13", "T12")])
def test_a_forced_transitional_study_adds_the_level_and_keeps_the_seeds_other_draws(level, parent):
    config = dict(field_of_view="lumbar", series_kinds=("sag_t2",))
    standard, forced = planned_truth(910_000, StudyConfig(**config)), planned_truth(910_000, StudyConfig(**config, transitional=level))
    standard_levels = [v["level"] for v in standard["vertebrae"]]
    forced_levels = [v["level"] for v in forced["vertebrae"]]
    assert not {"L6", "T13"} & set(standard_levels)
    assert forced_levels.index(level) == forced_levels.index(parent) + 1
    assert [lv for lv in forced_levels if lv != level] == standard_levels
    assert forced["anatomy"]["transitional"] == level
    # Protocol, vendor and series are drawn from the study's own stream, not the phantom's.
    assert [(s["description"], s["rows"], s["pixel_spacing_mm"]) for s in forced["series"]] == \
        [(s["description"], s["rows"], s["pixel_spacing_mm"]) for s in standard["series"]]


def test_unknown_anatomy_is_refused():
    assert "standard" in ANATOMIES
    with pytest.raises(ValueError, match="anatomy"):
        evaluate_detection(1, models=None, anatomy="L7")  # type: ignore[arg-type]
