"""``spine_report.json`` and ``spine_report.csv``: build, validate and write the study report.

This module is the one home of the report contract of design §3. Stages hand their results to
:func:`build_report` as typed entries (:class:`SeriesEntry`, :class:`VertebraEntry`,
:class:`DiscEntry`, :class:`BilskyEntry`); :func:`write_report` validates the result against the
shipped JSON Schema and writes both files atomically.

The schema (``spine_report.schema.json``, JSON Schema draft 2020-12) is *generated* by
:func:`build_schema` from the level, grading and role tables, never edited by hand; a test checks
that the shipped file equals the generated one. Regenerate it after changing a table with::

    python -m operators.core.report --write-schema

Determinism: two runs on the same study write byte-identical files except for the single
timestamp field ``generated_at`` (UTC, ISO 8601). Keys are sorted, list order is fixed by
:func:`build_report` (series by SeriesNumber then UID, vertebrae and discs cranial → caudal,
Bilsky images by series then InstanceNumber), coordinates are rounded to 0.001 mm and
probabilities to 1e-4.

All coordinates are DICOM patient coordinates (LPS) in millimetres.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import jsonschema

from operators.core.gradings import (
    BILSKY_CT_CLASSES,
    BILSKY_MR_GRADES,
    CANCER_FINDINGS,
    RSNA_CONDITIONS,
    RSNA_SEVERITIES,
    SPINENET_GRADINGS,
    bilsky_ct_class,
    bilsky_is_high_grade,
)
from operators.core.levels import (
    LEVELS,
    TRANSITIONAL_AFTER,
    VERTEBRA_CORNERS,
    disc_levels,
    discs_between,
    level_order,
    levels_with_transitional,
)
from operators.core.series_roles import ROLES
from operators.core.study_warning import StudyWarning

if TYPE_CHECKING:
    from operators.core.dicom_io import StudyScan
    from operators.core.series_roles import SeriesDecision

SCHEMA_VERSION = "1.0"
REPORT_JSON_NAME = "spine_report.json"
REPORT_CSV_NAME = "spine_report.csv"
SCHEMA_PATH = Path(__file__).with_name("spine_report.schema.json")

#: A vertebra counts towards ``summary.cancer_suspected`` when its metastasis probability reaches this.
CANCER_SUSPICION_THRESHOLD = 0.5

_COORDINATE_DECIMALS = 3  # 0.001 mm: far below any voxel, stable across platforms
_PROBABILITY_DECIMALS = 4

#: Every level name the report may carry, cranial → caudal (standard plus transitional).
ALL_LEVELS: tuple[str, ...] = tuple(sorted((*LEVELS, *TRANSITIONAL_AFTER), key=level_order))


def _all_disc_names() -> tuple[str, ...]:
    """Every disc name between adjacent levels of any (transitional or not) spine, cranial → caudal.

    C1/C2 is left out: the atlanto-axial joint has no intervertebral disc.
    """
    names: set[str] = set()
    for thirteen_thoracic in (False, True):
        for six_lumbar in (False, True):
            names.update(discs_between(levels_with_transitional(thirteen_thoracic, six_lumbar)))
    names.discard("C1/C2")
    return tuple(sorted(names, key=lambda name: tuple(level_order(level) for level in disc_levels(name))))


ALL_DISCS: tuple[str, ...] = _all_disc_names()


class ReportValidationError(ValueError):
    """A report does not match ``spine_report.schema.json``; the message names the field and the rule."""


class ReportWriteError(Exception):
    """The report files could not be written (read-only folder, full disk, …)."""


# --------------------------------------------------------------------------------------------------
# Entries the stages fill
# --------------------------------------------------------------------------------------------------
def _finite(value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"report values must be finite numbers, got {number}")
    return number


def _point(values: Sequence[float]) -> list[float]:
    point = [round(_finite(v), _COORDINATE_DECIMALS) for v in values]
    if len(point) != 3:
        raise ValueError(f"a point needs 3 coordinates, got {len(point)}")
    return point


def _probability(value: float) -> float:
    return round(_finite(value), _PROBABILITY_DECIMALS)


def _rank(name: str, table: Sequence[str]) -> int:
    """Position of ``name`` in ``table``; unknown names sort last (and then fail validation)."""
    return table.index(name) if name in table else len(table)


def _class_probabilities(classes: Sequence[Any], probabilities: Sequence[float], what: str) -> dict[str, float]:
    """``{str(class): probability}`` for one classifier output given in ``classes`` order."""
    if len(probabilities) != len(classes):
        raise ValueError(f"{what}: {len(probabilities)} probabilities for {len(classes)} classes")
    return {str(c): _probability(p) for c, p in zip(classes, probabilities)}


def _most_probable(classes: Sequence[Any], probabilities: Sequence[float]) -> Any:
    return classes[max(range(len(classes)), key=lambda i: float(probabilities[i]))]


@dataclass(frozen=True)
class ModelInfo:
    """One model the run used (``software.models[]``)."""

    name: str
    file: str
    sha256: str
    trained_on: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "sha256": self.sha256, "trained_on": self.trained_on}


@dataclass(frozen=True)
class SoftwareInfo:
    """``software``: the application that wrote the report and the models it ran."""

    name: str
    version: str
    models: tuple[ModelInfo, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "models": [m.to_json() for m in self.models]}


@dataclass(frozen=True)
class SeriesEntry:
    """``series[]``: one readable image series of the study and the role the selector gave it.

    Attributes:
        series_instance_uid: SeriesInstanceUID.
        description: SeriesDescription as found ("" when absent).
        modality: Modality as found (``"MR"``, ``"CT"``, …).
        role: one of :data:`operators.core.series_roles.ROLES`.
        reason: why the selector gave that role (one line).
        series_number: SeriesNumber, when present.
    """

    series_instance_uid: str
    description: str
    modality: str
    role: str
    reason: str
    series_number: int | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "series_instance_uid": self.series_instance_uid,
            "description": self.description,
            "modality": self.modality,
            "role": self.role,
            "reason": self.reason,
        }
        if self.series_number is not None:
            entry["series_number"] = int(self.series_number)
        return entry


@dataclass(frozen=True)
class VertebraEntry:
    """``vertebrae[]``: one detected and labelled vertebral body.

    Attributes:
        level: level name (``"L4"``; ``"L6"``/``"T13"`` only for transitional anatomy).
        level_probability: labeller probability of ``level``, 0..1.
        series_instance_uid: sagittal series the vertebra was detected on.
        centroid_mm: body centroid, LPS mm, shape (3,).
        corners_mm: the 4 body corners in :data:`~operators.core.levels.VERTEBRA_CORNERS` order,
            LPS mm, shape (4, 3).
        detection_score: detector confidence, 0..1.
        findings: probability 0..1 per :data:`~operators.core.gradings.CANCER_FINDINGS` name, or
            ``None`` when the cancer stage did not run (or could not assess this vertebra).
        needs_review: with ``findings``: a probability sits near the decision threshold
            (:data:`CANCER_SUSPICION_THRESHOLD`), so a reader should look at this vertebra.
    """

    level: str
    level_probability: float
    series_instance_uid: str
    centroid_mm: Sequence[float]
    corners_mm: Sequence[Sequence[float]]
    detection_score: float
    findings: Mapping[str, float] | None = None
    needs_review: bool | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "level": self.level,
            "level_probability": _probability(self.level_probability),
            "series_instance_uid": self.series_instance_uid,
            "centroid_mm": _point(self.centroid_mm),
            "corners_mm": [_point(corner) for corner in self.corners_mm],
            "detection_score": _probability(self.detection_score),
        }
        if self.findings is not None:
            entry["findings"] = {name: _probability(p) for name, p in self.findings.items()}
            entry["needs_review"] = bool(self.needs_review)
        return entry


@dataclass(frozen=True)
class DiscEntry:
    """``discs[]``: gradings of one intervertebral disc.

    Attributes:
        level: disc name, upper level first (``"L4/L5"``).
        centre_mm: disc centre, LPS mm, shape (3,).
        gradings: SpineNetV2 grading name → class probabilities in
            :data:`~operators.core.gradings.SPINENET_GRADINGS` class order. The reported grade is
            the most probable class.
        rsna: RSNA 2024 condition → probabilities in :data:`~operators.core.gradings.RSNA_SEVERITIES`
            order (lumbar discs only; empty elsewhere).
    """

    level: str
    centre_mm: Sequence[float]
    gradings: Mapping[str, Sequence[float]] = field(default_factory=dict)
    rsna: Mapping[str, Sequence[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        gradings = {}
        for name, probabilities in self.gradings.items():
            classes = SPINENET_GRADINGS[name]
            gradings[name] = {
                "grade": _most_probable(classes, probabilities),
                "probabilities": _class_probabilities(classes, probabilities, name),
            }
        rsna = {
            condition: {
                "severity": _most_probable(RSNA_SEVERITIES, probabilities),
                "probabilities": _class_probabilities(RSNA_SEVERITIES, probabilities, condition),
            }
            for condition, probabilities in self.rsna.items()
        }
        return {"level": self.level, "centre_mm": _point(self.centre_mm), "gradings": gradings, "rsna": rsna}


@dataclass(frozen=True)
class BilskyEntry:
    """``bilsky[]``: the Bilsky grade of one axial image.

    Attributes:
        series_instance_uid / sop_instance_uid: the graded image.
        level: vertebra level or disc name at the image (``"T10"``, ``"T10/T11"``); ``None`` when no
            labelled vertebra places it (no sagittal localisation, or beyond the labelled levels).
        modality: ``"MR"`` (6 grades, :data:`BILSKY_MR_GRADES`) or ``"CT"`` (3 classes,
            :data:`BILSKY_CT_CLASSES`).
        probabilities: classifier output in that grade order. The reported grade is the most
            probable one; ``high_grade`` follows from it.
        instance_number: InstanceNumber of the image, when present (helps finding it in a viewer).
    """

    series_instance_uid: str
    sop_instance_uid: str
    level: str | None
    modality: str
    probabilities: Sequence[float]
    instance_number: int | None = None

    def to_json(self) -> dict[str, Any]:
        if self.modality not in ("MR", "CT"):
            raise ValueError(f"Bilsky grading needs an MR or CT image, not {self.modality!r}")
        grades = BILSKY_MR_GRADES if self.modality == "MR" else BILSKY_CT_CLASSES
        grade = _most_probable(grades, self.probabilities)
        entry: dict[str, Any] = {
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "level": self.level,
            "modality": self.modality,
            "grade": grade,
            "high_grade": bilsky_is_high_grade(grade),
            "probabilities": _class_probabilities(grades, self.probabilities, "bilsky"),
        }
        if self.instance_number is not None:
            entry["instance_number"] = int(self.instance_number)
        return entry


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------
def _bilsky_severity(grade: str) -> tuple[int, int]:
    """Sort key for Bilsky grades across modalities: CT class rank first, then MR detail.

    An MR grade outranks the CT class it collapses to (it is the more specific finding).
    """
    if grade in BILSKY_MR_GRADES:
        return BILSKY_CT_CLASSES.index(bilsky_ct_class(grade)), BILSKY_MR_GRADES.index(grade)
    return BILSKY_CT_CLASSES.index(grade), -1


def _summary(series: list[dict], vertebrae: list[dict], bilsky: list[dict]) -> dict[str, Any]:
    """``summary``: what a reader wants first.

    * ``levels_found``: distinct vertebral levels reported, cranial → caudal.
    * ``highest_bilsky``: most severe Bilsky grade of any image (see :func:`_bilsky_severity`), or
      null when no image was graded.
    * ``cancer_suspected``: any vertebra with metastasis probability ≥ :data:`CANCER_SUSPICION_THRESHOLD`;
      null when no vertebra carries cancer findings (the stage did not run).
    * ``series_used``: number of series with a role other than ``unused``.
    """
    levels = sorted({v["level"] for v in vertebrae}, key=lambda level: _rank(level, ALL_LEVELS))
    grades = [b["grade"] for b in bilsky]
    assessed = [v["findings"] for v in vertebrae if "findings" in v]
    return {
        "levels_found": levels,
        "highest_bilsky": max(grades, key=_bilsky_severity) if grades else None,
        "cancer_suspected": (
            any(f["metastasis"] >= CANCER_SUSPICION_THRESHOLD for f in assessed) if assessed else None
        ),
        "series_used": sum(1 for s in series if s["role"] != "unused"),
    }


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC timestamp with second precision (``2026-01-01T12:00:00Z``)."""
    moment = (moment or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_report(
    *,
    study_instance_uid: str | None,
    software: SoftwareInfo,
    series: Iterable[SeriesEntry] = (),
    vertebrae: Iterable[VertebraEntry] = (),
    discs: Iterable[DiscEntry] = (),
    bilsky: Iterable[BilskyEntry] = (),
    warnings: Iterable[StudyWarning] = (),
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """Assemble a ``spine_report.json`` document (not yet validated; see :func:`validate_report`).

    Args:
        study_instance_uid: StudyInstanceUID, ``None`` when nothing readable was found.
        software: application name/version and the models used.
        series: every readable image series with its role.
        vertebrae / discs / bilsky: stage results (empty until those stages run).
        warnings: problems found, in the order they were raised (exact duplicates dropped).
        generated_at: report time (defaults to now); the only time-dependent field.

    Returns:
        The report as a JSON-ready dict.
    """
    series_json = [
        s.to_json()
        for s in sorted(
            series,
            key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid),
        )
    ]
    vertebrae_json = sorted(
        (v.to_json() for v in vertebrae), key=lambda v: (_rank(v["level"], ALL_LEVELS), v["series_instance_uid"])
    )
    discs_json = sorted((d.to_json() for d in discs), key=lambda d: _rank(d["level"], ALL_DISCS))
    bilsky_json = sorted(
        (b.to_json() for b in bilsky),
        key=lambda b: (b["series_instance_uid"], b.get("instance_number", 0), b["sop_instance_uid"]),
    )
    unique_warnings = list(dict.fromkeys(warnings))
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": utc_timestamp(generated_at),
        "study_instance_uid": study_instance_uid,
        "software": software.to_json(),
        "series": series_json,
        "vertebrae": vertebrae_json,
        "discs": discs_json,
        "bilsky": bilsky_json,
        "summary": _summary(series_json, vertebrae_json, bilsky_json),
        "warnings": [w.to_json() for w in unique_warnings],
    }


