"""pspnet model files: one safetensors file with versioned JSON metadata; atomic writes; checked reads.

A model file holds the full state dict of a :class:`~pspnet.models.pspnet.PSPNet` and, under the safetensors
metadata key ``"pspnet"``, a JSON object (``kind: "model"``, ``format_version: 1``) with the model config, class
names, palette, ignore index, normalisation (RGB mean/std in [0, 255]), the inference crop and base size, where
the weights came from, and a SHA-256 of the tensors so that corruption is detected on load.

A backbone file (``kind: "backbone"``) holds ImageNet weights of a :class:`~pspnet.models.resnet.ResNet` for
training initialisation; it is not a model and :func:`load_model` refuses it.

Nothing here unpickles anything: PyTorch ``.pth`` files are refused with a pointer to ``pspnet convert``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from .. import __version__
from ..atomic import atomic_open
from ..config import ConfigError, ModelConfig, config_from_dict
from ..data.classes import DATASETS, default_palette
from ..errors import CheckpointError
from ..models.pspnet import PSPNet, build_model
from ..models.resnet import ResNet

__all__ = [
    "FORMAT_VERSION",
    "check_state_dict",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_backbone_weights",
    "load_model",
    "make_meta",
    "normalization",
    "read_weights_file",
    "resolve_model_path",
    "save_model",
    "write_weights_file",
]

FORMAT_VERSION = 1
METADATA_KEY = "pspnet"
# ImageNet statistics on RGB in [0, 255], as in the official code.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
_PICKLE_SUFFIXES = {".pth", ".pt", ".pkl", ".pickle", ".bin", ".tar", ".ckpt"}
_CONVERT_HINT = "convert it with 'pspnet convert --from official|mmseg SRC DST.safetensors'"


def normalization(meta: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel on the 0-255 scale from a model file's metadata; ImageNet's when it has none."""
    stored = meta.get("normalization") or {}
    mean = tuple(float(v) for v in stored.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in stored.get("std", IMAGENET_STD))
    return mean, std


def make_meta(
    config: ModelConfig,
    *,
    dataset: str | None = None,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    ignore_index: int = 255,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_size: tuple[int, int] | None = None,
    base_size: int | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Metadata of a model file. ``dataset`` (a key of ``DATASETS``) fills classes, palette, crop and base size.

    Without a data set, classes are named ``class_0..`` and coloured by :func:`default_palette`, and inference
    uses the paper's ADE20K/VOC settings (crop 473, base size 512). Explicit arguments win over the data set's.
    """
    info = None
    if dataset is not None:
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
        info = DATASETS[dataset]
        if info.num_classes != config.num_classes:
            raise ValueError(
                f"dataset {dataset!r} has {info.num_classes} classes but the model has {config.num_classes}"
            )
    k = config.num_classes
    names = list(classes) if classes is not None else list(info.classes) if info else [f"class_{i}" for i in range(k)]
    colors = [list(c) for c in (palette if palette is not None else info.palette if info else default_palette(k))]
    if len(names) != k or len(colors) != k:
        raise ValueError(f"the model has {k} classes but got {len(names)} class names and {len(colors)} colours")
    if any(len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors):
        raise ValueError("palette colours must be three integers in [0, 255]")
    return {
        "kind": "model",
        "format_version": FORMAT_VERSION,
        "pspnet_version": __version__,
        "model": config.to_dict(),
        "dataset": dataset,
        "classes": names,
        "palette": colors,
        "ignore_index": int(ignore_index),
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "inference": {
            "crop_size": list(crop_size or (info.crop_size if info else (473, 473))),
            "base_size": int(base_size or (info.base_size if info else 512)),
        },
        "source": dict(source) if source else None,
    }


def _tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def write_weights_file(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` (a JSON-able dict with ``kind``) atomically as a safetensors file."""
    path = Path(path)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    meta = dict(meta)
    meta["tensors_sha256"] = _tensors_sha256(tensors)
    data = safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(meta)})
    with atomic_open(path, "wb", durable=True) as handle:
        handle.write(data)
    return path


