"""The official PSPNet as the authors' PyTorch code runs it, written from its facts, as the baseline of benchmarks.

Same architecture and key names as the official checkpoints (``layer0.0.weight`` ... ``cls.4.bias``, ``aux.4.bias``),
so an official state dict loads strictly; plain eager modules with nothing fused:

- ``layer0``: the deep stem, three 3x3 conv-BN-ReLU (the first with stride 2) and a 3x3/2 max pool;
- ``layer1..4``: ResNet bottlenecks; ``layer3`` and ``layer4`` keep stride 1 with dilation 2 and 4 in every
  ``conv2`` (output stride 8);
- ``ppm``: ``nn.AdaptiveAvgPool2d`` to 1, 2, 3, 6, 1x1 conv-BN-ReLU, bilinear back (align_corners=True), concatenated;
- ``cls``: 3x3 conv-BN-ReLU, dropout 0.1, 1x1 classifier; bilinear to the input size (align_corners=True);
- ``aux`` (training): the same head on ``layer3`` with 256 channels;
- the training loss: cross-entropy (ignore 255) on the full-resolution main logits + 0.4 x the aux one, one
  ``backward`` and an SGD step (:func:`official_train_step`).

:func:`official_multiscale_labels` is the official test procedure (``scale_process`` / ``net_process``): every
window one at a time with its flip, the probabilities accumulated in float64 NumPy arrays, cv2 resizes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OfficialPSPNet", "official_multiscale_labels", "official_train_step"]

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


def _layer(inplanes: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
    )
    layers = [Bottleneck(inplanes, planes, stride, dilation, downsample)]
    layers += [Bottleneck(planes * 4, planes, 1, dilation, None) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class OfficialPSPNet(nn.Module):
    """The official PSPNet (deep-stem ResNet-50/101, output stride 8, bins 1-2-3-6, aux head), eager."""

    def __init__(self, num_classes: int, depth: int = 50):
        super().__init__()
        b1, b2, b3, b4 = BLOCKS[depth]
        stem = _conv_bn_relu(3, 64, 3, 2) + _conv_bn_relu(64, 64, 3) + _conv_bn_relu(64, 128, 3)
        self.layer0 = nn.Sequential(*stem, nn.MaxPool2d(3, 2, 1))
        self.layer1 = _layer(128, 64, b1, 1, 1)
        self.layer2 = _layer(256, 128, b2, 2, 1)
        self.layer3 = _layer(512, 256, b3, 1, 2)
        self.layer4 = _layer(1024, 512, b4, 1, 4)
        self.ppm = nn.Module()
        self.ppm.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(2048, 512, 1, bias=False), nn.BatchNorm2d(512), nn.ReLU())
            for b in (1, 2, 3, 6)
        )
        self.cls = nn.Sequential(*_conv_bn_relu(4096, 512, 3), nn.Dropout2d(0.1), nn.Conv2d(512, num_classes, 1))
        self.aux = nn.Sequential(*_conv_bn_relu(1024, 256, 3), nn.Dropout2d(0.1), nn.Conv2d(256, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        h, w = x.shape[-2:]
        x = self.layer2(self.layer1(self.layer0(x)))
        x_aux = self.layer3(x)
        x = self.layer4(x_aux)
        size = x.shape[-2:]
        pooled = [F.interpolate(f(x), size, mode="bilinear", align_corners=True) for f in self.ppm.features]
        out = F.interpolate(self.cls(torch.cat([x, *pooled], 1)), (h, w), mode="bilinear", align_corners=True)
        if self.training:
            aux = F.interpolate(self.aux(x_aux), (h, w), mode="bilinear", align_corners=True)
            return out, aux
        return out


def official_train_step(
    model: OfficialPSPNet, optimizer: torch.optim.Optimizer, images: Tensor, target: Tensor
) -> float:
    """One official training step: CE(main) + 0.4 x CE(aux), ignore 255, on full-resolution logits; SGD step."""
    model.train()
    main, aux = model(images)
    loss = F.cross_entropy(main, target, ignore_index=255) + 0.4 * F.cross_entropy(aux, target, ignore_index=255)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _net_process(model: nn.Module, image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Softmax (H, W, K) of one RGB float window and its mirror, averaged (official ``net_process`` with flip)."""
    x = torch.from_numpy(((image - mean) / std).transpose(2, 0, 1).copy()).float().unsqueeze(0)
    x = torch.cat([x, x.flip(3)], 0)
    with torch.no_grad():
        out = F.softmax(model(x), dim=1)
    return ((out[0] + out[1].flip(2)) / 2).numpy().transpose(1, 2, 0)


def _scale_process(
    model: nn.Module, image: np.ndarray, classes: int, crop: int, h: int, w: int, mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """The official ``scale_process``: pad with the mean colour, windows every ceil(2/3 crop), float64 sums."""
    ori_h, ori_w, _ = image.shape
    pad_h, pad_w = max(crop - ori_h, 0), max(crop - ori_w, 0)
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        border = [float(v) for v in mean]
        image = cv2.copyMakeBorder(image, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT, value=border)
    new_h, new_w, _ = image.shape
    stride = math.ceil(crop * 2 / 3)
    grid_h, grid_w = math.ceil((new_h - crop) / stride) + 1, math.ceil((new_w - crop) / stride) + 1
    prediction = np.zeros((new_h, new_w, classes), dtype=float)
    count = np.zeros((new_h, new_w), dtype=float)
    for i in range(grid_h):
        for j in range(grid_w):
            e_h, e_w = min(i * stride + crop, new_h), min(j * stride + crop, new_w)
            s_h, s_w = e_h - crop, e_w - crop
            count[s_h:e_h, s_w:e_w] += 1
            prediction[s_h:e_h, s_w:e_w, :] += _net_process(model, image[s_h:e_h, s_w:e_w].copy(), mean, std)
    prediction /= np.expand_dims(count, 2)
    prediction = prediction[top : top + ori_h, left : left + ori_w]
    return _resize_channels(prediction, (w, h))


def _resize_channels(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(array, size)`` (bilinear) of an (H, W, K) array of any K: the official code resizes all K
    channels in one call, which OpenCV 5 allows for at most 4 channels, so they go in groups of 4 (the same
    per-channel interpolation)."""
    parts = [
        cv2.resize(array[:, :, c : c + 4], size, interpolation=cv2.INTER_LINEAR) for c in range(0, array.shape[2], 4)
    ]
    return np.concatenate([p.reshape(size[1], size[0], -1) for p in parts], axis=2)


def official_multiscale_labels(
    model: nn.Module,
    image: np.ndarray,
    classes: int,
    *,
    crop: int,
    base_size: int,
    scales: tuple[float, ...],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> np.ndarray:
    """Class ids (H, W) of an RGB uint8 image by the official multi-scale + flip test (``test.py``)."""
    h, w, _ = image.shape
    rgb = image.astype(np.float32)
    prediction = np.zeros((h, w, classes), dtype=float)
    mean_a, std_a = np.array(mean, dtype=np.float32), np.array(std, dtype=np.float32)
    for scale in scales:
        long_size = round(scale * base_size)
        new_h, new_w = long_size, long_size
        if h > w:
            new_w = round(long_size / float(h) * w)
        else:
            new_h = round(long_size / float(w) * h)
        scaled = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        prediction += _scale_process(model, scaled, classes, crop, h, w, mean_a, std_a)
    return np.argmax(prediction / len(scales), axis=2)
