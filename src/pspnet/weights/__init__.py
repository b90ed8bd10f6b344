"""Model files (safetensors + model card) and converters from other code bases' checkpoints."""

from .convert import SOURCES, ConversionReport, convert
from .model_file import load_backbone_weights, load_model_file, make_card, read_weights_file, save_model

__all__ = [
    "SOURCES",
    "ConversionReport",
    "convert",
    "load_backbone_weights",
    "load_model_file",
    "make_card",
    "read_weights_file",
    "save_model",
]
