"""Find the image series in a study folder and load them as volumes with patient geometry.

Two steps, so that the app only pays for the pixels it uses:

1. :func:`scan_study_folder` walks a folder, reads **headers only** (``stop_before_pixels``), skips
   what is not a DICOM image (with counted warnings), picks one study and groups its instances into
   :class:`DicomSeries`, each split into :class:`ImageStack` objects — sets of instances that share
   an orientation, sorted by position along the slice normal (never by file name or
   InstanceNumber), each with its :class:`~operators.core.geometry.VolumeGeometry`.
2. :meth:`ImageStack.load` / :meth:`ImageStack.load_pixels` decode the pixel data of one stack
   (compressed transfer syntaxes through pydicom's pixel-data plugins) into a float32
   ``(S, R, C)`` array with RescaleSlope/RescaleIntercept applied.

Nothing here raises on bad input except :class:`SeriesReadError` from pixel loading: every other
problem becomes a :class:`~operators.core.study_warning.StudyWarning` whose message names files by
their path relative to the study folder (with any patient name/ID that appears in a path masked)
and never carries patient values or tracebacks.

Stack rules (documented choices)
--------------------------------
* Instances share a stack when their ImageOrientationPatient row and column directions agree
  within 0.01 (≈0.6°) and they have the same Rows, Columns and PixelSpacing; a different matrix or
  pixel spacing therefore starts a new stack rather than failing the series.
* Within one orientation, instances are chained in order along the normal; an instance whose
  in-plane offset jumps by more than 10 mm + 0.6 × its distance along the normal (a second station,
  not a gantry tilt) starts another stack, and so does a gap along the normal of more than
  ``max(3.5 × median step, median step + 10 mm)`` (separate slabs); smaller irregularities are kept
  in one stack and reported (``UNEVEN_SLICE_SPACING``).
* Several instances at one position: if a per-instance attribute (EchoTime, DiffusionBValue,
  InversionTime, AcquisitionNumber, TemporalPositionIdentifier) separates them into volumes without
  repeats, each volume is its own stack; otherwise the first (lowest InstanceNumber) is kept and
  ``DUPLICATE_SLICE_POSITIONS`` says how many were dropped.
* The slice step of a stack is the median of the steps between consecutive positions; a single
  slice uses SliceThickness, else SpacingBetweenSlices, else 1 mm.
* Instances without usable ImageOrientationPatient / ImagePositionPatient / PixelSpacing go into one
  stack with ``geometry=None`` (ordered by SliceLocation, then InstanceNumber — the only order
  left) and a ``MISSING_GEOMETRY`` warning; such a stack can be viewed but not used for localisation.
* Multi-frame (enhanced / legacy-converted) instances are split into their frames: each frame's
  position, orientation, pixel spacing, rescale and timing come from the per-frame and shared
  functional groups (and the "unassigned converted attributes" of legacy-converted images), and
  frames then form stacks exactly as single-frame instances do. Enhanced MR's EchoPulseSequence,
  InversionRecovery and SpectrallySelectedSuppression are mapped onto ScanningSequence/ScanOptions
  codes so the series selector reads both kinds alike.

Files and warnings
------------------
Files are read with ``force=False``; a file without the 128-byte preamble and "DICM" is retried
with ``force=True`` only when it starts like a data set (a little-endian group 0002/0008 tag), as
older exports write them. ``.DS_Store``, ``Thumbs.db``, ``desktop.ini`` and ``._*`` are ignored
silently. Warning codes (one warning per code and reason, naming at most three files):
``NOT_DICOM``, ``DICOMDIR_IGNORED``, ``NON_IMAGE_INSTANCES`` (SR, PR, KO, SEG, … by SOP class
name), ``CORRUPT_FILES`` (truncated header or pixel data, missing UIDs/Rows/Columns, malformed
values — the exception class only), ``UNREADABLE_FILES``, ``UNREADABLE_FOLDERS``,
``DUPLICATE_INSTANCES`` (same SOPInstanceUID twice: the first path in sorted order is kept),
``MULTIPLE_PATIENTS``, ``MULTIPLE_STUDIES``, ``NO_IMAGES``; per stack ``MISSING_GEOMETRY``,
``UNEVEN_SLICE_SPACING``, ``DUPLICATE_SLICE_POSITIONS``, ``MULTIPLE_VOLUMES_IN_SERIES``; and from
:meth:`ImageStack.load`, ``PIXEL_DATA_UNREADABLE``. Native (uncompressed) pixel data is checked
for truncation at scan time from the element length and the file size, without reading it;
compressed pixel data is only checked when decoded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import struct
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, MediaStorageDirectoryStorage, RLELossless

from operators.core.geometry import Plane, VolumeGeometry, orientation_vectors
from operators.core.study_warning import StudyWarning

#: Files every desktop leaves behind; skipped silently instead of being reported as "not DICOM".
_JUNK_FILE_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
#: At most this many example files are named in one warning.
_MAX_NAMED_FILES = 3
#: Orientation agreement (max abs difference of unit direction components) for one stack.
_ORIENTATION_TOLERANCE = 1e-2
#: Relative deviation from the median step that counts as uneven spacing.
_UNEVEN_SPACING_TOLERANCE = 0.1
#: Attributes that can tell apart several volumes acquired at the same positions in one series.
_VOLUME_KEYS: dict[str, str] = {
    "echo_time_ms": "EchoTime",
    "diffusion_b_value": "DiffusionBValue",
    "inversion_time_ms": "InversionTime",
    "acquisition_number": "AcquisitionNumber",
    "temporal_position": "TemporalPositionIdentifier",
}


class SeriesReadError(RuntimeError):
    """Pixel data of a stack could not be decoded. The message names the files (relative paths)
    and the reason; it never contains patient values, so callers can turn it into a warning."""


# ------------------------------------------------------------------------------------------------
# Header data
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AcquisitionTags:
    """The acquisition attributes the series selector decides from (one instance, or a series
    summary: the median of numbers, the most common value of strings, the maximum b-value).

    Times are in ms, field strength in tesla, b-values in s/mm². Code strings are upper-case tuples
    (``ScanningSequence`` ``("SE", "IR")``); absent attributes are ``None`` or empty.
    """

    echo_time_ms: float | None = None
    repetition_time_ms: float | None = None
    inversion_time_ms: float | None = None
    flip_angle_deg: float | None = None
    echo_train_length: float | None = None
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    scan_options: tuple[str, ...] = ()
    sequence_name: str = ""
    mr_acquisition_type: str = ""
    image_type: tuple[str, ...] = ()
    contrast_bolus_agent: str = ""
    diffusion_b_value: float | None = None
    magnetic_field_strength_t: float | None = None
    manufacturer: str = ""


@dataclass(frozen=True)
class InstanceHeader:
    """What one image file's header says (no pixel data).

    Attributes:
        path: absolute file path. relative_path: path inside the study folder (for messages).
        orientation: ImageOrientationPatient (6 floats) when valid, else ``None``; likewise
            ``position`` (ImagePositionPatient, LPS mm) and ``pixel_spacing`` (row, column mm).
        rescale_slope / rescale_intercept: stored value → physical value (defaults 1 / 0).
    """

    path: Path
    relative_path: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_key: str  # salted digest of PatientID + PatientName: compared, never shown
    modality: str
    series_number: int | None
    series_description: str
    instance_number: int | None
    rows: int
    columns: int
    frame: int | None  # 0-based frame of a multi-frame file; None for a single-frame file
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness_mm: float | None
    spacing_between_slices_mm: float | None
    slice_location_mm: float | None
    rescale_slope: float
    rescale_intercept: float
    acquisition_number: int | None
    temporal_position: int | None
    transfer_syntax: str
    tags: AcquisitionTags
    without_preamble: bool = False  # written without preamble/"DICM": must be read with force=True

    @property
    def key(self) -> tuple[str, int | None]:
        """Identifies one image: SOPInstanceUID and frame."""
        return (self.sop_instance_uid, self.frame)

    @property
    def has_geometry(self) -> bool:
        return self.orientation is not None and self.position is not None and self.pixel_spacing is not None


@dataclass(frozen=True)
class LoadedStack:
    """Decoded pixels of a stack.

    Attributes:
        pixels: float32 ``(S, R, C)`` physical values (MR signal, CT HU), slices in stack order.
        geometry: geometry of exactly these slices (``None`` when the stack has none).
        instances: the headers of these slices, in the same order.
        warnings: slices that could not be decoded and were dropped.
    """

    pixels: np.ndarray
    geometry: VolumeGeometry | None
    instances: tuple[InstanceHeader, ...]
    warnings: tuple[StudyWarning, ...] = ()


@dataclass(frozen=True, eq=False)
class ImageStack:
    """Instances of one series that form one regular volume.

    Attributes:
        series_instance_uid: the series the stack belongs to.
        index: position of the stack in ``DicomSeries.stacks``.
        instances: headers sorted along the slice normal (ascending ``position · normal``).
        geometry: affine of the ``(S, R, C)`` volume, or ``None`` when geometry tags are missing.
        positions_mm: ``(S, 3)`` actual ImagePositionPatient of every slice (``None`` without
            geometry); differs from ``geometry.slice_positions()`` where spacing is uneven.
    """

    series_instance_uid: str
    index: int
    instances: tuple[InstanceHeader, ...]
    geometry: VolumeGeometry | None
    positions_mm: np.ndarray | None = None

    @property
    def n_slices(self) -> int:
        return len(self.instances)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        first = self.instances[0]
        return (len(self.instances), first.rows, first.columns)

    @property
    def plane(self) -> Plane | None:
        return None if self.geometry is None else self.geometry.plane

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(instance.sop_instance_uid for instance in self.instances)

    def _decode_all(self) -> tuple[list[np.ndarray | None], list[tuple[str, str]]]:
        frames: list[np.ndarray | None] = []
        failures: list[tuple[str, str]] = []
        last_file: dict[Path, np.ndarray] = {}  # the frames of a multi-frame file are decoded once
        for instance in self.instances:
            try:
                frames.append(_decode_instance(instance, last_file))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - Rust decoders (pylibjpeg-rle) raise pyo3's
                # PanicException, a BaseException, on corrupt data: it is a bad file, not a stop.
                frames.append(None)
                failures.append((instance.relative_path, _decode_failure_reason(exc, instance)))
        return frames, failures

    def load_pixels(self) -> np.ndarray:
        """Decode every slice; all or nothing.

        Returns:
            float32 ``(S, R, C)`` with RescaleSlope/RescaleIntercept applied, matching
            :attr:`geometry`.

        Raises:
            SeriesReadError: if any slice cannot be decoded (message names the files and why).
        """
        frames, failures = self._decode_all()
        if failures:
            raise SeriesReadError(_failure_message(self, failures, dropped=False))
        return np.stack(frames).astype(np.float32, copy=False)  # type: ignore[arg-type]

    def load(self) -> LoadedStack:
        """Decode the stack, dropping slices that fail if the rest is usable.

        A slice that cannot be decoded is dropped together with the slices on the shorter side of
        it, keeping the longest run of consecutive decodable slices, so that the returned geometry
        is still a regular grid; a warning (``PIXEL_DATA_UNREADABLE``) names the dropped files.

        Raises:
            SeriesReadError: if no slice can be decoded.
        """
        frames, failures = self._decode_all()
        if not failures:
            return LoadedStack(np.stack(frames).astype(np.float32, copy=False), self.geometry, self.instances)  # type: ignore[arg-type]
        start, stop = _longest_run([frame is not None for frame in frames])
        if stop == start:
            raise SeriesReadError(_failure_message(self, failures, dropped=False))
        geometry = None
        if self.geometry is not None:
            affine = self.geometry.affine.copy()
            affine[:3, 3] = self.geometry.index_to_lps([start, 0, 0])
            geometry = VolumeGeometry(affine, (stop - start, *self.geometry.shape[1:]))
        warning = StudyWarning(
            "PIXEL_DATA_UNREADABLE",
            _failure_message(self, failures, dropped=True, kept=stop - start),
            self.series_instance_uid,
        )
        pixels = np.stack(frames[start:stop]).astype(np.float32, copy=False)  # type: ignore[arg-type]
        return LoadedStack(pixels, geometry, self.instances[start:stop], (warning,))


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """One image series of the study (headers only).

    Attributes:
        series_instance_uid / study_instance_uid: the UIDs.
        modality: Modality (``"MR"``, ``"CT"``, …). description: SeriesDescription ("" if absent).
        series_number: SeriesNumber or ``None``.
        tags: series summary of the acquisition attributes (see :class:`AcquisitionTags`).
        stacks: the series' image stacks (at least one).
    """

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    description: str
    series_number: int | None
    tags: AcquisitionTags
    stacks: tuple[ImageStack, ...]

    @property
    def n_instances(self) -> int:
        return sum(stack.n_slices for stack in self.stacks)

    @property
    def planes(self) -> tuple[Plane, ...]:
        """Distinct anatomical planes of the stacks that have geometry, largest stack first."""
        ordered = sorted((s for s in self.stacks if s.plane is not None), key=lambda s: -s.n_slices)
        return tuple(dict.fromkeys(s.plane for s in ordered))  # type: ignore[misc]

    @property
    def orientations(self) -> tuple[tuple[float, ...], ...]:
        """Distinct ImageOrientationPatient values (one per stack with geometry)."""
        return tuple(dict.fromkeys(s.instances[0].orientation for s in self.stacks if s.geometry is not None))  # type: ignore[misc]

    def label(self) -> str:
        """``series 5 "t2_tse_sag"``: how messages name a series (no patient data)."""
        number = "?" if self.series_number is None else str(self.series_number)
        return f'series {number} "{self.description}"' if self.description else f"series {number}"


@dataclass(frozen=True)
class StudyScan:
    """Result of :func:`scan_study_folder`.

    Attributes:
        folder: the folder scanned.
        study_instance_uid: the study analysed (``None`` when no image was found).
        series: its image series, ordered by SeriesNumber.
        warnings: everything skipped or suspicious, in the order found.
        n_files: files looked at; n_images: images kept in ``series`` (each frame of a
            multi-frame file counts as one).
    """

    folder: Path
    study_instance_uid: str | None
    series: tuple[DicomSeries, ...]
    warnings: tuple[StudyWarning, ...]
    n_files: int
    n_images: int

    def series_by_uid(self, series_instance_uid: str) -> DicomSeries:
        for series in self.series:
            if series.series_instance_uid == series_instance_uid:
                return series
        raise KeyError(series_instance_uid)


# ------------------------------------------------------------------------------------------------
# Reading attribute values defensively
# ------------------------------------------------------------------------------------------------
#: VRs whose stored bytes are plain ASCII, decoded here directly: pydicom's validated conversion
#: of DS/IS values otherwise takes most of the header-scanning time.
_ASCII_VRS = frozenset({"CS", "DS", "IS", "UI"})


@functools.lru_cache(maxsize=None)
def _tag_and_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag, dictionary_VR(tag)


def _dataset_value(ds: Dataset, keyword: str) -> Any:
    """Value of a standard attribute: a str (or list of str for several values) for ASCII VRs,
    pydicom's converted value otherwise; ``None`` when absent."""
    tag, vr = _tag_and_vr(keyword)
    element = ds.get_item(tag)
    if element is None:
        return None
    raw = element.value
    if vr in _ASCII_VRS and isinstance(raw, bytes):
        parts = [part.strip(" \0") for part in raw.decode("ascii", "replace").split("\\")]
        return parts if len(parts) > 1 else parts[0]
    return ds[tag].value