def study_report(
    study: StudyScan,
    decisions: Sequence[SeriesDecision],
    software: SoftwareInfo,
    *,
    vertebrae: Iterable[VertebraEntry] = (),
    discs: Iterable[DiscEntry] = (),
    bilsky: Iterable[BilskyEntry] = (),
    warnings: Iterable[StudyWarning] = (),
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The report of one study: its scanned series with their roles plus whatever the stages found.

    Args:
        study: the loader's scan (series, StudyInstanceUID, loader warnings).
        decisions: the series selector's decision for every series of ``study``.
        software / vertebrae / discs / bilsky / generated_at: as in :func:`build_report`.
        warnings: warnings of the later stages, appended after the loader's, the selector's and
            the :func:`coverage_warnings`.

    Raises:
        KeyError: a series of ``study`` has no decision (a pipeline bug).
    """
    by_uid = {decision.series_instance_uid: decision for decision in decisions}
    series = [
        SeriesEntry(
            series_instance_uid=s.series_instance_uid,
            description=s.description,
            modality=s.modality,
            role=by_uid[s.series_instance_uid].role,
            reason=by_uid[s.series_instance_uid].reason,
            series_number=s.series_number,
        )
        for s in study.series
    ]
    selector_warnings = [w for s in study.series for w in by_uid[s.series_instance_uid].warnings]
    return build_report(
        study_instance_uid=study.study_instance_uid,
        software=software,
        series=series,
        vertebrae=vertebrae,
        discs=discs,
        bilsky=bilsky,
        warnings=[*study.warnings, *selector_warnings, *coverage_warnings(series), *warnings],
        generated_at=generated_at,
    )


#: Roles the vertebra detector, labeller and disc graders start from.
SAGITTAL_ROLES: tuple[str, ...] = ("sag_t1", "sag_t2", "sag_stir")


def coverage_warnings(series: Sequence[SeriesEntry]) -> list[StudyWarning]:
    """Study-level warnings about what the selected series allow (none when nothing was readable:
    the loader already says so).

    * ``NO_USABLE_SERIES``: series were read but the selector could use none of them.
    * ``NO_SAGITTAL_SERIES``: no sagittal T1/T2/STIR, so vertebrae cannot be detected or labelled
      and discs cannot be graded; axial and CT results (Bilsky) are still possible.
    """
    roles = {entry.role for entry in series}
    if not series:
        return []
    if roles == {"unused"}:
        return [
            StudyWarning(
                "NO_USABLE_SERIES",
                f"None of the {len(series)} image series can be used (see the reason given for each series).",
            )
        ]
    if not roles.intersection(SAGITTAL_ROLES):
        return [
            StudyWarning(
                "NO_SAGITTAL_SERIES",
                "No usable sagittal T1, T2 or STIR series: vertebrae cannot be detected or labelled and discs "
                "cannot be graded.",
            )
        ]
    return []


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------
def _enum(values: Iterable[Any], description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": list(values)}
    if description:
        schema["description"] = description
    return schema


def _classifier(classes: Sequence[Any], value_key: str) -> dict[str, Any]:
    """Schema of ``{value_key: class, probabilities: {class: p}}`` for one classifier output."""
    keys = [str(c) for c in classes]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [value_key, "probabilities"],
        "properties": {
            value_key: _enum(classes),
            "probabilities": {
                "type": "object",
                "additionalProperties": False,
                "required": keys,
                "properties": {key: {"$ref": "#/$defs/probability"} for key in keys},
            },
        },
    }


def _object(required: Sequence[str], properties: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": list(required),
        "properties": properties,
    }


def build_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``spine_report.json``, generated from the shared tables."""
    ref = lambda name: {"$ref": f"#/$defs/{name}"}  # noqa: E731 - keeps the table below readable
    array_of = lambda name: {"type": "array", "items": ref(name)}  # noqa: E731
    defs: dict[str, Any] = {
        "uid": {"type": "string", "minLength": 1, "description": "DICOM UID as found in the data"},
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "point_mm": {
            "type": "array",
            "description": "DICOM patient coordinates (LPS), millimetres",
            "items": {"type": "number"},
            "minItems": 3,
            "maxItems": 3,
        },
        "level": _enum(ALL_LEVELS, "vertebral level; T13/L6 only with transitional anatomy"),
        "disc_level": _enum(ALL_DISCS, "disc named by its two vertebrae, upper first"),
        "model": _object(
            ("name", "file", "sha256", "trained_on"),
            {
                "name": {"type": "string", "minLength": 1},
                "file": {"type": "string", "minLength": 1},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "trained_on": {"type": "string"},
            },
            "one model file used by the run",
        ),
        "series": _object(
            ("series_instance_uid", "description", "modality", "role", "reason"),
            {
                "series_instance_uid": ref("uid"),
                "description": {"type": "string"},
                "modality": {"type": "string"},
                "role": _enum(ROLES),
                "reason": {"type": "string", "minLength": 1},
                "series_number": {"type": "integer"},
            },
            "one readable image series and the role the series selector gave it",
        ),
        "findings": _object(
            CANCER_FINDINGS,
            {name: ref("probability") for name in CANCER_FINDINGS},
            "per-vertebra cancer finding probabilities",
        ),
        "vertebra": _object(
            ("level", "level_probability", "series_instance_uid", "centroid_mm", "corners_mm", "detection_score"),
            {
                "level": ref("level"),
                "level_probability": ref("probability"),
                "series_instance_uid": ref("uid"),
                "centroid_mm": ref("point_mm"),
                "corners_mm": {
                    "type": "array",
                    "description": "body corners in this order: " + ", ".join(VERTEBRA_CORNERS),
                    "items": ref("point_mm"),
                    "minItems": len(VERTEBRA_CORNERS),
                    "maxItems": len(VERTEBRA_CORNERS),
                },
                "detection_score": ref("probability"),
                "findings": ref("findings"),
                "needs_review": {
                    "type": "boolean",
                    "description": "with findings: a finding's probability is near the decision threshold; a reader should look",
                },
            },
            "one detected, labelled vertebral body",
        ),
        "disc": _object(
            ("level", "centre_mm", "gradings", "rsna"),
            {
                "level": ref("disc_level"),
                "centre_mm": ref("point_mm"),
                "gradings": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {name: _classifier(classes, "grade") for name, classes in SPINENET_GRADINGS.items()},
                },
                "rsna": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {condition: _classifier(RSNA_SEVERITIES, "severity") for condition in RSNA_CONDITIONS},
                },
            },
            "gradings of one intervertebral disc",
        ),
        "bilsky": {
            **_object(
                ("series_instance_uid", "sop_instance_uid", "level", "modality", "grade", "high_grade", "probabilities"),
                {
                    "series_instance_uid": ref("uid"),
                    "sop_instance_uid": ref("uid"),
                    "instance_number": {"type": "integer"},
                    "level": {"anyOf": [ref("level"), ref("disc_level"), {"type": "null"}]},
                    "modality": _enum(("MR", "CT")),
                    "grade": {},
                    "high_grade": {"type": "boolean"},
                    "probabilities": {},
                },
                "Bilsky grade of one axial image (MR: 6 grades; CT: 3 classes)",
            ),
            "if": {"properties": {"modality": {"const": "MR"}}},
            "then": {"properties": _classifier(BILSKY_MR_GRADES, "grade")["properties"]},
            "else": {"properties": _classifier(BILSKY_CT_CLASSES, "grade")["properties"]},
        },
        "warning": _object(
            ("code", "message"),
            {
                "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                "message": {"type": "string", "minLength": 1},
                "series_instance_uid": ref("uid"),
            },
            "a problem found while processing the study",
        ),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:spine-map:spine_report:" + SCHEMA_VERSION,
        "title": "spine-map study report (spine_report.json)",
        "description": "Generated by `python -m operators.core.report --write-schema`; do not edit by hand.",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "schema_version",
            "generated_at",
            "study_instance_uid",
            "software",
            "series",
            "vertebrae",
            "discs",
            "bilsky",
            "summary",
            "warnings",
        ],
        "properties": {
            "schema_version": {"type": "string", "pattern": r"^1\.[0-9]+$"},
            "generated_at": {
                "type": "string",
                "format": "date-time",
                "description": "UTC time the report was written: the only time-dependent field",
            },
            "study_instance_uid": {"anyOf": [ref("uid"), {"type": "null"}]},
            "software": _object(
                ("name", "version", "models"),
                {
                    "name": {"type": "string", "minLength": 1},
                    "version": {"type": "string", "minLength": 1},
                    "models": array_of("model"),
                },
                "the application that wrote the report",
            ),
            "series": array_of("series"),
            "vertebrae": array_of("vertebra"),
            "discs": array_of("disc"),
            "bilsky": array_of("bilsky"),
            "summary": _object(
                ("levels_found", "highest_bilsky", "cancer_suspected", "series_used"),
                {
                    "levels_found": {"type": "array", "items": ref("level"), "uniqueItems": True},
                    "highest_bilsky": _enum((*BILSKY_MR_GRADES, *BILSKY_CT_CLASSES, None)),
                    "cancer_suspected": {"type": ["boolean", "null"]},
                    "series_used": {"type": "integer", "minimum": 0},
                },
                "study-level summary; null means not assessed",
            ),
            "warnings": array_of("warning"),
        },
        "$defs": defs,
    }


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The shipped ``spine_report.schema.json``."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def validate_report(report: Mapping[str, Any]) -> None:
    """Check ``report`` against the schema.

    Raises:
        ReportValidationError: naming the first offending field (JSON path) and the rule it breaks.
    """
    errors = sorted(_validator().iter_errors(report), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ReportValidationError(f"{REPORT_JSON_NAME} is invalid at {error.json_path}: {error.message}{more}")


# --------------------------------------------------------------------------------------------------
# CSV: one long table, one row per reported item
# --------------------------------------------------------------------------------------------------
#: Columns of ``spine_report.csv``. Each section of the report contributes rows through its row
#: builder in :data:`_CSV_SECTIONS`; the ``record`` column says which kind of row it is.
CSV_COLUMNS: tuple[str, ...] = (
    "record",
    "level",
    "item",
    "value",
    "probability",
    "series_instance_uid",
    "sop_instance_uid",
    "modality",
    "x_mm",
    "y_mm",
    "z_mm",
    "description",
    "reason",
)


def _at(point: Sequence[float]) -> dict[str, float]:
    return {"x_mm": point[0], "y_mm": point[1], "z_mm": point[2]}


def _series_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "record": "series",
            "item": "role",
            "value": entry["role"],
            "series_instance_uid": entry["series_instance_uid"],
            "modality": entry["modality"],
            "description": entry["description"],
            "reason": entry["reason"],
        }
    ]


