"""Series selector rules (operators/core/series_roles.py) on real DICOM series.

Each test writes small series with ``write_series`` and vendor-like acquisition tags, reads them
back with ``scan_study_folder`` and checks the role and the reason the selector gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.series_roles import ROLES, SeriesDecision, assign_roles, cranio_caudal_range, thresholds_for
from training.synthetic.dicom_writer import PatientStudy, write_series

PATIENT = PatientStudy(patient_name="HALVORSEN^ISOLDE", patient_id="PID-8812-RT")
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL_IOP = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


# ------------------------------------------------------------------------------------------------
# Vendor protocols: what each scanner records for each sequence (times in ms)
# ------------------------------------------------------------------------------------------------
def vendor_tags(vendor: str, kind: str, field: float) -> dict[str, Any]:
    """Tags of one sequence as ``vendor`` writes them at ``field`` tesla."""
    high = field > 2
    common: dict[str, Any] = {"MagneticFieldStrength": field, "MRAcquisitionType": "2D"}
    timing = {
        "t1": {"RepetitionTime": 780.0 if high else 560.0, "EchoTime": 10.0, "EchoTrainLength": 4, "FlipAngle": 150.0},
        "t2": {"RepetitionTime": 3400.0, "EchoTime": 96.0, "EchoTrainLength": 18, "FlipAngle": 150.0},
        "stir": {"RepetitionTime": 4200.0, "EchoTime": 45.0, "InversionTime": 220.0 if high else 150.0, "EchoTrainLength": 14},
        "t2_fs": {"RepetitionTime": 3600.0, "EchoTime": 80.0, "EchoTrainLength": 16},
        "t2star": {"RepetitionTime": 620.0, "EchoTime": 13.0 if high else 20.0, "FlipAngle": 30.0},
    }[kind]
    if vendor == "siemens":
        base = {"Manufacturer": "SIEMENS", "ScanningSequence": "SE", "SequenceVariant": ["SK", "SP", "OSP"],
                "ScanOptions": "PFP", "SequenceName": "*tse2d1_15", "ImageType": ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]}
        extra = {
            "stir": {"ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "ScanOptions": "IR",
                     "SequenceName": "*tir2d1_13"},
            "t2_fs": {"ScanOptions": ["FS", "PFP"]},
            "t2star": {"ScanningSequence": "GR", "SequenceVariant": ["SP", "OSP"], "ScanOptions": "", "SequenceName": "*me2d1r3"},
        }.get(kind, {})
    elif vendor == "ge":
        base = {"Manufacturer": "GE MEDICAL SYSTEMS", "ScanningSequence": "SE", "SequenceVariant": ["SK", "OSP"],
                "ScanOptions": ["FAST_GEMS", "EDR_GEMS", "FILTERED_GEMS"], "InversionTime": 0.0,
                "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"]}
        extra = {
            "stir": {"ScanningSequence": ["SE", "IR"], "ScanOptions": ["FAST_GEMS", "IR_GEMS", "EDR_GEMS"]},
            "t2_fs": {"ScanOptions": ["FAST_GEMS", "EDR_GEMS", "FS"]},
            "t2star": {"ScanningSequence": "GR", "SequenceVariant": ["SS", "SP"], "ScanOptions": ["FAST_GEMS", "EDR_GEMS"]},
        }.get(kind, {})
    elif vendor == "philips":
        base = {"Manufacturer": "Philips Medical Systems", "ScanningSequence": "SE", "SequenceVariant": "SK",
                "ScanOptions": "OTHER", "ImageType": ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"]}
        extra = {
            "stir": {"ScanningSequence": "IR", "SequenceVariant": ["SK", "MP"], "ScanOptions": "OTHER"},
            "t2_fs": {"ScanOptions": ["FS"], "ImageType": ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"]},
            "t2star": {"ScanningSequence": "GR", "SequenceVariant": "SP", "ImageType": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]},
        }.get(kind, {})
    else:  # canon
        base = {"Manufacturer": "CANON_MEC", "ScanningSequence": "SE", "SequenceVariant": "SK", "ScanOptions": "",
                "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"]}
        extra = {
            "stir": {"ScanningSequence": "IR", "SequenceVariant": ["SK", "MP"]},
            "t2_fs": {"ScanOptions": "FS"},
            "t2star": {"ScanningSequence": "GR", "SequenceVariant": "SP"},
        }.get(kind, {})
    return {**common, **base, **timing, **extra}


SIEMENS_T1 = vendor_tags("siemens", "t1", 1.5)
SIEMENS_T2 = vendor_tags("siemens", "t2", 1.5)
SIEMENS_STIR = vendor_tags("siemens", "stir", 1.5)


class Study:
    """Writes series into one study folder and decides their roles."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def add(
        self,
        tags: dict[str, Any],
        plane: str = "sagittal",
        *,
        description: str = "",
        n: int = 7,
        rows: int = 24,
        pixel_mm: float = 12.5,
        top_mm: float = 150.0,
        step_mm: float = 4.0,
        modality: str = "MR",
        orientation: tuple[float, ...] | None = None,
        series_number: int | None = None,
    ) -> str:
        """Add one series; sagittal/coronal images span ``rows × pixel_mm`` down from ``top_mm``,
        axial slices go down from ``top_mm`` by ``step_mm``. Returns its SeriesInstanceUID."""
        self.count += 1
        if plane == "axial":
            iop = orientation or AXIAL_IOP
            geometry = VolumeGeometry.from_dicom(iop, (-150, -150, top_mm - (n - 1) * step_mm), (pixel_mm, pixel_mm), (n, rows, rows), step_mm)
        else:
            iop = orientation or (SAGITTAL_IOP if plane == "sagittal" else CORONAL_IOP)
            geometry = VolumeGeometry.from_dicom(iop, (-12, -150, top_mm), (pixel_mm, pixel_mm), (n, rows, rows), step_mm)
        uid = pydicom.uid.generate_uid()
        write_series(
            np.full(geometry.shape, 100.0), geometry, self.root / f"s{self.count}", modality=modality, study=PATIENT,
            series_instance_uid=uid, series_number=series_number or self.count, series_description=description,
            extra_tags=tags,
        )
        return uid

    def decide(self) -> dict[str, SeriesDecision]:
        scan = scan_study_folder(self.root)
        decisions = assign_roles(scan.series)
        assert len(decisions) == len(scan.series)
        for decision in decisions:
            assert decision.role in ROLES and decision.reason
            assert "HALVORSEN" not in decision.reason and "PID-8812" not in decision.reason
        return {d.series_instance_uid: d for d in decisions}


