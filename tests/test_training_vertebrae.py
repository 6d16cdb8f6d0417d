"""Training the detector and labeller: a short run on one generated study (CI), full loop marked slow.

What an ML engineer retraining on their own data relies on: the caches hold outlines where the
bodies are, each network's loss goes down, export reproduces torch within 1e-4 and records the
hashes, and the exported models run through the app's own core end to end.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.core.dicom_io import scan_study_folder
from operators.core.level_labelling import APPEARANCE_SHAPE, N_CLASSES, height_probability_map, temperature_softmax
from operators.core.onnx_models import open_model
from operators.core.vertebra_pipeline import (
    APPEARANCE_MODEL,
    CONTEXT_MODEL,
    DETECTOR_MODEL,
    SagittalStack,
    detect_vertebrae,
    label_vertebrae,
)
from conftest import write_fastcleverseg_subject
from training.detection.cli import main_stages
from training.detection.detector import DetectorConfig, SlicePatchDataset, train_detector
from training.detection.labeller import (
    LabellerConfig,
    LabellerData,
    appearance_logits,
    cache_labeller_study,
    context_appearance_logits,
    context_example,
    make_appearance_net,
)
from training.detection.slice_cache import CachedSeries, cache_study
from training.export import sha256_of
from training.real.fastcleverseg import DATASETS
from training.stages import initial_state
from training.synthetic.study import StudyConfig, generate_study

TINY_DETECTOR = DetectorConfig(decoder_channels=(32, 16, 16, 8, 8), patch_px=96, batch_size=4, steps=40)
TINY_LABELLER = LabellerConfig(widen_factor=0.25, appearance_steps=30, context_steps=30, batch_size=8)


@pytest.fixture(scope="module")
def training_studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small generated studies (lumbar T1+T2, thoracic T2) laid out like `python -m training generate`."""
    root = tmp_path_factory.mktemp("training_studies")
    generate_study(120_900, root / "study_120900", StudyConfig(field_of_view="lumbar", series_kinds=("sag_t1", "sag_t2")))
    generate_study(110_900, root / "study_110900", StudyConfig(field_of_view="thoracic", series_kinds=("sag_t2",)))
    return root


@pytest.fixture(scope="module")
def detector_cache(training_studies: Path, tmp_path_factory: pytest.TempPathFactory) -> list[CachedSeries]:
    out = tmp_path_factory.mktemp("detector_cache")
    files = [f for study in sorted(training_studies.iterdir()) for f in cache_study(study, out)]
    return [CachedSeries.load(f) for f in files]


def test_cache_holds_every_level_in_view_on_the_detector_grid(detector_cache: list[CachedSeries], training_studies: Path) -> None:
    lumbar = [c for c in detector_cache if "120900" in c.path.name]
    assert len(lumbar) == 2  # T1 and T2
    levels = set(lumbar[0].quad_levels)
    assert {"L1", "L2", "L3", "L4", "L5", "S1"} <= levels
    assert "C1" not in levels
    image = lumbar[0].images
    height, width = image.shape[1:]
    # Body centroids of the middle slice lie inside the image and on bright bone (not air).
    middle = image.shape[0] // 2
    centroids = lumbar[0].slice_quads(middle)[:, 4]
    assert len(centroids) >= 5
    inside = (centroids[:, 0] >= 0) & (centroids[:, 0] < height) & (centroids[:, 1] >= 0) & (centroids[:, 1] < width)
    values = image[middle][tuple(np.round(centroids[inside]).astype(int).T)].astype(float)
    assert np.median(values) > np.median(image[middle].astype(float))


def test_patches_carry_targets_that_match_their_bodies(detector_cache: list[CachedSeries]) -> None:
    dataset = SlicePatchDataset(detector_cache, patch_px=96, samples=20, seed=1)
    item = dataset[0]
    assert item["image"].shape == (1, 96, 96)
    assert item["target"].shape == (13, 96, 96)
    assert item["vector_weight"].shape == (4, 96, 96)
    peaks = [float(dataset[i]["target"][:5].max()) for i in range(20)]
    assert max(peaks) > 0.9  # most patches are centred near a body


def test_detector_loss_goes_down(detector_cache: list[CachedSeries], tmp_path: Path) -> None:
    history = train_detector(detector_cache, detector_cache, TINY_DETECTOR, tmp_path / "detector.pt", log_every=5, val_every=40)
    losses = [loss for _, loss in history["train_loss"]]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    assert (tmp_path / "detector.pt").exists()


def test_labeller_cache_and_classes(training_studies: Path, tmp_path: Path) -> None:
    files = [cache_labeller_study(study, tmp_path) for study in sorted(training_studies.iterdir())]
    data = LabellerData.load([f for f in files if f is not None])
    assert data.volumes.shape[1:] == APPEARANCE_SHAPE
    assert len(data.groups) == 2 + 1  # two lumbar series, one thoracic
    # Bodies inside each series group are ordered caudal → cranial: class index (C3 = 0 … S1 = 22) falls.
    for group in data.groups:
        assert np.all(np.diff(data.classes[group]) <= 0)


