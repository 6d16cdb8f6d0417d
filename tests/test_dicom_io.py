"""Study-folder scanning and stack loading (operators/core/dicom_io.py) on real DICOM files.

Every file is written by ``write_series`` (or is deliberately broken afterwards) and read back
through ``scan_study_folder``; volumes encode their slice index in the pixel values so that the
order of loaded slices is checked, not assumed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.fileset import FileSet
from pydicom.uid import ComprehensiveSRStorage, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless
from scipy.spatial.transform import Rotation

from operators.core.dicom_io import SeriesReadError, scan_study_folder
from operators.core.geometry import VolumeGeometry
from training.synthetic.dicom_writer import PatientStudy, write_series

PATIENT = PatientStudy(patient_name="KRZYSZTOF^ULRIKA", patient_id="PID-4471-ZQ", accession_number="ACC5531XY")
IDENTIFIERS = ("KRZYSZTOF", "ULRIKA", "PID-4471-ZQ", "ACC5531XY")
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _volume(shape: tuple[int, int, int], base: float = 100.0) -> np.ndarray:
    """Pixel values that identify the slice (``base + 10·slice``) plus an in-plane ramp."""
    s, r, c = shape
    ramp = np.add.outer(np.arange(r), np.arange(c)).astype(float)
    return base + 10.0 * np.arange(s)[:, None, None] + ramp[None]


def _write(out: Path, geometry: VolumeGeometry, study: PatientStudy = PATIENT, **kwargs) -> list[Path]:
    kwargs.setdefault("modality", "MR")
    return write_series(_volume(geometry.shape), geometry, out, study=study, **kwargs)


def _codes(scan) -> list[str]:
    return [w.code for w in scan.warnings]


def _no_identifiers(scan) -> None:
    text = " ".join(w.message for w in scan.warnings)
    for identifier in IDENTIFIERS:
        assert identifier.lower() not in text.lower()


# ------------------------------------------------------------------------------------------------
# Ordering and geometry
# ------------------------------------------------------------------------------------------------
def test_slices_sorted_by_position_not_file_name_or_instance_number(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (-20.0, -100.0, 120.0), (0.8, 0.8), (9, 16, 12), 4.0)
    rng = np.random.default_rng(1)
    names = [f"{name:08x}.dcm" for name in rng.permutation(10**6)[:9]]
    _write(tmp_path / "series", geometry, instance_numbers=list(range(9, 0, -1)), file_names=names)

    scan = scan_study_folder(tmp_path)
    (series,) = scan.series
    (stack,) = series.stacks
    np.testing.assert_allclose(stack.geometry.affine, geometry.affine, atol=1e-4)
    pixels = stack.load_pixels()
    assert pixels.dtype == np.float32 and pixels.shape == (9, 16, 12)
    np.testing.assert_allclose(pixels, _volume(geometry.shape), atol=1e-3)
    assert [i.instance_number for i in stack.instances] == list(range(9, 0, -1))
    assert scan.warnings == ()


@pytest.mark.parametrize(
    "orientation, expected_plane",
    [
        # sagittal tilted 15° about the LR axis and 8° about AP (scoliosis/obliquity)
        (Rotation.from_euler("xy", [15, 8], degrees=True), "sagittal"),
        # axial angled 20° to follow a disc
        (Rotation.from_euler("x", [20], degrees=True), "axial"),
    ],
)
def test_affine_maps_known_voxel_to_known_point(tmp_path: Path, orientation: Rotation, expected_plane: str) -> None:
    base = np.array(SAGITTAL_IOP if expected_plane == "sagittal" else AXIAL_IOP, dtype=float).reshape(2, 3)
    row_dir, col_dir = orientation.apply(base)
    normal = np.cross(row_dir, col_dir)
    origin = np.array([12.5, -40.0, 75.0])
    geometry = VolumeGeometry.from_dicom([*row_dir, *col_dir], origin, (0.7, 0.9), (5, 10, 14), 3.5)
    _write(tmp_path, geometry, file_names=[f"x{k}" for k in (3, 1, 4, 0, 2)])

    (stack,) = scan_study_folder(tmp_path).series[0].stacks
    assert stack.plane == expected_plane
    expected = origin + 2 * 3.5 * normal + 3 * 0.7 * col_dir + 4 * 0.9 * row_dir
    np.testing.assert_allclose(stack.geometry.index_to_lps([2, 3, 4]), expected, atol=1e-4)
    np.testing.assert_allclose(stack.geometry.lps_to_index(expected), [2, 3, 4], atol=1e-5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    quaternion=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1),
    pixel_spacing=st.tuples(st.floats(0.3, 2.0), st.floats(0.3, 2.0)),
    step=st.floats(0.5, 8.0),
    origin=st.tuples(*[st.floats(-300, 300)] * 3),
    n_slices=st.integers(2, 6),
    seed=st.integers(0, 1000),
)
def test_geometry_round_trips_through_dicom(tmp_path_factory, quaternion, pixel_spacing, step, origin, n_slices, seed) -> None:
    rotation = Rotation.from_quat(quaternion)
    row_dir, col_dir = rotation.apply(np.array(AXIAL_IOP, dtype=float).reshape(2, 3))
    geometry = VolumeGeometry.from_dicom([*row_dir, *col_dir], origin, pixel_spacing, (n_slices, 6, 5), step)
    out = tmp_path_factory.mktemp("roundtrip")
    order = np.random.default_rng(seed).permutation(n_slices)
    _write(out, geometry, file_names=[f"f{k}.dcm" for k in order], instance_numbers=[int(k) + 1 for k in order])

    (stack,) = scan_study_folder(out).series[0].stacks
    # DICOM stores directions to 8 decimals and positions to 6: compare at that precision.
    np.testing.assert_allclose(stack.geometry.affine, geometry.affine, atol=1e-4)
    np.testing.assert_allclose(stack.load_pixels(), _volume(geometry.shape), atol=1e-3)


def test_single_slice_uses_slice_thickness(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1.0, 1.0), (1, 8, 8), 2.0)
    _write(tmp_path, geometry, slice_thickness_mm=5.5)
    (stack,) = scan_study_folder(tmp_path).series[0].stacks
    assert stack.n_slices == 1
    np.testing.assert_allclose(stack.geometry.spacing_mm, [5.5, 1.0, 1.0])
    np.testing.assert_allclose(stack.geometry.affine[:3, 0], 5.5 * stack.geometry.normal, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Multi-stack series
# ------------------------------------------------------------------------------------------------
def test_axial_series_angled_to_three_discs_gives_three_stacks(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    angles = (-12.0, 0.0, 14.0)
    for k, angle in enumerate(angles):
        row_dir, col_dir = Rotation.from_euler("x", angle, degrees=True).apply(np.array(AXIAL_IOP, float).reshape(2, 3))
        geometry = VolumeGeometry.from_dicom([*row_dir, *col_dir], (-80, -80, -40.0 * k), (0.6, 0.6), (4, 12, 12), 4.0)
        _write(tmp_path, geometry, series_instance_uid=uid, file_names=[f"d{k}_{n}" for n in range(4)],
               instance_numbers=[4 * k + n + 1 for n in range(4)])

    scan = scan_study_folder(tmp_path)
    (series,) = scan.series
    assert len(series.stacks) == 3 and series.n_instances == 12
    assert series.planes == ("axial",) and len(series.orientations) == 3
    tilts = sorted(np.degrees(np.arcsin(-s.geometry.normal[1])) for s in series.stacks)
    np.testing.assert_allclose(tilts, sorted(angles), atol=0.01)
    assert all(s.geometry.shape == (4, 12, 12) for s in series.stacks)
    assert scan.warnings == ()


def test_separate_slabs_and_three_plane_localiser(tmp_path: Path) -> None:
    slabs = pydicom.uid.generate_uid()
    for k, z in enumerate((0.0, 60.0)):  # two parallel 4-slice slabs 48 mm apart: two stacks
        geometry = VolumeGeometry.from_dicom(AXIAL_IOP, (-50, -50, z), (1, 1), (4, 8, 8), 4.0)
        _write(tmp_path / "slabs", geometry, series_instance_uid=slabs, file_names=[f"s{k}{n}" for n in range(4)])
    localiser = pydicom.uid.generate_uid()
    for k, iop in enumerate((SAGITTAL_IOP, AXIAL_IOP, (1, 0, 0, 0, 0, -1))):
        geometry = VolumeGeometry.from_dicom(iop, (0, 0, 0), (2, 2), (3, 8, 8), 6.0)
        _write(tmp_path / "loc", geometry, series_instance_uid=localiser, series_number=9, file_names=[f"l{k}{n}" for n in range(3)])

    scan = scan_study_folder(tmp_path)
    by_uid = {s.series_instance_uid: s for s in scan.series}
    assert [s.n_slices for s in by_uid[slabs].stacks] == [4, 4]
    np.testing.assert_allclose([s.geometry.affine[2, 3] for s in by_uid[slabs].stacks], [0.0, 60.0])
    assert sorted(by_uid[localiser].planes) == ["axial", "coronal", "sagittal"]


def test_two_stations_with_same_orientation_are_two_stacks(tmp_path: Path) -> None:
    """A whole-spine sagittal acquired as two stations in one series: same slice positions along
    the normal, shifted 300 mm cranio-caudally. Not duplicates."""
    uid = pydicom.uid.generate_uid()
    for k, z in enumerate((0.0, 300.0)):
        geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (-8, -100, z), (1, 1), (5, 10, 10), 4.0)
        _write(tmp_path, geometry, series_instance_uid=uid, file_names=[f"st{k}_{n}" for n in range(5)])
    scan = scan_study_folder(tmp_path)
    assert [s.n_slices for s in scan.series[0].stacks] == [5, 5]
    assert "DUPLICATE_SLICE_POSITIONS" not in _codes(scan)


def test_uneven_spacing_and_repeated_positions_are_reported(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (-20, 0, 0), (1, 1), (8, 8, 8), 3.0)
    paths = _write(tmp_path / "gap", geometry)
    paths[4].unlink()  # one missing slice: a 6 mm step among 3 mm steps
    repeat = pydicom.uid.generate_uid()
    paths = _write(tmp_path / "repeat", VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 0), (1, 1), (4, 8, 8), 5.0),
                   series_instance_uid=repeat, series_number=2)
    shutil.copy(paths[1], tmp_path / "repeat" / "copy.dcm")
    copy = pydicom.dcmread(tmp_path / "repeat" / "copy.dcm")
    copy.SOPInstanceUID = pydicom.uid.generate_uid()  # a second instance at the same position
    copy.InstanceNumber = 99
    copy.save_as(tmp_path / "repeat" / "copy.dcm")

    scan = scan_study_folder(tmp_path)
    gap, repeated = scan.series
    (stack,) = gap.stacks
    assert stack.n_slices == 7 and stack.geometry.spacing_mm[0] == pytest.approx(3.0)
    assert stack.positions_mm.shape == (7, 3)
    assert "UNEVEN_SLICE_SPACING" in _codes(scan) and "DUPLICATE_SLICE_POSITIONS" in _codes(scan)
    (kept,) = repeated.stacks
    assert kept.n_slices == 4 and 99 not in [i.instance_number for i in kept.instances]
    uneven = next(w for w in scan.warnings if w.code == "UNEVEN_SLICE_SPACING")
    assert uneven.series_instance_uid == gap.series_instance_uid and "missing" in uneven.message


def test_multi_echo_series_splits_into_one_stack_per_echo(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    geometry = VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 0), (1, 1), (3, 8, 8), 5.0)
    for echo in (20.0, 80.0):
        _write(tmp_path, geometry, series_instance_uid=uid, extra_tags={"EchoTime": echo},
               file_names=[f"e{echo:.0f}_{n}" for n in range(3)])
    scan = scan_study_folder(tmp_path)
    stacks = scan.series[0].stacks
    assert [s.n_slices for s in stacks] == [3, 3]
    assert [s.instances[0].tags.echo_time_ms for s in stacks] == [20.0, 80.0]
    (warning,) = scan.warnings
    assert warning.code == "MULTIPLE_VOLUMES_IN_SERIES" and "EchoTime" in warning.message


def test_different_matrix_in_one_series_starts_a_new_stack(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    _write(tmp_path, VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 0), (1, 1), (3, 8, 8), 4.0),
           series_instance_uid=uid, file_names=["a0", "a1", "a2"])
    _write(tmp_path, VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 40), (1, 1), (3, 10, 12), 4.0),
           series_instance_uid=uid, file_names=["b0", "b1", "b2"])
    stacks = scan_study_folder(tmp_path).series[0].stacks
    assert sorted(s.shape for s in stacks) == [(3, 8, 8), (3, 10, 12)]
    assert all(s.load_pixels().shape == s.shape for s in stacks)


def _legacy_converted(tmp_path: Path, geometry: VolumeGeometry, tags: dict) -> pydicom.Dataset:
    """A Legacy Converted Enhanced MR Image (one multi-frame file) made from write_series output."""
    paths = _write(tmp_path / "frames", geometry, extra_tags=tags)
    datasets = [pydicom.dcmread(p) for p in reversed(paths)]
    converted = highdicom.legacy.LegacyConvertedEnhancedMRImage(
        datasets, series_instance_uid=pydicom.uid.generate_uid(), series_number=7,
        sop_instance_uid=pydicom.uid.generate_uid(), instance_number=1,
    )
    shutil.rmtree(tmp_path / "frames")
    return converted


def test_multiframe_enhanced_image_is_split_into_frames(tmp_path: Path) -> None:
    row_dir, col_dir = Rotation.from_euler("z", 10, degrees=True).apply(np.array(SAGITTAL_IOP, float).reshape(2, 3))
    geometry = VolumeGeometry.from_dicom([*row_dir, *col_dir], (-10, -90, 60), (0.9, 0.8), (5, 16, 12), 3.5)
    converted = _legacy_converted(tmp_path, geometry, {"EchoTime": 96.0, "RepetitionTime": 3400.0, "ScanningSequence": "SE"})
    converted.save_as(tmp_path / "enhanced.dcm")

    scan = scan_study_folder(tmp_path)
    (series,) = scan.series
    (stack,) = series.stacks
    assert scan.warnings == () and scan.n_images == 5 and series.series_number == 7
    assert sorted(i.frame for i in stack.instances) == list(range(5))
    np.testing.assert_allclose(stack.geometry.affine, geometry.affine, atol=1e-4)
    np.testing.assert_allclose(stack.load_pixels(), _volume(geometry.shape), atol=1e-3)
    assert (series.tags.echo_time_ms, series.tags.repetition_time_ms, series.tags.scanning_sequence) == (96.0, 3400.0, ("SE",))


def test_enhanced_mr_attributes_map_to_classic_codes(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1, 1), (3, 8, 8), 4.0)
    converted = _legacy_converted(tmp_path, geometry, {"RepetitionTime": 4000.0})
    converted.EchoPulseSequence = "SPIN"
    converted.InversionRecovery = "YES"
    converted.SpectrallySelectedSuppression = "FAT"
    shared = converted.SharedFunctionalGroupsSequence[0]
    echo, modifier = pydicom.Dataset(), pydicom.Dataset()
    echo.EffectiveEchoTime = 45.0
    modifier.InversionTimes = [160.0]
    shared.MREchoSequence = [echo]
    shared.MRModifierSequence = [modifier]
    converted.save_as(tmp_path / "enhanced.dcm")
    tags = scan_study_folder(tmp_path).series[0].tags
    assert tags.scanning_sequence == ("SE", "IR") and tags.scan_options == ("FS",)
    assert (tags.echo_time_ms, tags.inversion_time_ms, tags.repetition_time_ms) == (45.0, 160.0, 4000.0)


# ------------------------------------------------------------------------------------------------
# Compressed transfer syntaxes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGBaseline8Bit], ids=lambda s: s.name)
@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_compressed_syntaxes_decode_to_written_values(tmp_path: Path, syntax, modality: str) -> None:
    # 64 × 64: the JPEG 2000 encoder's default 6 resolution levels need at least that.
    geometry = VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 0), (0.5, 0.5), (3, 64, 64), 2.0)
    values = _volume(geometry.shape, base=-200.0 if modality == "CT" else 50.0)
    write_series(values, geometry, tmp_path, modality=modality, study=PATIENT, transfer_syntax=syntax)
    (stack,) = scan_study_folder(tmp_path).series[0].stacks
    assert {i.transfer_syntax for i in stack.instances} == {str(syntax)}
    pixels = stack.load_pixels()
    if syntax == JPEGBaseline8Bit:  # lossy 8-bit: within 2 % of the value range
        assert np.max(np.abs(pixels - values)) <= 0.02 * np.ptp(values)
    else:
        np.testing.assert_allclose(pixels, values, atol=1e-3)


def test_corrupt_compressed_slice_is_dropped_or_raises(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 0), (0.5, 0.5), (6, 64, 64), 2.0)
    paths = _write(tmp_path, geometry, transfer_syntax=JPEG2000Lossless)
    ds = pydicom.dcmread(paths[4])  # slice 4 of 6: garbage inside the JPEG 2000 codestream
    (frame,) = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
    garbage = np.random.default_rng(3).bytes(len(frame) - 4)
    ds.PixelData = pydicom.encaps.encapsulate([frame[:4] + garbage])  # SOC/SIZ markers kept, rest noise
    ds.save_as(paths[4])

    (stack,) = scan_study_folder(tmp_path).series[0].stacks
    with pytest.raises(SeriesReadError, match=r"IM0005\.dcm"):
        stack.load_pixels()
    loaded = stack.load()
    assert loaded.pixels.shape == (4, 64, 64)  # slices 0-3: the longest decodable run
    np.testing.assert_allclose(loaded.pixels, _volume(geometry.shape)[:4], atol=1e-3)
    np.testing.assert_allclose(loaded.geometry.affine, geometry.affine, atol=1e-4)
    (warning,) = loaded.warnings
    assert warning.code == "PIXEL_DATA_UNREADABLE" and "IM0005.dcm" in warning.message


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
def test_bad_files_become_warnings_and_the_rest_loads(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1, 1), (6, 16, 16), 4.0)
    paths = _write(tmp_path / "KRZYSZTOF_ULRIKA" / "t2", geometry)
    good = _write(tmp_path / "other", geometry, series_number=2)
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) - 100])  # pixel data cut short
    paths[1].write_bytes(data[:600])  # cut inside the header
    (tmp_path / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("patient notes")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_series(np.zeros((1, 4, 4)), VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 0), (1, 1), (1, 4, 4), 1.0),
                 tmp_path / "sr", modality="MR", study=PATIENT, extra_tags={"SOPClassUID": ComprehensiveSRStorage, "Modality": "SR"})
    file_set = FileSet()
    file_set.add(good[0])
    file_set.write(tmp_path.parent / f"{tmp_path.name}_fileset")
    shutil.copy(tmp_path.parent / f"{tmp_path.name}_fileset" / "DICOMDIR", tmp_path / "DICOMDIR")

    scan = scan_study_folder(tmp_path)
    codes = _codes(scan)
    corrupt = sorted(w.message for w in scan.warnings if w.code == "CORRUPT_FILES")  # one per reason
    assert corrupt == [
        "Skipped corrupt DICOM files: truncated (file ends inside the header) (1 file: ***_***/t2/IM0002.dcm).",
        "Skipped corrupt DICOM files: truncated (file ends inside the pixel data) (1 file: ***_***/t2/IM0001.dcm).",
    ]  # the patient name in the folder path is masked
    assert {"NOT_DICOM", "NON_IMAGE_INSTANCES", "DICOMDIR_IGNORED"} <= set(codes)
    not_dicom = next(w for w in scan.warnings if w.code == "NOT_DICOM")
    assert "(3 files: empty, notes.txt, random.dcm)" in not_dicom.message and "DS_Store" not in not_dicom.message
    assert "Comprehensive SR" in next(w.message for w in scan.warnings if w.code == "NON_IMAGE_INSTANCES")
    _no_identifiers(scan)
    assert [s.n_instances for s in scan.series] == [4, 6]
    for series in scan.series:
        assert series.stacks[0].load_pixels().shape[0] == series.n_instances


def test_raw_dataset_without_preamble_is_read(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 0), (1, 1), (2, 8, 8), 4.0)
    paths = _write(tmp_path, geometry)
    for path in paths:
        path.write_bytes(path.read_bytes()[132:])  # strip the 128-byte preamble and "DICM"
    scan = scan_study_folder(tmp_path)
    assert scan.warnings == () and scan.series[0].stacks[0].load_pixels().shape == (2, 8, 8)


def test_implicit_vr_files_are_read(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (3, -20, 40), (0.7, 0.8), (3, 8, 8), 4.5)
    for path in _write(tmp_path, geometry, extra_tags={"EchoTime": 12.0}):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=True, little_endian=True)
    (series,) = scan_study_folder(tmp_path).series
    np.testing.assert_allclose(series.stacks[0].geometry.affine, geometry.affine, atol=1e-4)
    np.testing.assert_allclose(series.stacks[0].load_pixels(), _volume(geometry.shape), atol=1e-3)
    assert series.tags.echo_time_ms == 12.0


def test_missing_orientation_gives_no_geometry_but_keeps_the_series(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1, 1), (4, 8, 8), 4.0)
    _write(tmp_path, geometry, extra_tags={"ImageOrientationPatient": None})
    scan = scan_study_folder(tmp_path)
    (series,) = scan.series
    (stack,) = series.stacks
    assert stack.geometry is None and stack.plane is None and series.planes == ()
    assert stack.load_pixels().shape == (4, 8, 8)
    (warning,) = scan.warnings
    assert warning.code == "MISSING_GEOMETRY" and warning.series_instance_uid == series.series_instance_uid


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # the writer complains about the NaN we ask for
@pytest.mark.parametrize("bad", [{"PixelSpacing": [0.0, 1.0]}, {"ImagePositionPatient": ["nan", "0", "0"]},
                                 {"ImageOrientationPatient": [1, 0, 0, 1, 0, 0]}])
def test_invalid_geometry_values_give_no_geometry(tmp_path: Path, bad: dict) -> None:
    _write(tmp_path, VolumeGeometry.from_dicom(AXIAL_IOP, (0, 0, 0), (1, 1), (3, 8, 8), 4.0), extra_tags=bad)
    scan = scan_study_folder(tmp_path)
    assert scan.series[0].stacks[0].geometry is None and _codes(scan) == ["MISSING_GEOMETRY"]


def test_two_patients_in_one_folder(tmp_path: Path) -> None:
    other = PatientStudy(patient_name="BARTHOLOMEA^QUINN", patient_id="PID-0092-AB")
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1, 1), (5, 8, 8), 4.0)
    _write(tmp_path / "a", geometry)
    _write(tmp_path / "a2", geometry, series_number=2)
    _write(tmp_path / "b", geometry, study=other)
    scan = scan_study_folder(tmp_path)
    assert {"MULTIPLE_PATIENTS", "MULTIPLE_STUDIES"} <= set(_codes(scan))
    assert scan.study_instance_uid == PATIENT.study_instance_uid and len(scan.series) == 2 and scan.n_images == 10
    text = " ".join(w.message for w in scan.warnings)
    for identifier in (*IDENTIFIERS, "BARTHOLOMEA", "QUINN", "PID-0092-AB"):
        assert identifier.lower() not in text.lower()
    assert "10 images" in text and "5 other images" in text


def test_same_study_uid_with_different_patient_is_flagged(tmp_path: Path) -> None:
    imposter = PatientStudy(study_instance_uid=PATIENT.study_instance_uid, patient_name="OTHER^PERSON", patient_id="X1")
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1, 1), (3, 8, 8), 4.0)
    _write(tmp_path / "a", geometry)
    _write(tmp_path / "b", geometry, study=imposter)
    scan = scan_study_folder(tmp_path)
    assert "MULTIPLE_PATIENTS" in _codes(scan) and "MULTIPLE_STUDIES" not in _codes(scan)
    assert len(scan.series) == 1


def test_duplicate_sop_instances_are_kept_once(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1, 1), (5, 8, 8), 4.0)
    _write(tmp_path / "a", geometry)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    scan = scan_study_folder(tmp_path)
    assert scan.n_images == 5 and scan.series[0].n_instances == 5
    (warning,) = scan.warnings
    assert warning.code == "DUPLICATE_INSTANCES" and "(5 files:" in warning.message and "and 2 more" in warning.message


def test_unreadable_subfolder_is_a_warning(tmp_path: Path) -> None:
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1, 1), (3, 8, 8), 4.0)
    _write(tmp_path / "ok", geometry)
    _write(tmp_path / "locked", geometry, series_number=2)
    (tmp_path / "locked").chmod(0)
    try:
        if os.access(tmp_path / "locked", os.R_OK):
            pytest.skip("running with privileges that read a mode-000 folder (root); see the simulated test below")
        scan = scan_study_folder(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert len(scan.series) == 1 and _codes(scan) == ["UNREADABLE_FOLDERS"]
    assert "locked" in scan.warnings[0].message


def test_unreadable_subfolder_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path as above, forced: listing one folder fails with PermissionError."""
    geometry = VolumeGeometry.from_dicom(SAGITTAL_IOP, (0, 0, 0), (1, 1), (3, 8, 8), 4.0)
    _write(tmp_path / "ok", geometry)
    _write(tmp_path / "locked", geometry, series_number=2)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_study_folder(tmp_path)
    assert len(scan.series) == 1
    (warning,) = scan.warnings
    assert warning.code == "UNREADABLE_FOLDERS" and warning.message == "Could not read folders: permission denied (1 folder: locked)."


