"""Warnings a stage raises about a study: one shape for all of them, written to ``warnings[]``.

A warning must never carry patient-identifying values (names, IDs, accession numbers, dates of
birth); identify things by SeriesInstanceUID, file name within the study folder or level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StudyWarning:
    """One problem found while processing a study.

    Attributes:
        code: stable machine-readable code, ``UPPER_SNAKE_CASE`` (e.g. ``"NOT_DICOM"``).
        message: one line a radiographer or IT engineer can act on.
        series_instance_uid: the series concerned, when there is one.
    """

    code: str
    message: str
    series_instance_uid: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``warnings[]`` entry of ``spine_report.json`` (no null fields)."""
        return {key: value for key, value in asdict(self).items() if value is not None}
