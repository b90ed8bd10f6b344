"""``pspnet predict``: segment files, folders, globs and videos with a :class:`~pspnet.segmenter.Segmenter`.

:mod:`~pspnet.predict.pipeline` holds the whole command for now.
"""

from __future__ import annotations

from .inputs import VIDEO_SUFFIXES, Failure, InputItem, expand_inputs
from .outputs import UnsafeOutputs, output_names, plan_outputs
from .palette_file import load_palette
from .pipeline import (
    PredictReport,
    predict_inputs,
)
from .table import csv_cell

__all__ = [
    "VIDEO_SUFFIXES",
    "Failure",
    "InputItem",
    "PredictReport",
    "UnsafeOutputs",
    "csv_cell",
    "expand_inputs",
    "load_palette",
    "output_names",
    "plan_outputs",
    "predict_inputs",
]
