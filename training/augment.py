"""Augmentations shared by the detector and labeller training loops.

Intensity changes are MONAI dictionary transforms on the ``"image"`` key. Geometry is done here
rather than with MONAI's spatial transforms because the targets are landmark coordinates (and vector
fields derived from them) that must move with the image: one affine, sampled once, warps the image
(:func:`warp_image`) and maps the landmarks (:meth:`PatchAffine.map_points`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandGibbsNoised,
    RandHistogramShiftd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandomizableTransform,
)
from scipy import ndimage


class RandQuantised(RandomizableTransform, MapTransform):
    """Round an image to ``2**bits`` evenly spaced levels between its minimum and maximum, ``bits``
    drawn from ``bits_range`` (inclusive).

    Public and exported images are often 8-bit (FastCleverSeg rescaled its 16-bit scans to 1..256,
    PNG/JPEG exports), while our DICOM is 12–16-bit: after normalisation the first are a staircase
    of ~200 values, the second smooth. Training on both keeps the networks from keying on either.
    """

    def __init__(self, keys: KeysCollection, bits_range: tuple[int, int] = (6, 8), prob: float = 0.2) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.bits_range = bits_range
        self.bits = bits_range[1]

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.bits = int(self.R.randint(self.bits_range[0], self.bits_range[1] + 1))

    def __call__(self, data):
        self.randomize()
        if not self._do_transform:
            return data
        result = dict(data)
        levels = 2**self.bits - 1
        for key in self.key_iterator(result):
            image = np.asarray(result[key], dtype=np.float32)
            low, high = float(image.min()), float(image.max())
            if high > low:
                result[key] = (np.round((image - low) / (high - low) * levels) / levels * (high - low) + low).astype(np.float32)
        return result


def intensity_augmentation() -> Compose:
    """Contrast, gamma, brightness, noise, bias field, resolution and bit-depth changes for a
    normalised image.

    Ranges are wide on purpose (the app meets scanners and protocols we never generated): gamma
    0.5–2, intensity scale ±30 %, shift ±0.15, Gaussian noise σ up to 0.08 (normalised units),
    bias field coefficients up to 0.4, blur σ up to 1.5 px (lower resolution), ringing,
    non-linear histogram remapping and 6–8-bit quantisation (:class:`RandQuantised`, applied
    before the noise, as an 8-bit export of a noisy scan).
    """
    keys = ("image",)
    return Compose(
        [
            RandBiasFieldd(keys, degree=3, coeff_range=(0.0, 0.4), prob=0.3),
            RandAdjustContrastd(keys, gamma=(0.5, 2.0), prob=0.4),
            RandHistogramShiftd(keys, num_control_points=(5, 10), prob=0.2),
            RandScaleIntensityd(keys, factors=0.3, prob=0.5),
            RandShiftIntensityd(keys, offsets=0.15, prob=0.3),
            RandGaussianSmoothd(keys, sigma_x=(0.3, 1.5), sigma_y=(0.3, 1.5), sigma_z=(0.3, 1.5), prob=0.25),
            RandGibbsNoised(keys, alpha=(0.0, 0.5), prob=0.1),
            RandQuantised(keys, bits_range=(6, 8), prob=0.2),
            RandGaussianNoised(keys, std=0.08, prob=0.4),
        ]
    )


@dataclass(frozen=True)
class PatchAffine:
    """Maps output-patch pixel (row, col) to source-image pixel: ``source = matrix @ out + offset``."""

    matrix: np.ndarray  # (2, 2)
    offset: np.ndarray  # (2,)

    def map_points(self, source_points: np.ndarray) -> np.ndarray:
        """Source-image (…, 2) (row, col) points → output-patch points."""
        inverse = np.linalg.inv(self.matrix)
        return (np.asarray(source_points, dtype=float) - self.offset) @ inverse.T


def random_patch_affine(
    rng: np.random.Generator,
    source_shape: tuple[int, int],
    patch_px: int,
    *,
    max_rotation_deg: float = 20.0,
    scale_range: tuple[float, float] = (0.8, 1.25),
    flip_rows: float = 0.2,
    flip_cols: float = 0.5,
    centre_source: np.ndarray | None = None,
) -> PatchAffine:
    """A random crop of ``patch_px``² with rotation, isotropic rescaling and flips.

    The patch centre is ``centre_source`` (source (row, col)) when given, else drawn anywhere in the
    source image, so patches regularly cross the image edge (cut vertebrae, empty margins), as at the
    edge of a real field of view. Flipping columns
    (anterior ↔ posterior) and rows (head ↔ feet) is anatomy-safe here: both occur in stored
    sagittal series depending on patient position and orientation, and corner identities stay with
    the body, not with the image direction.
    """
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    scale = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    flips = np.diag([-1.0 if rng.random() < flip_rows else 1.0, -1.0 if rng.random() < flip_cols else 1.0])
    matrix = scale * rotation @ flips
    if centre_source is None:
        centre_source = rng.uniform([0.0, 0.0], np.asarray(source_shape, dtype=float) - 1.0)
    centre_patch = np.full(2, (patch_px - 1) / 2.0)
    return PatchAffine(matrix, centre_source - matrix @ centre_patch)


def warp_image(image: np.ndarray, affine: PatchAffine, patch_px: int, order: int = 1) -> np.ndarray:
    """Resample a 2D image into the patch (outside the source = 0.0, the normalised background)."""
    return ndimage.affine_transform(
        image.astype(np.float32, copy=False), affine.matrix, affine.offset, output_shape=(patch_px, patch_px),
        order=order, mode="constant", cval=0.0,
    )
