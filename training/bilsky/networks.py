"""Networks of the Bilsky stage (:mod:`operators.core.bilsky_pipeline`).

* :class:`CanalDetector` — a MONAI 2D residual U-Net: axial image at 2 mm pixels → heatmap logits of
  the thecal sac centre (trained with :func:`heatmap_loss`).
* :class:`PrototypeGrader` — Hallinan 2022/2023's convolutional prototypical network: a MONAI 2D
  ResNet embeds the canal ROI; class probabilities are a softmax over negative squared distances to
  one learnt prototype per class. For CT (Hallinan 2023, combined window learning) each window image
  goes through the same weights with its own batch normalisation (:class:`WindowBatchNorm`) and the
  per-window probabilities are averaged. Trained with cross-entropy, compactness regularisation
  (:func:`compactness_loss`) and virtual adversarial training (:func:`virtual_adversarial_loss`);
  a per-class logit bias (``class_bias``, zero in training) undoes the training batches' grade mix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet, UNet
from torch import nn



class CanalDetector(nn.Module):
    """``(B, 1, H, W)`` axial image (H, W multiples of 16) → ``(B, 1, H, W)`` heatmap logits."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.unet = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=channels,
                         strides=(2,) * (len(channels) - 1), num_res_units=1)
        # Start every pixel near probability 0.1, not 0.5: the map is almost all background, and
        # pushing it all down would otherwise dominate the first hundreds of steps.
        output = [m for m in self.unet.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
        nn.init.constant_(output.bias, -2.19)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.unet(image)


def heatmap_target(shape: tuple[int, int], centre: tuple[float, float] | None, sigma_px: float = 2.5) -> torch.Tensor:
    """``(H, W)`` Gaussian of peak 1 at ``centre`` (row, column pixels); zeros when ``None``."""
    if centre is None:
        return torch.zeros(shape)
    rows = torch.arange(shape[0], dtype=torch.float32)[:, None]
    columns = torch.arange(shape[1], dtype=torch.float32)[None, :]
    return torch.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / (2 * sigma_px**2))


def heatmap_loss(logits: torch.Tensor, target: torch.Tensor, peak_weight: float = 100.0) -> torch.Tensor:
    """Squared error of the heatmap, each pixel weighted ``1 + peak_weight × target``, ×100: ``logits``
    and ``target`` ``(B, 1, H, W)``. Why not CenterNet's focal loss: with one small peak per 96² patch
    it settled on a flat 0.13 map for 1500 steps (validation never found a canal); the weighted error
    found 5.8 mm mean error in 600."""
    probability = torch.sigmoid(logits)
    return (((probability - target) ** 2) * (1.0 + peak_weight * target)).mean() * 100.0


class WindowBatchNorm(nn.Module):
    """Batch normalisation with its own statistics and affine per CT window; input ``(W·N, C, …)``
    window-major (the first ``N`` samples are window 0)."""

    def __init__(self, num_features: int, windows: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(num_features) for _ in range(windows))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_window = x.reshape(len(self.norms), -1, *x.shape[1:])
        return torch.cat([norm(per_window[i]) for i, norm in enumerate(self.norms)], dim=0)


def _window_norms(module: nn.Module, windows: int) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, WindowBatchNorm(child.num_features, windows))
        else:
            _window_norms(child, windows)


class PrototypeGrader(nn.Module):
    """Canal ROI ``(B, windows, 64, 64)`` → class probabilities ``(B, classes)``.

    Args:
        classes: number of grades (6 MR, 3 CT).
        windows: input channels, each an image of its own (1 MR; 3 CT windows, window-specific
            batch norm, probabilities averaged).
        embedding: prototype space dimension.
    """

    def __init__(self, classes: int, windows: int = 1, embedding: int = 64,
                 block_inplanes: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.windows = windows
        self.backbone = ResNet("basic", [1, 1, 1, 1], list(block_inplanes), spatial_dims=2, n_input_channels=1,
                               conv1_t_size=5, conv1_t_stride=2, no_max_pool=True, feed_forward=False)
        if windows > 1:
            _window_norms(self.backbone, windows)
        self.project = nn.Linear(block_inplanes[-1], embedding)
        self.prototypes = nn.Parameter(torch.randn(classes, embedding) * 0.5)
        # Added to the logits at inference only (zero while training): the correction from the
        # grade mix training batches are drawn with to the grade mix of studies, set on validation
        # after training (training.bilsky.train.calibrate_class_bias).
        self.register_buffer("class_bias", torch.zeros(classes))

    def embed(self, rois: torch.Tensor) -> torch.Tensor:
        """``(B, W, H, W')`` → ``(W, B, embedding)`` one embedding per window image."""
        batch = rois.shape[0]
        images = rois.transpose(0, 1).reshape(self.windows * batch, 1, *rois.shape[2:])
        return self.project(self.backbone(images)).reshape(self.windows, batch, -1)

    def distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(…, embedding)`` → ``(…, classes)`` squared distances to the prototypes."""
        return ((embeddings.unsqueeze(-2) - self.prototypes) ** 2).sum(-1)

    def window_logits(self, rois: torch.Tensor) -> torch.Tensor:
        """``(W, B, classes)`` logits (negative squared distances) per window image."""
        return -self.distances(self.embed(rois))

    def forward(self, rois: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.window_logits(rois) + self.class_bias, dim=-1).mean(dim=0)


def compactness_loss(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of each embedding to its own class prototype (Yang et al. 2018's
    prototype loss, Hallinan 2022's compact regularisation): ``distances`` ``(W, B, classes)`` from
    :meth:`PrototypeGrader.distances` (the same pass as the logits), ``labels`` ``(B,)``."""
    return distances.gather(-1, labels.expand(distances.shape[0], -1).unsqueeze(-1)).mean()


def virtual_adversarial_loss(model: PrototypeGrader, rois: torch.Tensor, clean_logits: torch.Tensor, xi: float = 1e-2,
                             epsilon: float = 1.0) -> torch.Tensor:
    """Miyato et al.'s VAT with one power iteration: KL between the predictions at ``rois`` (their
    ``clean_logits`` ``(W, B, classes)``, taken from the training pass and not differentiated) and at
    the most sensitive perturbation of L2 norm ``epsilon`` (per ROI)."""

    def unit(d: torch.Tensor) -> torch.Tensor:
        return d / (d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1))) + 1e-8)

    clean = torch.log_softmax(clean_logits.detach(), dim=-1)
    direction = (xi * unit(torch.randn_like(rois))).requires_grad_()
    perturbed = torch.log_softmax(model.window_logits(rois + direction), dim=-1)
    divergence = F.kl_div(perturbed, clean, log_target=True, reduction="batchmean")
    gradient = torch.autograd.grad(divergence, direction)[0]
    adversarial = torch.log_softmax(model.window_logits(rois + epsilon * unit(gradient.detach())), dim=-1)
    return F.kl_div(adversarial, clean, log_target=True, reduction="batchmean")
