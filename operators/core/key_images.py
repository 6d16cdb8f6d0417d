"""Key images of a study report: annotated PNGs and DICOM Secondary Capture copies for PACS.

* **Mid-sagittal** (``key_image_sagittal``): the slice of the vertebrae's sagittal series nearest
  their mean centroid, with every vertebra labelled at its centroid (level; metastasis, fracture
  and cord-compression probabilities at or above
  :data:`~operators.core.report.CANCER_SUSPICION_THRESHOLD` in red) and every disc at its centre
  (Pfirrmann grade, central canal stenosis grade, the worst RSNA severity; orange when an RSNA
  condition is Moderate or Severe). Points are projected onto the slice along its normal: a label
  belongs to the whole vertebra, not to one slice.
* **Bilsky** (``key_image_bilsky_<n>_<level>``): per level, the axial image with the most severe
  Bilsky grade above 0 / normal, with its level, grade, high-grade flag and the grade's
  probability written on it (all graded images are in the SR and the CSV). (The report carries no canal ROI
  yet; the ROI is drawn once the Bilsky stage reports one.)

Nothing that identifies the patient is drawn: titles carry levels, grades and the software
version only. The Secondary Capture copies (one new series in the study, ``BurnedInAnnotation``
YES, each referencing its source slice) carry the patient and study attributes of their source
like any other instance of the study, so that PACS files them with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from operators.core.gradings import BILSKY_CT_CLASSES, BILSKY_MR_GRADES, RSNA_CONDITIONS, RSNA_SEVERITIES
from operators.core.overlay import PointLabel, labelled_slice, window_to_uint8
from operators.core.report import CANCER_SUSPICION_THRESHOLD

if TYPE_CHECKING:
    from operators.core.dicom_io import ImageStack, InstanceHeader, LoadedStack, StudyScan

SAGITTAL_KEY_IMAGE = "key_image_sagittal"
#: SeriesNumber of the key-image series (the SR is 9001).
KEY_IMAGE_SERIES_NUMBER = 9002
#: Height in pixels of a key image; widths follow the slice's proportions.
SAGITTAL_HEIGHT, AXIAL_HEIGHT = 768, 640
#: Width in pixels of the label column right of the sagittal slice.
LABEL_COLUMN_WIDTH = 300

#: Sagittal roles in order of preference for the key image when no vertebra names a series.
_SAGITTAL_PREFERENCE = ("sag_t2", "sag_t1", "sag_stir")
_FINDING_ABBREVIATIONS = {"metastasis": "MET", "fracture": "FX", "cord_compression": "CORD"}
_RSNA_ABBREVIATIONS = {
    "spinal_canal_stenosis": "SCS",
    "left_neural_foraminal_narrowing": "LNFN",
    "right_neural_foraminal_narrowing": "RNFN",
    "left_subarticular_stenosis": "LSS",
    "right_subarticular_stenosis": "RSS",
}
_GREEN, _RED, _YELLOW, _ORANGE = (64, 255, 64), (255, 64, 64), (255, 230, 64), (255, 150, 0)


@dataclass(frozen=True)
class KeyImage:
    """One annotated picture and the slice it shows.

    Attributes:
        name: file stem (``key_image_sagittal``).
        picture: the RGB picture.
        source: header of the DICOM slice drawn.
        description: one line saying what it shows (DICOM ImageComments / the log).
    """

    name: str
    picture: Image.Image
    source: InstanceHeader
    description: str


def _best_stack(study: StudyScan, series_instance_uid: str) -> ImageStack | None:
    stacks = [s for s in study.series_by_uid(series_instance_uid).stacks if s.geometry is not None]
    return max(stacks, key=lambda s: s.n_slices, default=None)


def _sagittal_series(report: Mapping[str, Any]) -> str | None:
    """The vertebrae's most common series, else the preferred sagittal series of the study."""
    counts = Counter(v["series_instance_uid"] for v in report["vertebrae"])
    if counts:
        return counts.most_common(1)[0][0]
    roles = {s["role"]: s["series_instance_uid"] for s in report["series"]}
    return next((roles[role] for role in _SAGITTAL_PREFERENCE if role in roles), None)


def _in_plane(loaded: LoadedStack, point_mm: Sequence[float]) -> tuple[float, float, float]:
    """``(slice, row, column)`` continuous indices of an LPS point in the loaded stack."""
    assert loaded.geometry is not None
    slice_index, row, column = loaded.geometry.lps_to_index(np.asarray(point_mm, dtype=float))
    return float(slice_index), float(row), float(column)


def _vertebra_label(entry: Mapping[str, Any]) -> tuple[str, tuple[int, int, int]]:
    """Text and colour of a vertebra: its level and any finding at or above the threshold (red)."""
    flagged = [
        f"{_FINDING_ABBREVIATIONS[name]} {p:.2f}"
        for name, p in entry.get("findings", {}).items()
        if p >= CANCER_SUSPICION_THRESHOLD
    ]
    return " ".join([entry["level"], *flagged]), _RED if flagged else _GREEN


