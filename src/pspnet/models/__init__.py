"""PSPNet and its parts: dilated ResNet backbone, pyramid pooling module, heads; its config and model card."""

from .card import ModelCard
from .config import ModelConfig
from .heads import FCNHead, PSPHead
from .ppm import PyramidPoolingModule, adaptive_avg_pool2d, pool_pyramid
from .pspnet import MODELS, PSPNet, build_model
from .resnet import ResNet, stage_plan

__all__ = [
    "MODELS",
    "FCNHead",
    "ModelCard",
    "ModelConfig",
    "PSPHead",
    "PSPNet",
    "PyramidPoolingModule",
    "ResNet",
    "adaptive_avg_pool2d",
    "build_model",
    "pool_pyramid",
    "stage_plan",
]
