"""Shared test fixtures: small real DICOM studies, the generated synthetic study, app runners.

Studies are written once per test session (session-scoped fixtures under pytest's tmp folder) and
must be treated as read-only by tests; a test that needs to change one copies it first
(:func:`copy_study`).

Every DICOM file written here carries the identifiers in :data:`PATIENT`; tests scan console
output and logs for :data:`PATIENT_IDENTIFIERS` to prove they never leak.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pytest
import scipy.io

from operators.core.geometry import VolumeGeometry
from training.synthetic.dicom_writer import PatientStudy, write_series

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Patient and study identifiers written into every test study. They are deliberately distinctive so
#: that a leak cannot hide behind a common word.
PATIENT = PatientStudy(
    patient_name="QUIRINUS^ZEPHYRA^M",
    patient_id="PID-7731-XQ",
    patient_birth_date="19471103",
    accession_number="ACC99812ZZ",
)
PATIENT_IDENTIFIERS: tuple[str, ...] = ("QUIRINUS", "ZEPHYRA", "PID-7731-XQ", "19471103", "ACC99812ZZ")
#: A second patient, for the "two patients in one folder" case.
OTHER_PATIENT = PatientStudy(
    patient_name="VANTABLACK^OSWIN",
    patient_id="PID-5520-KW",
    patient_birth_date="19520214",
    accession_number="ACC11223QQ",
)
OTHER_IDENTIFIERS: tuple[str, ...] = ("VANTABLACK", "OSWIN", "PID-5520-KW", "19520214", "ACC11223QQ")

#: Acquisition tags of the series kinds the tests write: what a 1.5 T TSE protocol records.
_SE = {"ScanningSequence": "SE", "SequenceVariant": ["SK", "OSP"], "MRAcquisitionType": "2D", "MagneticFieldStrength": 1.5}
SERIES_TAGS: dict[str, dict[str, Any]] = {
    "sag_t1": {**_SE, "EchoTime": 11.0, "RepetitionTime": 550.0, "EchoTrainLength": 3},
    "sag_t2": {**_SE, "EchoTime": 105.0, "RepetitionTime": 3600.0, "EchoTrainLength": 17},
    "ax_t2": {**_SE, "EchoTime": 100.0, "RepetitionTime": 4200.0, "EchoTrainLength": 20},
}
#: ImageOrientationPatient per plane: sagittal rows run anterior → posterior and columns head → foot;
#: axial rows run right → left and columns anterior → posterior.
ORIENTATION: dict[str, tuple[float, ...]] = {
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
}


def series_geometry(plane: str, n_slices: int, size: int, spacing_mm: float = 1.5, step_mm: float = 4.0) -> VolumeGeometry:
    """Geometry of a small ``(n_slices, size, size)`` stack centred near the lumbar spine."""
    first = (-(n_slices - 1) * step_mm / 2, -60.0, 80.0) if plane == "sagittal" else (-24.0, -60.0, -40.0)
    return VolumeGeometry.from_dicom(ORIENTATION[plane], first, (spacing_mm, spacing_mm), (n_slices, size, size), step_mm)


def write_test_series(
    folder: Path,
    kind: str,
    *,
    study: PatientStudy = PATIENT,
    n_slices: int = 7,
    size: int = 32,
    series_number: int = 1,
    description: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write one small MR series of ``kind`` (a key of :data:`SERIES_TAGS`) into ``folder``.

    The image is a bright ellipse in Rician-like noise: enough for readers and viewers, cheap to write.
    """
    plane = "axial" if kind.startswith("ax") else "sagittal"
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size]
    ellipse = ((rows - size / 2) / (size / 3)) ** 2 + ((columns - size / 2) / (size / 4)) ** 2 < 1
    pixels = rng.normal(60.0, 15.0, (n_slices, size, size)).clip(0) + 400.0 * ellipse
    return write_series(
        pixels,
        series_geometry(plane, n_slices, size),
        folder,
        modality="MR",
        study=study,
        series_number=series_number,
        series_description=kind if description is None else description,
        extra_tags={**SERIES_TAGS[kind], **(extra_tags or {})},
        file_names=[f"s{series_number:02d}_{i:03d}.dcm" for i in range(n_slices)],
    )


