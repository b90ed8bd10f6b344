"""DeepLab v3+ (Chen et al., ECCV 2018) on the dilated ResNet: ASPP on layer4, then the stride-4 decoder on layer1.

Standard 3x3 convolutions throughout: the paper makes ASPP and decoder depthwise-separable together with its
modified Xception backbone; on a ResNet the plain convolutions are the common form.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .aspp import ASPP, aspp_rates
from .config import ModelConfig
from .decoders import SkipDecoder
from .network import SegmentationNetwork

__all__ = ["DeepLabV3Plus", "DeepLabV3PlusHead"]


class DeepLabV3PlusHead(nn.Module):
    """``(c1 (N, C1, H/4, W/4), c4 (N, C4, h, w))`` -> logits ``(N, num_classes, H/4, W/4)``: ASPP (``channels``
    wide, rates for the output stride) on c4, then :class:`~pspnet.models.decoders.SkipDecoder` with c1."""

    def __init__(
        self,
        low_channels: int,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 256,
        rates: Sequence[int] = (12, 24, 36),
        dropout: float = 0.1,
        align_corners: bool = True,
    ):
        super().__init__()
        self.aspp = ASPP(in_channels, channels=channels, rates=rates)
        self.decoder = SkipDecoder(
            channels, low_channels, num_classes, channels=channels, dropout=dropout, align_corners=align_corners
        )

    def forward(self, low: Tensor, x: Tensor) -> Tensor:
        return self.decoder(self.aspp(x), low)


class DeepLabV3Plus(SegmentationNetwork):
    """DeepLab v3+ on a dilated ResNet (output stride 8 by default, as PSPNet, with ASPP rates 12-24-36; 16 gives
    the paper's 6-12-18). ``forward`` as :class:`~pspnet.models.network.SegmentationNetwork`; the head's logits are
    at H/4. The auxiliary FCN head on layer3 is not in the paper; it is kept (``aux=True``) so every architecture
    trains with the same loss, and is used in training only."""

    def __init__(
        self,
        *,
        num_classes: int,
        depth: int = 50,
        stem: str = "deep",
        output_stride: int = 8,
        contract_dilation: bool = False,
        head_channels: int = 256,
        aux: bool = True,
        aux_channels: int = 256,
        dropout: float = 0.1,
        align_corners: bool = True,
    ):
        super().__init__(
            ModelConfig(
                num_classes=num_classes,
                architecture="deeplabv3plus",
                depth=depth,
                stem=stem,
                output_stride=output_stride,
                contract_dilation=contract_dilation,
                head_channels=head_channels,
                aux=aux,
                aux_channels=aux_channels,
                dropout=dropout,
                align_corners=align_corners,
            )
        )

    def _make_head(self) -> nn.Module:
        c = self.config
        channels = self.backbone.channels
        return DeepLabV3PlusHead(
            channels[0],
            channels[3],
            c.num_classes,
            channels=c.head_channels,
            rates=aspp_rates(c.output_stride),
            dropout=c.dropout,
            align_corners=c.align_corners,
        )

    def _decode(self, features: list[Tensor], size: Sequence[int]) -> Tensor:
        c1, _c2, _c3, c4 = features
        return self.decode_head(c1, c4)  # (N, K, H/4, W/4)
