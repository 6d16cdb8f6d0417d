"""Detection + labelling with the shipped models, through the core the app's operators call.

Real DICOM from the project's generator is read back with the app's loader; the expected levels
come from the generator's truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.onnx_models import models_dir, open_model
from operators.core.series_roles import assign_roles
from operators.core.vertebra_pipeline import (
    APPEARANCE_MODEL,
    CONTEXT_MODEL,
    DETECTOR_MODEL,
    SagittalStack,
    detect_vertebrae,
    label_vertebrae,
    report_entries,
    sagittal_stacks,
)

pytestmark = pytest.mark.skipif(
    not (models_dir() / "manifest.json").exists(), reason="models/ has no manifest (weights not shipped)"
)


def _networks():
    return tuple(open_model(name, models_dir()) for name in (DETECTOR_MODEL, APPEARANCE_MODEL, CONTEXT_MODEL))


@pytest.fixture(scope="module")
def lumbar_stacks(generated_study):
    study_folder, truth = generated_study
    scan = scan_study_folder(study_folder)
    stacks, warnings = sagittal_stacks(scan, assign_roles(scan.series))
    assert stacks and not [w for w in warnings if w.code == "NO_SAGITTAL_SERIES"]
    return stacks, truth


def test_lumbar_study_levels_match_the_truth(lumbar_stacks) -> None:
    stacks, truth = lumbar_stacks
    detector, appearance, context = _networks()
    labelled, warnings = label_vertebrae(detect_vertebrae(stacks, detector), stacks, appearance, context)
    assert not warnings
    uids = [s.series_instance_uid for s in stacks]
    expected = [v for v in truth["vertebrae"] if any(v["fully_in_view"].get(uid) for uid in uids)]
    assert len(expected) >= 5
    for vertebra in expected:
        distances = [np.linalg.norm(item.vertebra.centroid_mm - vertebra["centroid_mm"]) for item in labelled]
        nearest = int(np.argmin(distances))
        assert distances[nearest] < 0.5 * vertebra["height_mm"], vertebra["level"]
        assert labelled[nearest].level == vertebra["level"]
    entries = report_entries(labelled)
    # Report order is cranial → caudal; every entry is in the frame of one of the sagittal series.
    assert [e.centroid_mm[2] for e in entries] == sorted((e.centroid_mm[2] for e in entries), reverse=True)
    assert {e.series_instance_uid for e in entries} <= set(uids)


def _crop(stack: SagittalStack, slices: slice, rows: slice) -> SagittalStack:
    start = np.array([slices.start or 0, rows.start or 0, 0], dtype=float)
    affine = stack.geometry.affine.copy()
    affine[:3, 3] = stack.geometry.index_to_lps(start)
    pixels = stack.pixels[slices, rows]
    return SagittalStack(stack.series_instance_uid, pixels, VolumeGeometry(affine, pixels.shape))


def test_single_slice_and_two_vertebra_fields_of_view_give_partial_results(lumbar_stacks) -> None:
    stacks, truth = lumbar_stacks
    detector, appearance, context = _networks()
    stack = stacks[0]
    middle = stack.pixels.shape[0] // 2
    one_slice = _crop(stack, slice(middle, middle + 1), slice(None))
    labelled, _ = label_vertebrae(detect_vertebrae([one_slice], detector), [one_slice], appearance, context)
    assert len(labelled) >= 3  # a mid-sagittal slice alone still shows the bodies

    # About two bodies' height of image (L4 and L5 region).
    l4 = next(v for v in truth["vertebrae"] if v["level"] == "L4")
    row = int(stack.geometry.lps_to_index(np.asarray(l4["centroid_mm"])[None])[0, 1])
    spacing = stack.geometry.spacing_mm[1]
    half = int(round(1.2 * l4["height_mm"] / spacing))
    small = _crop(stack, slice(None), slice(max(row - half, 0), row + half))
    fused = detect_vertebrae([small], detector)
    labelled, warnings = label_vertebrae(fused, [small], appearance, context)
    assert len(labelled) <= 3
    if len(fused) < 3:
        assert [w.code for w in warnings] == ["FEW_VERTEBRAE"]


def test_no_sagittal_series_is_a_warning_not_an_error(generated_study) -> None:
    study_folder, _ = generated_study
    scan = scan_study_folder(study_folder)
    decisions = [d for d in assign_roles(scan.series) if d.role == "ax_t2"]
    stacks, warnings = sagittal_stacks(scan, decisions)
    assert stacks == []
    assert [w.code for w in warnings] == ["NO_SAGITTAL_SERIES"]
    detector, appearance, context = _networks()
    assert detect_vertebrae([], detector) == []
    assert label_vertebrae([], [], appearance, context) == ([], [])
