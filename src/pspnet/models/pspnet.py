"""PSPNet = dilated ResNet + pyramid pooling head (+ auxiliary FCN head in training).

Three ways to build one, each for its caller: ``PSPNet(num_classes=..., depth=..., ...)`` with typed keywords (code
that knows what it wants), ``build_model(config)`` from a :class:`ModelConfig` (model files, training runs), and
``MODELS[name](num_classes=...)`` by name (the command line). ``pspnet.load_model`` loads a trained one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .card import ModelCard
from .config import ModelConfig, check_model_config
from .fold import fold_batchnorm
from .heads import FCNHead, PSPHead
from .resnet import ResNet

__all__ = ["MODELS", "PSPNet", "build_model"]


class PSPNet(nn.Module):
    """Pyramid Scene Parsing Network (Zhao et al., CVPR 2017).

    ``forward(x)`` takes normalised images ``(N, 3, H, W)`` of any size and batch size.

    - eval mode (or ``aux=False``): returns logits ``(N, num_classes, H, W)``;
    - training mode with ``aux=True``: returns ``(logits, aux_logits)``, both ``(N, num_classes, H, W)``;
      the auxiliary head reads layer3 and is weighted 0.4 in the loss (see :mod:`pspnet.engine.losses`).

    The arguments are the fields of :class:`pspnet.models.config.ModelConfig`; the defaults are the official PSPNet50.
    ``align_corners=True`` is the official code's bilinear upsampling; mmsegmentation uses False.
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
    ):
        super().__init__()
        self.config = ModelConfig(
            num_classes=num_classes,
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
        )
        check_model_config(self.config, "PSPNet")  # a ConfigError (a ValueError) naming the field, before any layer
        self.align_corners = align_corners
        self.backbone = ResNet(depth=depth, stem=stem, output_stride=output_stride, contract_dilation=contract_dilation)
        channels = self.backbone.channels
        self.decode_head = PSPHead(
            channels[3],
            num_classes,
            bins=bins,
            channels=head_channels,
            dropout=dropout,
            align_corners=align_corners,
            ppm=ppm,
        )
        self.aux_head = FCNHead(channels[2], num_classes, channels=aux_channels, dropout=dropout) if aux else None
        # Set by pspnet.load_model from the model file (classes, palette, normalisation, ...), and by training.
        self.card: ModelCard | None = None
        self.inference_only = False  # set by fold_batchnorm: the BatchNorm layers are gone

    def fold_batchnorm(self) -> PSPNet:
        """Fold every BatchNorm into its convolution for inference (:func:`pspnet.models.fold.fold_batchnorm`), in
        place, and switch to eval mode; returns the model. It computes the same logits to float rounding, faster,
        and can no longer train or be saved: :meth:`train` refuses. Load the file again to fine-tune."""
        if not self.inference_only:
            fold_batchnorm(self)
            self.inference_only = True
        return self.eval()

    def train(self, mode: bool = True) -> PSPNet:
        """``nn.Module.train``; refused (RuntimeError) for a model whose BatchNorm was folded for inference."""
        if mode and self.inference_only:
            raise RuntimeError("this PSPNet's BatchNorm was folded for inference; load the model again to train it")
        return super().train(mode)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def meta(self) -> dict[str, Any]:
        """The model card as the plain dict a model file stores (``{}`` without a card); read-only, a copy."""
        return self.card.to_dict() if self.card is not None else {}

    def _upsample(self, logits: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: Tensor, *, upsample: bool = True) -> Tensor | tuple[Tensor, Tensor]:
        """Logits for normalised images ``x`` (N, 3, H, W), at (H, W); with ``upsample=False`` at the features'
        resolution (H/8, W/8 at output stride 8), before the final bilinear upsampling: training passes those to
        :func:`pspnet.engine.losses.loss_sum`, which upsamples inside the loss (``align_corners`` as this model)
        without making the full-size logits."""
        size = x.shape[-2:]
        _c1, _c2, c3, c4 = self.backbone(x)  # c3: (N, 1024, H/8, W/8), c4: (N, 2048, H/8, W/8) for ResNet-50 OS 8
        logits = self.decode_head(c4)  # (N, K, H/8, W/8)
        if upsample:
            logits = self._upsample(logits, size)  # (N, K, H, W)
        if self.training and self.aux_head is not None:
            aux = self.aux_head(c3)
            return logits, self._upsample(aux, size) if upsample else aux
        return logits


def build_model(config: ModelConfig) -> PSPNet:
    """A randomly initialised PSPNet from a :class:`ModelConfig` (a model file's, a training run's)."""
    return PSPNet(**dataclasses.asdict(config))


# The models by name, for code that picks one by a string (``pspnet info``): ``MODELS["pspnet101"](num_classes=19)``
# is the official PSPNet101 (deep stem, output stride 8, aux head); every keyword of PSPNet may be passed.
MODELS: dict[str, Callable[..., PSPNet]] = {
    f"pspnet{depth}": partial(PSPNet, depth=depth) for depth in (18, 34, 50, 101, 152)
}
