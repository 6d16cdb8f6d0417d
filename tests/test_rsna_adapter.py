"""RSNA 2024 adapter: layout reading, patient-space marks, submission files, the competition metric.

Fixtures are real DICOM studies (``write_series``) turned into the competition layout by the
generator's own :func:`~training.synthetic.rsna_format.write_rsna_layout`; the truth the generator
used (severities, landmark positions) is what the adapter must read back.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import rsna_fixture_truth

from operators.core.geometry import VolumeGeometry
from operators.core.gradings import RSNA_CONDITIONS, RSNA_SEVERITIES
from operators.core.levels import RSNA_DISCS
from operators.core.study_warning import StudyWarning
from operators.core.volume_extraction import disc_frames_from_points
from training.rsna import cli
from training.rsna.layout import (
    RsnaFormatError,
    RsnaLayoutWarning,
    disc_points_mm,
    mark_points_mm,
    read_rsna_layout,
)
from training.rsna.metric import CONDITION_GROUPS, macro_auroc, score_arrays, score_submission, solution_rows
from training.rsna.submission import SUBMISSION_COLUMNS, parse_row_id, read_submission, row_id, write_submission
from training.synthetic.dicom_writer import PatientStudy, write_series
from training.synthetic.rsna_format import CONDITION_SERIES, disc_landmarks, uid_to_int, write_rsna_layout

#: Sagittal slice spacing of the fixture (mm): a mark lies at most half of it off its instance's plane.
SAGITTAL_STEP_MM = 4.5
#: The cell left blank in study 1's train.csv.
BLANK_CELL = ("left_subarticular_stenosis", "L1/L2")



def _grid(row_dir: np.ndarray, col_dir: np.ndarray, centre: np.ndarray, shape: tuple[int, int, int],
          pixel_mm: float, step_mm: float) -> VolumeGeometry:
    """A stack of ``shape`` centred at ``centre``: columns along ``row_dir``, rows along ``col_dir``."""
    step = step_mm * np.cross(row_dir, col_dir)
    n, rows, columns = shape
    origin = centre - step * (n - 1) / 2 - row_dir * pixel_mm * (columns - 1) / 2 - col_dir * pixel_mm * (rows - 1) / 2
    return VolumeGeometry.from_dicom((*row_dir, *col_dir), origin, (pixel_mm, pixel_mm), shape, step)


def _sagittal(yaw_deg: float, centre_x: float) -> VolumeGeometry:
    """15 slices, 64 × 64 pixels of 3.5 mm; rows run to the feet, columns posterior, turned by ``yaw_deg`` about z."""
    t = np.radians(yaw_deg)
    return _grid(np.array([-np.sin(t), np.cos(t), 0.0]), np.array([0.0, 0.0, -1.0]), np.array([centre_x, 0.0, 15.0]),
                 (15, 64, 64), 3.5, SAGITTAL_STEP_MM)


def _axial() -> VolumeGeometry:
    """40 slices 4 mm apart covering every lumbar disc; 48 × 48 pixels of 2.5 mm."""
    return _grid(np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 20.0, 15.0]),
                 (40, 48, 48), 2.5, 4.0)



@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Two studies: study 0 with true sagittal planes through the midline; study 1 with sagittals
    turned 8° and shifted 1.7 mm (marks off their planes) and one blank train.csv cell."""
    root = tmp_path_factory.mktemp("rsna_adapter")
    truths = []
    for index, (yaw, shift) in enumerate([(0.0, 0.0), (8.0, 1.7)]):
        study = PatientStudy(study_instance_uid=f"2.25.{7100 + index}")
        folder = root / f"study{index}"
        uids = {kind: f"2.25.{7100 + index}{n}" for n, kind in enumerate(["sag_t1", "sag_t2", "ax_t2"], start=1)}
        geometries = {"sag_t1": _sagittal(yaw, shift), "sag_t2": _sagittal(yaw, shift), "ax_t2": _axial()}
        for number, (kind, geometry) in enumerate(geometries.items(), start=1):
            pixels = np.random.default_rng(number).uniform(0, 500, geometry.shape)
            write_series(pixels, geometry, folder / kind, modality="MR", study=study, series_instance_uid=uids[kind],
                         series_number=number, series_description=kind)
        series = [{"series_instance_uid": uid, "kind": kind, "expected_role": kind} for kind, uid in uids.items()]
        truths.append(rsna_fixture_truth(study.study_instance_uid, series, seed=index, blank=BLANK_CELL if index else None))
    write_rsna_layout(truths, [root / f"study{i}" for i in range(2)], root / "rsna")
    return root / "rsna", truths


