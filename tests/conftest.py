"""Shared helpers for the tests: tiny models (ResNet-18 widths, small heads) and the shared fixture folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pspnet.models.pspnet import PSPNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


def tiny_pspnet(num_classes: int = 5, **options) -> PSPNet:
    """A PSPNet small enough for unit tests: ResNet-18 backbone, 64-channel head, 32-channel aux head."""
    options.setdefault("depth", 18)
    options.setdefault("head_channels", 64)
    options.setdefault("aux_channels", 32)
    return PSPNet(num_classes=num_classes, **options)


def fixture_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every entry of an official checkpoint listed in ../shared/fixtures/NAME."""
    data = json.loads((FIXTURES / name).read_text())
    return [(key, tuple(shape)) for key, shape in data["keys"]]


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
