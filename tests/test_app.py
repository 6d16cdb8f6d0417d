"""The app end to end on a generated lumbar study: in-process, as ``python app``, as
``monai-deploy exec``; and the ``monai-deploy`` wrapper handing other verbs to holoscan-cli."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import (
    REPO_ROOT,
    AppRun,
    assert_clean_console,
    capture_fds,
    finish_subprocess,
    run_subprocess,
    start_subprocess,
    venv_script,
)

import app
from app.cli import EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USAGE, LOG_FILE_NAME, main
from operators.core.report import DISCS_CSV_NAME, REPORT_CSV_NAME, REPORT_JSON_NAME, load_schema


REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


def read_report(out: Path) -> dict:
    report = json.loads((out / REPORT_JSON_NAME).read_text(encoding="utf-8"))
    jsonschema.validate(report, load_schema())
    return report


def without_time(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "generated_at"}


def assert_quiet(run: AppRun) -> None:
    """Only spine-map's own one-line messages: no Holoscan log lines, no Python warnings."""
    assert_clean_console(run)
    for line in run.console.splitlines():
        assert line.startswith("spine-map: "), f"unexpected console line: {line!r}"


@pytest.fixture(scope="module")
def in_process_run(generated_study, tmp_path_factory) -> tuple[AppRun, Path]:
    """One in-process run on the generated study, shared by the tests that read its output."""
    from app.cli import run_app_main

    study, _ = generated_study
    out = tmp_path_factory.mktemp("in_process_out")
    with capture_fds() as console:
        code = run_app_main(["-i", str(study), "-o", str(out)])
    return AppRun(code, console.stdout, console.stderr), out


def test_in_process_run_writes_a_valid_report_with_every_role(in_process_run, generated_study) -> None:
    run, out = in_process_run
    _, truth = generated_study
    assert run.code == EXIT_OK, run.console
    assert_quiet(run)
    assert f"report written to {out / REPORT_JSON_NAME}" in run.stdout
    report = read_report(out)
    assert report["study_instance_uid"] == truth["study_instance_uid"]
    expected = {s["series_instance_uid"]: s["expected_role"] for s in truth["series"]}
    found = {s["series_instance_uid"]: s["role"] for s in report["series"]}
    assert found == expected
    assert all(s["reason"] for s in report["series"])
    assert report["summary"]["series_used"] == sum(role != "unused" for role in expected.values())
    assert report["software"]["name"] == "spine-map" and report["software"]["version"] == app.__version__
    manifest = json.loads((REPO_MODELS / "manifest.json").read_text())["models"]
    assert {m["name"]: m["sha256"] for m in report["software"]["models"]} == {
        name: entry["sha256"]["onnx"] for name, entry in manifest.items()
    }
    # Every vertebra fully in view of a sagittal series is reported with its level, near its centroid.
    sagittal = [s["series_instance_uid"] for s in truth["series"] if s["expected_role"].startswith("sag_")]
    expected = [v for v in truth["vertebrae"] if any(v["fully_in_view"].get(uid) for uid in sagittal)]
    assert expected
    for vertebra in expected:
        reported = min(report["vertebrae"], key=lambda e: math.dist(e["centroid_mm"], vertebra["centroid_mm"]))
        assert math.dist(reported["centroid_mm"], vertebra["centroid_mm"]) < 0.5 * vertebra["height_mm"]
        assert reported["level"] == vertebra["level"]
    rows = list(csv.DictReader((out / REPORT_CSV_NAME).open(encoding="utf-8")))
    assert [r["series_instance_uid"] for r in rows if r["record"] == "series"] == [
        s["series_instance_uid"] for s in report["series"]
    ]
    assert (out / LOG_FILE_NAME).is_file()


