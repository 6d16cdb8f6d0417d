"""Per-disc and per-vertebra volumes for the graders and the cancer model, in patient coordinates.

Every volume is a resampling of a decoded series onto a small grid laid out in the anatomy's own
frame, so the networks see discs the same way whatever the scanner's planes were:

* **Sagittal disc volumes** (SpineNetV2 §3.3): centred half-way between the two adjacent vertebral
  centroids, rotated so the endplates lie horizontal, ``width = 2 ×`` the larger adjacent body's AP
  depth, 2:1 aspect, resampled to :data:`DISC_VOLUME_SHAPE` from each sagittal sequence.
* **Vertebral-body volumes** (SCT §2): centred on the body, aligned with its endplates,
  :data:`VERTEBRA_VOLUME_SHAPE`.
* **Axial disc slabs** (Park §2, §4.1): each sagittal disc is projected through patient coordinates
  into every stack of the axial series; the stack that reaches the disc and lies closest to the
  disc plane (angled per-disc stacks beat a contiguous stack tilted by the lordosis) is resampled
  to :data:`AXIAL_SLAB_SHAPE` in its own slice planes, centred on the posterior disc margin where
  the canal, recesses and foramina are.

Grid layouts (all are :class:`~operators.core.geometry.VolumeGeometry`, so index → LPS mm is one
affine and the centre index maps to the disc or body centre):

* sagittal volumes ``(slice, row, column)``: slices step to the patient's left, rows run head →
  feet along the endplate normal, columns run front → back — a sagittal image as a radiologist reads
  it, whatever the frame's rotation;
* axial slabs ``(slice, row, column)``: slices step caudal → cranial along the stack normal, rows
  run front → back, columns patient right → left (the image's left is the patient's right).

Intensities are normalised per extracted volume (:func:`normalise_intensity`): the 1st–99th
percentile of the samples that fell inside the source map to 0–1, clipped to [−0.5, 2]; samples
outside the source are 0. Scanner units differ between sites and sequences, so no absolute scale
survives; relative contrast within the volume (dark disc vs bright CSF) does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from operators.core.geometry import VolumeGeometry, inside_source, resample_volume
from operators.core.levels import LEVELS, disc_name, level_order
from operators.core.study_warning import StudyWarning
from operators.core.threads import thread_map

#: Sagittal disc volume ``(slices left-ward, rows head → feet, columns front → back)``.
DISC_VOLUME_SHAPE: tuple[int, int, int] = (9, 112, 224)
#: Vertebral-body volume for the cancer model, same axes as a disc volume.
VERTEBRA_VOLUME_SHAPE: tuple[int, int, int] = (9, 112, 112)
#: Axial disc slab ``(slices caudal → cranial, rows front → back, columns patient right → left)``.
AXIAL_SLAB_SHAPE: tuple[int, int, int] = (7, 112, 224)

#: Sagittal slices of a disc volume span ± this fraction of ``width_mm`` to each side: with
#: width = 2 × AP depth, ±0.3 × width ≈ ±0.6 depth reaches the foramina and facets beside a lumbar
#: disc (about ±20 mm) and scales down with cervical discs.
DISC_LATERAL_HALF_EXTENT = 0.3
#: A vertebral-body volume is this many AP depths square in-plane (body plus a rim of context).
VERTEBRA_FIELD_DEPTHS = 1.6
#: Its sagittal slices span ± this many AP depths (a lumbar body is about 1.4 depths wide).
VERTEBRA_LATERAL_HALF_DEPTHS = 0.6
#: Axial slab: in-plane field across (right → left) as a multiple of the disc frame width, and the
#: spacing between its slices in mm (7 × 2 mm = the height of a lumbar disc).
AXIAL_FIELD_WIDTHS = 1.4
AXIAL_SLICE_STEP_MM = 2.0
#: A view with fewer of its samples inside the source than this is dropped (a disc cut by the edge
#: of the field of view shows too little to grade; a partial view would be graded as if complete).
MIN_INSIDE_FRACTION = 0.5
#: Body depth (mm) assumed where corners are degenerate (about an adult lumbar body).
DEFAULT_BODY_DEPTH_MM = 35.0

SAGITTAL_ROLES: tuple[str, ...] = ("sag_t1", "sag_t2", "sag_stir")
AXIAL_ROLE = "ax_t2"


class VertebraLike(Protocol):
    """A labelled vertebral body: report entries and truth-derived objects both satisfy it.

    ``corners_mm`` is ``(4, 3)`` LPS mm in :data:`~operators.core.levels.VERTEBRA_CORNERS` order.
    """

    level: str
    centroid_mm: Sequence[float]
    corners_mm: Sequence[Sequence[float]]


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-9:
        raise ValueError("degenerate direction")
    return vector / norm


@dataclass(frozen=True)
class BodyAxes:
    """A vertebral body's own axes from its four corners (all LPS, unit vectors)."""

    superior: np.ndarray       # (3,) mean of the posterior and anterior walls, towards the head
    anterior: np.ndarray       # (3,) ⟂ superior, towards the front
    lower_endplate: np.ndarray  # (3,) inferior-posterior → inferior-anterior corner
    upper_endplate: np.ndarray  # (3,) superior-posterior → superior-anterior corner
    depth_mm: float            # AP depth: distance between the wall midpoints along ``anterior``


