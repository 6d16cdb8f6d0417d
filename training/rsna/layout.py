"""Read the RSNA 2024 LSDC competition layout into studies, labels and patient-space marks.

The layout (the competition's, also what :func:`training.synthetic.rsna_format.write_rsna_layout`
writes)::

    root/
      train.csv                       study_id + 25 columns <condition>_<l1_l2 … l5_s1>
      train_label_coordinates.csv     study_id,series_id,instance_number,condition,level,x,y
      train_series_descriptions.csv   study_id,series_id,series_description
      train_images/<study_id>/<series_id>/<instance_number>.dcm
      test_series_descriptions.csv    (test layout: no labels, no coordinates)
      test_images/<study_id>/<series_id>/<instance_number>.dcm

``split_csv`` names the label file whose rows choose the studies (``train.csv``, or a fold file with
the same columns); descriptions, coordinates and images then come from the ``train_*`` files, and
rows of studies outside the split are ignored (they belong to other folds). Without a split file
(``split_csv=None``, or the default ``train.csv`` absent beside a ``test_series_descriptions.csv``)
the layout is read as a test layout: every study of ``test_series_descriptions.csv``, no labels.

Bad input
---------
Structural problems — a missing CSV, a header without the required columns, a line the csv module
cannot parse — raise :class:`RsnaFormatError` naming the file (and line). Bad rows are skipped and
counted: one :class:`~operators.core.study_warning.StudyWarning` per code and reason gives the count
and up to three ``file:line`` examples. Codes: ``RSNA_MALFORMED_ROW`` (non-integer id, wrong field
count, repeated study/series, x/y not finite numbers), ``RSNA_UNKNOWN_CONDITION``,
``RSNA_UNKNOWN_LEVEL``, ``RSNA_UNKNOWN_SEVERITY`` (the cell is read as unknown), ``RSNA_UNKNOWN_DESCRIPTION``
(the series is kept, with no role), ``RSNA_MISSING_SERIES_FOLDER``, ``RSNA_UNKNOWN_SERIES`` (a
coordinate on a series the study does not list), ``RSNA_MISSING_INSTANCE``, ``RSNA_STUDY_WITHOUT_IMAGES``
(a labelled study none of whose series has images: dropped) and, from :func:`mark_points_mm`,
``RSNA_INSTANCE_UNREADABLE``, ``RSNA_INSTANCE_WITHOUT_GEOMETRY``, ``RSNA_COORDINATE_OUTSIDE_IMAGE``.
Warnings go to the ``problems`` list when the caller passes one, else they are issued as
:class:`RsnaLayoutWarning` through :mod:`warnings`, so they are never lost silently.

Coordinates
-----------
``x, y`` are continuous (column, row) pixel coordinates in the instance named by
``instance_number`` (integer values are pixel centres, as in
:mod:`operators.core.geometry`). :func:`mark_points_mm` reads that instance's header through the
app's own reader (:func:`operators.core.dicom_io.scan_study_folder`, so tag parsing, corrupt files
and multi-frame objects are handled as in the app) and maps ``(0, y, x)`` through the instance's
single-slice :class:`~operators.core.geometry.VolumeGeometry` to LPS mm. The point lies in the
instance's plane, so it is off the true mark by at most the distance from the mark to the nearest
slice (half a slice spacing when the annotator used the nearest slice).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.core.dicom_io import InstanceHeader, scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.gradings import RSNA_CONDITION_TITLES, RSNA_CONDITIONS, RSNA_SEVERITIES
from operators.core.levels import RSNA_DISCS, rsna_level_key
from operators.core.study_warning import StudyWarning
from training.synthetic.rsna_format import COORDINATE_COLUMNS, DESCRIPTION_COLUMNS, SERIES_DESCRIPTIONS, TRAIN_COLUMNS

#: Series description → series-selector role (``"Sagittal T2/STIR"`` is the fluid-sensitive
#: sagittal, ``sag_t2`` whether the site acquired T2 or STIR).
RSNA_DESCRIPTION_ROLES: dict[str, str] = {description: role for role, description in SERIES_DESCRIPTIONS.items()}

#: ``train_label_coordinates.csv`` condition titles (and the snake_case names) → condition.
_CONDITION_OF: dict[str, str] = {
    **{title: condition for condition, title in RSNA_CONDITION_TITLES.items()},
    **{condition: condition for condition in RSNA_CONDITIONS},
}

#: Where a disc's point comes from (:func:`disc_points_mm`), in order of preference: the canal
#: mark (midline, just behind the disc), else the mid-point of a left/right pair of marks, which
#: also lies on the midline behind the disc (a single side would be 20 mm off the midline).
DISC_POINT_SOURCES: tuple[tuple[str, ...], ...] = (
    ("spinal_canal_stenosis",),
    ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
    ("left_subarticular_stenosis", "right_subarticular_stenosis"),
)

#: Examples (file:line) named per warning.
_MAX_EXAMPLES = 3


class RsnaFormatError(ValueError):
    """A competition file cannot be read at all (missing, wrong header, unparsable line); the
    message names the file and, where there is one, the line."""


class RsnaLayoutWarning(UserWarning):
    """Rows skipped while reading a layout, issued when the caller passed no ``problems`` list."""


@dataclass(frozen=True)
class RsnaSeries:
    """One series of a study.

    Attributes:
        series_id: the competition's integer series id (folder name).
        description: ``Sagittal T1``, ``Sagittal T2/STIR`` or ``Axial T2``.
        folder: ``<split>_images/<study_id>/<series_id>`` under the layout root.
    """

    series_id: int
    description: str
    folder: Path

    @property
    def role(self) -> str | None:
        """Series-selector role (``sag_t1``, ``sag_t2``, ``ax_t2``) or ``None`` for an unknown description."""
        return RSNA_DESCRIPTION_ROLES.get(self.description)


@dataclass(frozen=True)
class RsnaCoordinate:
    """One row of ``train_label_coordinates.csv``.

    Attributes:
        series_id / instance_number: the image marked (``<series_id>/<instance_number>.dcm``).
        condition: a name of :data:`~operators.core.gradings.RSNA_CONDITIONS`.
        disc: ``"L4/L5"`` (:data:`~operators.core.levels.RSNA_DISCS`).
        x, y: continuous column and row of the mark in that image (pixels; integers are centres).
    """

    series_id: int
    instance_number: int
    condition: str
    disc: str
    x: float
    y: float


@dataclass(frozen=True)
class RsnaStudy:
    """One study of the layout.

    Attributes:
        study_id: the competition's integer study id.
        series: series id → series, only series whose image folder exists.
        labels: ``(condition, disc)`` → severity (:data:`~operators.core.gradings.RSNA_SEVERITIES`)
            or ``None`` where the cell is blank or unreadable; all 25 keys for a labelled study, empty
            for a test-layout study.
        coordinates: the study's marks, in file order.
    """

    study_id: int
    series: dict[int, RsnaSeries]
    labels: dict[tuple[str, str], str | None]
    coordinates: list[RsnaCoordinate]

    def severity_index(self, condition: str, disc: str) -> int:
        """Index of the label in RSNA_SEVERITIES, −1 when unknown (the grading cache's convention)."""
        severity = self.labels.get((condition, disc))
        return -1 if severity is None else RSNA_SEVERITIES.index(severity)

    def instance_path(self, coordinate: RsnaCoordinate) -> Path:
        """The DICOM file a coordinate was marked on."""
        return self.series[coordinate.series_id].folder / f"{coordinate.instance_number}.dcm"


class _Problems:
    """Skipped rows, counted per (code, reason), delivered as one StudyWarning each."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], list[str]] = {}

    def add(self, code: str, reason: str, where: str) -> None:
        self._found.setdefault((code, reason), []).append(where)

    def deliver(self, sink: list[StudyWarning] | None) -> None:
        """Append the warnings to ``sink``, or issue them as :class:`RsnaLayoutWarning` without one."""
        for (code, reason), places in self._found.items():
            examples = ", ".join(places[:_MAX_EXAMPLES]) + (", …" if len(places) > _MAX_EXAMPLES else "")
            warning = StudyWarning(code, f"{reason}: {len(places)} skipped ({examples}).")
            if sink is None:
                warnings.warn(f"{warning.code}: {warning.message}", RsnaLayoutWarning, stacklevel=3)
            else:
                sink.append(warning)


def read_csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[str, dict[str, str] | None]]:
    """Rows of a competition CSV with where they came from (``"file.csv:line"``).

    Every yielded row maps each header column to a string; a row with a different number of
    fields than the header is yielded as ``None`` (the caller skips or rejects it).

    Raises:
        RsnaFormatError: the file is missing, its header lacks a required column, or the csv module
            cannot parse a line.
    """
    if not path.is_file():
        raise RsnaFormatError(f"{path}: file not found")
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # utf-8-sig: spreadsheet exports add a BOM
    except OSError as exc:
        raise RsnaFormatError(f"{path}: cannot be read ({exc.strerror})") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
            missing = [column for column in required if column not in header]
            if missing:
                raise RsnaFormatError(f"{path}: header lacks column(s) {', '.join(missing)} "
                                      f"(has {', '.join(header) or 'nothing'})")
            for row in reader:
                # DictReader files surplus fields under the key None and fills missing ones with None.
                malformed = None in row or any(value is None for value in row.values())
                yield f"{path.name}:{reader.line_num}", None if malformed else row
        except csv.Error as exc:
            raise RsnaFormatError(f"{path}:{reader.line_num}: {exc}") from None
        except UnicodeDecodeError:  # decoded in chunks: the failing line is not known
            raise RsnaFormatError(f"{path}: not UTF-8 text") from None


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _finite(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_labels(path: Path, problems: list[StudyWarning] | None = None) -> dict[int, dict[tuple[str, str], str | None]]:
    """Labels of a ``train.csv``-format file.

    Returns:
        study_id → ``(condition, disc)`` → severity or ``None`` (blank or unknown cell), all 25 keys
        per study, in file order.

    Raises:
        RsnaFormatError: missing file, header without the 26 competition columns, unparsable line.
    """
    found = _Problems()
    labels: dict[int, dict[tuple[str, str], str | None]] = {}
    cells = [(f"{condition}_{rsna_level_key(disc)}", condition, disc)
             for condition in RSNA_CONDITIONS for disc in RSNA_DISCS]
    for where, row in read_csv_rows(Path(path), TRAIN_COLUMNS):
        if row is None:
            found.add("RSNA_MALFORMED_ROW", "wrong number of fields", where)
            continue
        study_id = _int(row["study_id"])
        if study_id is None or study_id in labels:
            reason = "study_id is not an integer" if study_id is None else "study_id repeated"
            found.add("RSNA_MALFORMED_ROW", reason, where)
            continue
        study: dict[tuple[str, str], str | None] = {}
        for column, condition, disc in cells:
            value = row[column].strip()
            if value and value not in RSNA_SEVERITIES:
                found.add("RSNA_UNKNOWN_SEVERITY", f"severity {value!r} is not one of "
                          f"{', '.join(RSNA_SEVERITIES)} (cell read as unknown)", f"{where} {column}")
            study[(condition, disc)] = value if value in RSNA_SEVERITIES else None
        labels[study_id] = study
    found.deliver(problems)
    return labels


def _split_files(root: Path, split_csv: str | Path | None) -> tuple[str, Path | None]:
    """``(prefix of the descriptions/images, label file or None for a test layout)``."""
    if split_csv is not None:
        labels = root / split_csv
        if labels.is_file():
            return "train", labels
        if Path(split_csv) != Path("train.csv") or not (root / "test_series_descriptions.csv").is_file():
            raise RsnaFormatError(f"{labels}: file not found")
    return "test", None


def read_rsna_layout(root: str | Path, split_csv: str | Path | None = "train.csv", *,
                     problems: list[StudyWarning] | None = None) -> list[RsnaStudy]:
    """Read a competition layout (module docstring) into studies sorted by ``study_id``.

    Args:
        root: the competition folder.
        split_csv: label file choosing the studies, relative to ``root`` (or absolute); ``None``
            reads the test layout.
        problems: where to append the counted warnings about skipped rows; ``None`` issues them as
            :class:`RsnaLayoutWarning`.

    Raises:
        RsnaFormatError: a required CSV is missing or unreadable (see the module docstring).
    """
    root = Path(root)
    prefix, label_file = _split_files(root, split_csv)
    found = _Problems()
    labels = read_labels(label_file, problems) if label_file is not None else None
    descriptions_file = root / f"{prefix}_series_descriptions.csv"
    images = root / f"{prefix}_images"

    series: dict[int, dict[int, RsnaSeries]] = {} if labels is None else {study_id: {} for study_id in labels}
    seen: set[tuple[int, int]] = set()
    for where, row in read_csv_rows(descriptions_file, DESCRIPTION_COLUMNS):
        if row is None:
            found.add("RSNA_MALFORMED_ROW", "wrong number of fields", where)
            continue
        study_id, series_id = _int(row["study_id"]), _int(row["series_id"])
        if study_id is None or series_id is None or (study_id, series_id) in seen:
            reason = "study_id/series_id not integers" if study_id is None or series_id is None else "series repeated"
            found.add("RSNA_MALFORMED_ROW", reason, where)
            continue
        seen.add((study_id, series_id))
        if labels is not None and study_id not in labels:
            continue  # a study of another split
        folder = images / str(study_id) / str(series_id)
        if not folder.is_dir() or next(folder.glob("*.dcm"), None) is None:
            found.add("RSNA_MISSING_SERIES_FOLDER", f"series without images under {images.name}/", where)
            continue
        description = row["series_description"].strip()
        if description not in RSNA_DESCRIPTION_ROLES:
            found.add("RSNA_UNKNOWN_DESCRIPTION", f"series description {description!r} is not one of "
                      f"{', '.join(RSNA_DESCRIPTION_ROLES)} (series kept without a role)", where)
        series.setdefault(study_id, {})[series_id] = RsnaSeries(series_id, description, folder)

    for study_id in [s for s, members in series.items() if not members]:
        found.add("RSNA_STUDY_WITHOUT_IMAGES",
                  f"labelled studies without any series images in {descriptions_file.name}", f"study {study_id}")
        del series[study_id]

    coordinates: dict[int, list[RsnaCoordinate]] = {study_id: [] for study_id in series}
    if label_file is not None:
        _read_coordinates(root / f"{prefix}_label_coordinates.csv", labels or {}, series, coordinates, found)
    found.deliver(problems)
    return [
        RsnaStudy(study_id, series[study_id], dict((labels or {}).get(study_id, {})), coordinates[study_id])
        for study_id in sorted(series)
    ]


def _read_coordinates(path: Path, labels: dict[int, dict[tuple[str, str], str | None]],
                      series: dict[int, dict[int, RsnaSeries]], out: dict[int, list[RsnaCoordinate]],
                      found: _Problems) -> None:
    """Append each valid row of ``train_label_coordinates.csv`` to ``out[study_id]``."""
    for where, row in read_csv_rows(path, COORDINATE_COLUMNS):
        if row is None:
            found.add("RSNA_MALFORMED_ROW", "wrong number of fields", where)
            continue
        study_id, series_id, number = _int(row["study_id"]), _int(row["series_id"]), _int(row["instance_number"])
        if study_id is None or series_id is None or number is None:
            found.add("RSNA_MALFORMED_ROW", "study_id/series_id/instance_number not integers", where)
            continue
        if study_id not in labels:
            continue  # a study of another split
        if study_id not in series:
            continue  # dropped above (RSNA_STUDY_WITHOUT_IMAGES)
        condition = _CONDITION_OF.get(row["condition"].strip())
        if condition is None:
            found.add("RSNA_UNKNOWN_CONDITION", f"unknown condition {row['condition'].strip()!r}", where)
            continue
        disc = row["level"].strip()
        if disc not in RSNA_DISCS:
            found.add("RSNA_UNKNOWN_LEVEL", f"level {disc!r} is not one of {', '.join(RSNA_DISCS)}", where)
            continue
        x, y = _finite(row["x"]), _finite(row["y"])
        if x is None or y is None:
            found.add("RSNA_MALFORMED_ROW", "x/y not finite numbers", where)
            continue
        member = series[study_id].get(series_id)
        if member is None:
            found.add("RSNA_UNKNOWN_SERIES", "marks on a series the study has no images for", where)
            continue
        if not (member.folder / f"{number}.dcm").is_file():
            found.add("RSNA_MISSING_INSTANCE", "marked instance file missing", where)
            continue
        out[study_id].append(RsnaCoordinate(series_id, number, condition, disc, x, y))


def _instance_headers(folder: Path) -> dict[str, InstanceHeader]:
    """Single-frame image headers of one series folder, by file name, read by the app's reader."""
    scan = scan_study_folder(folder)
    return {
        Path(instance.relative_path).name: instance
        for member in scan.series for stack in member.stacks for instance in stack.instances
        if instance.frame is None
    }


def mark_points_mm(study: RsnaStudy, problems: list[StudyWarning] | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Patient position of every mark of a study.

    Returns:
        ``(condition, disc)`` → ``(3,)`` LPS mm (module docstring); a pair marked more than once
        (e.g. on two axial series) gets the mean of its marks. Marks whose instance cannot be read,
        has no geometry, or that fall outside the image are skipped with a counted warning.
    """
    found = _Problems()
    headers: dict[int, dict[str, InstanceHeader]] = {}
    points: dict[tuple[str, str], list[np.ndarray]] = {}
    for coordinate in study.coordinates:
        where = f"study {study.study_id} {RSNA_CONDITION_TITLES[coordinate.condition]} {coordinate.disc}"
        folder = study.series[coordinate.series_id].folder
        if coordinate.series_id not in headers:
            headers[coordinate.series_id] = _instance_headers(folder)
        header = headers[coordinate.series_id].get(f"{coordinate.instance_number}.dcm")
        if header is None:
            found.add("RSNA_INSTANCE_UNREADABLE", "marked instance is not a readable DICOM image", where)
            continue
        if not header.has_geometry:
            found.add("RSNA_INSTANCE_WITHOUT_GEOMETRY",
                      "marked instance lacks orientation/position/pixel spacing", where)
            continue
        if not (-0.5 <= coordinate.x <= header.columns - 0.5 and -0.5 <= coordinate.y <= header.rows - 0.5):
            found.add("RSNA_COORDINATE_OUTSIDE_IMAGE", "mark lies outside its image", where)
            continue
        geometry = VolumeGeometry.from_dicom(
            header.orientation,  # type: ignore[arg-type]  # has_geometry: all three are present
            header.position,  # type: ignore[arg-type]
            header.pixel_spacing,  # type: ignore[arg-type]
            (1, header.rows, header.columns),
            header.slice_thickness_mm or 1.0,  # the step of a single slice does not move in-plane points
        )
        point = geometry.index_to_lps([0.0, coordinate.y, coordinate.x])
        points.setdefault((coordinate.condition, coordinate.disc), []).append(point)
    found.deliver(problems)
    return {key: np.mean(values, axis=0) for key, values in points.items()}


def disc_points_mm(study: RsnaStudy, problems: list[StudyWarning] | None = None) -> dict[str, np.ndarray]:
    """One midline point just behind each marked disc, for
    :func:`operators.core.volume_extraction.disc_frames_from_points`.

    The point is the spinal canal mark, else the mid-point of the left and right foraminal marks,
    else of the subarticular marks (:data:`DISC_POINT_SOURCES`); discs with none of these are left out.

    Returns:
        disc name → ``(3,)`` LPS mm, cranial → caudal (RSNA_DISCS order).
    """
    marks = mark_points_mm(study, problems)
    points: dict[str, np.ndarray] = {}
    for disc in RSNA_DISCS:
        for conditions in DISC_POINT_SOURCES:
            if all((condition, disc) in marks for condition in conditions):
                points[disc] = np.mean([marks[(condition, disc)] for condition in conditions], axis=0)
                break
    return points