class _Layers:
    """Attribute lookup through several data sets, first match wins: a frame's per-frame
    functional-group items, then the shared ones, then the top-level data set."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = tuple(datasets)

    def get(self, keyword: str) -> Any:
        tag, _ = _tag_and_vr(keyword)
        for dataset in self.datasets:
            if tag in dataset:
                return _dataset_value(dataset, keyword)
        return None


def _flatten_functional_groups(item: Dataset | None) -> list[Dataset]:
    """The items of every functional-group sequence in one (per-frame or shared) group item."""
    if item is None:
        return []
    layers = []
    for element in item:
        if element.VR == "SQ" and len(element.value):
            layers.append(element.value[0])
    return layers


def _value(ds: Dataset | _Layers, keyword: str) -> Any:
    """The attribute's value, or ``None`` if absent or not convertible (bad VR content)."""
    try:
        return ds.get(keyword) if isinstance(ds, _Layers) else _dataset_value(ds, keyword)
    except Exception:  # a malformed value raises on conversion; treat as missing
        return None


def _float(ds: Dataset | _Layers, keyword: str) -> float | None:
    value = _value(ds, keyword)
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _int(ds: Dataset | _Layers, keyword: str) -> int | None:
    number = _float(ds, keyword)
    return None if number is None else int(round(number))