def body_axes(vertebra: VertebraLike) -> BodyAxes:
    """Axes of a body from its corners (order superior-anterior, superior-posterior,
    inferior-posterior, inferior-anterior)."""
    sup_ant, sup_post, inf_post, inf_ant = np.asarray(vertebra.corners_mm, dtype=float)
    upper_endplate = _unit(sup_ant - sup_post)
    lower_endplate = _unit(inf_ant - inf_post)
    superior = _unit((sup_ant - inf_ant) + (sup_post - inf_post))
    anterior = _unit((upper_endplate + lower_endplate) - superior * float(superior @ (upper_endplate + lower_endplate)))
    depth = float(((sup_ant + inf_ant) / 2 - (sup_post + inf_post) / 2) @ anterior)
    return BodyAxes(superior, anterior, lower_endplate, upper_endplate, depth if depth > 1.0 else DEFAULT_BODY_DEPTH_MM)


@dataclass(frozen=True)
class DiscFrame:
    """Where a disc is and how it lies.

    Attributes:
        level: disc name, ``"L4/L5"``.
        centre_mm: (3,) LPS mm, midpoint of the two adjacent centroids (SpineNetV2 §3.3).
        superior: (3,) unit normal of the endplates, towards the head.
        anterior: (3,) unit, ⟂ ``superior``, towards the front.
        left: (3,) unit, ``superior × anterior`` (patient left).
        width_mm: extent along ``anterior``: 2 × the larger adjacent body's AP depth.
        height_mm: extent along ``superior``: ``width_mm / 2`` (2:1 aspect).
        depth_mm: the larger adjacent body's AP depth (the disc's own depth).
    """

    level: str
    centre_mm: np.ndarray
    superior: np.ndarray
    anterior: np.ndarray
    left: np.ndarray
    width_mm: float
    height_mm: float
    depth_mm: float


def _frame(level: str, centre_mm: np.ndarray, superior_hint: np.ndarray, anterior_hint: np.ndarray, depth_mm: float) -> DiscFrame:
    """Orthonormal frame from an endplate direction (``anterior_hint``) and a rough ``superior``."""
    left = _unit(np.cross(superior_hint, anterior_hint))
    anterior = _unit(anterior_hint - left * float(left @ anterior_hint))
    superior = np.cross(anterior, left)
    return DiscFrame(level, np.asarray(centre_mm, dtype=float), superior, anterior, left, 2.0 * depth_mm, depth_mm, depth_mm)


