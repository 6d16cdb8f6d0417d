"""Bad input end to end: every case gives a documented exit code, one-line messages, no traceback,
no patient identifier anywhere, and a report with warnings wherever anything is usable.

The app runs in-process (``app.cli.run_app_main``) with the console captured at the file-descriptor
level, so anything Holoscan's C++ side prints is checked too.
"""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

import jsonschema
import pydicom
import pytest
from conftest import (
    OTHER_IDENTIFIERS,
    OTHER_PATIENT,
    PATIENT_IDENTIFIERS,
    AppRun,
    assert_clean_console,
    copy_study,
    write_test_series,
)

from app.cli import (
    EXIT_INTERNAL_ERROR,
    EXIT_NOTHING_USABLE,
    EXIT_OK,
    EXIT_OUTPUT_UNWRITABLE,
    EXIT_USAGE,
    LOG_FILE_NAME,
)
from operators.core import report as report_module
from operators.core.report import REPORT_CSV_NAME, REPORT_JSON_NAME, load_schema


def assert_private(run: AppRun, out: Path, identifiers: tuple[str, ...] = PATIENT_IDENTIFIERS) -> None:
    """Neither the console nor any file the app wrote names the patient.

    ``dicom/`` is left out: the SR and Secondary Capture objects must carry the study's patient
    module, or PACS could not file them with the study.
    """
    assert_clean_console(run, identifiers)
    for path in out.rglob("*"):
        if not path.is_file() or path.relative_to(out).parts[0] == "dicom":
            continue
        text = path.read_text(encoding="utf-8", errors="replace").lower()
        for value in identifiers:
            assert value.lower() not in text, f"{value!r} leaked into {path.name}"


def read_report(out: Path) -> dict:
    report = json.loads((out / REPORT_JSON_NAME).read_text(encoding="utf-8"))
    jsonschema.validate(report, load_schema())
    return report


def codes(report: dict) -> set[str]:
    return {w["code"] for w in report["warnings"]}


def roles(report: dict) -> dict[str, str]:
    return {s["description"]: s["role"] for s in report["series"]}


def test_empty_folder(tmp_path: Path, run_app) -> None:
    (study := tmp_path / "empty").mkdir()
    run = run_app("-i", study, "-o", tmp_path / "out")
    assert run.code == EXIT_NOTHING_USABLE
    report = read_report(tmp_path / "out")
    assert report["study_instance_uid"] is None and report["series"] == []
    assert "NO_IMAGES" in codes(report)
    assert "no readable DICOM image series" in run.stderr
    assert_private(run, tmp_path / "out")


