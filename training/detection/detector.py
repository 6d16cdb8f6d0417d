"""VFR vertebra detector: network, loss, patch dataset and training loop (SpineNetV2 §3.1, §4.4.1).

Network: MONAI ``FlexibleUNet`` (ResNet encoder, U-Net decoder), 1 input channel, 13 outputs
(:data:`~operators.core.vertebra_detection.N_OUTPUT_CHANNELS`). It is fully convolutional, so it is
trained on fixed patches but runs on whole slices (sizes padded to a multiple of 32).

Loss (paper eq. 1–4): class-balanced L1 on the 5 heatmaps, with per-channel weights
``N/(N+P)`` on target pixels ≥ T and ``P/(N+P)`` below (T = 0.01), plus an L2 (squared error)
on the vector-field channels inside each corner's neighbourhood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import FlexibleUNet
from torch import nn
from torch.utils.data import Dataset

from operators.core.vertebra_detection import N_OUTPUT_CHANNELS, render_targets, vector_mask
from training.augment import intensity_augmentation, random_patch_affine, warp_image
from training.progress import TrainingProgress, training_autocast
from training.detection.slice_cache import CachedSeries, mixed_draw
from training.stages import start_from

#: Heatmap channels (4 corners + centroid) and vector channels (2 per corner) of the output.
N_HEATMAPS = 5
HEATMAP_POSITIVE_THRESHOLD = 0.01

#: Initial heatmap logit: sigmoid(−4.6) ≈ 0.01, the background prior.
HEATMAP_PRIOR_LOGIT = -4.6

#: Fraction of training patches centred near a vertebral body (the rest anywhere in the slice).
SPINE_CENTRED_FRACTION = 0.7


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture and training settings; stored in the model card and ``training`` of the manifest."""

    backbone: str = "resnet10"
    # The last stages run at 1/2 and full resolution and must carry 5 heatmaps + 8 vector
    # components: 8-16 channels there left the outputs smeared along the spine.
    decoder_channels: tuple[int, ...] = (128, 64, 48, 32, 32)
    patch_px: int = 160
    batch_size: int = 16
    steps: int = 3000
    learning_rate: float = 1e-3
    vector_loss_weight: float = 1.0
    # Share of training patches from real annotated scans when the training set has any (see
    # training.detection.slice_cache.mixed_draw).
    real_fraction: float = 0.5
    seed: int = 0


