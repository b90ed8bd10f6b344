"""An independent reference forward of the official PSPNet network (Zhao et al., authors' PyTorch code).

The network is written from plain ``torch.nn.functional`` calls and driven by a flat dict of tensors that uses the
official checkpoint's key names (``layer0.0.weight``, ``layer3.5.conv2.weight``, ``ppm.features.2.1.weight``,
``cls.4.bias`` ...). Nothing here imports :mod:`pspnet`: the point is to check the package against a second,
separately written implementation of the same published architecture.

Architecture (eval mode, output stride 8):

* ``layer0``: deep stem, three 3x3 conv -> BN -> ReLU (the first with stride 2), then a 3x3/2 max pool.
* ``layer1..4``: ResNet bottlenecks (stride on ``conv2``). ``layer2`` downsamples once; every ``conv2`` of
  ``layer3`` has dilation 2 and every ``conv2`` of ``layer4`` dilation 4, both with stride 1 throughout (downsample
  convs included).
* ``ppm``: bins 1, 2, 3, 6; adaptive average pool -> 1x1 conv -> BN -> ReLU -> bilinear (align_corners=True) back
  to the feature size, concatenated after the backbone features.
* ``cls``: 3x3 conv -> BN -> ReLU -> (dropout) -> 1x1 conv with bias, then bilinear (align_corners=True) up to the
  input size. The auxiliary head ``aux`` is used in training only and is ignored here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BN_EPS", "PPM_BINS", "load_key_file", "official_forward", "official_state_dict"]

BN_EPS = 1e-5
PPM_BINS = (1, 2, 3, 6)
# (stride of the first block, dilation of every block's conv2) for layer1..layer4 at output stride 8.
LAYER_SETTINGS = {1: (1, 1), 2: (2, 1), 3: (1, 2), 4: (1, 4)}

_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def load_key_file(key_file: Path) -> list[tuple[str, tuple[int, ...]]]:
    """Return the ``(name, shape)`` pairs of a fixture key file (``{"keys": [[name, shape], ...], ...}``)."""
    data = json.loads(Path(key_file).read_text())
    return [(str(name), tuple(int(s) for s in shape)) for name, shape in data["keys"]]


def _is_bn(name: str, shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether ``name`` belongs to a BatchNorm module (its module also holds a ``running_var`` buffer)."""
    module = name.rsplit(".", 1)[0]
    return f"{module}.running_var" in shapes


def official_state_dict(key_file: Path, seed: int, prefix: str = "") -> dict[str, Tensor]:
    """Random float32 tensors for every key and shape of ``key_file``, drawn from a generator seeded with ``seed``.

    Scales keep the activations finite and of order one through 50/101 layers: conv weights are
    ``N(0, 1/fan_in)``, BN weights ``U(0.5, 1.0)``, BN biases and running means ``N(0, 0.1^2)``, running variances
    ``U(0.5, 1.5)``; the last BN of each bottleneck (``bn3``) is scaled down by 4 so that the residual stream does
    not blow up over the blocks. ``num_batches_tracked`` are int64 zero-dimensional zeros. Keys are emitted in the
    file's order with ``prefix`` prepended.
    """
    pairs = load_key_file(key_file)
    shapes = dict(pairs)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for name, shape in pairs:
        suffix = name.rsplit(".", 1)[1]
        if _is_bn(name, shapes):
            if suffix == "num_batches_tracked":
                t = torch.zeros((), dtype=torch.int64)
            elif suffix == "weight":
                t = torch.empty(shape).uniform_(0.5, 1.0, generator=gen)
                if ".bn3." in name:
                    t = t / 4
            elif suffix == "running_var":
                t = torch.empty(shape).uniform_(0.5, 1.5, generator=gen)
            elif suffix in ("bias", "running_mean"):
                t = torch.randn(shape, generator=gen) * 0.1
            else:  # pragma: no cover - fixture files hold only the five BN entries
                raise ValueError(f"unexpected BatchNorm entry {name!r}")
        elif suffix == "weight" and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            t = torch.randn(shape, generator=gen) * math.sqrt(1.0 / fan_in)
        elif suffix == "bias" and len(shape) == 1:
            t = torch.randn(shape, generator=gen) * 0.1
        else:
            raise ValueError(f"unexpected key {name!r} with shape {shape}")
        out[prefix + name] = t
    return out