def _floats(ds: Dataset | _Layers, keyword: str, count: int) -> tuple[float, ...] | None:
    value = _value(ds, keyword)
    if isinstance(value, (str, int, float)):
        value = [value]
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(np.isfinite(numbers)):
        return None
    return numbers


def _text(ds: Dataset | _Layers, keyword: str) -> str:
    value = _value(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _codes(ds: Dataset | _Layers, keyword: str) -> tuple[str, ...]:
    value = _value(ds, keyword)
    if value is None or value == "":
        return ()
    items = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else str(value).split("\\")
    return tuple(str(item).strip().upper() for item in items if str(item).strip())


def _private_b_value(ds: Dataset) -> float | None:
    """b-value from vendor private tags when (0018,9087) is absent: Siemens (0019,xx0C) in block
    "SIEMENS MR HEADER", GE (0043,xx39) in "GEMS_PARM_01" (first value; GE adds 1e9 offsets)."""
    for group, creator, element in ((0x0019, "SIEMENS MR HEADER", 0x0C), (0x0043, "GEMS_PARM_01", 0x39)):
        try:
            block = ds.private_block(group, creator)
            value = block[element].value
        except (KeyError, ValueError):
            continue
        try:
            first = value[0] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value
            number = float(first) % 1e9 if isinstance(first, (int, float, str)) else float("nan")
        except (TypeError, ValueError):
            continue
        if np.isfinite(number):
            return number
    return None


def _enhanced_codes(ds: Dataset | _Layers) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """ScanningSequence and ScanOptions codes equivalent to Enhanced MR attributes
    (EchoPulseSequence SPIN/GRADIENT/BOTH, InversionRecovery YES, SpectrallySelectedSuppression
    FAT…), for data sets that do not carry the classic attributes."""
    pulse = _text(ds, "EchoPulseSequence").upper()
    sequence = {"SPIN": ("SE",), "GRADIENT": ("GR",), "BOTH": ("SE", "GR")}.get(pulse, ())
    if _text(ds, "InversionRecovery").upper() == "YES":
        sequence += ("IR",)
    options = ("FS",) if "FAT" in _text(ds, "SpectrallySelectedSuppression").upper() else ()
    return sequence, options


def _acquisition_tags(ds: Dataset | _Layers, top: Dataset) -> AcquisitionTags:
    b_value = _float(ds, "DiffusionBValue")
    echo_time = _float(ds, "EchoTime")
    inversion_time = _float(ds, "InversionTime")
    enhanced_sequence, enhanced_options = _enhanced_codes(ds)
    return AcquisitionTags(
        echo_time_ms=echo_time if echo_time is not None else _float(ds, "EffectiveEchoTime"),
        repetition_time_ms=_float(ds, "RepetitionTime"),
        inversion_time_ms=inversion_time if inversion_time is not None else _float(ds, "InversionTimes"),
        flip_angle_deg=_float(ds, "FlipAngle"),
        echo_train_length=_float(ds, "EchoTrainLength"),
        scanning_sequence=_codes(ds, "ScanningSequence") or enhanced_sequence,
        sequence_variant=_codes(ds, "SequenceVariant"),
        scan_options=_codes(ds, "ScanOptions") or enhanced_options,
        sequence_name=_text(ds, "SequenceName"),
        mr_acquisition_type=_text(ds, "MRAcquisitionType").upper(),
        image_type=_codes(ds, "ImageType"),
        contrast_bolus_agent=_text(ds, "ContrastBolusAgent"),
        diffusion_b_value=b_value if b_value is not None else _private_b_value(top),
        magnetic_field_strength_t=_float(ds, "MagneticFieldStrength"),
        manufacturer=_text(ds, "Manufacturer"),
    )


def _summarise(tags: Sequence[AcquisitionTags]) -> AcquisitionTags:
    """Series summary: median of numbers, most common non-empty string/tuple, max b-value."""
    values: dict[str, Any] = {}
    for item in fields(AcquisitionTags):
        present = [getattr(t, item.name) for t in tags if getattr(t, item.name) not in (None, "", ())]
        if not present:
            continue
        if item.name == "diffusion_b_value":
            values[item.name] = float(max(present))
        elif isinstance(present[0], float):
            values[item.name] = float(np.median(present))
        else:
            values[item.name] = Counter(present).most_common(1)[0][0]
    return AcquisitionTags(**values)


# ------------------------------------------------------------------------------------------------
# Reading one file
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Skip:
    """Why a file is not used: a warning code and a reason phrase (no patient data)."""

    code: str
    reason: str


_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def _pixel_data_problem(fp: Any, ds: Dataset, file_size: int) -> str | None:
    """Check, without reading it, that native pixel data is complete.

    ``fp`` is positioned where ``stop_before_pixels`` stopped. Returns a reason phrase when the
    file ends before the pixel data or inside it, ``None`` when complete (or compressed: an
    encapsulated stream's integrity is only known when decoding it).
    """
    implicit, little = ds.original_encoding
    if implicit is None or ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return None  # deflated: file offsets refer to the inflated stream; checked at decode time
    start = fp.tell()
    head = fp.read(12)
    endian = "<" if little else ">"
    if len(head) < 8:
        return "truncated (file ends before the pixel data)"
    group, element = struct.unpack(endian + "HH", head[:4])
    if (group << 16 | element) not in _PIXEL_TAGS:
        return "truncated (file ends before the pixel data)"
    if implicit:
        length, header = struct.unpack(endian + "I", head[4:8])[0], 8
    elif len(head) < 12:
        return "truncated (file ends inside the pixel data)"
    else:
        length, header = struct.unpack(endian + "I", head[8:12])[0], 12
    if length == 0xFFFFFFFF:
        return None
    if file_size - start - header < length:
        return "truncated (file ends inside the pixel data)"
    return None


def _looks_like_raw_dataset(path: Path) -> bool:
    """A DICOM data set written without the 128-byte preamble and "DICM" (older exports): the file
    starts with a little-endian group 0002 or 0008 tag."""
    try:
        with open(path, "rb") as fp:
            start = fp.read(4)
    except OSError:
        return False
    return len(start) == 4 and start[:2] in (b"\x02\x00", b"\x08\x00") and start[2:] < b"\x00\x20"


def _is_image_sop_class(sop_class: str, ds: Dataset) -> bool:
    name = UID(sop_class).name if sop_class else ""
    if name and name != sop_class:  # a registered SOP class: trust its name
        return "Image Storage" in name
    return "Rows" in ds and "Columns" in ds  # private/unknown SOP class: image if it has a matrix


def _patient_key(ds: Dataset) -> tuple[str, set[str]]:
    """A salted digest identifying the patient, and the raw strings to mask in messages."""
    patient_id = _text(ds, "PatientID")
    name = _text(ds, "PatientName")
    secrets = {s for s in (patient_id, name, *re.split(r"[\^=\s]+", name)) if len(s) >= 3}
    digest = hashlib.sha256(f"spine-map\0{patient_id.upper()}\0{name.upper()}".encode()).hexdigest()[:16]
    return digest, secrets


def _read_header(path: Path, relative_path: str, secrets: set[str]) -> list[InstanceHeader] | _Skip:
    """Read one file's header: one :class:`InstanceHeader` per frame, or ``_Skip`` saying why the
    file is not an image instance we can use."""
    force = False
    while True:
        try:
            with open(path, "rb") as fp, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom value warnings can quote patient values
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=force)
                file_size = os.fstat(fp.fileno()).st_size
                meta_class = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
                if meta_class == MediaStorageDirectoryStorage or path.name.upper() == "DICOMDIR":
                    return _Skip("DICOMDIR_IGNORED", "")
                sop_class = str(_value(ds, "SOPClassUID") or meta_class)
                if sop_class and not _is_image_sop_class(sop_class, ds):
                    return _Skip("NON_IMAGE_INSTANCES", UID(sop_class).name)
                pixel_problem = _pixel_data_problem(fp, ds, file_size)
            break
        except InvalidDicomError:
            if not force and _looks_like_raw_dataset(path):
                force = True
                continue
            return _Skip("NOT_DICOM", "")
        except PermissionError:
            return _Skip("UNREADABLE_FILES", "permission denied")
        except (EOFError, struct.error):
            return _Skip("CORRUPT_FILES", "truncated or malformed header")
        except OSError as exc:
            return _Skip("UNREADABLE_FILES", f"read error ({type(exc).__name__})")
        except Exception as exc:  # pydicom raises many types on malformed data; report the class only
            return _Skip("CORRUPT_FILES", f"malformed header ({type(exc).__name__})")

    study_uid = _text(ds, "StudyInstanceUID")
    series_uid = _text(ds, "SeriesInstanceUID")
    sop_uid = _text(ds, "SOPInstanceUID")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if pixel_problem is not None and "before the pixel data" in pixel_problem and not (study_uid and series_uid and rows):
        return _Skip("CORRUPT_FILES", "truncated (file ends inside the header)")
    if not (study_uid and series_uid and sop_uid):
        return _Skip("CORRUPT_FILES", "missing Study/Series/SOP Instance UID")
    if not rows or not columns:
        return _Skip("CORRUPT_FILES", "missing Rows/Columns")
    if pixel_problem is not None:
        return _Skip("CORRUPT_FILES", pixel_problem)
    patient_key, patient_secrets = _patient_key(ds)
    secrets.update(patient_secrets)
    identity = dict(
        path=path,
        relative_path=relative_path,
        sop_instance_uid=sop_uid,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        patient_key=patient_key,
        modality=_text(ds, "Modality").upper(),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        instance_number=_int(ds, "InstanceNumber"),
        rows=rows,
        columns=columns,
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
        without_preamble=force,
    )
    n_frames = _int(ds, "NumberOfFrames") or 1
    if n_frames <= 1:
        return [_frame_header(identity, ds, ds, None)]
    shared = _flatten_functional_groups(_first_item(ds, "SharedFunctionalGroupsSequence"))
    per_frame = _value(ds, "PerFrameFunctionalGroupsSequence") or []
    headers = []
    for frame in range(n_frames):
        own = _flatten_functional_groups(per_frame[frame]) if frame < len(per_frame) else []
        headers.append(_frame_header(identity, _Layers([*own, *shared, ds]), ds, frame))
    return headers


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    sequence = _value(ds, keyword)
    return sequence[0] if sequence else None


