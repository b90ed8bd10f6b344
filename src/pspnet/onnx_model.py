"""An exported ONNX file run by ONNX Runtime, in the model's place: :class:`OnnxModel`.

:func:`pspnet.inference.infer_proba` calls ``model(batch)`` on normalised float32 images ``(N, 3, h, w)`` and wants
logits ``(N, K, h, w)``; an ONNX file exported with ``pspnet export MODEL --input normalized --output logits``
computes exactly that, so :class:`OnnxModel` wraps an ``onnxruntime.InferenceSession`` of such a file as that
callable, and the one implementation of the test protocol (whole image, sliding windows, scales, flip) runs
through ONNX Runtime unchanged. :class:`~pspnet.segmenter.Segmenter` and ``pspnet predict`` build one for a
``.onnx`` path (:func:`is_onnx_path`); the model card (classes, palette, normalisation, crop and base size) comes
from the file's metadata (:mod:`pspnet.weights.exported`).

ONNX Runtime runs the file on the CPU in float32 (an int8 file, ``pspnet export --int8``, takes and gives float32
too). The session uses ONNX Runtime's full graph optimisation (``ORT_ENABLE_ALL``: constant folding, node fusions,
layout transformations) and ``torch.get_num_threads()`` intra-op threads, the threads PyTorch would use (one per
physical core unless ``torch.set_num_threads`` or ``OMP_NUM_THREADS`` says otherwise), so that the two backends
compare on equal terms; operators run one after another (one inter-op thread), as the graph is a chain.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import CheckpointError
from .models.card import ModelCard
from .weights.exported import ExportedMetadata, parse_metadata

__all__ = ["BACKENDS", "OnnxModel", "is_onnx_path", "onnxruntime_version"]

# The backends a Segmenter runs on, by the model file's suffix: ".onnx" -> onnxruntime, everything else -> torch.
BACKENDS = ("torch", "onnxruntime")
REEXPORT = "pspnet export MODEL --out FILE.onnx --input normalized --output logits"


def is_onnx_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an ONNX file (suffix ``.onnx``, any case): the onnxruntime backend's files."""
    return Path(path).suffix.lower() == ".onnx"


def _import_onnxruntime(path: Path) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(
            f"{path}: running an ONNX file needs ONNX Runtime, which is not installed; install it with: "
            "pip install 'pspnet[onnx]'"
        ) from None
    return onnxruntime


def onnxruntime_version() -> str | None:
    """The installed ONNX Runtime's version, or None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


class OnnxModel(nn.Module):
    """An ONNX file exported with ``--input normalized --output logits``, run by ONNX Runtime on the CPU.

    ``model(x)``: normalised images ``(N, 3, h, w)`` (float32, CPU; other float dtypes are cast) -> logits
    ``(N, K, h, w)`` float32 on the CPU, as :class:`~pspnet.models.pspnet.PSPNet` in eval mode returns them.
    ``card`` (the file's model card), ``metadata`` (:class:`~pspnet.weights.exported.ExportedMetadata`),
    ``num_classes``, ``config`` and ``path`` describe it; ``backend`` is ``"onnxruntime"``.

    ``threads``: intra-op threads (default: ``torch.get_num_threads()``). A file that is not a pspnet ONNX export,
    or one exported with another input or output kind, is a :class:`~pspnet.errors.CheckpointError` naming it
    (and, for the wrong kind, the command that exports the right one); so is a missing ONNX Runtime.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None):
        super().__init__()
        path = Path(path)
        onnxruntime = _import_onnxruntime(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such ONNX file")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads) if threads is not None else torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        state = onnxruntime.capi.onnxruntime_pybind11_state  # ONNX Runtime's exception types
        failures = (state.Fail, state.InvalidArgument, state.InvalidGraph, state.InvalidProtobuf, state.NoSuchFile)
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except failures as error:  # not an ONNX file, or a graph ONNX Runtime cannot run
            detail = " ".join(str(error).split())[:300]
            raise CheckpointError(f"{path}: ONNX Runtime cannot load it: {detail}") from None
        props = dict(session.get_modelmeta().custom_metadata_map)
        if "format" not in props:
            raise CheckpointError(f"{path}: not a pspnet export (no pspnet metadata); export a model with: {REEXPORT}")
        metadata = parse_metadata(props, path)
        if metadata.input_kind != "normalized" or metadata.output_kind != "logits":
            raise CheckpointError(
                f"{path}: exported with --input {metadata.input_kind} --output {metadata.output_kind}; pspnet's "
                f"inference (Segmenter, pspnet predict) runs files that take normalised images and give logits: "
                f"re-export it with: {REEXPORT}"
            )
        self.path = path
        self.session = session
        self.metadata: ExportedMetadata = metadata
        self.card: ModelCard = metadata.card
        self.config = metadata.card.config
        self.num_classes = metadata.card.num_classes
        self.threads = options.intra_op_num_threads
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K, h, w)`` float32 (CPU) for normalised images ``x`` ``(N, 3, h, w)``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(x.shape)}")
        if x.device.type != "cpu":
            raise ValueError(f"{self.path}: ONNX Runtime runs on the CPU here; got a tensor on {x.device}")
        height, width = int(x.shape[2]), int(x.shape[3])
        low = self.metadata.min_size
        if low is not None and (height < low[0] or width < low[1]):
            raise ValueError(
                f"{self.path}: an image of {height}x{width} is below the file's smallest input {low[0]}x{low[1]}"
            )
        static = self.metadata.input_shape[2:]
        if all(isinstance(side, int) for side in static) and tuple(static) != (height, width):
            raise ValueError(
                f"{self.path}: exported for {static[0]}x{static[1]} images only (--static), got {height}x{width}"
            )
        array = np.ascontiguousarray(x.detach().to(torch.float32).numpy())
        (logits,) = self.session.run([self._output], {self._input: array})
        return torch.from_numpy(logits)

    def fold_batchnorm(self) -> OnnxModel:
        """Nothing to do: an exported file has its BatchNorm folded already."""
        return self

    def extra_repr(self) -> str:
        quantized = f", {self.metadata.quantization}" if self.metadata.quantization else ""
        return f"{self.path}, {self.num_classes} classes, {self.threads} threads{quantized}"
