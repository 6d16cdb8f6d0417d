"""Benchmark and harness studies: the project's generator with the sagittal slice count and matrix forced.

:func:`training.synthetic.study.generate_study` draws the sagittal slab (9–25 slices) and display
matrix (larger side 256–1024) from the seed; :class:`~training.synthetic.study.StudyConfig` cannot
force them. Scaling measurements need exactly that, so :func:`generate_benchmark_study` runs the
generator with a :class:`~training.synthetic.study.Planner` subclass that overrides the two sagittal
choices *after* the generator has drawn them. Every random draw still happens in the same order, so
the anatomy, pose, protocols and axial series stay identical between the 9-, 15- and 25-slice (or
256 and 512) variants of one seed: only the sagittal sampling changes.

The generator builds its planner with ``Planner(spine, rng, config)`` inside ``_Study.__init__``;
:func:`_forced_planner` swaps the module's ``Planner`` name for the duration of one call. The
generator change that would make this module a one-liner is two ``StudyConfig`` fields,
``sagittal_slices: int | None`` and ``sagittal_matrix: int | None``, applied at the end of
``Planner.sagittal`` and ``Planner.sagittal_grid`` exactly as :class:`_ForcedSagittalPlanner` does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from operators.core.geometry import VolumeGeometry
from training.synthetic import study as study_module
from training.synthetic.acquisition import StackGrid
from training.synthetic.study import SagittalPlanning, StudyConfig, generate_study

#: The four-series lumbar protocol the issue asks for (SpineNetV2's lumbar setting plus axial T2).
LUMBAR_KINDS: tuple[str, ...] = ("sag_t1", "sag_t2", "sag_stir", "ax_t2")


@dataclass(frozen=True)
class SagittalOverride:
    """Forced sagittal sampling; ``None`` keeps the generator's own draw.

    Attributes:
        n_slices: slices per sagittal series (the slab keeps its slice step, so it gets wider).
        matrix: display matrix of the *larger* in-plane side (the generator's convention); the
            FOV stays the same, so the pixel spacing becomes ``FOV / matrix`` mm.
    """

    n_slices: int | None = None
    matrix: int | None = None


class _ForcedSagittalPlanner(study_module.Planner):
    """The generator's planner with :class:`SagittalOverride` applied to every sagittal grid."""

    override = SagittalOverride()

    def sagittal(self, *args: Any, **kwargs: Any) -> SagittalPlanning:
        planning = super().sagittal(*args, **kwargs)
        if self.override.n_slices is None:
            return planning
        return replace(planning, n_slices=int(self.override.n_slices))

    def sagittal_grid(self, planning: SagittalPlanning, max_dim: int = 640) -> StackGrid:
        grid = super().sagittal_grid(planning, max_dim)
        if self.override.matrix is None:
            return grid
        return rescale_grid(grid, self.override.matrix)


def rescale_grid(grid: StackGrid, matrix: int) -> StackGrid:
    """``grid`` resampled in-plane so that its larger side has ``matrix`` pixels, same FOV and centre.

    The acquired (k-space) matrix is kept unless it would exceed the new display matrix: a scanner
    interpolates a 256 acquisition to 512 for display but never shows fewer pixels than it sampled.

    Args:
        grid: a sagittal (or any) stack grid; ``geometry.shape`` is ``(slices, rows, columns)``.
        matrix: pixels of the larger in-plane side, ≥ 2.
    """
    geometry = grid.geometry
    n_slices, rows, columns = geometry.shape
    scale = matrix / max(rows, columns)
    new_rows, new_columns = max(2, round(rows * scale)), max(2, round(columns * scale))
    affine = np.array(geometry.affine, dtype=float)
    # Same FOV (to within a pixel) with square pixels kept square; same centre: re-anchor the origin.
    centre = affine @ np.array([(n_slices - 1) / 2, (rows - 1) / 2, (columns - 1) / 2, 1.0])
    affine[:3, 1:3] /= scale
    half = np.array([(n_slices - 1) / 2, (new_rows - 1) / 2, (new_columns - 1) / 2])
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ half
    acquired = (min(grid.acquired_shape[0], new_rows), min(grid.acquired_shape[1], new_columns))
    return replace(grid, geometry=VolumeGeometry(affine, (n_slices, new_rows, new_columns)), acquired_shape=acquired)


@contextlib.contextmanager
def _forced_planner(override: SagittalOverride) -> Iterator[None]:
    """Make the generator plan with ``override`` inside the ``with`` block (not thread-safe)."""
    planner = type("ForcedSagittalPlanner", (_ForcedSagittalPlanner,), {"override": override})
    saved = study_module.Planner
    study_module.Planner = planner
    try:
        yield
    finally:
        study_module.Planner = saved


def generate_benchmark_study(
    seed: int,
    out_dir: Path | str,
    config: StudyConfig,
    override: SagittalOverride = SagittalOverride(),
) -> dict[str, Any]:
    """:func:`~training.synthetic.study.generate_study` with the sagittal sampling forced.

    Writes ``out_dir/study/``, ``truth.json`` and ``report.txt`` like the generator; returns the truth.
    """
    if override == SagittalOverride():
        return generate_study(seed, out_dir, config)
    with _forced_planner(override):
        return generate_study(seed, out_dir, config)


def lumbar_config(**changes: Any) -> StudyConfig:
    """Lumbar T1 + T2 + STIR + axial T2, no duplicate series (the benchmark's lumbar study)."""
    return replace(StudyConfig(field_of_view="lumbar", series_kinds=LUMBAR_KINDS, duplicates=()), **changes)


def whole_spine_config(**changes: Any) -> StudyConfig:
    """Whole spine, the same four kinds, one tall composed sagittal series per contrast."""
    return replace(
        StudyConfig(field_of_view="whole", series_kinds=LUMBAR_KINDS, duplicates=(), whole_spine_stations=1), **changes
    )
