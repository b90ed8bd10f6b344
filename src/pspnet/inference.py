"""Inference modes of the official PSPNet test protocol, shared by evaluation, training, prediction and the demo.

For each scale s in ``scales``: the image is resized so that its long side is ``s * base_size`` (bilinear; with
``base_size=None`` the native size is scaled by s); the network runs on the whole image (``mode="whole"``) or on
sliding windows (``mode="slide"``); each forward's softmax is averaged with that of the horizontally flipped
input when ``flip`` is set; the probabilities are resized back to the input size and averaged over the scales.

Sliding windows (official ``scale_process``): an image smaller than the crop is first padded to the crop with the
mean colour (zeros after normalisation), centred as in the official code; windows of ``crop`` size start every
``ceil(stride_rate * crop)`` pixels, the last window of each row and column is clamped to the edge, overlapping
probabilities are averaged, and the padding is cut off. The windows of an image are run in batches rather than one
at a time.

``mode="auto"`` uses sliding windows when a side of the resized image exceeds the crop, else the whole image.

All functions take and return tensors: images ``(N, 3, H, W)`` normalised float, probabilities
``(N, K, H, W)`` float32 on the model's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MODES",
    "PRECISIONS",
    "InferenceSettings",
    "infer_proba",
    "normalize",
    "resized_size",
    "resolve_device",
    "window_starts",
]

MODES = ("auto", "whole", "slide")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class InferenceSettings:
    """How to run a model on an image.

    ``crop_size`` is (height, width) of a sliding window; ``base_size`` the long side (pixels) at scale 1.0, or
    None for the native size; ``stride_rate`` the window step as a fraction of the crop (official: 2/3);
    ``window_batch`` how many windows go through the network at once.
    """

    mode: str = "auto"
    crop_size: tuple[int, int] = (473, 473)
    stride_rate: float = 2 / 3
    base_size: int | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    precision: str = "fp32"
    window_batch: int = 4

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop size must be two positive integers, got {self.crop_size!r}")
        if not 0 < self.stride_rate <= 1:
            raise ValueError(f"stride rate must be in (0, 1], got {self.stride_rate}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive, got {self.scales!r}")
        if self.base_size is not None and self.base_size < 1:
            raise ValueError(f"base size must be positive, got {self.base_size}")
        if self.window_batch < 1:
            raise ValueError(f"window batch must be positive, got {self.window_batch}")

    @classmethod
    def from_meta(cls, meta: dict[str, Any], **overrides: Any) -> InferenceSettings:
        """Settings from a model file's ``inference`` metadata (crop and base size); ``overrides`` win.

        Overrides whose value is None are ignored, so command-line defaults can be passed through as they are.
        """
        inference = meta.get("inference") or {}
        base = cls()
        if "crop_size" in inference:
            base = replace(base, crop_size=tuple(int(v) for v in inference["crop_size"]))
        if inference.get("base_size"):
            base = replace(base, base_size=int(inference["base_size"]))
        chosen = {k: v for k, v in overrides.items() if v is not None}
        for key in ("crop_size", "scales"):
            if key in chosen:
                chosen[key] = tuple(chosen[key])
        return replace(base, **chosen)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; any other name is passed to ``torch.device``."""
    if str(name) != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def normalize(
    images: Tensor, mean: Sequence[float], std: Sequence[float], *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """uint8 or float RGB images ``(N, 3, H, W)`` in [0, 255] -> ``(image - mean) / std`` in ``dtype`` (the
    model's parameter dtype: float32, or float64 for numerical checks)."""
    mean_t = torch.as_tensor(mean, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    return (images.to(dtype) - mean_t) / std_t


def resized_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side equal to ``long_side`` and the aspect ratio kept (official rounding)."""
    if height > width:
        return long_side, round(long_side / height * width)
    return round(long_side / width * height), long_side


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along a side (``length >= crop``); the last window is clamped to the edge."""
    count = math.ceil((length - crop) / stride) + 1
    return sorted({min(i * stride, length - crop) for i in range(count)})


def _softmax_forward(model: nn.Module, x: Tensor, flip: bool, precision: str) -> Tensor:
    """Softmax of the model's logits for ``x`` (B, 3, h, w), averaged with the flipped input's when ``flip``."""
    dtype = PRECISIONS[precision]
    batch = torch.cat([x, x.flip(-1)]) if flip else x
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(batch)
    if logits.shape[-2:] != batch.shape[-2:]:  # models that return reduced logits
        logits = F.interpolate(logits.float(), size=batch.shape[-2:], mode="bilinear", align_corners=False)
    probs = logits.float().softmax(dim=1)
    if flip:
        n = x.shape[0]
        probs = (probs[:n] + probs[n:].flip(-1)) / 2
    return probs


def _slide(model: nn.Module, x: Tensor, settings: InferenceSettings) -> Tensor:
    """Sliding-window probabilities for ``x`` (N, 3, h, w) at its own size."""
    crop_h, crop_w = settings.crop_size
    n, _, height, width = x.shape
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:  # zeros after normalisation = the mean colour before it
        x = F.pad(x, (left, pad_w - left, top, pad_h - top))
    full_h, full_w = x.shape[-2:]
    starts_h = window_starts(full_h, crop_h, math.ceil(crop_h * settings.stride_rate))
    starts_w = window_starts(full_w, crop_w, math.ceil(crop_w * settings.stride_rate))
    windows = [(y, x0) for y in starts_h for x0 in starts_w]
    total: Tensor | None = None
    count = torch.zeros(1, 1, full_h, full_w, device=x.device)
    for first in range(0, len(windows), settings.window_batch):
        chunk = windows[first : first + settings.window_batch]
        crops = torch.cat([x[:, :, y : y + crop_h, x0 : x0 + crop_w] for y, x0 in chunk])  # (len * N, 3, ch, cw)
        probs = _softmax_forward(model, crops, settings.flip, settings.precision)
        if total is None:
            total = torch.zeros(n, probs.shape[1], full_h, full_w, device=x.device)
        for k, (y, x0) in enumerate(chunk):
            total[:, :, y : y + crop_h, x0 : x0 + crop_w] += probs[k * n : (k + 1) * n]
            count[:, :, y : y + crop_h, x0 : x0 + crop_w] += 1
    assert total is not None
    total /= count
    return total[:, :, top : top + height, left : left + width]


def _uses_windows(settings: InferenceSettings, height: int, width: int) -> bool:
    if settings.mode == "auto":
        return height > settings.crop_size[0] or width > settings.crop_size[1]
    return settings.mode == "slide"


@torch.no_grad()
def infer_proba(model: nn.Module, images: Tensor, settings: InferenceSettings) -> Tensor:
    """Class probabilities ``(N, K, H, W)`` float32 for normalised images ``(N, 3, H, W)`` of one size.

    The model must be in eval mode (it is not switched here).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    result: Tensor | None = None
    for scale in settings.scales:
        if settings.base_size is not None:
            size = resized_size(height, width, round(scale * settings.base_size))
        else:
            size = (max(1, round(scale * height)), max(1, round(scale * width)))
        x = images
        if size != (height, width):
            x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        if _uses_windows(settings, *size):
            probs = _slide(model, x, settings)
        else:
            probs = _softmax_forward(model, x, settings.flip, settings.precision)
        if size != (height, width):
            probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
        result = probs if result is None else result + probs
    assert result is not None
    return result / len(settings.scales)
