"""The disc graders' networks, losses, output layout and export.

What the lead's training loop and the runtime rely on: the output columns are where
:mod:`operators.core.grading_outputs` says; the multi-view grader ignores padded slices (so a
missing view is the same as an absent one) and grades from any subset of views; the SpineNetV2
grader tells left from right; the losses weight rare classes up exactly as documented; and both
networks export to ONNX and TorchScript that match torch for any batch size and token count.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from operators.core.grading_outputs import (
    RSNA_LEVEL_SLICE,
    RSNA_OUTPUTS,
    SPINENET_OUTPUTS,
    condition_slices,
    grading_slices,
    rsna_probabilities,
    softmax,
    spinenet_probabilities,
    split_rsna_logits,
    split_spinenet_logits,
)
from operators.core.grading_pipeline import MULTIVIEW_TOKENS, MULTIVIEW_VIEWS, PADDING_VIEW, SPINENET_CHANNELS
from operators.core.gradings import RSNA_CONDITIONS, RSNA_SEVERITIES, SPINENET_GRADINGS
from operators.core.levels import RSNA_DISCS
from operators.core.volume_extraction import AXIAL_SLAB_SHAPE, DISC_VOLUME_SHAPE
from training.export import EXPORT_TOLERANCE, ExportSpec, export_model
from training.grading.networks import (
    PARK_CONDITION_WEIGHT,
    PARK_LEVEL_WEIGHT,
    MultiViewGrader,
    SpineNetGrader,
    balanced_class_weights,
    balanced_cross_entropy,
    park_loss,
)

SLICE_SHAPE = DISC_VOLUME_SHAPE[1:]
#: Slices per view in the app's token layout (sag T1, sag T2/STIR, axial T2).
VIEW_SLICES = (DISC_VOLUME_SHAPE[0], DISC_VOLUME_SHAPE[0], AXIAL_SLAB_SHAPE[0])


@pytest.fixture(scope="module")
def spinenet() -> SpineNetGrader:
    torch.manual_seed(0)
    return SpineNetGrader().eval()


@pytest.fixture(scope="module")
def multiview() -> MultiViewGrader:
    torch.manual_seed(0)
    return MultiViewGrader().eval()


def disc_tokens(batch: int, views: tuple[str, ...] = MULTIVIEW_VIEWS, level: int = 2) -> torch.Tensor:
    """``(batch, 25, 3)`` tokens in the app's layout with only ``views`` present (the rest padding)."""
    tokens = np.zeros((batch, MULTIVIEW_TOKENS, 3), dtype=np.int64)
    start = 0
    for view_id, (view, count) in enumerate(zip(MULTIVIEW_VIEWS, VIEW_SLICES)):
        tokens[:, start : start + count, 0] = view_id if view in views else PADDING_VIEW
        tokens[:, start : start + count, 1] = np.arange(count)
        start += count
    tokens[:, :, 2] = level
    return torch.as_tensor(tokens)


