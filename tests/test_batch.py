"""The run log (stage timings, the closing list of outputs) and ``--batch`` over study folders."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from operators.core.run_log import stage_timer, stage_timings, timings_mark
from tests.conftest import PATIENT_IDENTIFIERS, assert_clean_console, copy_study

onnx = pytest.importorskip("onnx")

STAGE_LINE = re.compile(r"stage (\w+) finished in (\d+\.\d{3}) s$")


def test_stage_timer_logs_the_exact_line_and_records_the_timing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spine_map.run")
    mark = timings_mark()

    with stage_timer("example_stage"):
        sum(range(1000))

    (record,) = [r for r in caplog.records if r.name == "spine_map.run"]
    assert record.levelno == logging.INFO
    match = STAGE_LINE.fullmatch(record.getMessage())
    assert match and match.group(1) == "example_stage"
    (timing,) = stage_timings()[mark:]
    assert timing.stage == "example_stage" and f"{timing.seconds:.3f}" == match.group(2)


def test_a_failing_stage_is_not_recorded() -> None:
    mark = timings_mark()
    with pytest.raises(ZeroDivisionError):
        with stage_timer("broken"):
            1 / 0
    assert stage_timings()[mark:] == []


def _zero_detector(folder: Path) -> Path:
    """A models folder whose vertebra detector finds nothing (all 13 output channels zero):
    enough to run the whole pipeline without trained weights."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["image", "zero"], ["z"]), helper.make_node("Concat", ["z"] * 13, ["maps"], axis=1)],
        "zero_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, None, None])],
        [helper.make_tensor_value_info("maps", TensorProto.FLOAT, [None, 13, None, None])],
        [numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vertebra_detector.onnx").write_bytes(data)
    manifest = {"vertebra_detector": {"onnx": "vertebra_detector.onnx", "sha256": {"onnx": hashlib.sha256(data).hexdigest()}}}
    (folder / "manifest.json").write_text(json.dumps({"schema": "spine-map-models/1", "models": manifest}))
    return folder


@pytest.fixture(scope="module")
def batch_run(small_study: Path, tmp_path_factory: pytest.TempPathFactory):
    """``spine-map --batch`` over two copies of the small study and one folder without DICOM."""
    from tests.conftest import capture_fds

    root = tmp_path_factory.mktemp("batch")
    studies = root / "studies"
    copy_study(small_study, studies / "study_a")
    copy_study(small_study, studies / "study_b")
    (studies / "empty").mkdir()
    (studies / "empty" / "notes.txt").write_text("no images here")
    models = _zero_detector(root / "models")
    out = root / "out"

    from app.cli import run_app_main
    from tests.conftest import AppRun

    with capture_fds() as console:
        code = run_app_main(["--batch", "-i", str(studies), "-o", str(out), "-m", str(models)])
    return AppRun(code, console.stdout, console.stderr), out


def test_batch_runs_every_study_folder_into_its_own_output(batch_run) -> None:
    run, out = batch_run

    assert run.code == 3  # the first study that failed: "empty" has no DICOM image
    assert_clean_console(run)
    for name in ("study_a", "study_b"):
        report = json.loads((out / name / "spine_report.json").read_text())
        assert len(report["series"]) == 3
        assert (out / name / "summary.txt").is_file() and (out / name / "key_image_sagittal.png").is_file()
    assert (out / "empty" / "spine_report.json").is_file()  # a report with warnings all the same
    with (out / "batch_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["study"], r["exit_code"], r["outcome"]) for r in rows] == [
        ("empty", "3", "no readable DICOM image series"),
        ("study_a", "0", "report written"),
        ("study_b", "0", "report written"),
    ]
    assert all(float(r["seconds"]) > 0 for r in rows)
    assert "batch finished: 3 studies, 2 with a report, 1 failed (empty: exit 3)" in run.stdout


def test_batch_loads_each_model_once(batch_run) -> None:
    _, out = batch_run
    logs = [(out / name / "spine_map.log").read_text() for name in ("study_a", "study_b")]

    loads = [log.count("model vertebra_detector loaded") for log in logs]
    assert loads == [1, 0]
    assert "stage vertebra_detector finished in" in logs[1]  # the second study ran the cached model


def test_run_log_has_every_stage_timing_and_ends_naming_every_output(batch_run) -> None:
    _, out = batch_run
    study = out / "study_a"
    lines = (study / "spine_map.log").read_text().splitlines()

    stages = [m.group(1) for line in lines if (m := STAGE_LINE.search(line))]
    # The disc, cancer and Bilsky branches all follow the labeller; the scheduler may run them in any order.
    assert stages[:4] == ["study_loader", "series_selector", "vertebra_detector", "level_labeller"]
    assert sorted(stages[4:8]) == ["bilsky_grader", "cancer_classifier", "disc_grader", "volume_extractor"]
    assert stages.index("volume_extractor") < stages.index("disc_grader")
    assert stages[8:] == ["report_writer", "sr_writer"]
    last = lines[-1]
    assert " spine_map.run: outputs in " in last
    named = set(last.split(": ", 2)[-1].split(", "))
    on_disk = {str(p.relative_to(study)) for p in study.rglob("*") if p.is_file()}
    assert named == on_disk
    text = "\n".join(lines).lower()
    assert not any(value.lower() in text for value in PATIENT_IDENTIFIERS)
