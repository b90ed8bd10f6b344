"""``pspnet predict``: segment files, folders, globs and videos with a :class:`~pspnet.segmenter.Segmenter`.

- :mod:`~pspnet.predict.inputs`: INPUT arguments (files, folders, globs) -> the images and videos to predict, with
  output names mirrored under ``out``;
- :mod:`~pspnet.predict.palette_file`: ``--palette``, a data set's colours or a palette file;
- :mod:`~pspnet.predict.outputs`: the files each input writes, the safety plan made before any work, and writing
  an image's files;
- :mod:`~pspnet.predict.table`: ``predictions.csv``, each class's pixel share per input, formula-like cells
  neutralised;
- :mod:`~pspnet.predict.videos`: video files for OpenCV (regular-file check, frame count, codecs);
- :mod:`~pspnet.predict.pipeline`: the threaded image/video pipeline and :func:`predict_inputs`, the entry point.
"""

from __future__ import annotations

from .inputs import VIDEO_SUFFIXES, Failure, InputItem, expand_inputs
from .outputs import UnsafeOutputs, output_names, plan_outputs
from .palette_file import load_palette
from .pipeline import PredictReport, predict_inputs
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
