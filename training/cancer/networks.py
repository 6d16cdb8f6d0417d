"""The Spinal Context Transformer (Windsor et al. §3) for cancer findings, and its losses.

:class:`SpinalContextTransformer` = :class:`VertebraEncoder` (SCT Fig. 1b: a 2D ResNet on every
sagittal slice of a vertebral-body volume, attention pooling over slices) + a transformer over one
token per (vertebra, sequence) of the whole study with level and sequence embeddings + attention
pooling over each vertebra's sequences + one logit per finding (metastasis, fracture, cord
compression).

Losses (SCT §4): :func:`vertebra_loss`, binary cross-entropy over the known labels (``unknown``
labels carry no loss), class-balanced per finding; :func:`study_loss`, the multiple-instance loss —
the study prediction is the maximum over its vertebrae and is trained against the study-level label
("widespread metastatic disease" names no level, but says that some vertebra has it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.networks.nets import ResNet
from torch import nn

from operators.core.cancer_pipeline import MISSING_SEQUENCE
from operators.core.gradings import CANCER_FINDINGS
from operators.core.report import ALL_LEVELS
from training.grading.networks import NORM, ExportableEncoderLayer

#: Masked positions get this added score rather than −inf, so a vertebra whose every slot is
#: missing (batch padding) pools to finite values instead of NaN.
_MASKED = -1.0e4


class AttentionPool(nn.Module):
    """Softmax attention pooling over one axis: ``(…, N, C)`` + optional mask ``(…, N)`` → ``(…, C)``.

    A linear score per element (SCT: "feature vectors for each slice are then aggregated using an
    attention mechanism"); masked elements (``mask`` True) get no weight.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Linear(channels, 1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.score(features).squeeze(-1)  # (…, N)
        if mask is not None:
            scores = scores + mask.to(scores.dtype) * _MASKED
        weights = torch.softmax(scores, dim=-1).unsqueeze(-1)
        return (weights * features).sum(dim=-2)


class VertebraEncoder(nn.Module):
    """SCT visual encoder: ``(N, S, H, W)`` body volumes → ``(N, C)`` embeddings.

    Every slice goes through the same MONAI 2D ``ResNet`` (one basic block per stage at
    ``widths`` channels behind a stride-4 stem, as the multi-view grader's encoder; SCT uses a
    ResNet18, far too slow to train on 2 CPU cores over ~650 slices per whole-spine study), then
    :class:`AttentionPool` over the ``S`` slices, so slice count and thickness are free.
    """

    def __init__(self, layers: Sequence[int] = (1, 1, 1, 1), widths: Sequence[int] = (16, 32, 64, 128),
                 stem_stride: int = 4) -> None:
        super().__init__()
        self.resnet = ResNet(
            block="basic", layers=list(layers), block_inplanes=list(widths), spatial_dims=2,
            n_input_channels=1, conv1_t_size=stem_stride + 1, conv1_t_stride=stem_stride, no_max_pool=True,
            feed_forward=False, norm=NORM,
        )
        self.pool = AttentionPool(widths[-1])
        self.channels = widths[-1]

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        count, slices = volumes.shape[0], volumes.shape[1]
        features = self.resnet(volumes.flatten(0, 1).unsqueeze(1))  # (N·S, C)
        return self.pool(features.unflatten(0, (count, slices)))


class SpinalContextTransformer(nn.Module):
    """SCT over one study (or a padded batch of studies).

    ``forward(volumes, sequences, levels)``:

    * ``volumes`` ``(B, V, Q, S, 112, 112)`` float32 — body volume of vertebra ``v`` in sequence slot
      ``q`` (:data:`~operators.core.volume_extraction.VERTEBRA_VOLUME_SHAPE` per volume; zeros in
      missing slots);
    * ``sequences`` ``(B, V, Q)`` int64 — sequence id per slot (index in
      :data:`~operators.core.cancer_pipeline.CANCER_SEQUENCES`; ``MISSING_SEQUENCE`` = 3 for an empty
      slot, a vertebra with every slot empty is batch padding);
    * ``levels`` ``(B, V)`` int64 — level index in :data:`~operators.core.report.ALL_LEVELS`;

    → ``(B, V, 3)`` logits per :data:`~operators.core.gradings.CANCER_FINDINGS` entry.

    The encoder runs on every slot (empty ones included: the core only makes slots for sequences
    the study has, so they are rare); tokens = encoder embedding projected to ``d_model`` + sequence
    embedding + level embedding (SCT: linear layers on one-hot codes, written as look-ups); empty
    slots are masked out of attention (key padding) and out of the pooling over sequences. ``n_layers``
    = 2 as SCT's "lightweight 2-layer transformer". 0.53 M parameters with the defaults.
    """

    def __init__(self, d_model: int = 128, n_layers: int = 2, n_heads: int = 4, feedforward: int = 256,
                 dropout: float = 0.1, encoder: VertebraEncoder | None = None) -> None:
        super().__init__()
        self.encoder = encoder or VertebraEncoder()
        self.project = nn.Linear(self.encoder.channels, d_model)
        self.sequence = nn.Embedding(MISSING_SEQUENCE + 1, d_model)  # the missing id has a row so look-ups stay in range
        self.level = nn.Embedding(len(ALL_LEVELS), d_model)
        layer = ExportableEncoderLayer(d_model, n_heads, dim_feedforward=feedforward, dropout=dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.pool = AttentionPool(d_model)
        self.heads = nn.Linear(d_model, len(CANCER_FINDINGS))

    def forward(self, volumes: torch.Tensor, sequences: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        batch, vertebrae, slots = sequences.shape
        embedded = self.project(self.encoder(volumes.flatten(0, 2)))  # (B·V·Q, d)
        tokens = embedded.unflatten(0, (batch, vertebrae, slots))
        tokens = tokens + self.sequence(sequences) + self.level(levels).unsqueeze(2)  # (B, V, Q, d)
        missing = sequences == MISSING_SEQUENCE  # (B, V, Q); every study has at least one real slot
        context = self.transformer(tokens.flatten(1, 2), src_key_padding_mask=missing.flatten(1))
        pooled = self.pool(context.unflatten(1, (vertebrae, slots)), missing)  # (B, V, d)
        return self.heads(pooled)


def positive_weights(labels: np.ndarray) -> torch.Tensor:
    """``(3,)`` BCE positive-class weight per finding, ``negatives / positives`` over known labels
    (``labels`` ``(n, 3)``, −1 unknown), so both classes carry the same total weight; 1 where a
    finding has no positive."""
    labels = np.asarray(labels)
    positives = (labels == 1).sum(axis=0).astype(float)
    negatives = (labels == 0).sum(axis=0).astype(float)
    return torch.as_tensor(np.where(positives > 0, negatives / np.maximum(positives, 1.0), 1.0), dtype=torch.float32)


def vertebra_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Mean class-balanced BCE over known vertebra labels.

    Args:
        logits: ``(B, V, 3)`` network output.
        labels: ``(B, V, 3)`` int64: 1 positive, 0 negative, −1 unknown (or padding): no loss.
        pos_weight: ``(3,)`` from :func:`positive_weights`.
    """
    known = labels >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    losses = nn.functional.binary_cross_entropy_with_logits(
        logits, labels.clamp(min=0).to(logits.dtype), pos_weight=pos_weight.to(logits.device), reduction="none")
    weights = torch.where(labels == 1, pos_weight.to(logits.device).expand_as(logits), torch.ones_like(logits)) * known
    return (losses * known).sum() / weights.sum()


def study_loss(logits: torch.Tensor, present: torch.Tensor, study_labels: torch.Tensor) -> torch.Tensor:
    """Multiple-instance loss (SCT §4): BCE of the maximum vertebra logit per study and finding
    against the study label.

    Args:
        logits: ``(B, V, 3)``.
        present: ``(B, V)`` bool, False for batch padding (not part of the study's bag).
        study_labels: ``(B, 3)`` int64: 1 some vertebra has it, 0 none has, −1 unknown.
    """
    known = study_labels >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    bag = logits.masked_fill(~present.unsqueeze(-1), _MASKED).amax(dim=1)  # (B, 3)
    losses = nn.functional.binary_cross_entropy_with_logits(bag, study_labels.clamp(min=0).to(bag.dtype), reduction="none")
    return (losses * known).sum() / known.sum()
