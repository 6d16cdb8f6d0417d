"""DICOM Comprehensive 3D SR (TID 1500 Measurement Report) of a spine-map study report.

:func:`build_structured_report` turns a validated ``spine_report.json`` dict and the study's
:class:`~operators.core.dicom_io.StudyScan` into a highdicom ``Comprehensive3DSR`` that a PACS or
OHIF can file and show next to the images:

* **Evidence**: every instance of the series the app used (role other than ``unused``), so the SR
  lands in the same study and lists what it looked at.
* **Observer**: the device (spine-map, with a UID derived from name and version); every group
  carries the algorithm identification (TID 4019): name, version and one
  ``Algorithm Parameters`` item per model whose outputs the group holds (:func:`group_models`),
  the model's ``software.models[]`` entry as JSON (name, file, sha256, trained_on).
* **One group per vertebra** (TID 1410 planar ROI): finding site = the vertebra, region =
  SCOORD3D POINT at ``centroid_mm`` in the frame of reference of the series it was detected on;
  measurements ``Level probability``, ``Detection score`` and, when the cancer stage ran, one
  probability per finding; qualitative evaluations ``<finding>: Present/Absent`` at
  :data:`~operators.core.report.CANCER_SUSPICION_THRESHOLD`.
* **One group per disc** (TID 1410): finding site = the disc, SCOORD3D POINT at ``centre_mm``,
  every grading and RSNA condition as a coded qualitative evaluation plus the probability of the
  grade reported (``P(Pfirrmann grade: 3)``).
* **One group per Bilsky-graded axial image** (TID 1501): the image as source, finding site =
  its level, ``Bilsky grade`` and ``High-grade epidural spinal cord compression`` as coded
  evaluations, the probability of the grade reported. (The report carries no canal ROI yet; when
  it does, this becomes a TID 1410 group with that region.)

The probabilities of the other classes stay in ``spine_report.json``: one number per class of every
grading made two thirds of the SR's content items, more than a reader scans in a viewer, and most
of the SR writer's time (highdicom's cost grows with the items).

Not in the SR (they stay in ``spine_report.json``): the four body corners (four 3D points that
need not be coplanar have no TID 1410/1411 region form), series roles and reasons, warnings and
``generated_at``.

Codes: SNOMED CT and DICOM codes from pydicom's code dictionary wherever one exists (vertebrae
C1–L5, discs C2/C3–L5/S1, Present/Absent, Moderate/Severe, Metastasis, Imaging procedure,
Probability); everything else (gradings, Bilsky grades, S1/T13/L6, transitional discs,
probabilities) uses the private coding scheme :data:`CODING_SCHEME`, declared in the
SR's Coding Scheme Identification Sequence. The tables below are the one place the mapping is
written; a reader can invert them (``tests/test_structured_report.py`` does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from operators.core.bilsky_pipeline import BILSKY_MODELS, CANAL_MODEL
from operators.core.cancer_pipeline import CANCER_MODEL
from operators.core.grading_pipeline import MULTIVIEW_MODEL, SPINENET_MODEL
from operators.core.gradings import (
    BILSKY_CT_CLASSES,
    BILSKY_MR_GRADES,
    CANCER_FINDINGS,
    RSNA_CONDITION_TITLES,
    RSNA_CONDITIONS,
    SPINENET_GRADINGS,
)
from operators.core.report import ALL_DISCS, ALL_LEVELS, CANCER_SUSPICION_THRESHOLD
from operators.core.vertebra_pipeline import APPEARANCE_MODEL, CONTEXT_MODEL, DETECTOR_MODEL

if TYPE_CHECKING:
    from operators.core.dicom_io import StudyScan

SR_FILE_NAME = "spine_report_sr.dcm"
#: SeriesNumber of the SR series; high so that viewers list it after the acquired series.
SR_SERIES_NUMBER = 9001

CODING_SCHEME = "99SPINEMAP"
CODING_SCHEME_NAME = "spine-map concepts"

# --------------------------------------------------------------------------------------------------
# Concepts
# --------------------------------------------------------------------------------------------------


def private_concept(value: str, meaning: str) -> hd.sr.CodedConcept:
    """A concept of the spine-map coding scheme (CodeMeaning is LO: at most 64 characters)."""
    if len(meaning) > 64:
        raise ValueError(f"code meaning longer than 64 characters: {meaning!r}")
    return hd.sr.CodedConcept(value=value, scheme_designator=CODING_SCHEME, meaning=meaning)


def _standard(code: Any) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept.from_code(code)


PRESENT = _standard(codes.SCT.Present)
ABSENT = _standard(codes.SCT.Absent)
NO_UNITS = _standard(codes.UCUM.NoUnits)
PROCEDURE_REPORTED = _standard(codes.SCT.ImagingProcedure)
VERTEBRA = _standard(codes.SCT.Vertebra)

LEVEL_PROBABILITY = private_concept("level_probability", "Level probability")
DETECTION_SCORE = private_concept("detection_score", "Vertebral body detection score")


def _level_site(level: str) -> hd.sr.CodedConcept:
    standard = getattr(codes.SCT, f"{level}Vertebra", None)
    return _standard(standard) if standard is not None else private_concept(f"vertebra_{level}", f"{level} vertebra")


def _disc_site(disc: str) -> hd.sr.CodedConcept:
    standard = getattr(codes.SCT, disc.replace("/", "") + "Disc", None)
    return _standard(standard) if standard is not None else private_concept(f"disc_{disc}", f"{disc} disc")


#: Finding site of every level and disc name the report may carry.
SITES: dict[str, hd.sr.CodedConcept] = {
    **{level: _level_site(level) for level in ALL_LEVELS},
    **{disc: _disc_site(disc) for disc in ALL_DISCS},
}

#: Cancer finding → the concept its qualitative evaluation and probability are about.
FINDING_CONCEPTS: dict[str, hd.sr.CodedConcept] = {
    "metastasis": _standard(codes.SCT.Metastasis),
    "fracture": private_concept("vertebral_fracture", "Vertebral fracture"),
    "cord_compression": private_concept("cord_compression", "Spinal cord compression"),
}

_GRADING_TITLES: dict[str, str] = {
    "pfirrmann": "Pfirrmann grade",
    "narrowing": "Disc narrowing grade",
    "central_canal_stenosis": "Central canal stenosis grade",
    "spondylolisthesis": "Spondylolisthesis",
    "upper_endplate_defect": "Upper endplate defect",
    "lower_endplate_defect": "Lower endplate defect",
    "upper_marrow_change": "Upper marrow change",
    "lower_marrow_change": "Lower marrow change",
    "foraminal_stenosis_left": "Left foraminal stenosis",
    "foraminal_stenosis_right": "Right foraminal stenosis",
    "herniation": "Disc herniation",
}
#: SpineNetV2 grading → the concept naming its qualitative evaluation.
GRADING_CONCEPTS: dict[str, hd.sr.CodedConcept] = {
    name: private_concept(name, _GRADING_TITLES[name]) for name in SPINENET_GRADINGS
}


def _grading_value(name: str, grade: int) -> hd.sr.CodedConcept:
    """Binary gradings are Present/Absent (SCT); graded ones get a spine-map code per grade."""
    if SPINENET_GRADINGS[name] == (0, 1):
        return PRESENT if grade == 1 else ABSENT
    return private_concept(f"{name}={grade}", str(grade))


#: ``(grading, grade)`` → coded value of the evaluation.
GRADING_VALUES: dict[tuple[str, int], hd.sr.CodedConcept] = {
    (name, grade): _grading_value(name, grade) for name, grades in SPINENET_GRADINGS.items() for grade in grades
}

#: RSNA condition → the concept naming its evaluation.
RSNA_CONCEPTS: dict[str, hd.sr.CodedConcept] = {
    condition: private_concept(f"rsna_{condition}", RSNA_CONDITION_TITLES[condition]) for condition in RSNA_CONDITIONS
}
#: RSNA severity → coded value ("Normal/Mild" has no SNOMED CT equivalent).
RSNA_SEVERITY_VALUES: dict[str, hd.sr.CodedConcept] = {
    "Normal/Mild": private_concept("normal_or_mild", "Normal/Mild"),
    "Moderate": _standard(codes.SCT.Moderate),
    "Severe": _standard(codes.SCT.Severe),
}

BILSKY_GRADE = private_concept("bilsky_grade", "Bilsky grade")
HIGH_GRADE_ESCC = private_concept("high_grade_escc", "High-grade epidural spinal cord compression")
EPIDURAL_COMPRESSION = private_concept("escc", "Epidural spinal cord compression")
#: ``(modality, grade)`` → coded Bilsky grade (MR: 6 grades; CT: 3 classes).
BILSKY_VALUES: dict[tuple[str, str], hd.sr.CodedConcept] = {
    **{("MR", g): private_concept(f"bilsky_mr={g}", g) for g in BILSKY_MR_GRADES},
    **{("CT", c): private_concept(f"bilsky_ct={c}", f"{c} (CT)") for c in BILSKY_CT_CLASSES},
}


def probability_concept(subject: hd.sr.CodedConcept, value: hd.sr.CodedConcept | None = None) -> hd.sr.CodedConcept:
    """The measurement concept "probability of ``subject`` (being ``value``)".

    Code ``P:<subject code>[=<value code>]``, meaning ``P(<subject meaning>[: <value meaning>])``:
    ``probability_concept(GRADING_CONCEPTS["pfirrmann"], GRADING_VALUES["pfirrmann", 3])`` is
    ``P:pfirrmann=pfirrmann=3`` / ``P(Pfirrmann grade: 3)``.
    """
    if value is None:
        return private_concept(f"P:{subject.value}", f"P({subject.meaning})")
    return private_concept(f"P:{subject.value}={value.value}", f"P({subject.meaning}: {value.meaning})")


# --------------------------------------------------------------------------------------------------
# Evidence: headers of the source instances
# --------------------------------------------------------------------------------------------------
#: Patient and study attributes highdicom copies from the first evidence instance (type 2: may
#: be empty, must be present).
_PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "ReferringPhysicianName",
)
_EVIDENCE_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "Modality", "Rows", "Columns", "NumberOfFrames",  # highdicom checks that an image source is an image
)


@dataclass(frozen=True)
class SourceEvidence:
    """Headers of the source instances an SR (or a key image) refers to.

    Attributes:
        datasets: one header per source instance (first one complete, others the UIDs only),
            in series then slice order.
        frame_of_reference: SeriesInstanceUID → FrameOfReferenceUID (series that have one).
        series_of_instance: SOPInstanceUID → SeriesInstanceUID.
    """

    datasets: tuple[Dataset, ...]
    frame_of_reference: Mapping[str, str]
    series_of_instance: Mapping[str, str]

    def dataset(self, sop_instance_uid: str) -> Dataset:
        for ds in self.datasets:
            if ds.SOPInstanceUID == sop_instance_uid:
                return ds
        raise KeyError(sop_instance_uid)


def _read_header(path: Path, force: bool, keywords: Sequence[str] | None) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True, force=force, specific_tags=list(keywords) if keywords else None)


def load_evidence(study: StudyScan, series_instance_uids: Iterable[str]) -> SourceEvidence:
    """Read the headers of every instance of the given series of ``study`` (no pixel data).

    Frames of one multi-frame file are one instance. The first instance is read in full (its
    patient and study attributes go into the SR, missing type-2 ones as empty values); the others
    only for their UIDs.
    """
    wanted = set(series_instance_uids)
    datasets: list[Dataset] = []
    seen: set[str] = set()
    frame_of_reference: dict[str, str] = {}
    for series in study.series:
        if series.series_instance_uid not in wanted:
            continue
        for stack in series.stacks:
            for instance in stack.instances:
                if instance.sop_instance_uid in seen:
                    continue
                seen.add(instance.sop_instance_uid)
                ds = _read_header(instance.path, instance.without_preamble, None if not datasets else _EVIDENCE_KEYWORDS)
                if not datasets:
                    for keyword in _PATIENT_STUDY_KEYWORDS:
                        if keyword not in ds:
                            setattr(ds, keyword, None)
                datasets.append(ds)
                if "FrameOfReferenceUID" in ds:
                    frame_of_reference.setdefault(series.series_instance_uid, str(ds.FrameOfReferenceUID))
    return SourceEvidence(
        tuple(datasets), frame_of_reference, {str(ds.SOPInstanceUID): str(ds.SeriesInstanceUID) for ds in datasets}
    )


# --------------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------------
def _tracking(study_uid: str, kind: str, key: str, text: str) -> hd.sr.TrackingIdentifier:
    """Tracking identifier with a UID derived from study and item, so reruns track the same item."""
    return hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=[study_uid, kind, key]), identifier=text)


def _probability(subject: hd.sr.CodedConcept, p: float, value: hd.sr.CodedConcept | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=probability_concept(subject, value), value=float(p), unit=NO_UNITS)


def _point(point_mm: Sequence[float], frame_of_reference_uid: str) -> hd.sr.ImageRegion3D:
    return hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.asarray([point_mm], dtype=np.float64),
        frame_of_reference_uid=frame_of_reference_uid,
    )


def _vertebra_group(
    entry: Mapping[str, Any], study_uid: str, frame_of_reference_uid: str, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    measurements = [
        hd.sr.Measurement(name=LEVEL_PROBABILITY, value=entry["level_probability"], unit=NO_UNITS),
        hd.sr.Measurement(name=DETECTION_SCORE, value=entry["detection_score"], unit=NO_UNITS),
    ]
    evaluations = []
    for name in CANCER_FINDINGS:
        if name not in entry.get("findings", {}):
            continue
        p = entry["findings"][name]
        measurements.append(_probability(FINDING_CONCEPTS[name], p))
        evaluations.append(
            hd.sr.QualitativeEvaluation(FINDING_CONCEPTS[name], PRESENT if p >= CANCER_SUSPICION_THRESHOLD else ABSENT)
        )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(study_uid, "vertebra", f"{entry['series_instance_uid']}/{entry['level']}", f"vertebra {entry['level']}"),
        referenced_region=_point(entry["centroid_mm"], frame_of_reference_uid),
        finding_type=VERTEBRA,
        finding_sites=[hd.sr.FindingSite(SITES[entry["level"]])],
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )


def _disc_group(
    entry: Mapping[str, Any], study_uid: str, frame_of_reference_uid: str, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    measurements, evaluations = [], []
    for name in SPINENET_GRADINGS:
        if name not in entry["gradings"]:
            continue
        result = entry["gradings"][name]
        value = GRADING_VALUES[name, result["grade"]]
        evaluations.append(hd.sr.QualitativeEvaluation(GRADING_CONCEPTS[name], value))
        measurements.append(_probability(GRADING_CONCEPTS[name], result["probabilities"][str(result["grade"])], value))
    for condition in RSNA_CONDITIONS:
        if condition not in entry["rsna"]:
            continue
        result = entry["rsna"][condition]
        value = RSNA_SEVERITY_VALUES[result["severity"]]
        evaluations.append(hd.sr.QualitativeEvaluation(RSNA_CONCEPTS[condition], value))
        measurements.append(_probability(RSNA_CONCEPTS[condition], result["probabilities"][result["severity"]], value))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(study_uid, "disc", entry["level"], f"disc {entry['level']}"),
        referenced_region=_point(entry["centre_mm"], frame_of_reference_uid),
        finding_sites=[hd.sr.FindingSite(SITES[entry["level"]])],
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )


def _bilsky_group(
    entry: Mapping[str, Any], study_uid: str, source: Dataset, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    grade = BILSKY_VALUES[entry["modality"], entry["grade"]]
    number = entry.get("instance_number")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(
            study_uid, "bilsky", entry["sop_instance_uid"],
            f"Bilsky {entry['level'] or 'level unknown'}" + (f" image {number}" if number is not None else ""),
        ),
        finding_type=EPIDURAL_COMPRESSION,
        finding_sites=[hd.sr.FindingSite(SITES[entry["level"]])] if entry["level"] else None,
        algorithm_id=algorithm,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(BILSKY_GRADE, grade),
            hd.sr.QualitativeEvaluation(HIGH_GRADE_ESCC, PRESENT if entry["high_grade"] else ABSENT),
        ],
        measurements=[_probability(BILSKY_GRADE, entry["probabilities"][entry["grade"]], grade)],
    )


def group_models(kind: str, entry: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the models whose outputs a measurement group of ``kind`` (``"vertebra"``,
    ``"disc"``, ``"bilsky"``) made from report ``entry`` holds: its algorithm identification lists
    these, not every model of the run (listing all nine in every group made a quarter of the SR's
    content items, and said less about where each value came from)."""
    if kind == "vertebra":
        return (DETECTOR_MODEL, APPEARANCE_MODEL, CONTEXT_MODEL) + ((CANCER_MODEL,) if entry.get("findings") else ())
    if kind == "disc":
        return ((SPINENET_MODEL,) if entry["gradings"] else ()) + ((MULTIVIEW_MODEL,) if entry["rsna"] else ())
    return (CANAL_MODEL, BILSKY_MODELS[entry["modality"]])