def _vertebra_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    common = {"level": entry["level"], "series_instance_uid": entry["series_instance_uid"], **_at(entry["centroid_mm"])}
    rows = [
        {**common, "record": "vertebra", "item": "level", "value": entry["level"], "probability": entry["level_probability"]},
        {**common, "record": "vertebra", "item": "detection", "probability": entry["detection_score"]},
    ]
    rows += [
        {**common, "record": "vertebra_finding", "item": name, "probability": p}
        for name, p in sorted(entry.get("findings", {}).items(), key=lambda kv: CANCER_FINDINGS.index(kv[0]))
    ]
    return rows


def _disc_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    common = {"level": entry["level"], **_at(entry["centre_mm"])}
    rows = [
        {
            **common,
            "record": "disc_grading",
            "item": name,
            "value": grading["grade"],
            "probability": grading["probabilities"][str(grading["grade"])],
        }
        for name, grading in sorted(entry["gradings"].items(), key=lambda kv: list(SPINENET_GRADINGS).index(kv[0]))
    ]
    rows += [
        {
            **common,
            "record": "disc_rsna",
            "item": condition,
            "value": result["severity"],
            "probability": result["probabilities"][result["severity"]],
        }
        for condition, result in sorted(entry["rsna"].items(), key=lambda kv: RSNA_CONDITIONS.index(kv[0]))
    ]
    return rows


