"""Building a model of any architecture: from a :class:`ModelConfig` (:func:`build_model`: model files, training
runs) or by name (:data:`MODELS`: the command line)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

from .config import PSPNET_ONLY, ModelConfig, check_model_config
from .deeplab import DeepLabV3Plus
from .network import SegmentationNetwork
from .pspnet import PSPNet
from .unet import UNet

__all__ = ["MODELS", "NETWORKS", "build_model"]

# architecture (ModelConfig.architecture) -> its class
NETWORKS: dict[str, type[SegmentationNetwork]] = {"pspnet": PSPNet, "deeplabv3plus": DeepLabV3Plus, "unet": UNet}
# ModelConfig fields that a class does not take (they keep their fixed value, checked by check_model_config)
_NOT_TAKEN: dict[str, tuple[str, ...]] = {
    "pspnet": (),
    "deeplabv3plus": tuple(PSPNET_ONLY),
    "unet": (*PSPNET_ONLY, "output_stride", "contract_dilation"),
}


def build_model(config: ModelConfig) -> SegmentationNetwork:
    """A randomly initialised model of ``config.architecture`` from a :class:`ModelConfig` (a model file's, a
    training run's); its ``config`` equals ``config``. A ConfigError names a field out of range."""
    check_model_config(config, "build_model")
    values = dataclasses.asdict(config)
    architecture = values.pop("architecture")
    for name in _NOT_TAKEN[architecture]:
        del values[name]
    return NETWORKS[architecture](**values)


# The models by name, for code that picks one by a string (``pspnet info``): ``MODELS["pspnet101"](num_classes=19)``
# is the official PSPNet101 (deep stem, output stride 8, aux head); ``deeplabv3plus50`` and ``unet50`` are the other
# architectures on the same backbone; every keyword of the class may be passed.
MODELS: dict[str, Callable[..., SegmentationNetwork]] = {
    f"{architecture}{depth}": partial(cls, depth=depth)
    for architecture, cls in NETWORKS.items()
    for depth in (18, 34, 50, 101, 152)
}