def adjacent_levels(upper: str, lower: str) -> bool:
    """No standard level lies between ``upper`` and ``lower`` (transitional T13/L6 count as levels)."""
    low, high = level_order(upper), level_order(lower)
    return high > low and not any(low < index < high for index in range(len(LEVELS)))


def disc_frames(vertebrae: Sequence[VertebraLike]) -> list[DiscFrame]:
    """A frame for every disc between two labelled vertebrae at adjacent levels, cranial → caudal.

    A missing level leaves a gap: no frame is guessed across it. The endplate direction is the
    mean of the upper body's lower endplate and the lower body's upper endplate.
    """
    ordered = sorted(vertebrae, key=lambda v: level_order(v.level))
    frames = []
    for upper, lower in zip(ordered[:-1], ordered[1:]):
        if not adjacent_levels(upper.level, lower.level):
            continue
        upper_axes, lower_axes = body_axes(upper), body_axes(lower)
        upper_centroid = np.asarray(upper.centroid_mm, dtype=float)
        lower_centroid = np.asarray(lower.centroid_mm, dtype=float)
        frames.append(_frame(
            disc_name(upper.level, lower.level), (upper_centroid + lower_centroid) / 2,
            superior_hint=upper_centroid - lower_centroid,
            anterior_hint=upper_axes.lower_endplate + lower_axes.upper_endplate,
            depth_mm=max(upper_axes.depth_mm, lower_axes.depth_mm),
        ))
    return frames


def disc_frames_from_points(
    points_mm: Mapping[str, Sequence[float]], depth_mm: float = DEFAULT_BODY_DEPTH_MM,
    anterior: Sequence[float] = (0.0, -1.0, 0.0), behind_disc_mm: float = 0.0,
) -> list[DiscFrame]:
    """Frames for discs known only by one point each (RSNA coordinates), cranial → caudal.

    ``superior`` follows the line through the neighbouring discs' points; ``anterior`` is the given
    direction (patient front by default) made perpendicular to that line. Each point lies
    ``behind_disc_mm`` behind its disc's centre (e.g. a spinal-canal mark: half the disc depth plus
    the canal's half-depth); the frame centre is moved forward by that much. Needs at least two discs.
    """
    names = sorted(points_mm, key=lambda name: level_order(name.split("/")[0]))
    if len(names) < 2:
        raise ValueError("disc frames from points need at least two discs")
    points = [np.asarray(points_mm[name], dtype=float) for name in names]
    frames = []
    for index, name in enumerate(names):
        above, below = points[max(index - 1, 0)], points[min(index + 1, len(points) - 1)]
        # The line through the neighbouring points is the spine's axis here (lordosis tilts it):
        # the disc lies across it, so the front is the given direction made perpendicular to it.
        axis = _unit(above - below)
        front = np.asarray(anterior, dtype=float) - axis * float(axis @ np.asarray(anterior, dtype=float))
        frame = _frame(name, points[index], axis, front, depth_mm)
        frames.append(replace(frame, centre_mm=frame.centre_mm + frame.anterior * behind_disc_mm))
    return frames


@dataclass(frozen=True)
class SeriesVolume:
    """One decoded stack of a series, as a source of views.

    Attributes:
        series_instance_uid: the series it came from.
        role: series-selector role (``"sag_t1"``, ``"sag_t2"``, ``"sag_stir"``, ``"ax_t2"``).
        pixels: ``(S, R, C)`` stored values.
        geometry: where ``pixels`` sit in patient space.
    """

    series_instance_uid: str
    role: str
    pixels: np.ndarray
    geometry: VolumeGeometry


