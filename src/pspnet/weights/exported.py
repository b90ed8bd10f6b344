"""What an exported deployment file (``pspnet export``) says about itself: its metadata entries, written by
:func:`export_metadata` and read back by :func:`parse_metadata` through the model card's one parser.

An ONNX file keeps them as ``metadata_props``, a TorchScript or ExportedProgram archive as the extra file
:data:`METADATA_FILE`. They live here, with the model files, because two layers read them: ``pspnet export``
(:mod:`pspnet.export`) writes and checks the files, and :mod:`pspnet.onnx_model` runs an ONNX file for
:class:`~pspnet.segmenter.Segmenter` and ``pspnet predict``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..constants import __version__
from ..errors import ExportError
from ..models.card import ModelCard

__all__ = [
    "FORMATS",
    "INPUT_KINDS",
    "METADATA_FILE",
    "OUTPUT_KINDS",
    "PRECISIONS",
    "SUFFIXES",
    "ExportedMetadata",
    "export_metadata",
    "parse_metadata",
]

# The formats, each with the runtimes that serve it (shown by 'pspnet export --help').
FORMATS: dict[str, str] = {
    "onnx": "ONNX Runtime (CPU, CUDA, TensorRT, DirectML, CoreML execution providers; also onnxruntime-web), "
    "OpenVINO, TensorRT and other ONNX runtimes; no Python or PyTorch needed",
    "torchscript": "LibTorch (C++) and torch.jit.load in Python, without the pspnet package (torch 2.13 "
    "warns that torch.jit is deprecated: prefer exported-program)",
    "exported-program": "torch.export.load in Python, and the input of AOTInductor and ExecuTorch lowering",
}
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
INPUT_KINDS: dict[str, str] = {
    "uint8-rgb": "uint8 RGB images (N, H, W, 3) in 0-255, normalised inside the graph with the card's mean and std",
    "normalized": "float32 images (N, 3, H, W), already normalised: (RGB - mean) / std",
}
OUTPUT_KINDS: dict[str, str] = {
    "logits": "float32 logits (N, K, H, W)",
    "proba": "float32 class probabilities (N, K, H, W), the softmax over the K classes",
    "labels": "int64 class ids (N, H, W), the argmax over the classes",
}
# The arithmetic inside the graph. The input and output kinds above hold for both: a float16 file casts its
# (normalised) input to float16 inside and its logits back to float32 before the softmax or argmax.
PRECISIONS: dict[str, str] = {
    "fp32": "float32 weights and activations",
    "fp16": "float16 weights and activations for GPU runtimes, with float32 at the ends (the input normalised in "
    "float32, then cast; the logits cast to float32 before the softmax or argmax)",
}
METADATA_FILE = "pspnet_metadata.json"  # the extra file of a TorchScript or ExportedProgram archive
# Metadata entries stored as plain text; every other entry is JSON.
_TEXT_KEYS = ("pspnet_version", "dataset", "format", "input", "output", "exported_by", "quantization", "precision")


# -- metadata --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedMetadata:
    """What an exported file says about itself: the model ``card``, its ``format``, ``input_kind`` and
    ``output_kind`` (keys of :data:`INPUT_KINDS` / :data:`OUTPUT_KINDS`), ``input_shape`` and ``output_shape``
    (each side an integer, or the name of a dynamic one: ``batch``, ``height``, ``width``), ``min_size``
    ([height, width], the smallest input a dynamic export accepts; None for a static one), ``exported_by``,
    ``quantization`` (None for a float32 file; ``"int8 static, N calibration images"`` for an int8 one), and
    ``precision`` (a key of :data:`PRECISIONS`: ``"fp16"`` for a float16 file, else ``"fp32"``)."""

    card: ModelCard
    format: str
    input_kind: str
    output_kind: str
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    min_size: tuple[int, int] | None
    exported_by: str
    quantization: str | None = None
    precision: str = "fp32"


def _shapes(
    input_kind: str, output_kind: str, classes: int, static_size: tuple[int, int] | None
) -> tuple[list[int | str], list[int | str]]:
    height, width = static_size if static_size is not None else ("height", "width")
    image: list[int | str] = ["batch", height, width, 3] if input_kind == "uint8-rgb" else ["batch", 3, height, width]
    out: list[int | str] = ["batch", height, width] if output_kind == "labels" else ["batch", classes, height, width]
    return image, out


def export_metadata(
    card: ModelCard,
    *,
    format: str,
    input_kind: str,
    output_kind: str,
    static_size: tuple[int, int] | None = None,
    min_size: tuple[int, int] | None = None,
    precision: str = "fp32",
) -> dict[str, str]:
    """The string entries an exported file carries (an ONNX file's ``metadata_props``).

    The model card's entries under the keys of a model file (``model``, ``classes``, ``palette``,
    ``ignore_index``, ``normalization``, ``inference``, ``source``, ``pspnet_version``, and ``dataset`` when it has
    one), then ``format``, ``input`` and ``output`` (the kinds), ``input_shape`` and ``output_shape`` (lists of
    sizes and dynamic side names), ``min_size`` and ``exported_by`` (pspnet's and torch's versions), and
    ``precision: "fp16"`` in a float16 file only (a file without it is float32). Values are JSON (``json.loads``
    them), except the plain-text ``pspnet_version``, ``dataset``, ``format``, ``input``, ``output``,
    ``exported_by`` and ``precision``.
    """
    image, out = _shapes(input_kind, output_kind, card.num_classes, static_size)
    entries: dict[str, Any] = {
        **card.to_dict(),
        "format": format,
        "input": input_kind,
        "output": output_kind,
        "input_shape": image,
        "output_shape": out,
        "min_size": None if min_size is None else list(min_size),
        "exported_by": f"pspnet {__version__}, torch {torch.__version__}",
    }
    if entries["dataset"] is None:
        del entries["dataset"]
    if precision != "fp32":
        entries["precision"] = precision
    return {key: value if key in _TEXT_KEYS else json.dumps(value) for key, value in entries.items()}


def parse_metadata(props: Mapping[str, str], where: Any) -> ExportedMetadata:
    """:class:`ExportedMetadata` from the entries :func:`export_metadata` writes; the card by its one parser.
    A missing or malformed entry is an ExportError naming ``where``."""
    export_keys = ("format", "input", "output", "input_shape", "output_shape", "min_size", "exported_by")
    missing = [key for key in export_keys if key not in props]
    export_keys += ("quantization", "precision")  # optional: only a quantised / a float16 file has it
    if missing:
        raise ExportError(f"{where}: not a pspnet export (no metadata {', '.join(missing)})")
    values: dict[str, Any] = {}
    for key, text in props.items():
        if key in _TEXT_KEYS:
            values[key] = text
            continue
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError as error:
            raise ExportError(f"{where}: metadata {key} is not JSON ({error.msg})") from None
    values.setdefault("dataset", None)
    card = ModelCard.from_dict({key: values[key] for key in values if key not in export_keys}, where)
    values.setdefault("precision", "fp32")
    for key, allowed in (
        ("format", FORMATS),
        ("input", INPUT_KINDS),
        ("output", OUTPUT_KINDS),
        ("precision", PRECISIONS),
    ):
        if values[key] not in allowed:
            raise ExportError(f"{where}: metadata {key} must be one of {', '.join(allowed)}, got {values[key]!r}")
    min_size = values["min_size"]
    return ExportedMetadata(
        card=card,
        format=values["format"],
        input_kind=values["input"],
        output_kind=values["output"],
        input_shape=tuple(values["input_shape"]),
        output_shape=tuple(values["output_shape"]),
        min_size=None if min_size is None else (int(min_size[0]), int(min_size[1])),
        exported_by=values["exported_by"],
        quantization=values.get("quantization"),
        precision=values["precision"],
    )