def test_every_disc_between_reported_vertebrae_is_graded(in_process_run) -> None:
    """SpineNetV2 gradings for every disc between adjacent reported vertebrae; RSNA conditions for the
    lumbar ones; one discs.csv row each."""
    from operators.core.gradings import RSNA_CONDITIONS, RSNA_SEVERITIES, SPINENET_GRADINGS
    from operators.core.levels import RSNA_DISCS, disc_name, level_order

    _, out = in_process_run
    report = read_report(out)
    levels = sorted((v["level"] for v in report["vertebrae"]), key=level_order)
    adjacent = {disc_name(a, b) for a, b in zip(levels, levels[1:]) if level_order(b) - level_order(a) == 1}
    assert adjacent and adjacent <= {d["level"] for d in report["discs"]}
    for disc in report["discs"]:
        assert set(disc["gradings"]) == set(SPINENET_GRADINGS)
        for grading in disc["gradings"].values():
            assert math.isclose(sum(grading["probabilities"].values()), 1.0, abs_tol=1e-3)
        if disc["level"] in RSNA_DISCS:
            assert set(disc["rsna"]) == set(RSNA_CONDITIONS)
            assert all(c["severity"] in RSNA_SEVERITIES for c in disc["rsna"].values())
    rows = list(csv.DictReader((out / DISCS_CSV_NAME).open(encoding="utf-8")))
    assert [r["level"] for r in rows] == [d["level"] for d in report["discs"]]


def test_every_reported_vertebra_carries_cancer_findings(in_process_run) -> None:
    """The cancer SCT assesses every vertebra the sagittal sequences show: probabilities per finding,
    a review flag, the summary's cancer_suspected and the vertebrae.csv columns."""
    from operators.core.gradings import CANCER_FINDINGS
    from operators.core.report import CANCER_SUSPICION_THRESHOLD, VERTEBRAE_CSV_NAME

    _, out = in_process_run
    report = read_report(out)
    assessed = [v for v in report["vertebrae"] if "findings" in v]
    assert assessed and len(assessed) == len(report["vertebrae"])
    for vertebra in assessed:
        assert set(vertebra["findings"]) == set(CANCER_FINDINGS)
        assert all(0.0 <= p <= 1.0 for p in vertebra["findings"].values())
        assert isinstance(vertebra["needs_review"], bool)
    suspected = any(v["findings"]["metastasis"] >= CANCER_SUSPICION_THRESHOLD for v in assessed)
    assert report["summary"]["cancer_suspected"] is suspected
    rows = list(csv.DictReader((out / VERTEBRAE_CSV_NAME).open(encoding="utf-8")))
    assert all(row["metastasis"] != "" and row["needs_review"] in ("True", "False") for row in rows)


@pytest.fixture(scope="module")
def command_runs(generated_study, tmp_path_factory) -> dict[str, tuple[AppRun, Path]]:
    """``python app`` and ``monai-deploy exec app`` on the generated study, run side by side (each
    spends most of its time importing the SDK stack)."""
    study, _ = generated_study
    commands = {
        "python app": (sys.executable, "app"),
        "monai-deploy exec app": (venv_script("monai-deploy"), "exec", "app"),
    }
    outs = {name: tmp_path_factory.mktemp(name.replace(" ", "_")) for name in commands}
    started = {name: start_subprocess(*command, "-i", study, "-o", outs[name]) for name, command in commands.items()}
    return {name: (finish_subprocess(process), outs[name]) for name, process in started.items()}


@pytest.fixture(scope="module")
def axial_run(tmp_path_factory) -> tuple[AppRun, Path, dict]:
    """One in-process run on a thoracic study with cancer and an axial T2 series."""
    from app.cli import run_app_main
    from training.synthetic.phantom import AnatomyConfig
    from training.synthetic.study import StudyConfig, generate_study

    root = tmp_path_factory.mktemp("axial_study")
    truth = generate_study(172_950, root, StudyConfig(field_of_view="thoracic", series_kinds=("sag_t1", "sag_t2", "ax_t2"),
                                                      anatomy=AnatomyConfig(cancer=True)))
    out = tmp_path_factory.mktemp("axial_out")
    with capture_fds() as console:
        code = run_app_main(["-i", str(root / "study"), "-o", str(out)])
    return AppRun(code, console.stdout, console.stderr), out, truth


