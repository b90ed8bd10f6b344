"""pspnet model files: one safetensors file with versioned JSON metadata; atomic writes; checked reads.

A model file holds the full state dict of a :class:`~pspnet.models.pspnet.PSPNet` and, under the safetensors
metadata key ``"pspnet"``, a JSON object: the envelope (``kind: "model"``, ``format_version: 1``, a SHA-256 of the
tensors so that corruption is detected on load) and the model card (:class:`~pspnet.models.card.ModelCard`: the
model config, class names, palette, ignore index, normalisation, the inference crop and base size, where the weights
came from). Every metadata field and every tensor (shape, dtype, finiteness) is checked on load by
:func:`validate_model_file`, and before writing by :func:`save_model`; docs/model_files.md lists the allowed values.

A backbone file (``kind: "backbone"``) holds ImageNet weights of a :class:`~pspnet.models.resnet.ResNet` for
training initialisation; it is not a model and :func:`load_model_file` refuses it. This module reads and writes
files only; what a training run directory holds is :mod:`pspnet.engine.checkpoint`'s business.

Nothing here unpickles anything: PyTorch ``.pth`` files are refused with a pointer to ``pspnet convert``.
"""

from __future__ import annotations

import dataclasses
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

from ..atomic import atomic_open
from ..constants import IMAGENET_MEAN, IMAGENET_STD, MAX_CLASSES, __version__
from ..data.classes import DATASETS, DatasetInfo, default_palette
from ..errors import CheckpointError
from ..models.build import build_model
from ..models.card import ModelCard
from ..models.config import ModelConfig
from ..models.network import SegmentationNetwork
from ..models.resnet import ResNet
from ..parsing import is_int, is_rgb, metadata_error, shown

__all__ = [
    "ENVELOPE_KEYS",
    "FORMAT_VERSION",
    "WEIGHT_DTYPES",
    "check_state_dict",
    "check_tensors",
    "key_mismatches",
    "load_backbone_weights",
    "load_model_file",
    "make_card",
    "model_metadata",
    "read_weights_file",
    "save_model",
    "tensors_sha256",
    "validate_model_file",
    "write_model_file",
    "write_weights_file",
]

FORMAT_VERSION = 1
METADATA_KEY = "pspnet"
_PICKLE_SUFFIXES = {".pth", ".pt", ".pkl", ".pickle", ".bin", ".tar", ".ckpt"}
_CONVERT_HINT = "convert it with 'pspnet convert --from official|mmseg SRC DST.safetensors'"
KINDS = ("model", "backbone", "train_state")
# Floating tensors may be stored in these dtypes; they are cast to the model's float32 on load. Integer buffers
# (BatchNorm's num_batches_tracked) are int64, as PyTorch keeps them.
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The metadata keys of every pspnet file, whatever its kind; a model file adds those of its card (CARD_KEYS).
ENVELOPE_KEYS = ("kind", "format_version", "tensors_sha256")


