"""Write generated studies in the RSNA 2024 Lumbar Spine Degenerative Classification layout.

The RSNA 2024 adapter (issue 4) reads exactly the competition's files, so its test fixtures come
from here::

    out_root/
      train.csv                       study_id + 25 columns <condition>_<l1_l2 … l5_s1>
      train_label_coordinates.csv     study_id,series_id,instance_number,condition,level,x,y
      train_series_descriptions.csv   study_id,series_id,series_description
      train_images/<study_id>/<series_id>/<instance_number>.dcm

Conventions (as in the competition)
-----------------------------------
* ``train.csv`` columns: ``study_id`` then, for each condition of
  :data:`~operators.core.gradings.RSNA_CONDITIONS` in order, the five discs L1/L2 … L5/S1
  (``spinal_canal_stenosis_l1_l2``, …, ``right_subarticular_stenosis_l5_s1``). Values
  ``Normal/Mild``, ``Moderate``, ``Severe``; blank where the truth has no RSNA label (disc not in
  the study, transitional spine whose last disc is L6/S1, condition not graded).
* ``train_series_descriptions.csv``: ``Sagittal T1`` (role ``sag_t1``), ``Sagittal T2/STIR``
  (role ``sag_t2``, or ``sag_stir`` when the study has no ``sag_t2``), ``Axial T2`` (role
  ``ax_t2``). Roles are the truth's ``expected_role`` (the series-selector contract), so
  duplicates the selector would discard are not copied; stations of a whole-spine exam that the
  selector keeps are all copied.
* ``train_label_coordinates.csv``: the condition title (``Spinal Canal Stenosis``, ``Left Neural
  Foraminal Narrowing``, ``Right Subarticular Stenosis`` …), level ``L4/L5``, and ``x, y`` =
  (column, row) pixel coordinates, continuous, in the instance named by ``instance_number``.
  Spinal canal stenosis is marked on the Sagittal T2/STIR, neural foraminal narrowing on the
  Sagittal T1, subarticular stenosis on the Axial T2.
* ``study_id`` / ``series_id``: stable 31-bit integers derived from the Study/SeriesInstanceUID
  (:func:`uid_to_int`); image files are named by InstanceNumber and hard-linked from the study
  folder (copied when a link is impossible).

Where the marks are (LPS mm, from the truth geometry)
----------------------------------------------------
Each disc gets a local frame from its two neighbouring vertebrae (mean ``superior_axis`` and
``anterior_axis``, orthogonalised; ``left = superior × anterior`` points to the patient's left),
their mean AP depth ``D`` and transverse width ``W``:

* spinal canal: disc centre + (D/2 + 7 mm) posterior — the middle of the canal behind the disc;
* neural foramen: disc centre + (D/2 + 3 mm) posterior ± 0.45·W to the side + 3 mm superior —
  the foramen sits just above the disc, beside the pedicles;
* subarticular zone: disc centre + (D/2 + 5 mm) posterior ± 0.22·W to the side — the lateral recess.

Each point is projected into every instance of the target series (each instance is its own
single-slice :class:`~operators.core.geometry.VolumeGeometry`, which also handles multi-stack axial
series angled per disc); the instance whose plane is nearest is used, provided the point falls
inside the image and lies within one slice spacing of the plane. Otherwise no coordinate row is
written (a stack that misses the level, a disc outside the field of view), as in the competition
where some labels have no coordinates.

Studies without any RSNA-labelled disc (cervical, thoracic) or without any of the three series
(CT-only) are skipped: the layout is lumbar MRI.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from operators.core.dicom_io import scan_study_folder
from operators.core.geometry import VolumeGeometry
from operators.core.gradings import RSNA_CONDITION_TITLES, RSNA_CONDITIONS, RSNA_SEVERITIES
from operators.core.levels import RSNA_DISCS, disc_levels, rsna_level_key

SERIES_DESCRIPTIONS: dict[str, str] = {"sag_t1": "Sagittal T1", "sag_t2": "Sagittal T2/STIR", "ax_t2": "Axial T2"}

#: train.csv header, exactly the competition's.
TRAIN_COLUMNS: tuple[str, ...] = ("study_id",) + tuple(
    f"{condition}_{rsna_level_key(disc)}" for condition in RSNA_CONDITIONS for disc in RSNA_DISCS
)
COORDINATE_COLUMNS: tuple[str, ...] = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
DESCRIPTION_COLUMNS: tuple[str, ...] = ("study_id", "series_id", "series_description")

#: Which series description each condition is marked on.
CONDITION_SERIES: dict[str, str] = {
    "spinal_canal_stenosis": "Sagittal T2/STIR",
    "left_neural_foraminal_narrowing": "Sagittal T1",
    "right_neural_foraminal_narrowing": "Sagittal T1",
    "left_subarticular_stenosis": "Axial T2",
    "right_subarticular_stenosis": "Axial T2",
}

# Offsets of the marked structures from the disc centre (module docstring), in mm or × width/depth.
CANAL_POSTERIOR_MM = 7.0
FORAMEN_POSTERIOR_MM = 3.0
FORAMEN_LATERAL_WIDTHS = 0.45
FORAMEN_SUPERIOR_MM = 3.0
SUBARTICULAR_POSTERIOR_MM = 5.0
SUBARTICULAR_LATERAL_WIDTHS = 0.22


def uid_to_int(uid: str) -> int:
    """Stable positive 31-bit integer id for a DICOM UID (RSNA ids are plain integers)."""
    return int(hashlib.sha256(uid.encode("ascii")).hexdigest()[:8], 16) & 0x7FFFFFFF or 1


@dataclass(frozen=True)
class _Instance:
    """One DICOM file of a series, with its single-slice geometry."""

    path: Path
    instance_number: int
    geometry: VolumeGeometry
    slice_spacing_mm: float


def _read_study_files(study_dir: Path) -> dict[str, list[_Instance]]:
    """Every image instance with geometry under ``study_dir`` (any layout), grouped by
    SeriesInstanceUID, read through the app's own loader."""
    series: dict[str, list[_Instance]] = {}
    for dicom_series in scan_study_folder(study_dir).series:
        for stack in dicom_series.stacks:
            if stack.geometry is None:
                continue
            for instance in stack.instances:
                thickness = instance.slice_thickness_mm or 1.0
                spacing = instance.spacing_between_slices_mm or thickness
                geometry = VolumeGeometry.from_dicom(
                    instance.orientation,  # type: ignore[arg-type]  # stacks with geometry have all three
                    instance.position,  # type: ignore[arg-type]
                    instance.pixel_spacing,  # type: ignore[arg-type]
                    (1, instance.rows, instance.columns),
                    spacing,
                )
                series.setdefault(dicom_series.series_instance_uid, []).append(
                    _Instance(path=instance.path, instance_number=int(instance.instance_number or 0),
                              geometry=geometry, slice_spacing_mm=max(spacing, thickness)))
    return series


