"""spine_report.json / .csv: schema, enum coverage, determinism, atomic writing."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from operators.core import report as report_module
from operators.core.gradings import (
    BILSKY_CT_CLASSES,
    BILSKY_MR_GRADES,
    CANCER_FINDINGS,
    RSNA_CONDITIONS,
    RSNA_SEVERITIES,
    SPINENET_GRADINGS,
)
from operators.core.levels import LEVELS, RSNA_DISCS, TRANSITIONAL_AFTER, VERTEBRA_CORNERS
from operators.core.report import (
    CSV_COLUMNS,
    REPORT_CSV_NAME,
    REPORT_JSON_NAME,
    BilskyEntry,
    DiscEntry,
    ModelInfo,
    ReportValidationError,
    ReportWriteError,
    SeriesEntry,
    SoftwareInfo,
    VertebraEntry,
    build_report,
    build_schema,
    load_schema,
    render_csv,
    validate_report,
    write_report,
)
from operators.core.series_roles import ROLES
from operators.core.study_warning import StudyWarning

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
SAG_UID = "1.2.826.0.1.3680043.8.498.1"
AX_UID = "1.2.826.0.1.3680043.8.498.2"
CT_UID = "1.2.826.0.1.3680043.8.498.3"


def one_hot(n: int, index: int) -> list[float]:
    return [0.9 if i == index else 0.1 / (n - 1) for i in range(n)]


LUMBAR = ["L1", "L2", "L3", "L4", "L5"]


def full_report_vertebrae() -> list[VertebraEntry]:
    """L1..L5 of one sagittal series, caudal first on purpose (the report sorts cranial → caudal)."""
    return [
        VertebraEntry(
            level=level,
            level_probability=0.97,
            series_instance_uid=SAG_UID,
            centroid_mm=(1.0, 20.0, 100.0 - 35.0 * k),
            corners_mm=[(1.0, 5.0 + dy, 110.0 - 35.0 * k + dz) for dy, dz in ((0, 0), (30, 0), (30, -25), (0, -25))],
            detection_score=0.99,
            findings={"metastasis": 0.8 if level == "L3" else 0.05, "fracture": 0.1, "cord_compression": 0.0},
        )
        for k, level in enumerate(LUMBAR)
    ][::-1]


def full_report(**overrides) -> dict:
    """A report with every section filled: 5 lumbar vertebrae, 4 discs, MR and CT Bilsky images."""
    discs = [
        DiscEntry(
            level=f"{upper}/{lower}",
            centre_mm=(1.0, 22.0, 80.0 - 35.0 * k),
            gradings={name: one_hot(len(classes), k % len(classes)) for name, classes in SPINENET_GRADINGS.items()},
            rsna={condition: one_hot(3, k % 3) for condition in RSNA_CONDITIONS},
        )
        for k, (upper, lower) in enumerate(zip(LUMBAR[:-1], LUMBAR[1:]))
    ]
    bilsky = [
        BilskyEntry(AX_UID, f"{AX_UID}.{n}", "L3", "MR", one_hot(6, n), instance_number=n + 1) for n in range(6)
    ] + [BilskyEntry(CT_UID, f"{CT_UID}.{n}", "L2/L3", "CT", one_hot(3, n)) for n in range(3)]
    arguments = dict(
        study_instance_uid="1.2.826.0.1.3680043.8.498.0",
        software=SoftwareInfo("spine-map", "0.1.0", (ModelInfo("detector", "models/detector.onnx", "a" * 64, "synthetic"),)),
        series=[
            SeriesEntry(CT_UID, "CT spine", "CT", "ct_axial", "CT axial ORIGINAL", series_number=7),
            SeriesEntry(SAG_UID, "t2_tse_sag", "MR", "sag_t2", "sagittal TSE, TR 3600 ms, TE 105 ms", series_number=2),
            SeriesEntry(AX_UID, "", "MR", "ax_t2", "axial TSE T2", series_number=None),
        ],
        vertebrae=full_report_vertebrae(),
        discs=discs,
        bilsky=bilsky,
        warnings=[StudyWarning("NOT_DICOM", "2 not DICOM files, skipped (a.txt, b.txt)."), StudyWarning("X_Y", "once")] * 2,
        generated_at=WHEN,
    )
    arguments.update(overrides)
    return build_report(**arguments)


def test_shipped_schema_is_the_generated_one_and_valid() -> None:
    assert load_schema() == build_schema(), "run `python -m operators.core.report --write-schema`"
    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_full_report_validates_and_summarises() -> None:
    report = full_report()
    validate_report(report)
    assert report["schema_version"] == "1.0"
    assert report["generated_at"] == "2026-01-02T03:04:05Z"
    assert [v["level"] for v in report["vertebrae"]] == ["L1", "L2", "L3", "L4", "L5"]
    assert [d["level"] for d in report["discs"]] == ["L1/L2", "L2/L3", "L3/L4", "L4/L5"]
    assert [s["series_number"] for s in report["series"] if "series_number" in s] == [2, 7]
    assert report["series"][-1]["series_instance_uid"] == AX_UID  # no SeriesNumber sorts last
    assert report["summary"] == {
        "levels_found": ["L1", "L2", "L3", "L4", "L5"],
        "highest_bilsky": "3",  # MR grade 3 outranks CT "high"
        "cancer_suspected": True,
        "series_used": 3,
    }
    assert [w["code"] for w in report["warnings"]] == ["NOT_DICOM", "X_Y"]  # duplicates dropped, order kept
    bilsky = {b["sop_instance_uid"]: b for b in report["bilsky"]}
    assert bilsky[f"{AX_UID}.3"]["grade"] == "1c" and bilsky[f"{AX_UID}.3"]["high_grade"] is True
    assert bilsky[f"{AX_UID}.2"]["grade"] == "1b" and bilsky[f"{AX_UID}.2"]["high_grade"] is False
    assert bilsky[f"{CT_UID}.2"]["grade"] == "high" and bilsky[f"{CT_UID}.2"]["high_grade"] is True
    assert report["discs"][0]["gradings"]["pfirrmann"] == {
        "grade": 1,
        "probabilities": {"1": 0.9, "2": 0.025, "3": 0.025, "4": 0.025, "5": 0.025},
    }


def test_empty_report_for_nothing_readable_is_valid() -> None:
    report = build_report(
        study_instance_uid=None,
        software=SoftwareInfo("spine-map", "0.1.0"),
        warnings=[StudyWarning("NO_IMAGES", "No DICOM image instances found (0 files looked at).")],
        generated_at=WHEN,
    )
    validate_report(report)
    assert report["summary"] == {"levels_found": [], "highest_bilsky": None, "cancer_suspected": None, "series_used": 0}


@pytest.mark.parametrize("level", [*LEVELS, *TRANSITIONAL_AFTER])
def test_every_level_is_accepted(level: str) -> None:
    report = full_report()
    report["vertebrae"][0]["level"] = level
    validate_report(report)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_is_accepted(role: str) -> None:
    report = full_report()
    report["series"][0]["role"] = role
    validate_report(report)


def test_every_grading_class_severity_and_bilsky_grade_is_accepted() -> None:
    for name, classes in SPINENET_GRADINGS.items():
        for index in range(len(classes)):
            validate_report(full_report(discs=[DiscEntry("L4/L5", (0, 0, 0), gradings={name: one_hot(len(classes), index)})]))
    for condition in RSNA_CONDITIONS:
        for index in range(len(RSNA_SEVERITIES)):
            validate_report(full_report(discs=[DiscEntry("L5/S1", (0, 0, 0), rsna={condition: one_hot(3, index)})]))
    # MR grades and CT classes are each accepted for their own modality only.
    schema_bilsky = load_schema()["$defs"]["bilsky"]
    assert schema_bilsky["then"]["properties"]["grade"]["enum"] == list(BILSKY_MR_GRADES)
    assert schema_bilsky["else"]["properties"]["grade"]["enum"] == list(BILSKY_CT_CLASSES)
    assert load_schema()["$defs"]["findings"]["required"] == list(CANCER_FINDINGS)
    assert set(RSNA_DISCS) <= set(load_schema()["$defs"]["disc_level"]["enum"])


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda r: r["vertebrae"][0].update(level="L7"), "$.vertebrae[0].level"),
        (lambda r: r["vertebrae"][0]["corners_mm"].pop(), "$.vertebrae[0].corners_mm"),
        (lambda r: r["vertebrae"][0]["findings"].update(metastasis=1.5), "$.vertebrae[0].findings.metastasis"),
        (lambda r: r["discs"][0]["gradings"]["pfirrmann"].update(grade=6), "$.discs[0].gradings.pfirrmann.grade"),
        (lambda r: r["discs"][0].update(level="L4-L5"), "$.discs[0].level"),
        (
            lambda r: r["discs"][0]["rsna"]["spinal_canal_stenosis"].update(severity="Mild"),
            "$.discs[0].rsna.spinal_canal_stenosis.severity",
        ),
        (lambda r: r["bilsky"][0].update(grade="1d"), "$.bilsky[0].grade"),
        (lambda r: r["bilsky"][-1].update(grade="1a"), "$.bilsky[8].grade"),  # an MR grade on a CT image
        (lambda r: r["series"][0].update(role="sagittal"), "$.series[0].role"),
        (lambda r: r["warnings"][0].update(code="not dicom"), "$.warnings[0].code"),
        (lambda r: r.update(extra_field=1), "$"),
        (lambda r: r.pop("summary"), "$"),
    ],
)
def test_invalid_reports_are_rejected_with_the_field_named(mutate, where: str, tmp_path: Path) -> None:
    report = full_report()
    mutate(report)
    with pytest.raises(ReportValidationError) as raised:
        write_report(report, tmp_path)
    assert raised.value.args[0].startswith(f"{REPORT_JSON_NAME} is invalid at {where}: ")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_write_report_is_deterministic_and_sorted(tmp_path: Path) -> None:
    first = write_report(full_report(), tmp_path / "a")
    second = write_report(full_report(), tmp_path / "b")
    assert first.json_path.read_bytes() == second.json_path.read_bytes()
    assert first.csv_path.read_bytes() == second.csv_path.read_bytes()
    text = first.json_path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    later = full_report(generated_at=datetime(2027, 5, 6, tzinfo=timezone.utc))
    differing = {key for key in later if later[key] != json.loads(text)[key]}
    assert differing == {"generated_at"}


def test_write_leaves_no_temporary_files_and_replaces_atomically(tmp_path: Path) -> None:
    write_report(full_report(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [REPORT_CSV_NAME, REPORT_JSON_NAME]
    write_report(full_report(vertebrae=[]), tmp_path)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == [REPORT_CSV_NAME, REPORT_JSON_NAME]
    assert json.loads((tmp_path / REPORT_JSON_NAME).read_text())["vertebrae"] == []


def test_failed_write_keeps_the_previous_report_and_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    write_report(full_report(), tmp_path)
    before = (tmp_path / REPORT_JSON_NAME).read_bytes()

    def disk_full(source, destination):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(report_module.os, "replace", disk_full)
    with pytest.raises(ReportWriteError, match="No space left on device"):
        write_report(full_report(vertebrae=[]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [REPORT_CSV_NAME, REPORT_JSON_NAME]
    assert (tmp_path / REPORT_JSON_NAME).read_bytes() == before


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ReportWriteError, match=r"^cannot write the report into .*a_file/out: "):
        write_report(full_report(), blocker / "out")


def test_csv_has_one_row_per_item() -> None:
    report = full_report()
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    by_record: dict[str, list[dict]] = {}
    for row in rows:
        by_record.setdefault(row["record"], []).append(row)
    assert [r["series_instance_uid"] for r in by_record["series"]] == [s["series_instance_uid"] for s in report["series"]]
    assert {r["value"] for r in by_record["series"]} == {"ct_axial", "sag_t2", "ax_t2"}
    assert len(by_record["vertebra"]) == 2 * 5
    assert len(by_record["vertebra_finding"]) == len(CANCER_FINDINGS) * 5
    assert len(by_record["disc_grading"]) == len(SPINENET_GRADINGS) * 4
    assert len(by_record["disc_rsna"]) == len(RSNA_CONDITIONS) * 4
    assert len(by_record["bilsky"]) == 9
    l3 = next(r for r in by_record["vertebra"] if r["level"] == "L3" and r["item"] == "level")
    assert (float(l3["x_mm"]), float(l3["y_mm"]), float(l3["z_mm"])) == (1.0, 20.0, 30.0)
    assert len(VERTEBRA_CORNERS) == len(report["vertebrae"][0]["corners_mm"])


def test_csv_of_series_only_report() -> None:
    report = full_report(vertebrae=[], discs=[], bilsky=[])
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [r["record"] for r in rows] == ["series"] * 3
    assert rows[0]["reason"] == "sagittal TSE, TR 3600 ms, TE 105 ms"


def test_unknown_level_from_a_stage_is_a_validation_error(tmp_path: Path) -> None:
    bad = VertebraEntry("L7", 0.5, SAG_UID, (0, 0, 0), [(0, 0, 0)] * 4, 0.9)
    with pytest.raises(ReportValidationError, match=r"at \$\.vertebrae\[5\]\.level: 'L7' is not one of"):
        write_report(full_report(vertebrae=[*full_report_vertebrae(), bad]), tmp_path)


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        VertebraEntry("L1", float("nan"), SAG_UID, (0, 0, 0), [(0, 0, 0)] * 4, 0.9).to_json()
    with pytest.raises(ValueError, match="finite"):
        DiscEntry("L4/L5", (0, float("inf"), 0)).to_json()