def test_empty_folder_and_folder_of_non_dicom(tmp_path: Path) -> None:
    scan = scan_study_folder(tmp_path)
    assert scan.series == () and scan.study_instance_uid is None and _codes(scan) == ["NO_IMAGES"]
    for k in range(5):
        (tmp_path / f"doc{k}.pdf").write_bytes(b"%PDF-1.4 " + bytes(200))
    scan = scan_study_folder(tmp_path)
    assert _codes(scan) == ["NOT_DICOM", "NO_IMAGES"] and "and 2 more" in scan.warnings[0].message


# ------------------------------------------------------------------------------------------------
# Speed
# ------------------------------------------------------------------------------------------------
def test_scanning_a_four_series_study_is_fast(tmp_path: Path) -> None:
    sagittal = VolumeGeometry.from_dicom(SAGITTAL_IOP, (-30, -150, 150), (0.7, 0.7), (17, 64, 64), 4.0)
    axial = VolumeGeometry.from_dicom(AXIAL_IOP, (-100, -100, -50), (0.6, 0.6), (27, 64, 64), 4.0)
    for number, geometry in enumerate((sagittal, sagittal, sagittal, axial), start=1):
        _write(tmp_path / f"s{number}", geometry, series_number=number)
    scan_study_folder(tmp_path)  # warm the file cache, as a second look at the same folder would
    start = time.perf_counter()
    scan = scan_study_folder(tmp_path)
    elapsed = time.perf_counter() - start
    assert scan.n_images == 78 and len(scan.series) == 4
    assert elapsed < 1.0, f"scan took {elapsed:.2f} s"