def make_card(
    config: ModelConfig,
    *,
    dataset: str | DatasetInfo | None = None,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    ignore_index: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_size: tuple[int, int] | None = None,
    base_size: int | None = None,
    source: Mapping[str, Any] | None = None,
) -> ModelCard:
    """The model card of a model of ``config``, checked (:meth:`ModelCard.from_dict`'s rules).

    ``dataset`` (a key of ``DATASETS``, or the :class:`DatasetInfo` of a folder data set) fills the name, classes,
    palette, ignore index, crop and base size. Without a data set, classes are named ``class_0..`` and coloured by
    :func:`default_palette`, and inference uses the paper's ADE20K/VOC settings (crop 473, base size 512). The ignore
    index defaults to the data set's, else 255, or 65535 for more than 255 classes (it must be no class id).
    Explicit arguments win. A ``ValueError`` names an argument that does not fit the model.
    """
    info = None
    if isinstance(dataset, DatasetInfo):
        info = dataset
    elif dataset is not None:
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
        info = DATASETS[dataset]
    if info is not None and info.num_classes != config.num_classes:
        raise ValueError(f"dataset {info.name!r} has {info.num_classes} classes but the model has {config.num_classes}")
    k = config.num_classes
    names = list(classes) if classes is not None else list(info.classes) if info else [f"class_{i}" for i in range(k)]
    colors = [list(c) for c in (palette if palette is not None else info.palette if info else default_palette(k))]
    if len(names) != k or len(colors) != k:
        raise ValueError(f"the model has {k} classes but got {len(names)} class names and {len(colors)} colours")
    if not all(is_rgb(c) for c in colors):
        raise ValueError("palette colours must be three integers in [0, 255]")
    if ignore_index is None:
        ignore_index = info.ignore_index if info else 255 if k <= 255 else MAX_CLASSES
    card = ModelCard(
        config=config,
        classes=tuple(names),
        palette=tuple((c[0], c[1], c[2]) for c in colors),
        ignore_index=int(ignore_index),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        crop_size=tuple(crop_size or (info.crop_size if info else (473, 473))),  # type: ignore[arg-type]
        base_size=int(base_size or (info.base_size if info else 512)),
        dataset=info.name if info else None,
        source=dict(source) if source else None,
    )
    return card.checked("model card")


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors, in name order (64 lowercase hex digits)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _non_finite(tensors: Mapping[str, Tensor]) -> str | None:
    """Which floating tensors hold NaN or infinity (the first by name and its count), or None when none does."""
    bad = [k for k in sorted(tensors) if tensors[k].is_floating_point() and not bool(torch.isfinite(tensors[k]).all())]
    if not bad:
        return None
    count = int((~torch.isfinite(tensors[bad[0]])).sum())
    more = f", and {len(bad) - 1} more tensor(s) do too" if len(bad) > 1 else ""
    return f"tensor '{bad[0]}' holds {count} non-finite value(s) (NaN or infinity){more}"


def _cpu_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}


def _write(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    data = safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(meta)})
    with atomic_open(path, "wb", durable=True) as handle:
        handle.write(data)
    return path


