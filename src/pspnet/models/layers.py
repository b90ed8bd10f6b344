"""The building blocks the heads and decoders repeat: convolution (no bias) + BatchNorm + ReLU, on full feature
maps (:func:`conv_bn_relu`) or on pooled grids (:class:`PooledBranch`)."""

from __future__ import annotations

import warnings

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PooledBranch", "conv_bn_relu"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, *, dilation: int = 1) -> nn.Sequential:
    """``(N, in_channels, h, w)`` -> ``(N, out_channels, h, w)``: a ``kernel_size`` conv (1 or 3; padded so the size
    is kept, dilated by ``dilation``), BN, ReLU; Kaiming-initialised like the backbone. Foldable for inference
    (:func:`pspnet.models.fold.fold_batchnorm` pairs consecutive Sequential entries)."""
    padding = dilation * (kernel_size // 2)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class PooledBranch(nn.Module):
    """1x1 conv (no bias) -> BN -> ReLU on a pooled grid ``(N, in_channels, b, b)`` -> ``(N, out_channels, b, b)``:
    a pyramid pooling branch, or ASPP's image pooling (b = 1).

    A training batch of one image pooled to 1x1 gives BatchNorm a single value per channel, from which it cannot
    compute batch statistics (PyTorch raises); such a batch is normalised with the running statistics instead,
    with one warning naming ``what`` (SyncBatchNorm, whose batch spans processes, is left alone).
    """

    def __init__(self, in_channels: int, out_channels: int, *, what: str = "pyramid pooling's 1x1 branch"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.what = what
        self._warned = False

    def forward(self, pooled: Tensor) -> Tensor:
        y = self.conv(pooled)  # (N, C', b, b)
        if self.training and y.shape[0] * y.shape[2] * y.shape[3] == 1 and not isinstance(self.bn, nn.SyncBatchNorm):
            if not self._warned:
                warnings.warn(
                    f"{self.what}: a training batch of one image leaves its BatchNorm a single value per channel; "
                    "it uses its running statistics for such batches (warned once).",
                    stacklevel=2,
                )
                self._warned = True
            bn = self.bn
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            y = self.bn(y)
        return self.relu(y)
