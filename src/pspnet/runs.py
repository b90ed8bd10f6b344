"""Loading a model from a model file or a training run directory (its ``best/``, else its latest ``ckpt_N/``).

This is the one place that joins the two: :mod:`pspnet.weights.model_file` reads files and knows nothing of runs,
:mod:`pspnet.engine.checkpoint` owns the run directory's layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import heap
from .engine.checkpoint import run_checkpoints
from .errors import CheckpointError
from .models.network import SegmentationNetwork
from .weights.model_file import load_model_file

__all__ = ["load_model", "resolve_model_path"]

MODEL_FILE = "model.safetensors"


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """A model file as given, or for a training run directory its ``best/``, else its latest ``ckpt_N/`` model file
    (else a ``model.safetensors`` directly inside it). A directory with none of these is a CheckpointError."""
    path = Path(path)
    if not path.is_dir():
        return path
    best = path / "best" / MODEL_FILE
    if best.is_file():
        return best
    numbered = [d / MODEL_FILE for _, d in run_checkpoints(path) if (d / MODEL_FILE).is_file()]
    if numbered:
        return numbered[-1]
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    raise CheckpointError(
        f"{path}: a directory with no model file (looked for best/{MODEL_FILE}, ckpt_N/{MODEL_FILE} and {MODEL_FILE})"
    )


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> SegmentationNetwork:
    """Load a model file or a training run directory (:func:`resolve_model_path`) and return the model in eval mode.

    Every card field and tensor is checked (:func:`pspnet.weights.model_file.load_model_file`); float16/bfloat16
    weights become float32. ``model.card`` holds its :class:`~pspnet.models.card.ModelCard` (classes, palette,
    normalisation, inference sizes, ...), ``model.meta`` the same as the plain dict the file stores.

    Freed memory is kept in the process for the next forward pass from here on (:mod:`pspnet.heap`).
    """
    heap.keep_freed_memory()
    return load_model_file(resolve_model_path(path), device=device)
