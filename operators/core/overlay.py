"""Greyscale slices to 8-bit pictures with labelled points drawn on them.

One home for turning a slice plus annotations into a PNG: the documentation figures of the synthetic
generator and the app's key images both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def window_to_uint8(
    slice_pixels: np.ndarray,
    window: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Map a 2-D slice to uint8 for display.

    Args:
        slice_pixels: ``(rows, columns)`` physical values (MR signal or CT HU).
        window: ``(centre, width)`` as in DICOM WindowCenter/WindowWidth (CT: bone 300/1500, …).
            When ``None`` the display range is taken from ``percentiles`` of the slice, which suits
            MR's arbitrary units.
        percentiles: lower/upper percentiles used when ``window`` is ``None``.

    Returns:
        ``(rows, columns)`` uint8 array.
    """
    values = np.asarray(slice_pixels, dtype=np.float64)
    if window is not None:
        centre, width = window
        low, high = centre - width / 2.0, centre + width / 2.0
    else:
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, percentiles) if finite.size else (0.0, 1.0)
    scale = 255.0 / max(high - low, 1e-6)
    return np.clip((np.nan_to_num(values, nan=low) - low) * scale, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PointLabel:
    """A point to draw on a slice, in continuous pixel coordinates of that slice.

    Attributes:
        row: row index (may be fractional).
        column: column index (may be fractional).
        text: label written beside the point (e.g. ``"L4"``); empty for none.
        colour: RGB colour of the marker and text.
    """

    row: float
    column: float
    text: str = ""
    colour: tuple[int, int, int] = (255, 64, 64)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no scalable default font.
        return ImageFont.load_default()


def labelled_slice(
    display: np.ndarray,
    points: Sequence[PointLabel],
    pixel_aspect: float = 1.0,
    target_height: int = 512,
    title: str = "",
) -> Image.Image:
    """Draw labelled points on an 8-bit slice and return an RGB picture.

    Args:
        display: ``(rows, columns)`` uint8 slice (see :func:`window_to_uint8`).
        points: points in the slice's pixel coordinates.
        pixel_aspect: row spacing ÷ column spacing, so anisotropic pixels are shown with true proportions.
        target_height: height in pixels of the output picture.
        title: caption drawn at the top left.
    """
    rows, columns = display.shape
    height_mm_units = rows * pixel_aspect
    scale = target_height / height_mm_units
    size = (max(1, round(columns * scale)), target_height)
    picture = Image.fromarray(display, mode="L").resize(size, Image.Resampling.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(picture)
    font = _font(max(10, target_height // 40))
    radius = max(2, target_height // 160)
    for point in points:
        x = (point.column + 0.5) * scale - 0.5
        y = (point.row + 0.5) * scale * pixel_aspect - 0.5
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=point.colour, width=2)
        if point.text:
            draw.text((x + 2 * radius, y - radius), point.text, fill=point.colour, font=font)
    if title:
        draw.text((4, 4), title, fill=(255, 255, 0), font=font)
    return picture


def tile_horizontally(pictures: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Place pictures side by side (top-aligned) on a black canvas."""
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    height = max(p.height for p in pictures)
    canvas = Image.new("RGB", (width, height))
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    return canvas
