"""Shared helpers for the tests: tiny models (ResNet-18 widths, small heads) and the shared fixture folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pspnet.models.pspnet import PSPNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _auto_precision_is_fp32():
    """precision "auto" resolves to fp32 in every test, whatever the CPU (bf16 where it is native would otherwise
    change the numbers from one machine to the next); tests of "auto" itself set native_bf16 as they need."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pspnet.inference.native_bf16", lambda device: False)
        yield


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


def naive_ce_sums(logits, target, class_weights=None, ignore=255):
    """(sum of w[label] x per-pixel -log softmax, sum of w[label]) over the labelled pixels, in float64 with loops;
    w is 1 for every class without ``class_weights``."""
    total, divisor = 0.0, 0.0
    n, k, h, w = logits.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                label = int(target[b, i, j])
                if label == ignore:
                    continue
                weight = 1.0 if class_weights is None else float(class_weights[label])
                scores = [float(logits[b, c, i, j]) for c in range(k)]
                top = max(scores)
                log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
                total += weight * (log_sum - scores[label])
                divisor += weight
    return total, divisor


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a whole test module (its module-scoped fixtures included): tensors this small gain
    nothing from a second thread, on a busy shared machine they lose a lot, and results stay comparable with the
    OMP_NUM_THREADS=1 subprocesses some tests start. Use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
