"""Folding BatchNorm into the convolution before it, for inference: one layer fewer to run per pair, same output.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``; after
a convolution it equals the convolution with its weights scaled by ``s = gamma / sqrt(var + eps)`` per output
channel and the bias ``(b - mean) * s + beta``. The new weights are computed in float64 and stored in the
convolution's dtype, so the folded network differs from the original by float rounding only.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["batchnorm_pairs", "fold_batchnorm"]


def batchnorm_pairs(model: nn.Module) -> list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d]]:
    """``(parent, bn_name, conv, bn)`` for every BatchNorm2d of ``model`` that directly follows a Conv2d: siblings
    named ``convX`` / ``bnX`` (``conv`` / ``bn``, ``conv1`` / ``bn1``), or consecutive entries of an
    ``nn.Sequential``. A TypeError names a BatchNorm with no such convolution, a ValueError one of another width."""
    pairs = []
    for parent_name, parent in model.named_modules():
        children = dict(parent.named_children())
        for name, module in children.items():
            if not isinstance(module, nn.BatchNorm2d):
                continue
            if isinstance(parent, nn.Sequential):
                index = list(children).index(name)
                conv = parent[index - 1] if index > 0 else None
            else:
                conv = children.get("conv" + name.removeprefix("bn")) if name.startswith("bn") else None
            where = f"{parent_name}.{name}" if parent_name else name
            if not isinstance(conv, nn.Conv2d):
                raise TypeError(f"{where}: a BatchNorm with no convolution right before it; cannot fold it")
            if conv.out_channels != module.num_features:
                raise ValueError(f"{where}: {module.num_features} channels after a {conv.out_channels}-channel conv")
            pairs.append((parent, name, conv, module))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d of ``model`` into the convolution before it (:func:`batchnorm_pairs`) and replace it
    by ``nn.Identity``, in place; returns how many were folded. The model computes what it computed in eval mode;
    it can no longer train (its BatchNorm statistics are gone)."""
    pairs = batchnorm_pairs(model)
    for parent, name, conv, bn in pairs:
        dtype = conv.weight.dtype
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
        folded_bias = ((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(folded_bias, requires_grad=conv.weight.requires_grad)
        else:
            conv.bias.copy_(folded_bias)
        setattr(parent, name, nn.Identity())
    return len(pairs)
