"""``predictions.csv``: one row per image (and per video, over all its frames) with each class's pixel share.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (a file named ``=HYPERLINK(..).png``)
gets a leading ``'`` so that spreadsheets show it as text instead of running it as a formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["CSV_NAME", "csv_cell", "csv_writer", "pixel_counts", "table_header", "table_row"]

CSV_NAME = "predictions.csv"
# Characters that make a spreadsheet cell a formula (OWASP's list for CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def pixel_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel count per class, (K,) int64."""
    return np.bincount(labels.ravel(), minlength=num_classes)[:num_classes].astype(np.int64)


def table_header(classes: Sequence[str]) -> list[str]:
    """The header of ``predictions.csv``: input, output, height, width, frames, then one column per class."""
    return ["input", "output", "height", "width", "frames", *classes]


def table_row(source: Path, output: str, height: int, width: int, frames: int, counts: np.ndarray) -> list[object]:
    """One row of ``predictions.csv``: the input, its first output (relative to ``out``), its size in pixels, its
    frame count (1 for an image) and each class's share of its pixels, from ``counts`` (K,) (6 decimals)."""
    total = max(int(counts.sum()), 1)
    return [str(source), output, height, width, frames, *(f"{c / total:.6f}" for c in counts)]


def csv_cell(value: object) -> object:
    """A CSV cell that spreadsheets show as text: strings starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
    return (a formula to Excel, LibreOffice and Google Sheets) get a leading ``'``; other values are unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_writer(header: list[str], rows: Iterator[list[object]]) -> Callable[[IO[bytes]], None]:
    """A writer of ``predictions.csv``: UTF-8, formula-like cells neutralised (:func:`csv_cell`)."""

    def write(stream: IO[bytes]) -> None:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="")  # type: ignore[arg-type]
        writer = csv.writer(text)
        writer.writerow([csv_cell(cell) for cell in header])
        for row in rows:
            writer.writerow([csv_cell(cell) for cell in row])
        text.flush()
        text.detach()

    return write
