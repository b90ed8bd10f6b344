"""Facts every layer shares: the package version, ImageNet normalisation, the ignore label, the class-id range."""

from __future__ import annotations

__all__ = ["IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "MAX_CLASSES", "__version__"]

__version__ = "0.1.0"

# ImageNet statistics per RGB channel on the 0-255 scale, as the official code normalises its inputs.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# The label of pixels that count for no class (the official code's ignore_label).
IGNORE_INDEX = 255

# The most classes a model may have: a class id must fit a 16-bit PNG label map, with the ignore value above the ids.
MAX_CLASSES = 65535
