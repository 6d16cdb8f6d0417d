"""RSNA 2024 LSDC layout written from generated studies, read back with csv and pydicom."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import rsna_fixture_truth

from operators.core.geometry import VolumeGeometry
from operators.core.gradings import RSNA_CONDITION_TITLES, RSNA_CONDITIONS, RSNA_SEVERITIES
from operators.core.levels import RSNA_DISCS
from training.synthetic.dicom_writer import PatientStudy, write_series
from training.synthetic.rsna_format import (
    CONDITION_SERIES,
    TRAIN_COLUMNS,
    disc_landmarks,
    uid_to_int,
    write_rsna_layout,
)

SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run posterior, columns run to the feet
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)




def _write(study: PatientStudy, folder: Path, geometry: VolumeGeometry, description: str, number: int,
           uid: str, first_instance: int = 1) -> None:
    pixels = np.random.default_rng(number).uniform(0, 500, geometry.shape)
    n = geometry.shape[0]
    write_series(pixels, geometry, folder, modality="MR", study=study, series_instance_uid=uid,
                 series_number=number, series_description=description,
                 instance_numbers=list(range(first_instance, first_instance + n)),
                 file_names=[f"{uid[-6:]}_{first_instance + i:03d}" for i in range(n)])


def _sagittal() -> VolumeGeometry:
    """15 slices 4.5 mm apart across x = -31.5 … +31.5 mm; 64 × 64 pixels of 3.5 mm from z = 140 down."""
    return VolumeGeometry.from_dicom(SAGITTAL_IOP, (-31.5, -110.0, 140.0), (3.5, 3.5), (15, 64, 64), (4.5, 0.0, 0.0))


def _axial(z_centre: float, n: int, tilt_deg: float = 0.0) -> VolumeGeometry:
    """An axial stack of ``n`` 4 mm slices centred at (0, 20, z_centre), tilted about x (angled to a disc)."""
    t = np.radians(tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    column = np.array([0.0, np.cos(t), np.sin(t)])
    step = -4.0 * np.cross(row, column)  # the normal points to the head; slices go to the feet
    origin = np.array([0.0, 20.0, z_centre]) - 60.0 * row - 60.0 * column - step * (n - 1) / 2.0
    return VolumeGeometry.from_dicom((*row, *column), origin, (2.5, 2.5), (n, 48, 48), step)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> tuple[Path, list[dict], list[Path]]:
    root = tmp_path_factory.mktemp("rsna")
    truths, dirs = [], []
    for index in range(2):
        study = PatientStudy(study_instance_uid=f"2.25.{9000 + index}")
        folder = root / f"study{index}" / "study"
        uids = {kind: f"2.25.{9000 + index}{number}" for number, kind in
                enumerate(["sag_t1", "sag_t2", "sag_stir", "ax_t2", "localizer"], start=1)}
        fluid = "sag_t2" if index == 0 else "sag_stir"
        _write(study, folder / "s1", _sagittal(), "t1_tse_sag", 1, uids["sag_t1"])
        _write(study, folder / "s2", _sagittal(), "t2_tse_sag" if index == 0 else "stir_sag", 2, uids[fluid])
        if index == 0:
            # One axial stack covering L3 … S1 only: L1/L2 and L2/L3 get no subarticular coordinates.
            _write(study, folder / "s3", _axial(-15.0, 20), "t2_tse_tra", 3, uids["ax_t2"])
        else:
            # Two stacks in one series, each angled to its disc (L3/L4 and L4/L5), numbered on.
            _write(study, folder / "s3", _axial(15.0, 5, tilt_deg=8.0), "t2_tra", 3, uids["ax_t2"])
            _write(study, folder / "s3", _axial(-15.0, 5, tilt_deg=-6.0), "t2_tra", 3, uids["ax_t2"],
                   first_instance=6)
        _write(study, folder / "loc", VolumeGeometry.from_dicom(AXIAL_IOP, (-100, -100, 0), (4, 4), (1, 16, 16), 5.0),
               "localizer", 4, uids["localizer"])
        series = [{"series_instance_uid": uids["sag_t1"], "kind": "sag_t1", "expected_role": "sag_t1"},
                  {"series_instance_uid": uids[fluid], "kind": fluid, "expected_role": fluid},
                  {"series_instance_uid": uids["ax_t2"], "kind": "ax_t2", "expected_role": "ax_t2"},
                  {"series_instance_uid": uids["localizer"], "kind": "localizer", "expected_role": "unused"}]
        truths.append(rsna_fixture_truth(study.study_instance_uid, series, seed=index))
        dirs.append(folder)
    out = root / "rsna"
    write_rsna_layout(truths, dirs, out)
    return out, truths, dirs


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_train_csv_header_and_values(layout) -> None:
    out, truths, _ = layout
    header, rows = _read(out / "train.csv")
    assert header[0] == "study_id" and len(header) == 26 and tuple(header) == TRAIN_COLUMNS
    assert header[1:6] == [f"spinal_canal_stenosis_{k}" for k in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")]
    assert header[-1] == "right_subarticular_stenosis_l5_s1"
    assert sorted(int(r["study_id"]) for r in rows) == sorted(uid_to_int(t["study_instance_uid"]) for t in truths)
    for truth in truths:
        row = next(r for r in rows if int(r["study_id"]) == uid_to_int(truth["study_instance_uid"]))
        for disc in truth["discs"]:
            for condition, severity in disc.get("rsna", {}).items():
                key = f"{condition}_{disc['level'].lower().replace('/', '_')}"
                assert row[key] == severity
        assert all(row[c] in RSNA_SEVERITIES for c in TRAIN_COLUMNS[1:])


def test_series_descriptions_and_image_tree(layout) -> None:
    out, truths, _ = layout
    header, rows = _read(out / "train_series_descriptions.csv")
    assert header == ["study_id", "series_id", "series_description"]
    assert len(rows) == 6
    assert {r["series_description"] for r in rows} == {"Sagittal T1", "Sagittal T2/STIR", "Axial T2"}
    for row in rows:
        folder = out / "train_images" / row["study_id"] / row["series_id"]
        files = sorted(folder.glob("*.dcm"))
        assert files
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert int(path.stem) == int(ds.InstanceNumber)
            assert uid_to_int(str(ds.SeriesInstanceUID)) == int(row["series_id"])
            assert uid_to_int(str(ds.StudyInstanceUID)) == int(row["study_id"])
    # The localiser (expected role unused) is not copied; the STIR study uses its STIR as T2/STIR.
    series_dirs = list((out / "train_images").glob("*/*"))
    assert len(series_dirs) == 6
    stir_study = str(uid_to_int(truths[1]["study_instance_uid"]))
    stir = next(r for r in rows if r["study_id"] == stir_study and r["series_description"] == "Sagittal T2/STIR")
    ds = pydicom.dcmread(next((out / "train_images" / stir_study / stir["series_id"]).glob("*.dcm")))
    assert ds.SeriesDescription == "stir_sag"
    assert len(list((out / "train_images" / stir_study).glob("*/*.dcm"))) == 15 + 15 + 10


def test_label_coordinates_point_at_the_landmarks(layout) -> None:
    out, truths, _ = layout
    header, rows = _read(out / "train_label_coordinates.csv")
    assert header == ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    _, descriptions = _read(out / "train_series_descriptions.csv")
    description_of = {(d["study_id"], d["series_id"]): d["series_description"] for d in descriptions}
    titles = {title: condition for condition, title in RSNA_CONDITION_TITLES.items()}
    truth_of = {str(uid_to_int(t["study_instance_uid"])): t for t in truths}
    for row in rows:
        condition = titles[row["condition"]]
        assert row["level"] in RSNA_DISCS
        assert description_of[(row["study_id"], row["series_id"])] == CONDITION_SERIES[condition]
        path = out / "train_images" / row["study_id"] / row["series_id"] / f"{row['instance_number']}.dcm"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        x, y = float(row["x"]), float(row["y"])
        assert 0 <= x <= ds.Columns - 1 and 0 <= y <= ds.Rows - 1
        # The pixel maps back to the landmark: in plane exactly, out of plane within one slice spacing.
        geometry = VolumeGeometry.from_dicom([float(v) for v in ds.ImageOrientationPatient],
                                             [float(v) for v in ds.ImagePositionPatient],
                                             [float(v) for v in ds.PixelSpacing], (1, ds.Rows, ds.Columns), 1.0)
        truth = truth_of[row["study_id"]]
        disc = next(d for d in truth["discs"] if d["level"] == row["level"])
        landmark = disc_landmarks(truth, disc)[condition]
        offset = landmark - geometry.index_to_lps([0.0, y, x])
        normal = geometry.normal
        assert np.linalg.norm(offset - (offset @ normal) * normal) < 0.01
        assert abs(offset @ normal) <= float(ds.SliceThickness)
        # Anatomy: the canal lies behind the disc, a left foramen on the patient's left (+x).
        if condition == "spinal_canal_stenosis":
            assert landmark[1] > disc["centre_mm"][1] + 17
        if condition.startswith("left"):
            assert landmark[0] > 5
        if condition.startswith("right"):
            assert landmark[0] < -5
    per_study: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        per_study.setdefault(row["study_id"], set()).add((row["condition"], row["level"]))
    first = per_study[str(uid_to_int(truths[0]["study_instance_uid"]))]
    second = per_study[str(uid_to_int(truths[1]["study_instance_uid"]))]
    sagittal_titles = [RSNA_CONDITION_TITLES[c] for c in RSNA_CONDITIONS[:3]]
    for marks in (first, second):
        assert {(t, disc) for t in sagittal_titles for disc in RSNA_DISCS} <= marks
    # Study 1's axial stack covers L3 … S1; study 2's two angled stacks cover L3/L4 and L4/L5.
    subarticular = {(r, d) for r, d in first if "Subarticular" in r}
    assert {d for _, d in subarticular} == {"L3/L4", "L4/L5", "L5/S1"}
    assert {d for r, d in second if "Subarticular" in r} == {"L3/L4", "L4/L5"}


def test_studies_without_lumbar_discs_or_mr_series_are_skipped(tmp_path, layout) -> None:
    _, truths, dirs = layout
    cervical = {"study_instance_uid": "2.25.1", "series": [], "vertebrae": [],
                "discs": [{"level": "C5/C6", "centre_mm": [0, 0, 0], "gradings": {}}]}
    ct_only = {**truths[0], "series": [{"series_instance_uid": "2.25.77", "kind": "ct_axial",
                                        "expected_role": "ct_axial"}]}
    write_rsna_layout([cervical, ct_only], [tmp_path, dirs[0]], tmp_path / "out")
    _, rows = _read(tmp_path / "out" / "train.csv")
    assert rows == []
    assert not (tmp_path / "out" / "train_images").exists()
    with pytest.raises(ValueError):
        write_rsna_layout([cervical], [], tmp_path / "out")


def test_layout_and_report_of_a_generated_study(generated_study, tmp_path) -> None:
    """The project's generator output (lumbar, seed 0) goes through the layout and the report writer."""
    from training.synthetic.report_text import NEGATIVE, POSITIVE, compose_report

    study_dir, truth = generated_study
    write_rsna_layout([truth], [study_dir], tmp_path / "rsna")
    _, rows = _read(tmp_path / "rsna" / "train.csv")
    roles = {s["expected_role"] for s in truth["series"]}
    if not roles & {"sag_t1", "sag_t2", "sag_stir", "ax_t2"}:
        assert rows == []  # a CT-only study has nothing for the RSNA layout
    else:
        assert len(rows) == 1
        for disc in truth["discs"]:
            for condition, severity in (disc.get("rsna") or {}).items():
                assert rows[0][f"{condition}_{disc['level'].lower().replace('/', '_')}"] == severity
        _, coordinates = _read(tmp_path / "rsna" / "train_label_coordinates.csv")
        assert coordinates, "no coordinates for a lumbar MR study"
        titles = {title: condition for condition, title in RSNA_CONDITION_TITLES.items()}
        for row in coordinates:
            path = tmp_path / "rsna" / "train_images" / row["study_id"] / row["series_id"] / f"{row['instance_number']}.dcm"
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert int(ds.InstanceNumber) == int(row["instance_number"])
            assert 0 <= float(row["x"]) <= ds.Columns - 1 and 0 <= float(row["y"]) <= ds.Rows - 1
            disc = next(d for d in truth["discs"] if d["level"] == row["level"])
            landmark = disc_landmarks(truth, disc)[titles[row["condition"]]]
            geometry = VolumeGeometry.from_dicom([float(v) for v in ds.ImageOrientationPatient],
                                                 [float(v) for v in ds.ImagePositionPatient],
                                                 [float(v) for v in ds.PixelSpacing], (1, ds.Rows, ds.Columns), 1.0)
            offset = landmark - geometry.index_to_lps([0.0, float(row["y"]), float(row["x"])])
            in_plane = offset - (offset @ geometry.normal) * geometry.normal
            assert np.linalg.norm(in_plane) < 0.01 or not (0 < float(row["x"]) < ds.Columns - 1)
    report = compose_report(truth, np.random.default_rng(0))
    assert truth["report_text"].strip()
    lesions = {v["level"]: v["lesions"] for v in truth["vertebrae"]}
    for level, labels in report.vertebra_labels.items():
        for finding, label in labels.items():
            if label == POSITIVE:
                assert lesions[level][finding]
            elif label == NEGATIVE:
                assert not lesions[level][finding]
