"""Everything written next to ``spine_report.json``: SR, key images, wide CSVs and the summary.

Layout of the output folder (``spine_report.json`` / ``spine_report.csv`` come from
:func:`operators.core.report.write_report`)::

    OUT/
      spine_report.json  spine_report.csv      the report and its long table
      vertebrae.csv      discs.csv             one row per vertebra / disc
      summary.txt                              the findings in a few lines
      key_image_sagittal.png                   annotated mid-sagittal slice
      key_image_bilsky_<n>_<level>.png         most severe Bilsky image per level
      dicom/spine_report_sr.dcm                Comprehensive 3D SR (TID 1500)
      dicom/key_image_*.dcm                    Secondary Captures of the key images
      spine_map.log                            the run log

``dicom/`` holds only new instances of the study, ready to send to PACS
(``storescu -r PACS_HOST PORT OUT/dicom``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from operators.core.dicom_io import SeriesReadError
from operators.core.gradings import RSNA_CONDITION_TITLES, RSNA_CONDITIONS, RSNA_SEVERITIES
from operators.core.key_images import write_key_images
from operators.core.report import (
    CANCER_SUSPICION_THRESHOLD,
    DISCS_CSV_NAME,
    REPORT_CSV_NAME,
    REPORT_JSON_NAME,
    VERTEBRAE_CSV_NAME,
    render_discs_csv,
    render_vertebrae_csv,
    write_text_atomic,
)
from operators.core.structured_report import SR_FILE_NAME, write_structured_report

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from operators.core.dicom_io import StudyScan

SUMMARY_NAME = "summary.txt"
DICOM_FOLDER = "dicom"
#: Every file name pattern a run writes into the output folder (for removing a previous run's).
OUTPUT_PATTERNS: tuple[str, ...] = (
    REPORT_JSON_NAME, REPORT_CSV_NAME, VERTEBRAE_CSV_NAME, DISCS_CSV_NAME, SUMMARY_NAME, "key_image_*.png",
    f"{DICOM_FOLDER}/{SR_FILE_NAME}", f"{DICOM_FOLDER}/key_image_*.dcm",
)

_BINARY_TITLES = {
    "spondylolisthesis": "spondylolisthesis",
    "upper_endplate_defect": "upper endplate defect",
    "lower_endplate_defect": "lower endplate defect",
    "upper_marrow_change": "upper marrow change",
    "lower_marrow_change": "lower marrow change",
    "foraminal_stenosis_left": "left foraminal stenosis",
    "foraminal_stenosis_right": "right foraminal stenosis",
    "herniation": "herniation",
}


def previous_outputs(out_dir: Path) -> list[Path]:
    """Files of :data:`OUTPUT_PATTERNS` present in ``out_dir`` (an earlier run's results)."""
    return sorted(path for pattern in OUTPUT_PATTERNS for path in Path(out_dir).glob(pattern) if path.is_file())


def _disc_line(disc: Mapping[str, Any]) -> str:
    gradings = disc["gradings"]
    parts = []
    for name, title in (("pfirrmann", "Pfirrmann"), ("narrowing", "narrowing"), ("central_canal_stenosis", "canal stenosis")):
        if name in gradings:
            parts.append(f"{title} {gradings[name]['grade']}")
    present = [title for name, title in _BINARY_TITLES.items() if gradings.get(name, {}).get("grade") == 1]
    if present:
        parts.append(", ".join(present))
    notable = [
        f"{RSNA_CONDITION_TITLES[c].lower()} {disc['rsna'][c]['severity']}"
        for c in RSNA_CONDITIONS
        if c in disc["rsna"] and disc["rsna"][c]["severity"] != RSNA_SEVERITIES[0]
    ]
    if notable:
        parts.append("RSNA: " + ", ".join(notable))
    elif disc["rsna"]:
        parts.append("RSNA: all Normal/Mild")
    return f"  {disc['level']:<7} " + ("; ".join(parts) if parts else "not graded")


def render_summary(report: Mapping[str, Any]) -> str:
    """``summary.txt``: the findings of a validated report in a few lines of plain text.

    No patient identifiers: series are named by number and description, the study by its UID.
    """
    software, summary = report["software"], report["summary"]
    lines = [f"{software['name']} {software['version']} - study {report['study_instance_uid'] or '(none readable)'}", ""]
    used = [s for s in report["series"] if s["role"] != "unused"]
    lines.append(f"Series used: {len(used)} of {len(report['series'])}")
    lines += [f"  {s['role']:<9} series {s.get('series_number', '?')} \"{s['description']}\"" for s in used]
    levels = summary["levels_found"]
    lines.append("")
    lines.append(f"Vertebrae: {len(report['vertebrae'])} found" + (f", {levels[0]} to {levels[-1]}" if levels else ""))
    if summary["cancer_suspected"] is None:
        lines.append("Cancer findings: not assessed")
    else:
        flagged = [
            f"{v['level']} {name.replace('_', ' ')} {p:.2f}"
            for v in report["vertebrae"]
            for name, p in v.get("findings", {}).items()
            if p >= CANCER_SUSPICION_THRESHOLD
        ]
        lines.append("Cancer findings (probability >= 0.5): " + ("; ".join(flagged) if flagged else "none"))
        review = [v["level"] for v in report["vertebrae"] if v.get("needs_review")]
        if review:
            lines.append("  uncertain, please review: " + ", ".join(review))
    lines.append("")
    lines.append(f"Discs: {len(report['discs'])} graded" + (":" if report["discs"] else ""))
    lines += [_disc_line(d) for d in report["discs"]]
    lines.append("")
    if summary["highest_bilsky"] is None:
        lines.append("Bilsky grade: not assessed")
    else:
        high = [b for b in report["bilsky"] if b["high_grade"]]
        where = ", ".join(sorted({b["level"] or "level unknown" for b in high}))
        lines.append(
            f"Bilsky grade: highest {summary['highest_bilsky']} over {len(report['bilsky'])} axial images"
            + (f"; high grade at {where}" if high else "; no high-grade compression")
        )
    lines.append("")
    lines.append(f"Warnings: {len(report['warnings'])}")
    lines += [f"  {w['code']}: {w['message']}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def write_study_outputs(report: Mapping[str, Any], study: StudyScan, out_dir: Path) -> list[Path]:
    """Write the wide CSVs, the key images, the SR and the summary for a validated report.

    Returns:
        The files written, in the order written (summary last).

    Key images whose slices cannot be decoded are left out (logged); everything else is still written.

    Raises:
        OSError: the output folder cannot be written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in ((VERTEBRAE_CSV_NAME, render_vertebrae_csv(report)), (DISCS_CSV_NAME, render_discs_csv(report))):
        write_text_atomic(out / name, text)
        written.append(out / name)
    try:
        written += write_key_images(report, study, out, out / DICOM_FOLDER)
    except SeriesReadError:
        # The report already says which series could not be decoded; a picture of it cannot be drawn.
        logger.warning("key images not written: the slices they show cannot be decoded")
    sr_path = write_structured_report(report, study, out / DICOM_FOLDER)
    if sr_path is not None:
        written.append(sr_path)
    write_text_atomic(out / SUMMARY_NAME, render_summary(report))
    written.append(out / SUMMARY_NAME)
    return written