def _bilsky_rows(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "record": "bilsky",
            "level": entry["level"],
            "item": "bilsky_grade",
            "value": entry["grade"],
            "probability": entry["probabilities"][entry["grade"]],
            "series_instance_uid": entry["series_instance_uid"],
            "sop_instance_uid": entry["sop_instance_uid"],
            "modality": entry["modality"],
        }
    ]


def _bilsky_level_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per level (and one for images without level): the most severe grade of its images."""
    by_level: dict[Any, list[Mapping[str, Any]]] = {}
    for entry in report["bilsky"]:
        by_level.setdefault(entry["level"], []).append(entry)
    rows = []
    def position(level: str | None) -> tuple[bool, float]:
        if level is None:
            return True, 0.0
        return False, (sum(map(level_order, disc_levels(level))) / 2.0) if "/" in level else level_order(level)

    for level, entries in sorted(by_level.items(), key=lambda item: position(item[0])):
        worst = max(entries, key=lambda e: (_bilsky_severity(e["grade"]), e["probabilities"][e["grade"]]))
        rows.append({
            "record": "bilsky_level", "level": level, "item": "bilsky_max_grade", "value": worst["grade"],
            "probability": worst["probabilities"][worst["grade"]], "series_instance_uid": worst["series_instance_uid"],
            "sop_instance_uid": worst["sop_instance_uid"], "modality": worst["modality"],
        })
    return rows


#: Report section → row builder, in the order rows appear in the CSV.
_CSV_SECTIONS: tuple[tuple[str, Callable[[Mapping[str, Any]], list[dict[str, Any]]]], ...] = (
    ("series", _series_rows),
    ("vertebrae", _vertebra_rows),
    ("discs", _disc_rows),
    ("bilsky", _bilsky_rows),
)


def render_csv(report: Mapping[str, Any]) -> str:
    """``spine_report.csv`` text for a (validated) report: header + one row per reported item."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for section, rows_of in _CSV_SECTIONS:
        for entry in report[section]:
            writer.writerows(rows_of(entry))
    writer.writerows(_bilsky_level_rows(report))
    return buffer.getvalue()


