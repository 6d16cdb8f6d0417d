"""Write a voxel array as a DICOM series with correct patient geometry.

Used by the synthetic study generator and by tests that need real DICOM files: one function,
:func:`write_series`, turns a ``(S, R, C)`` array and its :class:`~operators.core.geometry.VolumeGeometry`
into one file per slice (MR Image Storage or CT Image Storage), optionally compressed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from operators.core.geometry import VolumeGeometry

#: Transfer syntaxes the writer can produce. JPEG baseline is lossy and 8-bit: the writer rescales
#: the data into 0..255 and records that in RescaleSlope/RescaleIntercept.
SUPPORTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

_SOP_CLASS = {"MR": MRImageStorage, "CT": CTImageStorage}


@dataclass(frozen=True)
class PatientStudy:
    """Patient- and study-level attributes shared by every series of one study."""

    study_instance_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    patient_name: str = "SYNTHETIC^SPINE"
    patient_id: str = "SYN0000"
    patient_birth_date: str = "19600101"
    patient_sex: str = "O"
    study_date: str = "20260101"
    study_time: str = "120000"
    accession_number: str = "SYNACC0000"
    study_id: str = "1"
    study_description: str = "MRI SPINE"
    institution_name: str = "spine-map synthetic"


def _stored_values(pixels: np.ndarray, modality: str, eight_bit: bool) -> tuple[np.ndarray, float, float, int]:
    """Quantise float pixel values to stored integers.

    Returns ``(stored, slope, intercept, pixel_representation)``. CT keeps Hounsfield units exactly
    (slope 1, intercept -1024, unsigned); MR uses slope 1, intercept 0 and clips to uint16; 8-bit
    output (JPEG baseline) maps the data range onto 0..255 with a matching slope/intercept.
    """
    values = np.asarray(pixels, dtype=np.float64)
    if eight_bit:
        low, high = float(values.min()), float(values.max())
        slope = (high - low) / 255.0 if high > low else 1.0
        stored = np.clip(np.round((values - low) / slope), 0, 255).astype(np.uint8)
        return stored, slope, low, 0
    if modality == "CT":
        stored = np.clip(np.round(values + 1024.0), 0, 4095).astype(np.uint16)
        return stored, 1.0, -1024.0, 0
    stored = np.clip(np.round(values), 0, 65535).astype(np.uint16)
    return stored, 1.0, 0.0, 0


def _encode_jpeg_baseline(frame: np.ndarray) -> bytes:
    from PIL import Image  # Pillow is a highdicom dependency; only needed for this syntax.

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_series(
    pixels: np.ndarray,
    geometry: VolumeGeometry,
    out_dir: str | Path,
    *,
    modality: str,
    study: PatientStudy,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "",
    slice_thickness_mm: float | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    transfer_syntax: UID | str = ExplicitVRLittleEndian,
    instance_numbers: Sequence[int] | None = None,
    file_names: Sequence[str] | None = None,
    sop_instance_uids: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``pixels`` as one DICOM file per slice and return the paths written.

    Args:
        pixels: ``(S, R, C)`` array of physical values (MR signal, or CT Hounsfield units).
        geometry: where the array sits in patient space; its shape must equal ``pixels.shape``.
        out_dir: folder to write into (created if missing).
        modality: ``"MR"`` or ``"CT"``.
        study: patient/study attributes shared across the study's series.
        series_instance_uid: defaults to a fresh UID.
        series_number: SeriesNumber.
        series_description: SeriesDescription (may be empty or misleading on purpose).
        slice_thickness_mm: SliceThickness; defaults to the slice spacing.
        extra_tags: further attributes by pydicom keyword (EchoTime, RepetitionTime, ImageType, …),
            applied last so they can override defaults.
        transfer_syntax: one of :data:`SUPPORTED_TRANSFER_SYNTAXES`.
        instance_numbers: InstanceNumber per slice (default 1..S); lets tests shuffle numbering.
        file_names: file name per slice (default ``IM{n:04d}.dcm``).
        sop_instance_uids: SOPInstanceUID per slice (default fresh UIDs); lets a seeded generator
            write byte-identical studies and record which image is which.

    Returns:
        The written file paths, in slice order.
    """
    if modality not in _SOP_CLASS:
        raise ValueError(f"modality must be MR or CT, not {modality!r}")
    volume = np.asarray(pixels)
    if volume.ndim != 3 or tuple(volume.shape) != tuple(geometry.shape):
        raise ValueError(f"pixels shape {volume.shape} does not match geometry shape {geometry.shape}")
    syntax = UID(transfer_syntax)
    if syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"unsupported transfer syntax {syntax}")
    eight_bit = syntax == JPEGBaseline8Bit
    stored, slope, intercept, pixel_representation = _stored_values(volume, modality, eight_bit)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series_uid = series_instance_uid or generate_uid()
    n_slices = volume.shape[0]
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, n_slices + 1))
    names = list(file_names) if file_names is not None else [f"IM{n:04d}.dcm" for n in range(1, n_slices + 1)]
    uids = list(sop_instance_uids) if sop_instance_uids is not None else [generate_uid() for _ in range(n_slices)]
    if len(numbers) != n_slices or len(names) != n_slices or len(uids) != n_slices:
        raise ValueError("instance_numbers, file_names and sop_instance_uids need one entry per slice")

    spacing = geometry.spacing_mm
    row_direction = geometry.affine[:3, 2] / spacing[2]
    column_direction = geometry.affine[:3, 1] / spacing[1]
    orientation = [round(float(v), 8) for v in (*row_direction, *column_direction)]
    positions = geometry.slice_positions()
    normal = geometry.normal
    thickness = float(slice_thickness_mm if slice_thickness_mm is not None else spacing[0])
    bits = 8 if eight_bit else (12 if modality == "CT" else 16)

    paths: list[Path] = []
    for index in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
        meta.MediaStorageSOPInstanceUID = uids[index]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M" if modality == "MR" else "AXIAL", "NONE"]
        ds.Modality = modality
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = study.patient_birth_date
        ds.PatientSex = study.patient_sex
        ds.StudyInstanceUID = study.study_instance_uid
        ds.StudyDate = study.study_date
        ds.StudyTime = study.study_time
        ds.SeriesDate = study.study_date
        ds.AccessionNumber = study.accession_number
        ds.ReferringPhysicianName = ""
        ds.StudyID = study.study_id
        ds.StudyDescription = study.study_description
        ds.InstitutionName = study.institution_name
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.FrameOfReferenceUID = study.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = int(numbers[index])
        ds.ImagePositionPatient = [round(float(v), 6) for v in positions[index]]
        ds.ImageOrientationPatient = orientation
        ds.SliceLocation = round(float(positions[index] @ normal), 6)
        ds.PixelSpacing = [round(float(spacing[1]), 6), round(float(spacing[2]), 6)]
        ds.SliceThickness = round(thickness, 6)
        if modality == "MR":
            ds.SpacingBetweenSlices = round(float(spacing[0]), 6)
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 8 if eight_bit else 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = pixel_representation
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = f"{intercept:.10g}"
        if modality == "CT":
            ds.RescaleType = "HU"
        frame = np.ascontiguousarray(stored[index])
        for keyword, value in (extra_tags or {}).items():
            setattr(ds, keyword, value)

        if syntax == ExplicitVRLittleEndian:
            ds.PixelData = frame.tobytes()
        elif syntax == JPEGBaseline8Bit:
            ds.PixelData = encapsulate([_encode_jpeg_baseline(frame)])
            ds["PixelData"].VR = "OB"
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.LossyImageCompression = "01"
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.PixelData = frame.tobytes()
            # Keep the caller's SOPInstanceUID: pydicom would otherwise replace it on compression.
            ds.compress(syntax, frame, generate_instance_uid=False)

        path = out / names[index]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
