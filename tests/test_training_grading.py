"""Training the disc graders: a short run on two generated studies (CI).

What an ML engineer retraining on their own data relies on: the cache holds every disc's inputs and
labels, the loss goes down, export reproduces torch within 1e-4 and records the hashes, and the
exported models grade discs through the app's own core.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.core.grading_pipeline import (
    MULTIVIEW_MODEL,
    MULTIVIEW_TOKENS,
    SPINENET_MODEL,
    extract_study_views,
    grade_discs,
)
from operators.core.dicom_io import scan_study_folder
from operators.core.gradings import RSNA_CONDITIONS, SPINENET_GRADINGS
from operators.core.onnx_models import open_model
from operators.core.series_roles import assign_roles
from operators.core.vertebra_pipeline import sagittal_stacks
from training.export import sha256_of
from training.grading.cache import GradingData, cache_grading_study, truth_vertebrae
from training.grading.cli import main_stages
from operators.core.grading_outputs import grading_slices
from training.grading.networks import MultiViewGrader, SpineNetGrader, balanced_class_weights, balanced_cross_entropy, park_loss
from training.grading.train import GradingConfig, multiview_logits, spinenet_batch, spinenet_logits, train_multiview, train_spinenet
from training.stages import initial_state, start_from
from training.synthetic.study import StudyConfig, generate_study

TINY = GradingConfig(spinenet_steps=40, multiview_steps=40, batch_size=4, warmup_steps=5, validate_every=40, log_every=5,
                     augment=False)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two lumbar studies laid out like `python -m training generate` (one with an axial T2)."""
    root = tmp_path_factory.mktemp("grading_studies")
    generate_study(150_900, root / "study_150900", StudyConfig(field_of_view="lumbar", series_kinds=("sag_t1", "sag_t2", "ax_t2")))
    generate_study(150_901, root / "study_150901", StudyConfig(field_of_view="lumbar", series_kinds=("sag_t2",)))
    return root