def save_model(model: PSPNet, path: str | os.PathLike[str], *, meta: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` as a model file. ``meta`` defaults to ``model.meta``, else :func:`make_meta` of its config.

    The ``model`` entry of the metadata is always the model's own config.
    """
    meta = dict(meta or model.meta or make_meta(model.config))
    meta["model"] = model.config.to_dict()
    meta["kind"] = "model"
    meta["format_version"] = FORMAT_VERSION
    return write_weights_file(path, model.state_dict(), meta)


def _pickle_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: a PyTorch pickle checkpoint; pspnet loads only its own safetensors model files "
        f"(nothing is unpickled) - {_CONVERT_HINT}"
    )


def _looks_like_pickle(data: bytes) -> bool:
    # PyTorch files are zip archives ("PK\x03\x04") or raw pickles (protocol byte 0x80 then a protocol number).
    return data[:4] == b"PK\x03\x04" or (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def read_weights_file(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a pspnet safetensors file: ``(tensors, meta)``. Raises :class:`CheckpointError` naming the file.

    Refuses pickles, truncated or corrupted files (header, metadata or tensor checksum), and files without
    pspnet metadata or with a newer format version.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise _pickle_error(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file ({len(data)} bytes; truncated?)")
    header_len = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + header_len]) if header_len <= len(data) - 8 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        if _looks_like_pickle(data):
            raise _pickle_error(path)
        if header_len > len(data) - 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file ({header_len} header bytes announced)")
        raise CheckpointError(f"{path}: not a readable safetensors file (garbled header; truncated or corrupted?)")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # safetensors raises its own SafetensorError; json a ValueError
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {error}") from None
    raw = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: not a pspnet checkpoint (no '{METADATA_KEY}' metadata); {_CONVERT_HINT}")
    try:
        meta = json.loads(raw)
    except ValueError as error:
        raise CheckpointError(f"{path}: corrupted pspnet metadata: {error}") from None
    if not isinstance(meta, dict) or meta.get("kind") not in ("model", "backbone", "train_state"):
        raise CheckpointError(f"{path}: pspnet metadata without a valid 'kind'")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r} is newer than this pspnet ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade pspnet"
        )
    expected = meta.get("tensors_sha256")
    if expected is not None and _tensors_sha256(tensors) != expected:
        raise CheckpointError(f"{path}: corrupted (the tensors do not match the checksum written with them)")
    return tensors, meta


def run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(N, run_dir/ckpt_N)`` for every checkpoint directory of a training run, sorted by N."""
    found = []
    for path in run_dir.glob("ckpt_*"):
        match = re.fullmatch(r"ckpt_(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """A model file, or for a training run directory its ``best/``, else its latest ``ckpt_N/`` model file."""
    path = Path(path)
    if not path.is_dir():
        return path
    best = path / "best" / "model.safetensors"
    if best.is_file():
        return best
    numbered = [d / "model.safetensors" for _, d in run_checkpoints(path) if (d / "model.safetensors").is_file()]
    if numbered:
        return numbered[-1]
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    raise CheckpointError(
        f"{path}: a directory with no model file (looked for best/model.safetensors, ckpt_N/model.safetensors "
        "and model.safetensors)"
    )


def check_state_dict(path: Path, tensors: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    """Raise a CheckpointError naming ``path`` and every unknown, missing or mis-shaped key."""
    unknown = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(tensors) & set(expected))
        if tensors[k].shape != expected[k].shape
    ]
    if unknown or missing or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit the model: "
            f"unknown keys {unknown[:10]}, missing keys {missing[:10]}, shape mismatches {wrong[:10]}"
        )


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> PSPNet:
    """Load a model file (or a run directory, see :func:`resolve_model_path`) and return it in eval mode.

    ``model.meta`` holds the file's metadata (classes, palette, normalisation, inference settings, ...).
    """
    path = resolve_model_path(path)
    tensors, meta = read_weights_file(path)
    if meta["kind"] == "train_state":
        raise CheckpointError(f"{path}: the training state of a run, not a model; load the model.safetensors beside it")
    if meta["kind"] == "backbone":
        raise CheckpointError(
            f"{path}: ImageNet backbone weights for training initialisation, not a segmentation model; "
            "use it to initialise training, or make a full model with 'pspnet convert --from official|mmseg'"
        )
    try:
        config = config_from_dict(ModelConfig, meta.get("model"))
    except ConfigError as error:
        raise CheckpointError(f"{path}: invalid model config in metadata: {error}") from None
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = build_model(config)
    check_state_dict(path, tensors, model.state_dict())
    model.load_state_dict(tensors, strict=True, assign=True)
    model.to(device).eval()
    model.meta = meta
    return model


def load_backbone_weights(backbone: ResNet, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy a backbone file's weights into ``backbone`` (every key must fit); returns the file's metadata."""
    path = Path(path)
    tensors, meta = read_weights_file(path)
    if meta["kind"] != "backbone":
        raise CheckpointError(f"{path}: a full model file, not a backbone file")
    spec = meta.get("backbone") or {}
    if (spec.get("depth"), spec.get("stem")) != (backbone.depth, backbone.stem_type):
        raise CheckpointError(
            f"{path}: backbone ResNet-{spec.get('depth')} stem {spec.get('stem')!r} does not match the model's "
            f"ResNet-{backbone.depth} stem {backbone.stem_type!r}"
        )
    check_state_dict(path, tensors, backbone.state_dict())
    backbone.load_state_dict(tensors, strict=True)
    return meta
