"""Synthetic study generator: determinism, DICOM geometry read back with pydicom, contrast physics,
selection roles, multi-stack axials, compressed syntaxes, in-view flags, Bilsky entries and the CLI."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from operators.core.geometry import VolumeGeometry, orientation_vectors
from operators.core.gradings import BILSKY_CT_CLASSES, BILSKY_MR_GRADES
from operators.core.levels import is_level
from operators.core.series_roles import ROLES
from training.__main__ import main as training_main
from training.synthetic.acquisition import rotation_between
from training.synthetic.study import StudyConfig, body_outline_mm, generate_study

LUMBAR_CONFIG = StudyConfig(
    field_of_view="lumbar",
    series_kinds=("sag_t1", "sag_t2", "sag_stir", "ax_t2", "localizer"),
    duplicates=("repeat_sag_t2",),
    axial_mode="angled",
    layout="nested",
    max_oblique_deg=12.0,  # oblique enough to test geometry, not so much that no body fits the slab
)


@dataclass
class Stack:
    """One orientation of a series read back from disk, sorted by position along the normal."""

    geometry: VolumeGeometry
    pixels: np.ndarray  # (S, R, C) physical values (RescaleSlope/Intercept applied)
    datasets: list[pydicom.Dataset]


def read_study(study_dir: Path) -> dict[str, list[Stack]]:
    """Every series under ``study_dir`` (any layout), split into stacks by ImageOrientationPatient."""
    by_series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted(p for p in study_dir.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        by_series[str(ds.SeriesInstanceUID)].append(ds)
    series: dict[str, list[Stack]] = {}
    for uid, datasets in by_series.items():
        by_orientation: dict[tuple[float, ...], list[pydicom.Dataset]] = defaultdict(list)
        for ds in datasets:
            # DWI b-values share positions: keep them apart as separate stacks.
            orientation = tuple(round(float(v), 4) for v in ds.ImageOrientationPatient)
            key = orientation + (float(ds.get("DiffusionBValue", -1)),)
            by_orientation[key].append(ds)
        stacks = []
        for group in by_orientation.values():
            _, _, normal = orientation_vectors([float(v) for v in group[0].ImageOrientationPatient])
            group.sort(key=lambda d: float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])))
            first = np.array([float(v) for v in group[0].ImagePositionPatient])
            step = (np.array([float(v) for v in group[1].ImagePositionPatient]) - first) if len(group) > 1 \
                else float(group[0].SliceThickness)
            geometry = VolumeGeometry.from_dicom([float(v) for v in group[0].ImageOrientationPatient], first,
                                                 [float(v) for v in group[0].PixelSpacing],
                                                 (len(group), int(group[0].Rows), int(group[0].Columns)), step)
            pixels = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in group])
            stacks.append(Stack(geometry, pixels, group))
        series[uid] = stacks
    return series


def sample(stack: Stack, point_mm: np.ndarray, radius: int = 1) -> float:
    """Median of the (2r+1)² in-plane neighbourhood around the voxel nearest ``point_mm``."""
    k, r, c = np.round(stack.geometry.lps_to_index(point_mm)).astype(int)
    patch = stack.pixels[k, max(r - radius, 0) : r + radius + 1, max(c - radius, 0) : c + radius + 1]
    return float(np.median(patch))


@pytest.fixture(scope="module")
def lumbar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, list[Stack]]]:
    out = tmp_path_factory.mktemp("lumbar")
    truth = generate_study(3, out, LUMBAR_CONFIG)
    return out, truth, read_study(out / "study")


def series_of(truth: dict, kind: str) -> list[dict]:
    return [s for s in truth["series"] if s["kind"] == kind]


def test_outputs_and_truth_schema(lumbar: tuple[Path, dict, dict]) -> None:
    out, truth, series = lumbar
    assert json.loads((out / "truth.json").read_text()) == truth
    assert (out / "report.txt").read_text() == truth["report_text"] and truth["report_text"]
    assert truth["schema"] == "spine-map-synthetic-truth/1" and truth["field_of_view"] == "lumbar"
    assert {s["series_instance_uid"] for s in truth["series"]} == set(series)
    sop_uids = [str(d.SOPInstanceUID) for stacks in series.values() for stack in stacks for d in stack.datasets]
    assert len(set(sop_uids)) == len(sop_uids)
    for entry in truth["series"]:
        assert entry["expected_role"] in ROLES
        assert entry["n_instances"] == sum(len(s.datasets) for s in series[entry["series_instance_uid"]])
        first = series[entry["series_instance_uid"]][0].datasets[0]
        assert str(first.SeriesDescription) == entry["description"]
        assert (int(first.Rows), int(first.Columns)) == (entry["rows"], entry["columns"])
        assert str(first.file_meta.TransferSyntaxUID) == entry["transfer_syntax"]
    for vertebra in truth["vertebrae"]:
        assert is_level(vertebra["level"]) and len(vertebra["corners_mm"]) == 4
    assert {d["level"] for d in truth["discs"] if "rsna" in d} <= {"L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1", "L5/L6",
                                                                   "L6/S1"}


def test_same_seed_same_study(tmp_path: Path, lumbar: tuple[Path, dict, dict]) -> None:
    out, truth, series = lumbar
    again = generate_study(3, tmp_path, LUMBAR_CONFIG)
    assert again == truth
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "study").rglob("*")) == \
        sorted(p.relative_to(out) for p in (out / "study").rglob("*"))
    for uid, stacks in read_study(tmp_path / "study").items():
        for stack, reference in zip(stacks, series[uid]):
            assert [d.SOPInstanceUID for d in stack.datasets] == [d.SOPInstanceUID for d in reference.datasets]
            np.testing.assert_array_equal(stack.pixels, reference.pixels)
    different = generate_study(4, tmp_path / "other", StudyConfig(series_kinds=("localizer",)))
    assert different["study_instance_uid"] != truth["study_instance_uid"]


def test_roles_follow_the_selection_rules(lumbar: tuple[Path, dict, dict]) -> None:
    _, truth, _ = lumbar
    kept = {s["expected_role"] for s in truth["series"]} - {"unused"}
    assert kept == {"sag_t1", "sag_t2", "sag_stir", "ax_t2"}
    assert all(s["expected_role"] == "unused" for s in series_of(truth, "localizer"))
    # The repeated sagittal T2 (same grid, higher SeriesNumber) is kept; the first one names it.
    first, repeat = sorted(series_of(truth, "sag_t2"), key=lambda s: s["series_number"])
    assert repeat["expected_role"] == "sag_t2" and first["expected_role"] == "unused"
    assert f"series {repeat['series_number']}" in first["role_reason"]


def test_contrast_at_truth_positions(lumbar: tuple[Path, dict, dict]) -> None:
    """Vertebral marrow is brighter than CSF on T1 and darker on T2 and STIR, at the truth centroids."""
    _, truth, series = lumbar
    checked = 0
    for kind, marrow_brighter in (("sag_t1", True), ("sag_t2", False), ("sag_stir", False)):
        entry = next(s for s in series_of(truth, kind) if s["expected_role"] != "unused")
        stack = series[entry["series_instance_uid"]][0]
        for vertebra in truth["vertebrae"]:
            centroid = np.array(vertebra["centroid_mm"])
            # The thecal sac lies behind the body: below the conus it is CSF around thin nerve roots.
            csf = centroid - np.array(vertebra["anterior_axis"]) * (vertebra["depth_mm"] / 2 + 7.0)
            if vertebra["level"] not in ("L3", "L4", "L5") or not stack.geometry.contains([centroid, csf], -1).all():
                continue
            marrow_signal, csf_signal = sample(stack, centroid, 2), sample(stack, csf, 1)
            assert (marrow_signal > csf_signal) == marrow_brighter, (kind, vertebra["level"], marrow_signal, csf_signal)
            checked += 1
    assert checked >= 3


def test_fully_in_view_matches_geometry(lumbar: tuple[Path, dict, dict]) -> None:
    """A vertebra is in view exactly when its whole body outline lies in the read-back sagittal volume."""
    _, truth, series = lumbar
    sagittal = [s for s in truth["series"] if s["plane"] == "sagittal" and s["n_stacks"] == 1]
    assert sagittal
    for entry in sagittal:
        geometry = series[entry["series_instance_uid"]][0].geometry
        flags = [v["fully_in_view"][entry["series_instance_uid"]] for v in truth["vertebrae"]]
        assert any(flags) and not all(flags)  # a lumbar FOV holds some vertebrae, never the whole spine
        for vertebra, flag in zip(truth["vertebrae"], flags):
            outline = body_outline_mm(np.array(vertebra["corners_mm"]), np.array(vertebra["superior_axis"]),
                                      np.array(vertebra["anterior_axis"]), vertebra["width_mm"])
            inside = geometry.contains(outline, 0.5)
            assert flag == bool(inside.all()), vertebra["level"]
            if vertebra["level"] in ("C3", "T5"):
                assert not flag and not geometry.contains(vertebra["centroid_mm"])  # far outside a lumbar FOV


def test_multistack_axial_angled_to_discs(lumbar: tuple[Path, dict, dict]) -> None:
    _, truth, series = lumbar
    (entry,) = series_of(truth, "ax_t2")
    stacks = series[entry["series_instance_uid"]]
    assert entry["n_stacks"] == len(stacks) >= 2
    orientations = {tuple(round(float(v), 3) for v in s.datasets[0].ImageOrientationPatient) for s in stacks}
    assert len(orientations) >= 2
    assert all(s.geometry.plane == "axial" for s in stacks)
    # One Bilsky entry per axial image, naming its SOP instance, InstanceNumber and level.
    images = {str(d.SOPInstanceUID): int(d.InstanceNumber) for s in stacks for d in s.datasets}
    entries = [b for b in truth["bilsky"] if b["series_instance_uid"] == entry["series_instance_uid"]]
    assert {b["sop_instance_uid"]: b["instance_number"] for b in entries} == images
    assert all(b["grade"] in BILSKY_MR_GRADES and b["modality"] == "MR" for b in entries)
    assert all(is_level(b["level"]) or "/" in b["level"] for b in entries)
    # Each stack is centred on its disc: at least one image of every stack lies in a disc space.
    level_of = {b["sop_instance_uid"]: b["level"] for b in entries}
    assert all(any("/" in level_of[str(d.SOPInstanceUID)] for d in s.datasets) for s in stacks)


def test_file_order_is_not_position_order(lumbar: tuple[Path, dict, dict]) -> None:
    out, truth, series = lumbar
    entry = next(s for s in truth["series"] if s["kind"] == "sag_t1")
    stack = series[entry["series_instance_uid"]][0]
    by_position = [Path(d.filename).name for d in stack.datasets]
    assert by_position != sorted(by_position)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGBaseline8Bit])
def test_compressed_syntaxes_decode(tmp_path: Path, syntax: str) -> None:
    config = StudyConfig(series_kinds=("localizer",), layout="flat")
    reference = read_study_one(generate_study(5, tmp_path / "plain", replace_syntax(config, ExplicitVRLittleEndian)),
                               tmp_path / "plain")
    truth = generate_study(5, tmp_path / "packed", replace_syntax(config, syntax))
    assert truth["series"][0]["transfer_syntax"] == syntax
    packed = read_study_one(truth, tmp_path / "packed")
    for a, b in zip(packed, reference):
        assert str(a.datasets[0].file_meta.TransferSyntaxUID) == syntax
        if syntax == JPEGBaseline8Bit:
            slope = float(a.datasets[0].RescaleSlope)
            assert np.abs(a.pixels - b.pixels).mean() < 2 * slope
        else:
            np.testing.assert_array_equal(a.pixels, b.pixels)


def replace_syntax(config: StudyConfig, syntax: str) -> StudyConfig:
    return StudyConfig(**{**config.__dict__, "transfer_syntax": syntax})


def read_study_one(truth: dict, out: Path) -> list[Stack]:
    return read_study(out / "study")[truth["series"][0]["series_instance_uid"]]


def test_ct_hounsfield_units_and_roles(tmp_path: Path) -> None:
    config = StudyConfig(field_of_view="cervical", series_kinds=("ct_axial", "ct_sag_reformat"),
                         transfer_syntax=RLELossless)
    truth = generate_study(8, tmp_path, config)
    series = read_study(tmp_path / "study")
    (axial,) = series_of(truth, "ct_axial")
    (reformat,) = series_of(truth, "ct_sag_reformat")
    assert axial["expected_role"] == "ct_axial" and reformat["expected_role"] == "unused"
    assert series[reformat["series_instance_uid"]][0].datasets[0].ImageType[0] == "DERIVED"
    stack = series[axial["series_instance_uid"]][0]
    assert float(stack.datasets[0].RescaleIntercept) == -1024.0 and stack.datasets[0].RescaleType == "HU"
    assert stack.pixels.min() >= -1024 and np.all(stack.pixels == np.round(stack.pixels))
    corners = stack.geometry.index_to_lps([[s, r, c] for s in (0,) for r in (0, 511) for c in (0, 511)])
    assert np.median([sample(stack, p, 0) for p in corners]) < -900  # air outside the neck
    bone = [sample(stack, v["centroid_mm"], 2) for v in truth["vertebrae"]
            if v["level"].startswith("C") and stack.geometry.contains(v["centroid_mm"])]
    assert len(bone) >= 3 and np.median(bone) > 100  # cancellous bone
    entries = [b for b in truth["bilsky"] if b["series_instance_uid"] == axial["series_instance_uid"]]
    assert len(entries) == axial["n_instances"] and all(b["grade"] in BILSKY_CT_CLASSES for b in entries)


def test_whole_spine_stations_are_all_kept(tmp_path: Path) -> None:
    config = StudyConfig(field_of_view="whole", series_kinds=("sag_t2",), whole_spine_stations=2, duplicates=())
    truth = generate_study(11, tmp_path, config)
    stations = series_of(truth, "sag_t2")
    assert len(stations) == 2 and all(s["expected_role"] == "sag_t2" for s in stations)
    (low_a, high_a), (low_b, high_b) = (s["cranio_caudal_range_mm"] for s in stations)
    overlap = min(high_a, high_b) - max(low_a, low_b)
    assert 0 < overlap < 0.5 * min(high_a - low_a, high_b - low_b)
    in_view = {v["level"] for v in truth["vertebrae"] if any(v["fully_in_view"].values())}
    assert {"C3", "T6", "L3"} <= in_view


def test_cli_generate_writes_documented_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert training_main(["generate", "--seed", "21", "--count", "1", "--out", str(tmp_path), "--fov", "cervical",
                          "--modality", "mr", "--rsna-layout"]) == 0
    study = tmp_path / "study_000021"
    truth = json.loads((study / "truth.json").read_text())
    assert truth["seed"] == 21 and truth["field_of_view"] == "cervical"
    assert (study / "report.txt").read_text() == truth["report_text"]
    assert sum(1 for p in (study / "study").rglob("*") if p.is_file()) == sum(s["n_instances"] for s in truth["series"])
    assert (tmp_path / "rsna" / "train.csv").is_file()
    assert "seed 21" in capsys.readouterr().out


def test_preference_rule_on_duplicates(tmp_path: Path) -> None:
    """A lower-resolution copy on the same FOV loses to the finer series, whatever the numbering."""
    config = StudyConfig(field_of_view="lumbar", series_kinds=("sag_t2",), duplicates=("lowres_sag_t2",))
    truth = generate_study(2, tmp_path, config)
    fine, coarse = sorted(series_of(truth, "sag_t2"), key=lambda s: s["pixel_spacing_mm"][0])
    assert fine["expected_role"] == "sag_t2" and coarse["expected_role"] == "unused"
    assert f"series {fine['series_number']}" in coarse["role_reason"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(lambda v: np.linalg.norm(v) > 0.1),
    st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(lambda v: np.linalg.norm(v) > 0.1),
)
# Nearly opposite, exactly opposite and equal vectors: where a Rodrigues form breaks down.
@example(a=[0.0, 1.0, 0.0], b=[0.0, -1.0, 0.001])
@example(a=[0.0, 1.0, 0.0], b=[0.0, -1.0, 0.0])
@example(a=[0.3, -0.2, 0.9], b=[0.3, -0.2, 0.9])
def test_rotation_between_maps_a_onto_b(a: list[float], b: list[float]) -> None:
    rotation = rotation_between(np.array(a), np.array(b))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation @ (np.array(a) / np.linalg.norm(a)), np.array(b) / np.linalg.norm(b), atol=1e-9)


def test_composed_dixon_water_series_stays_recognisably_fat_suppressed(tmp_path):
    """A whole-spine series composed from stations is DERIVED, but must keep what its images are:
    a composed Dixon water T2 without DIXON\\WATER would carry no fat-suppression tag at all."""
    from operators.core.dicom_io import scan_study_folder
    from operators.core.series_roles import assign_roles

    config = StudyConfig(field_of_view="whole", whole_spine_stations=1, series_kinds=("sag_t2", "sag_t2_fs"))
    truth = generate_study(2, tmp_path, config)  # seed 2 makes the T2 FS a Dixon water image
    scan = scan_study_folder(tmp_path / "study")
    fat_suppressed = next(s for s in truth["series"] if s["kind"] == "sag_t2_fs")
    image_type = scan.series_by_uid(fat_suppressed["series_instance_uid"]).tags.image_type
    assert {"DIXON", "WATER", "COMPOSED"} <= set(image_type)
    roles = {d.series_instance_uid: d.role for d in assign_roles(scan.series)}
    assert all(roles[s["series_instance_uid"]] == s["expected_role"] for s in truth["series"])


def test_bilsky_sac_centre_lies_in_the_canal_where_the_spine_is_tilted(tmp_path: Path) -> None:
    """Seed 841008 images a thoracolumbar spine tilted ~60° against its axial CT planes. The sac centre
    of each image is where the sac's centreline crosses the plane; the sac point level with the body
    axis's crossing, projected into the plane, had landed inside the vertebral bodies there."""
    truth = generate_study(841_008, tmp_path, StudyConfig(series_kinds=("ct_axial",), cancer=True, ct_contrast=True))
    body = {v["level"]: v for v in truth["vertebrae"]}
    tilted = 0
    for entry in truth["bilsky"]:
        vertebra = body.get(entry["level"])
        if vertebra is None:
            continue  # a disc level
        offset = np.asarray(entry["sac_centre_mm"]) - vertebra["centroid_mm"]
        assert offset @ np.asarray(vertebra["anterior_axis"]) < -0.5 * vertebra["depth_mm"], entry["level"]  # behind the body
        tilted += abs(vertebra["superior_axis"][2]) < 0.8
    assert tilted >= 10  # the test does image a tilted spine
