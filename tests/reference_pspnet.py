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

The mmsegmentation variant (``pspnet_r50-d8`` and friends, backbone ``ResNetV1c``) is the same network with two
switches and another key layout; :func:`mmseg_forward` runs it by renaming its keys to the official ones
(:func:`mmseg_to_official`) and calling :func:`official_forward` with

* ``contract_dilation=True``: the first block of ``layer3`` uses dilation 1 and the first block of ``layer4``
  dilation 2 in ``conv2`` (half the stage's dilation); the other blocks keep 2 and 4;
* ``align_corners=False`` in both the pyramid upsampling and the final upsampling.

Its stem is 32-32-64 channels instead of 64-64-128 (read off the weights, nothing to switch).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BN_EPS",
    "PPM_BINS",
    "load_key_file",
    "mmseg_forward",
    "mmseg_keys",
    "mmseg_state_dict",
    "mmseg_to_official",
    "official_forward",
    "official_state_dict",
]

BN_EPS = 1e-5
PPM_BINS = (1, 2, 3, 6)
# (stride of the first block, dilation of every block's conv2) for layer1..layer4 at output stride 8.
LAYER_SETTINGS = {1: (1, 1), 2: (2, 1), 3: (1, 2), 4: (1, 4)}
# Bottlenecks per stage of the ResNet depths used here.
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

V = TypeVar("V")

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
    return _random_state_dict(load_key_file(key_file), seed, prefix)


def _random_state_dict(pairs: list[tuple[str, tuple[int, ...]]], seed: int, prefix: str = "") -> dict[str, Tensor]:
    """The tensors of :func:`official_state_dict` for explicit ``(name, shape)`` pairs (same scales, same order)."""
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
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride=stride, padding=padding, dilation=dilation)


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


def _first_block_dilation(dilation: int, contract_dilation: bool) -> int:
    """Dilation of the first block's ``conv2`` in a stage: halved when contracted (mmseg), else the stage's."""
    return dilation // 2 if contract_dilation and dilation > 1 else dilation


def _num_blocks(sd: Mapping[str, Tensor], layer: int) -> int:
    """Number of bottlenecks in ``layer{layer}``, read off the keys."""
    pattern = re.compile(rf"^layer{layer}\.(\d+)\.conv1\.weight$")
    indices = [int(m.group(1)) for k in sd if (m := pattern.match(k))]
    if not indices:
        raise KeyError(f"no blocks for layer{layer} in the state dict")
    return max(indices) + 1


def official_backbone(sd: Mapping[str, Tensor], x: Tensor, *, contract_dilation: bool = False) -> Tensor:
    """Deep-stem dilated ResNet (output stride 8); returns the ``layer4`` features (2048 channels).

    With ``contract_dilation`` the first block of a dilated stage uses half the stage's dilation (mmseg).
    """
    for conv, bn, stride in (("layer0.0", "layer0.1", 2), ("layer0.3", "layer0.4", 1), ("layer0.6", "layer0.7", 1)):
        x = F.relu(_bn(sd, bn, _conv(sd, conv, x, stride=stride, padding=1)))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for layer, (first_stride, dilation) in LAYER_SETTINGS.items():
        first_dilation = _first_block_dilation(dilation, contract_dilation)
        for i in range(_num_blocks(sd, layer)):
            if i == 0:
                x = _bottleneck(sd, f"layer{layer}.0", x, stride=first_stride, dilation=first_dilation)
            else:
                x = _bottleneck(sd, f"layer{layer}.{i}", x, stride=1, dilation=dilation)
    return x


def official_ppm(
    sd: Mapping[str, Tensor], x: Tensor, bins: tuple[int, ...] = PPM_BINS, *, align_corners: bool = True
) -> Tensor:
    """Pyramid pooling: ``[x, branch(bin) for bin in bins]`` concatenated on channels."""
    size = x.shape[-2:]
    outs = [x]
    for k, bin_size in enumerate(bins):
        y = F.adaptive_avg_pool2d(x, bin_size)
        y = F.relu(_bn(sd, f"ppm.features.{k}.2", _conv(sd, f"ppm.features.{k}.1", y)))
        outs.append(F.interpolate(y, size=size, mode="bilinear", align_corners=align_corners))
    return torch.cat(outs, dim=1)


def official_forward(
    sd: Mapping[str, Tensor],
    x: Tensor,
    prefix: str = "",
    *,
    contract_dilation: bool = False,
    align_corners: bool = True,
) -> Tensor:
    """Eval-mode forward of the official PSPNet driven by ``sd`` (official key names, optionally ``prefix``-ed).

    ``x`` is a normalised ``(N, 3, H, W)`` batch; returns the logits ``(N, classes, H, W)``. The auxiliary head is
    not evaluated. The defaults are the official network; ``contract_dilation=True, align_corners=False`` is the
    mmsegmentation one (see :func:`mmseg_forward`).
    """
    if prefix:
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    h, w = x.shape[-2:]
    feats = official_ppm(sd, official_backbone(sd, x, contract_dilation=contract_dilation), align_corners=align_corners)
    y = F.relu(_bn(sd, "cls.1", _conv(sd, "cls.0", feats, padding=1)))
    y = _conv(sd, "cls.4", y)  # the dropout at cls.3 is the identity in eval mode
    return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=align_corners)