def write_small_study(folder: Path, study: PatientStudy = PATIENT) -> Path:
    """A minimal lumbar MR study: sagittal T1 (series 1), sagittal T2 (2), axial T2 (3). Returns ``folder``."""
    for number, kind in enumerate(("sag_t1", "sag_t2", "ax_t2"), start=1):
        write_test_series(folder / kind, kind, study=study, series_number=number, seed=number)
    return folder


def copy_study(source: Path, destination: Path) -> Path:
    """Copy a session study so a test can change it."""
    shutil.copytree(source, destination)
    return destination


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only minimal study (3 MR series, 7 slices of 32×32 each)."""
    return write_small_study(tmp_path_factory.mktemp("small_study"))


@pytest.fixture(scope="session")
def generated_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Read-only lumbar study from the project's generator (seed 0): ``(study folder, truth dict)``."""
    from training.synthetic.study import StudyConfig, generate_study

    out = tmp_path_factory.mktemp("generated_lumbar")
    truth = generate_study(0, out, StudyConfig(field_of_view="lumbar"))
    return out / "study", truth


# --------------------------------------------------------------------------------------------------
# Running the app
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AppRun:
    """Outcome of one app run: exit code and everything it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def console(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def run_app(capfd: pytest.CaptureFixture[str]):
    """Run the app in this process (``spine-map`` arguments) and capture the console at the fd level,
    so that output of Holoscan's C++ logger is captured too."""

    def run(*args: str | os.PathLike[str]) -> AppRun:
        from app.cli import run_app_main

        capfd.readouterr()
        code = run_app_main([str(a) for a in args])
        captured = capfd.readouterr()
        return AppRun(code, captured.out, captured.err)

    return run


@dataclass
class CapturedConsole:
    """What :func:`capture_fds` caught; filled when its ``with`` block ends."""

    stdout: str = ""
    stderr: str = ""


@contextlib.contextmanager
def capture_fds() -> Iterator[CapturedConsole]:
    """Capture file descriptors 1 and 2 (Python and C++ output alike) where pytest's function-scoped
    ``capfd`` cannot be used, e.g. in a module-scoped fixture."""
    captured = CapturedConsole()
    files = [tempfile.TemporaryFile() for _ in range(2)]
    saved = [os.dup(1), os.dup(2)]
    # pytest may have replaced sys.stdout/sys.stderr: point them at the same files as the fds.
    streams = [open(file.fileno(), "w", encoding="utf-8", buffering=1, closefd=False) for file in files]
    saved_streams = sys.stdout, sys.stderr
    saved_streams[0].flush()
    saved_streams[1].flush()
    try:
        for fd, file in zip((1, 2), files):
            os.dup2(file.fileno(), fd)
        sys.stdout, sys.stderr = streams
        yield captured
    finally:
        for stream in streams:
            stream.flush()
            stream.close()
        sys.stdout, sys.stderr = saved_streams
        for fd, saved_fd in zip((1, 2), saved):
            os.dup2(saved_fd, fd)
            os.close(saved_fd)
        texts = []
        for file in files:
            file.seek(0)
            texts.append(file.read().decode("utf-8", errors="replace"))
            file.close()
        captured.stdout, captured.stderr = texts


def start_subprocess(*args: str | os.PathLike[str], cwd: Path = REPO_ROOT) -> subprocess.Popen[str]:
    """Start a command (``sys.executable`` for ``python``) as a user would, from ``cwd``; see
    :func:`finish_subprocess`. Starting several before finishing any runs them side by side."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLOSCAN_", "SPINE_MAP_"))}
    return subprocess.Popen(
        [str(a) for a in args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_subprocess(process: subprocess.Popen[str], timeout: float = 300) -> AppRun:
    """Wait for a :func:`start_subprocess` command and return what it did."""
    stdout, stderr = process.communicate(timeout=timeout)
    return AppRun(process.returncode, stdout, stderr)


def run_subprocess(*args: str | os.PathLike[str], cwd: Path = REPO_ROOT, timeout: float = 300) -> AppRun:
    """Run a command as a user would (see :func:`start_subprocess`) and wait for it."""
    return finish_subprocess(start_subprocess(*args, cwd=cwd), timeout)


def venv_script(name: str) -> Path:
    """A console script installed next to the running interpreter (``monai-deploy``, ``spine-map``)."""
    return Path(sys.executable).parent / name


def assert_clean_console(run: AppRun, identifiers: tuple[str, ...] = PATIENT_IDENTIFIERS) -> None:
    """No traceback, no patient identifier, nothing but one-line ``spine-map:`` messages."""
    assert "Traceback" not in run.console, run.console
    assert "At:\n" not in run.console, run.console  # Holoscan's rendering of a Python exception
    for value in identifiers:
        assert value.lower() not in run.console.lower(), f"{value!r} leaked into the console"


# --- RSNA 2024 layout fixtures (tests/test_rsna_format.py, tests/test_rsna_adapter.py) -----------

#: Levels of the straight lumbar fixture spine written into RSNA layouts.
RSNA_FIXTURE_LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")


def rsna_fixture_vertebra_z(level: str) -> float:
    """Patient z (mm) of a fixture body's centroid: 25 mm bodies, 5 mm discs, T12 at the top."""
    return 120.0 - 30.0 * RSNA_FIXTURE_LEVELS.index(level)


