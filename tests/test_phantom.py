"""Tests of the synthetic spine phantom (training/synthetic/phantom.py).

Image-based checks measure the *rendered* signal / rendered tissue at points (never the labels
they are checking), on planes placed with the phantom's own truth axes.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.core.geometry import VolumeGeometry
from operators.core.gradings import BILSKY_MR_GRADES, SPINENET_GRADINGS, rsna_severity_from_stenosis_grade
from operators.core.levels import LEVELS, RSNA_DISCS, discs_between, levels_with_transitional
from training.synthetic.dicom_writer import PatientStudy, write_series
from training.synthetic.phantom import AnatomyConfig, CTContrast, MRSequence, SpinePhantom, make_phantom
from training.synthetic.tissue import Tissue, ct_numbers, sample_tissue_table

T1 = MRSequence(repetition_time_ms=550.0, echo_time_ms=10.0)
T2 = MRSequence(repetition_time_ms=3500.0, echo_time_ms=100.0)
STIR = MRSequence(repetition_time_ms=4000.0, echo_time_ms=50.0, inversion_time_ms=160.0)
T2_3T = MRSequence(repetition_time_ms=3500.0, echo_time_ms=100.0, field_strength_t=3.0)


@lru_cache(maxsize=None)
def phantom(seed: int, **config: float | bool | str | None) -> SpinePhantom:
    """One phantom per (seed, config), shared by the tests (phantoms are immutable)."""
    return make_phantom(np.random.default_rng(seed), AnatomyConfig(**config))


def standard() -> SpinePhantom:
    return phantom(3, scoliosis_deg=12.0, pathology_rate=0.5, cancer=False)


def by_level(ph: SpinePhantom) -> dict:
    return {v.level: v for v in ph.vertebrae}


def axial_grid(ph: SpinePhantom, level: str, half_mm: float = 30.0, step: float = 0.25) -> np.ndarray:
    """(n, n, 3) grid in the axial plane through a vertebra's centroid (rows anterior→posterior)."""
    v = by_level(ph)[level]
    left = np.cross(v.superior_axis, v.anterior_axis)
    centre = v.centroid_mm - (v.depth_mm / 2 + 12.0) * v.anterior_axis  # around the canal
    u = np.arange(-half_mm, half_mm + step / 2, step)
    return centre + u[:, None, None] * -v.anterior_axis + u[None, :, None] * left


def test_same_seed_same_phantom_and_different_seeds_differ() -> None:
    a = make_phantom(np.random.default_rng(11), AnatomyConfig())
    b = make_phantom(np.random.default_rng(11), AnatomyConfig())
    c = make_phantom(np.random.default_rng(12), AnatomyConfig())
    points = np.random.default_rng(0).normal(0, 80, (2000, 3)) + a.vertebrae[20].centroid_mm
    assert json.dumps(a.to_json()) == json.dumps(b.to_json())
    np.testing.assert_array_equal(a.render(points, T2), b.render(points, T2))
    assert [v.to_json() for v in a.vertebrae] == [v.to_json() for v in b.vertebrae]
    assert not np.allclose(a.vertebrae[20].centroid_mm, c.vertebrae[20].centroid_mm)


def test_every_standard_level_once_in_order_with_discs_between() -> None:
    ph = standard()
    assert [v.level for v in ph.vertebrae] == list(LEVELS)
    assert [d.level for d in ph.discs] == [d for d in discs_between(LEVELS) if d != "C1/C2"]


@pytest.mark.parametrize("transitional,extra", [("L6", "L6"), ("T13", "T13")])
def test_transitional_level_present_when_configured(transitional: str, extra: str) -> None:
    ph = phantom(5, transitional=transitional)
    levels = [v.level for v in ph.vertebrae]
    assert levels == list(levels_with_transitional(thirteen_thoracic=extra == "T13", six_lumbar=extra == "L6"))
    assert ph.to_json()["transitional"] == transitional
    names = [d.level for d in ph.discs]
    if extra == "L6":
        assert "L5/L6" in names and "L6/S1" in names and "L5/S1" not in names
    # An L6 vertebral body is really rendered: bone HU at its centre region's cortex line.
    v = by_level(ph)[extra]
    line = v.centroid_mm + np.linspace(0, v.depth_mm, 200)[:, None] * v.anterior_axis
    assert ph.render(line, CTContrast()).max() > 700


