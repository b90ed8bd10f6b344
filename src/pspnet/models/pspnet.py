"""PSPNet = dilated ResNet + pyramid pooling head (+ auxiliary FCN head in training).

``PSPNet(num_classes=..., depth=..., ...)`` builds one with typed keywords; :func:`pspnet.models.build.build_model`
builds any architecture from a :class:`ModelConfig`, ``MODELS[name]`` by name; ``pspnet.load_model`` loads a
trained one.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .config import ModelConfig
from .decoders import SkipDecoder
from .heads import PSPHead
from .layers import conv_bn_relu
from .network import SegmentationNetwork
from .ppm import PyramidPoolingModule

__all__ = ["PSPNet", "PSPSkipHead"]


class PSPSkipHead(nn.Module):
    """PSPNet's head followed by DeepLab v3+'s stride-4 decoder (not in the paper):
    ``(c1 (N, C1, H/4, W/4), c4 (N, C4, h, w))`` -> logits ``(N, num_classes, H/4, W/4)``.

    Pyramid pooling and the 3x3 conv + BN + ReLU to ``channels`` as :class:`~pspnet.models.heads.PSPHead`, then
    :class:`~pspnet.models.decoders.SkipDecoder` of ``channels // 2`` (256 after the paper's 512, DeepLab v3+'s
    ratio of decoder to head width) in place of PSPHead's dropout and classifier.
    """

    def __init__(
        self,
        low_channels: int,
        in_channels: int,
        num_classes: int,
        *,
        bins: Sequence[int] = (1, 2, 3, 6),
        channels: int = 512,
        dropout: float = 0.1,
        align_corners: bool = True,
        ppm: bool = True,
    ):
        super().__init__()
        pool = PyramidPoolingModule(in_channels, bins=bins, align_corners=align_corners) if ppm else None
        self.ppm = pool if pool is not None else nn.Identity()
        self.bottleneck = conv_bn_relu(pool.out_channels if pool else in_channels, channels, 3)
        self.decoder = SkipDecoder(
            channels,
            low_channels,
            num_classes,
            channels=max(channels // 2, 1),
            dropout=dropout,
            align_corners=align_corners,
        )

    def forward(self, low: Tensor, x: Tensor) -> Tensor:
        if isinstance(self.ppm, PyramidPoolingModule):  # the bottleneck's conv without the concatenation
            x = self.bottleneck[1:](self.ppm.convolve(x, self.bottleneck[0]))
        else:
            x = self.bottleneck(x)
        return self.decoder(x, low)


class PSPNet(SegmentationNetwork):
    """Pyramid Scene Parsing Network (Zhao et al., CVPR 2017).

    ``forward(x)`` as :class:`~pspnet.models.network.SegmentationNetwork`: normalised images ``(N, 3, H, W)`` of any
    size to logits ``(N, num_classes, H, W)``, plus the aux head's logits in training (weight 0.4 in the loss).

    The arguments are the fields of :class:`pspnet.models.config.ModelConfig`; the defaults are the official PSPNet50.
    ``align_corners=True`` is the official code's bilinear upsampling; mmsegmentation uses False.
    ``skip_decoder=True`` adds DeepLab v3+'s stride-4 decoder after the head (:class:`PSPSkipHead`; not the paper's
    network).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        depth: int = 50,
        stem: str = "deep",
        output_stride: int = 8,
        contract_dilation: bool = False,
        bins: Sequence[int] = (1, 2, 3, 6),
        head_channels: int = 512,
        aux: bool = True,
        aux_channels: int = 256,
        dropout: float = 0.1,
        align_corners: bool = True,
        ppm: bool = True,
        skip_decoder: bool = False,
    ):
        super().__init__(
            ModelConfig(
                num_classes=num_classes,
                architecture="pspnet",
                depth=depth,
                stem=stem,
                output_stride=output_stride,
                contract_dilation=contract_dilation,
                bins=tuple(bins),
                head_channels=head_channels,
                aux=aux,
                aux_channels=aux_channels,
                dropout=dropout,
                align_corners=align_corners,
                ppm=ppm,
                skip_decoder=skip_decoder,
            )
        )

    def _make_head(self) -> nn.Module:
        c = self.config
        channels = self.backbone.channels
        options = {
            "bins": c.bins,
            "channels": c.head_channels,
            "dropout": c.dropout,
            "align_corners": c.align_corners,
            "ppm": c.ppm,
        }
        if c.skip_decoder:
            return PSPSkipHead(channels[0], channels[3], c.num_classes, **options)
        return PSPHead(channels[3], c.num_classes, **options)

    def _decode(self, features: list[Tensor], size: Sequence[int]) -> Tensor:
        c1, _c2, _c3, c4 = features  # c4: (N, 2048, H/8, W/8) for ResNet-50 at output stride 8
        if self.config.skip_decoder:
            return self.decode_head(c1, c4)  # (N, K, H/4, W/4)
        return self.decode_head(c4)  # (N, K, H/8, W/8)