def test_folder_of_non_dicom_files(tmp_path: Path, run_app) -> None:
    study = tmp_path / "junk"
    (study / "sub").mkdir(parents=True)
    (study / "notes.txt").write_text("MRI lumbar spine, patient QUIRINUS ZEPHYRA\n")
    (study / "sub" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (study / "empty.dcm").write_bytes(b"")
    (study / "random.bin").write_bytes(random.Random(1).randbytes(4096))
    run = run_app("-i", study, "-o", tmp_path / "out")
    assert run.code == EXIT_NOTHING_USABLE
    report = read_report(tmp_path / "out")
    assert report["series"] == [] and {"NOT_DICOM", "NO_IMAGES"} <= codes(report)
    assert_private(run, tmp_path / "out")


def test_truncated_and_corrupt_dicom_beside_good_files(small_study: Path, tmp_path: Path, run_app) -> None:
    study = copy_study(small_study, tmp_path / "study")
    t2_files = sorted((study / "sag_t2").iterdir())
    data = t2_files[3].read_bytes()
    t2_files[3].write_bytes(data[: len(data) // 2])  # truncated in the pixel data
    t2_files[4].write_bytes(data[:300])  # truncated in the header
    corrupt = bytearray(t2_files[5].read_bytes())
    corrupt[132:400] = random.Random(0).randbytes(268)  # header garbage after the DICM preamble
    t2_files[5].write_bytes(bytes(corrupt))
    run = run_app("-i", study, "-o", tmp_path / "out")
    assert run.code == EXIT_OK
    report = read_report(tmp_path / "out")
    assert roles(report) == {"sag_t1": "sag_t1", "sag_t2": "sag_t2", "ax_t2": "ax_t2"}
    assert report["warnings"], "the damaged files must be reported"
    assert_private(run, tmp_path / "out")


def test_axial_only_study_has_no_sagittal_warning(tmp_path: Path, run_app) -> None:
    write_test_series(tmp_path / "study", "ax_t2", series_number=4)
    run = run_app("-i", tmp_path / "study", "-o", tmp_path / "out")
    assert run.code == EXIT_OK
    report = read_report(tmp_path / "out")
    assert roles(report) == {"ax_t2": "ax_t2"}
    assert "NO_SAGITTAL_SERIES" in codes(report)
    assert "NO_SAGITTAL_SERIES" in run.stderr
    assert_private(run, tmp_path / "out")


def test_single_slice_series(small_study: Path, tmp_path: Path, run_app) -> None:
    study = copy_study(small_study, tmp_path / "study")
    write_test_series(study / "single", "sag_t2", n_slices=1, series_number=9, description="single slice t2")
    run = run_app("-i", study, "-o", tmp_path / "out")
    assert run.code == EXIT_OK
    report = read_report(tmp_path / "out")
    assert roles(report)["single slice t2"] == "unused"
    assert roles(report)["sag_t2"] == "sag_t2"
    assert_private(run, tmp_path / "out")


def test_only_a_single_slice_series_is_readable_but_unusable(tmp_path: Path, run_app) -> None:
    write_test_series(tmp_path / "study", "sag_t1", n_slices=1)
    run = run_app("-i", tmp_path / "study", "-o", tmp_path / "out")
    assert run.code == EXIT_OK  # an image series was read: the report says why it cannot be used
    report = read_report(tmp_path / "out")
    assert [s["role"] for s in report["series"]] == ["unused"]
    assert "NO_USABLE_SERIES" in codes(report)
    assert_private(run, tmp_path / "out")


def test_missing_geometry_tags(small_study: Path, tmp_path: Path, run_app) -> None:
    study = copy_study(small_study, tmp_path / "study")
    for path in (study / "sag_t1").iterdir():
        dataset = pydicom.dcmread(path)
        del dataset.ImageOrientationPatient
        del dataset.ImagePositionPatient
        del dataset.PixelSpacing
        dataset.save_as(path)
    run = run_app("-i", study, "-o", tmp_path / "out")
    assert run.code == EXIT_OK
    report = read_report(tmp_path / "out")
    assert roles(report)["sag_t1"] == "unused"
    assert roles(report)["sag_t2"] == "sag_t2"
    assert "MISSING_GEOMETRY" in codes(report)
    assert_private(run, tmp_path / "out")


def test_two_patients_in_one_folder(small_study: Path, tmp_path: Path, run_app) -> None:
    study = copy_study(small_study, tmp_path / "study")
    write_test_series(study / "other", "sag_t2", study=OTHER_PATIENT, series_number=2, n_slices=5)
    run = run_app("-i", study, "-o", tmp_path / "out")
    assert run.code == EXIT_OK
    report = read_report(tmp_path / "out")
    assert "MULTIPLE_PATIENTS" in codes(report)
    assert len(report["series"]) == 3  # the study with more images, without the other patient's series
    assert_private(run, tmp_path / "out", PATIENT_IDENTIFIERS + OTHER_IDENTIFIERS)


def test_missing_input_folder_is_a_usage_error(tmp_path: Path, run_app) -> None:
    run = run_app("-i", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert run.code == EXIT_USAGE
    assert run.stderr.count("\n") == 1 and "input folder does not exist" in run.stderr
    assert not (tmp_path / "out").exists()
    assert_clean_console(run)


@pytest.mark.parametrize("arguments", [["--bogus"], ["-o", "out"], ["-i"]])
def test_bad_arguments_are_usage_errors(arguments: list[str], tmp_path: Path, run_app, monkeypatch) -> None:
    monkeypatch.delenv("HOLOSCAN_INPUT_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    run = run_app(*arguments)
    assert run.code == EXIT_USAGE
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("spine-map: error: ")
    assert_clean_console(run)


def test_output_folder_that_cannot_be_created(small_study: Path, tmp_path: Path, run_app) -> None:
    (blocker := tmp_path / "a_file").write_text("not a folder")
    run = run_app("-i", small_study, "-o", blocker / "out")
    assert run.code == EXIT_OUTPUT_UNWRITABLE
    assert run.stdout == "" and run.stderr.count("\n") == 1
    assert run.stderr.startswith("spine-map: cannot write to output folder ")
    assert_clean_console(run)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folder(small_study: Path, tmp_path: Path, run_app) -> None:
    (out := tmp_path / "out").mkdir()
    out.chmod(0o500)
    try:
        run = run_app("-i", small_study, "-o", out)
    finally:
        out.chmod(0o700)
    assert run.code == EXIT_OUTPUT_UNWRITABLE and run.stderr.count("\n") == 1
    assert_clean_console(run)


def test_disk_full_while_writing_the_report(small_study: Path, tmp_path: Path, run_app, monkeypatch) -> None:
    def disk_full(source, destination):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(report_module.os, "replace", disk_full)
    out = tmp_path / "out"
    run = run_app("-i", small_study, "-o", out)
    assert run.code == EXIT_OUTPUT_UNWRITABLE
    assert run.stderr.strip().endswith("No space left on device") and run.stderr.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == [LOG_FILE_NAME]  # no report, no temporary file
    assert_private(run, out)


def test_internal_error_is_one_line_and_logged_without_data(small_study: Path, tmp_path: Path, run_app, monkeypatch) -> None:
    import operators.study_loader

    def broken(folder):
        raise RuntimeError("decoder failed on QUIRINUS^ZEPHYRA")  # a message quoting data must not leak

    monkeypatch.setattr(operators.study_loader, "scan_study_folder", broken)
    out = tmp_path / "out"
    run = run_app("-i", small_study, "-o", out)
    assert run.code == EXIT_INTERNAL_ERROR
    assert run.stderr.count("\n") == 1 and "internal error (RuntimeError)" in run.stderr
    log = (out / LOG_FILE_NAME).read_text(encoding="utf-8")
    assert "unexpected RuntimeError at" in log and "study_loader.py" in log
    assert not (out / REPORT_JSON_NAME).exists() and not (out / REPORT_CSV_NAME).exists()
    assert_private(run, out)


def test_stale_report_is_not_left_from_an_earlier_run(small_study: Path, tmp_path: Path, run_app, monkeypatch) -> None:
    out = tmp_path / "out"
    assert run_app("-i", small_study, "-o", out).code == EXIT_OK
    import operators.study_loader

    def broken(folder):
        raise RuntimeError("boom")

    monkeypatch.setattr(operators.study_loader, "scan_study_folder", broken)
    assert run_app("-i", small_study, "-o", out).code == EXIT_INTERNAL_ERROR
    assert not (out / REPORT_JSON_NAME).exists()


def test_library_messages_are_logged_without_their_text(small_study: Path, tmp_path: Path, run_app, monkeypatch) -> None:
    """Other libraries' log records and warnings may quote DICOM values: only their origin is logged."""
    import logging
    import warnings

    import operators.study_loader

    real_scan = operators.study_loader.scan_study_folder

    def chatty_scan(folder):
        logging.getLogger("pydicom").warning("odd value in PatientName: %s", "QUIRINUS^ZEPHYRA")
        warnings.warn("PatientID PID-7731-XQ has an invalid VR", UserWarning)
        return real_scan(folder)

    monkeypatch.setattr(operators.study_loader, "scan_study_folder", chatty_scan)
    out = tmp_path / "out"
    run = run_app("-i", small_study, "-o", out)
    assert run.code == EXIT_OK
    log = (out / LOG_FILE_NAME).read_text(encoding="utf-8")
    assert "WARNING message from pydicom" in log and "library warning UserWarning at" in log
    assert_private(run, out)
