"""Shared by the predict tests: the tiny model file they predict with, and synthetic photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pspnet.models.pspnet import PSPNet
from pspnet.weights.model_file import make_card, save_model

K = 5  # classes of the tiny model


def write_tiny_checkpoint(path: Path) -> Path:
    """A seeded PSPNet on ResNet-18 with 16/8-channel heads and K classes; crop 40x56 and base size 56."""
    torch.manual_seed(2)
    model = PSPNet(num_classes=K, depth=18, head_channels=16, aux_channels=8)
    save_model(model, path, card=make_card(model.config, crop_size=(40, 56), base_size=56))
    return path


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """An (H, W, 3) uint8 picture with smooth structure and some noise, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 4 + seed * 20, y * 5, (x * y) % 97], axis=-1) % 256
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
