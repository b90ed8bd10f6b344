"""Dilated ResNet backbones (18/34/50/101/152) for dense prediction.

The official PSPNet code uses a "deep stem" (three 3x3 convs, 64-64-128) and turns the strides of layer3 and
layer4 into dilations so that features stay at 1/8 of the input. This module builds that network and its
common relatives from plain arguments:

- ``stem="deep"``: the official stem, layer1 receives 128 channels;
- ``stem="deep-v1c"``: mmsegmentation's ResNetV1c stem (32-32-64), layer1 receives 64 channels;
- ``stem="basic"``: torchvision's 7x7 stem, layer1 receives 64 channels.

Parameter names follow the torchvision/official layout inside each stage (``layer1.0.conv1`` ...), and the stem
is a ``Sequential`` whose conv/BN indices (0, 1, 3, 4, 6, 7) match both the official ``layer0`` and mmseg's
``stem``, so converting weights is a matter of renaming prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

__all__ = [
    "STAGE_BLOCKS",
    "STEMS",
    "BasicBlock",
    "Bottleneck",
    "FeatureInfo",
    "ResNet",
    "count_trainable",
    "output_size",
    "stage_plan",
]

# depth -> (bottleneck?, blocks per stage); the five depths of He et al. 2016.
STAGE_BLOCKS: dict[int, tuple[bool, tuple[int, int, int, int]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}

# stem name -> channels of its convolutions; the last one is what layer1 receives.
STEMS: dict[str, tuple[int, ...]] = {
    "deep": (64, 64, 128),  # official PSPNet (Zhao et al.) ImageNet ResNets
    "deep-v1c": (32, 32, 64),  # mmsegmentation ResNetV1c
    "basic": (64,),  # torchvision: one 7x7 conv
}


def stage_plan(output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of layer1..layer4 for a network whose stem already reduces by 4.

    ``stage_plan(8) == [(1, 1), (2, 1), (1, 2), (1, 4)]``: layer3 and layer4 keep the resolution and dilate
    instead, as in the paper. Every stage whose stride is removed doubles the dilation of the stages after it.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    plan: list[tuple[int, int]] = []
    reduction, dilation = 4, 1
    for index in range(4):
        stride = 1 if index == 0 else 2
        if index > 0 and reduction * stride > output_stride:
            dilation *= stride
            stride = 1
        reduction *= stride
        plan.append((stride, dilation))
    return plan


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34).

    Both convs use the block's dilation, so a dilated stage keeps the receptive field of the strided original.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, *, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with a residual connection (ResNet-50/101/152); the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, *, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_stem(stem: str) -> nn.Sequential:
    """Stem up to (not including) the max-pool; output at 1/2 resolution."""
    widths = STEMS[stem]
    if stem == "basic":
        return nn.Sequential(
            nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)
        )
    layers: list[nn.Module] = []
    in_channels = 3
    for index, width in enumerate(widths):
        stride = 2 if index == 0 else 1
        layers += [nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width)]
        layers.append(nn.ReLU(inplace=True))
        in_channels = width
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class FeatureInfo:
    """What one stage produces: channels and reduction (input size / feature size, before rounding up)."""

    name: str
    channels: int
    reduction: int


class ResNet(nn.Module):
    """Dilated ResNet returning the four stage outputs.

    Args:
        depth: 18, 34, 50, 101 or 152.
        stem: ``"deep"`` (official PSPNet, default), ``"deep-v1c"`` (mmseg) or ``"basic"`` (torchvision 7x7).
        output_stride: 8 (paper), 16 or 32; see :func:`stage_plan`.
        contract_dilation: when True, the first block of a dilated stage uses half the stage's dilation, as in
            mmsegmentation. The official code (default False) dilates every block of the stage.

    ``forward(x)`` takes ``(N, 3, H, W)`` and returns ``[c1, c2, c3, c4]`` with shapes
    ``(N, channels[i], ceil(H / reduction[i]), ceil(W / reduction[i]))`` (exact for the strided convs used here).
    """

    def __init__(self, *, depth: int, stem: str = "deep", output_stride: int = 8, contract_dilation: bool = False):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}, got {depth!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {sorted(STEMS)}, got {stem!r}")
        bottleneck, blocks = STAGE_BLOCKS[depth]
        block = Bottleneck if bottleneck else BasicBlock
        self.depth, self.stem_type, self.output_stride = depth, stem, output_stride
        self.contract_dilation = contract_dilation

        self.stem = _make_stem(stem)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = STEMS[stem][-1]
        infos: list[FeatureInfo] = []
        reduction = 4
        for index, ((stride, dilation), count) in enumerate(zip(stage_plan(output_stride), blocks)):
            planes = 64 * 2**index
            out_channels = planes * block.expansion
            downsample = None
            if stride != 1 or in_channels != out_channels:
                downsample = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
                )
            first_dilation = dilation // 2 if contract_dilation and dilation > 1 else dilation
            layers = [block(in_channels, planes, stride=stride, dilation=first_dilation, downsample=downsample)]
            layers += [
                block(out_channels, planes, stride=1, dilation=dilation, downsample=None) for _ in range(count - 1)
            ]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layers))
            in_channels = out_channels
            reduction *= stride
            infos.append(FeatureInfo(f"layer{index + 1}", out_channels, reduction))
        self.feature_info: tuple[FeatureInfo, ...] = tuple(infos)
        self._init_weights()

    @property
    def channels(self) -> list[int]:
        """Channels of layer1..layer4 outputs."""
        return [info.channels for info in self.feature_info]

    @property
    def reductions(self) -> list[int]:
        """Reduction (input side / feature side) of layer1..layer4 outputs."""
        return [info.reduction for info in self.feature_info]

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, *, with_stem: bool = False) -> list[Tensor]:
        """``[c1, c2, c3, c4]``; with ``with_stem=True`` ``[c0, c1, c2, c3, c4]``, where c0 is the stem's output
        before the max-pool, ``(N, STEMS[stem][-1], ceil(H / 2), ceil(W / 2))`` (U-Net's finest skip)."""
        stem = self.stem(x)  # (N, stem_channels, H/2, W/2)
        x = self.maxpool(stem)  # (N, stem_channels, H/4, W/4)
        features = [stem] if with_stem else []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


def output_size(size: int, reduction: int) -> int:
    """Side length of a feature map with the given reduction for an input side of ``size`` pixels.

    Every stride-2 layer here (3x3 pad 1, 7x7 pad 3, 3x3 max-pool pad 1, 1x1 stride 2) maps n to ceil(n / 2).
    """
    out = size
    while reduction > 1:
        out = (out + 1) // 2
        reduction //= 2
    return out


def count_trainable(module: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
