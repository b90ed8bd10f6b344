"""PSPNet (Pyramid Scene Parsing Network, Zhao et al., CVPR 2017) for semantic segmentation.

Quick use::

    import pspnet
    model = pspnet.load_model("pspnet50_ade20k.safetensors")  # eval mode, model.meta holds classes etc.
    logits = model(images)  # (N, 3, H, W) normalised -> (N, classes, H, W)
"""

__version__ = "0.1.0"

from .config import ModelConfig  # noqa: E402
from .errors import CheckpointError, ConversionError, DataError  # noqa: E402
from .models.pspnet import MODELS, PSPNet, build_model  # noqa: E402
from .segmenter import Segmenter  # noqa: E402
from .weights.model_file import load_model, save_model  # noqa: E402

__all__ = [
    "MODELS",
    "CheckpointError",
    "ConversionError",
    "DataError",
    "ModelConfig",
    "PSPNet",
    "Segmenter",
    "__version__",
    "build_model",
    "load_model",
    "save_model",
]
