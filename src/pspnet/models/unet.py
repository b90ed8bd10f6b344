"""U-Net (Ronneberger et al., 2015) in the form used with a ResNet encoder: no dilation (output stride 32), no
context module, a decoder block per stage with skip connections back to the stem's output at H/2."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .config import ModelConfig
from .decoders import UNetDecoder
from .network import SegmentationNetwork
from .resnet import STEMS

__all__ = ["UNet"]


class UNet(SegmentationNetwork):
    """U-Net on a plain ResNet encoder (:class:`~pspnet.models.decoders.UNetDecoder`; ``head_channels`` is the first
    decoder block's width, halved by each of the next four). ``forward`` as
    :class:`~pspnet.models.network.SegmentationNetwork`; the decoder ends at the input's size. The auxiliary FCN
    head on layer3 (at H/16 here) is not in the paper; it is kept (``aux=True``) so every architecture trains with
    the same loss, and is used in training only."""

    uses_stem = True
    decodes_to_input = True

    def __init__(
        self,
        *,
        num_classes: int,
        depth: int = 50,
        stem: str = "deep",
        head_channels: int = 256,
        aux: bool = True,
        aux_channels: int = 256,
        dropout: float = 0.1,
        align_corners: bool = True,
    ):
        super().__init__(
            ModelConfig(
                num_classes=num_classes,
                architecture="unet",
                depth=depth,
                stem=stem,
                output_stride=32,
                head_channels=head_channels,
                aux=aux,
                aux_channels=aux_channels,
                dropout=dropout,
                align_corners=align_corners,
            )
        )

    def _make_head(self) -> nn.Module:
        c = self.config
        c1, c2, c3, c4 = self.backbone.channels
        return UNetDecoder(
            (STEMS[c.stem][-1], c1, c2, c3),
            c4,
            c.num_classes,
            channels=c.head_channels,
            dropout=c.dropout,
            align_corners=c.align_corners,
        )

    def _decode(self, features: list[Tensor], size: Sequence[int]) -> Tensor:
        return self.decode_head(features, size)  # (N, K, H, W)