def test_context_examples_see_noisier_appearance_than_the_network_gives_its_training_bodies(
    training_studies: Path, tmp_path: Path
) -> None:
    files = [cache_labeller_study(study, tmp_path) for study in sorted(training_studies.iterdir())]
    data = LabellerData.load([f for f in files if f is not None])
    appearance = make_appearance_net(TINY_LABELLER)
    logits = context_appearance_logits(appearance, data, passes=3, seed=0)
    assert logits.shape == (3, len(data.classes), N_CLASSES)
    # Pass 0 is the plain network output; the others are on augmented volumes.
    np.testing.assert_allclose(logits[0], appearance_logits(appearance, data), atol=1e-5)
    assert not np.allclose(logits[1], logits[0], atol=1e-3)
    group = max(data.groups, key=len)
    rng = np.random.default_rng(0)
    clean, targets = context_example(data, logits, group, rng, augment=False)
    # Without augmentation the map is built from pass 0 alone, and every body is a target.
    expected = height_probability_map(data.spans_mm[group].astype(float), temperature_softmax(logits[0, group]))
    np.testing.assert_allclose(clean[:, : expected.n_bins], expected.probabilities, atol=1e-6)
    assert set(np.unique(targets[targets >= 0])) == set(data.classes[group])
    augmented = [context_example(data, logits, group, rng, augment=True)[0] for _ in range(5)]
    assert any(x.shape != clean.shape or not np.allclose(x, clean) for x in augmented)


def test_all_stages_export_models_that_the_app_core_runs(training_studies: Path, tmp_path: Path) -> None:
    """cache → detector → appearance → context → export → cards with tiny settings, on generated
    studies mixed with real-layout subjects, then the exported ONNX models run through the same core
    functions as the app on a generated study, and fine-tuning starts from exactly those weights."""
    models = tmp_path / "models"
    real_root = tmp_path / "fastcleverseg"
    for name in ("01", "03"):  # train and val splits
        write_fastcleverseg_subject(real_root / DATASETS["VB3"].folder, name, [1, 2, 3, 4, 5])
    # A handful of steps: this test is about the stages fitting together, not about learning.
    main_stages(training_studies, training_studies, tmp_path / "work", models, replace(TINY_DETECTOR, steps=4),
                replace(TINY_LABELLER, appearance_steps=4, context_steps=4), threads=2, real_root=real_root)
    assert (tmp_path / "work/cache/train/detector/real_VB3_01.npz").exists()
    assert (tmp_path / "work/cache/val/labeller/real_VB3_03.npz").exists()
    manifest = json.loads((models / "manifest.json").read_text())
    assert set(manifest["models"]) == {"vertebra_detector", "level_appearance", "level_context"}
    for name, entry in manifest["models"].items():
        assert sha256_of(models / entry["onnx"]) == entry["sha256"]["onnx"]
        assert sha256_of(models / entry["torchscript"]) == entry["sha256"]["torchscript"]
        assert max(entry["export_max_abs_difference"].values()) <= 1e-4
        assert entry["opset"] >= 17
        assert (models / f"{name}.md").read_text().startswith(f"# {name}")
        # TorchScript loads without our code and accepts a dynamic batch.
        scripted = torch.jit.load(str(models / entry["torchscript"]))
        assert scripted is not None

    appearance = make_appearance_net(TINY_LABELLER)
    appearance.load_state_dict(initial_state(models, APPEARANCE_MODEL))
    volume = np.random.default_rng(0).normal(size=(2, *APPEARANCE_SHAPE)).astype(np.float32)
    with torch.no_grad():
        from_checkpoint = appearance.eval()(torch.as_tensor(volume)).numpy()
    np.testing.assert_allclose(from_checkpoint, open_model(APPEARANCE_MODEL, models).run({"volume": volume})[0], atol=1e-4)

    scan = scan_study_folder(next(training_studies.glob("study_120900")) / "study")
    stacks = []
    for series in scan.series:
        loaded = series.stacks[0].load()
        stacks.append(SagittalStack.from_pixels(series.series_instance_uid, loaded.pixels, loaded.geometry))
    fused = detect_vertebrae(stacks, open_model(DETECTOR_MODEL, models))
    labelled, _ = label_vertebrae(fused, stacks, open_model(APPEARANCE_MODEL, models), open_model(CONTEXT_MODEL, models))
    # A 4-step detector finds little; what matters here is that every interface fits together.
    assert len(labelled) <= len(fused)

    # Retraining only the labeller beside the shipped detector: with no detector checkpoint, export
    # keeps the detector's files and manifest entry as they are.
    (tmp_path / "work" / f"{DETECTOR_MODEL}.pt").unlink()
    detector_onnx = (models / manifest["models"][DETECTOR_MODEL]["onnx"]).read_bytes()
    main_stages(training_studies, training_studies, tmp_path / "work", models, TINY_DETECTOR, TINY_LABELLER,
                stages=("export",))
    assert json.loads((models / "manifest.json").read_text())["models"][DETECTOR_MODEL] == manifest["models"][DETECTOR_MODEL]
    assert (models / manifest["models"][DETECTOR_MODEL]["onnx"]).read_bytes() == detector_onnx
