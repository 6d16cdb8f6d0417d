"""Robustness harness: the app on hundreds of damaged studies, with nothing lost and nothing leaked.

Command (from the repository root; the machine is shared, so run it niced)::

    nice -n 19 .venv/bin/python -m benchmarks.robustness [--n 500] [--seed 0] [--json PATH] [--keep DIR] [--only I ...]

Studies: a few base studies from the project's generator (small: 9 sagittal slices, 256 matrix;
different layouts and transfer syntaxes) whose PatientName / PatientID / AccessionNumber are
rewritten to distinctive values, then copied and damaged — one damage per case in round robin
over :data:`MUTATIONS` (so any 50 consecutive cases cover every kind), plus a second and third
damage at random. Each case is reproducible from ``(seed, index)``: ``--only 17 --keep DIR``
rebuilds and re-runs case 17 and keeps its folders.

Every case runs the app in this process (``app.cli.run_app_main``, the same code path as ``python
app``) with file descriptors 1 and 2 captured through pipes, so Holoscan's C++ output is caught too.
A case passes when (see :func:`check_case`):

* the exit code is documented (0, 3 or 4; 1 is an internal error, i.e. a bug) and the expected one
  for the damage (input damage → 0 or 3 with a report; output damage → 4 or a complete report);
* the console holds no traceback (``Traceback`` / Holoscan's ``At:``) and only ``spine-map:`` lines,
  exactly one line on an error exit; nothing escaped ``run_app_main``; the log holds no traceback;
* every output file is whole: ``spine_report.json`` parses and validates against the schema,
  ``spine_report.csv`` parses, DICOM and PNG outputs (later stages) open, no temporary file is left;
  exit 3 ⇔ the report lists no series;
* no PatientName (or a component of it), PatientID or AccessionNumber of any patient in the study
  appears in the console, the log or any output file (case-insensitive).

Damage that needs the operating system's help:

* unreadable folders/files and a read-only output folder: ``chmod``; when the harness runs as root
  (who ignores permissions) the app runs with the effective user id of ``nobody`` for that case
  (``os.seteuid``; the case folders are made accessible to it), so the permissions bite;
* a full disk: ``RLIMIT_FSIZE`` lowered for the run (Python ignores ``SIGXFSZ``, so every write
  past the limit fails with ``EFBIG`` "File too large", as a full disk fails with ``ENOSPC``). No
  tmpfs or LD_PRELOAD needed; the console is captured through pipes, which the limit does not touch.

Prints a summary (studies tried, outcomes by class, tracebacks, failing cases) and writes JSON.
Exit status 0 when every case passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.dataelem import RawDataElement
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, generate_uid

from operators.core.geometry import VolumeGeometry
from training.synthetic.dicom_writer import PatientStudy, write_series
from training.synthetic.study import StudyConfig, generate_study

#: Exit codes of ``app.cli`` (repeated here so the harness reads as a spec; checked in the tests).
EXIT_OK, EXIT_INTERNAL_ERROR, EXIT_USAGE, EXIT_NOTHING_USABLE, EXIT_OUTPUT_UNWRITABLE = 0, 1, 2, 3, 4
OUTCOME_CLASSES: dict[int, str] = {
    EXIT_OK: "report",
    EXIT_INTERNAL_ERROR: "internal_error",
    EXIT_USAGE: "usage_error",
    EXIT_NOTHING_USABLE: "nothing_usable_report",
    EXIT_OUTPUT_UNWRITABLE: "output_unwritable",
}
REPORT_JSON, REPORT_CSV, LOG_FILE = "spine_report.json", "spine_report.csv", "spine_map.log"
NOBODY_UID = 65534


# --------------------------------------------------------------------------------------------------
# Base studies
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """Patient identifiers written into a study; :attr:`secrets` are what must never leak."""

    name: str
    patient_id: str
    accession: str

    @property
    def secrets(self) -> tuple[str, ...]:
        return (*[part for part in self.name.split("^") if len(part) >= 4], self.patient_id, self.accession)


#: Distinctive on purpose: a leak cannot hide behind a common word.
IDENTITIES: tuple[Identity, ...] = (
    Identity("KZRWQXOVA^ULVANIETTE^B", "PIDZQ-4471-VR", "ACCZQ83561XJ"),
    Identity("MORGWENTHAL^YSOLDIRA", "PIDZQ-9902-KT", "ACCZQ11037PW"),
    Identity("TRYBULSKAYA^ODOVAKAR", "PIDZQ-3318-MN", "ACCZQ55290HD"),
)
#: The "other patient" of mixed-patient damage.
INTRUDER = Identity("PLOVDIVSKY^ZENOBIUSZ", "PIDZQ-6120-XX", "ACCZQ70044QL")


@dataclass(frozen=True)
class BaseSpec:
    """How one base study is generated."""

    name: str
    seed: int
    config: StudyConfig
    identity: Identity


BASES: tuple[BaseSpec, ...] = (
    BaseSpec("lumbar_per_series", 101, StudyConfig(field_of_view="lumbar", series_kinds=("sag_t1", "sag_t2", "ax_t2"),
             duplicates=(), layout="per_series", transfer_syntax=ExplicitVRLittleEndian), IDENTITIES[0]),
    BaseSpec("lumbar_flat_rle", 102, StudyConfig(field_of_view="lumbar", series_kinds=("sag_t2", "sag_stir", "ax_t2"),
             duplicates=(), layout="flat", transfer_syntax=RLELossless), IDENTITIES[1]),
    BaseSpec("whole_nested_jpegls", 103, StudyConfig(field_of_view="whole", series_kinds=("sag_t2",),
             duplicates=(), layout="nested", whole_spine_stations=2, transfer_syntax=JPEGLSLossless), IDENTITIES[2]),
)  # fmt: skip
#: Small sagittal series (slices, larger side in pixels) keep each run short; the damage, not the
#: size, is under test.
BASE_SAGITTAL_SLICES, BASE_SAGITTAL_MATRIX = 9, 256


@dataclass
class BaseStudy:
    """A generated, re-identified base study and its file index (relative path → series UID)."""

    spec: BaseSpec
    folder: Path
    series_of: dict[str, str]

    def files_by_series(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        for relative, series in sorted(self.series_of.items()):
            groups[series].append(relative)
        return groups


def _set_identity(dataset: pydicom.Dataset, identity: Identity) -> None:
    dataset.PatientName = identity.name
    dataset.PatientID = identity.patient_id
    dataset.AccessionNumber = identity.accession


def make_base(spec: BaseSpec, work: Path) -> BaseStudy:
    """Generate ``spec`` under ``work/spec.name`` and write its identity into every file."""
    config = replace(spec.config, sagittal_slices=BASE_SAGITTAL_SLICES, sagittal_matrix=BASE_SAGITTAL_MATRIX)
    generate_study(spec.seed, work / spec.name, config)
    folder = work / spec.name / "study"
    series_of = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        dataset = pydicom.dcmread(path)
        _set_identity(dataset, spec.identity)
        dataset.save_as(path)
        series_of[path.relative_to(folder).as_posix()] = str(dataset.SeriesInstanceUID)
    return BaseStudy(spec, folder, series_of)


# --------------------------------------------------------------------------------------------------
# Damage
# --------------------------------------------------------------------------------------------------
@dataclass
class CaseState:
    """One case being built: its study copy, random stream, and what the run must look like."""

    study: Path
    base: BaseStudy
    rng: random.Random
    secrets: set[str]
    #: Folder/file modes to set just before the run (so building the case is never hindered).
    chmods: list[tuple[Path, int]] = field(default_factory=list)
    #: Names of files whose *name* carries an identifier (only excusable when no image was read).
    named_files: list[str] = field(default_factory=list)
    output_damage: str | None = None  # "read_only" | "is_a_file" | "disk_full"
    fsize_limit: int | None = None

    def dicom_files(self) -> list[Path]:
        return [self.study / r for r in sorted(self.base.series_of) if (self.study / r).is_file()]

    def some_files(self, low: int = 1, high: int = 5) -> list[Path]:
        files = self.dicom_files()
        return self.rng.sample(files, min(len(files), self.rng.randint(low, high))) if files else []

    def a_series(self) -> list[Path]:
        groups = [[self.study / r for r in rel if (self.study / r).is_file()] for rel in self.base.files_by_series().values()]
        groups = [g for g in groups if g]
        return self.rng.choice(groups) if groups else []


def _edit(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    """Read ``path`` leniently, apply ``change``, write it back without validating values."""
    with pydicom.config.disable_value_validation():
        dataset = pydicom.dcmread(path, force=True)
        change(dataset)
        dataset.save_as(path, enforce_file_format=False)


def _raw(dataset: pydicom.Dataset, keyword: str, text: str) -> None:
    """Store ``text`` as the encoded value of ``keyword`` as is, even where it is invalid for the
    VR (``"abc"`` in a DS, ``"x7"`` in an IS): pydicom would refuse to convert such values itself."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    data = text.encode("ascii")
    data += b" " * (len(data) % 2)  # DICOM values have even length
    dataset[tag] = RawDataElement(Tag(tag), pydicom.datadict.dictionary_VR(tag), len(data), data, 0, False, True)


