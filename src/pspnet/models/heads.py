"""Segmentation heads: the PSP head (pyramid pooling + 3x3 conv + classifier) and the auxiliary FCN head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .ppm import PyramidPoolingModule

__all__ = ["FCNHead", "PSPHead"]


class FCNHead(nn.Module):
    """conv3x3 (no bias) -> BN -> ReLU -> Dropout2d -> conv1x1 classifier.

    ``forward`` maps ``(N, in_channels, h, w)`` to logits ``(N, num_classes, h, w)``. Used as the auxiliary
    head on layer3 (1024 -> 256 channels in the paper) and as the last part of :class:`PSPHead`.
    """

    def __init__(self, in_channels: int, num_classes: int, *, channels: int, dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.relu(self.bn(self.conv(x)))))


class PSPHead(FCNHead):
    """Pyramid pooling followed by the FCN head: ``(N, C, h, w)`` -> ``(N, num_classes, h, w)``.

    With the paper's values (C = 2048, bins 1-2-3-6, 512 channels) the 3x3 conv maps 4096 -> 512 channels; it runs
    as :meth:`~pspnet.models.ppm.PyramidPoolingModule.convolve`, which never builds the 4096 channels.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        bins: Sequence[int] = (1, 2, 3, 6),
        channels: int = 512,
        dropout: float = 0.1,
        align_corners: bool = True,
        ppm: bool = True,
    ):
        # ppm=False drops the pyramid pooling (an ablation, not the paper's network): the 3x3 conv sees layer4 only.
        pool = PyramidPoolingModule(in_channels, bins=bins, align_corners=align_corners) if ppm else None
        super().__init__(pool.out_channels if pool else in_channels, num_classes, channels=channels, dropout=dropout)
        self.ppm = pool if pool is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.ppm, PyramidPoolingModule):  # conv(ppm(x)) without the 4096-channel concatenation
            y = self.ppm.convolve(x, self.conv)
        else:
            y = self.conv(x)
        return self.classifier(self.dropout(self.relu(self.bn(y))))
