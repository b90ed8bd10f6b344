"""PSPNet and its parts (dilated ResNet backbone, pyramid pooling module, heads), the architectures it is compared
with (DeepLab v3+, U-Net) on the same backbone, their config and model card."""

from .build import MODELS, NETWORKS, build_model
from .card import ModelCard
from .config import ModelConfig
from .deeplab import DeepLabV3Plus
from .heads import FCNHead, PSPHead
from .network import SegmentationNetwork
from .ppm import PyramidPoolingModule, adaptive_avg_pool2d, pool_pyramid
from .pspnet import PSPNet
from .resnet import ResNet, stage_plan
from .unet import UNet

__all__ = [
    "MODELS",
    "NETWORKS",
    "DeepLabV3Plus",
    "FCNHead",
    "ModelCard",
    "ModelConfig",
    "PSPHead",
    "PSPNet",
    "PyramidPoolingModule",
    "ResNet",
    "SegmentationNetwork",
    "UNet",
    "adaptive_avg_pool2d",
    "build_model",
    "pool_pyramid",
    "stage_plan",
]