# --- mmsegmentation layout -------------------------------------------------------------------------------------

# (mmseg key pattern, official replacement); the first match wins, and every key must match one.
MMSEG_TO_OFFICIAL = [
    (r"^backbone\.stem\.", "layer0."),
    (r"^backbone\.(layer[1-4])\.", r"\1."),
    (r"^decode_head\.psp_modules\.(\d+)\.1\.conv\.", r"ppm.features.\1.1."),
    (r"^decode_head\.psp_modules\.(\d+)\.1\.bn\.", r"ppm.features.\1.2."),
    (r"^decode_head\.bottleneck\.conv\.", "cls.0."),
    (r"^decode_head\.bottleneck\.bn\.", "cls.1."),
    (r"^decode_head\.conv_seg\.", "cls.4."),
    (r"^auxiliary_head\.convs\.0\.conv\.", "aux.0."),
    (r"^auxiliary_head\.convs\.0\.bn\.", "aux.1."),
    (r"^auxiliary_head\.conv_seg\.", "aux.4."),
]


def mmseg_to_official(sd: Mapping[str, V]) -> dict[str, V]:
    """Rename an mmseg PSPNet state dict (or any dict keyed like one) to the official key names."""
    out: dict[str, V] = {}
    for key, value in sd.items():
        for pattern, replacement in MMSEG_TO_OFFICIAL:
            if re.match(pattern, key):
                out[re.sub(pattern, replacement, key, count=1)] = value
                break
        else:
            raise KeyError(f"unexpected mmseg key {key!r}")
    return out


def mmseg_forward(sd: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Eval-mode forward of mmsegmentation's PSPNet (ResNetV1c-D8) driven by ``sd`` (mmseg key names)."""
    return official_forward(mmseg_to_official(sd), x, contract_dilation=True, align_corners=False)


def _conv_keys(name: str, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.weight", shape)]


def _bn_keys(name: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.{s}", () if s == "num_batches_tracked" else (channels,)) for s in _BN_SUFFIXES]


def mmseg_keys(depth: int = 50, num_classes: int = 19) -> list[tuple[str, tuple[int, ...]]]:
    """The ``(name, shape)`` pairs of an mmseg PSPNet R-``depth``-D8 checkpoint with its auxiliary FCN head.

    Ordered as mmseg's ``state_dict()``: backbone, then decode head (``conv_seg`` first, as ``BaseDecodeHead``
    creates it before the subclass's modules), then auxiliary head.
    """
    pairs: list[tuple[str, tuple[int, ...]]] = []
    for i, (cin, cout) in enumerate(((3, 32), (32, 32), (32, 64))):
        pairs += _conv_keys(f"backbone.stem.{3 * i}", (cout, cin, 3, 3)) + _bn_keys(f"backbone.stem.{3 * i + 1}", cout)
    inplanes = 64
    for layer, (blocks, planes) in enumerate(zip(RESNET_BLOCKS[depth], (64, 128, 256, 512)), start=1):
        for i in range(blocks):
            name = f"backbone.layer{layer}.{i}"
            pairs += _conv_keys(f"{name}.conv1", (planes, inplanes, 1, 1)) + _bn_keys(f"{name}.bn1", planes)
            pairs += _conv_keys(f"{name}.conv2", (planes, planes, 3, 3)) + _bn_keys(f"{name}.bn2", planes)
            pairs += _conv_keys(f"{name}.conv3", (4 * planes, planes, 1, 1)) + _bn_keys(f"{name}.bn3", 4 * planes)
            if i == 0:
                pairs += _conv_keys(f"{name}.downsample.0", (4 * planes, inplanes, 1, 1))
                pairs += _bn_keys(f"{name}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    pairs += [("decode_head.conv_seg.weight", (num_classes, 512, 1, 1)), ("decode_head.conv_seg.bias", (num_classes,))]
    for k in range(len(PPM_BINS)):
        pairs += _conv_keys(f"decode_head.psp_modules.{k}.1.conv", (512, 2048, 1, 1))
        pairs += _bn_keys(f"decode_head.psp_modules.{k}.1.bn", 512)
    pairs += _conv_keys("decode_head.bottleneck.conv", (512, 4096, 3, 3)) + _bn_keys("decode_head.bottleneck.bn", 512)
    pairs += [
        ("auxiliary_head.conv_seg.weight", (num_classes, 256, 1, 1)),
        ("auxiliary_head.conv_seg.bias", (num_classes,)),
    ]
    pairs += _conv_keys("auxiliary_head.convs.0.conv", (256, 1024, 3, 3)) + _bn_keys("auxiliary_head.convs.0.bn", 256)
    return pairs


def mmseg_state_dict(seed: int, depth: int = 50, num_classes: int = 19) -> dict[str, Tensor]:
    """Random mmseg-layout PSPNet weights (the scales of :func:`official_state_dict`), seeded with ``seed``."""
    return _random_state_dict(mmseg_keys(depth, num_classes), seed)