def _bn(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    """Eval-mode BatchNorm of module ``name`` (running statistics, eps 1e-5)."""
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd[f"{name}.weight"],
        sd[f"{name}.bias"],
        training=False,
        eps=BN_EPS,
    )


def _conv(
    sd: Mapping[str, Tensor], name: str, x: Tensor, *, stride: int = 1, padding: int = 0, dilation: int = 1
) -> Tensor:
    """Convolution with the weight (and bias, if the checkpoint has one) of module ``name``."""
    return F.conv2d(
        x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride=stride, padding=padding, dilation=dilation
    )


def _bottleneck(sd: Mapping[str, Tensor], name: str, x: Tensor, *, stride: int, dilation: int) -> Tensor:
    """One ResNet bottleneck ``name`` (e.g. ``layer3.4``): 1x1 -> 3x3 (stride, dilation) -> 1x1, plus residual."""
    out = F.relu(_bn(sd, f"{name}.bn1", _conv(sd, f"{name}.conv1", x)))
    out = _conv(sd, f"{name}.conv2", out, stride=stride, padding=dilation, dilation=dilation)
    out = F.relu(_bn(sd, f"{name}.bn2", out))
    out = _bn(sd, f"{name}.bn3", _conv(sd, f"{name}.conv3", out))
    if f"{name}.downsample.0.weight" in sd:
        identity = _bn(sd, f"{name}.downsample.1", _conv(sd, f"{name}.downsample.0", x, stride=stride))
    else:
        identity = x
    return F.relu(out + identity)


def _num_blocks(sd: Mapping[str, Tensor], layer: int) -> int:
    """Number of bottlenecks in ``layer{layer}``, read off the keys."""
    pattern = re.compile(rf"^layer{layer}\.(\d+)\.conv1\.weight$")
    indices = [int(m.group(1)) for k in sd if (m := pattern.match(k))]
    if not indices:
        raise KeyError(f"no blocks for layer{layer} in the state dict")
    return max(indices) + 1


def official_backbone(sd: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Deep-stem dilated ResNet (output stride 8); returns the ``layer4`` features (2048 channels)."""
    for conv, bn, stride in (("layer0.0", "layer0.1", 2), ("layer0.3", "layer0.4", 1), ("layer0.6", "layer0.7", 1)):
        x = F.relu(_bn(sd, bn, _conv(sd, conv, x, stride=stride, padding=1)))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for layer, (first_stride, dilation) in LAYER_SETTINGS.items():
        for i in range(_num_blocks(sd, layer)):
            x = _bottleneck(sd, f"layer{layer}.{i}", x, stride=first_stride if i == 0 else 1, dilation=dilation)
    return x


def official_ppm(sd: Mapping[str, Tensor], x: Tensor, bins: tuple[int, ...] = PPM_BINS) -> Tensor:
    """Pyramid pooling: ``[x, branch(bin) for bin in bins]`` concatenated on channels."""
    size = x.shape[-2:]
    outs = [x]
    for k, bin_size in enumerate(bins):
        y = F.adaptive_avg_pool2d(x, bin_size)
        y = F.relu(_bn(sd, f"ppm.features.{k}.2", _conv(sd, f"ppm.features.{k}.1", y)))
        outs.append(F.interpolate(y, size=size, mode="bilinear", align_corners=True))
    return torch.cat(outs, dim=1)


def official_forward(sd: Mapping[str, Tensor], x: Tensor, prefix: str = "") -> Tensor:
    """Eval-mode forward of the official PSPNet driven by ``sd`` (official key names, optionally ``prefix``-ed).

    ``x`` is a normalised ``(N, 3, H, W)`` batch; returns the logits ``(N, classes, H, W)``. The auxiliary head is
    not evaluated.
    """
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    h, w = x.shape[-2:]
    feats = official_ppm(sd, official_backbone(sd, x))
    y = F.relu(_bn(sd, "cls.1", _conv(sd, "cls.0", feats, padding=1)))
    y = _conv(sd, "cls.4", y)  # the dropout at cls.3 is the identity in eval mode
    return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True)