def _truth_of(truths: list[dict], study_id: int) -> dict:
    return next(t for t in truths if uid_to_int(t["study_instance_uid"]) == study_id)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------
def test_labels_series_and_coordinates_read_back(layout) -> None:
    root, truths = layout
    problems: list[StudyWarning] = []
    studies = read_rsna_layout(root, problems=problems)
    assert problems == []
    assert [s.study_id for s in studies] == sorted(uid_to_int(t["study_instance_uid"]) for t in truths)
    for study in studies:
        truth = _truth_of(truths, study.study_id)
        rsna = {disc["level"]: disc["rsna"] for disc in truth["discs"] if "rsna" in disc}
        assert set(study.labels) == {(c, d) for c in RSNA_CONDITIONS for d in RSNA_DISCS}
        for (condition, disc), severity in study.labels.items():
            assert severity == rsna[disc].get(condition)
            index = -1 if severity is None else RSNA_SEVERITIES.index(severity)
            assert study.severity_index(condition, disc) == index
        assert {s.role for s in study.series.values()} == {"sag_t1", "sag_t2", "ax_t2"}
        for series in study.series.values():
            assert series.series_id == uid_to_int(next(s["series_instance_uid"] for s in truth["series"]
                                                       if s["expected_role"] == series.role))
            assert series.folder.is_dir()
        # Every condition of every disc is marked once, on the series the competition marks it on.
        assert sorted((c.condition, c.disc) for c in study.coordinates) == sorted(
            (c, d) for c in RSNA_CONDITIONS for d in RSNA_DISCS if rsna[d].get(c) is not None)
        for coordinate in study.coordinates:
            assert study.series[coordinate.series_id].description == CONDITION_SERIES[coordinate.condition]
            assert study.instance_path(coordinate).is_file()
    # The blank cell of study 1 reads as unknown and has no coordinate.
    second = next(s for s in studies if s.study_id == uid_to_int(truths[1]["study_instance_uid"]))
    assert second.labels[BLANK_CELL] is None
    assert BLANK_CELL not in {(c.condition, c.disc) for c in second.coordinates}


def test_marks_and_disc_points_land_on_the_truth(layout) -> None:
    root, truths = layout
    for study in read_rsna_layout(root):
        truth = _truth_of(truths, study.study_id)
        discs = {d["level"]: d for d in truth["discs"]}
        marks = mark_points_mm(study)
        assert len(marks) == len(study.coordinates)
        for (condition, disc), point in marks.items():
            landmark = disc_landmarks(truth, discs[disc])[condition]
            assert np.linalg.norm(point - landmark) <= SAGITTAL_STEP_MM / 2 + 0.01
        points = disc_points_mm(study)
        assert list(points) == list(RSNA_DISCS)
        for disc, point in points.items():
            canal = disc_landmarks(truth, discs[disc])["spinal_canal_stenosis"]
            assert np.linalg.norm(point - canal) < 3.0
        # The points feed the extractor's frames: superior runs up the spine, to the head.
        frames = disc_frames_from_points(points)
        assert [f.level for f in frames] == list(RSNA_DISCS)
        assert all(f.superior[2] > 0.99 for f in frames)