@pytest.fixture(scope="module")
def cache_files(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("grading_cache")
    files = [cache_grading_study(study, out, jitter_mm=1.5) for study in sorted(studies.iterdir())]
    assert all(f is not None for f in files)
    return files


@pytest.fixture(scope="module")
def cached(cache_files: list[Path]) -> GradingData:
    return GradingData.load(cache_files)


def test_cache_holds_every_disc_with_its_labels(cache_files: list[Path], studies: Path) -> None:
    with_axial, sagittal_t2_only = (GradingData.load([f]) for f in cache_files)
    truth = json.loads((studies / "study_150900" / "truth.json").read_text())
    true_discs = {d["level"]: d for d in truth["discs"]}
    assert {"L3/L4", "L4/L5"} <= set(with_axial.levels)
    assert with_axial.spinenet.shape[1:] == (2, 9, 112, 224) and with_axial.slices.shape[1:] == (MULTIVIEW_TOKENS, 112, 224)
    for level, gradings in zip(with_axial.levels, with_axial.gradings):
        for (name, classes), label in zip(SPINENET_GRADINGS.items(), gradings):
            assert label == classes.index(int(true_discs[str(level)]["gradings"][name]))
    # The sagittal-T2-only study has no T1 channel and only sagittal T2 tokens.
    assert (sagittal_t2_only.spinenet[:, 1] == 0).all() and (sagittal_t2_only.spinenet[:, 0] != 0).any()
    assert set(np.unique(sagittal_t2_only.tokens[:, :, 0])) == {1, 3}


def _training_loss(model: torch.nn.Module, data: GradingData) -> float:
    """The training loss of ``model`` (SpineNetV2 or Park) on every cached disc."""
    gradings = torch.as_tensor(data.gradings)
    spinenet_weights = [balanced_class_weights(data.gradings[:, i], s.stop - s.start)
                        for i, s in enumerate(grading_slices().values())]
    rows = np.flatnonzero((data.rsna >= 0).any(axis=1))
    rsna_weights = [balanced_class_weights(data.rsna[rows, i], 3) for i in range(len(RSNA_CONDITIONS))]
    if isinstance(model, SpineNetGrader):
        return float(balanced_cross_entropy(torch.as_tensor(spinenet_logits(model, data)), gradings, spinenet_weights))
    levels = torch.as_tensor(data.tokens[rows, 0, 2])
    return float(park_loss(torch.as_tensor(multiview_logits(model, data, rows)), torch.as_tensor(data.rsna[rows]),
                           levels, rsna_weights))


def test_grader_losses_go_down(cached: GradingData, tmp_path: Path) -> None:
    """A short run without augmentation lowers each grader's loss on the few discs it trained on."""
    for trainer, network, name in ((train_spinenet, SpineNetGrader, SPINENET_MODEL),
                                   (train_multiview, MultiViewGrader, MULTIVIEW_MODEL)):
        torch.manual_seed(TINY.seed)  # the trainers build their network after seeding the same way
        before = _training_loss(network(), cached)
        trainer(cached, cached, TINY, tmp_path / f"{name}.pt")
        trained = network()
        trained.load_state_dict(torch.load(tmp_path / f"{name}.pt"))
        after = _training_loss(trained, cached)
        assert after < 0.8 * before, (name, before, after)


#: A few steps: the stage tests are about the stages fitting together, not about learning.
FEW_STEPS = replace(TINY, spinenet_steps=3, multiview_steps=3, validate_every=3)


@pytest.fixture(scope="module")
def exported(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The models folder every stage of ``train-grading`` writes."""
    models = tmp_path_factory.mktemp("grading_run") / "models"
    main_stages(studies, studies, models.parent / "work", models, FEW_STEPS)
    return models


def test_all_stages_export_models_that_the_app_core_runs(studies: Path, exported: Path) -> None:
    models = exported
    manifest = json.loads((models / "manifest.json").read_text())["models"]
    assert set(manifest) == {SPINENET_MODEL, MULTIVIEW_MODEL}
    for name, entry in manifest.items():
        assert sha256_of(models / entry["onnx"]) == entry["sha256"]["onnx"]
        assert max(entry["export_max_abs_difference"].values()) <= 1e-4
        assert (models / f"{name}.md").read_text().startswith(f"# {name}")

    study = studies / "study_150900"
    truth = json.loads((study / "truth.json").read_text())
    scan = scan_study_folder(study / "study")
    decisions = assign_roles(scan.series)
    stacks, _ = sagittal_stacks(scan, decisions)
    in_view = [v for v in truth_vertebrae(truth, 0.0, np.random.default_rng(0))
               if any(s.geometry.contains(v.centroid_mm) for s in stacks)]
    views, _ = extract_study_views(scan, decisions, stacks, in_view)
    discs = grade_discs(views, open_model(SPINENET_MODEL, models), open_model(MULTIVIEW_MODEL, models))
    assert [d.level for d in discs] == [v.frame.level for v in views]
    assert all(set(d.gradings) == set(SPINENET_GRADINGS) for d in discs)


def test_fine_tuning_starts_from_the_exported_weights_and_records_them(studies: Path, exported: Path, tmp_path: Path) -> None:
    """``--init-models``: with a zero learning rate the kept checkpoint has the exported network's
    weights (normalisation statistics still follow the batches)."""
    work = tmp_path / "work"
    frozen = replace(FEW_STEPS, spinenet_learning_rate=0.0, multiview_learning_rate=0.0)
    main_stages(studies, studies, work, tmp_path / "unused", frozen, stages=("cache", SPINENET_MODEL, MULTIVIEW_MODEL),
                init_models=exported)
    for name, network in ((SPINENET_MODEL, SpineNetGrader), (MULTIVIEW_MODEL, MultiViewGrader)):
        started = initial_state(exported, name)
        kept = torch.load(work / f"{name}.pt")
        weights = [key for key, _ in network().named_parameters()]
        assert all(torch.equal(kept[key], started[key]) for key in weights), name
        history = json.loads((work / f"{name}.history.json").read_text())
        assert history["initialised_from"] == {"file": f"{name}.ts", "sha256": sha256_of(exported / f"{name}.ts")}


def test_a_reshaped_layer_starts_afresh_and_the_rest_keeps_its_weights() -> None:
    """Weights from a grader whose embedding took a smaller input (the row axis averaged away) still
    start every other tensor; only the embedding is new, and it is named."""
    torch.manual_seed(0)
    earlier = SpineNetGrader().state_dict()
    earlier["embed.1.weight"] = torch.randn(512, earlier["embed.1.weight"].shape[1] // 4)
    model = SpineNetGrader()
    assert start_from(model, earlier) == ["embed.1.weight"]
    now = model.state_dict()
    assert all(torch.equal(now[key], earlier[key]) for key in now if key != "embed.1.weight")
    assert now["embed.1.weight"].shape != earlier["embed.1.weight"].shape


def test_weights_of_another_network_are_refused() -> None:
    with pytest.raises(ValueError, match="do not belong to SpineNetGrader"):
        start_from(SpineNetGrader(), MultiViewGrader().state_dict())


def test_a_disc_turned_head_to_feet_swaps_its_upper_and_lower_labels() -> None:
    """The head–feet flip moves a finding to the other side of the disc, so the upper and lower
    endplate and marrow labels must swap with it and every other grading stay."""
    volume = np.zeros((1, 2, 9, 112, 224), dtype=np.float16)
    volume[..., :40, :] = 1.0  # something above the disc only
    names = list(SPINENET_GRADINGS)
    gradings = np.zeros((1, len(names)), dtype=np.int64)
    gradings[0, names.index("upper_endplate_defect")] = 1
    gradings[0, names.index("lower_marrow_change")] = 1
    gradings[0, names.index("pfirrmann")] = 3
    data = GradingData(spinenet=volume, slices=np.zeros((1, MULTIVIEW_TOKENS, 112, 224), dtype=np.float16),
                       tokens=np.zeros((1, MULTIVIEW_TOKENS, 3), dtype=np.int64), gradings=gradings,
                       rsna=np.full((1, len(RSNA_CONDITIONS)), -1), levels=np.array(["L4/L5"]))
    rng = np.random.default_rng(0)
    kept, kept_target = spinenet_batch(data, np.array([0]), rng, lambda d: d, flip_probability=0.0)
    turned, turned_target = spinenet_batch(data, np.array([0]), rng, lambda d: d, flip_probability=1.0)
    # Rows well inside each half: the in-plane jitter moves them by up to 6.
    assert kept[0, :, :, 10:30].min() == 1 and kept[0, :, :, 50:100].max() == 0
    assert turned[0, :, :, 12:60].max() == 0 and turned[0, :, :, 80:100].min() == 1
    assert torch.equal(kept_target, torch.as_tensor(gradings))
    expected = dict(zip(names, turned_target[0].tolist()))
    assert expected["lower_endplate_defect"] == 1 and expected["upper_endplate_defect"] == 0
    assert expected["upper_marrow_change"] == 1 and expected["lower_marrow_change"] == 0
    assert expected["pfirrmann"] == 3 and sum(expected.values()) == 5