def _frame_header(identity: dict[str, Any], layers: Dataset | _Layers, top: Dataset, frame: int | None) -> InstanceHeader:
    """One image's header: identity from the top-level data set, the rest looked up per frame."""
    spacing = _floats(layers, "PixelSpacing", 2)
    orientation = _floats(layers, "ImageOrientationPatient", 6)
    if orientation is not None:
        try:
            orientation_vectors(orientation)
        except ValueError:
            orientation = None
    slope = _float(layers, "RescaleSlope")
    intercept = _float(layers, "RescaleIntercept")
    temporal = _int(layers, "TemporalPositionIdentifier")
    return InstanceHeader(
        **identity,
        frame=frame,
        orientation=orientation,
        position=_floats(layers, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        pixel_spacing=spacing if spacing is not None and min(spacing) > 0 else None,  # type: ignore[arg-type]
        slice_thickness_mm=_positive(_float(layers, "SliceThickness")),
        spacing_between_slices_mm=_positive(_float(layers, "SpacingBetweenSlices")),
        slice_location_mm=_float(layers, "SliceLocation"),
        rescale_slope=slope if slope not in (None, 0.0) else 1.0,
        rescale_intercept=intercept if intercept is not None else 0.0,
        acquisition_number=_int(layers, "AcquisitionNumber"),
        temporal_position=temporal if temporal is not None else _int(layers, "TemporalPositionIndex"),
        tags=_acquisition_tags(layers, top),
    )


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


# ------------------------------------------------------------------------------------------------
# Decoding pixels
# ------------------------------------------------------------------------------------------------
#: Largest image matrix decoded (8192²): spine MR/CT images are ≤ 1024², composed whole spine ≤ 2048².
MAX_PIXELS_PER_IMAGE = 8192 * 8192


def _decode_instance(instance: InstanceHeader, last_file: dict[Path, np.ndarray]) -> np.ndarray:
    """``(R, C)`` float32 physical values of one image (one frame of a multi-frame file).

    ``last_file`` caches the decoded array of the most recent file, so consecutive frames of one
    multi-frame file decode it once.
    """
    if instance.rows * instance.columns > MAX_PIXELS_PER_IMAGE:
        # A header claiming e.g. 40000² would make the decoder allocate gigabytes per frame.
        raise ValueError(f"matrix {instance.rows}x{instance.columns} is larger than any spine image")
    if instance.path not in last_file:
        last_file.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(instance.path, force=instance.without_preamble)
            if ds.file_meta.get("TransferSyntaxUID") == RLELossless:
                # pydicom's own numpy RLE decoder: pylibjpeg-rle (Rust) panics on corrupt data and
                # prints a Rust backtrace to the console before the panic can be caught.
                ds.pixel_array_options(decoding_plugin="pydicom")
            last_file[instance.path] = ds.pixel_array
    array = last_file[instance.path]
    frame = array if instance.frame is None else array[instance.frame]
    if frame.shape != (instance.rows, instance.columns):
        raise ValueError(f"decoded shape {frame.shape} is not {instance.rows}x{instance.columns}")
    return frame.astype(np.float32) * np.float32(instance.rescale_slope) + np.float32(instance.rescale_intercept)


def _decode_failure_reason(exc: Exception, instance: InstanceHeader) -> str:
    syntax = UID(instance.transfer_syntax).name if instance.transfer_syntax else "unknown transfer syntax"
    if isinstance(exc, (NotImplementedError, ImportError)) or "plugin" in str(exc).lower():
        return f"no decoder available for {syntax}"
    if isinstance(exc, ValueError) and str(exc).startswith("decoded shape"):
        return str(exc)
    if isinstance(exc, OSError):
        return f"file can no longer be read ({type(exc).__name__})"
    return f"corrupt or truncated pixel data ({syntax}, {type(exc).__name__})"


def _failure_message(stack: ImageStack, failures: list[tuple[str, str]], dropped: bool, kept: int = 0) -> str:
    reasons = Counter(reason for _, reason in failures)
    examples = ", ".join(path for path, _ in failures[:_MAX_NAMED_FILES])
    what = "; ".join(f"{reason} ×{count}" for reason, count in reasons.items())
    lead = f"{len(failures)} of {stack.n_slices} slices of stack {stack.index} could not be decoded ({what}; e.g. {examples})"
    return f"{lead}; kept {kept} consecutive slices." if dropped else f"{lead}."


def _longest_run(flags: Sequence[bool]) -> tuple[int, int]:
    """``(start, stop)`` of the longest run of True values (first one on ties)."""
    best, start = (0, 0), None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


# ------------------------------------------------------------------------------------------------
# Stacks
# ------------------------------------------------------------------------------------------------
def _same_orientation(a: Sequence[float], b: Sequence[float]) -> bool:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) < _ORIENTATION_TOLERANCE