def run(model: torch.nn.Module, *inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(*inputs).numpy()


# --- output layout -------------------------------------------------------------------------------

def test_output_columns_follow_the_gradings_and_conditions_in_order() -> None:
    columns = grading_slices()
    assert list(columns) == list(SPINENET_GRADINGS)
    assert [s.stop - s.start for s in columns.values()] == [len(c) for c in SPINENET_GRADINGS.values()]
    assert [s.start for s in columns.values()][1:] == [s.stop for s in columns.values()][:-1]
    assert SPINENET_OUTPUTS == 29 == list(columns.values())[-1].stop
    conditions = condition_slices()
    assert list(conditions) == list(RSNA_CONDITIONS)
    assert all(s.stop - s.start == len(RSNA_SEVERITIES) for s in conditions.values())
    assert RSNA_LEVEL_SLICE == slice(15, 15 + len(RSNA_DISCS)) and RSNA_OUTPUTS == 20


def test_split_functions_cut_the_concatenated_logits_back_into_heads() -> None:
    logits = np.arange(3 * SPINENET_OUTPUTS, dtype=np.float32).reshape(3, SPINENET_OUTPUTS)
    heads = split_spinenet_logits(logits)
    assert {name: h.shape for name, h in heads.items()} == {n: (3, len(c)) for n, c in SPINENET_GRADINGS.items()}
    np.testing.assert_array_equal(np.concatenate(list(heads.values()), axis=1), logits)
    rsna = np.arange(2 * RSNA_OUTPUTS, dtype=np.float32).reshape(2, RSNA_OUTPUTS)
    conditions, level = split_rsna_logits(rsna)
    assert list(conditions) == list(RSNA_CONDITIONS) and level.shape == (2, 5)
    np.testing.assert_array_equal(np.concatenate([*conditions.values(), level], axis=1), rsna)
    with pytest.raises(ValueError, match=r"\(B, 29\)"):
        split_spinenet_logits(rsna)
    with pytest.raises(ValueError, match=r"\(B, 20\)"):
        split_rsna_logits(logits[0])


def test_probabilities_sum_to_one_and_survive_extreme_logits() -> None:
    logits = np.zeros((2, SPINENET_OUTPUTS), dtype=np.float32)
    logits[0, grading_slices()["pfirrmann"]] = [1e4, 0, 0, 0, -1e4]  # would overflow a naive exp
    gradings = spinenet_probabilities(logits)
    assert gradings["pfirrmann"][0].tolist() == pytest.approx([1, 0, 0, 0, 0])
    assert gradings["narrowing"][1].tolist() == pytest.approx([0.25] * 4)
    for probabilities in gradings.values():
        assert np.all(np.isfinite(probabilities)) and np.allclose(probabilities.sum(axis=1), 1)
    rsna = np.zeros((1, RSNA_OUTPUTS), dtype=np.float32)
    rsna[0, condition_slices()["spinal_canal_stenosis"]] = [0, math.log(2), math.log(5)]
    rsna[0, RSNA_LEVEL_SLICE] = 100.0  # the level head is not part of the condition probabilities
    conditions = rsna_probabilities(rsna)
    assert list(conditions) == list(RSNA_CONDITIONS)
    assert conditions["spinal_canal_stenosis"][0].tolist() == pytest.approx([1 / 8, 2 / 8, 5 / 8])
    assert conditions["left_subarticular_stenosis"][0].tolist() == pytest.approx([1 / 3] * 3)
    assert softmax(np.array([[1.0, 1.0]]), axis=0).tolist() == [[1.0, 1.0]]


# --- SpineNetV2 grader ----------------------------------------------------------------------------

def test_spinenet_grader_outputs_every_grading_and_tells_left_from_right(spinenet: SpineNetGrader) -> None:
    volumes = torch.zeros(2, len(SPINENET_CHANNELS), *DISC_VOLUME_SHAPE)
    # The same bright blob in a right-sided and a left-sided slice (away from the volume's edges):
    # in-plane layers are identical per slice, so only a slice-aware embedding can tell them apart.
    volumes[0, 0, 2, 50:62, 100:124] = 1.0
    volumes[1, 0, 6, 50:62, 100:124] = 1.0
    logits = run(spinenet, volumes)
    assert logits.shape == (2, SPINENET_OUTPUTS) and np.all(np.isfinite(logits))
    with torch.no_grad():
        right, left = spinenet.features(volumes).numpy()
    assert right.shape == (512,)
    assert np.abs(right - left).max() > 1e-3 * np.abs(right).max()


# --- multi-view grader ----------------------------------------------------------------------------

def test_multiview_grader_ignores_the_pixels_of_padded_slices(multiview: MultiViewGrader) -> None:
    torch.manual_seed(1)
    slices = torch.randn(2, MULTIVIEW_TOKENS, *SLICE_SHAPE)
    tokens = disc_tokens(2, views=("sag_t2", "ax_t2"))
    padded = tokens[..., 0] == PADDING_VIEW
    changed = slices.clone()
    changed[padded] = 10.0 * torch.randn_like(changed[padded])
    reference = run(multiview, slices, tokens)
    assert reference.shape == (2, RSNA_OUTPUTS)
    np.testing.assert_allclose(run(multiview, changed, tokens), reference, atol=1e-5)
    # A present slice does reach the output.
    changed = slices.clone()
    changed[0, ~padded[0]] += 1.0
    assert np.abs(run(multiview, changed, tokens)[0] - reference[0]).max() > 1e-4


def test_a_missing_view_is_the_same_as_leaving_its_slices_out(multiview: MultiViewGrader) -> None:
    torch.manual_seed(2)
    slices = torch.randn(1, MULTIVIEW_TOKENS, *SLICE_SHAPE)
    tokens = disc_tokens(1, views=("sag_t2", "ax_t2"))
    kept = tokens[0, :, 0] != PADDING_VIEW
    np.testing.assert_allclose(
        run(multiview, slices, tokens), run(multiview, slices[:, kept], tokens[:, kept]), atol=1e-5,
    )


@pytest.mark.parametrize("views", [("sag_t1",), ("sag_t2",), ("ax_t2",), ()], ids=["t1", "t2", "axial", "none"])
def test_multiview_grader_grades_from_any_single_view_or_none(multiview: MultiViewGrader, views: tuple[str, ...]) -> None:
    torch.manual_seed(3)
    logits = run(multiview, torch.randn(1, MULTIVIEW_TOKENS, *SLICE_SHAPE), disc_tokens(1, views=views))
    assert logits.shape == (1, RSNA_OUTPUTS) and np.all(np.isfinite(logits))


def test_multiview_grader_trains_with_padding_in_the_batch() -> None:
    torch.manual_seed(4)
    model = MultiViewGrader(widths=(8, 8, 16, 16), d_model=32, feedforward=64).train()
    tokens = torch.cat([disc_tokens(1, views=("ax_t2",)), disc_tokens(1)])
    slices = torch.randn(2, MULTIVIEW_TOKENS, *SLICE_SHAPE)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the training loop runs it
        logits = model(slices, tokens)
    loss = park_loss(logits.float(), torch.tensor([[0, 1, 2, 0, -1], [2, 2, 1, 0, 0]]), torch.tensor([2, 2]),
                     [torch.ones(3)] * len(RSNA_CONDITIONS))
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())


