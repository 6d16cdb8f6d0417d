"""The two disc graders and their losses.

* :class:`SpineNetGrader` (SpineNetV2 §3.4, §4.2, §4.4.3): a ResNet-style 3D CNN on one
  intervertebral volume — a 3×3×3 first convolution, then in-plane (1×3×3) residual stages built
  from MONAI ``UnetResBlock``; a 512-d embedding; one 2-layer MLP head per SPINENET_GRADINGS entry.
* :class:`MultiViewGrader` (Park et al. §2): a shared 2D MONAI ``ResNet`` encodes every slice of
  every view; learned view / slice-order / disc-level embeddings are added; a CLS token is
  prepended; three transformer encoder layers (2 heads); linear heads on the CLS output for the five
  RSNA 2024 conditions and the auxiliary disc level.

Both return ONE tensor of concatenated logits laid out by :mod:`operators.core.grading_outputs`
(the runtime splits the ONNX output with the same offsets).

Losses: :func:`balanced_cross_entropy` (SpineNetV2: class-balanced CE per grading head) and
:func:`park_loss` (0.8 × mean class-weighted CE over conditions + 0.2 × level CE). Class weights
come from training-set frequencies (:func:`balanced_class_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.networks.blocks import Convolution, UnetResBlock
from monai.networks.nets import ResNet
from torch import nn

from operators.core.grading_outputs import RSNA_LEVEL_SLICE, RSNA_OUTPUTS, condition_slices, grading_slices
from operators.core.grading_pipeline import PADDING_VIEW, SPINENET_CHANNELS
from operators.core.gradings import SPINENET_GRADINGS
from operators.core.levels import RSNA_DISCS
from operators.core.volume_extraction import AXIAL_SLAB_SHAPE, DISC_VOLUME_SHAPE

#: Loss weights of Park §2.1: main (conditions) and auxiliary (disc level).
PARK_CONDITION_WEIGHT = 0.8
PARK_LEVEL_WEIGHT = 0.2

_RELU = ("relu", {"inplace": True})
#: Slope for negative inputs of the disc grader's embedding and head activations (leaky ReLU). With
#: plain ReLU there, 391 of the 512 embedding units of the grader shipped before never fired on the
#: 296 validation discs, and a unit that never fires gets no gradient again. Its lower endplate defect
#: head stayed at 0.79-0.82 validation balanced accuracy through 3000 steps, and through 2000 more with
#: the head–feet flip, while the upper head of the flip-trained grader, shown the discs turned head to
#: feet, found those lower defects at 0.95: the evidence was in the features, the head could not learn to
#: read it. With a leaky slope every unit keeps a gradient: 2000 more steps took the lower head to
#: 0.91 (it rose from step 600).
_HEAD_ACTIVATION_SLOPE = 0.01
#: Instance rather than batch normalisation in both graders: they train on 2 CPU cores at batch 16
#: or less, where batch statistics are noisy and a network tuned to them grades worse in eval mode
#: (measured: a 40-step fit of 13 discs lowered the loss from 0.90 to 0.44 with instance norm and
#: raised it to 3.99 in eval mode with batch norm); and the multi-view encoder would otherwise pool
#: the all-zero slices of missing views into its batch statistics.
NORM = ("instance", {"affine": True})


class SpineNetGrader(nn.Module):
    """SpineNetV2 grading network on one intervertebral volume.

    ``forward(volume)``: ``(B, 2, 9, 112, 224)`` float32 — channel 0 sagittal T2 (or STIR), channel 1
    sagittal T1, zeros for a missing sequence (:data:`~operators.core.grading_pipeline.SPINENET_CHANNELS`);
    axes (sagittal slice, height, width) as :data:`~operators.core.volume_extraction.DISC_VOLUME_SHAPE`
    → ``(B, 29)`` logits, SPINENET_GRADINGS heads concatenated in order
    (:func:`~operators.core.grading_outputs.grading_slices`).

    Layout (SpineNetV2 §4.2: "3D 3×3×3 convolutions in the first layer and 3×3 in all other layers"):

    * stem: 3×3×3 convolution, stride (1, 2, 2) → ``stem_channels`` × 9 × 56 × 112;
    * ``len(channels)`` stages of ``blocks_per_stage`` MONAI ``UnetResBlock`` with (1, 3, 3) kernels,
      the first of each stage with in-plane stride 2 → ``channels[-1]`` × 9 × 4 × 7;
    * average over the columns (front → back) only, keeping the 9 sagittal slices and the 4 rows
      (head → feet) apart, flattened to ``channels[-1] × 9 × 4`` → linear + leaky ReLU → ``embedding``
      (512, as §4.4.3);
    * per grading: linear(embedding, ``head_hidden``) + leaky ReLU + linear(``head_hidden``, classes).

    Why the slice and row axes are not pooled: left and right foraminal stenosis differ only by which
    lateral slices show the narrowing, and upper and lower endplate defects and marrow changes only by
    whether they sit above or below the disc. Averaging over an axis gives the same finding at either
    end of it the same embedding, so paired heads cannot tell the two apart. Measured on the 40
    validation studies (296 discs), the grader that averaged the rows away → this layout fine-tuned
    from it: with only an upper endplate defect, found in 13 → 27 of 39 discs (a lower one called in
    13 → 12); discs with neither marrow change called with an upper one in 19 → 2 of 201. Marrow
    changes on one side only are still often called on both (only lower: upper called in 14 → 12 of
    17; only upper: lower called in 12 → 13 of 13).

    Size (defaults): 3.79 M parameters (backbone 0.70 M, embedding 2.36 M, heads 0.73 M). On this
    project's 2-core CPU one training step at batch 16 (bf16 autocast, Adam) takes about 0.37 s with
    nothing else running (the 2000-step leaky-ReLU run, validation included: 12.3 min); inference
    time is the ``disc_grader`` stage of ``python -m benchmarks``. SpineNetV2's ResNet32 is deeper and wider; this is
    an in-plane ResNet-18 layout at a quarter of its width (16 … 128 channels), sized so that it
    trains on 2 CPU cores.
    """

    def __init__(
        self,
        in_channels: int = len(SPINENET_CHANNELS),
        stem_channels: int = 16,
        channels: Sequence[int] = (16, 32, 64, 128),
        blocks_per_stage: int = 2,
        embedding: int = 512,
        head_hidden: int = 128,
        n_slices: int = DISC_VOLUME_SHAPE[0],
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [Convolution(
            3, in_channels, stem_channels, strides=(1, 2, 2), kernel_size=3, act=_RELU, norm=NORM, bias=False,
        )]
        previous = stem_channels
        for width in channels:
            for block in range(blocks_per_stage):
                stride = (1, 2, 2) if block == 0 else 1
                layers.append(UnetResBlock(3, previous, width, kernel_size=(1, 3, 3), stride=stride,
                                           norm_name=NORM, act_name=_RELU))
                previous = width
        self.backbone = nn.Sequential(*layers)
        rows = DISC_VOLUME_SHAPE[1]
        for _ in range(1 + len(channels)):  # the stem and each stage halve the rows (rounding up)
            rows = (rows + 1) // 2
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(previous * n_slices * rows, embedding),
                                   nn.LeakyReLU(_HEAD_ACTIVATION_SLOPE, inplace=True))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(embedding, head_hidden), nn.LeakyReLU(_HEAD_ACTIVATION_SLOPE, inplace=True),
                          nn.Linear(head_hidden, len(classes)))
            for classes in SPINENET_GRADINGS.values()
        )

    def features(self, volume: torch.Tensor) -> torch.Tensor:
        """``(B, 2, 9, 112, 224)`` → ``(B, embedding)`` disc embedding."""
        maps = self.backbone(volume)  # (B, C, 9, h, w)
        return self.embed(maps.mean(dim=4))

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        embedding = self.features(volume)
        return torch.cat([head(embedding) for head in self.heads], dim=1)


class ExportableEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` whose self-attention block runs
    ``scaled_dot_product_attention`` on the layer's own ``self_attn`` weights.

    Why: ``nn.MultiheadAttention`` reshapes its keys with ``k.shape[0]``, which torch's TorchScript
    ONNX exporter records as a constant, so the exported graph only accepts the example's token
    count (pytorch/pytorch#122321). Same parameters and maths; in eval mode torch still takes the
    fused fast path, which :func:`training.export.export_model` turns off while tracing.
    """

    def _sa_block(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, is_causal: bool = False
    ) -> torch.Tensor:
        """``x`` ``(B, S, d)``; ``key_padding_mask`` ``(B, S)`` additive float (−inf = ignore this key)
        as ``nn.TransformerEncoder`` passes it → ``(B, S, d)``."""
        if attn_mask is not None or is_causal:
            raise ValueError("only a key padding mask is supported")
        attention = self.self_attn
        packed = nn.functional.linear(x, attention.in_proj_weight, attention.in_proj_bias)  # (B, S, 3d)
        query, key, value = packed.unflatten(-1, (3, attention.num_heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        attended = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=attention.dropout if self.training else 0.0,
        )  # (B, heads, S, d / heads)
        return self.dropout1(attention.out_proj(attended.transpose(1, 2).flatten(2)))


class MultiViewGrader(nn.Module):
    """Park et al. multi-view, multimodal grader of one lumbar disc.

    ``forward(slices, tokens)``:

    * ``slices`` ``(B, N, 112, 224)`` float32 — every slice of every view of the disc;
    * ``tokens`` ``(B, N, 3)`` int64 per slice — view id (index in
      :data:`~operators.core.grading_pipeline.MULTIVIEW_VIEWS`: 0 sag T1, 1 sag T2/STIR, 2 axial T2;
      :data:`~operators.core.grading_pipeline.PADDING_VIEW` = 3 marks a missing slice), slice order
      within its view (0 … ``max_slices`` − 1), disc level (0 L1/L2 … 4 L5/S1, RSNA_DISCS order);

    → ``(B, 20)`` logits: 3 severities per RSNA_CONDITIONS entry, then 5 level logits
    (:func:`~operators.core.grading_outputs.condition_slices`, ``RSNA_LEVEL_SLICE``).

    Padding tokens are excluded from attention (key padding mask), so their pixels never reach the
    output; the CLS token is never masked, so a disc with no view at all still gives finite logits
    (those of "no evidence"). Any view may be missing, as may all but one.

    Widths: the encoder runs on every slice (B·N of them: 400 per training batch of 16 discs), so it
    is small: the MONAI 2D ``ResNet`` with one basic block per stage at (16, 32, 64, 128) channels
    behind a stride-4 stem (0.31 M parameters), projected to ``d_model`` = 256-d tokens (Park: a full
    ResNet18 and 512-d, far too slow on 2 CPU cores); the transformer (feed-forward 512) has 1.58 M.
    1.93 M parameters in all. Measured on this project's 2-core CPU: ONNX, 2 threads, 5 discs × 25
    slices: 0.039 s; one training step at batch 16 (bf16 autocast, Adam): 0.41 s.
    """

    def __init__(
        self,
        layers: Sequence[int] = (1, 1, 1, 1),
        widths: Sequence[int] = (16, 32, 64, 128),
        stem_stride: int = 4,
        d_model: int = 256,
        n_layers: int = 3,
        n_heads: int = 2,
        feedforward: int = 512,
        dropout: float = 0.1,
        max_slices: int = max(DISC_VOLUME_SHAPE[0], AXIAL_SLAB_SHAPE[0]),
    ) -> None:
        super().__init__()
        # Stem: a (stem_stride + 1)² convolution with stride ``stem_stride`` and no max-pool, so the
        # first residual stage already runs at 1/4 resolution (28 × 56 by default): the encoder sees
        # B·N slices (400 per training batch), and a full-resolution stem dominated the step time.
        self.encoder = ResNet(
            block="basic", layers=list(layers), block_inplanes=list(widths), spatial_dims=2,
            n_input_channels=1, conv1_t_size=stem_stride + 1, conv1_t_stride=stem_stride, no_max_pool=True,
            feed_forward=False, norm=NORM,
        )
        self.project = nn.Linear(widths[-1], d_model)
        # The embeddings are linear layers on one-hot codes (Park §2.1) written as look-ups.
        self.view = nn.Embedding(PADDING_VIEW + 1, d_model)  # padding has a row so look-ups stay in range
        self.order = nn.Embedding(max_slices, d_model)
        self.level = nn.Embedding(len(RSNA_DISCS), d_model)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        layer = ExportableEncoderLayer(d_model, n_heads, dim_feedforward=feedforward, dropout=dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        # The six linear heads of Park §2.1 (five conditions, level), stacked into one layer.
        self.heads = nn.Linear(d_model, RSNA_OUTPUTS)

    def forward(self, slices: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, count = slices.shape[0], slices.shape[1]
        encoded = self.encoder(slices.flatten(0, 1).unsqueeze(1))  # (B·N, C)
        embedded = self.project(encoded).unflatten(0, (batch, count))  # (B, N, d)
        embedded = embedded + self.view(tokens[..., 0]) + self.order(tokens[..., 1]) + self.level(tokens[..., 2])
        sequence = torch.cat([self.cls.expand(batch, -1, -1), embedded], dim=1)  # (B, 1 + N, d)
        padding = tokens[..., 0] == PADDING_VIEW
        padding = torch.cat([torch.zeros_like(padding[:, :1]), padding], dim=1)  # CLS never masked
        return self.heads(self.transformer(sequence, src_key_padding_mask=padding)[:, 0])


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Class weights inversely proportional to training frequency, ``n / (k · n_c)``.

    Args:
        labels: ``(n,)`` int class indices; entries < 0 (unknown) are skipped.
        n_classes: number of classes of the head.

    Returns:
        ``(n_classes,)`` float32 with ``k`` the number of classes present: every present class
        carries the same total weight ``n / k``, so the mean weight per known label is 1 (a balanced
        set gets all ones); a class absent from ``labels`` gets 0 (it never is a target).
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0], minlength=n_classes).astype(float)
    present = int((counts > 0).sum())
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1.0) / max(present, 1), 0.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def _weighted_head_losses(
    logits: torch.Tensor, heads: Sequence[slice], targets: torch.Tensor, weights: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Class-weighted mean cross-entropy of every head that has a known (≥ 0) target with weight > 0."""
    losses = []
    for index, head in enumerate(heads):
        target = targets[:, index]
        known = target >= 0
        sample_weight = weights[index].to(logits.device)[target.clamp(min=0)] * known
        total = sample_weight.sum()
        if bool(total > 0):
            per_sample = nn.functional.cross_entropy(logits[:, head], target.clamp(min=0), reduction="none")
            losses.append((sample_weight * per_sample).sum() / total)
    return losses


def balanced_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """SpineNetV2 training loss: mean over gradings of the class-balanced cross-entropy.

    Args:
        logits: ``(B, 29)`` :class:`SpineNetGrader` output.
        targets: ``(B, 11)`` int64 class indices per SPINENET_GRADINGS entry (index into its class
            tuple), −1 where the grading is unknown.
        weights: per grading, ``(classes,)`` weights from :func:`balanced_class_weights`.

    Returns:
        Scalar: each head's weighted mean ``Σ w_y · CE / Σ w_y`` over its known targets, averaged over
        the heads with any; 0 (with a gradient path) when no target is known.
    """
    losses = _weighted_head_losses(logits, list(grading_slices().values()), targets, weights)
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def park_loss(
    logits: torch.Tensor, condition_targets: torch.Tensor, level_targets: torch.Tensor, weights: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Park §2.1 loss: 0.8 × mean class-weighted CE over the five conditions + 0.2 × disc-level CE.

    Args:
        logits: ``(B, 20)`` :class:`MultiViewGrader` output.
        condition_targets: ``(B, 5)`` int64 severity index (RSNA_SEVERITIES order) per RSNA_CONDITIONS
            entry, −1 where unknown (a condition with no known target in the batch is left out of the mean).
        level_targets: ``(B,)`` int64 disc index (RSNA_DISCS order).
        weights: per condition, ``(3,)`` weights from :func:`balanced_class_weights`.
    """
    losses = _weighted_head_losses(logits, list(condition_slices().values()), condition_targets, weights)
    condition_loss = torch.stack(losses).mean() if losses else logits.sum() * 0.0
    level_loss = nn.functional.cross_entropy(logits[:, RSNA_LEVEL_SLICE], level_targets)
    return PARK_CONDITION_WEIGHT * condition_loss + PARK_LEVEL_WEIGHT * level_loss
