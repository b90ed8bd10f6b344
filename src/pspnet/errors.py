"""Exceptions a user can act on; every message names the file or argument at fault."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConversionError", "DataError"]


class CheckpointError(ValueError):
    """A model or backbone file cannot be used: missing, unreadable, corrupted, or of the wrong kind."""


class ConversionError(ValueError):
    """A foreign checkpoint cannot be converted: unsafe to unpickle, unknown or missing keys, wrong shapes."""


class DataError(ValueError):
    """A data set file or layout is unusable: missing, unreadable, mismatched; the message names the file."""