def rsna_fixture_truth(study_uid: str, series: list[dict], seed: int, blank: tuple[str, str] | None = None) -> dict:
    """A generator-style ``truth.json`` for the straight fixture spine, with random RSNA severities
    (seeded) at every lumbar disc except the ``(condition, disc)`` cell ``blank``."""
    from operators.core.gradings import RSNA_CONDITIONS, RSNA_SEVERITIES
    from operators.core.levels import RSNA_DISCS, discs_between

    rng = np.random.default_rng(seed)
    vertebrae = [{"level": lv, "centroid_mm": [0.0, 0.0, rsna_fixture_vertebra_z(lv)], "superior_axis": [0.0, 0.0, 1.0],
                  "anterior_axis": [0.0, -1.0, 0.0], "height_mm": 25.0, "depth_mm": 34.0, "width_mm": 46.0,
                  "lesions": {}} for lv in RSNA_FIXTURE_LEVELS]
    discs = []
    for name in discs_between(list(RSNA_FIXTURE_LEVELS)):
        upper, lower = name.split("/")
        disc = {"level": name, "centre_mm": [0.0, 0.0, (rsna_fixture_vertebra_z(upper) + rsna_fixture_vertebra_z(lower)) / 2.0],
                "normal": [0.0, 0.0, 1.0], "gradings": {}}
        if name in RSNA_DISCS:
            disc["rsna"] = {c: str(rng.choice(RSNA_SEVERITIES)) for c in RSNA_CONDITIONS if (c, name) != blank}
        discs.append(disc)
    return {"schema": "spine-map-synthetic-truth/1", "study_instance_uid": study_uid, "field_of_view": "lumbar",
            "anatomy": {"transitional": None}, "series": series, "vertebrae": vertebrae, "discs": discs}


FASTCLEVERSEG_BODY_ROWS = [(20, 44), (54, 78), (88, 112), (122, 146), (156, 180)]  # 24 mm bodies, 10 mm discs, cranial first
FASTCLEVERSEG_COLUMNS = (40, 75)  # 35 mm deep, in front of the canal
FASTCLEVERSEG_LATERAL = (10, 34)  # 24 planes wide


def write_fastcleverseg_subject(folder: Path, name: str, label_of_body: list[int], missing: int | None = None) -> Path:
    """A FastCleverSeg-layout ``<name>.mat`` (``I`` 8-bit, ``GT`` labels; rows head → feet, columns front →
    back, lateral last) with box bodies at :data:`FASTCLEVERSEG_BODY_ROWS`, labelled ``label_of_body``
    cranial first; ``missing`` leaves one body out."""
    image = np.zeros((200, 120, 44), np.uint8)
    labels = np.zeros_like(image)
    for body, value in enumerate(label_of_body):
        if body == missing:
            continue
        rows = slice(*FASTCLEVERSEG_BODY_ROWS[body])
        image[rows, slice(*FASTCLEVERSEG_COLUMNS), slice(*FASTCLEVERSEG_LATERAL)] = 200
        labels[rows, slice(*FASTCLEVERSEG_COLUMNS), slice(*FASTCLEVERSEG_LATERAL)] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.mat"
    scipy.io.savemat(path, {"I": image, "GT": labels})
    return path
