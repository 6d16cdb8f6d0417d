"""RSNA 2024 layout → grader training samples (:mod:`training.rsna.samples`), on a layout the
generator writes from one of its lumbar studies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from operators.core.gradings import RSNA_CONDITIONS, RSNA_SEVERITIES
from operators.core.levels import RSNA_DISCS
from operators.core.study_warning import StudyWarning
from training.grading.cache import GradingData
from training.rsna.layout import read_rsna_layout
from training.rsna.samples import cache_rsna_study, rsna_disc_views
from training.synthetic.rsna_format import write_rsna_layout
from training.synthetic.study import StudyConfig, generate_study

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("rsna_samples")
    truth = generate_study(41, folder / "study_41", StudyConfig(field_of_view="lumbar", series_kinds=("sag_t1", "sag_t2", "ax_t2"), duplicates=()))
    write_rsna_layout([truth], [folder / "study_41" / "study"], folder / "rsna")
    return folder / "rsna", truth


def test_marked_discs_become_views_at_the_true_disc(layout) -> None:
    root, truth = layout
    [study] = read_rsna_layout(root)
    problems: list[StudyWarning] = []
    views = rsna_disc_views(study, problems)
    true_centres = {d["level"]: np.asarray(d["centre_mm"]) for d in truth["discs"]}
    assert len(views) >= 3
    for disc in views:
        assert disc.frame.level in RSNA_DISCS
        assert set(disc.sagittal) == {"sag_t1", "sag_t2"}
        # From a mark in the canal to the disc centre with a population-average depth: a few mm off.
        assert np.linalg.norm(disc.frame.centre_mm - true_centres[disc.frame.level]) < 8.0


def test_cached_samples_carry_the_competition_labels(layout, tmp_path: Path) -> None:
    root, truth = layout
    [study] = read_rsna_layout(root)
    path = cache_rsna_study(study, tmp_path, [])
    assert path is not None
    data = GradingData.load([path])
    assert (data.gradings == -1).all()  # the competition has no SpineNetV2 gradings
    true_discs = {d["level"]: d for d in truth["discs"]}
    for level, labels in zip(data.levels, data.rsna):
        for condition, label in zip(RSNA_CONDITIONS, labels):
            severity = true_discs[str(level)]["rsna"].get(condition)
            assert label == (-1 if severity is None else RSNA_SEVERITIES.index(severity))
    assert (data.spinenet[:, 0] != 0).any() and (data.spinenet[:, 1] != 0).any()


def test_predict_writes_a_submission_the_scorer_reads(layout, tmp_path: Path, capsys) -> None:
    """`rsna predict` with the shipped grader, then `rsna score` against the layout's own labels."""
    from training.__main__ import main
    from training.rsna.submission import read_submission

    root, _ = layout
    submission = tmp_path / "submission.csv"
    assert main(["rsna", "predict", "--root", str(root), "--models", str(REPO_MODELS), "--out", str(submission)]) == 0
    rows = read_submission(submission)
    assert len(rows) == len(RSNA_CONDITIONS) * len(RSNA_DISCS)
    assert all(np.isclose(p.sum(), 1.0, atol=1e-5) for p in rows.values())
    assert main(["rsna", "score", "--solution", str(root / "train.csv"), "--submission", str(submission),
                 "--json", str(tmp_path / "score.json")]) == 0
    assert np.isfinite(json.loads((tmp_path / "score.json").read_text())["score"])