def _orientation_groups(instances: Sequence[InstanceHeader]) -> list[list[InstanceHeader]]:
    """Group instances with geometry by orientation, matrix and pixel spacing."""
    groups: list[list[InstanceHeader]] = []
    for instance in instances:
        for group in groups:
            first = group[0]
            if (
                (first.rows, first.columns) == (instance.rows, instance.columns)
                and np.allclose(first.pixel_spacing, instance.pixel_spacing, rtol=1e-3, atol=1e-4)  # type: ignore[arg-type]
                and _same_orientation(first.orientation, instance.orientation)  # type: ignore[arg-type]
            ):
                group.append(instance)
                break
        else:
            groups.append([instance])
    return groups


def _volume_value(instance: InstanceHeader, key: str) -> Any:
    """One of :data:`_VOLUME_KEYS` for an instance (acquisition tag or header attribute)."""
    return getattr(instance.tags, key) if key in AcquisitionTags.__dataclass_fields__ else getattr(instance, key)


def _split_volumes(group: list[InstanceHeader], normal: np.ndarray) -> tuple[list[list[InstanceHeader]], str | None]:
    """Split instances repeated at the same positions into volumes by a distinguishing attribute.

    Returns the volumes and the attribute used (``None`` when the group had no repeats or none of
    :data:`_VOLUME_KEYS` separates them).
    """
    along = np.round([np.dot(instance.position, normal) for instance in group], 2)  # type: ignore[arg-type]
    if len(set(along)) == len(group):
        return [group], None
    for key in _VOLUME_KEYS:
        volumes: dict[Any, list[InstanceHeader]] = defaultdict(list)
        for instance in group:
            volumes[_volume_value(instance, key)].append(instance)
        if len(volumes) < 2:
            continue
        if all(len({np.round(np.dot(i.position, normal), 2) for i in v}) == len(v) for v in volumes.values()):  # type: ignore[arg-type]
            ordered = sorted(volumes.items(), key=lambda item: (item[0] is None, item[0] if item[0] is not None else 0))
            return [v for _, v in ordered], _VOLUME_KEYS[key]
    return [group], None


