"""Vertebral-body detection by Vector Field Regression (VFR): grid, targets, decoding, tracking, fusion.

SpineNetV2 (paper §3.1) detects vertebral bodies slice by slice in sagittal stacks. A U-Net sees one
sagittal slice resampled to a fixed in-plane resolution and outputs 13 channels:

* channels 0-3 (:data:`CORNER_CHANNELS`): Gaussian heatmaps over the four corners of every vertebral
  body, in :data:`~operators.core.levels.VERTEBRA_CORNERS` order (superior-anterior,
  superior-posterior, inferior-posterior, inferior-anterior);
* channel 4 (:data:`CENTROID_CHANNEL`): Gaussian heatmap over every body's centroid;
* channels 5-12 (:data:`VECTOR_CHANNELS`): for corner ``k`` the pair ``(5 + 2k, 6 + 2k)`` holds the
  displacement ``(d_row, d_col)`` from a pixel near that corner TO its vertebra's centroid, in
  detector pixels divided by :data:`VECTOR_SCALE_PX`. The arrows group corners into quadrilaterals.

This module is the single home of both directions of that encoding, so training and runtime agree:
:func:`render_targets` / :func:`vector_mask` (training targets) and :func:`decode_slice` (runtime).
Around them: the detector grid (:class:`SliceGrid`, :func:`resample_to_grid`), tiling of large
slices with median merging (:func:`network_inputs`, :func:`merge_tiles`, paper §3.1.1), tracking of
slice quadrilaterals across slices (:func:`track_across_slices`) and fusion of several sagittal
series (:func:`fuse_series`).

Coordinates: every ``(row, col)`` pair is an array index of a 2-D image (integers are pixel centres).
"Detector px" are indices on the detector grid, "original px" indices of the stack's own slices;
:class:`SliceGrid` converts between them. Millimetre coordinates are DICOM patient LPS from
:meth:`VolumeGeometry.index_to_lps` with ``(slice, row, col)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from scipy import ndimage

from operators.core.geometry import VolumeGeometry

# --------------------------------------------------------------------------------------------------
# Constants of the network interface
# --------------------------------------------------------------------------------------------------
#: In-plane resolution (mm per detector pixel, both axes) of the images the network sees.
DETECTOR_MM_PER_PX: float = 1.5
#: Network input height and width are padded (bottom/right, value 0.0) to a multiple of this
#: (the U-Net downsamples 5 times).
SIZE_MULTIPLE: int = 32
#: A slice whose detector grid is at most this many px in both axes is run as one padded input;
#: larger slices (whole spine) are cut into tiles of at most this size with >= :data:`MIN_TILE_OVERLAP`.
MAX_TILE_PX: int = 384
#: Minimum overlap between neighbouring tiles, as a fraction of the tile size (paper §3.1.1: 40 %).
MIN_TILE_OVERLAP: float = 0.4
#: Heatmap channels of the four corners, in VERTEBRA_CORNERS order.
CORNER_CHANNELS: tuple[int, int, int, int] = (0, 1, 2, 3)
#: Heatmap channel of the vertebral-body centroid.
CENTROID_CHANNEL: int = 4
#: Vector channels: corner k uses (5 + 2k, 6 + 2k) = (d_row, d_col) towards the centroid.
VECTOR_CHANNELS: tuple[int, ...] = tuple(range(5, 13))
#: Vector channels hold displacements in detector px divided by this (keeps targets near [-1, 1]).
VECTOR_SCALE_PX: float = 32.0
#: Number of network output channels.
N_OUTPUT_CHANNELS: int = 13

#: Heatmap sigma = SIGMA_FACTOR * sqrt(quad area in detector px²), at least MIN_SIGMA_PX. For the
#: smallest bodies (cervical, ~9 x 11 px at 1.5 mm/px) this gives 1.5 px; for large lumbar bodies
#: (~20 x 30 px) ~3.7 px. Same-channel corners of adjacent bodies are >= one body height plus a disc
#: apart (>= ~11 px cervical, ~30 px lumbar), i.e. >= 7 sigma, so their Gaussians stay separate at
#: any threshold >= 0.05. (Sharper peaks, 0.08, trained far slower on CPU: the network first
#: learns a smeared band along the spine.)
SIGMA_FACTOR: float = 0.15
MIN_SIGMA_PX: float = 1.2
#: Vector targets are defined within RADIUS_FACTOR * sqrt(area) of each corner (at least
#: MIN_RADIUS_PX, so that the 3x3 neighbourhood the decoder reads is always inside the disk).
RADIUS_FACTOR: float = 0.3
MIN_RADIUS_PX: float = 2.0
#: Gaussians are rendered out to this many sigma (beyond, the value is < 1e-4 and is set to 0).
_GAUSSIAN_EXTENT_SIGMA: float = 4.5


# --------------------------------------------------------------------------------------------------
# Intensity and detector grid
# --------------------------------------------------------------------------------------------------
#: normalise_intensity estimates its percentiles from at most about this many voxels.
_PERCENTILE_SAMPLES: int = 1_000_000


def normalise_intensity(pixels: np.ndarray) -> np.ndarray:
    """Normalise a whole stack for the detector (MR or CT alike).

    Args:
        pixels: ``(S, R, C)`` (any shape) physical values.

    Returns:
        float32 array of the same shape: ``(p - p1) / (p99.5 - p1)`` with the percentiles taken over
        the whole stack, clipped to ``[-0.5, 2]``. A constant stack maps to zeros. Stacks of more than
        ~1 M voxels take the percentiles from an evenly strided sample of ~1 M voxels (the stride is
        coprime with the slice size, so the sample spreads over every row and column); exact below.
    """
    values = np.asarray(pixels, dtype=np.float32)
    flat = values.ravel()
    plane = int(np.prod(values.shape[-2:])) if values.ndim >= 2 else flat.size
    step = max(1, flat.size // _PERCENTILE_SAMPLES)
    while math.gcd(step, plane) != 1:
        step += 1
    low, high = np.percentile(flat[::step], (1.0, 99.5))
    span = float(high - low)
    if not np.isfinite(span) or span <= 0.0:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values - np.float32(low)) * np.float32(1.0 / span)
    return np.clip(out, -0.5, 2.0, out=out).astype(np.float32, copy=False)


@dataclass(frozen=True)
class SliceGrid:
    """How a stack's slices map onto the detector grid.

    Detector px ``(r', c')`` samples original px ``(r' * scale_row, c' * scale_col)``; both grids
    share the pixel centre ``(0, 0)``.

    Attributes:
        scale_row: original rows per detector px (``DETECTOR_MM_PER_PX / row_spacing_mm``).
        scale_col: original columns per detector px.
        shape: detector-grid ``(H, W)`` before padding; every detector px lies inside the slice.
    """

    scale_row: float
    scale_col: float
    shape: tuple[int, int]

    @property
    def _scale(self) -> np.ndarray:
        return np.array([self.scale_row, self.scale_col])

    def to_original(self, rc_px: np.ndarray) -> np.ndarray:
        """Detector ``(..., 2)`` (row, col) -> original slice ``(..., 2)`` (row, col), float."""
        return np.asarray(rc_px, dtype=float) * self._scale

    def from_original(self, rc: np.ndarray) -> np.ndarray:
        """Original slice ``(..., 2)`` (row, col) -> detector ``(..., 2)`` (row, col), float."""
        return np.asarray(rc, dtype=float) / self._scale


def slice_grid(geometry: VolumeGeometry, rows: int, cols: int) -> SliceGrid:
    """The detector grid of slices of ``rows x cols`` pixels with ``geometry``'s in-plane spacing.

    ``H = floor((rows - 1) / scale_row) + 1`` so the last detector row still samples inside the slice.
    """
    row_spacing, col_spacing = (float(s) for s in geometry.spacing_mm[1:])
    scale_row = DETECTOR_MM_PER_PX / row_spacing
    scale_col = DETECTOR_MM_PER_PX / col_spacing
    # The tiny tolerance keeps e.g. (512 - 1) / 2.0000000001 from losing a whole row.
    height = int(math.floor((rows - 1) / scale_row + 1e-6)) + 1
    width = int(math.floor((cols - 1) / scale_col + 1e-6)) + 1
    return SliceGrid(scale_row=scale_row, scale_col=scale_col, shape=(height, width))


def resample_to_grid(slices: np.ndarray, grid: SliceGrid, order: int = 1) -> np.ndarray:
    """Resample slices onto the detector grid.

    When an axis is downsampled (scale > 1) it is first smoothed with a Gaussian of sigma
    ``(scale - 1) / 2`` original px (the usual anti-aliasing choice), so fine-pixel acquisitions
    reach the network with the noise level of a native 1.5 mm acquisition rather than aliased.

    Args:
        slices: ``(S, rows, cols)`` image values.
        grid: from :func:`slice_grid` for these slices.
        order: spline order of the interpolation (1 = linear).

    Returns:
        float32 ``(S, H, W)``: detector px ``(r', c')`` of slice ``s`` samples original
        ``(s, r' * scale_row, c' * scale_col)``.
    """
    data = np.asarray(slices, dtype=np.float32)
    scales = (grid.scale_row, grid.scale_col)
    sigmas = (0.0, *(max(0.0, (s - 1.0) / 2.0) for s in scales))
    if any(sigma > 0.0 for sigma in sigmas):
        data = ndimage.gaussian_filter(data, sigmas, mode="nearest")
    # A 1-D matrix makes affine_transform use its fast axis-aligned (zoom) path.
    return ndimage.affine_transform(
        data,
        np.array([1.0, *scales]),
        output_shape=(data.shape[0], *grid.shape),
        order=order,
        mode="nearest",
        prefilter=order > 1,
    ).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------------
def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def tile_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """Network input ``(h, w)`` for a detector grid of ``shape`` = ``(H, W)``.

    Each axis is padded up to a multiple of :data:`SIZE_MULTIPLE` and capped at :data:`MAX_TILE_PX`
    (an axis longer than that is tiled).
    """
    return tuple(min(MAX_TILE_PX, _round_up(int(n), SIZE_MULTIPLE)) for n in shape)  # type: ignore[return-value]


def _axis_origins(length: int, tile: int) -> list[int]:
    if length <= tile:
        return [0]
    # Stride at most floor((1 - overlap) * tile): integer origins of an evenly spaced sequence
    # differ by at most ceil(step) <= that stride, so every overlap is >= MIN_TILE_OVERLAP.
    stride = int(math.floor((1.0 - MIN_TILE_OVERLAP) * tile))
    n = int(math.ceil((length - tile) / stride)) + 1
    return [int(round(v)) for v in np.linspace(0.0, length - tile, n)]


def tile_origins(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners ``(row, col)`` of the tiles covering a detector grid of ``shape``.

    ``[(0, 0)]`` when the grid fits in one input (both axes <= :data:`MAX_TILE_PX`). Otherwise
    tiles of :func:`tile_shape` are spread evenly along each long axis, first at 0 and last ending
    exactly at the edge, neighbours overlapping by >= 40 %; order is row-major.
    """
    h, w = tile_shape(shape)
    return [(r, c) for r in _axis_origins(shape[0], h) for c in _axis_origins(shape[1], w)]