def write_weights_file(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` (a JSON-able dict with ``kind``) atomically as a safetensors file, with the
    ``tensors_sha256`` of the tensors added to ``meta``.

    Refuses (CheckpointError, nothing written, an existing file kept) tensors that hold NaN or infinity.
    """
    path = Path(path)
    tensors = _cpu_tensors(tensors)
    problem = _non_finite(tensors)
    if problem is not None:
        raise CheckpointError(f"{path}: not written: {problem}")
    meta = dict(meta)
    meta["tensors_sha256"] = tensors_sha256(tensors)
    return _write(path, tensors, meta)


def save_model(model: SegmentationNetwork, path: str | os.PathLike[str], *, card: ModelCard | None = None) -> Path:
    """Save ``model`` as a model file. ``card`` defaults to ``model.card``, else :func:`make_card` of its config.

    The card's ``config`` is always the model's own. The file is checked with :func:`validate_model_file` before it
    is written: a file :func:`load_model_file` would refuse (non-finite weights, float64 weights, a card out of
    range) is not written (CheckpointError; an existing file is kept).
    """
    if getattr(model, "inference_only", False):
        raise CheckpointError(f"{path}: not written: the model's BatchNorm was folded for inference; save it before")
    card = card or model.card or make_card(model.config)
    return write_model_file(path, model.state_dict(), dataclasses.replace(card, config=model.config))


def model_metadata(card: ModelCard) -> dict[str, Any]:
    """The metadata of a model file with ``card``: the envelope (kind, format version) and the card's entries; the
    tensors' checksum is added when the file is written (:func:`write_weights_file`, :func:`write_model_file`)."""
    return {"kind": "model", "format_version": FORMAT_VERSION, **card.to_dict()}


def write_model_file(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], card: ModelCard) -> Path:
    """Write ``tensors`` (a full PSPNet state dict) with ``card`` as a model file, atomically, after checking both
    with :func:`validate_model_file`: what :func:`load_model_file` would refuse is not written (CheckpointError
    ending in "not written"; an existing file is kept)."""
    path = Path(path)
    tensors = _cpu_tensors(tensors)
    meta = model_metadata(card)
    meta["tensors_sha256"] = tensors_sha256(tensors)
    try:
        validate_model_file(path, tensors, meta)
    except CheckpointError as error:
        raise CheckpointError(f"{error}; not written") from None
    return _write(path, tensors, meta)


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

    Refuses pickles, truncated or corrupted files (header, metadata or tensor checksum), files without pspnet
    metadata, of an unknown kind, of a newer format version, or without a well-formed ``tensors_sha256`` (see
    :func:`_check_envelope`). What the tensors and the rest of the metadata must be depends on the kind:
    :func:`validate_model_file`, :func:`load_backbone_weights`, :func:`pspnet.engine.checkpoint.load_checkpoint`.
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
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError; json a ValueError
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {error}") from None
    raw = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: not a pspnet checkpoint (no '{METADATA_KEY}' metadata); {_CONVERT_HINT}")
    try:
        meta = json.loads(raw)
    except ValueError as error:
        raise CheckpointError(f"{path}: corrupted pspnet metadata: {error}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: pspnet metadata must be a JSON object, got {type(meta).__name__}")
    _check_envelope(path, meta)
    if tensors_sha256(tensors) != meta["tensors_sha256"]:
        raise CheckpointError(f"{path}: corrupted (the tensors do not match the checksum written with them)")
    return tensors, meta


def key_mismatches(
    tensors: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """How ``tensors`` fail to fit ``expected`` (a state dict): its unknown keys, the missing keys, and the keys of
    another shape as ``"KEY: file (shape) vs model (shape)"``, each list sorted."""
    unknown = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(tensors) & set(expected))
        if tensors[k].shape != expected[k].shape
    ]
    return unknown, missing, wrong


def check_state_dict(path: Path, tensors: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> None:
    """Raise a CheckpointError naming ``path`` and every unknown, missing or mis-shaped key (:func:`key_mismatches`)."""
    unknown, missing, wrong = key_mismatches(tensors, expected)
    if unknown or missing or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit the model: "
            f"unknown keys {unknown[:10]}, missing keys {missing[:10]}, shape mismatches {wrong[:10]}"
        )


# -- validation ---------------------------------------------------------------------------------------------------

_NOT_PSPNETS = (
    "the file was not written by pspnet, or was rewritten by another tool; write it again with pspnet.save_model "
    "or 'pspnet convert' (docs/model_files.md shows how)"
)


def _check_envelope(path: Path, meta: Mapping[str, Any]) -> None:
    """The fields every pspnet file has, whatever its kind: ``kind``, ``format_version`` and ``tensors_sha256``.

    Every file pspnet writes carries the checksum, so a file without one (or with a malformed one) was not
    written by pspnet or was rewritten by another tool, and is refused.
    """
    if meta.get("kind") not in KINDS:
        raise metadata_error(path, "kind", "one of " + ", ".join(map(repr, KINDS)), meta.get("kind"))
    version = meta.get("format_version")
    if is_int(version) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: metadata format_version {version} is newer than this pspnet ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade pspnet"
        )
    if not is_int(version) or version < 1:
        versions = "1" if FORMAT_VERSION == 1 else f"an integer in [1, {FORMAT_VERSION}]"
        raise metadata_error(path, "format_version", versions, version)
    checksum = meta.get("tensors_sha256")
    if checksum is None:
        raise CheckpointError(f"{path}: no tensors checksum (metadata tensors_sha256); {_NOT_PSPNETS}")
    if not isinstance(checksum, str) or not re.fullmatch(r"[0-9a-f]{64}", checksum):
        raise CheckpointError(
            f"{path}: metadata tensors_sha256 must be a SHA-256 (64 lowercase hex digits), got {shown(checksum)}; "
            f"{_NOT_PSPNETS}"
        )


def check_tensors(path: Path, tensors: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Check ``tensors`` against ``expected`` (a module's state dict, on any device, "meta" included) and return
    them in the expected dtypes. Raises a CheckpointError naming ``path`` and the first key at fault.

    Keys and shapes must match (:func:`check_state_dict`); a floating tensor must be float32, float16 or bfloat16
    (it is cast to the expected dtype, float32); any other tensor must have the expected dtype (int64 for
    BatchNorm's ``num_batches_tracked``); no floating tensor may hold NaN or infinity.
    """
    check_state_dict(path, tensors, expected)
    for key in sorted(tensors):
        have, want = tensors[key].dtype, expected[key].dtype
        if want.is_floating_point and have not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"{path}: tensor '{key}' is {_dtype_name(have)}; weights must be "
                + ", ".join(map(_dtype_name, WEIGHT_DTYPES))
            )
        if not want.is_floating_point and have != want:
            raise CheckpointError(f"{path}: tensor '{key}' is {_dtype_name(have)}; must be {_dtype_name(want)}")
    problem = _non_finite(tensors)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    return {key: t.to(expected[key].dtype) for key, t in tensors.items()}


def validate_model_file(
    path: str | os.PathLike[str], tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> tuple[ModelCard, dict[str, Tensor]]:
    """Check a model file's metadata and tensors; return its model card and its tensors in the model's dtypes.

    The checks, in order, each raising a :class:`CheckpointError` that names ``path`` and the field or tensor:

    1. ``kind`` is ``"model"`` (backbone and training-state files are refused with a pointer to what they are);
       ``format_version`` an integer in [1, FORMAT_VERSION]; ``tensors_sha256`` 64 lowercase hex digits;
    2. the rest is a model card: :meth:`pspnet.models.card.ModelCard.from_dict` (exactly the keys of
       ``ENVELOPE_KEYS`` and ``CARD_KEYS``, the model config in range, class names, palette, ignore index,
       normalisation, inference sizes, ...);
    3. the tensors: those of the model the card describes, shapes, dtypes, finite (:func:`check_tensors`).

    docs/model_files.md lists the allowed values. The checksum itself is compared in :func:`read_weights_file`.
    """
    path = Path(path)
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{path}: pspnet metadata must be a JSON object, got {type(meta).__name__}")
    if meta.get("kind") == "train_state":
        raise CheckpointError(f"{path}: the training state of a run, not a model; load the model.safetensors beside it")
    if meta.get("kind") == "backbone":
        raise CheckpointError(
            f"{path}: ImageNet backbone weights for training initialisation, not a segmentation model; "
            "use it to initialise training, or make a full model with 'pspnet convert --from official|mmseg'"
        )
    _check_envelope(path, meta)
    card = ModelCard.from_dict(meta, path, other_keys=ENVELOPE_KEYS)
    with torch.device("meta"):  # shapes and dtypes only, no memory
        expected = build_model(card.config).state_dict()
    return card, check_tensors(path, tensors, expected)


def load_model_file(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> SegmentationNetwork:
    """Load a model file and return the model in eval mode, its card in ``model.card``.

    The file is checked by :func:`read_weights_file` (readable, checksum) and :func:`validate_model_file` (every
    card field, every tensor's shape, dtype and finiteness); float16/bfloat16 weights become float32. A training
    run directory is resolved to its model file one layer up, by :func:`pspnet.runs.load_model`.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory, not a model file (pspnet.load_model also reads run directories)")
    tensors, meta = read_weights_file(path)
    card, tensors = validate_model_file(path, tensors, meta)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = build_model(card.config)
    model.load_state_dict(tensors, strict=True, assign=True)
    model.to(device).eval()
    model.card = card
    return model


def load_backbone_weights(backbone: ResNet, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy a backbone file's weights into ``backbone`` (every key must fit, weights float32/float16/bfloat16 and
    finite, see :func:`check_tensors`); returns the file's metadata."""
    path = Path(path)
    tensors, meta = read_weights_file(path)
    if meta["kind"] != "backbone":
        raise CheckpointError(f"{path}: a full model file, not a backbone file")
    spec = meta.get("backbone") if isinstance(meta.get("backbone"), dict) else {}
    if (spec.get("depth"), spec.get("stem")) != (backbone.depth, backbone.stem_type):
        raise CheckpointError(
            f"{path}: backbone ResNet-{spec.get('depth')} stem {spec.get('stem')!r} does not match the model's "
            f"ResNet-{backbone.depth} stem {backbone.stem_type!r}"
        )
    backbone.load_state_dict(check_tensors(path, tensors, backbone.state_dict()), strict=True)
    return meta