def truncate_files(case: CaseState) -> None:
    """Cut files in the preamble, the header, or the pixel data."""
    for path in case.some_files():
        size = path.stat().st_size
        cut = case.rng.choice([case.rng.randint(0, 132), case.rng.randint(132, min(size, 1200)), case.rng.randint(size // 2, size - 1)])
        with open(path, "r+b") as handle:
            handle.truncate(cut)


def overwrite_bytes(case: CaseState) -> None:
    """Overwrite a random span (16–1024 bytes) of files with random bytes."""
    for path in case.some_files():
        data = bytearray(path.read_bytes())
        length = case.rng.randint(16, 1024)
        start = case.rng.randint(0, max(0, len(data) - length))
        data[start : start + length] = case.rng.randbytes(length)[: len(data) - start]
        path.write_bytes(bytes(data))


def garbage_files(case: CaseState) -> None:
    """Replace whole files with random bytes, sometimes behind a valid ``DICM`` preamble."""
    for path in case.some_files(1, 3):
        body = case.rng.randbytes(case.rng.randint(0, 20000))
        path.write_bytes((bytes(128) + b"DICM" + body) if case.rng.random() < 0.5 else body)


GEOMETRY_TAGS = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")


def drop_geometry(case: CaseState) -> None:
    """Delete one or all geometry tags from all or some files of a series."""
    files = case.a_series()
    files = files if case.rng.random() < 0.5 else case.rng.sample(files, max(1, len(files) // 2))
    doomed = [case.rng.choice(GEOMETRY_TAGS)] if case.rng.random() < 0.7 else list(GEOMETRY_TAGS)

    def change(dataset: pydicom.Dataset) -> None:
        for keyword in doomed:
            if keyword in dataset:
                delattr(dataset, keyword)

    for path in files:
        _edit(path, change)


def contradict_geometry(case: CaseState) -> None:
    """Geometry that cannot be true: degenerate or mixed orientations, stacked or far-flung positions."""
    files = case.a_series()
    variant = case.rng.randrange(7)
    targets = files if variant in (0, 1, 3, 6) else case.rng.sample(files, max(1, len(files) // 3))

    def change(dataset: pydicom.Dataset) -> None:
        if variant == 0:
            dataset.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]  # parallel row and column
        elif variant == 1:
            dataset.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]
        elif variant == 2:
            dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]  # axial slices inside a sagittal series
        elif variant == 3:
            dataset.ImagePositionPatient = [0, 0, 0]  # every slice at one place
        elif variant == 4:
            dataset.ImagePositionPatient = [1e7, -1e7, 1e7]
        elif variant == 5:
            dataset.ImageOrientationPatient = [1, 0, 0, 0, 1]  # five values
        else:
            _raw(dataset, "ImagePositionPatient", "nan\\inf\\0")

    for path in targets:
        _edit(path, change)


def wrong_pixel_spacing(case: CaseState) -> None:
    """Zero, negative, absurd, one-valued or per-file inconsistent PixelSpacing."""
    files = case.a_series()
    options = ["0\\0", "-0.8\\-0.8", "1e5\\1e5", "1e-9\\1e-9", "0.9", "nan\\1", "abc\\def"]
    per_file = case.rng.random() < 0.3
    value = case.rng.choice(options)
    for path in files:
        spacing = f"{case.rng.uniform(0.2, 3.0):.3f}\\{case.rng.uniform(0.2, 3.0):.3f}" if per_file else value
        _edit(path, lambda d, s=spacing: _raw(d, "PixelSpacing", s))


def mixed_patients(case: CaseState) -> None:
    """Another patient's images in the folder: a series relabelled in place or a copy as a new study."""
    files = case.a_series()
    case.secrets.update(INTRUDER.secrets)
    if case.rng.random() < 0.5:
        for path in files:
            _edit(path, lambda d: _set_identity(d, INTRUDER))
        return
    study_uid, series_uid = generate_uid(), generate_uid()
    target = case.study / "other_patient"
    target.mkdir(exist_ok=True)
    for index, path in enumerate(files):
        copy = target / f"x{index:03d}.dcm"
        shutil.copy(path, copy)

        def change(dataset: pydicom.Dataset) -> None:
            _set_identity(dataset, INTRUDER)
            dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()

        _edit(copy, change)


def duplicate_sop_uids(case: CaseState) -> None:
    """Exact copies of files elsewhere in the folder, or different images sharing one SOPInstanceUID."""
    files = case.a_series()
    if case.rng.random() < 0.5 or len(files) < 2:
        target = case.study / "copies"
        target.mkdir(exist_ok=True)
        for index, path in enumerate(case.rng.sample(files, max(1, len(files) // 2))):
            shutil.copy(path, target / f"dup{index:03d}")
        return
    first, *others = case.rng.sample(files, min(len(files), case.rng.randint(2, 4)))
    uid = pydicom.dcmread(first, stop_before_pixels=True, force=True).get("SOPInstanceUID") or generate_uid()

    def change(dataset: pydicom.Dataset) -> None:
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = uid

    for path in others:
        _edit(path, change)


#: Transfer syntaxes nobody decodes here, or that contradict the encoded data.
ODD_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.3.4.5.6.7",  # unknown
    "1.2.840.10008.1.2.4.100",  # MPEG2 video
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC
    "1.2.840.10008.1.2.4.70",  # JPEG lossless, but the pixel data is native
    "1.2.840.10008.1.2.1.99",  # deflated, but the data is not
    "1.2.840.10008.1.2.2",  # big endian, but the data is little endian
    "1.2.840.10008.1.2.4.201",  # HTJ2K
)


def set_transfer_syntax(path: Path, syntax: str) -> None:
    """Rewrite only the file meta's TransferSyntaxUID, keeping the encoded dataset byte for byte."""
    data = path.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])  # (0002,0000) UL, written by pydicom
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = syntax
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(data[:128] + b"DICM" + buffer.getvalue() + data[144 + group_length :])


def unsupported_transfer_syntax(case: CaseState) -> None:
    """A series (or some files) declaring a transfer syntax that cannot decode its pixel data."""
    files = case.a_series()
    files = files if case.rng.random() < 0.6 else case.rng.sample(files, max(1, len(files) // 3))
    syntax = case.rng.choice(ODD_TRANSFER_SYNTAXES)
    for path in files:
        set_transfer_syntax(path, syntax)


def _extra_series(case: CaseState, shape: tuple[int, int, int], spacing: float) -> None:
    """Write an MR sagittal series of ``shape`` into the study (same patient and study)."""
    files = case.dicom_files()
    first = pydicom.dcmread(files[0], stop_before_pixels=True, force=True) if files else pydicom.Dataset()
    identity = case.base.spec.identity
    study = PatientStudy(
        study_instance_uid=str(first.get("StudyInstanceUID") or generate_uid()),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID") or generate_uid()),
        patient_name=identity.name, patient_id=identity.patient_id, accession_number=identity.accession,
    )  # fmt: skip
    geometry = VolumeGeometry.from_dicom(
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0), (-(shape[0] - 1) * 2.0, -100.0, 150.0), (spacing, spacing), shape, 4.0
    )
    pixels = np.random.default_rng(case.rng.randrange(2**32)).normal(300.0, 60.0, shape).clip(0)
    write_series(
        pixels, geometry, case.study / f"extra_{shape[1]}x{shape[2]}", modality="MR", study=study, series_number=77,
        series_description="SAG T2 extra",
        extra_tags={"EchoTime": 100.0, "RepetitionTime": 3500.0, "ScanningSequence": "SE"},
    )  # fmt: skip


def huge_matrix(case: CaseState) -> None:
    """A real 2048² series, or headers claiming a 40000² (or 65535²) matrix over ordinary pixel data."""
    if case.rng.random() < 0.4:
        _extra_series(case, (3, 2048, 2048), 0.2)
        return
    size = case.rng.choice([40000, 65535])
    for path in case.a_series():
        _edit(path, lambda d: (setattr(d, "Rows", size), setattr(d, "Columns", size)))


def tiny_matrix(case: CaseState) -> None:
    """1×1, 2×2 or 1×64 images as a series, or headers claiming 0 or 1 rows."""
    if case.rng.random() < 0.6:
        shape = case.rng.choice([(5, 1, 1), (5, 2, 2), (5, 1, 64), (9, 3, 3)])
        _extra_series(case, shape, 1.0)
        return
    rows = case.rng.choice([0, 1])
    for path in case.a_series():
        _edit(path, lambda d: setattr(d, "Rows", rows))


def single_slice_series(case: CaseState) -> None:
    """Delete all but one image of a series (or of every series)."""
    groups = [case.a_series()] if case.rng.random() < 0.7 else [
        [case.study / r for r in rel] for rel in case.base.files_by_series().values()
    ]  # fmt: skip
    for files in groups:
        keep = case.rng.choice(files)
        for path in files:
            if path != keep and path.exists():
                path.unlink()


def non_dicom_files(case: CaseState) -> None:
    """Text naming the patient, images, empty files, a DICOMDIR, dangling and looping links, and a
    file whose *name* carries the patient name (file names end up in warnings)."""
    rng, study = case.rng, case.study
    identity = case.base.spec.identity
    junk = study / rng.choice(["junk", ".", "DICOM"])
    junk.mkdir(exist_ok=True)
    (junk / "notes.txt").write_text(f"MRI spine for {identity.name}, ID {identity.patient_id}, acc {identity.accession}\n")
    (junk / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    (junk / "empty.dcm").write_bytes(b"")
    (junk / "DICOMDIR").write_bytes(bytes(128) + b"DICM" + rng.randbytes(300))
    named = f"{identity.name.split('^')[0]}_{identity.patient_id}.dcm"
    (junk / named).write_bytes(rng.randbytes(2000))
    case.named_files.append(named)
    (junk / "README").write_text("exported by PACS\n" * rng.randint(1, 50))
    with contextlib.suppress(OSError):
        os.symlink(study / "does-not-exist", junk / "dangling.dcm")
        os.symlink(study, junk / "loop", target_is_directory=True)
    for index in range(rng.randint(0, 40)):
        (junk / f"f{index}.bin").write_bytes(rng.randbytes(rng.randint(0, 500)))


def unreadable_paths(case: CaseState) -> None:
    """A series folder, some files, or the whole study folder made unreadable (mode 000)."""
    rng = case.rng
    variant = rng.randrange(3)
    if variant == 0:
        folder = case.study / "locked"
        folder.mkdir(exist_ok=True)
        for path in case.a_series():
            shutil.move(path, folder / path.name)
        case.chmods.append((folder, 0))
    elif variant == 1:
        case.chmods += [(path, 0) for path in case.some_files(1, 6)]
    else:
        case.chmods.append((case.study, 0))


def bad_values(case: CaseState) -> None:
    """Values that break a reader's assumptions: non-numeric numbers, contradictory pixel
    description, missing UIDs, a non-image SOP class."""
    files = case.a_series()
    files = files if case.rng.random() < 0.5 else case.rng.sample(files, max(1, len(files) // 2))
    changes: list[Callable[[pydicom.Dataset], None]] = [
        lambda d: _raw(d, "EchoTime", "abc"),
        lambda d: _raw(d, "SliceThickness", "-3"),
        lambda d: _raw(d, "InstanceNumber", "x7"),
        lambda d: setattr(d, "BitsAllocated", 8),
        lambda d: setattr(d, "BitsAllocated", 32),
        lambda d: (setattr(d, "SamplesPerPixel", 3), setattr(d, "PhotometricInterpretation", "RGB")),
        lambda d: setattr(d, "NumberOfFrames", 7),
        lambda d: setattr(d, "RescaleSlope", 0),
        lambda d: _raw(d, "RescaleSlope", "nan"),
        lambda d: setattr(d, "PixelRepresentation", 1),
        lambda d: setattr(d, "HighBit", 40),
        lambda d: setattr(d, "Modality", ""),
        lambda d: delattr(d, "SeriesInstanceUID"),
        lambda d: delattr(d, "StudyInstanceUID"),
        lambda d: delattr(d, "SOPInstanceUID"),
        lambda d: setattr(d, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.88.33"),  # Comprehensive SR
        lambda d: setattr(d, "ImageType", ""),
        lambda d: delattr(d, "PixelData"),
    ]
    change = case.rng.choice(changes)
    for path in files:
        _edit(path, lambda d: change(d) if "PixelData" in d or change is not changes[-1] else None)


def empty_study(case: CaseState) -> None:
    """Every image removed (what is left: nothing, or only junk from another damage)."""
    for path in case.dicom_files():
        path.unlink()


def read_only_output(case: CaseState) -> None:
    """The output folder exists and cannot be written."""
    case.output_damage = "read_only"


def output_is_a_file(case: CaseState) -> None:
    """``-o`` names an existing file."""
    case.output_damage = "is_a_file"


def disk_full(case: CaseState) -> None:
    """Writes fail past 0–4 KiB per file (RLIMIT_FSIZE), as on a full disk."""
    case.output_damage = "disk_full"
    case.fsize_limit = case.rng.choice([0, 64, 600, 2048, 4096])


#: Damage kinds, in the order they are applied when a case combines several (also the round-robin
#: order): tag edits first (they must read intact files), then damage to whole files, then the
#: output side.
MUTATIONS: dict[str, Callable[[CaseState], None]] = {
    "missing_geometry": drop_geometry,
    "contradictory_geometry": contradict_geometry,
    "wrong_pixel_spacing": wrong_pixel_spacing,
    "mixed_patients": mixed_patients,
    "duplicate_sop_uids": duplicate_sop_uids,
    "bad_values": bad_values,
    "huge_matrix": huge_matrix,
    "tiny_matrix": tiny_matrix,
    "unsupported_transfer_syntax": unsupported_transfer_syntax,
    "truncated_files": truncate_files,
    "random_bytes": overwrite_bytes,
    "garbage_files": garbage_files,
    "single_slice_series": single_slice_series,
    "non_dicom_files": non_dicom_files,
    "unreadable_paths": unreadable_paths,
    "empty_study": empty_study,
    "read_only_output": read_only_output,
    "output_is_a_file": output_is_a_file,
    "disk_full": disk_full,
}
OUTPUT_MUTATIONS = frozenset({"read_only_output", "output_is_a_file", "disk_full"})
#: Damage that is drawn as a second/third damage (the output side only as the primary one, so that
#: the input damage of most cases reaches the report writer).
_COMBINABLE = [m for m in MUTATIONS if m not in OUTPUT_MUTATIONS and m != "empty_study"]


@dataclass(frozen=True)
class Case:
    """One harness case: which base, which damage in which order, and its own random seed."""

    index: int
    base: str
    mutations: tuple[str, ...]
    seed: int


def plan_cases(n: int, seed: int, bases: Sequence[str]) -> list[Case]:
    """``n`` cases: primary damage in round robin over :data:`MUTATIONS`, base in round robin over
    ``bases`` (co-prime strides, so every pairing comes up), 0–2 extra input damages at random."""
    names = list(MUTATIONS)
    cases = []
    for index in range(n):
        rng = random.Random(f"{seed}/{index}")
        extra = rng.sample(_COMBINABLE, rng.choice([0, 0, 1, 1, 2]))
        mutations = (names[index % len(names)], *[m for m in extra if m != names[index % len(names)]])
        cases.append(Case(index, bases[(index // len(names) + index) % len(bases)], mutations, rng.randrange(2**31)))
    return cases


def build_case(case: Case, base: BaseStudy, folder: Path) -> CaseState:
    """Copy ``base`` to ``folder/study`` and apply the case's damage."""
    study = folder / "study"
    shutil.copytree(base.folder, study, symlinks=True)
    state = CaseState(study, base, random.Random(case.seed), set(base.spec.identity.secrets))
    order = list(MUTATIONS)
    for name in sorted(case.mutations, key=order.index):
        MUTATIONS[name](state)
    return state


# --------------------------------------------------------------------------------------------------
# Running the app in this process
# --------------------------------------------------------------------------------------------------
@dataclass
class Console:
    """What one in-process run printed and returned; ``escaped`` is an exception that got out of
    ``run_app_main`` (a user would have seen its traceback)."""

    code: int | None
    stdout: str
    stderr: str
    escaped: str | None = None


@contextlib.contextmanager
def _captured_fds() -> Iterator[dict[str, str]]:
    """Send fds 1 and 2 (Python and C++ output) into pipes drained by threads; the texts are in the
    yielded dict when the block ends. Pipes, unlike temporary files, are not limited by RLIMIT_FSIZE."""
    result: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    saved_streams = sys.stdout, sys.stderr
    pipes = [os.pipe(), os.pipe()]
    chunks: list[list[bytes]] = [[], []]

    def drain(fd: int, into: list[bytes]) -> None:
        while block := os.read(fd, 65536):
            into.append(block)

    readers = [threading.Thread(target=drain, args=(r, c), daemon=True) for (r, _), c in zip(pipes, chunks)]
    for reader in readers:
        reader.start()
    for fd, (_, write_end) in zip((1, 2), pipes):
        os.dup2(write_end, fd)
        os.close(write_end)
    sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), encoding="utf-8", line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), encoding="utf-8", line_buffering=True)
    try:
        yield result
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            stream.close()
        sys.stdout, sys.stderr = saved_streams
        for fd, saved_fd in zip((1, 2), saved):
            os.dup2(saved_fd, fd)  # closes the last write end: the readers see end of file
            os.close(saved_fd)
        for reader, (read_end, _) in zip(readers, pipes):
            reader.join()
            os.close(read_end)
        result["stdout"], result["stderr"] = (b"".join(c).decode("utf-8", "replace") for c in chunks)


@contextlib.contextmanager
def _file_size_limit(limit: int | None) -> Iterator[None]:
    """Lower RLIMIT_FSIZE to ``limit`` bytes inside the block (``None``: unchanged)."""
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def _unprivileged(active: bool) -> Iterator[None]:
    """Run the block with the effective uid of ``nobody`` when ``active`` and running as root, so
    that file permissions apply (root ignores them)."""
    if not active or os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY_UID)
    try:
        yield
    finally:
        os.seteuid(0)


def run_app_in_process(study: Path, out: Path, *, fsize_limit: int | None = None, unprivileged: bool = False) -> Console:
    """``spine-map -i study -o out`` in this process, console captured (see :class:`Console`)."""
    from app.cli import run_app_main

    escaped = None
    code: int | None = None
    with _captured_fds() as texts:
        with _unprivileged(unprivileged), _file_size_limit(fsize_limit):
            try:
                code = run_app_main(["-i", str(study), "-o", str(out)])
            except BaseException as error:  # noqa: BLE001 - exactly what the harness is looking for
                escaped = f"{type(error).__name__} escaped run_app_main"
    return Console(code, texts["stdout"], texts["stderr"], escaped)


# --------------------------------------------------------------------------------------------------
# Checking one run
# --------------------------------------------------------------------------------------------------
def _load_schema() -> dict[str, Any]:
    from operators.core.report import load_schema

    return load_schema()


def _whole_file_problem(path: Path, schema: dict[str, Any]) -> str | None:
    """Why ``path`` (an output file) is not a complete file of its kind, or ``None``."""
    import jsonschema

    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8"))
            if path.name == REPORT_JSON:
                jsonschema.validate(document, schema)
        elif suffix == ".csv":
            rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
            if not rows or any(len(row) != len(rows[0]) for row in rows):
                return f"{path.name}: ragged or empty CSV"
        elif suffix in (".dcm", ".sr"):
            pydicom.dcmread(path).get("PixelData")
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                image.load()
    except Exception as error:  # noqa: BLE001 - any failure means a damaged output file
        return f"{path.name}: not a whole {suffix} file ({type(error).__name__})"
    return None


def check_case(state: CaseState, console: Console, out: Path, schema: dict[str, Any]) -> list[str]:
    """Every broken promise of one run (empty list: the run passed). See the module docstring."""
    problems = []
    if console.escaped:
        problems.append(console.escaped)
    text = console.stdout + console.stderr
    if "Traceback" in text or "\nAt:" in "\n" + text:
        problems.append("traceback on the console")
    lines = [line for line in text.splitlines() if line.strip()]
    stray = [line for line in lines if not line.startswith(("spine-map: ", "spine-map:"))]
    if stray:
        problems.append(f"console line without the spine-map prefix: {stray[0][:80]!r}")
    code = console.code
    if code not in OUTCOME_CLASSES:
        problems.append(f"undocumented exit code {code}")
    elif code == EXIT_INTERNAL_ERROR:
        problems.append("internal error (exit 1)")
    expected = {EXIT_OUTPUT_UNWRITABLE} if state.output_damage in ("read_only", "is_a_file") else (
        {EXIT_OK, EXIT_NOTHING_USABLE, EXIT_OUTPUT_UNWRITABLE} if state.output_damage == "disk_full"
        else {EXIT_OK, EXIT_NOTHING_USABLE})  # fmt: skip
    if code in OUTCOME_CLASSES and code != EXIT_INTERNAL_ERROR and code not in expected:
        problems.append(f"exit {code}, expected one of {sorted(expected)}")
    if code in (EXIT_OUTPUT_UNWRITABLE, EXIT_INTERNAL_ERROR, EXIT_USAGE) and (len(lines) != 1 or console.stdout.strip()):
        problems.append(f"error exit {code} printed {len(lines)} lines (one expected on stderr)")

    files = sorted(p for p in out.iterdir() if p.is_file()) if out.is_dir() else []
    names = {p.name for p in files}
    leftovers = [n for n in names if n.startswith(".") or n.endswith((".tmp", ".part"))]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    if code in (EXIT_OK, EXIT_NOTHING_USABLE):
        if not {REPORT_JSON, REPORT_CSV} <= names:
            problems.append(f"exit {code} without {REPORT_JSON} and {REPORT_CSV}")
        else:
            with contextlib.suppress(ValueError):  # an unparsable report is flagged below
                report = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
                if (code == EXIT_NOTHING_USABLE) != (report.get("series") == []):
                    problems.append(f"exit {code} but the report lists {len(report.get('series', []))} series")
    elif REPORT_JSON in names and state.output_damage != "disk_full":
        problems.append(f"exit {code} left a report behind")
    for path in files:
        if path.name != LOG_FILE and (problem := _whole_file_problem(path, schema)):
            problems.append(problem)

    log = (out / LOG_FILE).read_text(encoding="utf-8", errors="replace") if LOG_FILE in names else ""
    if "Traceback" in log:
        problems.append("traceback in the log")
    places = {"console": text, **{p.name: p.read_text(encoding="utf-8", errors="replace") for p in files}}
    read_no_image = code == EXIT_NOTHING_USABLE or code is None
    for place, content in places.items():
        if read_no_image:
            # With no DICOM image read the app cannot know the patient's name, so an echoed file
            # name that happens to carry it is not the app's leak (a known limit, see README).
            for name in state.named_files:
                content = content.replace(name, "")
        leaked = [s for s in state.secrets if s.lower() in content.lower()]
        if leaked:
            problems.append(f"patient identifier in {place}")
    return problems


# --------------------------------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    case: Case
    code: int | None
    outcome: str
    warnings: int
    problems: list[str]
    seconds: float
    console: str = ""


def _prepare_run(state: CaseState, folder: Path) -> tuple[Path, bool]:
    """Create the output side of the case and apply the planned modes; returns ``(out, unprivileged)``."""
    out = folder / "out"
    if state.output_damage == "is_a_file":
        out.write_text("not a folder\n")
    else:
        out.mkdir()
    unprivileged = bool(state.chmods) or state.output_damage == "read_only"
    if unprivileged and os.geteuid() == 0:
        for path in [folder, *folder.rglob("*")]:  # the case's files become nobody's (readable as before)
            if not path.is_symlink():
                os.chown(path, NOBODY_UID, NOBODY_UID)
    if state.output_damage == "read_only":
        out.chmod(0o500)
        if os.geteuid() == 0:
            os.chown(out, 0, 0)  # nobody must not be the owner, or it could chmod it back
    for path, mode in state.chmods:
        if not path.exists():
            continue  # a later mutation of the same case removed or renamed it
        path.chmod(mode)
        if os.geteuid() == 0:
            os.chown(path, 0, 0)
    return out, unprivileged


def _restore_modes(folder: Path) -> None:
    """Make everything under ``folder`` deletable and readable again."""
    for path in [folder, *folder.rglob("*")] if os.access(folder, os.R_OK | os.X_OK) or os.geteuid() == 0 else []:
        if not path.is_symlink():
            with contextlib.suppress(OSError):
                path.chmod(0o755 if path.is_dir() else 0o644)


def run_case(case: Case, base: BaseStudy, folder: Path, schema: dict[str, Any]) -> CaseResult:
    """Build, run and check one case in ``folder`` (which it fills)."""
    state = build_case(case, base, folder)
    out, unprivileged = _prepare_run(state, folder)
    start = time.perf_counter()
    console = run_app_in_process(state.study, out, fsize_limit=state.fsize_limit, unprivileged=unprivileged)
    seconds = time.perf_counter() - start
    _restore_modes(folder)
    problems = check_case(state, console, out, schema)
    warnings = 0
    if out.is_dir() and (out / REPORT_JSON).is_file():
        with contextlib.suppress(ValueError):
            warnings = len(json.loads((out / REPORT_JSON).read_text(encoding="utf-8")).get("warnings", []))
    outcome = "uncaught_exception" if console.escaped else OUTCOME_CLASSES.get(console.code, f"exit_{console.code}")
    # The console is kept for failing cases only (it never names the patient, or the case failed).
    text = (console.stdout + console.stderr)[-2000:] if problems else ""
    return CaseResult(case, console.code, outcome, warnings, problems, seconds, text)


def _world_accessible_tempdir(prefix: str) -> Path:
    """A fresh temporary folder that ``nobody`` can traverse (``mkdtemp`` makes it 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def summarise(results: Sequence[CaseResult], seconds: float) -> dict[str, Any]:
    """JSON-ready summary: studies tried, outcomes by class and by damage, tracebacks, failures."""
    by_mutation: dict[str, Counter[str]] = defaultdict(Counter)
    for result in results:
        by_mutation[result.case.mutations[0]][result.outcome] += 1
    failures = [r for r in results if r.problems]
    return {
        "studies_tried": len(results),
        "outcomes": dict(Counter(r.outcome for r in results)),
        "reports_with_warnings": sum(1 for r in results if r.code in (EXIT_OK, EXIT_NOTHING_USABLE) and r.warnings),
        "tracebacks": sum(1 for r in results if any("traceback" in p or "escaped" in p for p in r.problems)),
        "identifier_leaks": sum(1 for r in results if any("patient identifier" in p for p in r.problems)),
        "failed_cases": len(failures),
        "by_primary_damage": {m: dict(c) for m, c in sorted(by_mutation.items())},
        "failures": [
            {"index": r.case.index, "base": r.case.base, "mutations": list(r.case.mutations), "exit_code": r.code,
             "problems": r.problems, "console": r.console} for r in failures
        ],  # fmt: skip
        "seconds_total": round(seconds, 1),
        "seconds_per_case_median": round(float(np.median([r.seconds for r in results])), 3) if results else None,
    }


def run_harness(
    n: int,
    seed: int = 0,
    *,
    bases: Sequence[BaseSpec] = BASES,
    only: Sequence[int] | None = None,
    keep: Path | None = None,
    progress: Callable[[CaseResult], None] | None = None,
) -> dict[str, Any]:
    """Make the base studies, plan ``n`` cases (or just ``only`` of them), run and check each.

    Case folders are deleted after each case unless ``keep`` is given (then failing cases, or all
    ``only`` cases, are moved there). Returns :func:`summarise`'s dict.
    """
    start = time.perf_counter()
    work = _world_accessible_tempdir("spine-map-robustness-")
    schema = _load_schema()
    results = []
    try:
        made = {spec.name: make_base(spec, work / "bases") for spec in bases}
        # One undamaged run as root first: the app imports some modules lazily, and the interpreter
        # may live where the unprivileged cases' user cannot read (e.g. under /root), so a first case
        # run as nobody would fail on an import, not on its damage.
        for base in made.values():
            warm_up = work / "warm-up"
            run_app_in_process(base.folder, warm_up)
            shutil.rmtree(warm_up)
        cases = plan_cases(n, seed, [spec.name for spec in bases])
        for case in (c for c in cases if only is None or c.index in only):
            folder = work / f"case{case.index:04d}"
            folder.mkdir()
            folder.chmod(0o755)
            result = run_case(case, made[case.base], folder, schema)
            results.append(result)
            if progress:
                progress(result)
            if keep is not None and (result.problems or only is not None):
                keep.mkdir(parents=True, exist_ok=True)
                shutil.move(folder, keep / folder.name)
            else:
                shutil.rmtree(folder)
    finally:
        _restore_modes(work)
        shutil.rmtree(work, ignore_errors=True)
    return summarise(results, time.perf_counter() - start)


def _print_progress(result: CaseResult) -> None:
    mark = "FAIL" if result.problems else "ok"
    print(f"case {result.case.index:4d} {mark:4s} exit {result.code} {result.outcome:22s} {result.seconds:5.2f} s "
          f"{result.case.base}: {'+'.join(result.case.mutations)}", flush=True)  # fmt: skip
    for problem in result.problems:
        print(f"           {problem}", flush=True)
    for line in result.console.splitlines()[-5:]:
        print(f"           | {line}", flush=True)


def format_summary(summary: dict[str, Any]) -> str:
    """The harness summary as a few lines of text."""
    lines = [
        f"studies tried: {summary['studies_tried']}   failed cases: {summary['failed_cases']}   "
        f"tracebacks: {summary['tracebacks']}   identifier leaks: {summary['identifier_leaks']}   "
        f"({summary['seconds_total']} s, median {summary['seconds_per_case_median']} s per case)",
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items())),
        f"reports carrying warnings: {summary['reports_with_warnings']}",
        "by primary damage:",
    ]
    lines += [f"  {m:28s} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for m, c in summary["by_primary_damage"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.robustness``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of damaged studies (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="harness seed (default 0)")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "robustness.json")
    parser.add_argument("--keep", type=Path, help="move failing case folders (or the --only cases) here")
    parser.add_argument("--only", type=int, nargs="+", help="run just these case indices (of --n planned)")
    args = parser.parse_args(argv)
    if argv is None:
        from app.cli import ensure_stack_limit

        ensure_stack_limit()  # Holoscan wants a 32 MiB stack: re-executes this command once if needed
    summary = run_harness(args.n, args.seed, only=args.only, keep=args.keep, progress=_print_progress)
    summary["command"] = {"n": args.n, "seed": args.seed, "only": args.only}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(format_summary(summary))
    print(f"wrote {args.json}")
    return 1 if summary["failed_cases"] else 0


if __name__ == "__main__":
    sys.exit(main())