def network_inputs(grid_slices: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Cut detector-grid slices into the network's input batch.

    Args:
        grid_slices: ``(S, H, W)`` normalised slices on the detector grid.

    Returns:
        ``(batch, origins)``: ``batch`` float32 ``(S * T, 1, h, w)`` with ``(h, w) = tile_shape((H, W))``
        (multiples of 32), item ``s * T + t`` being tile ``t`` of slice ``s``, zero-padded bottom/right
        where a tile passes the grid's edge; ``origins`` the ``T`` tile corners from :func:`tile_origins`.
    """
    slices = np.asarray(grid_slices, dtype=np.float32)
    n_slices, height, width = slices.shape
    origins = tile_origins((height, width))
    h, w = tile_shape((height, width))
    batch = np.zeros((n_slices, len(origins), 1, h, w), dtype=np.float32)
    for t, (r0, c0) in enumerate(origins):
        crop = slices[:, r0 : r0 + h, c0 : c0 + w]
        batch[:, t, 0, : crop.shape[1], : crop.shape[2]] = crop
    return batch.reshape(n_slices * len(origins), 1, h, w), origins


def merge_tiles(outputs: np.ndarray, origins: Sequence[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """Reassemble tile outputs into whole-slice outputs (paper §3.1.1).

    Args:
        outputs: ``(S * T, C, h, w)`` network outputs in :func:`network_inputs` order.
        origins: the ``T`` tile corners returned by :func:`network_inputs`.
        shape: detector grid ``(H, W)``.

    Returns:
        float32 ``(S, C, H, W)``; where tiles overlap, the per-pixel median over the covering tiles.
    """
    outputs = np.asarray(outputs, dtype=np.float32)
    n_tiles = len(origins)
    _, n_channels, h, w = outputs.shape
    tiles = outputs.reshape(-1, n_tiles, n_channels, h, w)
    height, width = shape
    merged = np.empty((tiles.shape[0], n_channels, height, width), dtype=np.float32)
    # The grid splits into rectangular cells covered by a fixed set of tiles; median per cell.
    row_cuts = sorted({0, height, *(r for r, _ in origins), *(min(r + h, height) for r, _ in origins)})
    col_cuts = sorted({0, width, *(c for _, c in origins), *(min(c + w, width) for _, c in origins)})
    for r0, r1 in zip(row_cuts[:-1], row_cuts[1:]):
        for c0, c1 in zip(col_cuts[:-1], col_cuts[1:]):
            crops = [
                tiles[:, t, :, r0 - tr : r1 - tr, c0 - tc : c1 - tc]
                for t, (tr, tc) in enumerate(origins)
                if tr <= r0 and r1 <= tr + h and tc <= c0 and c1 <= tc + w
            ]
            merged[:, :, r0:r1, c0:c1] = _median(crops)
    return merged


def _median(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise median of equally shaped arrays; closed forms for 1-3 (np.median sorts, ~10x slower)."""
    if len(arrays) == 1:
        return arrays[0]
    if len(arrays) == 2:
        return 0.5 * (arrays[0] + arrays[1])
    if len(arrays) == 3:
        a, b, c = arrays
        return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    return np.median(np.stack(arrays), axis=0)


# --------------------------------------------------------------------------------------------------
# Training targets (encoder)
# --------------------------------------------------------------------------------------------------
def _polygon_area(points: np.ndarray) -> float:
    """Unsigned shoelace area of a polygon ``(n, 2)`` (any consistent vertex order)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def quad_sigma_radius(quad_px: np.ndarray) -> tuple[float, float]:
    """Heatmap sigma and vector-target radius (detector px) of one vertebra.

    Args:
        quad_px: ``(5, 2)`` or ``(4, 2)`` detector (row, col); rows 0-3 the corners.

    Returns:
        ``(max(MIN_SIGMA_PX, SIGMA_FACTOR * sqrt(area)), max(MIN_RADIUS_PX, RADIUS_FACTOR * sqrt(area)))``.
    """
    size = math.sqrt(_polygon_area(np.asarray(quad_px, dtype=float)[:4]))
    return max(MIN_SIGMA_PX, SIGMA_FACTOR * size), max(MIN_RADIUS_PX, RADIUS_FACTOR * size)


def _window(centre: np.ndarray, radius: float, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Pixel window (row slice, col slice) within ``radius`` of ``centre``, clipped to ``shape``."""
    r0 = max(0, int(math.floor(centre[0] - radius)))
    r1 = min(shape[0], int(math.ceil(centre[0] + radius)) + 1)
    c0 = max(0, int(math.floor(centre[1] - radius)))
    c1 = min(shape[1], int(math.ceil(centre[1] + radius)) + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _render(quads_px: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``(13, H, W)`` float32 and vector mask ``(4, H, W)`` bool (see :func:`render_targets`)."""
    height, width = int(shape[0]), int(shape[1])
    targets = np.zeros((N_OUTPUT_CHANNELS, height, width), dtype=np.float32)
    mask = np.zeros((4, height, width), dtype=bool)
    # Where corner disks of two vertebrae overlap, the pixel takes the nearer corner's vector.
    nearest = np.full((4, height, width), np.inf, dtype=np.float32)
    for quad in quads_px:
        points = np.asarray(quad, dtype=float)
        if points.shape != (5, 2):
            raise ValueError(f"each quad must be a (5, 2) array of (row, col), got {points.shape}")
        sigma, radius = quad_sigma_radius(points)
        centroid = points[4]
        for channel, point in zip((*CORNER_CHANNELS, CENTROID_CHANNEL), points):
            win = _window(point, _GAUSSIAN_EXTENT_SIGMA * sigma, (height, width))
            if win is None:
                continue
            rr = np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None] - np.float32(point[0])
            cc = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :] - np.float32(point[1])
            gauss = np.exp(-(rr * rr + cc * cc) / np.float32(2.0 * sigma * sigma))
            np.maximum(targets[channel][win], gauss, out=targets[channel][win])
        for k, point in enumerate(points[:4]):
            win = _window(point, radius, (height, width))
            if win is None:
                continue
            rows = np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None]
            cols = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :]
            dist2 = (rows - np.float32(point[0])) ** 2 + (cols - np.float32(point[1])) ** 2
            take = (dist2 <= np.float32(radius * radius)) & (dist2 < nearest[k][win])
            nearest[k][win] = np.where(take, dist2, nearest[k][win])
            mask[k][win] |= take
            d_row = (np.float32(centroid[0]) - rows) / np.float32(VECTOR_SCALE_PX)
            d_col = (np.float32(centroid[1]) - cols) / np.float32(VECTOR_SCALE_PX)
            channel_row, channel_col = VECTOR_CHANNELS[2 * k], VECTOR_CHANNELS[2 * k + 1]
            targets[channel_row][win] = np.where(take, d_row, targets[channel_row][win])
            targets[channel_col][win] = np.where(take, d_col, targets[channel_col][win])
    return targets, mask


def render_targets(quads_px: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Network training target of one detector-grid image.

    Args:
        quads_px: per vertebra a ``(5, 2)`` array in detector px (row, col) of this image: rows 0-3 the
            corners in VERTEBRA_CORNERS order, row 4 the centroid. Points may lie outside the image
            (vertebrae cut by the field of view); only their in-image part is drawn.
        shape: ``(H, W)`` of the image.

    Returns:
        float32 ``(13, H, W)``: channels 0-4 Gaussian heatmaps (peak 1 at the landmark; sigma from
        :func:`quad_sigma_radius`, i.e. ``0.08 * sqrt(quad area)``, >= 1 px; max over vertebrae);
        channels 5-12 the corner -> centroid vectors ``(centroid - pixel) / VECTOR_SCALE_PX`` within
        ``0.25 * sqrt(area)`` (>= 2 px) of each corner (nearest corner where disks overlap), 0 elsewhere.
    """
    return _render(quads_px, shape)[0]


def vector_mask(quads_px: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Loss mask of the vector channels: ``(4, H, W)`` bool, True where corner ``k``'s vector target
    (channels ``5 + 2k, 6 + 2k`` of :func:`render_targets`) is defined."""
    return _render(quads_px, shape)[1]


# --------------------------------------------------------------------------------------------------
# Decoding (runtime)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SliceQuad:
    """One vertebral body seen in one slice.

    Attributes:
        slice_index: index of the slice in its stack.
        centroid_px: ``(2,)`` ORIGINAL image (row, col), float.
        corners_px: ``(4, 2)`` ORIGINAL image (row, col), VERTEBRA_CORNERS order.
        score: mean of the 5 heatmap peak values, 0..1.
    """

    slice_index: int
    centroid_px: np.ndarray
    corners_px: np.ndarray
    score: float


def _subpixel_peaks(heatmap: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of the connected components of ``heatmap > threshold``.

    The peak pixel of each component is refined per axis by fitting a parabola to the logarithm of
    the 3x3 neighbourhood's row / column sums: exact for a Gaussian (what :func:`render_targets`
    draws), where a plain weighted mean is biased towards the pixel centre by up to ~0.2 px.

    Returns:
        ``(positions, pixels, values)``: refined detector (row, col) ``(n, 2)`` float, the integer peak
        pixels ``(n, 2)`` and the heatmap values there ``(n,)``.
    """
    foreground = heatmap > threshold
    labels, n = ndimage.label(foreground)
    if n == 0:
        return np.zeros((0, 2)), np.zeros((0, 2), dtype=np.intp), np.zeros(0)
    # Argmax per component over the (few) foreground pixels only; ndimage.maximum_position would
    # sort the whole image (~20x slower).
    height, width = heatmap.shape
    flat = np.flatnonzero(foreground)
    component = labels.ravel()[flat]
    order = np.lexsort((-heatmap.ravel()[flat], component))
    first = order[np.r_[True, component[order][1:] != component[order][:-1]]]
    peaks = np.column_stack(np.unravel_index(flat[first], (height, width))).astype(np.intp)
    offsets = np.array([-1, 0, 1])
    rows = peaks[:, 0, None] + offsets  # (n, 3)
    cols = peaks[:, 1, None] + offsets
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    patch = heatmap[np.clip(rows, 0, height - 1)[:, :, None], np.clip(cols, 0, width - 1)[:, None, :]]
    patch = np.where(row_ok[:, :, None] & col_ok[:, None, :], patch, 0.0).astype(float)
    refined = peaks.astype(float)
    for axis, ok in ((0, row_ok), (1, col_ok)):
        marginal = np.log(np.maximum(patch.sum(axis=2 - axis), 1e-6))  # (n, 3)
        curvature = marginal[:, 0] - 2.0 * marginal[:, 1] + marginal[:, 2]
        usable = ok.all(axis=1) & (curvature < 0.0)
        delta = 0.5 * (marginal[:, 0] - marginal[:, 2]) / np.where(usable, curvature, -1.0)
        refined[:, axis] += np.where(usable, np.clip(delta, -0.5, 0.5), 0.0)
    values = heatmap[peaks[:, 0], peaks[:, 1]].astype(float)
    return refined, peaks, values


def _arrow_tips(vectors: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Where the arrows of corners at integer ``pixels`` (n, 2) land, detector (row, col) ``(n, 2)``.

    ``vectors`` is ``(2, H, W)`` (d_row, d_col) / VECTOR_SCALE_PX. Each in-image pixel q of the 3x3
    neighbourhood votes ``q + VECTOR_SCALE_PX * v(q)``; the mean vote is the tip (averages noise; exact
    for the linear field of :func:`render_targets`).
    """
    height, width = vectors.shape[1:]
    offsets = np.array([-1, 0, 1])
    rows, cols = np.broadcast_arrays(  # (n, 3, 3) each
        pixels[:, 0, None, None] + offsets[None, :, None], pixels[:, 1, None, None] + offsets[None, None, :]
    )
    ok = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    rc, cc = np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)
    tip_r = rows + VECTOR_SCALE_PX * vectors[0][rc, cc]
    tip_c = cols + VECTOR_SCALE_PX * vectors[1][rc, cc]
    count = ok.sum(axis=(1, 2))
    return np.column_stack([(tip_r * ok).sum(axis=(1, 2)) / count, (tip_c * ok).sum(axis=(1, 2)) / count])


def decode_slice(output: np.ndarray, grid: SliceGrid, slice_index: int, threshold: float = 0.3) -> list[SliceQuad]:
    """Decode one slice's network output into vertebral-body quadrilaterals (paper §3.1 steps 4-5).

    Each heatmap channel is thresholded; each connected component gives one landmark at its peak,
    refined to sub-pixel (see :func:`_subpixel_peaks`). Each corner's arrow (corner pixel + vector *
    VECTOR_SCALE_PX, averaged over its 3x3 neighbourhood) is matched to the centroids: per corner type,
    (centroid, corner) pairs whose miss distance |tip - centroid| is <= 0.5 * arrow length are taken
    greedily by increasing miss distance, each centroid and each corner used once (so a centroid gets
    the corner pointing closest to it, and a corner goes to the centroid it points closest to). A
    centroid without all 4 corners is dropped as spurious.

    Args:
        output: ``(13, H, W)`` network output of one slice on the detector grid (after
            :func:`merge_tiles`; padding removed).
        grid: the slice's :class:`SliceGrid`, to return ORIGINAL pixel coordinates.
        slice_index: stored in the quads.
        threshold: heatmap threshold (0..1).

    Returns:
        The slice's quads, ordered by centroid row (top of the image first).
    """
    output = np.asarray(output, dtype=np.float32)
    if output.ndim != 3 or output.shape[0] != N_OUTPUT_CHANNELS:
        raise ValueError(f"expected a ({N_OUTPUT_CHANNELS}, H, W) output, got {output.shape}")
    centroids, _, centroid_values = _subpixel_peaks(output[CENTROID_CHANNEL], threshold)
    n_centroids = len(centroids)
    if n_centroids == 0:
        return []
    chosen = np.full((n_centroids, 4), -1, dtype=np.intp)
    corner_positions: list[np.ndarray] = []
    corner_values: list[np.ndarray] = []
    for k, channel in enumerate(CORNER_CHANNELS):
        positions, pixels, values = _subpixel_peaks(output[channel], threshold)
        corner_positions.append(positions)
        corner_values.append(values)
        if len(positions) == 0:
            continue
        tips = _arrow_tips(output[VECTOR_CHANNELS[2 * k] : VECTOR_CHANNELS[2 * k] + 2], pixels)
        arrow_length = np.linalg.norm(tips - pixels, axis=1)  # (m,)
        miss = np.linalg.norm(tips[None, :, :] - centroids[:, None, :], axis=2)  # (n, m)
        candidates = np.argwhere(miss <= 0.5 * arrow_length[None, :])
        order = np.argsort(miss[candidates[:, 0], candidates[:, 1]], kind="stable")
        corner_used = np.zeros(len(positions), dtype=bool)
        for centroid_i, corner_j in candidates[order]:
            if chosen[centroid_i, k] < 0 and not corner_used[corner_j]:
                chosen[centroid_i, k] = corner_j
                corner_used[corner_j] = True
    quads: list[SliceQuad] = []
    for i in np.flatnonzero((chosen >= 0).all(axis=1)):
        corners = np.stack([corner_positions[k][chosen[i, k]] for k in range(4)])
        peaks = [centroid_values[i], *(corner_values[k][chosen[i, k]] for k in range(4))]
        quads.append(
            SliceQuad(
                slice_index=int(slice_index),
                centroid_px=grid.to_original(centroids[i]),
                corners_px=grid.to_original(corners),
                score=float(np.clip(np.mean(peaks), 0.0, 1.0)),
            )
        )
    quads.sort(key=lambda q: float(q.centroid_px[0]))
    return quads


# --------------------------------------------------------------------------------------------------
# Quadrilateral overlap
# --------------------------------------------------------------------------------------------------
def _convex_hull_ccw(points: np.ndarray) -> np.ndarray:
    """Convex hull of a few 2-D points, counter-clockwise in (x=axis 0, y=axis 1) (monotone chain)."""
    pts = sorted({(float(p[0]), float(p[1])) for p in points})
    if len(pts) < 3:
        return np.asarray(pts, dtype=float).reshape(-1, 2)

    def half(sequence: list[tuple[float, float]]) -> list[tuple[float, float]]:
        chain: list[tuple[float, float]] = []
        for p in sequence:
            while len(chain) >= 2 and (
                (chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1]) - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0])
            ) <= 0.0:
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    return np.asarray(lower[:-1] + upper[:-1], dtype=float)


def _clip_polygon(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: part of ``subject`` inside the convex CCW polygon ``clip`` (both ``(n, 2)``)."""
    output = subject
    for a, b in zip(clip, np.roll(clip, -1, axis=0)):
        if len(output) == 0:
            break
        edge = b - a
        side = edge[0] * (output[:, 1] - a[1]) - edge[1] * (output[:, 0] - a[0])  # >= 0: inside
        result: list[np.ndarray] = []
        for i in range(len(output)):
            j = i - 1  # previous vertex (wraps to the last one)
            if side[i] >= 0.0:
                if side[j] < 0.0:
                    result.append(output[j] + (output[i] - output[j]) * (side[j] / (side[j] - side[i])))
                result.append(output[i])
            elif side[j] >= 0.0:
                result.append(output[j] + (output[i] - output[j]) * (side[j] / (side[j] - side[i])))
        output = np.asarray(result, dtype=float).reshape(-1, 2)
    return output


def quad_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two convex quadrilaterals.

    Args:
        a, b: ``(4, 2)`` vertices in either winding order (any 2-D coordinates, e.g. (row, col)). A
            non-convex or self-intersecting quad (a bad detection) is replaced by its convex hull.

    Returns:
        IoU in ``[0, 1]``; 0 when either quad has zero area.
    """
    hull_a, hull_b = _convex_hull_ccw(np.asarray(a, dtype=float)), _convex_hull_ccw(np.asarray(b, dtype=float))
    if len(hull_a) < 3 or len(hull_b) < 3:
        return 0.0
    area_a, area_b = _polygon_area(hull_a), _polygon_area(hull_b)
    if area_a <= 0.0 or area_b <= 0.0:
        return 0.0
    overlap = _clip_polygon(hull_a, hull_b)
    inter = _polygon_area(overlap) if len(overlap) >= 3 else 0.0
    return float(np.clip(inter / (area_a + area_b - inter), 0.0, 1.0))


# --------------------------------------------------------------------------------------------------
# Tracking across slices
# --------------------------------------------------------------------------------------------------
def _height_mm(corners_mm: np.ndarray) -> float:
    """Mean of the anterior (sup_ant -> inf_ant) and posterior (sup_post -> inf_post) edge lengths."""
    anterior = np.linalg.norm(corners_mm[0] - corners_mm[3])
    posterior = np.linalg.norm(corners_mm[1] - corners_mm[2])
    return float(0.5 * (anterior + posterior))


@dataclass(frozen=True, eq=False)
class Vertebra3D:
    """One vertebral body tracked across the slices of one stack.

    Attributes:
        series_instance_uid: the series of the stack.
        centroid_mm: ``(3,)`` LPS mm: score-weighted mean of the per-slice centroids.
        corners_mm: ``(4, 3)`` LPS mm, VERTEBRA_CORNERS order: corners of the slice whose quad has the
            largest area (the mid-sagittal section of the body).
        detection_score: mean per-slice score, 0..1.
        slice_quads: the per-slice detections, ordered by slice.
    """

    series_instance_uid: str
    centroid_mm: np.ndarray
    corners_mm: np.ndarray
    detection_score: float
    slice_quads: tuple[SliceQuad, ...]

    @property
    def height_mm(self) -> float:
        """Body height in mm: mean of the anterior and posterior superior -> inferior edge lengths."""
        return _height_mm(self.corners_mm)


def _vertebra_from_chain(chain: Sequence[SliceQuad], geometry: VolumeGeometry, uid: str) -> Vertebra3D:
    quads = tuple(sorted(chain, key=lambda q: q.slice_index))
    scores = np.array([q.score for q in quads])
    centroids = geometry.index_to_lps(np.array([[q.slice_index, *q.centroid_px] for q in quads], dtype=float))
    weights = scores if scores.sum() > 0.0 else np.ones_like(scores)
    corners_mm = [
        geometry.index_to_lps(np.column_stack([np.full(4, q.slice_index, dtype=float), q.corners_px])) for q in quads
    ]
    # Area of a planar quad = half the norm of the cross product of its diagonals.
    areas = [0.5 * np.linalg.norm(np.cross(c[2] - c[0], c[3] - c[1])) for c in corners_mm]
    return Vertebra3D(
        series_instance_uid=uid,
        centroid_mm=(weights[:, None] * centroids).sum(axis=0) / weights.sum(),
        corners_mm=corners_mm[int(np.argmax(areas))],
        detection_score=float(scores.mean()),
        slice_quads=quads,
    )


def joined_per_series(members: Sequence[Vertebra3D], geometries: Mapping[str, VolumeGeometry]) -> list[Vertebra3D]:
    """One detection per series of a fused body: the fragments its track split into, joined.

    A body whose track breaks at a slice (a missed or misshapen quad) becomes several
    :class:`Vertebra3D` of one series, each seen on a few slices. Fusion keeps them one body, but
    each fragment's centroid lies on its own side of the midline (10–25 mm off, see
    :func:`same_body`), so whatever is sampled around a fragment's centroid (the appearance volume)
    is off-centre, unlike the true bodies the labeller learnt from. The joined detection is the
    chain of all the fragments' quads (:func:`_vertebra_from_chain`), centred on every slice that
    saw the body; a series with one member keeps it unchanged.

    Args:
        members: detections of one body (e.g. ``FusedVertebra.members``), from any series.
        geometries: geometry of each member's stack, by series instance UID.

    Returns:
        One detection per series, in the order the series first appear among ``members``.
    """
    by_series: dict[str, list[Vertebra3D]] = {}
    for member in members:
        by_series.setdefault(member.series_instance_uid, []).append(member)
    return [
        group[0] if len(group) == 1
        else _vertebra_from_chain([quad for member in group for quad in member.slice_quads], geometries[uid], uid)
        for uid, group in by_series.items()
    ]


def _bounding_boxes(quads: Sequence[SliceQuad]) -> np.ndarray:
    corners = np.array([q.corners_px for q in quads], dtype=float).reshape(-1, 4, 2)
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)  # (n, 4) r0 c0 r1 c1


#: Missed slices a track bridges (a body detected in slices s and s + 2 but not s + 1 is one track).
BRIDGED_SLICES: int = 1


def lateral_sweep(n_slices: int, has_bodies: Callable[[int], bool]) -> Iterator[list[int]]:
    """Batches of slice indices to run the detector on: the middle three first, then one more slice
    on each side per batch, each side stopping once its outermost ``BRIDGED_SLICES + 1`` slices
    showed no body (after some slice did).

    Slices past such a run can only give tracks that are not linked to any body found so far
    (:func:`track_across_slices` bridges at most :data:`BRIDGED_SLICES`), and the spine is one
    connected column: every slice between two that cut it cuts it too. So the sweep skips the
    slices lateral to the spine (and the ribs or iliac wings there) with the same tracks as a run
    over every slice.

    Args:
        n_slices: slices in the stack.
        has_bodies: whether a slice already yielded had detections; called only on yielded slices,
            after the caller has run the detector on the batch that held them.
    """
    if n_slices < 1:
        return
    centre = (n_slices - 1) // 2
    # The sweep has visited slices below + 1 … above - 1, always one contiguous run.
    below, above = max(centre - 2, -1), min(centre + 2, n_slices)
    yield list(range(below + 1, above))
    run = BRIDGED_SLICES + 1

    def spine_ended(edge: range, visited: range) -> bool:
        """The ``run`` outermost visited slices on one side (``edge``) are empty, and some visited slice is not."""
        return len(edge) == run and not any(has_bodies(s) for s in edge) and any(has_bodies(s) for s in visited)

    while True:
        visited = range(below + 1, above)
        grow_below = below >= 0 and not spine_ended(visited[:run], visited)
        grow_above = above < n_slices and not spine_ended(visited[-run:], visited)
        if not (grow_below or grow_above):
            return
        yield [s for s, grow in ((below, grow_below), (above, grow_above)) if grow]
        below -= int(grow_below)
        above += int(grow_above)


def track_across_slices(
    quads: Sequence[SliceQuad],
    geometry: VolumeGeometry,
    series_instance_uid: str,
    iou_threshold: float = 0.25,
) -> list[Vertebra3D]:
    """Group per-slice quads of one stack into vertebral bodies (paper §3.1 step 6).

    Quads in slices ``s`` and ``s + 1`` are linked when their IoU (in original pixels) exceeds
    ``iou_threshold``, greedily by decreasing IoU, each quad getting at most one link towards higher
    and one towards lower slices. Then quads still free in that direction are linked the same way
    across one slice (``s`` to ``s + 2``) to bridge a single missed detection; neighbours are linked
    first so that a bridge never steals the link of a quad in between. Each chain becomes one
    :class:`Vertebra3D` (single-slice chains included).

    Args:
        quads: detections of all slices of the stack (from :func:`decode_slice`).
        geometry: the stack's geometry (index ``(slice, row, col)`` -> LPS mm).
        series_instance_uid: stored in the results.
        iou_threshold: minimum IoU for a link.

    Returns:
        The stack's vertebrae, sorted by centroid LPS z ascending (caudal first).
    """
    items = list(quads)
    if not items:
        return []
    slices = np.array([q.slice_index for q in items])
    boxes = _bounding_boxes(items)
    forward = np.full(len(items), -1, dtype=np.intp)
    backward = np.full(len(items), -1, dtype=np.intp)
    for gap in range(1, BRIDGED_SLICES + 2):
        pairs: list[tuple[float, int, int]] = []
        for i in np.flatnonzero(forward < 0):
            for j in np.flatnonzero((slices == slices[i] + gap) & (backward < 0)):
                # Boxes that do not overlap cannot have a positive IoU: skip the polygon clipping.
                if boxes[i, 0] > boxes[j, 2] or boxes[j, 0] > boxes[i, 2] or boxes[i, 1] > boxes[j, 3] or boxes[j, 1] > boxes[i, 3]:
                    continue
                iou = quad_iou(items[i].corners_px, items[j].corners_px)
                if iou > iou_threshold:
                    pairs.append((iou, int(i), int(j)))
        for _, i, j in sorted(pairs, key=lambda p: -p[0]):
            if forward[i] < 0 and backward[j] < 0:
                forward[i], backward[j] = j, i
    vertebrae = []
    for start in np.flatnonzero(backward < 0):
        chain = [items[start]]
        node = forward[start]
        while node >= 0:
            chain.append(items[node])
            node = forward[node]
        vertebrae.append(_vertebra_from_chain(chain, geometry, series_instance_uid))
    vertebrae.sort(key=lambda v: float(v.centroid_mm[2]))
    return vertebrae


# --------------------------------------------------------------------------------------------------
# Fusion of several sagittal series
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FusedVertebra:
    """One vertebral body after fusing the sagittal series of a study.

    Attributes:
        centroid_mm: ``(3,)`` LPS mm: mean of the members' centroids weighted by detection score ×
            slices (the score-weighted mean over every slice that saw the body).
        corners_mm: ``(4, 3)`` LPS mm corners of the best-scoring member.
        series_instance_uid: series of the best-scoring member.
        detection_score: mean member score * support, 0..1.
        members: the per-series vertebrae fused here (best-scoring first).
        support: series that detected it / series whose field of view contains its centroid.
    """

    centroid_mm: np.ndarray
    corners_mm: np.ndarray
    series_instance_uid: str
    detection_score: float
    members: tuple[Vertebra3D, ...]
    support: float

    @property
    def height_mm(self) -> float:
        """Height of the best-scoring member's body in mm (see :attr:`Vertebra3D.height_mm`)."""
        return _height_mm(self.corners_mm)


def _caudal_to_cranial(points_mm: np.ndarray) -> np.ndarray:
    """Order of points along the fitted spine direction (principal axis, oriented towards +z)."""
    if len(points_mm) < 2:
        return np.arange(len(points_mm))
    centred = points_mm - points_mm.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    if direction[2] < 0.0:
        direction = -direction
    return np.argsort(centred @ direction, kind="stable")


#: Largest lateral (LPS x) distance between two detections of one body, mm (bodies are 25-60 mm wide).
SAME_BODY_LATERAL_MM = 40.0


def same_body(a: Vertebra3D, b: Vertebra3D) -> bool:
    """Whether two detections are one vertebral body.

    Their centroids must be closer than 0.5 × the smaller height in the patient's sagittal plane
    (y, z) and within :data:`SAME_BODY_LATERAL_MM` laterally (x). A plain 3D distance fails when a
    body's track splits (a missed slice): each half then has its centroid on its own side of the
    midline, 10-25 mm apart laterally but at the same height. Sagittal series lie within ~20° of
    the patient's x axis, and distinct bodies are always a body height apart in (y, z).
    """
    lateral_mm = abs(float(np.asarray(a.centroid_mm)[0] - np.asarray(b.centroid_mm)[0]))
    return _same_sagittal_place(a, b) and lateral_mm < SAME_BODY_LATERAL_MM


def _same_sagittal_place(a: Vertebra3D, b: Vertebra3D) -> bool:
    """Centroids closer than 0.5 × the smaller height in the patient's sagittal plane (y, z)."""
    offset = np.asarray(a.centroid_mm) - np.asarray(b.centroid_mm)
    return bool(np.hypot(offset[1], offset[2]) < 0.5 * min(a.height_mm, b.height_mm))


def _joins(group: Sequence[Vertebra3D], vertebra: Vertebra3D) -> bool:
    """Whether ``vertebra`` belongs to ``group`` (best-scoring member first): at the seed's place in
    the sagittal plane, and the same body (:func:`same_body`) as some member (a body's track may
    split into several fragments across a wide slab, as at the sacrum; linking laterally through
    them keeps them one body)."""
    return _same_sagittal_place(group[0], vertebra) and any(same_body(member, vertebra) for member in group)


#: A detection lies off the column when its centroid is farther than this × its neighbours' height
#: from the segment joining them in the sagittal plane ...
OFF_COLUMN_HEIGHTS: float = 1.0
#: ... while those two neighbours are consecutive bodies: closer than this × their height (centroids
#: of adjacent bodies are ~1.2-1.4 heights apart, so no body fits between them).
CONSECUTIVE_HEIGHTS: float = 1.8


def _sagittal_centroids(vertebrae: Sequence[FusedVertebra]) -> np.ndarray:
    """``(n, 2)`` centroids in the patient's sagittal plane (LPS y, z), mm: where the column's rules
    measure distances, since the sagittal series image the column there."""
    return np.array([np.asarray(v.centroid_mm)[1:] for v in vertebrae]).reshape(-1, 2)


def _segment_offset(point: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[float, float]:
    """``(along, distance)`` of a sagittal (y, z) ``point`` relative to the segment ``lower`` →
    ``upper``: where its projection falls (0 at ``lower``, 1 at ``upper``, unclipped) and its
    distance in mm from the segment (from the nearer end when the projection falls outside)."""
    span = upper - lower
    along = float((point - lower) @ span / max(float(span @ span), 1e-9))
    return along, float(np.linalg.norm(point - (lower + np.clip(along, 0.0, 1.0) * span)))


def _between_consecutive(vertebrae: Sequence[FusedVertebra]) -> Iterator[tuple[int, float]]:
    """``(i, off_axis_heights)`` for each detection ordered between two neighbours that are
    consecutive bodies (closer than :data:`CONSECUTIVE_HEIGHTS` × their mean height, so no body fits
    between them): its distance from the segment joining them in units of that height. Distances
    are taken in the sagittal plane (y, z), where the series image the column. The end detections
    have only one neighbour and are never yielded."""
    sagittal = _sagittal_centroids(vertebrae)
    for i in range(1, len(vertebrae) - 1):
        below, above = sagittal[i - 1], sagittal[i + 1]
        height = 0.5 * (vertebrae[i - 1].height_mm + vertebrae[i + 1].height_mm)
        if np.linalg.norm(above - below) >= CONSECUTIVE_HEIGHTS * height:
            continue
        yield i, _segment_offset(sagittal[i], below, above)[1] / height


#: Two neighbours are touching bodies when closer than this × their mean height. Stricter than
#: :data:`CONSECUTIVE_HEIGHTS`: detected corners overstate small bodies' heights by a few mm, and at
#: 1.8 the cervicothoracic neighbours of a missed body counted as touching on generated whole spines.
TOUCHING_HEIGHTS: float = 1.5


def touching_neighbours(vertebrae: Sequence[FusedVertebra]) -> np.ndarray:
    """``(n - 1,)`` bool: whether each pair of neighbours (``vertebrae`` caudal → cranial) are
    touching bodies, closer in the sagittal plane than :data:`TOUCHING_HEIGHTS` × their mean
    height, so that no body fits between them (adjacent centroids are ~1.2-1.4 heights apart, one
    body missing leaves 2.4-2.8)."""
    sagittal = _sagittal_centroids(vertebrae)
    heights = np.array([v.height_mm for v in vertebrae])
    spacing = np.linalg.norm(np.diff(sagittal, axis=0), axis=1)
    return spacing < TOUCHING_HEIGHTS * 0.5 * (heights[:-1] + heights[1:])


def off_column(vertebrae: Sequence[FusedVertebra]) -> list[int]:
    """Indices of detections (``vertebrae`` caudal → cranial, as :func:`fuse_series` returns them)
    lying beside the column between two touching bodies.

    A detection ordered between two neighbours that are consecutive bodies
    (:func:`_between_consecutive`) and lying more than :data:`OFF_COLUMN_HEIGHTS` × their height
    from the segment joining them is a false positive — bowel, a vessel, an organ edge: a vertebra
    cannot sit beside the column between two touching bodies. Left in, such a detection takes a
    level and shifts every level on one side of it.
    """
    return [i for i, off_axis in _between_consecutive(vertebrae) if off_axis > OFF_COLUMN_HEIGHTS]


#: A detection lies far from the column when its second-nearest other detection (in the sagittal
#: plane) is more than this × the median height of its three nearest in front of or behind it (LPS y).
#: On the column that neighbour is the body's other neighbour, above or below it, a few mm off in y
#: even in a strong kyphosis; the bowel or abdominal wall a lumbar view shows lies 100-200 mm (4-8
#: heights) in front of it. Front-to-back only: a true body left alone by missed neighbours lies far
#: from the rest along the column, not across it (judging the full distance dropped such bodies from
#: STIR-only cervical and whole-spine studies).
FAR_FROM_COLUMN_HEIGHTS: float = 5.0


def far_from_column(vertebrae: Sequence[FusedVertebra]) -> list[int]:
    """Indices of detections far in front of or behind the spinal column.

    :func:`off_column` judges a detection against the two neighbours it is ordered between, so it
    misses strays that come in twos (generated lumbar study 835022: two detections 170-180 mm in front
    of the column, ordered next to each other, took T8 and T9 and named the true T9 T7). A body of the
    column has a neighbour above and one below, or one at an end of the view; a detection whose
    second-nearest other detection, in the sagittal plane (y, z), lies more than
    :data:`FAR_FROM_COLUMN_HEIGHTS` × the median height of its three nearest in front of or behind
    it is not a vertebral body. Needs at least four detections (fewer give no column to judge
    against).
    """
    if len(vertebrae) < 4:
        return []
    sagittal = _sagittal_centroids(vertebrae)
    heights = np.array([v.height_mm for v in vertebrae])
    far = []
    for i in range(len(vertebrae)):
        distances = np.linalg.norm(sagittal - sagittal[i], axis=1)
        distances[i] = np.inf
        nearest = np.argsort(distances, kind="stable")[:3]
        front_to_back_mm = abs(sagittal[nearest[1], 0] - sagittal[i, 0])
        if front_to_back_mm > FAR_FROM_COLUMN_HEIGHTS * float(np.median(heights[nearest])):
            far.append(i)
    return far


#: Two weak detections share the room of one body when their outer neighbours are closer than this
#: × their height: adjacent centroids are ~1.2-1.4 heights apart, so one missing body leaves its
#: neighbours 2.4-2.8 heights apart and two leave them 3.6-4.2 apart ...
ONE_BODY_ROOM_HEIGHTS: float = 3.0
#: ... and they are one body seen twice when their centroids are closer than this × their mean
#: height. Distinct bodies are a height and a disc apart, collapsed (fractured) ones too, since a
#: collapsed body is short as well; detected corners can overstate a height by a few mm, hence
#: the margin below 1 (fusion already merges detections within 0.5 heights).
SECOND_DETECTION_HEIGHTS: float = 0.8


def _one_body_for_two(column: Sequence[FusedVertebra]) -> Iterator[int]:
    """The worse-placed of each pair of consecutive detections that are one body seen twice: closer
    than :data:`SECOND_DETECTION_HEIGHTS` × their height, sharing the room of one body
    (:data:`ONE_BODY_ROOM_HEIGHTS`) between two bodies more confident than both, and both on the
    column (within :data:`OFF_COLUMN_HEIGHTS` of the segment joining those bodies). The one farther
    from the segment's middle, where the body lies, is the second detection."""
    sagittal = _sagittal_centroids(column)
    for j in range(1, len(column) - 2):
        below, above = column[j - 1], column[j + 2]
        height = 0.5 * (below.height_mm + above.height_mm)
        lower, upper = sagittal[j - 1], sagittal[j + 2]
        weak = max(column[j].detection_score, column[j + 1].detection_score) < min(below.detection_score, above.detection_score)
        pair_height = 0.5 * (column[j].height_mm + column[j + 1].height_mm)
        twice = np.linalg.norm(sagittal[j + 1] - sagittal[j]) < SECOND_DETECTION_HEIGHTS * pair_height
        if not (weak and twice) or np.linalg.norm(upper - lower) >= ONE_BODY_ROOM_HEIGHTS * height:
            continue
        offsets = [_segment_offset(sagittal[k], lower, upper) for k in (j, j + 1)]
        if all(distance <= OFF_COLUMN_HEIGHTS * height for _, distance in offsets):
            yield j + int(np.argmax([abs(along - 0.5) for along, _ in offsets]))


def squeezed_between_bodies(vertebrae: Sequence[FusedVertebra]) -> list[int]:
    """Indices of detections (caudal → cranial, after :func:`off_column` removed its own) squeezed
    on the column between two touching bodies and less confident than both of them, or sharing the
    room of one body with another such detection.

    No body fits between two consecutive bodies, so such a detection is a disc, an endplate or one
    body detected twice; left in, it takes a level like a detection beside the column. Where two
    weak detections lie in the room of one missing body (:func:`_one_body_for_two`), the one
    farther from the middle of that room is the second detection; left in, the labeller has two
    bodies for one level and names a neighbour T13 or L6. The weakest such detection goes first
    and the rest are judged again without it, so that a true body whose neighbour is a fragment
    (which brings the body's own neighbours close together too) is judged against its real
    neighbours once the fragment is gone.
    """
    kept = list(range(len(vertebrae)))
    while True:
        column = [vertebrae[i] for i in kept]
        squeezed = [
            j for j, off_axis in _between_consecutive(column)
            if off_axis <= OFF_COLUMN_HEIGHTS
            and column[j].detection_score < min(column[j - 1].detection_score, column[j + 1].detection_score)
        ]
        squeezed += list(_one_body_for_two(column))
        if not squeezed:
            return sorted(set(range(len(vertebrae))) - set(kept))
        kept.pop(min(squeezed, key=lambda j: column[j].detection_score))


#: A body that too few of the series imaging it detected is still kept when it fills a gap in the
#: column: between two bodies at least :data:`CONSECUTIVE_HEIGHTS` × their height apart (room for a
#: body), within this × their height of the segment joining them ...
GAP_OFF_AXIS_HEIGHTS: float = 0.5
#: ... and at least this × their height from each (not a second detection of either, which lies
#: within about half a height of it). Adjacent centroids are only ~1.2 heights apart (cervical bodies
#: 12 mm tall, 14-15 mm apart), so a missing body's detection, or its neighbour's, a few mm off
#: leaves it nearer than one height to that neighbour: 0.75 keeps it (tuning seeds 920000+: three
#: more cervical bodies found at 0.75 than at 1.0, nothing else moved; 0.6 found no more).
GAP_CLEARANCE_HEIGHTS: float = 0.75


def fill_gap(column: Sequence[FusedVertebra], candidate: FusedVertebra) -> FusedVertebra | None:
    """``candidate`` placed in the column when it sits on the column in a gap between two
    neighbouring bodies of ``column`` (caudal → cranial) where one body is missing, else ``None``.

    Vertebral bodies are contiguous, so two kept neighbours farther apart than
    :data:`CONSECUTIVE_HEIGHTS` × their mean height have lost a body between them; a weak detection
    on the segment joining them (within :data:`GAP_OFF_AXIS_HEIGHTS` heights) and clear of both
    (:data:`GAP_CLEARANCE_HEIGHTS`) is that body. Distances are in the sagittal plane (y, z), as in
    :func:`off_column`. The body's lateral position (LPS x; its corners move with it) is taken
    from the neighbours, interpolated at its height: the few sequences that saw it often saw it
    on a slice or two beside the midline only, and adjacent bodies are laterally in line.
    """
    point = np.asarray(candidate.centroid_mm)[1:]
    for below, above in zip(column, column[1:]):
        lower, upper = np.asarray(below.centroid_mm)[1:], np.asarray(above.centroid_mm)[1:]
        height = 0.5 * (below.height_mm + above.height_mm)
        if np.linalg.norm(upper - lower) < CONSECUTIVE_HEIGHTS * height:
            continue
        along, off_axis = _segment_offset(point, lower, upper)
        if not 0.0 < along < 1.0:
            continue
        clearance = min(np.linalg.norm(point - lower), np.linalg.norm(point - upper))
        if off_axis <= GAP_OFF_AXIS_HEIGHTS * height and clearance >= GAP_CLEARANCE_HEIGHTS * height:
            lateral_mm = (1.0 - along) * below.centroid_mm[0] + along * above.centroid_mm[0]
            shift = np.array([lateral_mm - candidate.centroid_mm[0], 0.0, 0.0])
            return replace(candidate, centroid_mm=candidate.centroid_mm + shift, corners_mm=candidate.corners_mm + shift)
    return None


def fuse_series(
    per_series: Sequence[Sequence[Vertebra3D]],
    covers: Callable[[str, np.ndarray], bool],
    min_support: float = 0.5,
    series_uids: Sequence[str] | None = None,
) -> list[FusedVertebra]:
    """Fuse the vertebrae of several sagittal series (same frame of reference) into one list.

    Vertebrae are visited by decreasing detection score; each joins the first group it belongs to
    (:func:`_joins`: at the place of the group's seed, its best-scoring member, in the sagittal plane
    and laterally next to one of its members), else seeds a new group. A group's centroid is the
    mean of its members' centroids weighted by detection score × slices. A group's support is the
    number of distinct series among its members divided by the number of series that detected it or
    whose field of view contains the group centroid (``covers(uid, centroid_mm)``); groups with
    support < ``min_support`` are dropped unless they fill a gap in the column of the kept ones
    (:func:`fill_gap`, which also puts them laterally in line with their neighbours; visited by
    decreasing score, each filled gap closing before the next is judged). Small bodies where the
    column is crowded (the cervicothoracic junction of a whole-spine series) are the ones a single
    sequence often misses; where another still sees one, the gap it would leave is the evidence
    that it is real.

    Args:
        per_series: per series, its vertebrae (from :func:`track_across_slices`).
        covers: whether the series ``uid`` images the LPS point (mm) — e.g. ``geometry.contains``.
        min_support: minimum support to keep a vertebra (0..1).
        series_uids: the uid of each entry of ``per_series``; needed so that a series that detected
            nothing still counts against support. When omitted, each series' uid is read from its
            vertebrae and series with no vertebrae are not asked.

    Returns:
        Fused vertebrae sorted caudal -> cranial along the fitted spine direction.
    """
    if series_uids is None:
        uids = [series[0].series_instance_uid for series in per_series if series]
    else:
        if len(series_uids) != len(per_series):
            raise ValueError("series_uids must name every entry of per_series")
        uids = list(series_uids)
    candidates = sorted((v for series in per_series for v in series), key=lambda v: -v.detection_score)
    groups: list[list[Vertebra3D]] = []
    for vertebra in candidates:
        for group in groups:
            if _joins(group, vertebra):
                group.append(vertebra)
                break
        else:
            groups.append([vertebra])
    fused: list[FusedVertebra] = []
    weak: list[FusedVertebra] = []
    for group in groups:
        scores = np.array([v.detection_score for v in group])
        # Each member weighs what its slices add up to: the centroid is the score-weighted mean over
        # every slice that saw the body, so a one-slice fragment (e.g. the sacral ala) barely moves it.
        evidence = np.array([v.detection_score * len(v.slice_quads) for v in group])
        weights = evidence if evidence.sum() > 0.0 else np.ones_like(evidence)
        centroid = (weights[:, None] * np.array([v.centroid_mm for v in group])).sum(axis=0) / weights.sum()
        detected = {v.series_instance_uid for v in group}
        covering = detected | {uid for uid in uids if covers(uid, centroid)}
        support = len(detected) / len(covering)
        best = group[0]
        (fused if support >= min_support else weak).append(
            FusedVertebra(
                centroid_mm=centroid,
                corners_mm=best.corners_mm,
                series_instance_uid=best.series_instance_uid,
                detection_score=float(scores.mean() * support),
                members=tuple(group),
                support=float(support),
            )
        )
    fused = _in_column_order(fused)
    for candidate in sorted(weak, key=lambda f: -f.detection_score):
        placed = fill_gap(fused, candidate)
        if placed is not None:
            fused = _in_column_order([*fused, placed])
    return fused


def _in_column_order(vertebrae: Sequence[FusedVertebra]) -> list[FusedVertebra]:
    order = _caudal_to_cranial(np.array([v.centroid_mm for v in vertebrae]).reshape(-1, 3))
    return [vertebrae[i] for i in order]