def _disc_label(entry: Mapping[str, Any]) -> tuple[str, tuple[int, int, int]]:
    """Text and colour of a disc: Pfirrmann, canal stenosis and the worst RSNA severity (orange
    when Moderate or Severe)."""
    parts = [entry["level"]]
    gradings = entry["gradings"]
    if "pfirrmann" in gradings:
        parts.append(f"Pf{gradings['pfirrmann']['grade']}")
    if "central_canal_stenosis" in gradings:
        parts.append(f"CCS{gradings['central_canal_stenosis']['grade']}")
    worst = max(
        (c for c in RSNA_CONDITIONS if c in entry["rsna"]),
        key=lambda c: RSNA_SEVERITIES.index(entry["rsna"][c]["severity"]),
        default=None,
    )
    notable = worst is not None and entry["rsna"][worst]["severity"] != RSNA_SEVERITIES[0]
    if notable:
        parts.append(f"{_RSNA_ABBREVIATIONS[worst]} {entry['rsna'][worst]['severity']}")
    return " ".join(parts), _ORANGE if notable else _YELLOW


def _with_label_column(
    picture: Image.Image, labels: Sequence[tuple[PointLabel, str]], scale: float, aspect: float
) -> Image.Image:
    """Add a column right of ``picture`` with one text per marker, joined to it by a thin line.

    Labels drawn beside their markers would cover the canal and run off a narrow sagittal slice;
    in a column they stay readable and are kept apart vertically (cranial first).

    Args:
        picture: the slice as drawn by :func:`~operators.core.overlay.labelled_slice`.
        labels: ``(marker, text)``: the marker in slice pixels (row, column, colour) and its text.
        scale / aspect: picture pixels per slice column and the row/column spacing ratio, as
            ``labelled_slice`` drew the slice.
    """
    canvas = Image.new("RGB", (picture.width + LABEL_COLUMN_WIDTH, picture.height))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    size = max(10, picture.height // 48)
    font = ImageFont.load_default(size=size)
    # The marker centre as labelled_slice places it (pixel centres scaled, then shifted by half a pixel).
    placed = sorted(
        (((marker.column + 0.5) * scale - 0.5, (marker.row + 0.5) * scale * aspect - 0.5, text, marker.colour)
         for marker, text in labels),
        key=lambda item: item[1],
    )
    next_free = 0.0
    for x, y, text, colour in placed:
        text_y = max(y - size / 2, next_free)
        next_free = text_y + size + 3
        draw.line([(x, y), (picture.width + 6, text_y + size / 2)], fill=colour, width=1)
        draw.text((picture.width + 10, text_y), text, fill=colour, font=font)
    return canvas


def sagittal_key_image(report: Mapping[str, Any], study: StudyScan) -> KeyImage | None:
    """The annotated mid-sagittal key image, or ``None`` when the study has no sagittal series.

    Raises:
        SeriesReadError: the slices of the chosen stack cannot be decoded.
    """
    series_uid = _sagittal_series(report)
    stack = None if series_uid is None else _best_stack(study, series_uid)
    if stack is None:
        return None
    loaded = stack.load()
    # Every vertebra is drawn, projected onto the slice: the fused list names, per vertebra, the
    # sagittal series that saw it best, but all of a study's sagittal series share one frame of
    # reference. Only points that fall inside the image are kept.
    rows, columns = loaded.pixels.shape[1:]
    in_image = [(v, _in_plane(loaded, v["centroid_mm"])) for v in report["vertebrae"]]
    on_series = [v for v, (_, row, column) in in_image if 0 <= row < rows and 0 <= column < columns]
    n_slices = loaded.pixels.shape[0]
    if on_series:
        mean_centroid = np.mean([v["centroid_mm"] for v in on_series], axis=0)
        middle = int(np.clip(round(_in_plane(loaded, mean_centroid)[0]), 0, n_slices - 1))
    else:
        middle = n_slices // 2
    labelled = [(v["centroid_mm"], *_vertebra_label(v)) for v in on_series]
    labelled += [(d["centre_mm"], *_disc_label(d)) for d in report["discs"]]
    markers = []
    for point_mm, text, colour in labelled:
        _, row, column = _in_plane(loaded, point_mm)
        markers.append((PointLabel(row, column, "", colour), text))
    spacing = loaded.geometry.spacing_mm  # type: ignore[union-attr]
    aspect = spacing[1] / spacing[2]
    software = report["software"]
    title = f"{software['name']} {software['version']}: {len(on_series)} vertebrae, {len(report['discs'])} discs"
    picture = labelled_slice(
        window_to_uint8(loaded.pixels[middle]), [marker for marker, _ in markers], pixel_aspect=aspect,
        target_height=SAGITTAL_HEIGHT, title=title,
    )
    scale = SAGITTAL_HEIGHT / (loaded.pixels.shape[1] * aspect)
    picture = _with_label_column(picture, markers, scale, aspect)
    description = f"mid-sagittal slice {middle + 1} of {n_slices}; {title}"
    return KeyImage(SAGITTAL_KEY_IMAGE, picture, loaded.instances[middle], description)


def key_bilsky_entries(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The Bilsky entries worth a key image: per level, the image with the most severe grade above
    0 / normal (ties: the more probable one), in report order. Every graded image stays in the SR."""
    best: dict[str, Mapping[str, Any]] = {}
    for entry in report["bilsky"]:
        if entry["grade"] in ("0", "normal"):
            continue
        rank = (_bilsky_rank(entry), entry["probabilities"][entry["grade"]])
        current = best.get(entry["level"])
        if current is None or rank > (_bilsky_rank(current), current["probabilities"][current["grade"]]):
            best[entry["level"]] = entry
    chosen = {id(entry) for entry in best.values()}
    return [entry for entry in report["bilsky"] if id(entry) in chosen]


def _bilsky_rank(entry: Mapping[str, Any]) -> int:
    grades = BILSKY_MR_GRADES if entry["modality"] == "MR" else BILSKY_CT_CLASSES
    return grades.index(entry["grade"])


def bilsky_key_images(report: Mapping[str, Any], study: StudyScan) -> list[KeyImage]:
    """One annotated key image per :func:`key_bilsky_entries` entry.

    Raises:
        SeriesReadError: a graded image cannot be decoded.
    """
    loaded_stacks: dict[tuple[str, int], LoadedStack] = {}
    images = []
    for number, entry in enumerate(key_bilsky_entries(report), start=1):
        series = study.series_by_uid(entry["series_instance_uid"])
        stack = next(s for s in series.stacks if entry["sop_instance_uid"] in s.sop_instance_uids)
        key = (series.series_instance_uid, stack.index)
        if key not in loaded_stacks:
            loaded_stacks[key] = stack.load()
        loaded = loaded_stacks[key]
        index = [i.sop_instance_uid for i in loaded.instances].index(entry["sop_instance_uid"])
        spacing = (1.0, 1.0, 1.0) if loaded.geometry is None else loaded.geometry.spacing_mm
        high = " HIGH GRADE" if entry["high_grade"] else ""
        level = entry["level"] or "level unknown"
        title = f"{level} Bilsky {entry['grade']}{high} (p={entry['probabilities'][entry['grade']]:.2f})"
        picture = labelled_slice(
            window_to_uint8(loaded.pixels[index]), [], pixel_aspect=spacing[1] / spacing[2],
            target_height=AXIAL_HEIGHT, title=title,
        )
        name = f"key_image_bilsky_{number:02d}_{level.replace('/', '-').replace(' ', '_')}"
        images.append(KeyImage(name, picture, loaded.instances[index], f"axial image; {title}"))
    return images


def _orientation_letter(direction: np.ndarray) -> str:
    """PatientOrientation letter of the dominant LPS axis of a direction (L/R, P/A, H/F)."""
    axis = int(np.argmax(np.abs(direction)))
    return ("L", "P", "H")[axis] if direction[axis] > 0 else ("R", "A", "F")[axis]


def secondary_capture(
    image: KeyImage, source: Dataset, *, series_instance_uid: str, instance_number: int, software: Mapping[str, Any]
) -> hd.sc.SCImage:
    """A DICOM Secondary Capture of ``image`` in the study of ``source`` (its slice's header)."""
    orientation = None
    if "ImageOrientationPatient" in source:
        vectors = np.asarray(source.ImageOrientationPatient, dtype=float)
        orientation = (_orientation_letter(vectors[:3]), _orientation_letter(vectors[3:]))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.asarray(image.picture.convert("RGB")),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid,
        series_number=KEY_IMAGE_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=software["name"],
        patient_orientation=orientation or ("", ""),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    sc.SeriesDescription = f"{software['name']} {software['version']} key images"
    sc.ImageComments = image.description
    sc.BurnedInAnnotation = "YES"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    return sc


def write_key_images(
    report: Mapping[str, Any], study: StudyScan, png_dir: Path, dicom_dir: Path
) -> list[Path]:
    """Write every key image as ``png_dir/<name>.png`` and ``dicom_dir/<name>.dcm`` (one new series).

    Returns:
        The files written, PNG then DICOM for each image, sagittal first.
    """
    images = [image for image in [sagittal_key_image(report, study)] if image is not None]
    images += bilsky_key_images(report, study)
    if not images:
        return []
    series_uid = hd.UID()
    written = []
    for number, image in enumerate(images, start=1):
        png = png_dir / f"{image.name}.png"
        image.picture.save(png, format="PNG")
        source = pydicom.dcmread(image.source.path, stop_before_pixels=True, force=image.source.without_preamble)
        sc = secondary_capture(
            image, source, series_instance_uid=series_uid, instance_number=number, software=report["software"]
        )
        dicom_dir.mkdir(parents=True, exist_ok=True)
        dcm = dicom_dir / f"{image.name}.dcm"
        sc.save_as(dcm, enforce_file_format=True)
        written += [png, dcm]
    return written