@dataclass(frozen=True)
class ExtractedVolume:
    """A resampled, normalised view.

    Attributes:
        pixels: float32, normalised (module docstring), shape of the requested grid.
        geometry: index ``(slice, row, column)`` → LPS mm of the grid; its centre index is the
            disc (or body) centre.
        inside_fraction: fraction of the grid's samples inside the source volume, 0..1.
        series_instance_uid: the source series.
    """

    pixels: np.ndarray
    geometry: VolumeGeometry
    inside_fraction: float
    series_instance_uid: str


@dataclass(frozen=True)
class AxialSlab(ExtractedVolume):
    """An axial disc slab, with how well its stack matched the disc.

    Attributes:
        angle_to_disc_deg: angle between the stack's slice normal and the disc's endplate normal.
        slices_used: acquired slices of the stack within the slab's extent.
    """

    angle_to_disc_deg: float = 0.0
    slices_used: int = 0


def _grid(centre_mm: np.ndarray, slice_step: np.ndarray, row_step: np.ndarray, column_step: np.ndarray,
          shape: tuple[int, int, int]) -> VolumeGeometry:
    """A grid whose centre index sits on ``centre_mm``; steps are LPS mm vectors per index."""
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = slice_step, row_step, column_step
    affine[:3, 3] = centre_mm - affine[:3, :3] @ ((np.asarray(shape, dtype=float) - 1.0) / 2.0)
    return VolumeGeometry(affine, shape)


