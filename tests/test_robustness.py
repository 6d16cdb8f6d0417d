"""Robustness harness (:mod:`benchmarks.robustness`): the app on damaged studies ends every run with
a report or one clear error line and a documented exit code, without tracebacks, half-written files
or patient identifiers.

CI runs a 50-case sample (every damage kind at least twice); the 500-case run is marked slow
(``./run_tests.sh -m slow -k robustness`` or ``python -m benchmarks.robustness --n 500``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from conftest import write_test_series

import app.cli
from benchmarks import robustness as harness
from benchmarks.robustness import (
    MUTATIONS,
    CaseState,
    Console,
    check_case,
    format_summary,
    plan_cases,
    run_harness,
    set_transfer_syntax,
)


def _assert_all_passed(summary: dict) -> None:
    failures = json.dumps(summary["failures"], indent=1)
    assert summary["failed_cases"] == 0, f"{format_summary(summary)}\n{failures}"
    assert summary["tracebacks"] == 0 and summary["identifier_leaks"] == 0


def test_exit_codes_are_the_apps() -> None:
    assert (harness.EXIT_OK, harness.EXIT_INTERNAL_ERROR, harness.EXIT_USAGE) == (
        app.cli.EXIT_OK, app.cli.EXIT_INTERNAL_ERROR, app.cli.EXIT_USAGE)  # fmt: skip
    assert (harness.EXIT_NOTHING_USABLE, harness.EXIT_OUTPUT_UNWRITABLE) == (
        app.cli.EXIT_NOTHING_USABLE, app.cli.EXIT_OUTPUT_UNWRITABLE)  # fmt: skip
    assert harness.LOG_FILE == app.cli.LOG_FILE_NAME


def test_cases_are_reproducible_and_cover_every_damage() -> None:
    cases = plan_cases(50, seed=3, bases=["a", "b", "c"])
    assert cases == plan_cases(50, seed=3, bases=["a", "b", "c"])
    primaries = [c.mutations[0] for c in cases]
    assert all(primaries.count(name) >= 2 for name in MUTATIONS)
    assert {c.base for c in cases} == {"a", "b", "c"}
    assert any(len(c.mutations) > 1 for c in cases)


def test_transfer_syntax_rewrite_keeps_the_dataset(tmp_path: Path) -> None:
    (path,) = write_test_series(tmp_path, "sag_t2", n_slices=1)
    before = pydicom.dcmread(path)
    set_transfer_syntax(path, "1.2.840.10008.1.2.4.100")
    after = pydicom.dcmread(path, stop_before_pixels=True)
    assert after.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.100"
    assert after.SOPInstanceUID == before.SOPInstanceUID and after.PatientID == before.PatientID


def test_disk_full_simulation_fails_writes_past_the_limit(tmp_path: Path) -> None:
    with harness._file_size_limit(16):
        with pytest.raises(OSError) as raised:
            (tmp_path / "f").write_bytes(b"x" * 64)  # what a full disk does to a buffered write
    assert raised.value.errno == errno.EFBIG and (tmp_path / "f").stat().st_size == 16
    (tmp_path / "g").write_bytes(b"x" * 64)  # the limit is gone afterwards


@pytest.mark.skipif(os.geteuid() != 0, reason="the effective-uid switch is only used when running as root")
def test_permissions_bite_when_running_as_root() -> None:
    folder = harness._world_accessible_tempdir("spine-map-test-") / "locked"
    folder.mkdir(mode=0o500)
    try:
        with harness._unprivileged(True), pytest.raises(PermissionError):
            (folder / "f").write_text("x")
        assert os.geteuid() == 0
        (folder / "f").write_text("x")  # root again
    finally:
        shutil.rmtree(folder.parent)


def _state(tmp_path: Path, secrets: set[str]) -> CaseState:
    import random

    return CaseState(study=tmp_path, base=None, rng=random.Random(0), secrets=secrets)  # type: ignore[arg-type]


def test_the_checker_catches_every_broken_promise(tmp_path: Path) -> None:
    """A harness that cannot fail proves nothing: each promise is broken once on purpose."""
    out = tmp_path / "out"
    out.mkdir()
    schema = harness._load_schema()
    state = _state(tmp_path, {"PIDZQ-1"})
    state.output_damage = "read_only"
    clean = Console(4, "", "spine-map: cannot write to output folder x: File too large\n")
    assert check_case(state, clean, out, schema) == []
    broken = {
        "traceback on the console": Console(4, "", "Traceback (most recent call last):\n"),
        "escaped run_app_main": Console(None, "", "", "OSError escaped run_app_main"),
        "internal error": Console(1, "", "spine-map: internal error (KeyError); details in x\n"),
        "printed 2 lines": Console(4, "", "spine-map: a\nspine-map: b\n"),
        "patient identifier in console": Console(4, "", "spine-map: cannot read pidzq-1\n"),
        "without the spine-map prefix": Console(4, "", "[holoscan] error\n"),
        "without spine_report.json": Console(0, "spine-map: report written\n", ""),
    }
    for expected, console in broken.items():
        assert any(expected in p for p in check_case(state, console, out, schema)), expected
    (out / ".spine_report.json.x1.tmp").write_text("{")
    (out / "spine_report.json").write_text('{"schema_version": ')
    (out / "spine_report.csv").write_text("a,b\n1\n")
    state.output_damage = None
    problems = check_case(state, Console(0, "spine-map: report written\n", ""), out, schema)
    assert any("temporary files left" in p for p in problems)
    assert any("spine_report.csv: ragged" in p for p in problems)


def test_fifty_damaged_studies(capfd: pytest.CaptureFixture[str]) -> None:
    summary = run_harness(50, seed=0)
    assert summary["studies_tried"] == 50
    assert set(summary["by_primary_damage"]) == set(MUTATIONS)
    _assert_all_passed(summary)
    assert summary["outcomes"].get("report", 0) > 0 and summary["outcomes"].get("output_unwritable", 0) > 0


@pytest.mark.slow
def test_five_hundred_damaged_studies() -> None:
    summary = run_harness(500, seed=1)
    assert summary["studies_tried"] == 500
    _assert_all_passed(summary)