# --- losses ---------------------------------------------------------------------------------------

def test_class_weights_are_inverse_frequencies_with_mean_one() -> None:
    weights = balanced_class_weights(np.array([0, 0, 0, 1, -1, -1]), 3)
    # 4 known labels over 2 present classes: 4 / (2 × 3) and 4 / (2 × 1); class 2 is absent.
    assert weights.tolist() == pytest.approx([2 / 3, 2.0, 0.0])
    assert balanced_class_weights(np.array([0, 1, 2, 0, 1, 2]), 3).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert balanced_class_weights(np.array([-1, -1]), 2).tolist() == [0.0, 0.0]


def test_balanced_cross_entropy_weights_rare_classes_up() -> None:
    weights = [torch.ones(len(c)) for c in SPINENET_GRADINGS.values()]
    logits = torch.zeros(2, SPINENET_OUTPUTS)
    targets = torch.zeros(2, len(SPINENET_GRADINGS), dtype=torch.long)
    # Uniform logits: every head's cross-entropy is log(number of classes).
    expected = np.mean([math.log(len(c)) for c in SPINENET_GRADINGS.values()])
    assert balanced_cross_entropy(logits, targets, weights).item() == pytest.approx(expected, rel=1e-6)
    # Unknown targets (−1) are skipped; a head without any known target leaves the mean.
    targets[:, 0] = -1
    expected = np.mean([math.log(len(c)) for c in list(SPINENET_GRADINGS.values())[1:]])
    assert balanced_cross_entropy(logits, targets, weights).item() == pytest.approx(expected, rel=1e-6)
    # One binary head: the healthy sample is predicted well, the rare positive badly.
    # Weighted mean Σ w·CE / Σ w: the rare class's weight pulls the loss towards its error.
    head = grading_slices()["herniation"]
    index = list(SPINENET_GRADINGS).index("herniation")
    only = torch.full((2, len(SPINENET_GRADINGS)), -1, dtype=torch.long)
    only[:, index] = torch.tensor([0, 1])
    logits = torch.zeros(2, SPINENET_OUTPUTS)
    logits[:, head] = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    healthy, missed = math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(2.0))
    rare = balanced_class_weights(np.array([0] * 9 + [1]), 2)  # 10/18 and 10/2
    weights[index] = rare
    w0, w1 = rare.tolist()
    assert balanced_cross_entropy(logits, only, weights).item() == pytest.approx((w0 * healthy + w1 * missed) / (w0 + w1), rel=1e-5)
    weights[index] = torch.ones(2)
    assert balanced_cross_entropy(logits, only, weights).item() == pytest.approx((healthy + missed) / 2, rel=1e-5)