#: Wide tables, one row per item: ``vertebrae.csv`` and ``discs.csv`` (spreadsheet-friendly).
VERTEBRAE_CSV_NAME = "vertebrae.csv"
DISCS_CSV_NAME = "discs.csv"

VERTEBRAE_CSV_COLUMNS: tuple[str, ...] = (
    "level", "level_probability", "detection_score", *CANCER_FINDINGS, "needs_review", "x_mm", "y_mm", "z_mm",
    *(f"{corner}_{axis}_mm" for corner in VERTEBRA_CORNERS for axis in "xyz"),
    "series_instance_uid",
)
DISCS_CSV_COLUMNS: tuple[str, ...] = (
    "level", "x_mm", "y_mm", "z_mm",
    *(column for name in SPINENET_GRADINGS for column in (name, f"{name}_probability")),
    *(column for condition in RSNA_CONDITIONS for column in (f"rsna_{condition}", f"rsna_{condition}_probability")),
)


def _vertebra_table_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "level": entry["level"],
        "level_probability": entry["level_probability"],
        "detection_score": entry["detection_score"],
        "series_instance_uid": entry["series_instance_uid"],
        **entry.get("findings", {}),
        **({"needs_review": entry["needs_review"]} if "needs_review" in entry else {}),
        **_at(entry["centroid_mm"]),
    }
    for corner, point in zip(VERTEBRA_CORNERS, entry["corners_mm"]):
        row.update({f"{corner}_{axis}_mm": value for axis, value in zip("xyz", point)})
    return row