@pytest.fixture
def study(tmp_path: Path) -> Study:
    return Study(tmp_path)


def test_roles_tuple() -> None:
    assert ROLES == ("sag_t1", "sag_t2", "sag_stir", "ax_t2", "ct_axial", "unused")


# ------------------------------------------------------------------------------------------------
# The main rules, per vendor and field strength
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", [1.5, 3.0])
@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips", "canon"])
def test_standard_lumbar_protocol(study: Study, vendor: str, field: float) -> None:
    t1 = study.add(vendor_tags(vendor, "t1", field))
    t2 = study.add(vendor_tags(vendor, "t2", field))
    stir = study.add(vendor_tags(vendor, "stir", field))
    axial = study.add(vendor_tags(vendor, "t2", field), "axial", n=12)
    decisions = study.decide()
    assert {uid: decisions[uid].role for uid in (t1, t2, stir, axial)} == {
        t1: "sag_t1", t2: "sag_t2", stir: "sag_stir", axial: "ax_t2",
    }
    assert all(not d.description_hint and d.warnings == () for d in decisions.values())
    assert decisions[t1].reason.endswith("T1-weighted") and "TR " in decisions[t1].reason
    assert "STIR" in decisions[stir].reason


def test_reason_reads_like_a_sentence(study: Study) -> None:
    uid = study.add({**SIEMENS_T1, "RepetitionTime": 650.0, "EchoTime": 12.0, "MagneticFieldStrength": 1.5})
    assert study.decide()[uid].reason == "sagittal TSE, TR 650 ms, TE 12 ms, 1.5 T: T1-weighted"


