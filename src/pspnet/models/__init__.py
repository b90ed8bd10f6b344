"""PSPNet and its parts: dilated ResNet backbone, pyramid pooling module, heads."""

from .heads import FCNHead, PSPHead
from .ppm import PyramidPoolingModule, adaptive_avg_pool2d, pool_pyramid
from .pspnet import MODELS, PSPNet, build_model, pspnet
from .resnet import ResNet, stage_plan

__all__ = [
    "MODELS",
    "FCNHead",
    "PSPHead",
    "PSPNet",
    "PyramidPoolingModule",
    "ResNet",
    "adaptive_avg_pool2d",
    "build_model",
    "pool_pyramid",
    "pspnet",
    "stage_plan",
]
