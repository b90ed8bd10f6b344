"""Decoders that bring back resolution from earlier backbone stages: DeepLab v3+'s stride-4 decoder and U-Net's
chain of upsampling blocks with skip connections."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import UNET_BLOCKS
from .layers import conv_bn_relu

__all__ = ["REDUCED_CHANNELS", "SkipDecoder", "UNetDecoder"]

REDUCED_CHANNELS = 48  # DeepLab v3+: the stride-4 features are reduced to 48 channels before the concatenation


class SkipDecoder(nn.Module):
    """DeepLab v3+'s decoder: ``(high (N, high_channels, h, w), low (N, low_channels, H/4, W/4))`` -> logits
    ``(N, num_classes, H/4, W/4)``.

    ``low`` (layer1) goes through a 1x1 conv + BN + ReLU to 48 channels; ``high`` is upsampled bilinearly to its
    size; the concatenation goes through two 3x3 conv + BN + ReLU of ``channels``, dropout and a 1x1 classifier.
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        num_classes: int,
        *,
        channels: int,
        dropout: float = 0.1,
        align_corners: bool = True,
    ):
        super().__init__()
        self.align_corners = align_corners
        self.reduce = conv_bn_relu(low_channels, REDUCED_CHANNELS, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(high_channels + REDUCED_CHANNELS, channels, 3), conv_bn_relu(channels, channels, 3)
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return self.classifier(self.dropout(self.fuse(torch.cat([high, self.reduce(low)], dim=1))))


class UNetDecoder(nn.Module):
    """U-Net's decoder on a ResNet encoder: ``[c0 (H/2), c1 (H/4), c2 (H/8), c3 (H/16), c4 (H/32)]`` -> logits
    ``(N, num_classes, H, W)``.

    Five blocks, each: bilinear upsampling to the next skip's size (the input's size for the last block, which has
    no skip), concatenation with the skip features, two 3x3 conv + BN + ReLU. Block i has ``channels // 2**i``
    channels (256-128-64-32-16 for 256). Then dropout and a 1x1 classifier at full resolution.
    """

    def __init__(
        self,
        skip_channels: Sequence[int],
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 256,
        dropout: float = 0.1,
        align_corners: bool = True,
    ):
        super().__init__()
        if len(skip_channels) != UNET_BLOCKS - 1:
            raise ValueError(f"expected {UNET_BLOCKS - 1} skip widths (c0..c3), got {list(skip_channels)}")
        self.align_corners = align_corners
        widths = [channels // 2**i for i in range(UNET_BLOCKS)]
        skips = [*reversed(skip_channels), 0]  # c3, c2, c1, c0, none
        blocks = []
        previous = in_channels
        for width, skip in zip(widths, skips):
            blocks.append(nn.Sequential(conv_bn_relu(previous + skip, width, 3), conv_bn_relu(width, width, 3)))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        c0, c1, c2, c3, x = features
        for block, skip in zip(self.blocks, (c3, c2, c1, c0, None)):
            target = skip.shape[-2:] if skip is not None else size
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=self.align_corners)
            x = block(torch.cat([x, skip], dim=1) if skip is not None else x)
        return self.classifier(self.dropout(x))
