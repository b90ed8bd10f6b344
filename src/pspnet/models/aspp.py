"""Atrous spatial pyramid pooling (DeepLab v3, Chen et al. 2017), as DeepLab v3+ uses it on a dilated ResNet."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .layers import PooledBranch, conv_bn_relu

__all__ = ["ASPP", "aspp_rates"]


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """The dilation rates of the three 3x3 branches: (6, 12, 18) at output stride 16, doubled at 8 (the paper's
    rule: the rates follow the features' resolution, so they see the same part of the image)."""
    if output_stride not in (8, 16):
        raise ValueError(f"ASPP rates are defined for output stride 8 or 16, got {output_stride!r}")
    return tuple(rate * 16 // output_stride for rate in (6, 12, 18))  # type: ignore[return-value]


class ASPP(nn.Module):
    """``(N, in_channels, h, w)`` -> ``(N, channels, h, w)``.

    Five parallel branches, each conv (no bias) + BN + ReLU to ``channels``: a 1x1 conv, three 3x3 convs dilated by
    ``rates``, and image pooling (the global average, a 1x1 conv, broadcast back over h x w); their concatenation
    (5 x channels) is projected by a 1x1 conv + BN + ReLU. Standard (not depthwise-separable) convolutions.
    """

    def __init__(self, in_channels: int, *, channels: int = 256, rates: Sequence[int] = (12, 24, 36)):
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels, 1)]
            + [conv_bn_relu(in_channels, channels, 3, dilation=rate) for rate in self.rates]
        )
        self.image_pool = PooledBranch(in_channels, channels, what="ASPP image pooling")
        self.project = conv_bn_relu(channels * (len(self.rates) + 2), channels, 1)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        out = [branch(x) for branch in self.branches]
        pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True))  # (N, channels, 1, 1)
        out.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(out, dim=1))
