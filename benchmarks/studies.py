"""Benchmark and harness studies: the project's generator with the sagittal slice count and matrix forced.

:func:`training.synthetic.study.generate_study` draws the sagittal slab (9–25 slices) and display
matrix (larger side 256–1024) from the seed. Scaling measurements need them fixed:
:attr:`StudyConfig.sagittal_slices` and :attr:`StudyConfig.sagittal_matrix` force them after the
generator's own draw, so the anatomy, pose, protocols and axial series stay identical between the 9-,
15- and 25-slice (or 256 and 512) variants of one seed: only the sagittal sampling changes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from training.synthetic.study import StudyConfig

#: The four-series lumbar protocol the issue asks for (SpineNetV2's lumbar setting plus axial T2).
LUMBAR_KINDS: tuple[str, ...] = ("sag_t1", "sag_t2", "sag_stir", "ax_t2")


def lumbar_config(**changes: Any) -> StudyConfig:
    """Lumbar T1 + T2 + STIR + axial T2, no duplicate series (the benchmark's lumbar study)."""
    return replace(StudyConfig(field_of_view="lumbar", series_kinds=LUMBAR_KINDS, duplicates=()), **changes)


def whole_spine_config(**changes: Any) -> StudyConfig:
    """Whole spine, the same four kinds, one tall composed sagittal series per contrast."""
    return replace(
        StudyConfig(field_of_view="whole", series_kinds=LUMBAR_KINDS, duplicates=(), whole_spine_stations=1), **changes
    )
