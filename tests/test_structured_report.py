"""The DICOM Comprehensive 3D SR: written from a report on real DICOM, read back with highdicom,
every reported value found again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from operators.core import structured_report as sr_module
from operators.core.dicom_io import StudyScan, scan_study_folder
from operators.core.gradings import BILSKY_MR_GRADES, CANCER_FINDINGS, RSNA_CONDITIONS, SPINENET_GRADINGS
from operators.core.report import (
    BilskyEntry,
    DiscEntry,
    ModelInfo,
    SoftwareInfo,
    VertebraEntry,
    study_report,
    validate_report,
)
from operators.core.series_roles import assign_roles
from operators.core.structured_report import (
    BILSKY_GRADE,
    BILSKY_VALUES,
    DETECTION_SCORE,
    FINDING_CONCEPTS,
    GRADING_CONCEPTS,
    GRADING_VALUES,
    HIGH_GRADE_ESCC,
    LEVEL_PROBABILITY,
    PRESENT,
    RSNA_CONCEPTS,
    RSNA_SEVERITY_VALUES,
    SITES,
    build_structured_report,
    load_evidence,
    probability_concept,
    used_series,
    write_structured_report,
)
from tests.conftest import PATIENT

SOFTWARE = SoftwareInfo(
    name="spine-map",
    version="0.1.0",
    models=tuple(
        ModelInfo(name, f"{name}.onnx", f"{i:x}" * 64, f"synthetic studies, seeds {i}000-{i}999; RSNA 2024 \"LSDC\"")
        for i, name in enumerate((
            "vertebra_detector", "level_appearance", "level_context", "cancer_sct", "disc_grader", "rsna_grader",
            "canal_detector", "bilsky_mr", "bilsky_ct",
        ), start=1)
    ),
)


def _probabilities(rng: np.random.Generator, n: int) -> list[float]:
    p = rng.dirichlet(np.ones(n))
    return [float(v) for v in p]


def make_report(study: StudyScan, seed: int = 0) -> dict[str, Any]:
    """A full report on ``study``: vertebrae (one transitional, one without cancer findings),
    discs with every grading and RSNA condition, and Bilsky grades on two axial images."""
    rng = np.random.default_rng(seed)
    decisions = assign_roles(study.series)
    roles = {d.series_instance_uid: d.role for d in decisions}
    sagittal = next(s for s in study.series if roles[s.series_instance_uid] == "sag_t2")
    axial = next(s for s in study.series if roles[s.series_instance_uid] == "ax_t2")

    def point() -> list[float]:
        return [float(v) for v in rng.uniform(-150, 150, 3)]

    vertebrae = [
        VertebraEntry(
            level=level,
            level_probability=float(rng.uniform()),
            series_instance_uid=sagittal.series_instance_uid,
            centroid_mm=point(),
            corners_mm=[point() for _ in range(4)],
            detection_score=float(rng.uniform()),
            findings=None if level == "L4" else {name: float(rng.uniform()) for name in CANCER_FINDINGS},
        )
        for level in ("L3", "L4", "L5", "L6", "S1")
    ]
    discs = [
        DiscEntry(
            level=level,
            centre_mm=point(),
            gradings={name: _probabilities(rng, len(classes)) for name, classes in SPINENET_GRADINGS.items()},
            rsna={condition: _probabilities(rng, 3) for condition in RSNA_CONDITIONS} if level != "L6/S1" else {},
        )
        for level in ("L3/L4", "L4/L5", "L5/L6", "L6/S1")
    ]
    images = axial.stacks[0].instances
    bilsky = [
        BilskyEntry(
            series_instance_uid=axial.series_instance_uid,
            sop_instance_uid=image.sop_instance_uid,
            level=level,
            modality="MR",
            probabilities=_probabilities(rng, len(BILSKY_MR_GRADES)),
            instance_number=image.instance_number,
        )
        for image, level in ((images[1], "L4"), (images[4], "L4/L5"))
    ]
    report = study_report(study, decisions, SOFTWARE, vertebrae=vertebrae, discs=discs, bilsky=bilsky)
    validate_report(report)
    return report


@pytest.fixture(scope="module")
def study(small_study: Path) -> StudyScan:
    return scan_study_folder(small_study)


@pytest.fixture(scope="module")
def written(study: StudyScan, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    report = make_report(study)
    path = write_structured_report(report, study, tmp_path_factory.mktemp("sr"))
    assert path is not None
    return report, path


# --------------------------------------------------------------------------------------------------
# Reading an SR back into report values, by inverting the module's code tables
# --------------------------------------------------------------------------------------------------
def _key(concept: Any) -> tuple[str, str]:
    return (concept.scheme_designator, concept.value)


def _invert(table: dict) -> dict:
    inverse = {_key(concept): key for key, concept in table.items()}
    assert len(inverse) == len(table), "codes must be unique to be read back"
    return inverse


def _numbers(group: Any) -> dict[tuple[str, str], float]:
    return {_key(m.name): float(m.value) for m in group.get_measurements()}


def _evaluations(group: Any) -> dict[tuple[str, str], tuple[str, str]]:
    return {_key(e.name): _key(e.value) for e in group.get_qualitative_evaluations()}


def _site(group: Any) -> str:
    (site,) = group.finding_sites
    return _invert(SITES)[_key(site.value)]


def _point(group: Any) -> tuple[list[float], str]:
    roi = group.roi
    assert isinstance(roi, hd.sr.ImageRegion3D) and roi.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    return [float(v) for v in roi.value[0]], roi.frame_of_reference_uid


def _models(group: Any) -> set[str]:
    """The ``Algorithm Parameters`` texts of a group's algorithm identification (one model's JSON each)."""
    items = hd.sr.utils.find_content_items(group[0], name=codes.DCM.AlgorithmParameters, recursive=True)
    return {item.TextValue for item in items}


def read_back(path: Path) -> dict[str, Any]:
    """The report values an SR file carries, in ``spine_report.json`` form (corners excluded)."""
    sr = hd.sr.srread(path)
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    sop_series = {}
    for item in sr.CurrentRequestedProcedureEvidenceSequence:
        for series in item.ReferencedSeriesSequence:
            for ref in series.ReferencedSOPSequence:
                sop_series[ref.ReferencedSOPInstanceUID] = series.SeriesInstanceUID
    names = hd.sr.utils.find_content_items(content[0], name=codes.DCM.AlgorithmName, recursive=True)
    versions = hd.sr.utils.find_content_items(content[0], name=codes.DCM.AlgorithmVersion, recursive=True)
    out: dict[str, Any] = {
        "study_instance_uid": sr.StudyInstanceUID,
        "software_names": {item.TextValue for item in names},
        "software_versions": {item.TextValue for item in versions},
        "vertebrae": [],
        "discs": [],
        "bilsky": [],
    }
    findings = _invert(FINDING_CONCEPTS)
    for group in content.get_planar_roi_measurement_groups():
        models = _models(group)
        site = _site(group)
        centre, frame = _point(group)
        numbers = _numbers(group)
        evaluations = _evaluations(group)
        if group.finding_type is not None and _key(group.finding_type) == _key(sr_module.VERTEBRA):
            entry = {
                "level": site,
                "centroid_mm": centre,
                "frame_of_reference": frame,
                "level_probability": numbers.pop(_key(LEVEL_PROBABILITY)),
                "detection_score": numbers.pop(_key(DETECTION_SCORE)),
                "models": models,
            }
            found = {name: numbers.pop(_key(probability_concept(c))) for name, c in FINDING_CONCEPTS.items() if _key(probability_concept(c)) in numbers}
            if found:
                entry["findings"] = found
                entry["flags"] = {findings[k]: v == _key(PRESENT) for k, v in evaluations.items()}
            assert not numbers
            out["vertebrae"].append(entry)
            continue
        gradings, rsna = {}, {}
        for name, concept in GRADING_CONCEPTS.items():
            if _key(concept) in evaluations:
                values = {g: GRADING_VALUES[name, g] for g in SPINENET_GRADINGS[name]}
                grade = _invert(values)[evaluations[_key(concept)]]
                gradings[name] = {"grade": grade, "probability": numbers.pop(_key(probability_concept(concept, values[grade])))}
        for condition, concept in RSNA_CONCEPTS.items():
            if _key(concept) in evaluations:
                severity = _invert(RSNA_SEVERITY_VALUES)[evaluations[_key(concept)]]
                probability = numbers.pop(_key(probability_concept(concept, RSNA_SEVERITY_VALUES[severity])))
                rsna[condition] = {"severity": severity, "probability": probability}
        assert not numbers
        out["discs"].append(
            {"level": site, "centre_mm": centre, "frame_of_reference": frame, "gradings": gradings, "rsna": rsna, "models": models}
        )
    for group in content.get_image_measurement_groups():
        (source,) = group.source_images
        sop_uid = source.referenced_sop_instance_uid
        evaluations = _evaluations(group)
        modality, grade = _invert(BILSKY_VALUES)[evaluations[_key(BILSKY_GRADE)]]
        numbers = _numbers(group)
        out["bilsky"].append(
            {
                "series_instance_uid": sop_series[sop_uid],
                "sop_instance_uid": sop_uid,
                "level": _site(group),
                "modality": modality,
                "grade": grade,
                "high_grade": evaluations[_key(HIGH_GRADE_ESCC)] == _key(PRESENT),
                "probability": numbers.pop(_key(probability_concept(BILSKY_GRADE, BILSKY_VALUES[modality, grade]))),
                "models": _models(group),
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------
def test_every_reported_value_round_trips(written: tuple[dict, Path], study: StudyScan) -> None:
    report, path = written
    back = read_back(path)
    frame = load_evidence(study, used_series(report)).frame_of_reference

    assert back["study_instance_uid"] == report["study_instance_uid"]
    assert back["software_names"] == {report["software"]["name"]}
    assert back["software_versions"] == {report["software"]["version"]}
    # Each group names the models whose outputs it holds, each by its report entry as JSON.
    entry_of = {m["name"]: json.dumps(m, sort_keys=True) for m in report["software"]["models"]}

    def entries(*names: str) -> set[str]:
        return {entry_of[name] for name in names}

    labelling = ("vertebra_detector", "level_appearance", "level_context")
    assert [v["models"] for v in back["vertebrae"]] == [
        entries(*labelling, *(("cancer_sct",) if "findings" in v else ())) for v in report["vertebrae"]
    ]
    assert [d["models"] for d in back["discs"]] == [
        entries("disc_grader", *(("rsna_grader",) if d["rsna"] else ())) for d in report["discs"]
    ]
    assert [b["models"] for b in back["bilsky"]] == [entries("canal_detector", "bilsky_mr")] * len(report["bilsky"])

    assert [v["level"] for v in back["vertebrae"]] == [v["level"] for v in report["vertebrae"]]
    for got, want in zip(back["vertebrae"], report["vertebrae"]):
        assert got["centroid_mm"] == pytest.approx(want["centroid_mm"], abs=1e-4)  # SCOORD3D is float32
        assert got["frame_of_reference"] == frame[want["series_instance_uid"]]
        assert got["level_probability"] == want["level_probability"]
        assert got["detection_score"] == want["detection_score"]
        assert got.get("findings") == want.get("findings")
        if "findings" in want:
            assert got["flags"] == {name: p >= 0.5 for name, p in want["findings"].items()}

    assert [d["level"] for d in back["discs"]] == [d["level"] for d in report["discs"]]
    for got, want in zip(back["discs"], report["discs"]):
        assert got["centre_mm"] == pytest.approx(want["centre_mm"], abs=1e-4)
        # Each grading's reported grade with its probability (the other classes' are in the JSON only).
        assert got["gradings"] == {
            name: {"grade": g["grade"], "probability": g["probabilities"][str(g["grade"])]} for name, g in want["gradings"].items()
        }
        assert got["rsna"] == {
            name: {"severity": r["severity"], "probability": r["probabilities"][r["severity"]]} for name, r in want["rsna"].items()
        }

    expected_bilsky = [
        {**{k: v for k, v in b.items() if k not in ("instance_number", "probabilities")},
         "probability": b["probabilities"][b["grade"]]}
        for b in report["bilsky"]
    ]
    assert [{k: v for k, v in b.items() if k != "models"} for b in back["bilsky"]] == expected_bilsky


def test_the_sr_is_a_complete_comprehensive_3d_sr_in_the_study(written: tuple[dict, Path], study: StudyScan) -> None:
    report, path = written
    ds = pydicom.dcmread(path)

    assert ds.SOPClassUID == Comprehensive3DSRStorage
    assert ds.file_meta.MediaStorageSOPClassUID == Comprehensive3DSRStorage
    assert ds.Modality == "SR"
    assert ds.StudyInstanceUID == report["study_instance_uid"]
    assert ds.SeriesInstanceUID not in {s["series_instance_uid"] for s in report["series"]}
    assert str(ds.PatientName) == PATIENT.patient_name and ds.PatientID == PATIENT.patient_id
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "UNVERIFIED"
    assert ds.ValueType == "CONTAINER" and ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99SPINEMAP"
    assert ds.Manufacturer == "spine-map"
    # Evidence: every instance of every used series, nothing else.
    referenced = {
        ref.ReferencedSOPInstanceUID
        for item in ds.CurrentRequestedProcedureEvidenceSequence
        for series in item.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    used = set(used_series(report))
    expected = {i.sop_instance_uid for s in study.series if s.series_instance_uid in used for st in s.stacks for i in st.instances}
    assert referenced == expected
    # Observer: the device, named and identified.
    report_content = hd.sr.srread(path).content
    (observer,) = report_content.get_observer_contexts(observer_type=codes.DCM.Device)
    assert observer.observer_identifying_attributes.name == "spine-map"
    # Groups: one per vertebra, per disc, per Bilsky image.
    assert len(report_content.get_planar_roi_measurement_groups()) == len(report["vertebrae"]) + len(report["discs"])
    assert len(report_content.get_image_measurement_groups()) == len(report["bilsky"])


def test_findings_are_searchable_by_standard_codes(written: tuple[dict, Path]) -> None:
    _, path = written
    content = hd.sr.srread(path).content

    (l4,) = content.get_planar_roi_measurement_groups(finding_site=codes.SCT.L4Vertebra)
    assert l4.tracking_identifier == "vertebra L4"
    (disc,) = content.get_planar_roi_measurement_groups(finding_site=codes.SCT.L4L5Disc)
    assert disc.tracking_identifier == "disc L4/L5"
    metastasis = [
        g for g in content.get_planar_roi_measurement_groups()
        if any(e.name == codes.SCT.Metastasis for e in g.get_qualitative_evaluations())
    ]
    assert len(metastasis) == 4  # every vertebra with cancer findings (L4 has none)


def test_a_report_without_findings_gives_no_sr(study: StudyScan, tmp_path: Path) -> None:
    # TID 1500 needs at least one measurement group; the summary and key images still say so.
    report = study_report(study, assign_roles(study.series), SoftwareInfo("spine-map", "0.1.0"))

    assert write_structured_report(report, study, tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="at least one measurement group"):
        build_structured_report(report, load_evidence(study, used_series(report)))


def test_every_sr_is_a_new_instance_but_tracking_uids_are_stable(written: tuple[dict, Path], study: StudyScan) -> None:
    report, path = written
    evidence = load_evidence(study, used_series(report))
    again = build_structured_report(report, evidence)
    first = pydicom.dcmread(path)

    assert again.SOPInstanceUID != first.SOPInstanceUID
    uids = lambda content: [g.tracking_uid for g in content.get_planar_roi_measurement_groups()]  # noqa: E731
    assert uids(hd.sr.Comprehensive3DSR.from_dataset(again).content) == uids(hd.sr.srread(path).content)


def test_concept_tables_are_unambiguous_and_fit_dicom() -> None:
    for table in (SITES, FINDING_CONCEPTS, GRADING_CONCEPTS, RSNA_CONCEPTS, RSNA_SEVERITY_VALUES, BILSKY_VALUES):
        _invert(table)
        for concept in table.values():
            assert len(concept.meaning) <= 64
    for name in SPINENET_GRADINGS:
        _invert({g: GRADING_VALUES[name, g] for g in SPINENET_GRADINGS[name]})
    # Standard codes where the dictionary has them, the private scheme only for the rest.
    assert _key(SITES["L4"]) == ("SCT", "11994002")
    assert _key(SITES["L5/S1"]) == ("SCT", "715056000")
    assert SITES["L6"].scheme_designator == SITES["L5/L6"].scheme_designator == "99SPINEMAP"
