"""Stage the MAP input, write holoscan-cli's docker build context offline, build the MAP image.

Why staging: holoscan-cli 4.2's packager copies only the application folder to
``/opt/holoscan/app`` and reads ``requirements.txt`` only from that folder, while spine-map's
runtime is two packages, ``app`` and ``operators``, next to each other (``--add DIR`` would not
help: it copies the *contents* of DIR into ``/opt/holoscan/lib``, losing the ``operators``
package name). So the MAP's application folder is staged::

    STAGED/__main__.py        runs app.cli.run_app_main (the MAP command is ``python3 /opt/holoscan/app``)
    STAGED/app/               the MONAI Deploy application and its command line
    STAGED/operators/         the operators and the numpy/scipy core
    STAGED/requirements.txt   the container's runtime requirements (no torch)

``training/``, ``tests/`` and the rest of the repository stay out. The models are staged beside
it (manifest, ONNX files checked against their sha256, model cards; no TorchScript) and handed to
the packager with ``-m``; holoscan-cli puts a folder of files under ``$HOLOSCAN_MODEL_PATH/<folder
name>/``, which :func:`operators.core.onnx_models.models_dir` finds.

Why our own artifact source (``map_build/artifacts.json``): the packager otherwise downloads
``releases/4.2.0/artifacts.json`` from the holoscan-cli GitHub repository at run time (fails
offline), and that file lists Holoscan 4.2.0 only, whereas the packager looks up the *installed*
Holoscan SDK version (``holoscan-cu13`` 4.6.0 here, pulled in by monai-deploy-app-sdk 4.0.0) and
refuses any version the source does not list. Our file is upstream's
``releases/4.2.0/artifacts.json`` (nvidia-holoscan/holoscan-cli, commit 2b4674c1) with the version
key and ``wheel-version`` changed to the installed 4.6.0: base image
``nvcr.io/nvidia/cuda:13.0.0-runtime-ubuntu24.04`` for x86_64 dGPU as upstream gives it. The
``debian-version`` and ``build-images`` entries are required by holoscan-cli's schema check but
used for C++ applications only.

:func:`write_build_context` drives holoscan-cli's own classes (``PackagingArguments``, its
manifest writers and ``PythonAppBuilder``) exactly as ``monai-deploy package`` does, up to the
point where it would call docker buildx: the Dockerfile and context it writes are the ones the
real build uses. It relies on holoscan-cli 4.2.0 internals (``_copy_supporting_files``,
``_write_dockerfile``, ``_create_*_manifest``); pyproject.toml pins that version and
tests/test_packaging.py checks the result.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from app import __version__

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The one MAP manifest (holoscan-cli copies it into the image as /etc/holoscan/app.yaml).
APP_CONFIG = REPO_ROOT / "app.yaml"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
#: holoscan-cli ``--source``: base image and SDK wheel version for the installed Holoscan SDK.
ARTIFACT_SOURCES = Path(__file__).resolve().parent / "artifacts.json"
DEFAULT_MODELS = REPO_ROOT / "models"

#: The packages that make up the app at run time (``training`` and ``tests`` are not shipped).
RUNTIME_PACKAGES = ("app", "operators")
IMAGE_NAME = "spine-map"
PLATFORM = "x86_64"
#: Staged entry point: ``python3 /opt/holoscan/app`` runs it with the staged folder first on sys.path.
MAIN_SOURCE = '''"""spine-map MAP entry point, written by ``python -m map_build stage``.