def grids_may_overlap(source: VolumeGeometry, target: VolumeGeometry) -> bool:
    """Whether any voxel centre of ``target`` can lie inside ``source`` (half a voxel of margin, as
    the resampled inside mask): ``False`` means none does. Compares the bounding box of ``target``'s
    corner centres in ``source``'s index space with ``source``'s extent, so it costs 8 points."""
    corners = np.stack(np.meshgrid(*[(0.0, n - 1.0) for n in target.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    indices = source.lps_to_index(target.index_to_lps(corners))
    upper = np.asarray(source.shape, dtype=float) - 0.5
    return bool(np.all(indices.max(axis=0) > -0.5) and np.all(indices.min(axis=0) < upper))


def normalise_intensity(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Percentile normalisation of ``values`` over the ``inside`` mask (module docstring), float32."""
    if not inside.any():
        return np.zeros_like(values, dtype=np.float32)
    low, high = np.percentile(values[inside], (1.0, 99.0))
    scaled = (values - low) / max(float(high - low), 1e-6)
    return np.where(inside, np.clip(scaled, -0.5, 2.0), 0.0).astype(np.float32)


def _extract(source: SeriesVolume, target: VolumeGeometry, slab: bool = False, **slab_fields: float) -> ExtractedVolume:
    values = resample_volume(source.pixels, source.geometry, target, order=1)
    inside = inside_source(source.geometry, target)
    pixels = normalise_intensity(values, inside)
    if slab:
        return AxialSlab(pixels, target, float(inside.mean()), source.series_instance_uid, **slab_fields)
    return ExtractedVolume(pixels, target, float(inside.mean()), source.series_instance_uid)


def sagittal_disc_grid(frame: DiscFrame, shape: tuple[int, int, int] = DISC_VOLUME_SHAPE) -> VolumeGeometry:
    """Grid of a disc volume: square pixels of ``width_mm / columns``, slices across ±0.3 width."""
    pixel_mm = frame.width_mm / shape[2]
    slice_mm = 2 * DISC_LATERAL_HALF_EXTENT * frame.width_mm / max(shape[0] - 1, 1)
    return _grid(frame.centre_mm, frame.left * slice_mm, -frame.superior * pixel_mm, -frame.anterior * pixel_mm, shape)


def sagittal_disc_volume(source: SeriesVolume, frame: DiscFrame, shape: tuple[int, int, int] = DISC_VOLUME_SHAPE) -> ExtractedVolume:
    """The disc volume (SpineNetV2 §3.3) of one sagittal sequence."""
    return _extract(source, sagittal_disc_grid(frame, shape))


def vertebra_grid(vertebra: VertebraLike, shape: tuple[int, int, int] = VERTEBRA_VOLUME_SHAPE) -> VolumeGeometry:
    """Grid of one vertebra's body volume, aligned with its endplates, centred on its centroid."""
    axes = body_axes(vertebra)
    left = _unit(np.cross(axes.superior, axes.anterior))
    field_mm = VERTEBRA_FIELD_DEPTHS * axes.depth_mm
    slice_mm = 2 * VERTEBRA_LATERAL_HALF_DEPTHS * axes.depth_mm / max(shape[0] - 1, 1)
    return _grid(np.asarray(vertebra.centroid_mm, dtype=float), left * slice_mm,
                 -axes.superior * field_mm / shape[1], -axes.anterior * field_mm / shape[2], shape)


def vertebra_volume(
    source: SeriesVolume, vertebra: VertebraLike, shape: tuple[int, int, int] = VERTEBRA_VOLUME_SHAPE
) -> ExtractedVolume:
    """The body volume of one vertebra in one sagittal sequence (:func:`vertebra_grid`)."""
    return _extract(source, vertebra_grid(vertebra, shape))


def axial_slab_grid(stack: VolumeGeometry, frame: DiscFrame, shape: tuple[int, int, int] = AXIAL_SLAB_SHAPE) -> VolumeGeometry:
    """Grid of an axial slab in ``stack``'s slice planes, centred on the posterior disc margin."""
    normal = stack.normal if float(stack.normal @ frame.superior) >= 0 else -stack.normal
    anterior = _unit(frame.anterior - normal * float(normal @ frame.anterior))
    left = np.cross(normal, anterior)
    pixel_mm = AXIAL_FIELD_WIDTHS * frame.width_mm / shape[2]
    # The slab centre is the posterior disc margin, moved within the stack plane through the disc
    # centre (not along the disc frame), so the middle slice is the plane through the disc centre.
    centre = frame.centre_mm - anterior * frame.depth_mm / 2.0
    return _grid(centre, normal * AXIAL_SLICE_STEP_MM, -anterior * pixel_mm, left * pixel_mm, shape)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(abs(float(a @ b)), 0.0, 1.0))))


def axial_disc_slab(stacks: Sequence[SeriesVolume], frame: DiscFrame, shape: tuple[int, int, int] = AXIAL_SLAB_SHAPE) -> AxialSlab | None:
    """The axial slab of a disc from the best stack that reaches it, or ``None`` when none does.

    A stack reaches the disc when the disc centre lies within its slices (half a slice of margin)
    and inside its image. Among those, the stack whose plane is closest to the disc plane wins,
    then the one whose nearest slice is closest to the disc centre.
    """
    candidates = []
    for stack in stacks:
        if not stack.geometry.contains(frame.centre_mm):
            continue
        slice_index = float(stack.geometry.lps_to_index(frame.centre_mm)[0])
        candidates.append((round(_angle_deg(stack.geometry.normal, frame.superior), 1),
                           abs(slice_index - round(slice_index)), stack))
    if not candidates:
        return None
    angle, _, best = min(candidates, key=lambda item: item[:2])
    target = axial_slab_grid(best.geometry, frame, shape)
    slab_half_mm = AXIAL_SLICE_STEP_MM * (shape[0] - 1) / 2.0
    slice_offsets_mm = (best.geometry.slice_positions() - frame.centre_mm) @ best.geometry.normal
    used = int(np.sum(np.abs(slice_offsets_mm) <= slab_half_mm + 1e-6))
    return _extract(best, target, slab=True, angle_to_disc_deg=angle, slices_used=used)


@dataclass(frozen=True)
class DiscViews:
    """Every view of one disc that could be extracted.

    Attributes:
        frame: the disc's frame.
        sagittal: role (``"sag_t1"`` | ``"sag_t2"`` | ``"sag_stir"``) → disc volume.
        axial: the axial T2 slab, or ``None``.
    """

    frame: DiscFrame
    sagittal: Mapping[str, ExtractedVolume]
    axial: AxialSlab | None


def extract_disc_views(
    vertebrae: Sequence[VertebraLike], sources: Sequence[SeriesVolume]
) -> tuple[list[DiscViews], list[StudyWarning]]:
    """Views of every disc between adjacent labelled vertebrae (:func:`disc_frames`), and what could
    not be extracted (:func:`extract_frame_views`)."""
    return extract_frame_views(disc_frames(vertebrae), sources)


def extract_frame_views(
    frames: Sequence[DiscFrame], sources: Sequence[SeriesVolume]
) -> tuple[list[DiscViews], list[StudyWarning]]:
    """Views of every disc frame, and what could not be extracted.

    One sagittal volume per role (the first source of a role that covers the disc); the axial slab
    from the ``ax_t2`` stacks. Views with less than :data:`MIN_INSIDE_FRACTION` of their samples
    inside the source are dropped. A disc with no view at all is left out.

    Warnings: ``NO_AXIAL_SERIES`` (once, when no ``ax_t2`` source exists), ``AXIAL_MISSES_LEVEL``
    (the axial stacks do not reach a disc), ``DISC_PARTLY_OUTSIDE_VIEW`` (a view dropped for
    lying partly outside its series), ``NO_SAGITTAL_FOR_DISC`` (no sagittal view of a disc).
    """
    warnings: list[StudyWarning] = []
    axial_stacks = [source for source in sources if source.role == AXIAL_ROLE]
    if not axial_stacks:
        warnings.append(StudyWarning("NO_AXIAL_SERIES", "no axial T2 series: discs graded from sagittal views only"))
    views = []
    # Discs are resampled side by side (scipy releases the GIL), views and warnings kept in disc order.
    for frame_views, frame_warnings in thread_map(lambda frame: _frame_views(frame, sources, axial_stacks), frames):
        warnings += frame_warnings
        if frame_views is not None:
            views.append(frame_views)
    return views, warnings


def _frame_views(
    frame: DiscFrame, sources: Sequence[SeriesVolume], axial_stacks: Sequence[SeriesVolume]
) -> tuple[DiscViews | None, list[StudyWarning]]:
    """One disc's views and warnings for :func:`extract_frame_views`."""
    warnings: list[StudyWarning] = []
    sagittal: dict[str, ExtractedVolume] = {}
    for source in sources:
        if source.role not in SAGITTAL_ROLES or source.role in sagittal:
            continue
        volume = sagittal_disc_volume(source, frame)
        if volume.inside_fraction >= MIN_INSIDE_FRACTION:
            sagittal[source.role] = volume
        else:
            warnings.append(StudyWarning(
                "DISC_PARTLY_OUTSIDE_VIEW",
                f"disc {frame.level}: {volume.inside_fraction:.0%} of its {source.role} view is inside the series; view not used",
                source.series_instance_uid,
            ))
    axial = axial_disc_slab(axial_stacks, frame) if axial_stacks else None
    if axial is not None and axial.inside_fraction < MIN_INSIDE_FRACTION:
        warnings.append(StudyWarning(
            "DISC_PARTLY_OUTSIDE_VIEW",
            f"disc {frame.level}: {axial.inside_fraction:.0%} of its axial slab is inside the series; slab not used",
            axial.series_instance_uid,
        ))
        axial = None
    elif axial is None and axial_stacks:
        warnings.append(StudyWarning(
            "AXIAL_MISSES_LEVEL", f"disc {frame.level}: no axial T2 stack reaches it; graded without the axial view",
            axial_stacks[0].series_instance_uid,
        ))
    if not sagittal:
        warnings.append(StudyWarning("NO_SAGITTAL_FOR_DISC", f"disc {frame.level}: no sagittal view covers it"))
    return (DiscViews(frame, sagittal, axial) if sagittal or axial is not None else None), warnings