def test_ct_axial_and_ct_distractors(study: Study) -> None:
    ct = {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "KVP": 120}
    axial = study.add(ct, "axial", n=40, step_mm=2.0, modality="CT")
    sag = study.add({"ImageType": ["DERIVED", "SECONDARY", "REFORMATTED"]}, "sagittal", modality="CT")
    cor = study.add({"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}, "coronal", modality="CT")
    derived_axial = study.add({"ImageType": ["DERIVED", "SECONDARY", "AXIAL"]}, "axial", n=40, step_mm=2.0, modality="CT")
    scout = study.add({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "coronal", n=1, modality="CT")
    decisions = study.decide()
    assert decisions[axial].role == "ct_axial"
    assert all(decisions[uid].role == "unused" for uid in (sag, cor, derived_axial, scout))
    assert "reformat" in decisions[sag].reason and "reformat" in decisions[cor].reason
    assert "reformat" in decisions[derived_axial].reason and "LOCALIZER" in decisions[scout].reason


# ------------------------------------------------------------------------------------------------
# Distractors
# ------------------------------------------------------------------------------------------------
def test_localisers(study: Study) -> None:
    tagged = study.add({**SIEMENS_T2, "ImageType": ["ORIGINAL", "PRIMARY", "M", "LOCALIZER"]}, n=3)
    three_plane_uid = pydicom.uid.generate_uid()
    gre = {"ScanningSequence": "GR", "RepetitionTime": 8.0, "EchoTime": 3.0, "FlipAngle": 25.0}
    for k, iop in enumerate((SAGITTAL_IOP, AXIAL_IOP, CORONAL_IOP)):  # no LOCALIZER in ImageType
        geometry = VolumeGeometry.from_dicom(iop, (0, 0, 0), (10, 10), (3, 16, 16), 8.0)
        write_series(np.ones(geometry.shape), geometry, study.root / "loc", modality="MR", study=PATIENT,
                     series_instance_uid=three_plane_uid, series_number=20, extra_tags=gre,
                     file_names=[f"l{k}{n}" for n in range(3)])
    decisions = study.decide()
    assert decisions[tagged].role == "unused" and "LOCALIZER" in decisions[tagged].reason
    assert decisions[three_plane_uid].role == "unused" and "localiser" in decisions[three_plane_uid].reason


@pytest.mark.parametrize(
    "tags",
    [
        {**SIEMENS_T2, "ScanningSequence": "EP", "SequenceName": "*ep_b1000t", "DiffusionBValue": 1000.0},
        {**SIEMENS_T2, "ScanningSequence": "EP", "ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]},
        {**SIEMENS_T2, "ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"]},
        {**SIEMENS_T2, "SequenceName": "*ep_b800t", "ScanningSequence": ""},
    ],
    ids=["b-value", "adc", "trace", "sequence-name"],
)
def test_diffusion_is_unused(study: Study, tags: dict) -> None:
    uid = study.add(tags, description="t2_tse_sag")  # a misleading description does not rescue it
    decision = study.decide()[uid]
    assert decision.role == "unused" and "diffusion" in decision.reason


@pytest.mark.parametrize(
    "tags, words",
    [
        ({**SIEMENS_T1, "ScanOptions": ["FS"]}, "fat-saturated T1"),
        ({**SIEMENS_T1, "ContrastBolusAgent": "Gadovist"}, "post-contrast T1"),
        (vendor_tags("siemens", "t2star", 1.5), "T2*-weighted gradient echo"),
        ({**SIEMENS_T2, "EchoTime": 18.0, "RepetitionTime": 2800.0}, "proton-density"),
        ({**SIEMENS_STIR, "InversionTime": 2500.0, "EchoTime": 110.0, "RepetitionTime": 9000.0}, "T2-FLAIR"),
        ({**SIEMENS_T2, "ImageType": ["DERIVED", "PRIMARY", "MIP"]}, "mip image"),
        ({**SIEMENS_T2, "ImageType": ["DERIVED", "PRIMARY", "DIXON", "FAT"]}, "Dixon fat-only"),
        ({**SIEMENS_T2, "ScanningSequence": "EP", "SequenceName": "*epfid2d1"}, "echo-planar"),
    ],
    ids=["t1-fs", "t1-post", "gre", "pd", "t2-flair", "mip", "dixon-fat", "epi"],
)
def test_sagittal_distractors_are_unused(study: Study, tags: dict, words: str) -> None:
    uid = study.add(tags)
    decision = study.decide()[uid]
    assert decision.role == "unused" and words in decision.reason, decision.reason


def test_coronal_and_axial_non_t2_are_unused(study: Study) -> None:
    coronal = study.add(SIEMENS_T2, "coronal")
    axial_t1 = study.add(SIEMENS_T1, "axial")
    axial_stir = study.add(SIEMENS_STIR, "axial")
    decisions = study.decide()
    assert decisions[coronal].role == "unused" and "coronal" in decisions[coronal].reason
    assert decisions[axial_t1].role == "unused" and decisions[axial_stir].role == "unused"


def test_sagittal_needs_three_slices(study: Study) -> None:
    two = study.add(SIEMENS_T2, n=2)
    three = study.add(SIEMENS_T1, n=3)
    decisions = study.decide()
    assert decisions[two].role == "unused" and "only 2 sagittal slice(s)" in decisions[two].reason
    assert decisions[three].role == "sag_t1"


def test_missing_geometry_and_other_modalities_are_unused(study: Study) -> None:
    no_geometry = study.add({**SIEMENS_T2, "ImageOrientationPatient": None})
    secondary = study.add({"ImageType": ["DERIVED", "SECONDARY"], "Modality": "OT"})
    decisions = study.decide()
    assert decisions[no_geometry].role == "unused" and "geometry" in decisions[no_geometry].reason
    assert decisions[no_geometry].stack_indices == ()
    assert decisions[secondary].role == "unused" and "modality OT" in decisions[secondary].reason


@pytest.mark.parametrize(
    "tags, role, words",
    [
        ({"SequenceName": "*tir2d1_13", "RepetitionTime": 4000.0, "EchoTime": 40.0, "InversionTime": 150.0}, "sag_stir", "IR-TSE"),
        ({"SequenceName": "*tse2d1_5", "RepetitionTime": 600.0, "EchoTime": 12.0}, "sag_t1", "sagittal TSE"),
        ({"SequenceName": "*fl2d1", "RepetitionTime": 450.0, "EchoTime": 4.0, "FlipAngle": 70.0}, "unused", "gradient echo"),
        ({"FlipAngle": 25.0, "RepetitionTime": 500.0, "EchoTime": 8.0}, "unused", "gradient echo"),
        ({"FlipAngle": 160.0, "RepetitionTime": 3000.0, "EchoTime": 90.0}, "sag_t2", "sagittal spin echo"),
        ({"RepetitionTime": 3000.0, "EchoTime": 90.0}, "sag_t2", "sequence type not recorded"),
    ],
    ids=["siemens-tirm-name", "siemens-tse-name", "siemens-flash-name", "low-flip", "high-flip", "nothing"],
)
def test_sequence_family_without_scanning_sequence(study: Study, tags: dict, role: str, words: str) -> None:
    uid = study.add(tags)
    decision = study.decide()[uid]
    assert decision.role == role and words in decision.reason, decision.reason


# ------------------------------------------------------------------------------------------------
# Field strength
# ------------------------------------------------------------------------------------------------
def test_thresholds_follow_field_strength() -> None:
    assert thresholds_for(1.5).label == "1.5 T" and thresholds_for(3.0).label == "3 T"
    assert thresholds_for(15000).label == "1.5 T"  # recorded in gauss
    assert thresholds_for(None).label == "unknown field"
    assert thresholds_for(3.0).stir_ti_ms[1] > thresholds_for(1.5).stir_ti_ms[1]


def test_field_strength_changes_the_verdict(study: Study) -> None:
    stir_3t = study.add({**SIEMENS_STIR, "InversionTime": 290.0, "MagneticFieldStrength": 3.0}, top_mm=150)
    ir_15t = study.add({**SIEMENS_STIR, "InversionTime": 290.0, "MagneticFieldStrength": 1.5}, top_mm=-400)
    t1_3t = study.add({**SIEMENS_T1, "RepetitionTime": 1100.0, "MagneticFieldStrength": 3.0})
    t1_15t = study.add({**SIEMENS_T1, "RepetitionTime": 1100.0, "MagneticFieldStrength": 1.5}, top_mm=-400)
    flair_3t = study.add({**SIEMENS_STIR, "InversionTime": 900.0, "EchoTime": 9.0, "RepetitionTime": 2200.0,
                          "MagneticFieldStrength": 3.0}, top_mm=-900)
    decisions = study.decide()
    assert decisions[stir_3t].role == "sag_stir"
    assert decisions[ir_15t].role == "unused" and "neither STIR nor FLAIR" in decisions[ir_15t].reason
    assert decisions[t1_3t].role == "sag_t1"
    assert decisions[t1_15t].role == "unused" and "between the T1 and T2 ranges" in decisions[t1_15t].reason
    assert decisions[flair_3t].role == "sag_t1" and "T1-FLAIR" in decisions[flair_3t].reason


# ------------------------------------------------------------------------------------------------
# Descriptions: hints only
# ------------------------------------------------------------------------------------------------
def test_misleading_descriptions_lose_to_tags(study: Study) -> None:
    t2 = study.add(SIEMENS_T2, description="t1_tse_sag")
    t1 = study.add(SIEMENS_T1, description="AX T2 FSE")
    decisions = study.decide()
    assert decisions[t2].role == "sag_t2" and not decisions[t2].description_hint
    assert 'description "t1_tse_sag" says T1; tags decide' in decisions[t2].reason
    assert decisions[t1].role == "sag_t1" and "the geometry decides" in decisions[t1].reason


def test_empty_descriptions_are_fine(study: Study) -> None:
    uids = [study.add(SIEMENS_T1), study.add(SIEMENS_T2), study.add(SIEMENS_STIR)]
    assert [study.decide()[u].role for u in uids] == ["sag_t1", "sag_t2", "sag_stir"]


def test_missing_timing_uses_the_description_and_says_so(study: Study) -> None:
    bare = {"Manufacturer": "SIEMENS", "ImageType": ["ORIGINAL", "PRIMARY", "M"]}
    hinted = study.add(bare, description="Sag T2 FSE")
    stir = study.add({**bare, "ScanningSequence": ["SE", "IR"], "RepetitionTime": 4000.0, "EchoTime": 40.0},
                     description="STIR SAG", top_mm=-400)
    silent = study.add(bare, top_mm=-900)
    decisions = study.decide()
    assert decisions[hinted].role == "sag_t2" and decisions[hinted].description_hint
    (warning,) = decisions[hinted].warnings
    assert warning.code == "ROLE_FROM_DESCRIPTION" and warning.series_instance_uid == hinted
    assert decisions[stir].role == "sag_stir" and "InversionTime" in decisions[stir].reason
    assert decisions[silent].role == "unused" and "no hint" in decisions[silent].reason


def test_contradictory_tags_use_the_description(study: Study) -> None:
    uid = study.add({**SIEMENS_T1, "RepetitionTime": 500.0, "EchoTime": 110.0}, description="t1_tse_sag")
    decision = study.decide()[uid]
    assert decision.role == "sag_t1" and decision.description_hint and "contradictory" in decision.reason


def test_tag_based_candidate_beats_description_based(study: Study) -> None:
    described = study.add({"ImageType": ["ORIGINAL", "PRIMARY", "M"]}, description="T2 SAG", n=15, series_number=9)
    tagged = study.add(SIEMENS_T2, n=11, series_number=3)
    decisions = study.decide()
    assert decisions[tagged].role == "sag_t2"
    assert decisions[described].role == "unused" and decisions[described].candidate_role == "sag_t2"
    assert "decided by tags" in decisions[described].reason


def test_post_contrast_known_only_from_description(study: Study) -> None:
    """ContrastBolusAgent absent: TR/TE cannot tell pre- from post-contrast T1, so the description
    decides (flagged), and the later post-contrast repeat does not displace the plain T1."""
    plain = study.add(SIEMENS_T1, description="t1_tse_sag", series_number=2)
    post = study.add(SIEMENS_T1, description="t1_tse_sag +C", series_number=8)
    decisions = study.decide()
    assert decisions[plain].role == "sag_t1"
    assert decisions[post].role == "unused" and decisions[post].description_hint
    assert "ContrastBolusAgent missing" in decisions[post].reason


# ------------------------------------------------------------------------------------------------
# Several candidates
# ------------------------------------------------------------------------------------------------
def test_more_coverage_wins_and_loser_names_the_winner(study: Study) -> None:
    small = study.add(SIEMENS_T2, description="t2_tse_sag", n=9, series_number=7)
    large = study.add(SIEMENS_T2, description="T2 TSE SAG 3mm", n=15, series_number=4)
    decisions = study.decide()
    assert decisions[large].role == "sag_t2"
    loser = decisions[small]
    assert loser.role == "unused" and loser.candidate_role == "sag_t2"
    assert 'series 4 "T2 TSE SAG 3mm" is preferred: it covers more of the spine (15 slices × 300 mm vs 9 × 300 mm)' in loser.reason


def test_finer_resolution_then_later_series_number(study: Study) -> None:
    coarse = study.add(SIEMENS_T1, rows=24, pixel_mm=12.5, series_number=3)
    fine = study.add(SIEMENS_T1, rows=30, pixel_mm=10.0, series_number=2)
    first = study.add(SIEMENS_T2, series_number=5)
    repeat = study.add(SIEMENS_T2, series_number=6)
    decisions = study.decide()
    assert decisions[fine].role == "sag_t1" and "finer in-plane resolution (10.00 mm vs 12.50 mm)" in decisions[coarse].reason
    assert decisions[repeat].role == "sag_t2" and "later series" in decisions[first].reason
    assert 'series 6 is preferred' in decisions[first].reason


def test_original_beats_derived(study: Study) -> None:
    derived = study.add({**SIEMENS_T2, "ImageType": ["DERIVED", "PRIMARY", "MPR"]}, n=15)
    original = study.add(SIEMENS_T2, n=9)
    decisions = study.decide()
    assert decisions[original].role == "sag_t2" and "ORIGINAL images are preferred" in decisions[derived].reason


def test_true_stir_beats_fat_sat_t2_which_stands_in_alone(study: Study, tmp_path: Path) -> None:
    t2_fs = study.add(vendor_tags("philips", "t2_fs", 3.0), n=15)
    stir = study.add(vendor_tags("philips", "stir", 3.0), n=7)
    decisions = study.decide()
    assert decisions[stir].role == "sag_stir"
    assert decisions[t2_fs].candidate_role == "sag_stir" and "STIR ranks above fat-saturated T2" in decisions[t2_fs].reason

    alone = Study(tmp_path / "alone")
    dixon = alone.add({**SIEMENS_T2, "ImageType": ["DERIVED", "PRIMARY", "DIXON", "WATER"]})
    assert alone.decide()[dixon].role == "sag_stir"


def test_axial_tse_beats_gradient_echo(study: Study) -> None:
    gre = study.add(vendor_tags("ge", "t2star", 1.5), "axial", n=20)
    tse = study.add(vendor_tags("ge", "t2", 1.5), "axial", n=12)
    decisions = study.decide()
    assert decisions[tse].role == "ax_t2" and decisions[gre].candidate_role == "ax_t2"
    assert "T2 SE/TSE ranks above T2* gradient echo" in decisions[gre].reason


def test_gradient_echo_axial_is_used_when_alone(study: Study) -> None:
    gre = study.add(vendor_tags("siemens", "t2star", 3.0), "axial", n=12)
    assert study.decide()[gre].role == "ax_t2"


def test_cranio_caudal_range_ignores_the_tilt_of_axial_slabs() -> None:
    sagittal = VolumeGeometry.from_dicom(SAGITTAL_IOP, (-12, -150, 150), (1.25, 1.25), (9, 240, 240), 4.0)
    # the 300 mm field of view; ImagePositionPatient is the centre of the first pixel, half a pixel inside
    assert cranio_caudal_range([sagittal]) == pytest.approx((150.625 - 300.0, 150.625))
    row_dir, col_dir = Rotation.from_euler("x", 20, degrees=True).apply(np.array(AXIAL_IOP, float).reshape(2, 3))
    normal = np.cross(row_dir, col_dir)
    origin = np.array([0.0, 0.0, -10.0]) - 99.5 * (row_dir + col_dir)  # 200 mm FOV centred on the spine
    tilted = VolumeGeometry.from_dicom([*row_dir, *col_dir], origin, (1.0, 1.0), (6, 200, 200), 4.0)
    low, high = cranio_caudal_range([tilted])
    expected_centres = -10.0 + 4.0 * np.arange(6) * normal[2]
    assert (low, high) == pytest.approx((expected_centres.min() - 2 * normal[2], expected_centres.max() + 2 * normal[2]))


def test_stations_are_all_kept(study: Study) -> None:
    cervical = study.add(SIEMENS_T2, top_mm=150.0, n=11)
    lumbar = study.add(SIEMENS_T2, top_mm=-130.0, n=11)  # 300 mm FOVs overlapping by 20 mm
    thoracic_axial = study.add(SIEMENS_T2, "axial", top_mm=0.0, n=10, step_mm=4.0)
    lumbar_axial = study.add(SIEMENS_T2, "axial", top_mm=-200.0, n=10, step_mm=4.0)
    decisions = study.decide()
    assert [decisions[u].role for u in (cervical, lumbar, thoracic_axial, lumbar_axial)] == ["sag_t2", "sag_t2", "ax_t2", "ax_t2"]
    assert sum("separate station" in decisions[u].reason for u in (cervical, lumbar)) == 1


def test_multi_stack_axial_series_keeps_all_stacks(study: Study) -> None:
    uid = pydicom.uid.generate_uid()
    for k, angle in enumerate((-10.0, 0.0, 12.0)):
        row_dir, col_dir = Rotation.from_euler("x", angle, degrees=True).apply(np.array(AXIAL_IOP, float).reshape(2, 3))
        normal = np.cross(row_dir, col_dir)
        centre = np.array([0.0, 0.0, -40.0 * k])  # each slab centred on its disc, tilted about it
        origin = centre - 11.5 * 12.5 * (row_dir + col_dir) - 1.5 * 4.0 * normal
        geometry = VolumeGeometry.from_dicom([*row_dir, *col_dir], origin, (12.5, 12.5), (4, 24, 24), 4.0)
        write_series(np.ones(geometry.shape), geometry, study.root / "axial", modality="MR", study=PATIENT,
                     series_instance_uid=uid, series_number=6, extra_tags=SIEMENS_T2, file_names=[f"d{k}{n}" for n in range(4)])
    single = study.add(SIEMENS_T2, "axial", top_mm=6.0, n=4)  # covers only the top disc: overlaps, fewer slices
    decisions = study.decide()
    assert decisions[uid].role == "ax_t2" and sorted(decisions[uid].stack_indices) == [0, 1, 2]
    assert decisions[single].role == "unused" and 'series 6 is preferred' in decisions[single].reason