holoscan-cli runs ``python3 /opt/holoscan/app`` (this folder); Python puts the folder first on
sys.path, so ``app`` and ``operators`` import from here. Folders come from -i/-o/-m or from
HOLOSCAN_INPUT_PATH / HOLOSCAN_OUTPUT_PATH / HOLOSCAN_MODEL_PATH, which the MAP sets.
"""

import sys

from app.cli import run_app_main

if __name__ == "__main__":
    sys.exit(run_app_main())
'''
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
#: How long a docker CLI probe may take before the daemon counts as unreachable (seconds).
_DOCKER_PROBE_TIMEOUT_S = 30


class PackagingError(Exception):
    """Packaging cannot go on; the message is one line for the user."""


def image_tag(version: str = __version__) -> str:
    """The ``-t`` argument: ``spine-map:<version>`` (holoscan-cli names the image
    ``spine-map-x64-workstation-dgpu-linux-amd64:<version>``)."""
    return f"{IMAGE_NAME}:{version}"


def _require_empty(folder: Path) -> None:
    """Refuse to write into a folder that has files: staging never deletes anything of the user's."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise PackagingError(f"{folder} exists and is not an empty folder; give a new one")


def stage_application(destination: Path) -> Path:
    """Write the MAP's application folder (see the module docstring) into ``destination``.

    Returns:
        ``destination``.

    Raises:
        PackagingError: ``destination`` exists and is not an empty folder.
    """
    _require_empty(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for package in RUNTIME_PACKAGES:
        shutil.copytree(REPO_ROOT / package, destination / package, ignore=_IGNORED)
    shutil.copyfile(REQUIREMENTS, destination / "requirements.txt")
    (destination / "__main__.py").write_text(MAIN_SOURCE, encoding="utf-8")
    return destination


def stage_models(source: Path, destination: Path) -> Path:
    """Copy the models the app runs into ``destination``: ``manifest.json``, each model's ONNX file
    (its sha256 checked against the manifest, as the app will check it) and the model cards.

    TorchScript exports stay out: the app runs ONNX only. ``destination``'s name becomes the
    folder under ``$HOLOSCAN_MODEL_PATH`` in the image.

    Returns:
        ``destination``.

    Raises:
        PackagingError: no manifest, a model file missing, or a file that is not the one the
            manifest describes (the message names the model).
    """
    from operators.core.onnx_models import MANIFEST_NAME, ModelError, file_sha256, model_infos, models_dir

    folder = models_dir(source)
    try:
        infos = model_infos(folder)
    except ModelError as error:
        raise PackagingError(str(error)) from None
    if not infos:
        raise PackagingError(f"{folder / MANIFEST_NAME} lists no models")
    _require_empty(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for info in infos:
        path = folder / info.file
        if not path.is_file():
            raise PackagingError(f"model {info.name!r}: {path} is missing")
        if file_sha256(path) != info.sha256:
            raise PackagingError(f"model {info.name!r}: {path.name} does not match the sha256 in {MANIFEST_NAME}")
        shutil.copyfile(path, destination / info.file)
    shutil.copyfile(folder / MANIFEST_NAME, destination / MANIFEST_NAME)
    for card in sorted(folder.glob("*.md")):
        shutil.copyfile(card, destination / card.name)
    return destination


def package_arguments(application: Path, models: Path, *, tarball_dir: Path | None = None) -> list[str]:
    """The ``monai-deploy`` arguments that package ``application`` with ``models``.

    ``--sdk monai-deploy`` is explicit because holoscan-cli otherwise guesses the SDK from the name
    of the running program, which is ``python`` for ``python -m map_build``.
    """
    arguments = [
        "package", str(application),
        "-c", str(APP_CONFIG),
        "-t", image_tag(),
        "--platform", PLATFORM,
        "-m", str(models),
        "--source", str(ARTIFACT_SOURCES),
        "--sdk", "monai-deploy",
    ]
    if tarball_dir is not None:
        arguments += ["-o", str(tarball_dir)]
    return arguments


@contextlib.contextmanager
def staged_inputs(models: Path) -> Iterator[tuple[Path, Path]]:
    """Stage the application and the models into a temporary folder: ``(application, models)``,
    removed when the ``with`` block ends."""
    with tempfile.TemporaryDirectory(prefix="spine-map-map-") as scratch:
        root = Path(scratch)
        yield stage_application(root / "application"), stage_models(models, root / "models")


@dataclass(frozen=True)
class BuildContext:
    """What :func:`write_build_context` wrote."""

    folder: Path
    dockerfile: Path
    #: The image tag holoscan-cli builds: ``spine-map-x64-workstation-dgpu-linux-amd64:<version>``.
    image: str
    base_image: str


def write_build_context(destination: Path, models: Path = DEFAULT_MODELS) -> BuildContext:
    """Write the docker build context and Dockerfile that ``monai-deploy package`` would build,
    without a docker daemon and offline.

    ``destination`` gets: ``Dockerfile``, ``app/`` (the staged application), ``models/models/``,
    ``pip/requirements.txt``, ``map/app.json``, ``map/pkg.json``, ``app.config`` (app.yaml),
    ``tools`` and ``.dockerignore``; ``docker buildx build -f Dockerfile destination`` builds it.

    Raises:
        PackagingError: ``destination`` not empty, models unusable, or holoscan-cli refusing the
            configuration (its message).
    """
    from holoscan_cli.__main__ import parse_args
    from holoscan_cli.common.exceptions import HoloscanSdkError
    from holoscan_cli.packager.arguments import PackagingArguments
    from holoscan_cli.packager.container_builder import PythonAppBuilder
    from holoscan_cli.packager.packager import _create_app_manifest, _create_package_manifest

    _require_empty(destination)
    with staged_inputs(models) as (application, staged_models):
        # The build cache is a docker buildx setting; argparse would create the default one in
        # $HOME just by parsing, so point it at the scratch folder.
        arguments = [*package_arguments(application, staged_models), "--build-cache", str(application.parent / "cache")]
        args = parse_args(["monai-deploy", *arguments])
        destination.mkdir(parents=True, exist_ok=True)
        context = str(destination)
        try:
            packaging = PackagingArguments(args, context)
            _create_app_manifest(packaging.application_manifest, context)
            _create_package_manifest(packaging.package_manifest, context)
            builder = PythonAppBuilder(packaging.build_parameters, context)
            (platform,) = packaging.platforms  # one --platform
            # BuilderBase.build() minus its last step, _build_internal() (docker buildx).
            builder._copy_supporting_files(platform)
            dockerfile = Path(builder._write_dockerfile(platform))
        except HoloscanSdkError as error:
            raise PackagingError(f"holoscan-cli: {error}".replace("\n", " ")) from None
    return BuildContext(destination, dockerfile, platform.tag, platform.base_image)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")


def docker_problems() -> list[str]:
    """Why ``monai-deploy package`` cannot build here (empty when it can): the docker CLI, its
    daemon and the buildx plugin holoscan-cli builds with."""
    docker = shutil.which("docker")
    if docker is None:
        return ["docker is not installed (no `docker` on PATH)"]
    problems = []
    probes = {
        "the docker daemon is not reachable": [docker, "info", "--format", "{{.ServerVersion}}"],
        "docker buildx is not available": [docker, "buildx", "version"],
    }
    for problem, command in probes.items():
        try:
            probe = subprocess.run(command, capture_output=True, text=True, timeout=_DOCKER_PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            problems.append(f"{problem} (`{' '.join(command[1:3])}` did not answer in {_DOCKER_PROBE_TIMEOUT_S} s)")
            continue
        if probe.returncode != 0:
            problems.append(f"{problem} ({_first_line(probe.stderr or probe.stdout)})")
    return problems


def build_image(models: Path = DEFAULT_MODELS, tarball_dir: Path | None = None) -> int:
    """Stage, then run ``monai-deploy package`` (holoscan-cli through our wrapper) to build the
    MAP image; with ``tarball_dir`` it also saves the image there.

    Returns:
        The exit code of ``monai-deploy package``.

    Raises:
        PackagingError: models unusable.
    """
    monai_deploy = Path(sys.executable).with_name("monai-deploy")
    with staged_inputs(models) as (application, staged_models):
        arguments = package_arguments(application, staged_models, tarball_dir=tarball_dir)
        print("map_build: running monai-deploy " + " ".join(arguments), flush=True)
        return subprocess.run([str(monai_deploy), *arguments]).returncode
