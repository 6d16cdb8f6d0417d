"""``python -m training preview``: a picture of a generated study with its truth drawn on it.

Renders, side by side, the mid-sagittal slice of every sagittal T1/T2/STIR series with the truth
vertebral centroids and levels, one axial T2 image through a disc with the disc centre, and one CT
axial image through a vertebra with its centroid. It reads the study back through the app's own
loader (:func:`operators.core.dicom_io.scan_study_folder`), so the picture also checks that truth
coordinates and the DICOM geometry agree.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from operators.core.dicom_io import ImageStack, scan_study_folder
from operators.core.overlay import PointLabel, labelled_slice, tile_horizontally, window_to_uint8
from training.synthetic.study import StudyConfig, generate_study

#: CT shown in a bone window (centre, width) in HU.
_CT_BONE_WINDOW = (300.0, 1500.0)
_SAGITTAL_KINDS = ("sag_t1", "sag_t2", "sag_stir")


def _stack_for_kind(truth: dict[str, Any], scan_series: dict[str, Any], kind: str) -> ImageStack | None:
    for entry in truth["series"]:
        if entry["kind"] == kind and entry["expected_role"] != "unused" and entry["series_instance_uid"] in scan_series:
            return max(scan_series[entry["series_instance_uid"]].stacks, key=lambda s: s.n_slices)
    return None


def _panel(
    stack: ImageStack,
    slice_index: int,
    points_mm: Sequence[tuple[Sequence[float], str]],
    title: str,
    window: tuple[float, float] | None = None,
    height: int = 512,
) -> Image.Image:
    """One slice with the given LPS points drawn where they fall within ±1 slice of it."""
    loaded = stack.load()
    geometry = loaded.geometry
    index = int(np.clip(slice_index, 0, loaded.pixels.shape[0] - 1))
    labels = []
    for point_mm, text in points_mm:
        slice_position, row, column = geometry.lps_to_index(point_mm)
        if abs(slice_position - index) <= 1.0:
            labels.append(PointLabel(row, column, text))
    spacing = geometry.spacing_mm
    display = window_to_uint8(loaded.pixels[index], window=window)
    return labelled_slice(display, labels, pixel_aspect=spacing[1] / spacing[2], target_height=height, title=title)


def study_preview(study_dir: Path, height: int = 512) -> Image.Image:
    """Picture of a study written by :func:`~training.synthetic.study.generate_study`.

    Args:
        study_dir: the folder holding ``study/`` and ``truth.json``.
        height: panel height in pixels.
    """
    truth = json.loads((study_dir / "truth.json").read_text())
    scan = scan_study_folder(study_dir / "study")
    series = {s.series_instance_uid: s for s in scan.series}
    vertebrae = [(v["centroid_mm"], v["level"]) for v in truth["vertebrae"]]
    panels: list[Image.Image] = []

    for kind in _SAGITTAL_KINDS:
        stack = _stack_for_kind(truth, series, kind)
        if stack is None or stack.geometry is None:
            continue
        # Mid-sagittal: the slice nearest the median of the in-view centroids.
        indices = stack.geometry.lps_to_index(np.array([c for c, _ in vertebrae]))
        inside = stack.geometry.contains(np.array([c for c, _ in vertebrae]))
        mid = int(round(float(np.median(indices[inside, 0])))) if inside.any() else stack.n_slices // 2
        panels.append(_panel(stack, mid, vertebrae, kind.replace("_", " ").upper(), height=height))

    axial = _stack_for_kind(truth, series, "ax_t2")
    if axial is not None:
        best = _nearest_slice(axial, [(d["centre_mm"], d["level"]) for d in truth["discs"]])
        if best is not None:
            index, (centre, level) = best
            panels.append(_panel(axial, index, [(centre, level)], f"AX T2 {level}", height=height))

    ct = _stack_for_kind(truth, series, "ct_axial")
    if ct is not None:
        best = _nearest_slice(ct, vertebrae)
        if best is not None:
            index, (centroid, level) = best
            panels.append(_panel(ct, index, [(centroid, level)], f"CT {level}", window=_CT_BONE_WINDOW, height=height))

    if not panels:
        raise ValueError(f"{study_dir} has no sagittal, axial T2 or CT series to show")
    return tile_horizontally(panels)


def _nearest_slice(
    stack: ImageStack, points: Sequence[tuple[Sequence[float], str]]
) -> tuple[int, tuple[Sequence[float], str]] | None:
    """The (slice index, point) pair where a point lies closest to a slice centre inside the stack."""
    if stack.geometry is None:
        return None
    best: tuple[float, int, tuple[Sequence[float], str]] | None = None
    for point in points:
        if not stack.geometry.contains(point[0]):
            continue
        slice_position = float(stack.geometry.lps_to_index(point[0])[0])
        distance = abs(slice_position - round(slice_position))
        if best is None or distance < best[0]:
            best = (distance, int(round(slice_position)), point)
    return None if best is None else (best[1], best[2])


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``preview`` sub-command."""
    parser = subparsers.add_parser("preview", help="draw a generated study's truth on its images (PNG)", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", type=Path, help="a generated study folder (holding study/ and truth.json)")
    source.add_argument("--seed", type=int, help="generate a lumbar MR+CT study with this seed first")
    parser.add_argument("--workdir", type=Path, help="where --seed writes the study (default: a temporary folder)")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--height", type=int, default=512, help="panel height in pixels")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.study is not None:
        picture = study_preview(args.study, height=args.height)
    else:
        with tempfile.TemporaryDirectory(prefix="spine-map-preview-") as scratch:
            study_dir = args.workdir or Path(scratch)
            config = StudyConfig(
                field_of_view="lumbar",
                series_kinds=("sag_t1", "sag_t2", "sag_stir", "ax_t2", "ct_axial"),
                description_corruption_rate=0.0,
            )
            generate_study(args.seed, study_dir, config)
            picture = study_preview(study_dir, height=args.height)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out)
    print(f"wrote {args.out} ({picture.width}x{picture.height})")
    return 0
