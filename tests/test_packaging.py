"""MAP packaging without docker: the staged application folder, the build context and Dockerfile
holoscan-cli writes from it (offline, with map_build/artifacts.json), and the staged entry point
running the app."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run_subprocess

import app
from app.cli import LOG_FILE_NAME
from map_build.__main__ import EXIT_NO_DOCKER, EXIT_OK, main
from map_build.package import ARTIFACT_SOURCES, MAIN_SOURCE, BuildContext, stage_application, write_build_context
from operators.core.onnx_models import file_sha256, model_infos, models_dir
from operators.core.report import REPORT_JSON_NAME

REPO_MODELS = REPO_ROOT / "models"
APP_YAML = yaml.safe_load((REPO_ROOT / "app.yaml").read_text(encoding="utf-8"))


def python_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def requirement_names(text: str) -> dict[str, str]:
    """``name -> full line`` of a requirements file (names lower-case, comments and blanks dropped)."""
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return {re.split(r"[<>=!~\[; ]", line)[0].lower(): line for line in lines if line}


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_application(tmp_path_factory.mktemp("staged") / "application")


@pytest.fixture(scope="module")
def models_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder as training exports it: manifest, ONNX + TorchScript files, a model card."""
    folder = tmp_path_factory.mktemp("models") / "models"
    folder.mkdir()
    (folder / "vertebra_detector.onnx").write_bytes(b"onnx bytes " * 100)
    (folder / "vertebra_detector.ts").write_bytes(b"torchscript bytes")
    (folder / "vertebra_detector.md").write_text("# vertebra_detector\n", encoding="utf-8")
    manifest = {
        "schema": "spine-map-models/1",
        "models": {
            "vertebra_detector": {
                "onnx": "vertebra_detector.onnx",
                "torchscript": "vertebra_detector.ts",
                "sha256": {"onnx": file_sha256(folder / "vertebra_detector.onnx"), "torchscript": "0" * 64},
                "trained_on": "synthetic studies",
            }
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory, models_folder: Path) -> BuildContext:
    return write_build_context(tmp_path_factory.mktemp("context") / "ctx", models_folder)


def dockerfile_lines(context: BuildContext) -> list[str]:
    return [line.strip() for line in context.dockerfile.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# Staging
# --------------------------------------------------------------------------------------------------
def test_staged_folder_holds_the_runtime_only(staged: Path) -> None:
    assert {p.name for p in staged.iterdir()} == {"app", "operators", "requirements.txt", "__main__.py"}
    for package in ("app", "operators"):
        assert python_files(staged / package) == python_files(REPO_ROOT / package)
    assert not list(staged.rglob("__pycache__")) and not list(staged.rglob("*.pyc"))
    assert (staged / "requirements.txt").read_bytes() == (REPO_ROOT / "requirements.txt").read_bytes()
    assert (staged / "__main__.py").read_text(encoding="utf-8") == MAIN_SOURCE


def test_staging_refuses_a_folder_with_files(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(["stage", str(tmp_path)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_staged_entry_point_imports_the_staged_packages(staged: Path) -> None:
    """``python STAGED`` puts STAGED first on sys.path: app and operators come from there, not the repository."""
    probe = f"import sys; sys.path.insert(0, {str(staged)!r}); import app, operators; print(app.__file__); print(operators.__file__)"
    run = run_subprocess(sys.executable, "-c", probe, cwd=staged.parent)
    assert run.code == 0, run.console
    assert all(Path(line).is_relative_to(staged) for line in run.stdout.split()), run.stdout


def test_staged_entry_point_runs_the_app(staged: Path, small_study: Path, tmp_path: Path) -> None:
    """``python STAGED -i -o -m`` as the MAP runs it. Without models the run goes through loading and
    series selection and stops at the detector, naming the missing manifest (exit 1)."""
    (tmp_path / "no_models").mkdir()
    run = run_subprocess(sys.executable, staged, "-i", small_study, "-o", tmp_path / "out", "-m", tmp_path / "no_models", cwd=tmp_path)
    assert run.code == 1, run.console
    assert run.stderr.startswith("spine-map: model 'vertebra_detector': no manifest.json"), run.console
    assert "Traceback" not in run.console
    assert (tmp_path / "out" / LOG_FILE_NAME).is_file()


@pytest.mark.skipif(not (REPO_MODELS / "manifest.json").is_file(), reason="models/manifest.json not in the repository yet")
def test_staged_entry_point_runs_the_app_with_the_repository_models(staged: Path, generated_study, tmp_path: Path) -> None:
    study, _ = generated_study
    run = run_subprocess(sys.executable, staged, "-i", study, "-o", tmp_path / "out", "-m", REPO_MODELS, cwd=tmp_path)
    assert run.code == 0, run.console
    report = json.loads((tmp_path / "out" / REPORT_JSON_NAME).read_text(encoding="utf-8"))
    assert {m["name"] for m in report["software"]["models"]} == {info.name for info in model_infos(REPO_MODELS)}


# --------------------------------------------------------------------------------------------------
# Build context and Dockerfile
# --------------------------------------------------------------------------------------------------
def test_context_has_everything_the_dockerfile_copies(context: BuildContext) -> None:
    folder = context.folder
    for name in ("Dockerfile", ".dockerignore", "tools", "app.config", "map/app.json", "map/pkg.json", "pip/requirements.txt"):
        assert (folder / name).is_file(), name
    assert {p.name for p in (folder / "app").iterdir()} == {"app", "operators", "requirements.txt", "__main__.py"}
    for line in dockerfile_lines(context):
        if line.startswith("COPY ./"):
            source = line.split()[1]
            assert (folder / source).exists(), line


def test_dockerfile_installs_the_runtime_requirements_without_torch(context: BuildContext) -> None:
    lines = dockerfile_lines(context)
    assert "COPY ./pip/requirements.txt /tmp/requirements.txt" in lines
    assert "RUN pip install --no-cache-dir --user -r /tmp/requirements.txt" in lines
    installed = requirement_names((context.folder / "pip" / "requirements.txt").read_text(encoding="utf-8"))
    assert installed == requirement_names((REPO_ROOT / "requirements.txt").read_text(encoding="utf-8"))
    assert {"onnxruntime-gpu", "pydicom", "highdicom", "numpy", "scipy"} <= set(installed)
    assert not {"torch", "torchvision", "monai", "onnx"} & set(installed)
    # The SDK the MAP gets is the one tested here, as its labels say.
    sdk = importlib.metadata.version("monai-deploy-app-sdk")
    assert f"RUN pip install monai-deploy-app-sdk=={sdk}" in lines
    holoscan = importlib.metadata.version("holoscan-cu13")
    assert installed["holoscan-cu13"] == f"holoscan-cu13=={holoscan}"
    assert f'LABEL org.nvidia.holoscan="{holoscan}"' in lines


def test_artifact_source_names_the_installed_holoscan(context: BuildContext) -> None:
    """holoscan-cli refuses a Holoscan version its source does not list; ours lists the installed one."""
    sources = json.loads(ARTIFACT_SOURCES.read_text(encoding="utf-8"))
    holoscan = importlib.metadata.version("holoscan-cu13")
    assert list(sources) == [holoscan]
    base = sources[holoscan]["holoscan"]["base-images"]["dgpu"]
    assert context.base_image == base
    assert f"FROM {base} AS base" in dockerfile_lines(context)


def test_models_are_copied_to_the_model_path_and_found_there(context: BuildContext, models_folder: Path) -> None:
    lines = dockerfile_lines(context)
    assert "ENV HOLOSCAN_MODEL_PATH=/opt/holoscan/models" in lines
    assert "COPY ./models  /opt/holoscan/models" in lines
    packaged = context.folder / "models"
    # holoscan-cli puts a folder of files one level down; the app finds the manifest there.
    assert models_dir(packaged) == packaged / "models"
    assert sorted(p.name for p in (packaged / "models").iterdir()) == ["manifest.json", "vertebra_detector.md", "vertebra_detector.onnx"]
    assert model_infos(packaged) == model_infos(models_folder)
    pkg = json.loads((context.folder / "map" / "pkg.json").read_text(encoding="utf-8"))
    assert pkg["modelRoot"] == "/opt/holoscan/models" and pkg["models"] == {"models": "/opt/holoscan/models/models"}


def test_image_runs_our_entry_point(context: BuildContext) -> None:
    lines = dockerfile_lines(context)
    assert "COPY ./app /opt/holoscan/app" in lines
    assert 'ENTRYPOINT ["/var/holoscan/tools"]' in lines  # tools runs app.json's command
    app_json = json.loads((context.folder / "map" / "app.json").read_text(encoding="utf-8"))
    assert json.loads(app_json["command"]) == ["python3", "/opt/holoscan/app"]
    assert (context.folder / "app" / "__main__.py").read_text(encoding="utf-8") == MAIN_SOURCE
    assert context.image == f"spine-map-x64-workstation-dgpu-linux-amd64:{app.__version__}"


def test_packaged_app_runs_map_style_and_finds_the_packaged_models(context: BuildContext, small_study: Path, tmp_path: Path) -> None:
    """The context's app folder run as the image runs it: no arguments, HOLOSCAN_* folders, models
    one level below HOLOSCAN_MODEL_PATH. The manifest is found and the hash accepted; the test model
    is not a real ONNX graph, so onnxruntime's refusal is the expected end (exit 1)."""
    run = run_subprocess(
        "env",
        f"HOLOSCAN_INPUT_PATH={small_study}",
        f"HOLOSCAN_OUTPUT_PATH={tmp_path / 'out'}",
        f"HOLOSCAN_MODEL_PATH={context.folder / 'models'}",
        sys.executable, context.folder / "app",
        cwd=tmp_path,
    )
    assert run.code == 1, run.console
    assert run.stderr.startswith("spine-map: model 'vertebra_detector': onnxruntime cannot load vertebra_detector.onnx"), run.console


def test_manifests_carry_app_yaml(context: BuildContext) -> None:
    """The app.yaml fields holoscan-cli reads, as they land in the MAP's app.json and pkg.json."""
    application = APP_YAML["application"]
    assert application["title"] == "spine-map" and str(application["version"]) == app.__version__
    assert {"cpu", "gpu", "memory", "gpuMemory"} <= set(APP_YAML["resources"])
    app_json = json.loads((context.folder / "map" / "app.json").read_text(encoding="utf-8"))
    pkg_json = json.loads((context.folder / "map" / "pkg.json").read_text(encoding="utf-8"))
    assert app_json["version"] == pkg_json["version"] == app.__version__
    assert app_json["sdk"] == "monai-deploy"
    assert app_json["input"]["formats"] == application["input-formats"]
    assert app_json["output"]["formats"] == application["output-formats"]
    assert pkg_json["resources"] == APP_YAML["resources"]
    assert (context.folder / "app.config").read_bytes() == (REPO_ROOT / "app.yaml").read_bytes()
    assert f'LABEL org.opencontainers.image.version="{app.__version__}"' in dockerfile_lines(context)


def test_models_that_do_not_match_their_manifest_are_not_packaged(models_folder: Path, tmp_path: Path, capsys) -> None:
    tampered = shutil.copytree(models_folder, tmp_path / "models")
    (tampered / "vertebra_detector.onnx").write_bytes(b"other bytes")
    assert main(["context", str(tmp_path / "ctx"), "-m", str(tampered)]) == 1
    assert "model 'vertebra_detector': vertebra_detector.onnx does not match the sha256" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["context", str(tmp_path / "ctx2"), "-m", str(tmp_path / "empty")]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_context_command_says_how_to_build(models_folder: Path, tmp_path: Path, capsys) -> None:
    assert main(["context", str(tmp_path / "ctx"), "-m", str(models_folder)]) == EXIT_OK
    assert f"docker buildx build -f {tmp_path / 'ctx' / 'Dockerfile'} {tmp_path / 'ctx'}" in capsys.readouterr().out


def test_build_without_docker_says_what_is_missing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker on PATH
    assert main(["build"]) == EXIT_NO_DOCKER
    err = capsys.readouterr().err
    assert "docker is not installed" in err and "map_build context OUT" in err
