"""Cancer SCT: body volumes from real DICOM, the network's handling of missing sequences and
vertebrae, its losses, export, training and the operator-facing core.

What a radiologist and an ML engineer rely on: every vertebra a sequence shows is assessed from the
sequences that show it (a warning says what was missing), a missing sequence never leaks into the
prediction, the exported model is the trained one, and a short training run learns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.core.cancer_pipeline import (
    CANCER_MODEL,
    CANCER_SEQUENCES,
    MISSING_SEQUENCE,
    REVIEW_MARGIN,
    assess_vertebrae,
    cancer_input,
    cancer_sources,
    needs_review,
)
from operators.core.dicom_io import scan_study_folder
from operators.core.gradings import CANCER_FINDINGS
from operators.core.onnx_models import open_model
from operators.core.report import CANCER_SUSPICION_THRESHOLD, VertebraEntry
from operators.core.series_roles import assign_roles
from operators.core.vertebra_pipeline import sagittal_stacks
from operators.core.volume_extraction import VERTEBRA_VOLUME_SHAPE
from training.cancer.cache import CancerStudy, cache_cancer_study, load_cancer_studies
from training.cancer.cli import main_stages
from training.cancer.networks import SpinalContextTransformer, positive_weights, study_loss, vertebra_loss
from training.cancer.train import CancerConfig, auroc, collate, study_sample
from training.export import sha256_of
from training.grading.cache import truth_vertebrae
from training.synthetic.phantom import AnatomyConfig
from training.synthetic.study import StudyConfig, generate_study

TINY = CancerConfig(steps=30, pretrain_steps=10, encoder_batch_size=8, batch_size=2, max_vertebrae=6, warmup_steps=3,
                    validate_every=30, log_every=5, augment=False)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two thoracic studies with cancer laid out like `python -m training generate` (one T2 only)."""
    root = tmp_path_factory.mktemp("cancer_studies")
    cancer = AnatomyConfig(cancer=True)
    generate_study(160_900, root / "study_160900",
                   StudyConfig(field_of_view="thoracic", series_kinds=("sag_t1", "sag_t2", "sag_stir"), anatomy=cancer))
    generate_study(160_901, root / "study_160901", StudyConfig(field_of_view="thoracic", series_kinds=("sag_t2",), anatomy=cancer))
    return root


@pytest.fixture(scope="module")
def cached(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> list[CancerStudy]:
    out = tmp_path_factory.mktemp("cancer_cache")
    for study in sorted(studies.iterdir()):
        assert cache_cancer_study(study, out, jitter_mm=1.5) is not None
    return load_cancer_studies(out)


def _loaded(study: Path):
    scan = scan_study_folder(study / "study")
    decisions = assign_roles(scan.series)
    stacks, _ = sagittal_stacks(scan, decisions)
    return json.loads((study / "truth.json").read_text()), decisions, stacks


def test_cache_holds_every_body_in_view_with_truth_and_report_labels(cached: list[CancerStudy], studies: Path) -> None:
    three, t2_only = cached
    truth = json.loads((studies / "study_160900" / "truth.json").read_text())
    lesions = {v["level"]: v["lesions"] for v in truth["vertebrae"]}
    assert three.volumes.shape[1:] == (len(CANCER_SEQUENCES), *VERTEBRA_VOLUME_SHAPE)
    assert three.available.all() and len(three.levels) >= 8
    for level, labels in zip(three.levels, three.labels["truth"]):
        assert labels.tolist() == [int(bool(lesions[str(level)][name])) for name in CANCER_FINDINGS]
    assert three.study_labels["truth"].tolist() == three.labels["truth"].max(axis=0).tolist()
    # Report labels are positive / negative / unknown and agree with the truth where they are known
    # (the generated report says what the images show).
    report = three.labels["report"]
    assert set(np.unique(report)) <= {-1, 0, 1}
    known = report >= 0
    assert known.any() and (report[known] == three.labels["truth"][known]).mean() > 0.9
    # The T2-only study fills only the T2 slot.
    assert t2_only.available[:, CANCER_SEQUENCES.index("sag_t2")].all() and t2_only.available.sum() == len(t2_only.levels)


def test_missing_sequences_and_padding_never_reach_the_prediction() -> None:
    torch.manual_seed(0)
    model = SpinalContextTransformer().eval()
    volumes = torch.randn(1, 4, 2, *VERTEBRA_VOLUME_SHAPE)
    sequences = torch.tensor([[[0, 1], [0, MISSING_SEQUENCE], [1, 2], [0, 1]]])
    levels = torch.tensor([[10, 11, 12, 13]])
    with torch.no_grad():
        reference = model(volumes, sequences, levels)
        changed = volumes.clone()
        changed[0, 1, 1] = torch.randn(*VERTEBRA_VOLUME_SHAPE) * 5  # pixels of the missing slot
        assert torch.allclose(model(changed, sequences, levels), reference, atol=1e-5)
        # A padded second study (fewer vertebrae) gives the first study's logits unchanged.
        padded_volumes = torch.cat([volumes, torch.zeros_like(volumes)])
        padded_sequences = torch.cat([sequences, torch.full_like(sequences, MISSING_SEQUENCE)])
        padded_sequences[1, 0, 0] = 1
        batch = model(padded_volumes, padded_sequences, torch.cat([levels, levels]))
        assert torch.isfinite(batch).all() and torch.allclose(batch[:1], reference, atol=1e-5)
        # Context: another vertebra's appearance changes this vertebra's logits (the transformer).
        other = volumes.clone()
        other[0, 3] = torch.randn(2, *VERTEBRA_VOLUME_SHAPE)
        assert not torch.allclose(model(other, sequences, levels)[0, 0], reference[0, 0], atol=1e-6)


def test_losses_skip_unknown_labels_and_the_bag_takes_its_strongest_vertebra() -> None:
    logits = torch.tensor([[[2.0, -1.0, 0.0], [-3.0, 0.5, 0.0], [5.0, 9.0, 9.0]]], requires_grad=True)
    labels = torch.tensor([[[1, 0, -1], [0, -1, -1], [-1, -1, -1]]])
    weights = positive_weights(np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]]))
    assert weights.tolist() == [2.0, 2.0, 1.0]
    loss = vertebra_loss(logits, labels, weights)
    loss.backward()
    assert logits.grad[0, 2].abs().sum() == 0 and logits.grad[0, 0, 2] == 0  # unknown labels carry no loss
    logits.grad = None
    present = torch.tensor([[True, True, False]])  # the third vertebra is batch padding
    study_loss(logits, present, torch.tensor([[1, 0, -1]])).backward()
    # Metastasis: only the strongest present vertebra (the first) gets a gradient; fracture: the second.
    assert logits.grad[0, :, 0].nonzero().flatten().tolist() == [0]
    assert logits.grad[0, :, 1].nonzero().flatten().tolist() == [1]
    assert logits.grad[0, :, 2].abs().sum() == 0 and logits.grad[0, 2].abs().sum() == 0


