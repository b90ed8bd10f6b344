"""PSPNet = dilated ResNet + pyramid pooling head (+ auxiliary FCN head in training); the one MODELS table."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig, check_model_config
from .heads import FCNHead, PSPHead
from .resnet import ResNet

__all__ = ["MODELS", "PSPNet", "build_model", "pspnet"]


class PSPNet(nn.Module):
    """Pyramid Scene Parsing Network (Zhao et al., CVPR 2017).

    ``forward(x)`` takes normalised images ``(N, 3, H, W)`` of any size and batch size.

    - eval mode (or ``aux=False``): returns logits ``(N, num_classes, H, W)``;
    - training mode with ``aux=True``: returns ``(logits, aux_logits)``, both ``(N, num_classes, H, W)``;
      the auxiliary head reads layer3 and is weighted 0.4 in the loss (see :mod:`pspnet.engine.losses`).

    The arguments are the fields of :class:`pspnet.config.ModelConfig`; the defaults are the official PSPNet50.
    ``align_corners=True`` is the official code's bilinear upsampling; mmsegmentation uses False.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        depth: int = 50,
        stem: str = "deep",
        output_stride: int = 8,
        contract_dilation: bool = False,
        bins: Sequence[int] = (1, 2, 3, 6),
        head_channels: int = 512,
        aux: bool = True,
        aux_channels: int = 256,
        dropout: float = 0.1,
        align_corners: bool = True,
        ppm: bool = True,
    ):
        super().__init__()
        self.config = ModelConfig(
            num_classes=num_classes,
            depth=depth,
            stem=stem,
            output_stride=output_stride,
            contract_dilation=contract_dilation,
            bins=tuple(bins),
            head_channels=head_channels,
            aux=aux,
            aux_channels=aux_channels,
            dropout=dropout,
            align_corners=align_corners,
            ppm=ppm,
        )
        check_model_config(self.config, "PSPNet")  # a ConfigError (a ValueError) naming the field, before any layer
        self.align_corners = align_corners
        self.backbone = ResNet(depth=depth, stem=stem, output_stride=output_stride, contract_dilation=contract_dilation)
        channels = self.backbone.channels
        self.decode_head = PSPHead(
            channels[3],
            num_classes,
            bins=bins,
            channels=head_channels,
            dropout=dropout,
            align_corners=align_corners,
            ppm=ppm,
        )
        self.aux_head = FCNHead(channels[2], num_classes, channels=aux_channels, dropout=dropout) if aux else None
        # Filled by pspnet.load_model from the checkpoint's metadata (classes, palette, normalisation, ...).
        self.meta: dict[str, Any] = {}

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def _upsample(self, logits: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        size = x.shape[-2:]
        _c1, _c2, c3, c4 = self.backbone(x)  # c3: (N, 1024, H/8, W/8), c4: (N, 2048, H/8, W/8) for ResNet-50 OS 8
        logits = self._upsample(self.decode_head(c4), size)  # (N, K, H, W)
        if self.training and self.aux_head is not None:
            return logits, self._upsample(self.aux_head(c3), size)
        return logits


def build_model(config: ModelConfig) -> PSPNet:
    """Build a randomly initialised PSPNet from its configuration."""
    return PSPNet(**dataclasses.asdict(config))


def pspnet(
    *,
    depth: int,
    num_classes: int,
    stem: str = "deep",
    output_stride: int = 8,
    aux: bool = True,
    head_channels: int = 512,
    aux_channels: int = 256,
) -> PSPNet:
    """Official-style PSPNet of the given depth (deep stem, uncontracted dilation, align_corners=True)."""
    return PSPNet(
        num_classes=num_classes,
        depth=depth,
        stem=stem,
        output_stride=output_stride,
        aux=aux,
        head_channels=head_channels,
        aux_channels=aux_channels,
    )


# The one table of model names. Each entry takes keyword arguments (num_classes=..., output_stride=..., ...).
MODELS: dict[str, Callable[..., PSPNet]] = {
    "pspnet18": partial(pspnet, depth=18),
    "pspnet34": partial(pspnet, depth=34),
    "pspnet50": partial(pspnet, depth=50),
    "pspnet101": partial(pspnet, depth=101),
    "pspnet152": partial(pspnet, depth=152),
}