def algorithm_identification(software: Mapping[str, Any], models: Sequence[str]) -> hd.sr.AlgorithmIdentification:
    """TID 4019 for ``report["software"]``: one parameter per model named in ``models`` (those
    ``software.models`` lists), its entry as sorted-key JSON."""
    parameters = [json.dumps(model, sort_keys=True) for model in software["models"] if model["name"] in models]
    return hd.sr.AlgorithmIdentification(name=software["name"], version=software["version"], parameters=parameters or None)


def _disc_frame_of_reference(disc: str, report: Mapping[str, Any], evidence: SourceEvidence) -> str | None:
    """Frame of reference for a disc centre: the series of its upper (else lower) vertebra, else the
    first used sagittal series with one. (Discs are found on the vertebrae's sagittal series.)"""
    upper, _, lower = disc.partition("/")
    by_level = {v["level"]: v["series_instance_uid"] for v in report["vertebrae"]}
    candidates = [by_level.get(upper), by_level.get(lower)]
    candidates += [s["series_instance_uid"] for s in report["series"] if s["role"].startswith("sag_")]
    for series_uid in candidates:
        if series_uid in evidence.frame_of_reference:
            return evidence.frame_of_reference[series_uid]
    return None


def used_series(report: Mapping[str, Any]) -> list[str]:
    """SeriesInstanceUIDs of the series the app used (all readable series when it used none)."""
    used = [s["series_instance_uid"] for s in report["series"] if s["role"] != "unused"]
    return used or [s["series_instance_uid"] for s in report["series"]]


