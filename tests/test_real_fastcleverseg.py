"""FastCleverSeg adapter on fixtures written in the datasets' own .mat layout (I, GT; rows head → feet,
columns front → back, lateral slices last)."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from training.real.fastcleverseg import DATASETS, find_subjects, load_subject, sagittal_stack, subject_split, truth_entries

BODY_ROWS = [(20, 44), (54, 78), (88, 112), (122, 146), (156, 180)]  # 24 mm bodies, 10 mm discs, cranial first
COLUMNS = (40, 75)  # 35 mm deep, in front of the canal
LATERAL = (10, 34)  # 24 planes wide


def _write_subject(folder: Path, name: str, label_of_body: list[int], missing: int | None = None) -> Path:
    image = np.zeros((200, 120, 44), np.uint8)
    labels = np.zeros_like(image)
    for body, value in enumerate(label_of_body):
        if body == missing:
            continue
        rows = slice(*BODY_ROWS[body])
        image[rows, slice(*COLUMNS), slice(*LATERAL)] = 200
        labels[rows, slice(*COLUMNS), slice(*LATERAL)] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.mat"
    scipy.io.savemat(path, {"I": image, "GT": labels})
    return path


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