def test_generated_study_disc_points(generated_study, tmp_path) -> None:
    """The project's generator output (lumbar, seed 0) through the layout: disc points on the canal marks."""
    study_dir, truth = generated_study
    write_rsna_layout([truth], [study_dir], tmp_path / "rsna")
    studies = read_rsna_layout(tmp_path / "rsna")
    if not studies:  # a CT-only study has no RSNA layout
        assert not {s["expected_role"] for s in truth["series"]} & {"sag_t1", "sag_t2", "sag_stir", "ax_t2"}
        return
    discs = {d["level"]: d for d in truth["discs"]}
    points = disc_points_mm(studies[0])
    assert points
    for disc, point in points.items():
        assert np.linalg.norm(point - disc_landmarks(truth, discs[disc])["spinal_canal_stenosis"]) < 3.0


def test_test_layout_and_fold_files(layout, tmp_path) -> None:
    root, truths = layout
    test_root = tmp_path / "test"
    test_root.mkdir()
    shutil.copy(root / "train_series_descriptions.csv", test_root / "test_series_descriptions.csv")
    (test_root / "test_images").symlink_to(root / "train_images", target_is_directory=True)
    for split in ("train.csv", None):  # the default falls back to the test layout when train.csv is absent
        studies = read_rsna_layout(test_root, split)
        assert [s.study_id for s in studies] == sorted(uid_to_int(t["study_instance_uid"]) for t in truths)
        assert all(s.labels == {} and s.coordinates == [] and len(s.series) == 3 for s in studies)
    with pytest.raises(RsnaFormatError, match="fold0.csv"):
        read_rsna_layout(test_root, "fold0.csv")
    # A fold file with the train.csv columns selects its studies; the other study's rows are ignored.
    rows = _csv_rows(root / "train.csv")
    fold = tmp_path / "fold0.csv"
    with open(fold, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow(rows[1])
    problems: list[StudyWarning] = []
    (study,) = read_rsna_layout(root, fold, problems=problems)
    assert problems == [] and study.study_id == int(rows[1]["study_id"]) and len(study.coordinates) > 20


def _copy_layout(root: Path, target: Path) -> Path:
    shutil.copytree(root, target)
    return target


def _append(path: Path, *lines: str) -> None:
    with open(path, "a", newline="") as handle:
        handle.write("".join(line + "\n" for line in lines))


def test_bad_rows_are_skipped_with_counted_warnings(layout, tmp_path) -> None:
    root = _copy_layout(layout[0], tmp_path / "bad")
    train_rows = _csv_rows(root / "train.csv")
    first = train_rows[0]["study_id"]
    coordinates = _csv_rows(root / "train_label_coordinates.csv")
    mark = next(r for r in coordinates if r["study_id"] == first)
    series = mark["series_id"]
    n_train = len(train_rows) + 1  # lines so far, header included
    _append(root / "train.csv", "not-a-number" + "," * 25, first + ",Severe" * 25, "123,Very Severe" + ",Severe" * 24)
    n_coord = len(coordinates) + 1
    _append(root / "train_label_coordinates.csv",
            f"{first},{series},{mark['instance_number']},Spinal Canal Narrowing,L4/L5,10,10",
            f"{first},{series},{mark['instance_number']},Spinal Canal Stenosis,L6/S1,10,10",
            f"{first},{series},{mark['instance_number']},Spinal Canal Stenosis,L4/L5,abc,10",
            f"{first},{series},999,Spinal Canal Stenosis,L4/L5,10,10",
            f"{first},42,1,Spinal Canal Stenosis,L4/L5,10,10",
            f"{first},{series},1,Spinal Canal Stenosis")
    _append(root / "train_series_descriptions.csv", f"{first},77,Axial T2", f"{first},{series},Sagittal T2/STIR")
    problems: list[StudyWarning] = []
    studies = read_rsna_layout(root, problems=problems)
    by_code = {w.code: w.message for w in problems}
    assert set(by_code) == {"RSNA_MALFORMED_ROW", "RSNA_UNKNOWN_SEVERITY", "RSNA_UNKNOWN_CONDITION",
                            "RSNA_UNKNOWN_LEVEL", "RSNA_MISSING_INSTANCE", "RSNA_UNKNOWN_SERIES", "RSNA_MISSING_SERIES_FOLDER",
                            "RSNA_STUDY_WITHOUT_IMAGES"}
    # Messages count and name file:line.
    assert f"train.csv:{n_train + 1}" in " ".join(w.message for w in problems if w.code == "RSNA_MALFORMED_ROW")
    assert "train.csv:" in by_code["RSNA_UNKNOWN_SEVERITY"] and "'Very Severe'" in by_code["RSNA_UNKNOWN_SEVERITY"]
    assert f"train_label_coordinates.csv:{n_coord + 1}" in by_code["RSNA_UNKNOWN_CONDITION"]
    assert f"train_label_coordinates.csv:{n_coord + 2}" in by_code["RSNA_UNKNOWN_LEVEL"]
    assert "1 skipped" in by_code["RSNA_MISSING_INSTANCE"]
    assert "study 123" in by_code["RSNA_STUDY_WITHOUT_IMAGES"]  # labelled (bad cell read as unknown) but no images
    # The good data is intact: same studies, same marks, the repeated study row did not override labels.
    clean = read_rsna_layout(layout[0])
    def content(read: list) -> list:
        return [(s.study_id, s.labels, s.coordinates) for s in read]

    assert content(studies) == content(clean)
    # Without a list the warnings are issued, not lost.
    with pytest.warns(RsnaLayoutWarning) as issued:
        read_rsna_layout(root)
    assert sorted(str(w.message).split(":")[0] for w in issued) == sorted(w.code for w in problems)


def test_unreadable_instance_and_bad_files(layout, tmp_path) -> None:
    root = _copy_layout(layout[0], tmp_path / "broken")
    study = read_rsna_layout(root)[0]  # true sagittal planes: every canal mark is on the mid-sagittal T2
    canal = next(c for c in study.coordinates if c.condition == "spinal_canal_stenosis")
    study.instance_path(canal).write_bytes(b"not a DICOM file")
    problems: list[StudyWarning] = []
    marks = mark_points_mm(study, problems)
    assert [w.code for w in problems] == ["RSNA_INSTANCE_UNREADABLE"]
    assert "5 skipped" in problems[0].message and "Spinal Canal Stenosis L1/L2" in problems[0].message
    assert not any(condition == "spinal_canal_stenosis" for condition, _ in marks)
    # Disc points fall back to the mid-point of the foraminal marks: still on the midline behind the disc.
    points = disc_points_mm(study, [])
    assert list(points) == list(RSNA_DISCS)
    for disc, point in points.items():
        pair = [marks[(f"{side}_neural_foraminal_narrowing", disc)] for side in ("left", "right")]
        assert np.allclose(point, np.mean(pair, axis=0)) and abs(point[0]) < 0.01
    # Structural problems are errors that name the file (and line).
    (root / "train_series_descriptions.csv").write_text("study_id,series\n1,2\n")
    with pytest.raises(RsnaFormatError, match=r"train_series_descriptions.csv: header lacks column\(s\) series_id"):
        read_rsna_layout(root)
    (root / "train_series_descriptions.csv").unlink()
    with pytest.raises(RsnaFormatError, match="train_series_descriptions.csv: file not found"):
        read_rsna_layout(root)
    (root / "train.csv").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(RsnaFormatError, match="train.csv: not UTF-8 text"):
        read_rsna_layout(root)


# ------------------------------------------------------------------------------------------------
# Metric
# ------------------------------------------------------------------------------------------------
#: Spinal canal labels of three studies: A has a Severe level, B's worst is Moderate, C is all normal.
SPINAL = {"A": [0, 0, 2, 1, 0], "B": [0, 1, 0, 0, 0], "C": [0, 0, 0, 0, 0]}


def _rows(probabilities_of) -> dict:
    """score_arrays arguments for the three studies × 5 conditions × 5 discs; foraminal/subarticular
    labels cycle through the severities; ``probabilities_of(label)`` gives each row's prediction."""
    ids, conditions, levels, labels = [], [], [], []
    for study, spinal in SPINAL.items():
        for c_index, condition in enumerate(RSNA_CONDITIONS):
            for d_index, disc in enumerate(RSNA_DISCS):
                ids.append(study), conditions.append(condition), levels.append(disc)
                labels.append(spinal[d_index] if c_index == 0 else (c_index + d_index) % 3)
    labels_array = np.array(labels)
    return dict(study_ids=ids, conditions=conditions, levels=levels, labels=labels_array,
                probabilities=np.array([probabilities_of(label) for label in labels]))


def test_metric_perfect_and_uniform() -> None:
    perfect = score_arrays(**_rows(lambda label: np.eye(3)[label]))
    assert set(perfect) == {*CONDITION_GROUPS, "any_severe_spinal", "score"}
    assert all(0 <= value < 1e-9 for value in perfect.values())
    uniform = score_arrays(**_rows(lambda label: [1 / 3, 1 / 3, 1 / 3]))
    for group in CONDITION_GROUPS:
        assert uniform[group] == pytest.approx(math.log(3), rel=1e-12)
    # any_severe_spinal: p = 1/3 for every study; weights 4 (A, severe), 2 (B, worst moderate), 1 (C).
    any_severe = (4 * math.log(3) + 2 * math.log(1.5) + 1 * math.log(1.5)) / 7
    assert uniform["any_severe_spinal"] == pytest.approx(any_severe, rel=1e-12)
    assert uniform["score"] == pytest.approx((3 * math.log(3) + any_severe) / 4, rel=1e-12)


def test_metric_weights_normalisation_and_unknown_rows() -> None:
    def loss(labels: list[int], probabilities: list[list[float]]) -> float:
        n = len(labels)
        return score_arrays(study_ids=list(range(n)), conditions=["left_subarticular_stenosis"] * n, levels=["L4/L5"] * n,
                            labels=np.array(labels), probabilities=np.array(probabilities))["score"]

    # The same confident miss costs four times as much on a Severe row as on a Normal/Mild row.
    severe_missed = loss([2, 0], [[0.8, 0.1, 0.1], [1.0, 0.0, 0.0]])
    normal_missed = loss([2, 0], [[0.0, 0.0, 1.0], [0.1, 0.1, 0.8]])
    assert severe_missed == pytest.approx(4 * -math.log(0.1) / 5, rel=1e-9)
    assert normal_missed == pytest.approx(1 * -math.log(0.1) / 5, rel=1e-9)
    moderate_missed = loss([1, 0], [[0.8, 0.1, 0.1], [1.0, 0.0, 0.0]])
    assert moderate_missed == pytest.approx(2 * -math.log(0.1) / 3, rel=1e-9)
    # Rows are normalised: scores that do not sum to one give the losses of their normalised rows.
    rng = np.random.default_rng(3)
    raw = _rows(lambda label: rng.dirichlet(np.ones(3)))
    scaled = {**raw, "probabilities": raw["probabilities"] * 0.3}
    first, second = score_arrays(**raw), score_arrays(**scaled)
    for group in CONDITION_GROUPS:
        assert first[group] == pytest.approx(second[group], rel=1e-12)
    # Unknown labels (negative) are not scored, whatever their predictions.
    extra = {"study_ids": raw["study_ids"] + ["D"], "conditions": raw["conditions"] + ["spinal_canal_stenosis"],
             "levels": raw["levels"] + ["L1/L2"], "labels": np.append(raw["labels"], -1),
             "probabilities": np.vstack([raw["probabilities"], [[0.0, 0.0, 1.0]]])}
    assert score_arrays(**extra) == first
    with pytest.raises(ValueError, match="more than once"):
        score_arrays(**{**raw, "levels": ["L1/L2"] * len(raw["levels"])})
    with pytest.raises(ValueError, match="non-negative"):
        score_arrays(**{**raw, "probabilities": -raw["probabilities"]})


def test_macro_auroc_hand_cases() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[labels]
    assert macro_auroc(labels, perfect) == 1.0
    assert macro_auroc(labels, 1.0 - perfect) == 0.0
    assert macro_auroc(labels, np.full((6, 3), 0.5)) == 0.5
    # Class 1 vs rest on four samples: positives 0.4, 0.9 against negatives 0.1, 0.6 → 3 of 4 pairs.
    binary = np.array([[0.9, 0.1, 0], [0.4, 0.6, 0], [0.6, 0.4, 0], [0.1, 0.9, 0]])
    assert macro_auroc(np.array([0, 0, 1, 1]), binary) == pytest.approx(0.75)
    assert macro_auroc(np.array([1, 1, 1]), np.eye(3)) is None
    assert macro_auroc(np.array([-1, 0, 1]), np.array([[0, 0, 0], [0.9, 0.1, 0], [0.2, 0.8, 0]])) == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])), min_size=2, max_size=30))