def _role_series(truth: Mapping[str, Any]) -> dict[str, list[str]]:
    """SeriesInstanceUIDs per RSNA description, from the truth's expected roles."""
    by_role: dict[str, list[str]] = {}
    for entry in truth.get("series") or []:
        by_role.setdefault(str(entry.get("expected_role", entry.get("kind"))), []).append(str(entry["series_instance_uid"]))
    sagittal_fluid = by_role.get("sag_t2") or by_role.get("sag_stir") or []
    return {"Sagittal T1": by_role.get("sag_t1", []), "Sagittal T2/STIR": sagittal_fluid,
            "Axial T2": by_role.get("ax_t2", [])}


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / float(np.linalg.norm(vector))


def disc_landmarks(truth: Mapping[str, Any], disc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """LPS points (mm) where each RSNA condition of one disc is marked.

    Returns:
        condition name → (3,) point; see the module docstring for the offsets.
    """
    vertebrae = {v["level"]: v for v in truth.get("vertebrae") or []}
    neighbours = [vertebrae[level] for level in disc_levels(disc["level"]) if level in vertebrae]
    centre = np.asarray(disc["centre_mm"], dtype=float)
    if neighbours:
        superior = _unit(np.mean([np.asarray(v["superior_axis"], dtype=float) for v in neighbours], axis=0))
        anterior = np.mean([np.asarray(v["anterior_axis"], dtype=float) for v in neighbours], axis=0)
        depth = float(np.mean([float(v.get("depth_mm", 35.0)) for v in neighbours]))
        width = float(np.mean([float(v.get("width_mm", 48.0)) for v in neighbours]))
    else:  # no neighbour in the truth: fall back to the disc normal and the patient axes
        superior = _unit(np.asarray(disc.get("normal", (0.0, 0.0, 1.0)), dtype=float))
        anterior, depth, width = np.array([0.0, -1.0, 0.0]), 35.0, 48.0
    anterior = _unit(anterior - (anterior @ superior) * superior)
    left = np.cross(superior, anterior)
    posterior = -anterior
    canal = centre + posterior * (depth / 2.0 + CANAL_POSTERIOR_MM)
    foramen = centre + posterior * (depth / 2.0 + FORAMEN_POSTERIOR_MM) + superior * FORAMEN_SUPERIOR_MM
    recess = centre + posterior * (depth / 2.0 + SUBARTICULAR_POSTERIOR_MM)
    return {
        "spinal_canal_stenosis": canal,
        "left_neural_foraminal_narrowing": foramen + left * FORAMEN_LATERAL_WIDTHS * width,
        "right_neural_foraminal_narrowing": foramen - left * FORAMEN_LATERAL_WIDTHS * width,
        "left_subarticular_stenosis": recess + left * SUBARTICULAR_LATERAL_WIDTHS * width,
        "right_subarticular_stenosis": recess - left * SUBARTICULAR_LATERAL_WIDTHS * width,
    }


def _nearest_instance(point: np.ndarray, instances: Sequence[_Instance]) -> tuple[_Instance, float, float] | None:
    """The instance whose plane is nearest ``point`` with the point inside the image: ``(instance, x, y)``."""
    best: tuple[float, _Instance, float, float] | None = None
    for instance in instances:
        offset, row, column = instance.geometry.lps_to_index(point)
        distance = abs(offset) * instance.geometry.spacing_mm[0]
        _, rows, columns = instance.geometry.shape
        inside = -0.5 <= row <= rows - 0.5 and -0.5 <= column <= columns - 0.5
        if inside and distance <= instance.slice_spacing_mm and (best is None or distance < best[0]):
            best = (distance, instance, float(np.clip(column, 0, columns - 1)), float(np.clip(row, 0, rows - 1)))
    return None if best is None else best[1:]


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:  # other file system, or links not allowed
        shutil.copy2(source, target)


def write_rsna_layout(studies_truth: list[dict], study_dirs: list[Path], out_root: Path) -> None:
    """Write the RSNA 2024 LSDC layout for generated studies.

    Args:
        studies_truth: truth dicts (``truth.json`` schema), one per study.
        study_dirs: the matching folders holding each study's DICOM files (the generator's
            ``out_dir/study`` or ``out_dir``; any file layout, found by reading the tags).
        out_root: folder to write ``train*.csv`` and ``train_images/`` into (created; the CSVs are
            rewritten, image files of these studies replaced).

    Raises:
        ValueError: on length mismatch, two studies mapping to one ``study_id``, or a series with
            duplicate InstanceNumbers (the layout names files by InstanceNumber).
    """
    if len(studies_truth) != len(study_dirs):
        raise ValueError("studies_truth and study_dirs must have the same length")
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    train_rows: list[dict[str, Any]] = []
    coordinate_rows: list[tuple[Any, ...]] = []
    description_rows: list[tuple[Any, ...]] = []
    used_ids: dict[int, str] = {}

    for truth, study_dir in zip(studies_truth, study_dirs):
        rsna_discs = [d for d in truth.get("discs") or [] if d.get("rsna") and d["level"] in RSNA_DISCS]
        if not rsna_discs:
            continue
        study_uid = str(truth["study_instance_uid"])
        study_id = uid_to_int(study_uid)
        if used_ids.setdefault(study_id, study_uid) != study_uid:
            raise ValueError(f"study id collision for {study_uid}")
        files = _read_study_files(Path(study_dir))
        chosen = {description: [uid for uid in uids if files.get(uid)]
                  for description, uids in _role_series(truth).items()}
        if not any(chosen.values()):  # e.g. a CT-only study: labels without images are no use
            continue
        instances_by_description: dict[str, list[tuple[int, _Instance]]] = {}
        for description, uids in chosen.items():
            for uid in uids:
                instances = files[uid]
                series_id = uid_to_int(uid)
                numbers = [i.instance_number for i in instances]
                if len(set(numbers)) != len(numbers):
                    raise ValueError(f"series {uid} has duplicate InstanceNumbers; RSNA names files by them")
                description_rows.append((study_id, series_id, description))
                for instance in instances:
                    _place(instance.path, out_root / "train_images" / str(study_id) / str(series_id)
                           / f"{instance.instance_number}.dcm")
                    instances_by_description.setdefault(description, []).append((series_id, instance))

        row: dict[str, Any] = {column: "" for column in TRAIN_COLUMNS}
        row["study_id"] = study_id
        for disc in rsna_discs:
            landmarks = disc_landmarks(truth, disc)
            for condition in RSNA_CONDITIONS:
                severity = disc["rsna"].get(condition)
                if severity is None:
                    continue
                if severity not in RSNA_SEVERITIES:
                    raise ValueError(f"unknown RSNA severity {severity!r} in study {study_uid}")
                row[f"{condition}_{rsna_level_key(disc['level'])}"] = severity
                candidates = instances_by_description.get(CONDITION_SERIES[condition], [])
                series_of = {id(instance): series_id for series_id, instance in candidates}
                found = _nearest_instance(landmarks[condition], [instance for _, instance in candidates])
                if found is not None:
                    instance, x, y = found
                    coordinate_rows.append((study_id, series_of[id(instance)], instance.instance_number,
                                            RSNA_CONDITION_TITLES[condition], disc["level"], round(x, 3), round(y, 3)))
        train_rows.append(row)

    with open(out_root / "train.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRAIN_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(train_rows, key=lambda r: r["study_id"]))
    condition_order = {RSNA_CONDITION_TITLES[c]: i for i, c in enumerate(RSNA_CONDITIONS)}
    with open(out_root / "train_label_coordinates.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COORDINATE_COLUMNS)
        writer.writerows(sorted(coordinate_rows, key=lambda r: (r[0], condition_order[r[3]], r[4])))
    with open(out_root / "train_series_descriptions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(DESCRIPTION_COLUMNS)
        writer.writerows(sorted(description_rows))
