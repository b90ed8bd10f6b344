"""Pyramid Pooling Module (Zhao et al. 2017, section 3.2) with an exportable adaptive average pooling.

``nn.AdaptiveAvgPool2d`` has no ONNX form when the pooled side is not a multiple of the bin count and the input
size is dynamic. Here the pooling is written as two small matrix products, which export to plain ONNX ops for any
size and give the same numbers as PyTorch's definition: along a side of length L cut into b bins, bin i averages
the half-open range [floor(i * L / b), ceil((i + 1) * L / b)). The rectangle average is separable, so
``pooled = P_h @ x @ P_w^T`` with one averaging matrix per side. All bins are pooled in one pass over ``x``.

The convolution after the module (PSPNet's 3x3 conv, 4096 -> 512 channels) need not see the concatenation
(:meth:`PyramidPoolingModule.convolve`): its half on the upsampled branches is a linear map of b x b grids, so it is
computed on the grids and upsampled after, by shifted interpolation matrices (:func:`upsampling_matrices`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import PooledBranch

__all__ = ["PyramidPoolingModule", "adaptive_avg_pool2d", "pool_pyramid", "upsampling_matrices"]


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


def upsampling_matrices(
    length: int, bins: Sequence[int], offsets: range, *, align_corners: bool, like: Tensor
) -> Tensor:
    """(len(offsets), length, sum(bins)) tensor M of bilinear upsampling along one side, shifted by each of the
    consecutive ``offsets``: ``M[s, i]`` is row ``i + offsets[s]`` of the matrix that upsamples each grid side b in
    ``bins`` to ``length`` as ``F.interpolate(mode="bilinear")`` does (columns: the positions of the grids one after
    another, as in :func:`_averaging_matrix`), and zero where ``i + offsets[s]`` is outside ``[0, length)`` (a
    convolution's zero padding).

    Source position of output p: ``p * (b - 1) / (length - 1)`` with ``align_corners``, else ``(p + 0.5) * b /
    length - 0.5`` clamped to ``[0, b - 1]`` as PyTorch's kernel clamps it; the weight of grid position y is the hat
    ``max(0, 1 - |source - y|)``, which is ``1 - f`` and ``f`` on the two positions around the source. ``length``
    may be a symbolic size during export; built from tensor ops only, in float32 (float64 for float64 ``like``),
    returned in ``like``'s dtype.
    """
    device, dtype = like.device, torch.promote_types(like.dtype, torch.float32)
    size = torch.cat([torch.full((b,), b, device=device) for b in bins]).to(dtype)  # (B,) grid side
    index = torch.cat([torch.arange(b, device=device) for b in bins]).to(dtype)  # (B,) position in grid
    position = torch.arange(length, device=device)  # (L,)
    last = position[-1:]  # (1,) length - 1, a tensor even when length is symbolic
    shifted = position[None, :] + torch.arange(offsets[0], offsets[-1] + 1, device=device)[:, None]  # (S, L)
    inside = (shifted >= 0) & (shifted <= last)
    p = shifted.to(dtype)[..., None]  # (S, L, 1)
    if align_corners:
        source = p * ((size - 1) / last.to(dtype).clamp(min=1))
    else:
        source = ((p + 0.5) * (size / (last + 1).to(dtype)) - 0.5).clamp(min=0)
    source = torch.minimum(source, size - 1)  # (S, L, B)
    weight = (1 - (source - index).abs()).clamp(min=0) * inside[..., None]
    return weight.to(like.dtype)


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

    def grids(self, x: Tensor) -> list[Tensor]:
        """The branches' outputs before upsampling: ``[(N, C // len(bins), b, b) for b in bins]``."""
        return [branch(pooled) for branch, pooled in zip(self.branches, pool_pyramid(x, self.bins))]

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        upsampled = [
            F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners) for y in self.grids(x)
        ]
        return torch.cat([x, *upsampled], dim=1)

    def convolve(self, x: Tensor, conv: nn.Conv2d) -> Tensor:
        """``conv(self(x))`` for ``x`` (N, C, h, w), without the concatenation (N, out_channels, h, w): (N,
        conv.out_channels, h, w), equal up to float rounding. ``conv`` is a stride-1, undilated, ungrouped
        convolution with an odd square kernel padded to keep the size (PSPNet's 3x3 conv; a ValueError otherwise).

        Its weight's first C input channels are a convolution of ``x``. The rest see the branches' grids g upsampled,
        ``A g B^T`` per channel: each kernel tap (u, v) of those channels, a 1x1 map ``W_uv`` of the grid, is summed as
        ``A_u (W_uv g) B_v^T``, where ``A_u``, ``B_v`` are the interpolation matrices shifted by the tap's offset (rows
        beyond the border zero, as the padding is). The grids are laid on the diagonal of one B x B grid (B =
        sum(bins); zero elsewhere, so each 1x1 map sees only its own grid), which makes that one 1x1 convolution and
        two small matrix products. With the paper's sizes, half of the conv's multiply-adds (on 2048 of its 4096
        input channels) and the (N, 4096, h, w) tensor are saved, in the forward pass and in the backward one.
        """
        kernel = conv.kernel_size[0]
        pad = kernel // 2
        if (
            conv.kernel_size != (kernel, kernel)
            or kernel % 2 == 0
            or conv.stride != (1, 1)
            or conv.dilation != (1, 1)
            or conv.groups != 1
            or conv.padding != (pad, pad)
            or conv.in_channels != self.out_channels
        ):
            raise ValueError(
                f"convolve needs a stride-1, undilated, ungrouped conv with an odd square kernel and 'same' padding "
                f"on {self.out_channels} channels, got {conv}"
            )
        channels, height, width = x.shape[1], x.shape[-2], x.shape[-1]
        o, total = conv.out_channels, sum(self.bins)
        out = F.conv2d(x, conv.weight[:, :channels], conv.bias, padding=pad)  # (N, O, h, w)
        diagonal, start = [], 0
        for b, grid in zip(self.bins, self.grids(x)):
            end = total - start - b
            diagonal.append(F.pad(grid, (start, end, start, end)))  # (N, C', B, B), the grid at [start, start + b)
            start += b
        grids = torch.cat(diagonal, dim=1)  # (N, len(bins) * C', B, B)
        tap_maps = conv.weight[:, channels:].permute(2, 3, 0, 1).reshape(kernel * kernel * o, -1, 1, 1)
        q = F.conv2d(grids, tap_maps)  # (N, k * k * O, B, B): every tap's 1x1 map, (u, v, O)
        q = q.reshape(-1, kernel, kernel, o, total, total).permute(0, 1, 3, 4, 2, 5)  # (N, u, O, y, v, x)
        offsets = range(-pad, pad + 1)
        rows = upsampling_matrices(height, self.bins, offsets, align_corners=self.align_corners, like=out)
        columns = upsampling_matrices(width, self.bins, offsets, align_corners=self.align_corners, like=out)
        columns = columns.permute(0, 2, 1).reshape(kernel * total, width)  # ((v, x), w)
        summed = torch.matmul(q.reshape(-1, kernel, o, total, kernel * total), columns)  # (N, u, O, y, w)
        summed = summed.permute(0, 2, 1, 3, 4).reshape(-1, o, kernel * total, width)  # (N, O, (u, y), w)
        row_matrix = rows.permute(1, 0, 2).reshape(height, kernel * total)  # (h, (u, y))
        return out + torch.matmul(row_matrix, summed)