def test_macro_auroc_matches_pairwise_counting(samples) -> None:
    labels = np.array([label for label, _ in samples])
    scores = np.array([score for _, score in samples])
    probabilities = np.stack([scores, 1 - scores, (scores * 7) % 1], axis=1)
    expected = []
    for k in range(3):
        positive, negative = probabilities[labels == k, k], probabilities[labels != k, k]
        if len(positive) and len(negative):
            wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
            expected.append(wins / (len(positive) * len(negative)))
    result = macro_auroc(labels, probabilities)
    assert (result is None) == (not expected)
    if expected:
        assert result == pytest.approx(float(np.mean(expected)), abs=1e-12)


# ------------------------------------------------------------------------------------------------
# Submission and CLI
# ------------------------------------------------------------------------------------------------
def test_submission_round_trip_and_row_order(tmp_path) -> None:
    rng = np.random.default_rng(0)
    keys = [(study, c, d) for study in (900, 12) for c in RSNA_CONDITIONS for d in RSNA_DISCS]
    predictions = {key: rng.dirichlet(np.ones(3)) for key in reversed(keys)}
    path = tmp_path / "submission.csv"
    assert write_submission(predictions, path) == 50
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(SUBMISSION_COLUMNS) == "row_id,normal_mild,moderate,severe"
    assert lines[1].startswith("12_spinal_canal_stenosis_l1_l2,")
    assert lines[2].startswith("12_spinal_canal_stenosis_l2_l3,")
    assert lines[6].startswith("12_left_neural_foraminal_narrowing_l1_l2,")
    assert lines[26].startswith("900_spinal_canal_stenosis_l1_l2,")
    assert lines[-1].startswith("900_right_subarticular_stenosis_l5_s1,")
    read = read_submission(path)
    assert list(read) == sorted(keys, key=lambda k: (k[0], RSNA_CONDITIONS.index(k[1]), RSNA_DISCS.index(k[2])))
    assert all(np.array_equal(read[key], predictions[key]) for key in keys)
    key = (4003253, "left_subarticular_stenosis", "L5/S1")
    assert row_id(*key) == "4003253_left_subarticular_stenosis_l5_s1" and parse_row_id(row_id(*key)) == key
    # A failed write leaves the previous file whole and no temporary file behind.
    with pytest.raises(ValueError, match="finite non-negative"):
        write_submission({keys[0]: [0.5, float("nan"), 0.5]}, path)
    assert read_submission(path).keys() == read.keys() and [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


@pytest.mark.parametrize("line, message", [
    ("12_spinal_canal_stenosis_l6_s1,0.2,0.3,0.5", "not an RSNA row_id"),
    ("12_spinal_canal_stenosis_l1_l2,0.2,x,0.5", "could not convert"),
    ("12_spinal_canal_stenosis_l1_l2,0.2,-0.3,0.5", "non-negative"),
    ("12_spinal_canal_stenosis_l1_l2,0.2,0.3", "wrong number of fields"),
    ("12_spinal_canal_stenosis_l2_l3,0.2,0.3,0.5", "repeated"),
])
def test_malformed_submission_names_file_and_line(tmp_path, line: str, message: str) -> None:
    path = tmp_path / "submission.csv"
    path.write_text("row_id,normal_mild,moderate,severe\n12_spinal_canal_stenosis_l2_l3,0.2,0.3,0.5\n" + line + "\n")
    with pytest.raises(RsnaFormatError, match=f"submission.csv:3: .*{message}"):
        read_submission(path)


def _run_cli(*argv: str | Path) -> int:
    """``python -m training <argv>`` with the rsna command registered as training/__main__.py does."""
    parser = argparse.ArgumentParser(prog="python -m training")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return int(args.run(args))


def _score(solution: Path, submission: Path, *json_out: Path) -> int:
    return _run_cli("rsna", "score", "--solution", solution, "--submission", submission,
                    *(("--json", json_out[0]) if json_out else ()))


def test_score_command(layout, tmp_path, capsys) -> None:
    root, truths = layout
    studies = read_rsna_layout(root)
    perfect = {(s.study_id, c, d): np.eye(3)[max(s.severity_index(c, d), 0)] for s in studies
               for c in RSNA_CONDITIONS for d in RSNA_DISCS}
    write_submission(perfect, tmp_path / "perfect.csv")
    assert _score(root / "train.csv", tmp_path / "perfect.csv", tmp_path / "out" / "score.json") == 0
    printed = capsys.readouterr().out
    assert "49 labelled rows of 2 studies scored" in printed and "score" in printed
    result = json.loads((tmp_path / "out" / "score.json").read_text())
    assert result["score"] < 1e-9 and result["rows"] == 49
    # A uniform submission scores what score_arrays says from the labels alone.
    write_submission({key: [1 / 3] * 3 for key in perfect}, tmp_path / "uniform.csv")
    assert _score(root / "train.csv", tmp_path / "uniform.csv", tmp_path / "uniform.json") == 0
    solution = solution_rows({s.study_id: s.labels for s in studies})
    expected = score_submission(solution, {key: np.ones(3) / 3 for key in perfect})
    uniform = json.loads((tmp_path / "uniform.json").read_text())
    assert uniform["score"] == pytest.approx(expected["score"], rel=1e-12)
    assert uniform["spinal_canal_stenosis"] == pytest.approx(math.log(3), rel=1e-12)
    # As in the official scorer, any_severe_spinal takes the severe value as submitted (not
    # normalised): scores of 1, 1, 1 claim certainty of a severe level.
    unnormalised = score_submission(solution, {key: np.ones(3) for key in perfect})
    assert unnormalised["spinal_canal_stenosis"] == pytest.approx(math.log(3), rel=1e-12)
    assert unnormalised["any_severe_spinal"] > 10
    # A submission missing a scored row, or a malformed one, fails with a message instead of a traceback.
    del perfect[(studies[0].study_id, "spinal_canal_stenosis", "L3/L4")]
    write_submission(perfect, tmp_path / "short.csv")
    capsys.readouterr()
    assert _score(root / "train.csv", tmp_path / "short.csv") == 1
    missing = f"{studies[0].study_id}_spinal_canal_stenosis_l3_l4"
    assert f"lacks 1 of the 49 scored rows (first: {missing})" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("row_id,normal_mild,moderate,severe\nfoo,1,2,3\n")
    assert _score(root / "train.csv", tmp_path / "bad.csv") == 1
    assert "bad.csv:2: not an RSNA row_id: 'foo'" in capsys.readouterr().err


def test_check_command(layout, capsys) -> None:
    assert _run_cli("rsna", "check", "--root", layout[0]) == 0
    out = capsys.readouterr().out
    assert "2 studies; series: Axial T2 2, Sagittal T1 2, Sagittal T2/STIR 2" in out
    assert "49 labelled cells" in out and "0 warnings" in out