def test_centroids_run_cranio_caudally_along_the_axis() -> None:
    ph = standard()
    vertebrae = ph.vertebrae
    for upper, lower in zip(vertebrae[:-1], vertebrae[1:]):
        step = lower.centroid_mm - upper.centroid_mm
        assert step @ upper.superior_axis < -5.0, (upper.level, lower.level)
    axis = ph.spine_axis_points_mm
    assert axis.shape[1] == 3 and len(axis) > 500
    steps = np.diff(axis, axis=0)
    assert np.all(np.linalg.norm(steps, axis=1) < 1.5)
    # Cranial → caudal: the first axis point is nearest C1, the last beyond S1.
    assert np.linalg.norm(axis[0] - vertebrae[0].centroid_mm) < np.linalg.norm(axis[-1] - vertebrae[0].centroid_mm)


def test_corners_surround_the_centroid_in_the_documented_order() -> None:
    for v in standard().vertebrae:
        rel = v.corners_mm - v.centroid_mm
        up = rel @ v.superior_axis
        front = rel @ v.anterior_axis
        assert up[0] > 0 and front[0] > 0, v.level  # superior_anterior
        assert up[1] > 0 and front[1] < 0, v.level  # superior_posterior
        assert up[2] < 0 and front[2] < 0, v.level  # inferior_posterior
        assert up[3] < 0 and front[3] > 0, v.level  # inferior_anterior
        # Mid-sagittal plane (up to the slight bend of a scoliotic frame across the body).
        assert np.allclose(rel @ np.cross(v.superior_axis, v.anterior_axis), 0.0, atol=2.5)


def test_body_centroids_lie_in_marrow() -> None:
    """The truth centroid is inside the vertebral body, in marrow: no shell or artefact sits on it
    (the body's radial distance is undefined exactly on its axis)."""
    phantom = make_phantom(np.random.default_rng(5), AnatomyConfig(pathology_rate=0.0, cancer=False))
    bodies = [v for v in phantom.vertebrae if v.level not in ("C1",)]  # C1 has no body
    labels = phantom.tissue_labels(np.array([v.centroid_mm for v in bodies]))
    assert set(labels.tolist()) == {int(Tissue.MARROW)}


def test_vertebral_sizes_grow_cranio_caudally() -> None:
    v = by_level(standard())
    assert v["C4"].height_mm < v["T6"].height_mm < v["L3"].height_mm
    assert v["C4"].depth_mm < v["T6"].depth_mm < v["L3"].depth_mm
    assert 20.0 < v["L3"].height_mm < 35.0 and 38.0 < v["L3"].width_mm < 60.0


def _tissue_points(ph: SpinePhantom, tissue: Tissue, grid: np.ndarray) -> np.ndarray:
    labels = ph.tissue_labels(grid.reshape(-1, 3))
    return grid.reshape(-1, 3)[labels == tissue]


