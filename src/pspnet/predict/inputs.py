"""Expanding INPUT arguments (files, folders, globs, videos) into the files to predict and their output names.

Outputs mirror each input's path relative to its folder or glob base (a single file: its name), under ``out``.
The mirrored name never leaves ``out``: it is the normalised relative path with every ``..`` and ``.`` part and
any root dropped (``'*/../../data/x.png'`` gives ``data/x``), and before any work every output's folder, symlinks
resolved, must lie inside ``out`` (:func:`pspnet.predict.outputs.plan_outputs`).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..data.datasets import IMAGE_SUFFIXES

__all__ = ["VIDEO_SUFFIXES", "Failure", "InputItem", "expand_inputs"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")
_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class InputItem:
    """One file to predict: its path, the output stem relative to ``out`` (posix, no suffix) and its kind."""

    source: Path
    name: str
    video: bool = False


@dataclass(frozen=True)
class Failure:
    """An input that gave no output, and why (the message names the file)."""

    source: str
    message: str


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _wanted(path: Path) -> bool:
    """Files a folder or glob expansion predicts: images and videos by suffix, not hidden files."""
    return path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES and not path.name.startswith(".")


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def _folder_files(folder: Path, exclude: Path | None) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file() or _inside(path, exclude):
            continue
        if _wanted(path):
            files.append(path)
    return files


def _glob_base(pattern: str) -> Path:
    """The folder a glob's matches are named relative to: its leading components without wildcards."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _mirrored(path: Path, base: Path) -> str:
    """The output stem of ``path`` found under ``base`` (posix, no suffix): its normalised path relative to the
    base without ``..``, ``.`` or root parts, so that it stays inside ``out`` (``a/../../data/x.png`` -> ``data/x``)."""
    relative = Path(os.path.relpath(os.path.normpath(path), os.path.normpath(base)))
    parts = [part for part in relative.parts if part not in ("..", ".") and part != relative.anchor]
    if not parts:  # cannot happen for a file, whose own name is always kept
        parts = [path.name]
    return PurePosixPath(*parts).with_suffix("").as_posix()


def expand_inputs(
    inputs: Sequence[str | os.PathLike], *, exclude: str | os.PathLike | None = None
) -> tuple[list[InputItem], list[Failure]]:
    """Files, folders (recursive) and globs (``*``, ``?``, ``[..]``, ``**``; expanded here, so quoted globs work)
    -> items with mirrored output names, and failures for paths that do not exist or globs that match nothing.

    A file named on its own is always attempted (as a video by its suffix, else as an image); folders and globs
    contribute images (``IMAGE_SUFFIXES``) and videos (``VIDEO_SUFFIXES``), hidden files left out. Files under
    ``exclude`` (the output folder) are never inputs. Names are mirrored as the module docstring says (never
    ``..`` or absolute). When two inputs would get the same output name (``a.jpg`` and ``a.png``), each keeps its
    suffix in the name (``a_jpg``, ``a_png``); a clash that remains is left to
    :func:`~pspnet.predict.outputs.plan_outputs`, which also sees every input file it must not overwrite.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[tuple[Path, str]] = []
    failures: list[Failure] = []
    for raw in inputs:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_dir():
            files = _folder_files(path, skip)
            if not files:
                failures.append(
                    Failure(
                        text, f"{text}: folder holds no images or videos ({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})"
                    )
                )
            found += [(f, _mirrored(f, path)) for f in files]
        elif path.exists():
            found.append((path, _mirrored(path, path.parent)))
        elif _MAGIC.search(text):
            base = _glob_base(text)
            matches = []
            for match in sorted(glob.glob(text, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    matches += [(f, _mirrored(f, base)) for f in _folder_files(match_path, skip)]
                elif _wanted(match_path) and not _inside(match_path, skip):
                    matches.append((match_path, _mirrored(match_path, base)))
            if not matches:
                failures.append(Failure(text, f"{text}: the pattern matches no images or videos"))
            found += matches
        else:
            failures.append(Failure(text, f"{text}: no such file or folder"))

    # The same file named twice (a folder and a glob inside it) is predicted once.
    unique: dict[Path, tuple[Path, str]] = {}
    for path, name in found:
        unique.setdefault(path.resolve(), (path, name))
    entries = list(unique.values())
    counts: dict[str, int] = {}
    for _, name in entries:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    items: list[InputItem] = []
    for path, name in entries:
        if counts[name.lower()] > 1 and path.suffix:
            name = f"{name}_{path.suffix[1:].lower()}"
        items.append(InputItem(path, name, video=_is_video(path)))
    return items, failures