def _disc_table_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"level": entry["level"], **_at(entry["centre_mm"])}
    for name, grading in entry["gradings"].items():
        row[name] = grading["grade"]
        row[f"{name}_probability"] = grading["probabilities"][str(grading["grade"])]
    for condition, result in entry["rsna"].items():
        row[f"rsna_{condition}"] = result["severity"]
        row[f"rsna_{condition}_probability"] = result["probabilities"][result["severity"]]
    return row


def _render_table(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def render_vertebrae_csv(report: Mapping[str, Any]) -> str:
    """``vertebrae.csv``: one row per vertebra (report order, cranial → caudal); findings columns
    are empty when the cancer stage did not run; probabilities 0..1, coordinates LPS mm."""
    return _render_table(VERTEBRAE_CSV_COLUMNS, (_vertebra_table_row(v) for v in report["vertebrae"]))


def render_discs_csv(report: Mapping[str, Any]) -> str:
    """``discs.csv``: one row per disc; per grading / RSNA condition the reported grade and its
    probability (empty where not graded)."""
    return _render_table(DISCS_CSV_COLUMNS, (_disc_table_row(d) for d in report["discs"]))


def render_json(report: Mapping[str, Any]) -> str:
    """``spine_report.json`` text: sorted keys, 2-space indent, UTF-8, trailing newline."""
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _new_file_mode() -> int:
    """Permissions an ordinary new file gets under the current umask (0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The text goes to a temporary file in the same folder (same file system), is flushed to disk,
    then renamed over ``path``; on any failure the temporary file is removed.
    """
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", newline="", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, _new_file_mode())  # temp files are private (0600); reports are not
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the files :func:`write_report` wrote."""

    json_path: Path
    csv_path: Path


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> ReportFiles:
    """Validate ``report`` and write ``spine_report.json`` and ``spine_report.csv`` into ``out_dir``.

    Raises:
        ReportValidationError: the report does not match the schema (nothing is written).
        ReportWriteError: the folder cannot be created or written (no partial file is left).
    """
    validate_report(report)
    json_text, csv_text = render_json(report), render_csv(report)
    out = Path(out_dir)
    files = ReportFiles(out / REPORT_JSON_NAME, out / REPORT_CSV_NAME)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # CSV first: the JSON report appearing is the sign that the run finished.
        write_text_atomic(files.csv_path, csv_text)
        write_text_atomic(files.json_path, json_text)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ReportWriteError(f"cannot write the report into {out}: {reason}") from error
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m operators.core.report --write-schema``: regenerate the shipped schema file."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m operators.core.report", description=main.__doc__)
    parser.add_argument("--write-schema", action="store_true", help=f"write {SCHEMA_PATH.name} from the tables")
    args = parser.parse_args(argv)
    if not args.write_schema:
        parser.print_help()
        return 2
    write_text_atomic(SCHEMA_PATH, json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
