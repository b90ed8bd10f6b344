"""Model files (safetensors + metadata) and converters from other code bases' checkpoints."""

from .convert import SOURCES, ConversionReport, convert
from .model_file import load_backbone_weights, load_model, make_meta, read_weights_file, save_model

__all__ = [
    "SOURCES",
    "ConversionReport",
    "convert",
    "load_backbone_weights",
    "load_model",
    "make_meta",
    "read_weights_file",
    "save_model",
]
