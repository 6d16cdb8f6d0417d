"""The documentation figure and the evaluation command of ``python -m training``."""

from __future__ import annotations

import json

import numpy as np

from training.__main__ import main as training_main
from training.synthetic.preview import study_preview


def test_preview_draws_truth_centroids_on_every_sagittal_series(generated_study):
    study_folder, truth = generated_study  # the DICOM folder; truth.json sits beside it
    picture = np.asarray(study_preview(study_folder.parent, height=256))
    sagittal = sum(s["expected_role"] in ("sag_t1", "sag_t2", "sag_stir") for s in truth["series"])
    assert picture.shape[0] == 256 and picture.shape[1] >= 100 * sagittal
    # Markers are drawn in red on greyscale slices: red pixels exist only where truth was drawn.
    red = (picture[..., 0] > 200) & (picture[..., 1] < 120) & (picture[..., 2] < 120)
    assert red.sum() > 20


def test_role_evaluation_command_scores_generated_studies(tmp_path, capsys):
    summary_path = tmp_path / "roles.json"
    status = training_main(["evaluate", "roles", "--count", "1", "--seed", "424242", "--json", str(summary_path)])
    summary = json.loads(summary_path.read_text())
    assert summary["studies"] == 1 and summary["series"] >= 1
    assert status == (0 if summary["correct"] == summary["series"] else 1)
    assert "series roles:" in capsys.readouterr().out
