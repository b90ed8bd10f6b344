"""Pyramid Pooling Module (Zhao et al. 2017, section 3.2) with an exportable adaptive average pooling.

``nn.AdaptiveAvgPool2d`` has no ONNX form when the pooled side is not a multiple of the bin count and the input
size is dynamic. Here the pooling is written as two small matrix products, which export to plain ONNX ops for any
size and give the same numbers as PyTorch's definition: along a side of length L cut into b bins, bin i averages
the half-open range [floor(i * L / b), ceil((i + 1) * L / b)). The rectangle average is separable, so
``pooled = P_h @ x @ P_w^T`` with one averaging matrix per side. All bins are pooled in one pass over ``x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import PooledBranch

__all__ = ["PyramidPoolingModule", "adaptive_avg_pool2d", "pool_pyramid"]


def _averaging_matrix(length: int, bins: Sequence[int], like: Tensor) -> Tensor:
    """(sum(bins), length) matrix: row r averages the positions of one bin of one grid.

    ``length`` may be a symbolic size during export; the matrix is built from tensor ops only.
    """
    rows = [torch.arange(b, device=like.device) for b in bins]
    index = torch.cat(rows)  # (B,) bin index inside its grid
    count = torch.cat([torch.full((b,), b, device=like.device, dtype=torch.long) for b in bins])  # (B,) grid size
    start = torch.div(index * length, count, rounding_mode="floor")
    end = torch.div((index + 1) * length + count - 1, count, rounding_mode="floor")
    position = torch.arange(length, device=like.device)  # (L,)
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])  # (B, L)
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def pool_pyramid(x: Tensor, bins: Sequence[int]) -> list[Tensor]:
    """Adaptive average pooling of ``x`` (N, C, H, W) to each ``b x b`` grid in ``bins``: [(N, C, b, b), ...].

    Same values as ``F.adaptive_avg_pool2d(x, b)`` for every b, any H and W (also H < b), exportable to ONNX with
    dynamic H and W.
    """
    height, width = x.shape[-2], x.shape[-1]
    rows = _averaging_matrix(height, bins, x)  # (B, H)
    cols = _averaging_matrix(width, bins, x)  # (B, W)
    pooled = torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))  # (N, C, B, B); diagonal blocks are used
    out, offset = [], 0
    for b in bins:
        out.append(pooled[..., offset : offset + b, offset : offset + b])
        offset += b
    return out


def adaptive_avg_pool2d(x: Tensor, bins: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` for a square output, exportable with dynamic sizes."""
    return pool_pyramid(x, [bins])[0]


class PyramidPoolingModule(nn.Module):
    """Pool to each grid in ``bins``, reduce to ``in_channels // len(bins)`` channels, upsample, concatenate.

    ``forward(x)`` maps ``(N, C, h, w)`` to ``(N, C + len(bins) * (C // len(bins)), h, w)``: with the paper's
    C = 2048 and bins (1, 2, 3, 6), 4096 channels.
    """

    def __init__(self, in_channels: int, *, bins: Sequence[int] = (1, 2, 3, 6), align_corners: bool = True):
        super().__init__()
        if not bins or any(int(b) < 1 for b in bins):
            raise ValueError(f"bins must be a non-empty list of positive integers, got {list(bins)!r}")
        if in_channels % len(bins):
            raise ValueError(f"in_channels ({in_channels}) must be divisible by the number of bins ({len(bins)})")
        self.bins = tuple(int(b) for b in bins)
        self.align_corners = align_corners
        self.branch_channels = in_channels // len(self.bins)
        self.out_channels = in_channels + self.branch_channels * len(self.bins)
        self.branches = nn.ModuleList(PooledBranch(in_channels, self.branch_channels) for _ in self.bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        out = [x]
        for branch, pooled in zip(self.branches, pool_pyramid(x, self.bins)):
            y = branch(pooled)  # (N, C/len(bins), b, b)
            out.append(F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners))
        return torch.cat(out, dim=1)
