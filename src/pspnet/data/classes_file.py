"""Parsing a folder data set's ``classes.yaml``: class names and colours, ignore index and colour, crop/base size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import LayoutError
from ..parsing import is_rgb, load_yaml, shown, yaml_problem
from .classes import DatasetInfo, default_palette

__all__ = ["load_classes_file"]

_CLASSES_FILE_KEYS = {"classes", "ignore_index", "ignore_color", "name", "crop_size", "base_size"}


def _colour(value: Any, path: Path, key: str) -> tuple[int, int, int]:
    if not is_rgb(value):
        raise LayoutError(
            "bad_classes_file",
            path,
            f"{path}: key '{key}': expected [r, g, b] with integers 0..255, got {shown(value)}",
        )
    return (value[0], value[1], value[2])


def _positive_int(value: Any, path: Path, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LayoutError(
            "bad_classes_file", path, f"{path}: key '{key}': expected a positive integer, got {shown(value)}"
        )
    return value


def load_classes_file(path: str | os.PathLike, *, name: str | None = None) -> tuple[DatasetInfo, tuple | None]:
    """Read and validate a folder data set's ``classes.yaml``: (DatasetInfo, ignore colour or None).

    Format (only ``classes`` is required)::

        name: potholes            # default: the data set folder's name
        classes:                  # in train-id order: the first is 0
          - {name: road, color: [128, 64, 128]}
          - {name: pothole, color: [255, 0, 0]}
          - crack                 # a bare name: colour from the default (VOC) palette
        ignore_index: 255         # mask value that is not learned (default 255); must not be a class id
        ignore_color: [0, 0, 0]   # RGB masks only: this colour becomes ignore_index
        crop_size: [473, 473]     # training crop (H, W) and inference settings (defaults: 473, 512)
        base_size: 512

    Every error names the file and the key at fault; a key given twice is an error (YAML would keep the last).
    """
    path = Path(path)
    if not path.is_file():
        raise LayoutError(
            "missing_classes_file",
            path,
            f"{path}: classes file not found (a folder data set needs "
            "ROOT/classes.yaml listing its classes; see docs/data.md)",
        )
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))  # a key given twice is an error, as in configs
    except (OSError, UnicodeDecodeError) as error:
        raise LayoutError("bad_classes_file", path, f"{path}: cannot read: {error}") from error
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # also integers of 4300+ digits, deep nesting
        raise LayoutError("bad_classes_file", path, f"{path}: not valid YAML: {yaml_problem(error)}") from error
    if not isinstance(data, dict):
        raise LayoutError(
            "bad_classes_file", path, f"{path}: expected a mapping with a 'classes' key, got {type(data).__name__}"
        )
    unknown = sorted(set(map(str, data)) - _CLASSES_FILE_KEYS)
    if unknown:
        raise LayoutError(
            "bad_classes_file",
            path,
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(_CLASSES_FILE_KEYS))}",
        )
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries:
        raise LayoutError(
            "bad_classes_file",
            path,
            f"{path}: key 'classes': expected a non-empty list of "
            f"{{name: ..., color: [r, g, b]}}, got {shown(entries)}",
        )
    names: list[str] = []
    colours: list[tuple[int, int, int] | None] = []
    for i, entry in enumerate(entries):
        key = f"classes[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise LayoutError(
                "bad_classes_file",
                path,
                f"{path}: key '{key}': expected {{name: ..., color: [r, g, b]}} or a name, got {shown(entry)}",
            )
        extra = sorted(set(map(str, entry)) - {"name", "color"})
        if extra:
            raise LayoutError(
                "bad_classes_file",
                path,
                f"{path}: key '{key}': unknown key(s) {', '.join(map(repr, extra))}; allowed: 'name', 'color'",
            )
        class_name = entry.get("name")
        if not isinstance(class_name, str) or not class_name.strip():
            raise LayoutError(
                "bad_classes_file",
                path,
                f"{path}: key '{key}.name': expected a non-empty string, got {shown(class_name)}",
            )
        if class_name in names:
            raise LayoutError(
                "bad_classes_file",
                path,
                f"{path}: key '{key}.name': {class_name!r} is also class "
                f"{names.index(class_name)}; class names must be unique",
            )
        names.append(class_name)
        colours.append(_colour(entry["color"], path, f"{key}.color") if "color" in entry else None)
    ignore_index = data.get("ignore_index", 255)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool) or ignore_index < len(names):
        raise LayoutError(
            "bad_classes_file",
            path,
            f"{path}: key 'ignore_index': expected an integer >= the number "
            f"of classes ({len(names)}) so that it is no class id, got "
            f"{shown(ignore_index)}",
        )
    if ignore_index > 65535:
        raise LayoutError(
            "bad_classes_file",
            path,
            f"{path}: key 'ignore_index': must fit a 16-bit PNG (<= 65535), got {ignore_index}",
        )
    if len(names) > 65535:
        raise LayoutError("bad_classes_file", path, f"{path}: key 'classes': at most 65535 classes")
    ignore_colour = _colour(data["ignore_color"], path, "ignore_color") if "ignore_color" in data else None
    defaults = default_palette(len(names))
    palette = tuple(c if c is not None else defaults[i] for i, c in enumerate(colours))
    if ignore_colour is not None and ignore_colour in palette:
        clash = names[palette.index(ignore_colour)]
        raise LayoutError(
            "bad_classes_file",
            path,
            f"{path}: key 'ignore_color': {list(ignore_colour)} is also the colour of class {clash!r}",
        )
    crop = data.get("crop_size", [473, 473])
    if isinstance(crop, int):
        crop = [crop, crop]
    if not isinstance(crop, list) or len(crop) != 2:
        raise LayoutError(
            "bad_classes_file", path, f"{path}: key 'crop_size': expected [height, width], got {shown(crop)}"
        )
    crop_size = (_positive_int(crop[0], path, "crop_size[0]"), _positive_int(crop[1], path, "crop_size[1]"))
    base_size = _positive_int(data.get("base_size", 512), path, "base_size")
    dataset_name = data.get("name", name if name is not None else "folder")
    if not isinstance(dataset_name, str) or not dataset_name:
        raise LayoutError("bad_classes_file", path, f"{path}: key 'name': expected a string, got {shown(dataset_name)}")
    info = DatasetInfo(
        name=dataset_name,
        classes=tuple(names),
        palette=palette,
        crop_size=crop_size,
        base_size=base_size,
        ignore_index=ignore_index,
    )
    return info, ignore_colour