def test_training_samples_drop_sequences_and_crop_runs_of_vertebrae(cached: list[CancerStudy]) -> None:
    rng = np.random.default_rng(3)
    config = CancerConfig(max_vertebrae=4, sequence_dropout=0.5)
    shapes = set()
    for _ in range(20):
        volumes, sequences, levels, labels, _ = study_sample(cached[0], "truth", rng, config, None)
        assert len(levels) == 4 and np.all(np.diff(levels) == 1)  # a contiguous run
        assert (sequences != MISSING_SEQUENCE).any()
        shapes.add(sequences.shape[1])
    assert len(shapes) > 1  # some samples lost a sequence
    batch = collate([study_sample(s, "report", rng, config, None) for s in cached])
    assert batch.volumes.shape[:3] == batch.sequences.shape and batch.present.sum() == 8


def test_auroc_matches_a_hand_count() -> None:
    # Pairs (positive, negative): 0.9>0.1, 0.9>0.4, 0.3>0.1, 0.3<0.4 → 3 of 4 ordered correctly.
    assert auroc(np.array([1, 1, 0, 0, -1]), np.array([0.9, 0.3, 0.1, 0.4, 0.99])) == pytest.approx(0.75)
    assert auroc(np.array([0, 0]), np.array([0.1, 0.2])) is None


def test_review_flag_marks_probabilities_near_the_threshold() -> None:
    assert needs_review({"metastasis": CANCER_SUSPICION_THRESHOLD + REVIEW_MARGIN / 2, "fracture": 0.0, "cord_compression": 0.0})
    assert not needs_review({"metastasis": 0.99, "fracture": 0.01, "cord_compression": 0.0})