def test_mr_contrasts_behave_like_clinical_sequences() -> None:
    ph = standard()
    v = by_level(ph)["T8"]
    left = np.cross(v.superior_axis, v.anterior_axis)
    u = np.arange(-60, 60, 0.5)
    grid = v.centroid_mm + u[:, None, None] * v.superior_axis + u[None, :, None] * v.anterior_axis
    grid = np.concatenate([grid, grid + 2.0 * left])
    med = {}
    for tissue in (Tissue.CSF, Tissue.CORD, Tissue.MARROW, Tissue.FAT, Tissue.MUSCLE):
        pts = _tissue_points(ph, tissue, grid)
        assert len(pts) > 20, tissue
        signals = ph.render_many(pts, [T1, T2, STIR])
        med[tissue] = np.median(signals, axis=0)
    t1, t2, stir = 0, 1, 2
    assert med[Tissue.CSF][t2] > 1.5 * med[Tissue.CORD][t2]  # CSF bright on T2
    assert med[Tissue.CSF][t1] < med[Tissue.MARROW][t1]  # dark on T1
    assert med[Tissue.CSF][t1] < med[Tissue.CORD][t1]
    assert med[Tissue.FAT][t1] > med[Tissue.MUSCLE][t1]  # fat bright on T1 …
    assert med[Tissue.FAT][stir] < 0.5 * med[Tissue.CSF][stir]  # … suppressed on STIR
    assert med[Tissue.FAT][stir] < med[Tissue.FAT][t2]
    # Same points at 3 T render, and fat-saturated T2 darkens fat.
    fat = _tissue_points(ph, Tissue.FAT, grid)
    fs = MRSequence(3500.0, 90.0, fat_suppressed=True)
    assert np.median(ph.render(fat, fs)) < 0.3 * np.median(ph.render(fat, T2_3T))


def test_ct_numbers_of_bone_soft_tissue_and_air() -> None:
    ph = standard()
    v = by_level(ph)["L2"]
    line = v.centroid_mm + np.linspace(0, v.depth_mm / 2 + 4, 400)[:, None] * v.anterior_axis
    hu = ph.render(line, CTContrast())
    assert hu.max() > 700  # anterior cortex
    assert 40 < np.median(hu[:100]) < 450  # cancellous centre
    far = v.centroid_mm + 900.0 * v.anterior_axis
    assert ph.render(far[None], CTContrast())[0] < -900  # air outside the body
    assert ph.render(line[:5], CTContrast(kvp=80)).mean() >= hu[:5].mean() - 50


def test_iv_contrast_enhances_tumour_and_blood_but_not_csf_or_fat() -> None:
    """A portal venous staging CT: epidural tumour stands out from the CSF and cord it displaces."""
    table = sample_tissue_table(np.random.default_rng(3), age_years=60.0)
    plain, enhanced = ct_numbers(table, 120.0), ct_numbers(table, 120.0, iv_contrast=1.0)
    rise = enhanced - plain
    assert rise[Tissue.FLOWING_BLOOD] > 100.0 and rise[Tissue.TUMOUR_SOFT] > 40.0
    assert rise[Tissue.CSF] == rise[Tissue.FAT] == rise[Tissue.CORTICAL_BONE] == 0.0
    assert enhanced[Tissue.TUMOUR_SOFT] - enhanced[Tissue.CORD] > plain[Tissue.TUMOUR_SOFT] - plain[Tissue.CORD] + 40.0
    assert (ct_numbers(table, 100.0, 1.0) - ct_numbers(table, 100.0))[Tissue.TUMOUR_SOFT] > rise[Tissue.TUMOUR_SOFT]  # iodine at low kVp


def _nucleus_t2(ph: SpinePhantom, disc) -> float:
    return float(ph.render(disc.centre_mm[None], T2)[0])


def test_degenerated_nucleus_darker_on_t2_than_healthy() -> None:
    healthy, black = [], []
    for seed in range(40):
        ph = phantom(seed, pathology_rate=0.6)
        for disc in ph.discs:
            grade = disc.gradings["pfirrmann"]
            if grade == 1:
                healthy.append(_nucleus_t2(ph, disc))
            elif grade == 5:
                black.append(_nucleus_t2(ph, disc))
        if len(healthy) >= 3 and len(black) >= 3:
            break
    assert healthy and black
    assert np.median(black) < 0.6 * np.median(healthy)


def _find(predicate, configs, seeds=range(60)):
    for seed in seeds:
        ph = phantom(seed, **configs)
        found = predicate(ph)
        if found:
            return ph, found
    pytest.fail("no phantom with the wanted property in the seed range")