def test_every_axial_image_gets_a_bilsky_grade_and_its_level(axial_run) -> None:
    """The Bilsky stage grades each axial T2 image of the study (canal prior from the labelled
    vertebrae): grade, high-grade flag, level, the summary's highest grade and per-level CSV rows."""
    from operators.core.bilsky_pipeline import BILSKY_CLASSES

    run, out, truth = axial_run
    assert run.code == EXIT_OK, run.console
    report = read_report(out)
    axial = {e["sop_instance_uid"]: e for e in truth["bilsky"]}
    assert axial, "the generated study has an axial T2 series"
    graded = {e["sop_instance_uid"]: e for e in report["bilsky"]}
    assert set(graded) <= set(axial)
    assert len(graded) == len(axial) or "CANAL_NOT_FOUND" in {w["code"] for w in report["warnings"]}
    assert len(graded) >= 0.9 * len(axial)
    for uid, entry in graded.items():
        assert entry["grade"] in BILSKY_CLASSES[entry["modality"]]
        assert math.isclose(sum(entry["probabilities"].values()), 1.0, abs_tol=1e-3)
    levels_right = [entry["level"] == axial[uid]["level"] for uid, entry in graded.items()]
    assert sum(levels_right) >= 0.8 * len(levels_right)
    assert report["summary"]["highest_bilsky"] in BILSKY_CLASSES["MR"]
    rows = list(csv.DictReader((out / REPORT_CSV_NAME).open(encoding="utf-8")))
    assert {r["level"] for r in rows if r["record"] == "bilsky_level"} == {e["level"] or "" for e in report["bilsky"]}


def test_python_app_from_the_repository_root(command_runs, in_process_run) -> None:
    run, out = command_runs["python app"]
    assert run.code == EXIT_OK, run.console
    assert_quiet(run)
    # Same study, same report: only the one timestamp field differs between runs.
    assert without_time(read_report(out)) == without_time(read_report(in_process_run[1]))
    assert (out / REPORT_CSV_NAME).read_bytes() == (in_process_run[1] / REPORT_CSV_NAME).read_bytes()


def test_monai_deploy_exec_app(command_runs, generated_study) -> None:
    run, out = command_runs["monai-deploy exec app"]
    assert run.code == EXIT_OK, run.console
    assert_quiet(run)
    assert len(read_report(out)["series"]) == len(generated_study[1]["series"])


def test_monai_deploy_exec_without_app_argument_runs_in_process(small_study: Path, tmp_path: Path, capfd) -> None:
    assert main(["exec", "-i", str(small_study), "-o", str(tmp_path / "out")]) == EXIT_OK
    assert "report written to" in capfd.readouterr().out
    assert main(["exec", str(REPO_ROOT / "app"), "-i", str(small_study), "-o", str(tmp_path / "out2")]) == EXIT_OK


def test_monai_deploy_exec_refuses_another_app(small_study: Path, tmp_path: Path, capfd) -> None:
    assert main(["exec", "other_app.py", "-i", str(small_study), "-o", str(tmp_path / "out")]) == EXIT_USAGE
    assert "runs the spine-map app only" in capfd.readouterr().err


def test_monai_deploy_package_help_reaches_holoscan_cli() -> None:
    run = run_subprocess(venv_script("monai-deploy"), "package", "--help")
    assert run.code == 0, run.console
    assert "usage: monai-deploy package" in run.stdout
    for option in ("--config", "--platform", "--tag"):
        assert option in run.stdout