def _chain(volume: list[InstanceHeader], normal: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray) -> tuple[list[list[InstanceHeader]], int]:
    """Order a volume along the normal and cut it into stacks at station jumps and slab gaps.

    Returns the stacks and the number of duplicate-position instances dropped.
    """
    def key(instance: InstanceHeader) -> tuple[float, int, str, int]:
        return (float(np.dot(instance.position, normal)), instance.instance_number or 0, instance.relative_path, instance.frame or 0)  # type: ignore[arg-type]

    ordered = sorted(volume, key=key)
    tracks: list[list[InstanceHeader]] = []
    dropped = 0
    for instance in ordered:
        position = np.asarray(instance.position)
        for track in tracks:
            last = np.asarray(track[-1].position)
            delta = position - last
            along = abs(float(delta @ normal))
            in_plane = float(np.hypot(delta @ row_dir, delta @ col_dir))
            if in_plane <= 10.0 + 0.6 * along:
                if along < 1e-3:
                    dropped += 1  # same place as the previous slice of this track
                else:
                    track.append(instance)
                break
        else:
            tracks.append([instance])
    stacks: list[list[InstanceHeader]] = []
    for track in tracks:
        along = np.array([key(i)[0] for i in track])
        steps = np.diff(along)
        if len(steps) >= 2:
            median = float(np.median(steps))
            cuts = [k + 1 for k, step in enumerate(steps) if step > max(3.5 * median, median + 10.0)]
            bounds = [0, *cuts, len(track)]
            stacks.extend(track[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
        else:
            stacks.append(track)
    return stacks, dropped


@dataclass
class _StackBuild:
    instances: list[InstanceHeader]
    geometry: VolumeGeometry | None
    positions: np.ndarray | None
    issues: list[tuple[str, str]] = field(default_factory=list)  # (code, message)


def _stack_geometry(instances: list[InstanceHeader]) -> _StackBuild:
    first = instances[0]
    positions = np.array([i.position for i in instances], dtype=float)
    shape = (len(instances), first.rows, first.columns)
    build = _StackBuild(instances, None, positions)
    try:
        _, _, normal = orientation_vectors(first.orientation)  # type: ignore[arg-type]
        if len(instances) == 1:
            step: np.ndarray | float = first.slice_thickness_mm or first.spacing_between_slices_mm or 1.0
        else:
            differences = np.diff(positions, axis=0)
            along = differences @ normal
            step = np.median(differences, axis=0)
            median = float(np.median(along))
            deviation = np.abs(along - median)
            if np.any(deviation > max(_UNEVEN_SPACING_TOLERANCE * abs(median), 0.05)):
                predicted = positions[0] + np.arange(len(instances))[:, None] * step
                error = float(np.max(np.linalg.norm(predicted - positions, axis=1)))
                worst = int(np.argmax(deviation))
                build.issues.append((
                    "UNEVEN_SLICE_SPACING",
                    f"slice spacing is uneven ({along[worst]:.2f} mm between slices {worst} and {worst + 1}, median "
                    f"{median:.2f} mm{'; slices may be missing' if along[worst] > 1.5 * median else ''}); "
                    f"the volume uses the median step, so slice positions are off by up to {error:.1f} mm",
                ))
        build.geometry = VolumeGeometry.from_dicom(first.orientation, positions[0], first.pixel_spacing, shape, step)  # type: ignore[arg-type]
    except ValueError as exc:
        build.issues.append(("MISSING_GEOMETRY", f"geometry tags are inconsistent ({exc}); the stack cannot be used for localisation"))
        build.geometry = None
    return build


def _build_stacks(instances: Sequence[InstanceHeader]) -> list[_StackBuild]:
    """Split one series' instances into stacks (see the module docstring for the rules)."""
    located = [i for i in instances if i.has_geometry]
    unlocated = [i for i in instances if not i.has_geometry]
    builds: list[_StackBuild] = []
    for group in _orientation_groups(located):
        row_dir, col_dir, normal = orientation_vectors(group[0].orientation)  # type: ignore[arg-type]
        volumes, volume_key = _split_volumes(group, normal)
        for volume in volumes:
            stacks, dropped = _chain(volume, normal, row_dir, col_dir)
            for stack in stacks:
                builds.append(_stack_geometry(stack))
            if dropped:
                builds[-1].issues.append((
                    "DUPLICATE_SLICE_POSITIONS",
                    f"{dropped} instance(s) repeat a slice position already present and were left out "
                    "(kept the lowest InstanceNumber)",
                ))
        if volume_key is not None:
            builds[-1].issues.append((
                "MULTIPLE_VOLUMES_IN_SERIES",
                f"the series repeats its slice positions; split into {len(volumes)} stacks by {volume_key}",
            ))
    if unlocated:
        unlocated.sort(key=lambda i: (i.slice_location_mm is None, i.slice_location_mm or 0.0, i.instance_number or 0, i.relative_path, i.frame or 0))
        build = _StackBuild(unlocated, None, None)
        build.issues.append((
            "MISSING_GEOMETRY",
            f"{len(unlocated)} instance(s) lack valid ImageOrientationPatient/ImagePositionPatient/PixelSpacing; "
            "they cannot be used for localisation",
        ))
        builds.append(build)
    return builds


# ------------------------------------------------------------------------------------------------
# Scanning a folder
# ------------------------------------------------------------------------------------------------
class _FileProblems:
    """Counts skipped files per (code, reason) and renders one warning each."""

    _LEADS = {
        "NOT_DICOM": "Skipped files that are not DICOM",
        "DICOMDIR_IGNORED": "Ignored the DICOMDIR index (the folder is walked instead)",
        "NON_IMAGE_INSTANCES": "Skipped non-image DICOM instances",
        "CORRUPT_FILES": "Skipped corrupt DICOM files",
        "UNREADABLE_FILES": "Could not read files",
        "UNREADABLE_FOLDERS": "Could not read folders",
        "DUPLICATE_INSTANCES": "Ignored duplicate copies of instances (same SOPInstanceUID)",
    }

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], list[str]] = defaultdict(list)

    def add(self, code: str, reason: str, relative_path: str) -> None:
        self._files[(code, reason)].append(relative_path)

    def warnings(self, mask: Callable[[str], str]) -> list[StudyWarning]:
        result = []
        for (code, reason), paths in self._files.items():
            names = ", ".join(mask(p) for p in paths[:_MAX_NAMED_FILES])
            more = f" and {len(paths) - _MAX_NAMED_FILES} more" if len(paths) > _MAX_NAMED_FILES else ""
            detail = f": {reason}" if reason else ""
            noun = "folder" if code == "UNREADABLE_FOLDERS" else "file"
            count = f"{len(paths)} {noun}{'' if len(paths) == 1 else 's'}"
            result.append(StudyWarning(code, f"{self._LEADS[code]}{detail} ({count}: {names}{more})."))
        return result


