"""Determinism: the same study gives the same report (its ``generated_at`` timestamp aside) from run
to run and whatever the number of CPU threads.

The app runs as a user runs it (``python app -i STUDY -o OUT``, a subprocess each), because thread
pools (OpenMP, BLAS, onnxruntime) read their sizes once per process. Thread counts are set through
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` and ``SPINE_MAP_ORT_THREADS``
(the onnxruntime intra-op thread count, for the model stages). Every output file is compared: the
JSON report without ``generated_at``, the CSV byte for byte, and the same set of file names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from benchmarks.speed import REPO_ROOT, app_environment
from benchmarks.studies import lumbar_config
from operators.core.report import REPORT_CSV_NAME, REPORT_JSON_NAME
from training.synthetic.study import generate_study

#: Fields of ``spine_report.json`` that may differ between runs: the moment it was written.
TIME_FIELDS = frozenset({"generated_at"})
#: Attributes of output DICOM objects (SR, secondary captures) that name the moment or the new
#: object itself: every run creates new instances, so they differ by design.
DICOM_RUN_ATTRIBUTES = frozenset({
    "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "SeriesDate", "SeriesTime",
    "SOPInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID", "DateOfSecondaryCapture",
    "TimeOfSecondaryCapture",
})  # fmt: skip
#: Output files whose content is a record of the run itself (times, durations), not a result.
RUN_RECORDS = frozenset({"spine_map.log"})


def _threads(n: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n),
            "SPINE_MAP_ORT_THREADS": str(n)}  # fmt: skip


def _without_time(value):
    if isinstance(value, dict):
        return {k: _without_time(v) for k, v in value.items() if k not in TIME_FIELDS}
    if isinstance(value, list):
        return [_without_time(v) for v in value]
    return value


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One lumbar study (4 series, 9 sagittal slices of 256²) run three times: 1 thread, 2 threads,
    1 thread again. The runs go two at a time (the machine has two cores)."""
    work = tmp_path_factory.mktemp("determinism")
    generate_study(7, work / "lumbar", lumbar_config(sagittal_slices=9, sagittal_matrix=256))
    study = work / "lumbar" / "study"
    outs = {"one_thread": work / "out1", "two_threads": work / "out2", "one_thread_again": work / "out3"}
    threads = {"one_thread": 1, "two_threads": 2, "one_thread_again": 1}
    names = list(outs)
    for batch in (names[:2], names[2:]):
        processes = [
            subprocess.Popen([sys.executable, "app", "-i", str(study), "-o", str(outs[name])], cwd=REPO_ROOT,
                             env=app_environment(_threads(threads[name])), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for name in batch
        ]  # fmt: skip
        for name, process in zip(batch, processes):
            _, stderr = process.communicate(timeout=600)
            assert process.returncode == 0, f"{name}: exit {process.returncode}: {stderr}"
    return outs


def _dicom_content(path: Path) -> dict[str, object]:
    """An output DICOM object as DICOM JSON without :data:`DICOM_RUN_ATTRIBUTES` (top level) and
    without the time each contributing device worked on it (ContributionDateTime)."""
    dataset = pydicom.dcmread(path)
    for keyword in DICOM_RUN_ATTRIBUTES:
        if keyword in dataset:
            delattr(dataset, keyword)
    for equipment in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in equipment:
            del equipment.ContributionDateTime
    return dataset.to_json_dict()


def _results(out: Path) -> dict[str, object]:
    """Every output file but the run records: JSON without its timestamp, DICOM without the new
    instance's UIDs and times, anything else byte for byte."""
    results: dict[str, object] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name not in RUN_RECORDS):
        key = path.relative_to(out).as_posix()
        if path.suffix == ".json":
            results[key] = _without_time(json.loads(path.read_text("utf-8")))
        elif path.suffix.lower() in (".dcm", ".sr"):
            results[key] = _dicom_content(path)
        else:
            results[key] = path.read_bytes()
    return results


def test_report_files_are_written(three_runs: dict[str, Path]) -> None:
    for out in three_runs.values():
        assert (out / REPORT_JSON_NAME).is_file() and (out / REPORT_CSV_NAME).is_file()
    report = json.loads((three_runs["one_thread"] / REPORT_JSON_NAME).read_text("utf-8"))
    assert len(report["series"]) == 4  # the comparison covers a real four-series study


def test_same_study_same_results_across_runs(three_runs: dict[str, Path]) -> None:
    assert _results(three_runs["one_thread"]) == _results(three_runs["one_thread_again"])


def test_same_study_same_results_across_thread_counts(three_runs: dict[str, Path]) -> None:
    assert _results(three_runs["one_thread"]) == _results(three_runs["two_threads"])


def test_only_the_timestamp_was_removed(three_runs: dict[str, Path]) -> None:
    """Guard against a vacuous comparison: the removed fields are exactly the time fields."""
    report = json.loads((three_runs["one_thread"] / REPORT_JSON_NAME).read_text("utf-8"))
    assert set(report) - set(_without_time(report)) == TIME_FIELDS
    assert os.path.getsize(three_runs["one_thread"] / REPORT_CSV_NAME) > 0
