"""The benchmark (:mod:`benchmarks.speed`) and its studies (:mod:`benchmarks.studies`).

The full benchmark is a command (``python -m benchmarks``); here: forced sagittal sampling on real
generated DICOM, stage-line parsing, one real measured app run, the tables, and (slow) the quick
benchmark end to end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import run_subprocess
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.speed import (
    SPINENET_V2,
    AppRunMeasure,
    StudyMeasure,
    dicom_read_seconds,
    linear_fit,
    parse_stage_times,
    render_markdown,
    run_app_once,
)
from benchmarks.studies import lumbar_config
from operators.core.geometry import VolumeGeometry
from training.synthetic.acquisition import StackGrid, rescale_grid
from training.synthetic.study import generate_study


def test_stage_lines_are_parsed_from_the_log() -> None:
    log = (
        "2026-01-01 12:00:00,001 INFO spine_map.run: stage vertebra_detector finished in 1.250 s\n"
        "2026-01-01 12:00:00,002 INFO operators.study_loader: 74 files looked at\n"
        "2026-01-01 12:00:01,000 INFO spine_map.run: stage level_labeller finished in 0.5 s\n"
        "2026-01-01 12:00:02,000 INFO spine_map.run: stage level_labeller finished in 2.5e-1 s\n"
    )
    assert parse_stage_times(log) == {"vertebra_detector": 1.25, "level_labeller": 0.75}
    assert parse_stage_times("no stage lines at all\n") == {}


def test_linear_fit_recovers_a_line() -> None:
    fit = linear_fit([9, 15, 25], [1.0 + 0.2 * 9, 1.0 + 0.2 * 15, 1.0 + 0.2 * 25])
    assert fit is not None and fit["slope"] == pytest.approx(0.2) and fit["intercept"] == pytest.approx(1.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert linear_fit([9], [1.0]) is None


@settings(max_examples=50, deadline=None)
@given(
    rows=st.integers(40, 700), columns=st.integers(40, 700), matrix=st.sampled_from([128, 256, 512]),
    spacing=st.floats(0.3, 1.5), angle=st.floats(-0.4, 0.4),
)  # fmt: skip
def test_rescaled_grid_keeps_centre_fov_and_square_pixels(rows: int, columns: int, matrix: int, spacing: float, angle: float) -> None:
    row_dir = (0.0, float(np.cos(angle)), float(np.sin(angle)))
    col_dir = (0.0, float(np.sin(angle)), -float(np.cos(angle)))
    geometry = VolumeGeometry.from_dicom((*row_dir, *col_dir), (5.0, -80.0, 120.0), (spacing, spacing), (9, rows, columns), 4.0)
    grid = StackGrid(geometry, 3.5, (min(rows, 256), min(columns, 256)), 2)
    scaled = rescale_grid(grid, matrix)
    _, new_rows, new_columns = scaled.geometry.shape
    assert max(new_rows, new_columns) == matrix
    new_spacing = scaled.geometry.spacing_mm
    assert new_spacing[1] == pytest.approx(new_spacing[2]) and new_spacing[0] == pytest.approx(4.0)
    for old_n, new_n in ((rows, new_rows), (columns, new_columns)):  # FOV within one new pixel
        assert abs(old_n * spacing - new_n * new_spacing[1]) <= new_spacing[1] * 0.5 + 1e-6

    def centre(g: VolumeGeometry) -> np.ndarray:
        return g.index_to_lps([(s - 1) / 2 for s in g.shape])

    np.testing.assert_allclose(centre(scaled.geometry), centre(geometry), atol=1e-6)
    assert scaled.acquired_shape[0] <= new_rows and scaled.acquired_shape[1] <= new_columns


@pytest.fixture(scope="module")
def forced_and_free(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """The same seed generated freely and with 11 sagittal slices of (larger side) 256 pixels."""
    work = tmp_path_factory.mktemp("forced")
    free = generate_study(5, work / "free", lumbar_config())
    forced = generate_study(5, work / "forced", lumbar_config(sagittal_slices=11, sagittal_matrix=256))
    return work / "forced" / "study", free, forced


def test_forced_sagittal_sampling_is_what_the_dicom_files_say(forced_and_free: tuple[Path, dict, dict]) -> None:
    study, free, forced = forced_and_free
    sagittal = [s for s in forced["series"] if s["kind"].startswith("sag")]
    assert [s["kind"] for s in forced["series"]] == ["sag_t1", "sag_t2", "sag_stir", "ax_t2"]
    for series in sagittal:
        files = sorted((study / series["folder"]).iterdir())
        datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        mine = [d for d in datasets if d.SeriesInstanceUID == series["series_instance_uid"]]
        assert len(mine) == 11
        assert {max(d.Rows, d.Columns) for d in mine} == {256}
        assert {tuple(float(v) for v in d.PixelSpacing) for d in mine} == {(series["pixel_spacing_mm"][0],) * 2}


def test_only_the_sagittal_sampling_changes(forced_and_free: tuple[Path, dict, dict]) -> None:
    _, free, forced = forced_and_free
    pairs = list(zip(free["series"], forced["series"]))
    assert [a["kind"] for a, _ in pairs] == [b["kind"] for _, b in pairs]
    for a, b in pairs:
        if a["kind"] == "ax_t2":
            assert {k: a[k] for k in ("n_instances", "rows", "columns", "pixel_spacing_mm")} == \
                   {k: b[k] for k in ("n_instances", "rows", "columns", "pixel_spacing_mm")}  # fmt: skip
        else:  # same FOV height (rows × spacing) to within a pixel
            assert abs(a["rows"] * a["pixel_spacing_mm"][0] - b["rows"] * b["pixel_spacing_mm"][0]) <= b["pixel_spacing_mm"][0]
    def anatomy(truth: dict) -> list[dict]:  # what is in view depends on the sampling, the rest must not
        return [{k: v for k, v in vertebra.items() if k != "fully_in_view"} for vertebra in truth["vertebrae"]]

    assert anatomy(free) == anatomy(forced)  # same anatomy and pose


def test_one_measured_app_run(small_study: Path, tmp_path: Path) -> None:
    run = run_app_once(small_study, tmp_path / "out")
    assert run.exit_code == 0, (tmp_path / "out.stderr").read_text()
    assert 0 < run.wall_s < 300 and 50 < run.peak_rss_mb < 8192
    assert (tmp_path / "out" / "spine_report.json").is_file()
    assert dicom_read_seconds(small_study) > 0


def _measure(name: str, walls: list[float], stages: dict[str, float]) -> StudyMeasure:
    measure = StudyMeasure(name=name, series=[{"kind": "sag_t2", "n_instances": 9, "rows": 256, "columns": 240,
                                              "transfer_syntax": "1.2.840.10008.1.2.1"}], n_files=9, size_mb=1.0)  # fmt: skip
    measure.runs = [AppRunMeasure(w, 400.0, 0, stages) for w in walls]
    measure.read_s = [0.1, 0.2, 0.3]
    return measure


def test_tables_compare_with_spinenet_v2() -> None:
    stages = {"vertebra_detector": 2.0, "level_labeller": 1.0, "disc_grader": 0.5}
    lumbar = _measure("lumbar", [5.0, 4.0, 6.0], stages).to_json()
    assert lumbar["wall_s_median"] == 5.0 and lumbar["detect_label_s"] == 3.0 and lumbar["grading_s"] == 0.5
    assert lumbar["app_to_read_ratio"] == pytest.approx(25.0)
    whole = _measure("whole", [30.0], {}).to_json()
    assert whole["detect_label_s"] is None  # stages that did not log are absent, not zero
    results = {
        "repeats": 3, "machine": {"cpus": 2, "cpu_model": "test", "gpu": False}, "studies": [lumbar, whole],
        "scaling": {"points": [{"slices": 9, "matrix": 256, **lumbar}], "fits": {"app wall": {"slope": 0.1, "intercept": 1.0, "r2": 0.99}}},
    }  # fmt: skip
    markdown = render_markdown(results)
    cpu, gpu = SPINENET_V2["detect_label_s"]["cpu"], SPINENET_V2["detect_label_s"]["gpu"]
    assert f"{cpu['lumbar']:g} s / {cpu['whole']:g} s" in markdown and f"{gpu['lumbar']:g} s / {gpu['whole']:g} s" in markdown
    assert "1.6 GB / 2.5 GB" in markdown
    assert "| whole app, wall | 5.00 s | 30.00 s |" in markdown and "❌ ≤ 20 s" in markdown
    assert "| vertebra_detector | 2.00 s | n/a |" in markdown
    assert "| 9 | 256 | 5.00 s | 3.00 s |" in markdown and "0.100 s/slice" in markdown


@pytest.mark.slow
def test_quick_benchmark_command(tmp_path: Path) -> None:
    run = run_subprocess(sys.executable, "-m", "benchmarks", "--quick", "--out", tmp_path, timeout=1200)
    assert run.code == 0, run.console
    results = json.loads((tmp_path / "benchmark.json").read_text())
    assert {s["name"] for s in results["studies"]} == {"lumbar", "whole"}
    assert [p["slices"] for p in results["scaling"]["points"]] == [9, 25]
    assert "SpineNetV2" in (tmp_path / "benchmark.md").read_text()
