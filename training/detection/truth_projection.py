"""Ground-truth vertebral bodies of a synthetic study, as seen in each slice of a sagittal stack.

``truth.json`` gives each body's corners in its own mid-sagittal plane plus its axes and size. A
sagittal slice cuts the body off-centre by a lateral offset ``t``; the phantom's body has an
elliptic axial cross-section, so in that slice the body keeps its cranio-caudal extent while its
antero-posterior extent shrinks by ``sqrt(1 - (t / half_width)²)``. We label a body in a slice while
``|t| <= VISIBLE_HALF_WIDTH_FRACTION × half_width`` (the AP extent is then still ≥ 60 % of the
depth, a body a reader would outline); beyond that it is left unlabelled. C1 has no body and is
never labelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from operators.core.geometry import VolumeGeometry
from operators.core.levels import LEVELS_WITHOUT_BODY

#: Largest lateral offset of a labelled slice, as a fraction of the body's half width.
VISIBLE_HALF_WIDTH_FRACTION = 0.8

#: Slices closer than this to parallel with the body's lateral axis are skipped (|cos| below it).
MIN_LATERAL_COSINE = 0.5


def slice_quads(
    vertebrae: Sequence[Mapping[str, Any]], geometry: VolumeGeometry, slice_index: int
) -> tuple[list[np.ndarray], list[str]]:
    """The true body outlines cut by one slice of a stack.

    Args:
        vertebrae: ``truth["vertebrae"]`` entries (``centroid_mm``, ``corners_mm`` (4, 3),
            ``superior_axis``, ``anterior_axis``, ``width_mm``, ``level``), LPS mm.
        geometry: the stack's geometry (index (slice, row, col) → LPS mm).
        slice_index: which slice.

    Returns:
        ``(quads, levels)``: per visible body a (5, 2) float array of (row, col) pixel positions in
        that slice — the 4 corners in ``VERTEBRA_CORNERS`` order, then the centroid — and its level.
        Bodies whose outline leaves the image are included (the detector must learn cut bodies).
    """
    normal = geometry.normal
    plane_point = geometry.index_to_lps(np.array([[slice_index, 0.0, 0.0]]))[0]
    quads: list[np.ndarray] = []
    levels: list[str] = []
    for vertebra in vertebrae:
        if vertebra["level"] in LEVELS_WITHOUT_BODY:
            continue
        centroid = np.asarray(vertebra["centroid_mm"], dtype=float)
        corners = np.asarray(vertebra["corners_mm"], dtype=float)
        superior = np.asarray(vertebra["superior_axis"], dtype=float)
        anterior = np.asarray(vertebra["anterior_axis"], dtype=float)
        lateral = np.cross(superior, anterior)
        lateral /= np.linalg.norm(lateral)
        cosine = float(lateral @ normal)
        if abs(cosine) < MIN_LATERAL_COSINE:
            continue
        # Lateral offset at which the slice plane crosses the body's lateral axis.
        offset_mm = -float((centroid - plane_point) @ normal) / cosine
        half_width = float(vertebra["width_mm"]) / 2.0
        if abs(offset_mm) > VISIBLE_HALF_WIDTH_FRACTION * half_width:
            continue
        shrink = np.sqrt(max(0.0, 1.0 - (offset_mm / half_width) ** 2))
        relative = corners - centroid
        along_superior = np.outer(relative @ superior, superior)
        along_anterior = np.outer(relative @ anterior, anterior)
        points = np.vstack([centroid + along_superior + shrink * along_anterior, centroid]) + offset_mm * lateral
        # Points lie near the plane; drop the remaining out-of-plane part before indexing.
        points -= np.outer((points - plane_point) @ normal, normal)
        indices = geometry.lps_to_index(points)
        quads.append(indices[:, 1:3])
        levels.append(str(vertebra["level"]))
    return quads, levels
