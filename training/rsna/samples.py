"""RSNA 2024 competition studies as grader training samples, in the grading cache's own format.

A competition study has no vertebrae, only marks behind the discs, so its disc frames come from
those marks (:func:`training.rsna.layout.disc_points_mm` →
:func:`operators.core.volume_extraction.disc_frames_from_points`); its views are then cut by the
app's extractor (:func:`~operators.core.volume_extraction.extract_frame_views`) and written like a
generated study's (:func:`training.grading.cache.write_disc_cache`) with the SpineNetV2 gradings
unknown (−1) and the 25 RSNA labels, so ``train-grading --rsna-root`` mixes them into training.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from operators.core.dicom_io import SeriesReadError, scan_study_folder
from operators.core.gradings import RSNA_CONDITIONS, SPINENET_GRADINGS
from operators.core.study_warning import StudyWarning
from operators.core.volume_extraction import (
    DEFAULT_BODY_DEPTH_MM,
    AXIAL_ROLE,
    DiscViews,
    SeriesVolume,
    disc_frames_from_points,
    extract_frame_views,
)
from training.grading.cache import write_disc_cache
from training.rsna.layout import RSNA_DESCRIPTION_ROLES, RsnaStudy, disc_points_mm

logger = logging.getLogger(__name__)

#: How far a disc's point (:func:`disc_points_mm`: the canal mark, mid-canal) lies behind the disc
#: centre: half an adult lumbar disc's depth plus the canal's half-depth (about 7 mm).
CANAL_BEHIND_DISC_MM = DEFAULT_BODY_DEPTH_MM / 2 + 7.0


def rsna_sources(study: RsnaStudy, problems: list[StudyWarning]) -> list[SeriesVolume]:
    """Decoded stacks of the study's series with a known role: the largest stack of each sagittal
    series, every stack of an axial series (per-disc angled stacks are separate stacks)."""
    sources = []
    for series in study.series.values():
        role = RSNA_DESCRIPTION_ROLES.get(series.description)
        if role is None:
            continue
        scan = scan_study_folder(series.folder)
        problems.extend(scan.warnings)
        for dicom_series in scan.series:
            stacks = [s for s in dicom_series.stacks if s.geometry is not None]
            if role != AXIAL_ROLE:
                stacks = sorted(stacks, key=lambda s: -s.n_slices)[:1]
            for stack in stacks:
                try:
                    loaded = stack.load()
                except SeriesReadError as error:
                    problems.append(StudyWarning("SERIES_UNREADABLE", str(error), dicom_series.series_instance_uid))
                    continue
                if loaded.geometry is not None:
                    sources.append(SeriesVolume(dicom_series.series_instance_uid, role, loaded.pixels, loaded.geometry))
    return sources


def rsna_disc_views(study: RsnaStudy, problems: list[StudyWarning]) -> list[DiscViews]:
    """Views of every marked disc of a study (none when fewer than two discs are marked)."""
    points = disc_points_mm(study, problems)
    if len(points) < 2:
        problems.append(StudyWarning("RSNA_TOO_FEW_MARKED_DISCS", f"study {study.study_id}: {len(points)} marked disc(s); skipped"))
        return []
    views, warnings = extract_frame_views(
        disc_frames_from_points(points, behind_disc_mm=CANAL_BEHIND_DISC_MM), rsna_sources(study, problems)
    )
    problems.extend(warnings)
    return views


def cache_rsna_study(study: RsnaStudy, cache_dir: Path, problems: list[StudyWarning]) -> Path | None:
    """Write ``<cache_dir>/rsna_<study_id>.npz``; ``None`` when no disc has a view."""
    out = cache_dir / f"rsna_{study.study_id}.npz"
    if out.exists():
        return out
    rows = []
    for views in rsna_disc_views(study, problems):
        rsna = np.array([study.severity_index(c, views.frame.level) for c in RSNA_CONDITIONS], dtype=np.int64)
        rows.append((views, np.full(len(SPINENET_GRADINGS), -1, dtype=np.int64), rsna))
    return write_disc_cache(out, rows) if rows else None