def test_park_loss_is_point_eight_conditions_plus_point_two_level() -> None:
    logits = torch.zeros(3, RSNA_OUTPUTS, requires_grad=True)
    targets = torch.tensor([[0, 1, 2, 0, 1], [2, 2, 2, 2, 2], [0, 0, 0, 0, -1]])
    loss = park_loss(logits, targets, torch.tensor([0, 3, 4]), [torch.ones(3)] * len(RSNA_CONDITIONS))
    assert (PARK_CONDITION_WEIGHT, PARK_LEVEL_WEIGHT) == (0.8, 0.2)
    assert loss.item() == pytest.approx(0.8 * math.log(3) + 0.2 * math.log(5), rel=1e-6)
    loss.backward()
    assert logits.grad[:, RSNA_LEVEL_SLICE].abs().sum() > 0


# --- export ---------------------------------------------------------------------------------------

def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_both_graders_export_and_match_torch_for_any_batch_and_token_count(
    spinenet: SpineNetGrader, multiview: MultiViewGrader, tmp_path: Path
) -> None:
    torch.manual_seed(5)
    entry = export_model(spinenet, ExportSpec(
        "disc_grader", {"volume": torch.randn(2, 2, *DISC_VOLUME_SHAPE)}, "logits",
        {"volume": {0: "batch"}, "logits": {0: "batch"}}, {"volume": "(N, 2, 9, 112, 224)"}, "(N, 29)",
    ), tmp_path)
    assert max(entry["export_max_abs_difference"].values()) <= EXPORT_TOLERANCE
    volume = torch.randn(3, 2, *DISC_VOLUME_SHAPE)
    expected = run(spinenet, volume)
    onnx_out = _session(tmp_path / "disc_grader.onnx").run(None, {"volume": volume.numpy()})[0]
    np.testing.assert_allclose(onnx_out, expected, atol=EXPORT_TOLERANCE)
    np.testing.assert_allclose(run(torch.jit.load(str(tmp_path / "disc_grader.ts")), volume), expected, atol=EXPORT_TOLERANCE)

    example_tokens = disc_tokens(2)[:, ::5]  # 5 tokens: export must not fix the token count
    entry = export_model(multiview, ExportSpec(
        "rsna_grader", {"slices": torch.randn(2, 5, *SLICE_SHAPE), "tokens": example_tokens.contiguous()}, "logits",
        {"slices": {0: "batch", 1: "tokens"}, "tokens": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}},
        {"slices": "(N, T, 112, 224)", "tokens": "(N, T, 3)"}, "(N, 20)",
    ), tmp_path)
    assert list(entry["inputs"]) == ["slices", "tokens"] and list(entry["outputs"]) == ["logits"]
    assert max(entry["export_max_abs_difference"].values()) <= EXPORT_TOLERANCE
    session = _session(tmp_path / "rsna_grader.onnx")
    scripted = torch.jit.load(str(tmp_path / "rsna_grader.ts"))
    tokens = torch.cat([disc_tokens(1), disc_tokens(1, views=("sag_t1",)), disc_tokens(1, views=())])
    slices = torch.randn(3, MULTIVIEW_TOKENS, *SLICE_SHAPE)
    expected = run(multiview, slices, tokens)
    onnx_out = session.run(None, {"slices": slices.numpy(), "tokens": tokens.numpy()})[0]
    np.testing.assert_allclose(onnx_out, expected, atol=EXPORT_TOLERANCE)
    np.testing.assert_allclose(run(scripted, slices, tokens), expected, atol=EXPORT_TOLERANCE)
    # Padded pixels are ignored by the exported graph too.
    slices[tokens[..., 0] == PADDING_VIEW] = 7.0
    onnx_out = session.run(None, {"slices": slices.numpy(), "tokens": tokens.numpy()})[0]
    np.testing.assert_allclose(onnx_out, expected, atol=EXPORT_TOLERANCE)


def test_export_spec_names_each_input_once() -> None:
    with pytest.raises(ValueError, match="input docs"):
        ExportSpec("m", {"a": torch.zeros(1), "b": torch.zeros(1)}, "out", {}, {"a": "doc"}, "doc")
    with pytest.raises(ValueError, match="unknown tensors"):
        ExportSpec("m", {"a": torch.zeros(1)}, "out", {"c": {0: "batch"}}, {"a": "doc"}, "doc")
