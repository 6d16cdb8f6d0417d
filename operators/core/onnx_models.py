"""ONNX models on disk: find the models folder, check each file against ``manifest.json``, run it.

The models folder (design §4) holds ``manifest.json`` and the model files::

    {"schema": "spine-map-models/1",
     "models": {"vertebra_detector": {"onnx": "vertebra_detector.onnx",
                                      "sha256": {"onnx": "<hex>", "torchscript": "<hex>"}, ...}, ...}}

:func:`open_model` refuses a file whose sha256 differs from the manifest and says which model;
it loads each model once per process (every study of a ``--batch`` run shares the sessions).

Execution providers: CUDA when onnxruntime lists it, CPU otherwise (:func:`execution_providers`,
logged once). onnxruntime-gpu lists CUDA whenever it was built with it, even on a machine without a
GPU or CUDA libraries; the session then falls back to CPU, so :attr:`OnnxModel.providers` reports
what the session really uses, and the fall-back is logged once.

onnxruntime is imported inside the functions that need it, so the rest of ``operators.core`` (and
training code that imports it) does not require onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from operators.core.report import ModelInfo
from operators.core.threads import thread_cap

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "spine-map-models/1"
#: The environment variable a MAP container (and the SDK's AppContext) uses for the models folder.
MODEL_PATH_ENV = "HOLOSCAN_MODEL_PATH"
#: The models shipped with the repository: ``models/`` next to ``operators/``.
REPO_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
#: onnxruntime log severity for its own C++ messages: 4 = fatal only. Its warnings and errors on a
#: machine without a GPU ("Failed to create CUDAExecutionProvider", "libcublasLt.so.13: cannot open")
#: would otherwise go straight to the console; the fall-back is logged by us instead, and a model
#: that cannot load still raises (as :class:`ModelError`).
_ORT_LOG_SEVERITY = 4


class ModelError(RuntimeError):
    """A model cannot be used: missing file, hash mismatch, unreadable file or manifest, bad input.

    The message names the model and the reason.
    """


def _manifest_folder(folder: Path) -> Path:
    """The folder that holds ``manifest.json``: ``folder`` itself or its only sub-folder that has one.

    holoscan-cli's packager copies ``-m models/`` (a folder of files) to
    ``$HOLOSCAN_MODEL_PATH/models/``, one level below the path the container sets; accepting the
    single sub-folder finds the manifest both in the repository and in a MAP.
    """
    if (folder / MANIFEST_NAME).is_file() or not folder.is_dir():
        return folder
    nested = sorted(child for child in folder.iterdir() if (child / MANIFEST_NAME).is_file())
    return nested[0] if len(nested) == 1 else folder


def models_dir(explicit: Path | str | None = None) -> Path:
    """The models folder: ``explicit`` (the app's ``-m``) > ``$HOLOSCAN_MODEL_PATH`` > the repository's ``models/``.

    The result is the folder holding ``manifest.json`` (see :func:`_manifest_folder`); it is not
    checked for existence here, :func:`open_model` says what is missing.
    """
    chosen = explicit if explicit not in (None, "") else os.environ.get(MODEL_PATH_ENV) or REPO_MODELS_DIR
    return _manifest_folder(Path(chosen).absolute())


def _read_manifest(folder: Path, subject: str) -> dict[str, Any]:
    """The manifest of ``folder`` (already resolved by :func:`_manifest_folder`).

    Raises:
        ModelError: starting with ``subject`` (``"model 'x'"``) when the manifest is missing or malformed.
    """
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{subject}: no {MANIFEST_NAME} in the models folder {folder}") from None
    except (OSError, ValueError) as error:
        raise ModelError(f"{subject}: cannot read {path}: {type(error).__name__}") from error
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA or not isinstance(
        manifest.get("models"), dict
    ):
        raise ModelError(f"{subject}: {path} is not a {MANIFEST_SCHEMA} manifest")
    return manifest


def _manifest_entry(folder: Path, name: str) -> tuple[Path, str]:
    """``(ONNX file, expected sha256)`` of model ``name`` from the manifest of ``folder``."""
    models = _read_manifest(folder, f"model {name!r}")["models"]
    entry = models.get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(models)) or "none"
        raise ModelError(f"model {name!r} is not listed in {folder / MANIFEST_NAME} (listed: {known})")
    file_name, hashes = entry.get("onnx"), entry.get("sha256")
    if not isinstance(file_name, str) or not isinstance(hashes, dict) or not isinstance(hashes.get("onnx"), str):
        raise ModelError(f"model {name!r}: its manifest entry lacks the 'onnx' file name or its sha256")
    return folder / file_name, hashes["onnx"].lower()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_providers_lock = threading.Lock()
_providers: list[str] | None = None


def execution_providers() -> list[str]:
    """onnxruntime execution providers to ask for, in order of preference.

    ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` when onnxruntime lists CUDA among its
    available providers, else ``["CPUExecutionProvider"]``. Decided and logged once per process.
    """
    global _providers
    with _providers_lock:
        if _providers is None:
            import onnxruntime

            available = onnxruntime.get_available_providers()
            _providers = [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
            logger.info("onnxruntime %s: execution providers %s", onnxruntime.__version__, ", ".join(_providers))
        return list(_providers)


_fallback_logged = False


def _log_fallback_once(name: str, requested: list[str], used: list[str]) -> None:
    """Say once per process that a requested provider could not be created (CUDA listed, not usable)."""
    global _fallback_logged
    missing = [provider for provider in requested if provider not in used]
    if missing and not _fallback_logged:
        _fallback_logged = True
        logger.info(
            "%s could not be created (no GPU or CUDA libraries missing); model %r and the others run on %s",
            ", ".join(missing), name, ", ".join(used),
        )


class OnnxModel:
    """One loaded ONNX model: an onnxruntime session plus where it came from.

    Attributes:
        name: manifest name (``"vertebra_detector"``).
        sha256: hex sha256 of the ONNX file (equal to the manifest's).
        providers: the execution providers the session really uses, in priority order.
        input_names: the graph's input names, in graph order.
    """

    def __init__(self, name: str, sha256: str, session: onnxruntime.InferenceSession) -> None:
        self.name = name
        self.sha256 = sha256
        self._session = session
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self.input_names: tuple[str, ...] = tuple(node.name for node in session.get_inputs())

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model.

        Args:
            feeds: one array per graph input, by name (shapes and dtypes as the model card says).

        Returns:
            The graph outputs, in graph order.

        Raises:
            ModelError: the feed names differ from :attr:`input_names`.
        """
        if set(feeds) != set(self.input_names):
            raise ModelError(
                f"model {self.name!r} takes inputs {list(self.input_names)}, was given {sorted(feeds)}"
            )
        return self._session.run(None, dict(feeds))

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """Run the model on its inputs in graph order and return its first output: the plain
        ``numpy in → numpy out`` network the pipelines take (:mod:`operators.core.vertebra_pipeline`,
        :mod:`operators.core.grading_pipeline`).

        Raises:
            ModelError: the number of inputs differs from the graph's.
        """
        if len(inputs) != len(self.input_names):
            raise ModelError(f"model {self.name!r} takes inputs {list(self.input_names)}, was given {len(inputs)} arrays")
        return self.run(dict(zip(self.input_names, inputs)))[0]

    def __repr__(self) -> str:
        return f"OnnxModel({self.name!r}, sha256={self.sha256[:12]}…, providers={self.providers})"


_cache_lock = threading.Lock()
_cache: dict[tuple[Path, str], OnnxModel] = {}


def open_model(name: str, folder: Path | str) -> OnnxModel:
    """Load model ``name`` from the models ``folder``, once per process per ``(folder, name)``.

    The file named by the manifest is hashed and compared with the manifest's sha256 before
    onnxruntime sees it.

    Raises:
        ModelError: manifest missing or malformed, model not listed, file missing, hash mismatch,
            or onnxruntime cannot load the file. The message names the model.
    """
    resolved = _manifest_folder(Path(folder).absolute())
    key = (resolved, name)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        path, expected = _manifest_entry(resolved, name)
        if not path.is_file():
            raise ModelError(f"model {name!r}: file {path.name} is missing from {resolved}")
        try:
            actual = file_sha256(path)
        except OSError as error:
            raise ModelError(f"model {name!r}: cannot read {path.name}: {error.strerror or type(error).__name__}") from error
        if actual != expected:
            raise ModelError(
                f"model {name!r}: {path.name} has sha256 {actual}, the manifest says {expected}; "
                "refusing to run a model that is not the one the manifest describes"
            )
        model = OnnxModel(name, actual, _session(name, path))
        _cache[key] = model
        logger.info("model %s loaded from %s (sha256 %s…) on %s", name, path.name, actual[:12], ", ".join(model.providers))
        return model


def _session(name: str, path: Path) -> onnxruntime.InferenceSession:
    """An onnxruntime session on the preferred providers, with onnxruntime's own console output quiet."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(_ORT_LOG_SEVERITY)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = _ORT_LOG_SEVERITY
    threads = thread_cap()
    if threads is not None:
        # onnxruntime ignores OMP_NUM_THREADS; this caps CPU use on shared hosts (0/unset = all cores).
        options.intra_op_num_threads = threads
    requested = execution_providers()
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=requested)
    except Exception as error:  # onnxruntime raises its own exception classes for unreadable graphs
        raise ModelError(f"model {name!r}: onnxruntime cannot load {path.name} ({type(error).__name__})") from error
    _log_fallback_once(name, requested, session.get_providers())
    return session


def model_infos(folder: Path | str) -> tuple[ModelInfo, ...]:
    """Every model of the manifest of ``folder`` as the report's ``software.models[]`` records it
    (name, ONNX file, its sha256, what it was trained on), sorted by name.

    For the report and the SR's algorithm identification; the files are checked against these
    hashes when :func:`open_model` loads them.

    Raises:
        ModelError: the manifest is missing or malformed, or an entry lacks its ONNX hash.
    """
    resolved = _manifest_folder(Path(folder).absolute())
    models = _read_manifest(resolved, "models")["models"]
    infos = []
    for name in sorted(models):
        path, sha256 = _manifest_entry(resolved, name)
        infos.append(ModelInfo(name, path.name, sha256, str(models[name].get("trained_on", "not recorded"))))
    return tuple(infos)
