"""Exceptions a user can act on; every message names the file or argument at fault."""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConversionError",
    "DataError",
    "InputError",
    "LayoutError",
    "TrainingStopped",
]


class InputError(ValueError):
    """Something a user gave cannot be used. ``argument``, when set, names the function argument at fault: the
    message then starts with it (``source 'x': choose one of ...``), and the command line shows the flag that
    argument was given as instead (``--from 'x': ...``). Another argument a message advises is written
    ``name=VALUE`` (``pass resume=RUN``), which the command line shows as ``--name VALUE``."""

    def __init__(self, message: str, *, argument: str | None = None):
        self.argument = argument
        self.detail = message
        separator = "" if message.startswith(":") else " "
        super().__init__(f"{argument}{separator}{message}" if argument else message)


class ConfigError(InputError):
    """A configuration value or key is invalid; the message names it."""


class CheckpointError(InputError):
    """A model or backbone file cannot be used: missing, unreadable, corrupted, or of the wrong kind."""


class ConversionError(InputError):
    """A foreign checkpoint cannot be converted: unsafe to unpickle, unknown or missing keys, wrong shapes."""


class DataError(InputError):
    """A data set file or layout is unusable: missing, unreadable, mismatched; the message names the file."""


class LayoutError(DataError):
    """The folder layout is unusable: missing root, split folder, list file, classes file; names the path."""

    def __init__(self, kind: str, path: str | os.PathLike, message: str):
        super().__init__(message)
        self.kind = kind
        self.path = Path(path)


class TrainingStopped(Exception):
    """:func:`pspnet.engine.train.train` stopped early on SIGTERM or SIGINT, after saving the state of its last
    completed step (not an error: the run can be resumed).

    Raised on every process alike. ``signum``: the signal acted on (the same on every process); ``iteration``: the
    optimiser steps done; ``checkpoint``: ``RUN/ckpt_{iteration}`` when it exists (written now or earlier), None
    when the run stopped before completing a step since its start and has no checkpoint of that iteration in RUN;
    ``saved``: whether this stop wrote it; ``is_main``: raised on rank 0 (the process that reports it).
    """

    def __init__(self, signum: int, *, iteration: int, checkpoint: Path | None, saved: bool, is_main: bool):
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint
        self.saved = saved
        self.is_main = is_main
        super().__init__(f"stopped by {self.signal_name} after iteration {iteration}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, what a shell reports for a process ended by it: 143 SIGTERM, 130 SIGINT."""
        return 128 + self.signum
