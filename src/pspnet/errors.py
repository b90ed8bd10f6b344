"""Exceptions a user can act on; every message names the file or argument at fault."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConversionError",
    "DataError",
    "ExportError",
    "InputError",
    "LayoutError",
    "TrainingStopped",
    "show_warning_line",
]


def show_warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning`` that prints a warning (ours, Pillow's on a damaged file, PyTorch's) as one
    ``warning: ...`` line on stderr, without the source line Python prints under it: how pspnet shows warnings."""
    print(f"warning: {' '.join(str(message).split())}", file=file if file is not None else sys.stderr)


class InputError(ValueError):
    """Something a user gave cannot be used. ``argument``, when set, names the function argument at fault: the
    message then starts with it (``source 'x': choose one of ...``), and the command line shows the flag that
    argument was given as instead (``--from 'x': ...``). Another argument a message advises is written
    ``name=VALUE`` (``pass resume=RUN``), which the command line shows as ``--name VALUE``."""

    def __init__(self, message: str, *, argument: str | None = None):
        self.argument = argument
        self.detail = message
        super().__init__(self.naming(argument) if argument else message)

    def naming(self, name: str, detail: str | None = None) -> str:
        """The message with ``name`` (the argument, or the flag it was given as) in front of ``detail`` (default:
        this error's), joined by a space, or directly before a detail that starts with a colon."""
        detail = self.detail if detail is None else detail
        return f"{name}{'' if detail.startswith(':') else ' '}{detail}"


class ConfigError(InputError):
    """A configuration value or key is invalid; the message names it."""


class CheckpointError(InputError):
    """A model or backbone file cannot be used: missing, unreadable, corrupted, or of the wrong kind."""


class ConversionError(InputError):
    """A foreign checkpoint cannot be converted: unsafe to unpickle, unknown or missing keys, wrong shapes."""


class DataError(InputError):
    """A data set file or layout is unusable: missing, unreadable, mismatched; the message names the file."""


class ExportError(InputError):
    """A model cannot be exported as asked (an option its format lacks, a missing optional package), or the exported
    file does not compute what the model computes; nothing is left at the destination."""


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
