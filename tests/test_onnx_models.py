"""The ONNX model loader: manifest and hash checks, the models folder, provider choice, caching."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from operators.core import onnx_models
from operators.core.onnx_models import ModelError, model_infos, models_dir, open_model

onnx = pytest.importorskip("onnx")


def _scale_model_bytes(factor: float) -> bytes:
    """A one-node ONNX graph ``y = x * factor`` with input ``x`` of shape (N, 3), float32."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "factor"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(np.full(3, factor, np.float32), "factor")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_models(folder: Path, models: dict[str, bytes], hashes: dict[str, str] | None = None) -> Path:
    """Write ``{name: onnx bytes}`` as ``<name>.onnx`` plus a manifest (true hashes unless ``hashes`` says)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, data in models.items():
        (folder / f"{name}.onnx").write_bytes(data)
        sha = (hashes or {}).get(name, hashlib.sha256(data).hexdigest())
        entries[name] = {"onnx": f"{name}.onnx", "sha256": {"onnx": sha}, "card": f"{name}.md", "opset": 17}
    (folder / "manifest.json").write_text(json.dumps({"schema": "spine-map-models/1", "models": entries}))
    return folder


def test_open_model_runs_the_file_the_manifest_names(tmp_path: Path) -> None:
    data = _scale_model_bytes(2.0)
    folder = write_models(tmp_path / "models", {"doubler": data})

    model = open_model("doubler", folder)

    assert model.name == "doubler"
    assert model.sha256 == hashlib.sha256(data).hexdigest()
    assert model.input_names == ("x",)
    assert model.providers[-1] == "CPUExecutionProvider"
    (out,) = model.run({"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
    np.testing.assert_array_equal(out, np.arange(6, dtype=np.float32).reshape(2, 3) * 2)


def test_models_are_loaded_once_per_folder_and_name(tmp_path: Path) -> None:
    folder = write_models(tmp_path / "models", {"a": _scale_model_bytes(2.0), "b": _scale_model_bytes(3.0)})

    first = open_model("a", folder)

    assert open_model("a", str(folder)) is first
    assert open_model("b", folder) is not first
    other = write_models(tmp_path / "other", {"a": _scale_model_bytes(4.0)})
    assert open_model("a", other) is not first


def test_hash_mismatch_is_refused_naming_the_model(tmp_path: Path) -> None:
    folder = write_models(tmp_path / "models", {"vertebra_detector": _scale_model_bytes(2.0)}, {"vertebra_detector": "0" * 64})

    with pytest.raises(ModelError, match=r"model 'vertebra_detector': vertebra_detector\.onnx has sha256 [0-9a-f]{64}, the manifest says 0{64}"):
        open_model("vertebra_detector", folder)


def test_a_tampered_file_is_refused_even_after_the_manifest_was_written(tmp_path: Path) -> None:
    folder = write_models(tmp_path / "models", {"level_context": _scale_model_bytes(2.0)})
    (folder / "level_context.onnx").write_bytes(_scale_model_bytes(5.0))

    with pytest.raises(ModelError, match="model 'level_context'.*sha256"):
        open_model("level_context", folder)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda folder: (folder / "manifest.json").unlink(), "model 'm': no manifest.json"),
        (lambda folder: (folder / "manifest.json").write_text("{not json"), "model 'm': cannot read"),
        (lambda folder: (folder / "manifest.json").write_text('{"schema": "other/2", "models": {}}'), "not a spine-map-models/1 manifest"),
        (lambda folder: (folder / "m.onnx").unlink(), "model 'm': file m.onnx is missing"),
    ],
    ids=["no-manifest", "bad-json", "wrong-schema", "missing-file"],
)
def test_unusable_models_folder_names_the_model_and_reason(tmp_path: Path, break_it, message: str) -> None:
    folder = write_models(tmp_path / "models", {"m": _scale_model_bytes(2.0)})
    break_it(folder)

    with pytest.raises(ModelError, match=message):
        open_model("m", folder)


def test_a_model_not_in_the_manifest_is_named_with_those_that_are(tmp_path: Path) -> None:
    folder = write_models(tmp_path / "models", {"a": _scale_model_bytes(2.0)})

    with pytest.raises(ModelError, match=r"model 'level_appearance' is not listed .*\(listed: a\)"):
        open_model("level_appearance", folder)


def test_a_file_onnxruntime_cannot_read_is_a_model_error(tmp_path: Path) -> None:
    folder = write_models(tmp_path / "models", {"junk": b"this is not an onnx graph"})

    with pytest.raises(ModelError, match="model 'junk': onnxruntime cannot load junk.onnx"):
        open_model("junk", folder)


def test_wrong_feed_names_are_a_model_error(tmp_path: Path) -> None:
    model = open_model("m", write_models(tmp_path / "models", {"m": _scale_model_bytes(2.0)}))

    with pytest.raises(ModelError, match=r"model 'm' takes inputs \['x'\], was given \['image'\]"):
        model.run({"image": np.zeros((1, 3), np.float32)})


def test_the_packager_layout_one_folder_down_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `monai-deploy package -m models/` puts the files in $HOLOSCAN_MODEL_PATH/models/.
    write_models(tmp_path / "opt" / "models", {"m": _scale_model_bytes(2.0)})
    monkeypatch.setenv("HOLOSCAN_MODEL_PATH", str(tmp_path / "opt"))

    assert models_dir() == tmp_path / "opt" / "models"
    assert open_model("m", tmp_path / "opt").name == "m"


def test_models_dir_prefers_the_explicit_folder_then_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOLOSCAN_MODEL_PATH", raising=False)
    assert models_dir() == onnx_models.REPO_MODELS_DIR
    assert onnx_models.REPO_MODELS_DIR.parent == Path(onnx_models.__file__).resolve().parents[2]

    monkeypatch.setenv("HOLOSCAN_MODEL_PATH", str(tmp_path / "env"))
    assert models_dir() == tmp_path / "env"
    assert models_dir(tmp_path / "cli") == tmp_path / "cli"
    assert models_dir(str(tmp_path / "cli")) == tmp_path / "cli"


def test_model_infos_lists_every_manifest_hash(tmp_path: Path) -> None:
    a, b = _scale_model_bytes(2.0), _scale_model_bytes(3.0)
    folder = write_models(tmp_path / "models", {"b": b, "a": a})

    assert {m.name: m.sha256 for m in model_infos(folder)} == {"a": hashlib.sha256(a).hexdigest(), "b": hashlib.sha256(b).hexdigest()}
    with pytest.raises(ModelError, match="models: no manifest.json"):
        model_infos(tmp_path / "empty")


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        (["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (["CoreMLExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ],
)
def test_cuda_is_asked_for_only_when_onnxruntime_lists_it_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, available: list[str], expected: list[str]
) -> None:
    import onnxruntime

    monkeypatch.setattr(onnx_models, "_providers", None)  # forget this process's earlier choice
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(available))
    caplog.set_level(logging.INFO, logger="operators.core.onnx_models")

    assert onnx_models.execution_providers() == expected
    assert onnx_models.execution_providers() == expected

    lines = [r.getMessage() for r in caplog.records if "execution providers" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].endswith("execution providers " + ", ".join(expected))


def test_a_listed_but_unusable_cuda_falls_back_to_cpu_quietly(tmp_path: Path) -> None:
    # onnxruntime-gpu lists CUDA on machines without a GPU; the model must still run, on CPU, and
    # onnxruntime's own messages about the missing CUDA libraries must not reach the console. A
    # fresh process, because onnxruntime says so only the first time it tries.
    import subprocess
    import sys

    folder = write_models(tmp_path / "models", {"m": _scale_model_bytes(2.0)})
    script = (
        "import numpy as np\n"
        "from operators.core.onnx_models import open_model\n"
        f"model = open_model('m', {str(folder)!r})\n"
        "print(model.providers[-1], model.run({'x': np.ones((1, 3), np.float32)})[0].tolist())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(onnx_models.__file__).resolve().parents[2],
        capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "CPUExecutionProvider [[2.0, 2.0, 2.0]]\n"
    assert done.stderr == ""
