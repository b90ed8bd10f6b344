"""Typed configuration objects and their (de)serialisation to plain dicts."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, TypeVar

__all__ = ["ConfigError", "ModelConfig", "config_from_dict"]


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a PSPNet; the defaults are the official PSPNet50.

    Fields map one-to-one onto the keyword arguments of :class:`pspnet.models.pspnet.PSPNet`.
    """

    num_classes: int
    depth: int = 50
    stem: str = "deep"
    output_stride: int = 8
    contract_dilation: bool = False
    bins: tuple[int, ...] = (1, 2, 3, 6)
    head_channels: int = 512
    aux: bool = True
    aux_channels: int = 256
    dropout: float = 0.1
    align_corners: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["bins"] = list(self.bins)
        return out


T = TypeVar("T")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a simple annotation (int, float, bool, str, tuple[int, ...]) and convert lists."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return tuple(_coerce(f"{name}[{i}]", v, item_type) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        (annotation,) = [a for a in options if a is not type(None)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation for {name}: {annotation!r}")  # a programming error, not user input


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build the dataclass ``cls`` from ``data``, refusing unknown keys and values of the wrong type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
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
    values = {name: _coerce(f"{cls.__name__}.{name}", value, hints[name]) for name, value in data.items()}
    return cls(**values)
