"""FastCleverSeg adapter on fixtures written in the datasets' own .mat layout (I, GT; rows head → feet,
columns front → back, lateral slices last)."""

from pathlib import Path

import numpy as np
import pytest

from conftest import write_fastcleverseg_subject as _write_subject
from training.real.fastcleverseg import DATASETS, find_subjects, load_subject, sagittal_stack, subject_split, truth_entries

def test_vb3_labels_are_levels_and_the_stack_outlines_each_body_at_its_corners(tmp_path):
    path = _write_subject(tmp_path / DATASETS["VB3"].folder, "01", [1, 2, 3, 4, 5])
    subject = load_subject("VB3", path)
    assert [b.level for b in subject.bodies] == ["L1", "L2", "L3", "L4", "L5"]
    assert subject.level_doubt is None
    stack = sagittal_stack(subject, "1.2.3")
    assert stack.pixels.shape == (11, 200, 120)  # 44 planes of 1 mm → 11 slices of 4 mm
    level, l3 = stack.bodies[2]
    assert level == "L3"
    quad = l3.slice_quads[len(l3.slice_quads) // 2]
    # VERTEBRA_CORNERS order: superior-anterior, superior-posterior, inferior-posterior, inferior-anterior.
    np.testing.assert_allclose(quad.corners_px, [[88, 40], [88, 74], [111, 74], [111, 40]])
    assert len(l3.slice_quads) == 7  # 4 mm slices at least half inside the 24 mm wide body (planes 10-33)
    assert abs(l3.height_mm - 23.0) < 1e-6
    # Centroid in LPS mm: slices go to the right (−L), rows to the feet (−S), columns to the back (+P).
    np.testing.assert_allclose(l3.centroid_mm, [-21.5, 57.0, -99.5])


def test_vb2_levels_count_up_from_l5_and_a_missing_body_makes_them_doubtful(tmp_path):
    folder = tmp_path / DATASETS["VB2"].folder
    # VB2 label values carry no order; seven bodies are promised, the fixture has five.
    subject = load_subject("VB2", _write_subject(folder, "02", [4, 1, 5, 2, 3]))
    assert [b.level for b in subject.bodies] == ["L1", "L2", "L3", "L4", "L5"]
    assert "5 structures annotated" in subject.level_doubt
    gap = load_subject("VB2", _write_subject(folder, "04", [1, 2, 3, 4, 5], missing=2))
    assert "gap" in gap.level_doubt


def test_unannotated_neighbours_are_placed_beyond_the_annotated_bodies(tmp_path):
    subject = load_subject("VB3", _write_subject(tmp_path / DATASETS["VB3"].folder, "03", [1, 2, 3, 4, 5]))
    entries = truth_entries(sagittal_stack(subject, "1.2.3"), "1.2.3", extra_per_side=1)
    placeholders = [e for e in entries if e["level"] == "unannotated"]
    assert len(placeholders) == 2 and all(not e["fully_in_view"] for e in placeholders)
    z = sorted(e["centroid_mm"][2] for e in placeholders)
    np.testing.assert_allclose(z, [-201.5, 2.5])  # one 34 mm step below L5 and above L1


def test_the_reserved_dataset_is_refused_and_empty_files_are_skipped(tmp_path):
    reserved = _write_subject(tmp_path / "ImageDatasets/VBs/VB1/Isotropic/Matlab", "01", [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="reserved"):
        load_subject("VB3", reserved)
    folder = tmp_path / DATASETS["VB3"].folder
    _write_subject(folder, "05", [1, 2, 3, 4, 5])
    (folder / "06.mat").write_bytes(b"")  # listed in the mirror without its content
    assert [p.name for _, p in find_subjects(tmp_path, ["VB3"])] == ["05.mat"]


def test_splits_are_fixed_per_subject_and_disc_data_is_test_only():
    assert {subject_split("IVD", f"{i:02d}") for i in range(1, 55)} == {"test"}
    splits = [subject_split("VB3", f"{i:02d}") for i in range(1, 55)]
    assert splits == [subject_split("VB3", f"{i:02d}") for i in range(1, 55)]
    assert {"train", "val", "test"} == set(splits)


def test_a_subject_written_as_dicom_reads_back_as_the_same_stack(tmp_path):
    from operators.core.dicom_io import scan_study_folder
    from training.real.fastcleverseg import write_subject_study

    subject = load_subject("VB3", _write_subject(tmp_path / DATASETS["VB3"].folder, "07", [1, 2, 3, 4, 5]))
    truth = write_subject_study(subject, tmp_path / "study_VB3_07")
    scan = scan_study_folder(tmp_path / "study_VB3_07" / "study")
    assert [s.series_instance_uid for s in scan.series] == [truth["series"][0]["series_instance_uid"]]
    loaded = scan.series[0].stacks[0].load()
    expected = sagittal_stack(subject, "x")
    np.testing.assert_allclose(loaded.pixels, np.round(expected.pixels), atol=0.5)
    np.testing.assert_allclose(loaded.geometry.affine, expected.geometry.affine, atol=1e-4)
    assert [e["level"] for e in truth["vertebrae"][:5]] == ["L1", "L2", "L3", "L4", "L5"]


def test_real_subjects_become_training_samples_with_the_unannotated_run_masked(tmp_path):
    from operators.core.vertebra_detection import DETECTOR_MM_PER_PX
    from training.detection.labeller import LabellerData
    from training.detection.slice_cache import CachedSeries
    from training.real.training_cache import cache_real_split

    folder = tmp_path / DATASETS["VB3"].folder
    _write_subject(folder, "01", [1, 2, 3, 4, 5])  # split "train"
    _write_subject(folder, "03", [1, 2, 3, 4, 5])  # split "val": not in the train cache
    _write_subject(folder, "07", [1, 2, 3, 4, 5], missing=2)  # doubtful levels: not trained on
    detector_files, labeller_files = cache_real_split(tmp_path, "train", tmp_path / "det", tmp_path / "lab")
    assert [f.name for f in detector_files] == ["real_VB3_01.npz"]

    series = CachedSeries.load(detector_files[0])
    assert series.real and series.loss_mask.shape == series.images.shape
    assert set(series.quad_levels) == {"L1", "L2", "L3", "L4", "L5"}
    # Bodies at rows 20-44 … 156-180 (1 mm) with 10 mm discs: the run ends 17 mm (half a body step)
    # beyond the outermost centroids, at rows 14.5 and 184.5 of the 1 mm grid.
    column = series.loss_mask[5, :, 40]
    rows_mm = np.flatnonzero(column) * DETECTOR_MM_PER_PX
    assert 13.0 <= rows_mm.min() <= 17.0 and 182.0 <= rows_mm.max() <= 186.0

    data = LabellerData.load(labeller_files)
    assert data.real.all() and len(data.groups) == 1
    assert len(data.volumes) == 5


def test_the_detected_bodies_next_to_the_annotated_run_are_labelled_by_counting_on(tmp_path):
    from dataclasses import replace

    from training.real.training_cache import unannotated_neighbours

    subject = load_subject("VB3", _write_subject(tmp_path / DATASETS["VB3"].folder, "01", [1, 2, 3, 4, 5]))
    stack = sagittal_stack(subject, "1.2.3")
    annotated = [vertebra for _, vertebra in stack.bodies]  # L1 … L5, cranial first
    step_mm = annotated[-1].centroid_mm - annotated[-2].centroid_mm  # one body down (34 mm)

    def detected_at(centroid_mm: np.ndarray):
        return replace(annotated[-1], centroid_mm=np.asarray(centroid_mm, dtype=float))

    # S1 lies 15 mm behind the straight continuation of the run (the lordosis turns at L5/S1).
    s1 = detected_at(annotated[-1].centroid_mm + step_mm + [0.0, 15.0, 0.0])
    t12 = detected_at(annotated[0].centroid_mm - step_mm)
    found = unannotated_neighbours(stack, [*annotated, s1, t12])
    assert [(level, vertebra is body) for (level, vertebra), body in zip(found, (t12, s1))] == [("T12", True), ("S1", True)]
    # Without them the nearest detections are L1 and L5 themselves, and a body 1.7 steps below L5
    # (S2, with S1 missed) is too far from where S1 would be: nothing is labelled.
    s2 = detected_at(annotated[-1].centroid_mm + 1.7 * step_mm)
    assert unannotated_neighbours(stack, [*annotated, s2]) == []


def test_masked_pixels_do_not_change_the_detector_loss():
    import torch

    from training.detection.detector import VFRLoss

    rng = np.random.default_rng(0)
    target = torch.as_tensor(rng.random((1, 13, 32, 32)), dtype=torch.float32)
    prediction = torch.as_tensor(rng.random((1, 13, 32, 32)), dtype=torch.float32)
    vector_weight = torch.ones((1, 4, 32, 32))
    pixel_weight = torch.ones((1, 1, 32, 32))
    pixel_weight[..., :16, :] = 0.0
    changed = prediction.clone()
    changed[..., :16, :] = 1.0 - changed[..., :16, :]
    loss = VFRLoss()
    assert torch.isclose(loss(prediction, target, vector_weight, pixel_weight), loss(changed, target, vector_weight, pixel_weight))
    assert not torch.isclose(loss(prediction, target, vector_weight), loss(changed, target, vector_weight))


def test_a_few_real_items_get_their_share_of_the_draws():
    from training.detection.slice_cache import mixed_draw

    real = np.zeros(100, bool)
    real[[3, 50]] = True
    draws = mixed_draw(real, 0.5, 4000, np.random.default_rng(0))
    assert 0.45 < real[draws].mean() < 0.55
    assert set(draws[real[draws]]) == {3, 50}
    # Only one source: uniform over all items.
    assert set(mixed_draw(np.zeros(3, bool), 0.5, 200, np.random.default_rng(0))) == {0, 1, 2}


def test_quantisation_leaves_at_most_two_to_the_bits_levels_within_half_a_step():
    from training.augment import RandQuantised

    image = np.random.default_rng(0).normal(size=(1, 40, 40)).astype(np.float32)
    quantise = RandQuantised("image", bits_range=(6, 6), prob=1.0)
    out = quantise({"image": image})["image"]
    step = (image.max() - image.min()) / 63
    assert len(np.unique(out)) <= 64
    assert np.abs(out - image).max() <= step / 2 + 1e-6


def test_the_app_on_a_subject_written_as_dicom_reports_the_vertebrae_evaluate_real_scores(tmp_path, run_app):
    """Issue 9: the evaluation command's numbers are the app's. One subject (box bodies in the
    dataset's .mat layout; the shipped detector finds them) is scored the way ``evaluate real`` does
    and written as a DICOM study the app reads from disk: same levels, centroids within 1 mm (the
    DICOM pixels are the stack's rounded to integers)."""
    import json

    from operators.core.report import REPORT_JSON_NAME
    from operators.core.vertebra_pipeline import SagittalStack
    from training.evaluate_real import predict_subject
    from training.real.fastcleverseg import write_subject_study

    models = Path(__file__).resolve().parent.parent / "models"
    subject = load_subject("VB3", _write_subject(tmp_path / DATASETS["VB3"].folder, "07", [1, 2, 3, 4, 5]))
    stack = sagittal_stack(subject, "1.2.3")
    evaluated = predict_subject(SagittalStack.from_pixels("1.2.3", stack.pixels, stack.geometry), models)
    assert len(evaluated) >= 4

    write_subject_study(subject, tmp_path / "study_VB3_07")
    run = run_app("-i", tmp_path / "study_VB3_07" / "study", "-o", tmp_path / "out")
    assert run.code == 0, run.console
    reported = json.loads((tmp_path / "out" / REPORT_JSON_NAME).read_text())["vertebrae"]
    by_level = {v["level"]: np.asarray(v["centroid_mm"]) for v in reported}
    assert sorted(by_level) == sorted(v.level for v in evaluated)
    for vertebra in evaluated:
        assert np.linalg.norm(by_level[vertebra.level] - vertebra.vertebra.centroid_mm) < 1.0