def test_loss_goes_down_and_every_stage_exports_a_model_the_core_runs(studies: Path, cached: list[CancerStudy],
                                                                       tmp_path: Path) -> None:
    """A short run without augmentation lowers the loss; export matches torch and records the hash;
    the exported model assesses a study's true vertebrae through the app's core."""
    models = tmp_path / "models"
    main_stages(studies, studies, tmp_path / "work", models, TINY)
    history = json.loads((tmp_path / "work" / "truth" / f"{CANCER_MODEL}.history.json").read_text())
    losses = [loss for _, loss in history["train_loss"]]
    assert losses[-1] < 0.8 * losses[0], losses
    entry = json.loads((models / "manifest.json").read_text())["models"][CANCER_MODEL]
    assert sha256_of(models / entry["onnx"]) == entry["sha256"]["onnx"]
    assert max(entry["export_max_abs_difference"].values()) <= 1e-4
    assert (models / f"{CANCER_MODEL}.md").read_text().startswith(f"# {CANCER_MODEL}")

    trained = SpinalContextTransformer()
    trained.load_state_dict(torch.load(tmp_path / "work" / "truth" / f"{CANCER_MODEL}.pt"))
    truth, decisions, stacks = _loaded(studies / "study_160900")
    vertebrae = [VertebraEntry(v.level, 1.0, "", v.centroid_mm, v.corners_mm, 1.0)
                 for v in truth_vertebrae(truth, 0.0, np.random.default_rng(0)) if v.level != "C1"]
    assessed = assess_vertebrae(vertebrae, decisions, stacks, open_model(CANCER_MODEL, models))
    with_findings = [v for v in assessed.vertebrae if v.findings is not None]
    assert {str(level) for level in cached[0].levels} <= {v.level for v in with_findings}
    # The ONNX model in the app's core gives the torch model's probabilities on the same volumes.
    inputs, _ = cancer_input(vertebrae, cancer_sources(decisions, stacks))
    assert [v.level for v in inputs.vertebrae] == [v.level for v in with_findings]
    with torch.no_grad():
        logits = trained.eval()(*(torch.as_tensor(a[None]) for a in (inputs.volumes, inputs.sequences, inputs.levels)))
    onnx_probabilities = np.array([[v.findings[name] for name in CANCER_FINDINGS] for v in with_findings])
    np.testing.assert_allclose(onnx_probabilities, torch.sigmoid(logits[0]).numpy(), atol=1e-4)
    assert all(isinstance(v.needs_review, bool) for v in with_findings)
    # Bodies above and below the field of view are left out with a warning naming them.
    out_of_view = {w.message.split(":")[0] for w in assessed.warnings if w.code == "VERTEBRA_OUT_OF_VIEW"}
    assert out_of_view and out_of_view.isdisjoint({str(level) for level in cached[0].levels})


def test_a_sequence_with_a_shorter_field_of_view_leaves_a_warning_and_the_others_assess(studies: Path) -> None:
    truth, decisions, stacks = _loaded(studies / "study_160900")
    sources = cancer_sources(decisions, stacks)
    t1 = next(s for s in sources if s.role == "sag_t1")
    # Cut the T1 to its upper half (a different slice geometry / shorter coverage than T2 and STIR).
    rows = t1.pixels.shape[1] // 2
    short_t1 = type(t1)(t1.series_instance_uid, t1.role, t1.pixels[:, :rows].copy(),
                        type(t1.geometry)(t1.geometry.affine, (t1.geometry.shape[0], rows, t1.geometry.shape[2])))
    vertebrae = [v for v in truth_vertebrae(truth, 0.0, np.random.default_rng(0))
                 if any(s.geometry.contains(v.centroid_mm) for s in stacks) and v.level != "C1"]
    complete, _ = cancer_input(vertebrae, sources)
    inputs, warnings = cancer_input(vertebrae, [short_t1 if s is t1 else s for s in sources])
    assert [v.level for v in inputs.vertebrae] == [v.level for v in complete.vertebrae]  # T2 and STIR still show them
    missing_t1 = [w for w in warnings if w.code == "SEQUENCE_MISSING_AT_LEVEL"]
    assert len(missing_t1) == 1 and missing_t1[0].message.startswith("sag_t1 does not show ")
    named = missing_t1[0].message.split("does not show ")[1].split(":")[0].split(", ")
    # Slots follow CANCER_SEQUENCES order, so the T1 is slot 0: empty exactly where the warning says.
    assert [v.level for v, slot in zip(inputs.vertebrae, inputs.sequences[:, 0]) if slot == MISSING_SEQUENCE] == named
    assert (inputs.sequences[:, 1:] != MISSING_SEQUENCE).all()


def test_report_and_summary_name_suspected_and_uncertain_vertebrae() -> None:
    from operators.core.report import SoftwareInfo, build_report, validate_report
    from operators.core.study_outputs import render_summary

    corners = [[0.0, 0.0, 10.0], [0.0, 30.0, 10.0], [0.0, 30.0, -10.0], [0.0, 0.0, -10.0]]

    def vertebra(level: str, metastasis: float) -> VertebraEntry:
        findings = {"metastasis": metastasis, "fracture": 0.02, "cord_compression": 0.01}
        return VertebraEntry(level, 0.99, "1.2.3", [0.0, 15.0, 0.0], corners, 0.95, findings, needs_review(findings))

    report = build_report(study_instance_uid="1.2.3.4", software=SoftwareInfo("spine-map", "0", ()),
                          vertebrae=[vertebra("T4", 0.93), vertebra("T5", 0.55), vertebra("T6", 0.03)])
    validate_report(report)
    assert report["summary"]["cancer_suspected"] is True
    assert [v["needs_review"] for v in report["vertebrae"]] == [False, True, False]
    text = render_summary(report)
    assert "T4 metastasis 0.93; T5 metastasis 0.55" in text and "please review: T5" in text