def _canal_section(ph: SpinePhantom, level: str) -> dict[str, float]:
    grid = axial_grid(ph, level)
    labels = ph.tissue_labels(grid.reshape(-1, 3)).reshape(grid.shape[:2])
    area = 0.25**2
    cord_rows = np.nonzero((labels == Tissue.CORD).any(axis=1))[0]
    cord_cols = np.nonzero((labels == Tissue.CORD).any(axis=0))[0]
    return {
        "cord_width_mm": float((cord_cols.max() - cord_cols.min() + 1) * 0.25) if len(cord_cols) else 0.0,
        "csf_mm2": float((labels == Tissue.CSF).sum() * area),
        "cord_mm2": float((labels == Tissue.CORD).sum() * area),
        "cord_ap_mm": float((cord_rows.max() - cord_rows.min() + 1) * 0.25) if len(cord_rows) else 0.0,
        "tumour_mm2": float((labels == Tissue.TUMOUR_SOFT).sum() * area),
    }


def _clean_neighbour(ph: SpinePhantom, level: str) -> str:
    """Nearest level in the same region without epidural disease or metastasis (a normal canal)."""
    names = [v.level for v in ph.vertebrae]
    clean = [v.level for v in ph.vertebrae if v.level[0] == level[0] and v.level not in ("C1", "C2")
             and v.lesions["epidural_bilsky"] == "0" and v.lesions["metastasis_pattern"] == "none"
             and abs(names.index(v.level) - names.index(level)) >= 2]
    return min(clean, key=lambda other: abs(names.index(other) - names.index(level)))


def test_bilsky_3_section_has_compressed_cord_without_csf() -> None:
    def grade3(ph: SpinePhantom):
        return [v.level for v in ph.vertebrae if v.lesions["epidural_bilsky"] == "3"]

    ph, levels = _find(grade3, {"cancer": True})
    level = levels[0]
    assert ph.bilsky_grade_at(by_level(ph)[level].centroid_mm) == "3"
    assert by_level(ph)[level].lesions["cord_compression"] is True
    section = _canal_section(ph, level)
    assert section["csf_mm2"] < 1.0
    assert section["tumour_mm2"] > 20.0
    assert section["cord_mm2"] > 5.0
    normal = _canal_section(ph, _clean_neighbour(ph, level))
    assert normal["csf_mm2"] > 20.0
    assert section["cord_ap_mm"] < 0.6 * normal["cord_ap_mm"]


@pytest.mark.parametrize("grade", ["1b", "2"])
def test_bilsky_intermediate_grades_match_the_rendered_section(grade: str) -> None:
    def with_grade(ph: SpinePhantom):
        return [v.level for v in ph.vertebrae if v.lesions["epidural_bilsky"] == grade
                and ph.bilsky_grade_at(v.centroid_mm) == grade]

    ph, levels = _find(with_grade, {"cancer": True})
    section = _canal_section(ph, levels[0])
    assert section["tumour_mm2"] > 2.0 and section["csf_mm2"] > 2.0  # CSF still visible
    normal = _canal_section(ph, _clean_neighbour(ph, levels[0]))
    flatness = section["cord_ap_mm"] / section["cord_width_mm"]
    normal_flatness = normal["cord_ap_mm"] / normal["cord_width_mm"]
    if grade == "1b":
        assert flatness > 0.85 * normal_flatness  # cord not compressed
    else:
        assert flatness < 0.85 * normal_flatness  # cord flattened


def test_levels_and_grades_along_the_axis() -> None:
    ph = standard()
    for v in ph.vertebrae[1:]:
        level, distance = ph.level_at(v.centroid_mm)
        assert level == v.level and abs(distance) < 1.0
        assert ph.bilsky_grade_at(v.centroid_mm) in BILSKY_MR_GRADES
    for disc in ph.discs:
        level, distance = ph.level_at(disc.centre_mm)
        assert level == disc.level and abs(distance) < 1.0
    v = by_level(ph)["L3"]
    above = v.centroid_mm + 5.0 * v.superior_axis
    assert ph.level_at(above)[1] == pytest.approx(5.0, abs=0.5)  # positive = cranial