class VFRNet(nn.Module):
    """FlexibleUNet with a sigmoid on the 5 heatmap channels, so exported models output heatmaps in
    0..1 (what :func:`~operators.core.vertebra_detection.decode_slice` thresholds) and raw vectors."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.unet = FlexibleUNet(
            in_channels=1,
            out_channels=N_OUTPUT_CHANNELS,
            backbone=config.backbone,
            pretrained=False,
            spatial_dims=2,
            decoder_channels=config.decoder_channels,
        )
        # Heatmap logits start at the background prior (sigmoid = 1 %), as in focal-loss detectors,
        # so early steps are spent on finding peaks rather than on darkening every pixel.
        head = self.unet.segmentation_head[0]
        with torch.no_grad():
            head.bias[:N_HEATMAPS].fill_(HEATMAP_PRIOR_LOGIT)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        output = self.unet(image)
        return torch.cat([torch.sigmoid(output[:, :N_HEATMAPS]), output[:, N_HEATMAPS:]], dim=1)


def make_detector(config: DetectorConfig) -> nn.Module:
    """The VFR network: (N, 1, H, W) normalised image → (N, 13, H, W) heatmaps (0..1) + vector fields."""
    return VFRNet(config)


class VFRLoss(nn.Module):
    """SpineNetV2 detection + grouping loss, with a cross-entropy term added to the detection part.

    ``forward(prediction, target, vector_weight, pixel_weight=None)``: prediction/target (N, 13, H, W)
    (heatmaps after the sigmoid); vector_weight (N, 4, H, W) 1 where a corner's vector target is
    defined; pixel_weight (N, 1, H, W), 0 where the image shows bodies nobody outlined (every term
    ignores those pixels). Returns a scalar:

    * ``paper_l1_weight`` × the paper's class-balanced L1 on the heatmaps (eq. 2–3);
    * a binary cross-entropy on the heatmaps, each pixel weighted ``1 + 9 × target`` (ours);
    * ``vector_loss_weight`` × the mean squared vector error over the defined pixels (eq. 4).

    Why the cross-entropy: the balanced weights of eq. 3 give the few pixels under a Gaussian ~97 %
    of the weight, so on CPU budgets the network first settles on a smeared band along the whole
    spine (peaks ~0.2, nothing to threshold) and sharpens only after many thousands of steps. A
    cross-entropy that keeps every background pixel's weight gives sharp, separable peaks early;
    the paper's term stays, down-weighted.
    """

    def __init__(self, vector_loss_weight: float = 1.0, paper_l1_weight: float = 0.25) -> None:
        super().__init__()
        self.vector_loss_weight = vector_loss_weight
        self.paper_l1_weight = paper_l1_weight

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, vector_weight: torch.Tensor, pixel_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if pixel_weight is None:
            pixel_weight = torch.ones_like(target[:, :1])
        heat_prediction, heat_target = prediction[:, :N_HEATMAPS], target[:, :N_HEATMAPS]
        positive = (heat_target >= HEATMAP_POSITIVE_THRESHOLD).float()
        n_positive = positive.sum(dim=(2, 3), keepdim=True)
        n_negative = positive[0, 0].numel() - n_positive
        # Paper eq. 3: the rare positive pixels get the (large) negative share of the weight.
        alpha = pixel_weight * (positive * n_negative + (1.0 - positive) * n_positive) / (n_positive + n_negative)
        paper_l1 = (alpha * (heat_prediction - heat_target).abs()).sum(dim=(2, 3)) / (alpha.sum(dim=(2, 3)) + 1e-6)
        clamped = heat_prediction.clamp(1e-6, 1 - 1e-6)
        cross_entropy = -(heat_target * torch.log(clamped) + (1 - heat_target) * torch.log(1 - clamped))
        cross_entropy = (pixel_weight * (1.0 + 9.0 * heat_target) * cross_entropy).mean()
        vectors = (prediction[:, N_HEATMAPS:] - target[:, N_HEATMAPS:]) ** 2
        weights = pixel_weight * vector_weight.repeat_interleave(2, dim=1)
        group = (vectors * weights).sum() / (weights.sum() + 1e-6)
        return self.paper_l1_weight * paper_l1.mean() + cross_entropy + self.vector_loss_weight * group


class SlicePatchDataset(Dataset):
    """Random augmented patches of cached sagittal slices with their VFR targets.

    Each item: ``image`` (1, P, P) float32, ``target`` (13, P, P), ``vector_weight`` (4, P, P),
    ``pixel_weight`` (1, P, P) (the series' loss mask; 1 outside the image, which is background).
    The length is nominal (``samples``); every draw picks a random series and slice from ``rng``,
    from a real series with probability ``real_fraction`` when there are real and synthetic ones.
    """

    def __init__(
        self, series: Sequence[CachedSeries], patch_px: int, samples: int, seed: int, augment: bool = True,
        real_fraction: float = 0.0,
    ) -> None:
        self.series = list(series)
        self.real_fraction = real_fraction
        self.patch_px = patch_px
        self.samples = samples
        self.seed = seed
        self.augment = augment
        self.intensity = intensity_augmentation()
        self.intensity.set_random_state(seed)
        # Index (series, slice) pairs so that every slice is equally likely.
        self.index = [(i, s) for i, item in enumerate(self.series) for s in range(item.images.shape[0])]
        self.index_real = np.array([self.series[i].real for i, _ in self.index], dtype=bool)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, item))
        series_index, slice_index = self.index[int(mixed_draw(self.index_real, self.real_fraction, 1, rng)[0])]
        cached = self.series[series_index]
        image = cached.images[slice_index].astype(np.float32)
        outlines = cached.slice_quads(slice_index)
        centre = None
        if len(outlines) and rng.random() < SPINE_CENTRED_FRACTION:
            # Most patches are centred near a body (else most of a patch is soft tissue or air).
            centre = outlines[rng.integers(len(outlines)), 4] + rng.normal(0.0, self.patch_px / 6, 2)
        if self.augment:
            affine = random_patch_affine(rng, image.shape, self.patch_px, centre_source=centre)
        else:
            affine = random_patch_affine(rng, image.shape, self.patch_px, max_rotation_deg=0.0,
                                         scale_range=(1.0, 1.0), flip_rows=0.0, flip_cols=0.0, centre_source=centre)
        patch = warp_image(image, affine, self.patch_px)
        quads = [affine.map_points(q) for q in outlines]
        shape = (self.patch_px, self.patch_px)
        target = render_targets(quads, shape)
        weight = vector_mask(quads, shape).astype(np.float32)
        ignored = np.zeros(shape, np.float32)
        if cached.loss_mask is not None:
            ignored = warp_image(1.0 - cached.loss_mask[slice_index].astype(np.float32), affine, self.patch_px, order=0)
        patch = patch[None]
        if self.augment:
            patch = np.asarray(self.intensity({"image": patch})["image"], dtype=np.float32)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(patch)),
            "target": torch.from_numpy(target),
            "vector_weight": torch.from_numpy(weight),
            "pixel_weight": torch.from_numpy(np.ascontiguousarray((1.0 - ignored)[None], dtype=np.float32)),
        }


def train_detector(
    train: Sequence[CachedSeries],
    val: Sequence[CachedSeries],
    config: DetectorConfig,
    out_path: Path,
    *,
    log_every: int = 50,
    val_every: int = 500,
    initial_state: dict | None = None,
) -> dict:
    """Train with Adam (paper: lr 1e-3, β = (0.9, 0.999)) and cosine decay; keep the best validation loss.

    ``initial_state``: start from these weights (fine-tuning) instead of a random initialisation.
    Writes the best state dict to ``out_path`` and returns a history dict (losses, wall time).
    """
    torch.manual_seed(config.seed)
    model = make_detector(config)
    reinitialised = start_from(model, initial_state)
    loss_fn = VFRLoss(config.vector_loss_weight)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))
    )
    train_data = SlicePatchDataset(train, config.patch_px, config.steps * config.batch_size, config.seed,
                                   real_fraction=config.real_fraction)
    val_data = SlicePatchDataset(val, config.patch_px, 256, seed=config.seed + 1, augment=False)
    loader = torch.utils.data.DataLoader(train_data, batch_size=config.batch_size, num_workers=0)
    progress = TrainingProgress("detector", out_path, {"config": asdict(config), "reinitialised": reinitialised},
                                log_every, higher_is_better=False)
    model.train()
    for step, batch in enumerate(loader, start=1):
        # bfloat16 where the CPU has it (training_autocast); the loss stays float32.
        with training_autocast():
            prediction = model(batch["image"])
        loss = loss_fn(prediction.float(), batch["target"], batch["vector_weight"], batch["pixel_weight"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        progress.loss(step, loss.item())
        if step % val_every == 0 or step == config.steps:
            progress.validation(step, evaluate_loss(model, val_data, loss_fn), model)
            model.train()
    return progress.finish()


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: SlicePatchDataset, loss_fn: VFRLoss, batch_size: int = 32) -> float:
    """Mean loss over a fixed (unaugmented) validation set."""
    model.eval()
    total, count = 0.0, 0
    for batch in torch.utils.data.DataLoader(data, batch_size=batch_size):
        loss = loss_fn(model(batch["image"]), batch["target"], batch["vector_weight"], batch["pixel_weight"])
        total += float(loss) * len(batch["image"])
        count += len(batch["image"])
    return total / max(count, 1)
