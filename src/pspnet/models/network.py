"""``SegmentationNetwork``: what every architecture shares: a ResNet backbone, a decode head, the auxiliary FCN head
on layer3 for training, the model card, BatchNorm folding, and the forward contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .card import ModelCard
from .config import ModelConfig, check_model_config
from .fold import fold_batchnorm
from .heads import FCNHead
from .resnet import ResNet

__all__ = ["SegmentationNetwork"]


class SegmentationNetwork(nn.Module):
    """A segmentation network on a ResNet backbone; subclasses build their head (:meth:`_make_head`) and say how it
    reads the backbone's features (:meth:`_decode`).

    ``forward(x)`` takes normalised images ``(N, 3, H, W)`` of any size and batch size.

    - eval mode (or ``aux=False``): returns logits ``(N, num_classes, H, W)``;
    - training mode with ``aux=True``: returns ``(logits, aux_logits)``, both ``(N, num_classes, H, W)``;
      the auxiliary FCN head reads layer3 and is weighted 0.4 in the loss (see :mod:`pspnet.engine.losses`).

    Submodules are ``backbone`` (:class:`~pspnet.models.resnet.ResNet`), ``decode_head`` and ``aux_head`` (None
    without ``aux``), in that order: the optimiser's parameter groups and resumed checkpoints rely on it.
    """

    uses_stem = False  # the head also reads the stem's output (at H/2) as features[0]
    decodes_to_input = False  # the head's logits are already at the input's size

    def __init__(self, config: ModelConfig):
        super().__init__()
        # a ConfigError (a ValueError) naming the field, before any layer is built
        check_model_config(config, type(self).__name__)
        self.config = config
        self.align_corners = config.align_corners
        self.backbone = ResNet(
            depth=config.depth,
            stem=config.stem,
            output_stride=config.output_stride,
            contract_dilation=config.contract_dilation,
        )
        self.decode_head = self._make_head()
        self.aux_head = (
            FCNHead(self.backbone.channels[2], config.num_classes, channels=config.aux_channels, dropout=config.dropout)
            if config.aux
            else None
        )
        # Set by pspnet.load_model from the model file (classes, palette, normalisation, ...), and by training.
        self.card: ModelCard | None = None
        self.inference_only = False  # set by fold_batchnorm: the BatchNorm layers are gone

    def _make_head(self) -> nn.Module:
        """The decode head for ``self.config``, with ``self.backbone`` already built."""
        raise NotImplementedError

    def _decode(self, features: list[Tensor], size: Sequence[int]) -> Tensor:
        """Logits from the backbone's features (``[c0,] c1, c2, c3, c4``) for an input of ``size`` (H, W); at the
        head's resolution, or at ``size`` when :attr:`decodes_to_input`."""
        raise NotImplementedError

    def fold_batchnorm(self) -> SegmentationNetwork:
        """Fold every BatchNorm into its convolution for inference (:func:`pspnet.models.fold.fold_batchnorm`), in
        place, and switch to eval mode; returns the model. It computes the same logits to float rounding, faster,
        and can no longer train or be saved: :meth:`train` refuses. Load the file again to fine-tune."""
        if not self.inference_only:
            fold_batchnorm(self)
            self.inference_only = True
        return self.eval()

    def train(self, mode: bool = True) -> SegmentationNetwork:
        """``nn.Module.train``; refused (RuntimeError) for a model whose BatchNorm was folded for inference."""
        if mode and self.inference_only:
            raise RuntimeError(
                f"this {type(self).__name__}'s BatchNorm was folded for inference; load the model again to train it"
            )
        return super().train(mode)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def meta(self) -> dict[str, Any]:
        """The model card as the plain dict a model file stores (``{}`` without a card); read-only, a copy."""
        return self.card.to_dict() if self.card is not None else {}

    def _upsample(self, logits: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: Tensor, *, upsample: bool = True) -> Tensor | tuple[Tensor, Tensor]:
        """Logits for normalised images ``x`` (N, 3, H, W), at (H, W); with ``upsample=False`` at the head's
        resolution (H/8, W/8 for PSPNet at output stride 8, H/4 for DeepLab v3+, H for U-Net), before the final
        bilinear upsampling: training passes those to :func:`pspnet.engine.losses.loss_sum`, which upsamples inside
        the loss (``align_corners`` as this model) without making the full-size logits."""
        size = x.shape[-2:]
        features = self.backbone(x, with_stem=self.uses_stem)  # [c0,] c1 .. c4; c3 is features[-2]
        logits = self._decode(features, size)
        if upsample and not self.decodes_to_input:
            logits = self._upsample(logits, size)  # (N, K, H, W)
        if self.training and self.aux_head is not None:
            aux = self.aux_head(features[-2])
            return logits, self._upsample(aux, size) if upsample else aux
        return logits