def build_structured_report(
    report: Mapping[str, Any],
    evidence: SourceEvidence,
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR of a validated report (see the module docstring for its content).

    Args:
        report: a ``spine_report.json`` dict that passed :func:`~operators.core.report.validate_report`.
        evidence: headers of the source instances (:func:`load_evidence` of :func:`used_series`).
        series_instance_uid / sop_instance_uid: UIDs of the new SR (new random ones by default:
            every SR written is a new instance).

    Raises:
        ValueError: ``evidence`` is empty, the report has no vertebra, disc or Bilsky entry, or an
            item has no frame of reference / source image in ``evidence``.
    """
    if not evidence.datasets:
        raise ValueError("an SR needs at least one source instance as evidence")
    study_uid = report["study_instance_uid"]
    software = report["software"]
    identifications: dict[tuple[str, ...], hd.sr.AlgorithmIdentification] = {}

    def algorithm(kind: str, entry: Mapping[str, Any]) -> hd.sr.AlgorithmIdentification:
        models = group_models(kind, entry)
        if models not in identifications:
            identifications[models] = algorithm_identification(software, models)
        return identifications[models]

    groups: list[Any] = []
    for entry in report["vertebrae"]:
        frame = evidence.frame_of_reference.get(entry["series_instance_uid"])
        if frame is None:
            raise ValueError(f"vertebra {entry['level']}: its series has no frame of reference among the evidence")
        groups.append(_vertebra_group(entry, study_uid, frame, algorithm("vertebra", entry)))
    for entry in report["discs"]:
        frame = _disc_frame_of_reference(entry["level"], report, evidence)
        if frame is None:
            raise ValueError(f"disc {entry['level']}: no series with a frame of reference among the evidence")
        groups.append(_disc_group(entry, study_uid, frame, algorithm("disc", entry)))
    for entry in report["bilsky"]:
        groups.append(_bilsky_group(entry, study_uid, evidence.dataset(entry["sop_instance_uid"]), algorithm("bilsky", entry)))
    if not groups:
        raise ValueError("TID 1500 needs at least one measurement group: the report has no findings")

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[software["name"], software["version"]]),
            name=software["name"],
            model_name=software["version"],
        ),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence.datasets),
        content=content,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=software["name"],
        series_description=f"{software['name']} {software['version']} measurement report",
        is_complete=True,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = CODING_SCHEME
    scheme.CodingSchemeName = CODING_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = software["name"]
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def write_structured_report(report: Mapping[str, Any], study: StudyScan, out_dir: Path) -> Path | None:
    """Build the SR of ``report`` and save it as ``out_dir/SR_FILE_NAME``.

    Returns:
        The file written, or ``None`` when the report has no vertebra, disc or Bilsky entry (TID
        1500 needs at least one measurement group) or no readable series to refer to.
    """
    series = used_series(report)
    if not series or not (report["vertebrae"] or report["discs"] or report["bilsky"]):
        return None
    sr = build_structured_report(report, load_evidence(study, series))
    path = Path(out_dir) / SR_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        sr.save_as(temporary, enforce_file_format=True)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path

