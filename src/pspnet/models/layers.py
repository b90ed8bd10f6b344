"""The one building block the heads and decoders repeat: convolution (no bias) + BatchNorm + ReLU."""

from __future__ import annotations

from torch import nn

__all__ = ["conv_bn_relu"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, *, dilation: int = 1) -> nn.Sequential:
    """``(N, in_channels, h, w)`` -> ``(N, out_channels, h, w)``: a ``kernel_size`` conv (1 or 3; padded so the size
    is kept, dilated by ``dilation``), BN, ReLU; Kaiming-initialised like the backbone. Foldable for inference
    (:func:`pspnet.models.fold.fold_batchnorm` pairs consecutive Sequential entries)."""
    padding = dilation * (kernel_size // 2)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