def _walk(folder: Path, problems: _FileProblems) -> Iterable[tuple[Path, str]]:
    """Yield ``(path, relative_path)`` of every file, sorted, without following directory links."""
    def on_error(error: OSError) -> None:
        where = Path(error.filename) if error.filename else folder
        relative = where.relative_to(folder).as_posix() if where != folder and where.is_relative_to(folder) else "."
        reason = "permission denied" if isinstance(error, PermissionError) else type(error).__name__
        problems.add("UNREADABLE_FOLDERS", reason, relative)

    for root, directories, files in os.walk(folder, onerror=on_error):
        directories.sort()
        base = Path(root)
        for name in sorted(files):
            if name.lower() in _JUNK_FILE_NAMES or name.startswith("._"):
                continue
            path = base / name
            yield path, path.relative_to(folder).as_posix()


def _masker(secrets: set[str]) -> Callable[[str], str]:
    """Replace any patient name/ID fragment that appears in a path with ``***``."""
    if not secrets:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)), re.IGNORECASE)
    return lambda text: pattern.sub("***", text)


def scan_study_folder(folder: str | Path) -> StudyScan:
    """Index the DICOM images under ``folder`` (headers only) and group them into series/stacks.

    Walks ``folder`` recursively (files in sorted order; unreadable sub-folders become a warning),
    skips non-DICOM files, DICOMDIR, non-image SOP classes (SR, PR, KO, SEG, …) and corrupt or
    truncated files with one counted warning per reason, keeps one copy of duplicated
    SOPInstanceUIDs, and — when the folder mixes studies or patients — analyses the study with
    the most image instances and says so (``MULTIPLE_STUDIES`` / ``MULTIPLE_PATIENTS``; patient
    values are compared internally, never shown).

    Args:
        folder: the study folder (any layout: flat, one folder per series, nested).

    Returns:
        A :class:`StudyScan`; ``series`` is empty (with a ``NO_IMAGES`` warning) when nothing
        usable was found. Never raises for bad content.
    """
    root = Path(folder)
    problems = _FileProblems()
    secrets: set[str] = set()
    headers: list[InstanceHeader] = []
    n_files = 0
    for path, relative in _walk(root, problems):
        n_files += 1
        result = _read_header(path, relative, secrets)
        if isinstance(result, _Skip):
            problems.add(result.code, result.reason, relative)
        else:
            headers.extend(result)

    study_warnings: list[StudyWarning] = []
    chosen = _choose_study(headers, study_warnings)
    unique: dict[tuple[str, int | None], InstanceHeader] = {}
    for header in chosen:
        if header.key in unique:
            if header.frame is None or header.frame == 0:  # name a duplicated file once
                problems.add("DUPLICATE_INSTANCES", "", header.relative_path)
        else:
            unique[header.key] = header

    mask = _masker(secrets)
    by_series: dict[str, list[InstanceHeader]] = defaultdict(list)
    for header in unique.values():
        by_series[header.series_instance_uid].append(header)
    series_list: list[DicomSeries] = []
    series_warnings: list[StudyWarning] = []
    for series_uid, members in by_series.items():
        builds = _build_stacks(members)
        stacks = tuple(
            ImageStack(series_uid, index, tuple(build.instances), build.geometry, build.positions)
            for index, build in enumerate(builds)
        )
        first = members[0]
        series = DicomSeries(
            series_instance_uid=series_uid,
            study_instance_uid=first.study_instance_uid,
            modality=Counter(m.modality for m in members).most_common(1)[0][0],
            description=Counter(m.series_description for m in members).most_common(1)[0][0],
            series_number=Counter(m.series_number for m in members).most_common(1)[0][0],
            tags=_summarise([m.tags for m in members]),
            stacks=stacks,
        )
        series_list.append(series)
        for build, stack in zip(builds, stacks):
            for code, message in build.issues:
                series_warnings.append(StudyWarning(code, f"{series.label()} stack {stack.index}: {message}.", series_uid))
    series_list.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid))

    all_warnings = problems.warnings(mask) + study_warnings + series_warnings
    if not series_list:
        all_warnings.append(StudyWarning("NO_IMAGES", f"No DICOM image instances found ({n_files} files looked at)."))
    return StudyScan(
        folder=root,
        study_instance_uid=series_list[0].study_instance_uid if series_list else None,
        series=tuple(series_list),
        warnings=tuple(all_warnings),
        n_files=n_files,
        n_images=len(unique),
    )


def _choose_study(headers: list[InstanceHeader], study_warnings: list[StudyWarning]) -> list[InstanceHeader]:
    """Keep the (patient, study) group with the most image instances; warn about the others."""
    groups: dict[tuple[str, str], list[InstanceHeader]] = defaultdict(list)
    for header in headers:
        groups[(header.patient_key, header.study_instance_uid)].append(header)
    if len(groups) <= 1:
        return headers
    (patient, study), chosen = max(groups.items(), key=lambda item: (len(item[1]), item[0][1]))
    ignored = len(headers) - len(chosen)
    patients = {key[0] for key in groups}
    studies = {key[1] for key in groups}
    if len(patients) > 1:
        study_warnings.append(StudyWarning(
            "MULTIPLE_PATIENTS",
            f"The folder holds images of {len(patients)} different patients; only study {study} "
            f"({len(chosen)} images, the most) is analysed and {ignored} other images are ignored.",
        ))
    if len(studies) > 1:
        study_warnings.append(StudyWarning(
            "MULTIPLE_STUDIES",
            f"The folder holds {len(studies)} studies; only study {study} ({len(chosen)} images, the most) "
            f"is analysed and {ignored} images of the other studies are ignored.",
        ))
    return chosen
