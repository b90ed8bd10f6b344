"""Foreign checkpoint layouts written out by hand from their published key names (for converter tests).

Each function takes a pspnet state dict and returns the same tensors under another code base's names. They are
written independently of pspnet.weights.convert (string by string) so that a round trip tests the converter.
"""

from __future__ import annotations

import re

from torch import Tensor


def _stage_keys(key: str, prefix: str) -> str | None:
    m = re.match(r"^backbone\.(layer[1-4]\..*)$", key)
    return prefix + m.group(1) if m else None


def to_official(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """pspnet -> authors' PSPNet (layer0 stem, ppm.features.k.{1,2}, cls.{0,1,4}, aux.{0,1,4})."""
    heads = {
        "decode_head.conv.": "cls.0.",
        "decode_head.bn.": "cls.1.",
        "decode_head.classifier.": "cls.4.",
        "aux_head.conv.": "aux.0.",
        "aux_head.bn.": "aux.1.",
        "aux_head.classifier.": "aux.4.",
    }
    out = {}
    for key, value in sd.items():
        if key.startswith("backbone.stem."):
            new = "layer0." + key[len("backbone.stem.") :]
        elif (new := _stage_keys(key, "")) is not None:
            pass
        elif m := re.match(r"^decode_head\.ppm\.branches\.(\d+)\.(conv|bn)\.(.*)$", key):
            new = f"ppm.features.{m.group(1)}.{1 if m.group(2) == 'conv' else 2}.{m.group(3)}"
        else:
            prefix = next(p for p in heads if key.startswith(p))
            new = heads[prefix] + key[len(prefix) :]
        out[new] = value
    return out


def to_mmseg(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """pspnet -> mmsegmentation PSPNet (backbone.stem, decode_head.psp_modules.k.1.conv|bn, bottleneck, conv_seg)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("backbone."):
            new = key
        elif m := re.match(r"^decode_head\.ppm\.branches\.(\d+)\.(conv|bn)\.(.*)$", key):
            new = f"decode_head.psp_modules.{m.group(1)}.1.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"^decode_head\.(conv|bn)\.(.*)$", key):
            new = f"decode_head.bottleneck.{m.group(1)}.{m.group(2)}"
        elif key.startswith("decode_head.classifier."):
            new = "decode_head.conv_seg." + key[len("decode_head.classifier.") :]
        elif m := re.match(r"^aux_head\.(conv|bn)\.(.*)$", key):
            new = f"auxiliary_head.convs.0.{m.group(1)}.{m.group(2)}"
        elif key.startswith("aux_head.classifier."):
            new = "auxiliary_head.conv_seg." + key[len("aux_head.classifier.") :]
        else:
            raise KeyError(key)
        out[new] = value
    return out


def to_imagenet(backbone_sd: dict[str, Tensor], *, deep: bool) -> dict[str, Tensor]:
    """ResNet state dict -> ImageNet classifier file: official deep stem (conv1..3/bn1..3) or torchvision (conv1/bn1)."""
    stem_names = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}
    out = {}
    for key, value in backbone_sd.items():
        m = re.match(r"^stem\.(\d+)\.(.*)$", key)
        if m:
            if not deep and m.group(1) not in ("0", "1"):
                raise KeyError(key)
            out[f"{stem_names[m.group(1)]}.{m.group(2)}"] = value
        else:
            out[key] = value
    return out
