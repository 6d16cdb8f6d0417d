"""``submission.csv`` of the RSNA 2024 LSDC competition: write and read.

Format (the competition's ``sample_submission.csv``)::

    row_id,normal_mild,moderate,severe
    44036939_spinal_canal_stenosis_l1_l2,0.3333333333333333,0.3333333333333333,0.3333333333333333
    …

``row_id`` is ``<study_id>_<condition>_<l1_l2>``; rows run study by study (ascending ``study_id``),
within a study condition by condition in :data:`~operators.core.gradings.RSNA_CONDITIONS` order
and within a condition disc by disc L1/L2 … L5/S1 — 25 rows per study. In memory a row is keyed by
``(study_id, condition, disc)`` (:data:`RowKey`) with ``(3,)`` probabilities in
:data:`~operators.core.gradings.RSNA_SEVERITIES` order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from operators.core.gradings import RSNA_CONDITIONS
from operators.core.levels import RSNA_DISCS, rsna_level_key
from operators.core.report import write_text_atomic
from training.rsna.layout import RsnaFormatError, read_csv_rows

#: The header, exactly the competition's.
SUBMISSION_COLUMNS: tuple[str, ...] = ("row_id", "normal_mild", "moderate", "severe")

#: ``(study_id, condition, disc)``: one submission row.
RowKey = tuple[int, str, str]

_DISC_OF_KEY: dict[str, str] = {rsna_level_key(disc): disc for disc in RSNA_DISCS}


def row_id(study_id: int, condition: str, disc: str) -> str:
    """``row_id(44036939, "spinal_canal_stenosis", "L1/L2") == "44036939_spinal_canal_stenosis_l1_l2"``.

    Raises:
        ValueError: unknown condition or a disc outside L1/L2 … L5/S1.
    """
    if condition not in RSNA_CONDITIONS:
        raise ValueError(f"unknown RSNA condition {condition!r}")
    if disc not in RSNA_DISCS:
        raise ValueError(f"{disc!r} is not an RSNA disc ({', '.join(RSNA_DISCS)})")
    return f"{int(study_id)}_{condition}_{rsna_level_key(disc)}"


def parse_row_id(text: str) -> RowKey:
    """Inverse of :func:`row_id`.

    Raises:
        ValueError: ``text`` is not ``<integer>_<condition>_<lN_lM>`` with a known condition and disc.
    """
    parts = text.strip().split("_")
    if len(parts) >= 4 and parts[0].isdigit():
        condition, disc = "_".join(parts[1:-2]), _DISC_OF_KEY.get("_".join(parts[-2:]))
        if condition in RSNA_CONDITIONS and disc is not None:
            return int(parts[0]), condition, disc
    raise ValueError(f"not an RSNA row_id: {text!r}")


def row_order(key: RowKey) -> tuple[int, int, int]:
    """Sort key of the competition's row order (module docstring)."""
    study_id, condition, disc = key
    return int(study_id), RSNA_CONDITIONS.index(condition), RSNA_DISCS.index(disc)


def _probabilities(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.shape != (3,) or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{what}: probabilities must be 3 finite non-negative numbers, not {values!r}")
    return array


def write_submission(predictions: Mapping[RowKey, Sequence[float]], path: str | Path) -> int:
    """Write ``submission.csv`` atomically (a reader sees the old file or the whole new one).

    Args:
        predictions: ``(study_id, condition, disc)`` → ``(3,)`` probabilities (normal_mild,
            moderate, severe), written as given (the metric normalises rows). Rows are written in
            the competition order whatever the mapping's order; no row is invented for a missing key.
        path: the file to write; its folder must exist.

    Returns:
        The number of rows written.

    Raises:
        ValueError: an unknown condition/disc or probabilities that are not 3 finite non-negative numbers.
    """
    lines = [",".join(SUBMISSION_COLUMNS)]
    for key in sorted(predictions, key=row_order):
        name = row_id(*key)
        values = _probabilities(predictions[key], name)
        lines.append(",".join([name, *(repr(float(v)) for v in values)]))  # repr: exact round trip
    write_text_atomic(Path(path), "\n".join(lines) + "\n")
    return len(lines) - 1


def read_submission(path: str | Path) -> dict[RowKey, np.ndarray]:
    """Read a ``submission.csv``.

    Returns:
        ``(study_id, condition, disc)`` → ``(3,)`` float64 probabilities, in file order.

    Raises:
        RsnaFormatError: missing file, header without the four columns, or a bad line (wrong field
            count, unknown row_id, a value that is not a finite non-negative number, a repeated
            row_id) — the message names the file and line, as the competition rejects such files.
    """
    rows: dict[RowKey, np.ndarray] = {}
    for where, row in read_csv_rows(Path(path), SUBMISSION_COLUMNS):
        if row is None:
            raise RsnaFormatError(f"{where}: wrong number of fields")
        try:
            key = parse_row_id(row["row_id"])
            values = [float(row[column]) for column in SUBMISSION_COLUMNS[1:]]
        except ValueError as exc:
            raise RsnaFormatError(f"{where}: {exc}") from None
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise RsnaFormatError(f"{where}: probabilities must be finite and non-negative, not {values}")
        if key in rows:
            raise RsnaFormatError(f"{where}: row_id {row['row_id'].strip()} repeated")
        rows[key] = np.array(values)
    return rows