def test_gradings_and_rsna_labels_are_consistent() -> None:
    ph = phantom(2, pathology_rate=0.9)
    for disc in ph.discs:
        assert set(disc.gradings) == set(SPINENET_GRADINGS)
        for name, value in disc.gradings.items():
            assert value in SPINENET_GRADINGS[name]
        assert np.isclose(np.linalg.norm(disc.normal), 1.0)
        if disc.level in RSNA_DISCS:
            assert disc.rsna["spinal_canal_stenosis"] == rsna_severity_from_stenosis_grade(
                disc.gradings["central_canal_stenosis"])
            severity = disc.details["foraminal_severity"]
            assert disc.gradings["foraminal_stenosis_left"] == int(severity["left"] >= 2)
            assert disc.rsna["left_neural_foraminal_narrowing"] == rsna_severity_from_stenosis_grade(severity["left"])
        else:
            assert disc.rsna == {}


def test_pathology_rate_zero_gives_a_healthy_spine() -> None:
    ph = phantom(4, pathology_rate=0.0)
    assert ph.to_json()["cancer"] is False
    for disc in ph.discs:
        g = disc.gradings
        assert g["pfirrmann"] <= 2
        assert sum(v for k, v in g.items() if k != "pfirrmann") == 0
    for v in ph.vertebrae:
        assert v.lesions["epidural_bilsky"] == "0" and not v.lesions["metastasis"] and not v.lesions["fracture"]


def test_degeneration_clusters_low_lumbar() -> None:
    lower, upper = [], []
    for seed in range(12):
        discs = {d.level: d.gradings["pfirrmann"] for d in phantom(seed, pathology_rate=0.5).discs}
        lower += [discs["L4/L5"], discs["L5/S1"]]
        upper += [discs["T4/T5"], discs["T5/T6"]]
    assert np.mean(lower) > np.mean(upper) + 0.5


def test_truth_serialises_to_json() -> None:
    ph = phantom(7, cancer=True)
    text = json.dumps({"anatomy": ph.to_json(), "vertebrae": [v.to_json() for v in ph.vertebrae],
                       "discs": [d.to_json() for d in ph.discs]})
    back = json.loads(text)
    assert back["anatomy"]["cancer"] is True
    assert any(v["lesions"]["metastasis"] for v in back["vertebrae"])
    assert all(len(v["corners_mm"]) == 4 for v in back["vertebrae"])


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(-60, 60), st.floats(-60, 60))
def test_local_frame_round_trip(position: float, a: float, l: float) -> None:
    ph = standard()
    top, bottom = ph.local_coordinates(np.stack([ph.vertebrae[1].centroid_mm, ph.vertebrae[-1].centroid_mm]))[:, 0]
    local = np.array([[top + position * (bottom - top), a, l]])
    back = ph.local_coordinates(ph.world_coordinates(local))
    np.testing.assert_allclose(back, local, atol=0.1)


def test_rendered_sagittal_t2_survives_a_dicom_round_trip(tmp_path) -> None:
    ph = standard()
    v = by_level(ph)["L3"]
    rows, cols, spacing = 160, 120, 1.0
    row_dir, col_dir = -v.superior_axis, -v.anterior_axis
    origin = v.centroid_mm - rows / 2 * spacing * row_dir - cols / 2 * spacing * col_dir
    iop = list(col_dir) + list(row_dir)
    geometry = VolumeGeometry.from_dicom(iop, origin, (spacing, spacing), (1, rows, cols), 4.0)
    s, r, c = np.meshgrid([0], np.arange(rows), np.arange(cols), indexing="ij")
    points = geometry.index_to_lps(np.stack([s.ravel(), r.ravel(), c.ravel()], axis=1))
    pixels = ph.render(points, T2).reshape(1, rows, cols)
    paths = write_series(pixels, geometry, tmp_path, modality="MR", study=PatientStudy(), series_description="t2 sag")
    ds = pydicom.dcmread(paths[0])
    image = ds.pixel_array * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    labels = ph.tissue_labels(points).reshape(rows, cols)
    assert np.median(image[labels == Tissue.CSF]) > 2 * np.median(image[labels == Tissue.MUSCLE])
