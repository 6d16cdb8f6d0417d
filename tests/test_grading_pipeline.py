"""Disc grading core (:mod:`operators.core.grading_pipeline`) on generated DICOM studies, with the
generator's true vertebrae and small numpy stand-ins for the two networks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from operators.core.dicom_io import scan_study_folder
from operators.core.grading_pipeline import (
    MULTIVIEW_TOKENS,
    MULTIVIEW_VIEWS,
    PADDING_VIEW,
    extract_study_views,
    grade_discs,
    multiview_input,
    spinenet_input,
)
from operators.core.gradings import RSNA_CONDITIONS, SPINENET_GRADINGS
from operators.core.levels import RSNA_DISCS
from operators.core.series_roles import assign_roles
from operators.core.vertebra_pipeline import sagittal_stacks
from operators.core.volume_extraction import AXIAL_SLAB_SHAPE, DISC_VOLUME_SHAPE
from training.grading.cache import truth_vertebrae
from training.synthetic.study import StudyConfig, generate_study

N_SPINENET_LOGITS = sum(len(classes) for classes in SPINENET_GRADINGS.values())
N_RSNA_LOGITS = 3 * len(RSNA_CONDITIONS) + len(RSNA_DISCS)


def spinenet_stand_in(volumes: np.ndarray) -> np.ndarray:
    """Logits that depend on the input, so that a swapped or empty input would show."""
    assert volumes.shape[1:] == (2, *DISC_VOLUME_SHAPE) and volumes.dtype == np.float32
    means = volumes.reshape(len(volumes), -1).mean(axis=1, keepdims=True)
    return np.tile(means, (1, N_SPINENET_LOGITS)) * np.arange(N_SPINENET_LOGITS, dtype=np.float32)


def multiview_stand_in(slices: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    assert slices.shape[1:] == (MULTIVIEW_TOKENS, *DISC_VOLUME_SHAPE[1:]) and tokens.shape[1:] == (MULTIVIEW_TOKENS, 3)
    present = (tokens[:, :, 0] != PADDING_VIEW).sum(axis=1, keepdims=True).astype(np.float32)
    return np.tile(present, (1, N_RSNA_LOGITS)) * np.linspace(0.0, 1.0, N_RSNA_LOGITS, dtype=np.float32)


def _views(kinds: tuple[str, ...], seed: int, folder: Path):
    truth = generate_study(seed, folder, StudyConfig(field_of_view="lumbar", series_kinds=kinds, duplicates=()))
    scan = scan_study_folder(folder / "study")
    decisions = assign_roles(scan.series)
    stacks, _ = sagittal_stacks(scan, decisions)
    views, warnings = extract_study_views(scan, decisions, stacks, truth_vertebrae(truth, 0.0, np.random.default_rng(0)))
    return truth, views, warnings


@pytest.fixture(scope="module")
def with_axial(tmp_path_factory: pytest.TempPathFactory):
    return _views(("sag_t1", "sag_t2", "ax_t2"), 31, tmp_path_factory.mktemp("with_axial"))


@pytest.fixture(scope="module")
def sagittal_only(tmp_path_factory: pytest.TempPathFactory):
    return _views(("sag_t2",), 32, tmp_path_factory.mktemp("sagittal_only"))


def test_every_disc_between_true_vertebrae_gets_sagittal_views(with_axial) -> None:
    truth, views, _ = with_axial
    levels = [v.frame.level for v in views]
    assert levels, "no disc extracted"
    assert set(levels) <= {d["level"] for d in truth["discs"]}
    for disc in views:
        assert set(disc.sagittal) == {"sag_t1", "sag_t2"}
        true_centre = np.asarray(next(d for d in truth["discs"] if d["level"] == disc.frame.level)["centre_mm"])
        assert np.linalg.norm(disc.frame.centre_mm - true_centre) < 6.0  # midpoint of centroids vs disc centre


def test_network_inputs_follow_the_documented_layout(with_axial) -> None:
    _, views, _ = with_axial
    disc = next(v for v in views if v.axial is not None)
    volume = spinenet_input(disc)
    np.testing.assert_array_equal(volume[0], disc.sagittal["sag_t2"].pixels)
    np.testing.assert_array_equal(volume[1], disc.sagittal["sag_t1"].pixels)
    slices, tokens = multiview_input(disc)
    assert [MULTIVIEW_VIEWS[v] for v in np.unique(tokens[:, 0])] == list(MULTIVIEW_VIEWS)
    axial_rows = tokens[:, 0] == MULTIVIEW_VIEWS.index("ax_t2")
    assert axial_rows.sum() == AXIAL_SLAB_SHAPE[0]
    np.testing.assert_array_equal(slices[axial_rows], disc.axial.pixels)
    np.testing.assert_array_equal(tokens[axial_rows, 1], np.arange(AXIAL_SLAB_SHAPE[0]))


def test_grades_are_probabilities_and_rsna_only_on_lumbar_discs(with_axial) -> None:
    _, views, _ = with_axial
    entries = grade_discs(views, spinenet_stand_in, multiview_stand_in)
    assert [e.level for e in entries] == [v.frame.level for v in views]
    for entry in entries:
        assert set(entry.gradings) == set(SPINENET_GRADINGS)
        for name, probabilities in entry.gradings.items():
            assert len(probabilities) == len(SPINENET_GRADINGS[name]) and sum(probabilities) == pytest.approx(1.0)
        if entry.level in RSNA_DISCS:
            assert set(entry.rsna) == set(RSNA_CONDITIONS)
            assert all(sum(p) == pytest.approx(1.0) for p in entry.rsna.values())
        else:
            assert entry.rsna == {}


def test_a_study_without_axial_is_graded_from_sagittal_views_with_a_warning(sagittal_only) -> None:
    _, views, warnings = sagittal_only
    assert "NO_AXIAL_SERIES" in {w.code for w in warnings}
    assert views and all(v.axial is None and set(v.sagittal) == {"sag_t2"} for v in views)
    slices, tokens = multiview_input(views[0])
    missing = np.isin(tokens[:, 0], [PADDING_VIEW])
    assert missing.sum() == MULTIVIEW_TOKENS - DISC_VOLUME_SHAPE[0]
    assert not slices[missing].any()
    lumbar = [e for e in grade_discs(views, spinenet_stand_in, multiview_stand_in) if e.level in RSNA_DISCS]
    assert lumbar and all(set(e.rsna) == set(RSNA_CONDITIONS) for e in lumbar)
