"""The output files of a run: their names, the safety plan made before any work, and writing an image's files.

For an input whose output name is NAME (:mod:`pspnet.predict.inputs`), under ``out``:

- ``NAME.png``: palette PNG of class ids (viewers show colours, :func:`pspnet.data.io.read_mask` gives the ids;
  a 16-bit grey PNG above 256 classes, which no palette can hold);
- ``NAME_color.png``: the colour map; with ``overlay`` ``NAME_overlay.png``: the colours blended over the photo with
  a legend of the classes present; with ``save_proba`` ``NAME_proba.npy``: float16 ``(K, H, W)`` probabilities;
- a video ``NAME.mp4|.avi|.mov`` gives ``NAME_overlay.mp4|.avi|.mov``, every frame blended with its colours;
- ``predictions.csv``: one row per image and per video with each class's pixel share (:mod:`pspnet.predict.table`).

Safety, all decided before the model runs (:func:`plan_outputs`):

- an output path that is an input file (the same file, symlinks and hard links included), or whose folder lies
  outside ``out``, refuses the whole run (:class:`UnsafeOutputs`; ``pspnet predict`` exits 2, nothing written);
- two inputs whose stems clash (``a.jpg``, ``a.png``) keep their suffix in the name (``a_jpg``, ``a_png``);
- any other two inputs whose outputs would share a path, compared case-insensitively (``x.png``'s colour map and
  the labels of an input ``x_color.png``): the later input in input order is reported, naming the earlier one and
  the path, and skipped; the earlier is predicted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from ..atomic import atomic_open
from ..data.io import write_image_png, write_mask_png
from ..visualize import colorize, overlay, with_legend
from .inputs import Failure, InputItem
from .table import CSV_NAME

__all__ = ["OutputWriter", "UnsafeOutputs", "output_names", "plan_outputs", "write_atomic"]


class UnsafeOutputs(ValueError):
    """The planned outputs would overwrite an input file or be written outside ``out``: nothing is done."""


def output_names(item: InputItem, *, overlay: bool, save_proba: bool) -> dict[str, str]:
    """The files an input writes, relative to ``out`` (posix), by kind: ``labels``, ``color``, ``overlay`` and
    ``proba`` for an image (the last two with their options), ``video`` for a video. The one naming rule."""
    if item.video:
        return {"video": f"{item.name}_overlay{item.source.suffix.lower()}"}
    names = {"labels": f"{item.name}.png", "color": f"{item.name}_color.png"}
    if overlay:
        names["overlay"] = f"{item.name}_overlay.png"
    if save_proba:
        names["proba"] = f"{item.name}_proba.npy"
    return names


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names, symlinks followed; None when there is none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _folder_key(folder: Path, cache: dict[Path, Path]) -> Path:
    """``folder`` with symlinks resolved (as far as it exists), cached: outputs share few folders."""
    if folder not in cache:
        cache[folder] = folder.resolve()
    return cache[folder]


def _check_name(item: InputItem) -> None:
    """Refuse an output name that is empty, absolute or has ``..`` or ``.`` parts (an InputItem built by hand)."""
    if any(part in ("", ".", "..") for part in item.name.split("/")):  # empty, absolute, "x/./a", "../a"
        raise UnsafeOutputs(f"{item.source}: output name {item.name!r} is not a plain relative path")


def plan_outputs(
    items: Sequence[InputItem], out: str | os.PathLike, *, overlay: bool, save_proba: bool
) -> tuple[list[InputItem], list[Failure]]:
    """Check every output path of a run before any work: ``(items to predict, failures)``.

    Raises :class:`UnsafeOutputs` naming both paths when an output (``predictions.csv`` included) is the same file
    as an input (symlinks and hard links included), or its folder, symlinks resolved, lies outside ``out``; and
    for a hand-made item whose name is not a plain relative path. An item with an output path (compared
    case-insensitively, symlinked folders resolved) that an earlier item or ``predictions.csv`` already has is a
    failure naming both inputs and the path, and is left out.
    """
    out = Path(out)
    root = out.resolve()
    inputs: dict[tuple[int, int], Path] = {}
    for item in items:
        identity = _identity(item.source)
        if identity is not None:
            inputs.setdefault(identity, item.source)
    folders: dict[Path, Path] = {}

    def checked(relative: str) -> str:
        """The output's case-insensitive key (its resolved path), after refusing an escape or an input."""
        path = out / relative
        folder = _folder_key(path.parent, folders)
        if folder != root and root not in folder.parents:
            raise UnsafeOutputs(
                f"output {path} would be written in {folder}, outside the output folder {out} (a symlinked "
                "folder or a name that leaves it); choose another output folder"
            )
        identity = _identity(path)
        if identity is not None and identity in inputs:
            raise UnsafeOutputs(
                f"output {path} is the input {inputs[identity]}: predicting would overwrite it; choose an output "
                "folder outside the input folders"
            )
        return str(folder / path.name).lower()

    taken: dict[str, str] = {checked(CSV_NAME): "the run's class shares"}
    kept: list[InputItem] = []
    failures: list[Failure] = []
    for item in items:
        _check_name(item)
        names = output_names(item, overlay=overlay, save_proba=save_proba)
        keys = {kind: checked(relative) for kind, relative in names.items()}
        clash = next((kind for kind, key in keys.items() if key in taken), None)
        if clash is not None:
            failures.append(
                Failure(
                    str(item.source),
                    f"{item.source}: its output {out / names[clash]} is already an output of "
                    f"{taken[keys[clash]]}; predict it into another output folder",
                )
            )
            continue
        for key in keys.values():
            taken[key] = str(item.source)
        kept.append(item)
    return kept, failures


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in its folder and a rename: never a half-written output."""
    with atomic_open(path, "wb") as handle:
        write(handle)


def _write_labels(path: Path, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    if labels.dtype == np.uint8:
        write_mask_png(path, labels, palette)
    else:  # above 256 classes: a 16-bit grey PNG (a palette holds at most 256 colours)
        image = Image.fromarray(labels.astype(np.uint16))
        write_atomic(path, lambda stream: image.save(stream, format="PNG"))


@dataclass
class OutputWriter:
    """Writes each image's files under ``out`` with the run's class names, palette and options."""

    out: Path
    classes: list[str]
    palette: list[tuple[int, int, int]]
    overlay: bool
    alpha: float
    save_proba: bool

    def names(self, item: InputItem) -> dict[str, str]:
        """The files ``item`` writes, relative to ``out``, by kind (:func:`output_names`)."""
        return output_names(item, overlay=self.overlay, save_proba=self.save_proba)

    def write_image(self, item: InputItem, image: np.ndarray, labels: np.ndarray, proba: np.ndarray | None) -> None:
        """Write ``item``'s files from its photo ``image`` (H, W, 3) uint8, its class ids ``labels`` (H, W) and,
        with ``save_proba``, its probabilities ``proba`` (K, H, W) float16."""
        names = self.names(item)
        _write_labels(self.out / names["labels"], labels, self.palette)
        color = colorize(labels, self.palette)
        write_image_png(self.out / names["color"], color)
        if self.overlay:
            blend = overlay(image, color, alpha=self.alpha)
            write_image_png(self.out / names["overlay"], with_legend(blend, labels, self.classes, self.palette))
        if proba is not None:
            write_atomic(self.out / names["proba"], lambda stream: np.save(stream, proba))
