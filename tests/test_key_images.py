"""Key images: labels drawn where the vertebrae and discs are, Secondary Captures filed in the study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

from operators.core.dicom_io import StudyScan, scan_study_folder
from operators.core.gradings import BILSKY_MR_GRADES, RSNA_SEVERITIES, SPINENET_GRADINGS, rsna_severity_from_stenosis_grade
from operators.core.key_images import SAGITTAL_HEIGHT, key_bilsky_entries, sagittal_key_image, write_key_images
from operators.core.levels import disc_levels
from operators.core.report import BilskyEntry, DiscEntry, SoftwareInfo, VertebraEntry, study_report, validate_report
from operators.core.series_roles import assign_roles
from tests.conftest import PATIENT_IDENTIFIERS
from tests.test_structured_report import make_report


def _peaked(classes: tuple, truth: Any, peak: float = 0.8) -> list[float]:
    """Probabilities with ``peak`` on the true class and the rest spread evenly."""
    rest = (1.0 - peak) / (len(classes) - 1)
    return [peak if c == truth else rest for c in classes]


def truth_report(study: StudyScan, truth: dict[str, Any]) -> dict[str, Any]:
    """The report a perfect pipeline would write for a generated study (findings from its truth)."""
    sagittal = next(s["series_instance_uid"] for s in truth["series"] if s["expected_role"] == "sag_t2")
    vertebrae = [
        VertebraEntry(
            level=v["level"],
            level_probability=0.97,
            series_instance_uid=sagittal,
            centroid_mm=v["centroid_mm"],
            corners_mm=v["corners_mm"],
            detection_score=0.95,
            findings={name: 0.9 if v["lesions"][name] else 0.05 for name in ("metastasis", "fracture", "cord_compression")},
        )
        for v in truth["vertebrae"]
        if v["fully_in_view"][sagittal]
    ]
    levels = {v.level for v in vertebrae}
    discs = []
    for d in truth["discs"]:
        if not set(disc_levels(d["level"])) <= levels:
            continue
        gradings = {name: _peaked(classes, d["gradings"][name]) for name, classes in SPINENET_GRADINGS.items()}
        canal = rsna_severity_from_stenosis_grade(d["gradings"]["central_canal_stenosis"])
        rsna = {"spinal_canal_stenosis": _peaked(RSNA_SEVERITIES, canal)} if d["level"].startswith("L") else {}
        discs.append(DiscEntry(level=d["level"], centre_mm=d["centre_mm"], gradings=gradings, rsna=rsna))
    bilsky = [
        BilskyEntry(
            series_instance_uid=b["series_instance_uid"], sop_instance_uid=b["sop_instance_uid"], level=b["level"],
            modality="MR", probabilities=_peaked(BILSKY_MR_GRADES, b["grade"], 0.7), instance_number=b["instance_number"],
        )
        for b in truth["bilsky"]
        if b["modality"] == "MR"
    ]
    report = study_report(
        study, assign_roles(study.series), SoftwareInfo("spine-map", "0.1.0"), vertebrae=vertebrae, discs=discs, bilsky=bilsky
    )
    validate_report(report)
    return report


@pytest.fixture(scope="module")
def generated(generated_study: tuple[Path, dict]) -> tuple[StudyScan, dict]:
    folder, truth = generated_study
    study = scan_study_folder(folder)
    return study, truth_report(study, truth)


def _coloured(picture: Image.Image) -> np.ndarray:
    """``(H, W)`` mask of pixels that are not grey: only annotations are coloured."""
    rgb = np.asarray(picture).astype(int)
    return (np.abs(rgb[..., 0] - rgb[..., 1]) > 30) | (np.abs(rgb[..., 1] - rgb[..., 2]) > 30)


def test_sagittal_key_image_marks_every_vertebra_and_disc_where_it_is(generated: tuple[StudyScan, dict]) -> None:
    study, report = generated
    image = sagittal_key_image(report, study)
    assert image is not None

    series = study.series_by_uid(report["vertebrae"][0]["series_instance_uid"])
    stack = max(series.stacks, key=lambda s: s.n_slices)
    geometry = stack.geometry
    # The slice shown is the one nearest the vertebrae's mean centroid.
    mean_index = geometry.lps_to_index(np.mean([v["centroid_mm"] for v in report["vertebrae"]], axis=0))
    assert image.source.sop_instance_uid == stack.instances[int(round(mean_index[0]))].sop_instance_uid
    assert image.picture.height == SAGITTAL_HEIGHT

    # A marker in the label's colour surrounds the projection of each centroid / centre.
    _, rows, columns = geometry.shape
    spacing = geometry.spacing_mm
    scale = SAGITTAL_HEIGHT / (rows * spacing[1] / spacing[2])
    rgb = np.asarray(image.picture).astype(int)
    coloured = _coloured(image.picture)
    points = [(v["centroid_mm"], (64, 255, 64) if max(v["findings"].values()) < 0.5 else (255, 64, 64)) for v in report["vertebrae"]]
    points += [(d["centre_mm"], None) for d in report["discs"]]
    assert len(points) >= 8
    for point_mm, colour in points:
        _, row, column = geometry.lps_to_index(point_mm)
        x = int(round((column + 0.5) * scale - 0.5))
        y = int(round((row + 0.5) * scale * spacing[1] / spacing[2] - 0.5))
        window = (slice(max(y - 6, 0), y + 7), slice(max(x - 6, 0), x + 7))
        assert coloured[window].any(), f"no marker at {point_mm}"
        if colour is not None:
            assert (np.abs(rgb[window] - colour).sum(axis=-1) < 10).any(), f"marker at {point_mm} is not {colour}"
    # Away from the annotations the picture is the grey slice.
    assert coloured.mean() < 0.05


def test_key_images_are_written_as_png_and_secondary_capture_in_the_study(
    generated: tuple[StudyScan, dict], tmp_path: Path
) -> None:
    study, report = generated
    files = write_key_images(report, study, tmp_path, tmp_path / "dicom")

    pngs = [f for f in files if f.suffix == ".png"]
    dicoms = [f for f in files if f.suffix == ".dcm"]
    assert [f.name for f in pngs][0] == "key_image_sagittal.png"
    assert len(pngs) == len(dicoms) == 1 + len(key_bilsky_entries(report))
    datasets = [pydicom.dcmread(f) for f in dicoms]
    study_series = {s.series_instance_uid for s in study.series}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    for number, (png, ds) in enumerate(zip(pngs, datasets), start=1):
        assert ds.SOPClassUID == SecondaryCaptureImageStorage
        assert ds.StudyInstanceUID == report["study_instance_uid"]
        assert ds.SeriesInstanceUID not in study_series
        assert ds.InstanceNumber == number and ds.SeriesNumber == 9002
        assert ds.BurnedInAnnotation == "YES"
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in {
            i.sop_instance_uid for s in study.series for st in s.stacks for i in st.instances
        }
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(Image.open(png).convert("RGB")))
        assert not any(value.lower() in ds.ImageComments.lower() for value in PATIENT_IDENTIFIERS)


def test_the_most_severe_bilsky_image_of_each_level_gets_a_key_image(small_study: Path, tmp_path: Path) -> None:
    study = scan_study_folder(small_study)
    report = make_report(study)
    first, second = report["bilsky"]
    images = [i.sop_instance_uid for s in study.series for st in s.stacks for i in st.instances]
    # Same level: the higher grade wins; grade 0 never makes a key image.
    report["bilsky"] = [
        {**first, "level": "L4", "grade": "1b", "high_grade": False},
        {**second, "level": "L4", "grade": "2", "high_grade": True},
        {**first, "sop_instance_uid": images[-1], "level": "L5", "grade": "0", "high_grade": False},
    ]

    files = write_key_images(report, study, tmp_path, tmp_path / "dicom")

    names = sorted(f.name for f in files if f.suffix == ".png")
    assert names == ["key_image_bilsky_01_L4.png", "key_image_sagittal.png"]
    bilsky = pydicom.dcmread(tmp_path / "dicom" / "key_image_bilsky_01_L4.dcm")
    assert bilsky.SourceImageSequence[0].ReferencedSOPInstanceUID == second["sop_instance_uid"]
    assert "L4 Bilsky 2 HIGH GRADE" in bilsky.ImageComments


def test_no_sagittal_series_means_no_sagittal_key_image(small_study: Path, tmp_path: Path) -> None:
    study = scan_study_folder(small_study)
    report = study_report(study, assign_roles(study.series), SoftwareInfo("spine-map", "0.1.0"))
    report["series"] = [{**s, "role": "ax_t2" if s["role"] == "ax_t2" else "unused"} for s in report["series"]]

    assert sagittal_key_image(report, study) is None
    assert write_key_images(report, study, tmp_path, tmp_path / "dicom") == []