def test_monai_deploy_other_verbs_pass_through(capsys) -> None:
    assert main(["version"]) == 0
    assert "MONAI Deploy App SDK:" in capsys.readouterr().out
    assert main(["no-such-verb"]) == 2  # holoscan-cli's argparse rejects an unknown verb itself
    assert "invalid choice" in capsys.readouterr().err


def test_app_yaml_is_a_map_manifest_for_this_version() -> None:
    from holoscan_cli.packager.config_reader import ApplicationConfiguration

    reader = ApplicationConfiguration()
    reader.read(REPO_ROOT / "app.yaml")  # holoscan-cli's own validation
    assert reader.title() == "spine-map"
    manifest = yaml.safe_load((REPO_ROOT / "app.yaml").read_text(encoding="utf-8"))
    assert str(manifest["application"]["version"]) == app.__version__
    assert {"cpu", "gpu", "memory", "gpuMemory"} <= set(manifest["resources"])


def test_map_style_run_takes_folders_from_the_environment(small_study: Path, tmp_path: Path, run_app, monkeypatch) -> None:
    """Inside a MAP the app runs without arguments, its folders named by HOLOSCAN_*_PATH."""
    monkeypatch.setenv("HOLOSCAN_INPUT_PATH", str(small_study))
    monkeypatch.setenv("HOLOSCAN_OUTPUT_PATH", str(tmp_path / "out"))
    monkeypatch.setenv("HOLOSCAN_MODEL_PATH", str(REPO_MODELS))
    run = run_app()
    assert run.code == EXIT_OK, run.console
    assert len(read_report(tmp_path / "out")["series"]) == 3


def test_a_models_folder_without_the_models_is_one_clear_line(small_study: Path, tmp_path: Path, run_app, monkeypatch) -> None:
    monkeypatch.setenv("HOLOSCAN_INPUT_PATH", str(small_study))
    monkeypatch.setenv("HOLOSCAN_OUTPUT_PATH", str(tmp_path / "out"))
    monkeypatch.setenv("HOLOSCAN_MODEL_PATH", str(tmp_path / "no_models_packaged"))
    run = run_app()
    assert run.code == EXIT_INTERNAL_ERROR
    assert "vertebra_detector" in run.stderr and "Traceback" not in run.console
    assert len(run.stderr.strip().splitlines()) == 1


def test_explicit_models_folder_must_exist(small_study: Path, tmp_path: Path, run_app) -> None:
    run = run_app("-i", small_study, "-o", tmp_path / "out", "-m", tmp_path / "missing")
    assert run.code == EXIT_USAGE and "models folder does not exist" in run.stderr


def test_the_app_process_raises_its_stack_limit_for_holoscan() -> None:
    """Started with the common 8 MiB stack, the entry point restarts itself with the 32 MiB Holoscan wants."""
    probe = (
        "import resource; from app.cli import ensure_stack_limit; ensure_stack_limit(); "
        "print(resource.getrlimit(resource.RLIMIT_STACK)[0])"
    )
    run = run_subprocess("bash", "-c", f'ulimit -S -s 8192 && exec "{sys.executable}" -c "{probe}"')
    assert run.code == 0, run.console
    assert int(run.stdout) == 32 * 1024 * 1024


def test_the_app_process_runs_without_torch_or_monai_core() -> None:
    """Inference is onnxruntime only: the app process imports neither torch nor MONAI core, even in a
    retraining environment where both are installed, so it starts like the MAP container."""
    probe = (
        "import sys; from app.cli import keep_training_stack_out; keep_training_stack_out(); "
        "import app.application, operators.core.vertebra_pipeline; "
        "loaded = sorted(m for m in sys.modules if sys.modules[m] is not None and "
        "(m.split('.')[0] == 'torch' or (m.startswith('monai.') and not m.startswith('monai.deploy')))); "
        "print(len(loaded), loaded[:3])"
    )
    run = run_subprocess(sys.executable, "-c", probe)
    assert run.code == 0, run.console
    assert run.stdout.split()[0] == "0", run.stdout
