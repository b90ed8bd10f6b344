"""PSPNet (Pyramid Scene Parsing Network, Zhao et al., CVPR 2017) for semantic segmentation.

Quick use::

    import pspnet
    model = pspnet.load_model("pspnet50_ade20k.safetensors")  # eval mode; model.card holds classes etc.
    logits = model(images)  # (N, 3, H, W) normalised -> (N, classes, H, W)
"""

from .constants import __version__
from .errors import CheckpointError, ConfigError, ConversionError, DataError
from .models.build import MODELS, build_model
from .models.card import ModelCard
from .models.config import ModelConfig
from .models.deeplab import DeepLabV3Plus
from .models.network import SegmentationNetwork
from .models.pspnet import PSPNet
from .models.unet import UNet
from .runs import load_model
from .segmenter import Segmenter
from .weights.model_file import make_card, save_model

__all__ = [
    "MODELS",
    "CheckpointError",
    "ConfigError",
    "ConversionError",
    "DataError",
    "DeepLabV3Plus",
    "ModelCard",
    "ModelConfig",
    "PSPNet",
    "SegmentationNetwork",
    "Segmenter",
    "UNet",
    "__version__",
    "build_model",
    "load_model",
    "make_card",
    "save_model",
]
