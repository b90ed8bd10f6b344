"""Plain values from files and flags: typed dataclasses from mappings, YAML without repeated keys, values in messages.

Every reader of user input (training configs, model-file metadata, ``classes.yaml``, palette files) shares these,
so a value is judged and shown the same way wherever it comes from. File metadata errors have one shape,
``PATH: metadata KEY must be RULE, got VALUE`` (:func:`metadata_error`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from .errors import CheckpointError, ConfigError

__all__ = [
    "check_keys",
    "coerce_fields",
    "config_from_dict",
    "is_int",
    "is_number",
    "is_rgb",
    "load_yaml",
    "metadata_error",
    "shown",
    "yaml_problem",
]

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON and YAML ``true`` are bools)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_rgb(value: Any) -> bool:
    """An RGB colour: a list or tuple of three integers in [0, 255] (not bools)."""
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(is_int(v) and 0 <= v <= 255 for v in value)


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict, short.maxset = 3, 8, 8, 6, 8
    short.maxstring, short.maxlong, short.maxother = 60, 40, 60
    return short


_SHORT_REPR = _short_repr()


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` (tuples as lists), cut to ``limit`` characters for an error message.

    Long or deeply nested values are abbreviated (``reprlib``: at most 8 items per list, 3 levels) *before* they
    are printed, so the work is bounded: a 300-byte YAML file of aliases can stand for millions of items.
    """
    text = _SHORT_REPR.repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a simple annotation (int, float, bool, str, tuple[int, ...]) and convert lists."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {shown(value)}")
        return tuple(_coerce(f"{name}[{i}]", v, item_type) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        (annotation,) = [a for a in options if a is not type(None)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {shown(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {shown(value)}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {shown(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {shown(value)}")
        return value
    raise TypeError(f"unsupported annotation for {name}: {annotation!r}")  # a programming error, not user input


def coerce_fields(cls: type, data: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
    """The values of ``data`` checked and converted by the annotations of the dataclass ``cls``'s fields of the same
    names (lists become tuples); errors name ``{name}.{field}`` (``name`` defaults to the class name)."""
    hints = typing.get_type_hints(cls)
    label = name or cls.__name__
    return {key: _coerce(f"{label}.{key}", value, hints[key]) for key, value in data.items()}


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build the dataclass ``cls`` from ``data``, refusing unknown keys, missing keys and values of the wrong type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    missing = [
        n
        for n, f in known.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{cls.__name__}: missing key(s) {missing}")
    return cls(**coerce_fields(cls, data))


def yaml_problem(error: Exception) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own message spans several lines)."""
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if problem is None:
        return " ".join(str(error).split())
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(problem)


@functools.cache
def _unique_key_loader() -> type:
    """A SafeLoader subclass whose mappings refuse a repeated key (made once, on first use: yaml loads lazily)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # a list or mapping as a key: let the constructor refuse it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return UniqueKeyLoader


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a mapping with a repeated key (PyYAML silently keeps the last value)."""
    import yaml

    return yaml.load(text, Loader=_unique_key_loader())


def metadata_error(path: Any, key: str, rule: str, value: Any) -> CheckpointError:
    """``PATH: metadata KEY must be RULE, got VALUE``: the one shape of a bad file-metadata field's message."""
    return CheckpointError(f"{path}: metadata {key} must be {rule}, got {shown(value)}")


def check_keys(path: Any, key: str, value: Any, keys: Sequence[str]) -> None:
    """``value`` (the metadata entry ``key``, or with ``key=""`` the metadata) is an object with exactly ``keys``;
    else a CheckpointError naming ``path``, the entry, and the unknown and missing keys."""
    if not isinstance(value, Mapping):
        raise metadata_error(path, key, f"an object with the keys {', '.join(keys)}", value)
    unknown, missing = sorted(set(value) - set(keys)), [k for k in keys if k not in value]
    if unknown or missing:
        raise CheckpointError(
            f"{path}: metadata{' ' + key if key else ''} must have exactly the keys {', '.join(keys)}"
            + (f"; unknown: {', '.join(map(repr, unknown))}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
