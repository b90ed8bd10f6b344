"""Typed configuration objects and their (de)serialisation to plain dicts."""

from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "ModelConfig",
    "TrainConfig",
    "check_model_config",
    "config_from_dict",
    "load_train_config",
    "load_yaml",
    "yaml_problem",
]


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
    ppm: bool = True  # False only for ablations: the head then sees layer4 alone (no global context)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["bins"] = list(self.bins)
        return out


# Bounds of the model fields. A class id must fit a 16-bit PNG label map (with the ignore value above the class
# ids); the pyramid's branches share layer4's 512 or 2048 channels equally; a bin finer than the feature map only
# repeats its pixels (128 = a 1024-pixel side at output stride 8); no published head is wider than 8192 channels.
MAX_CLASSES = 65535
BIN_COUNTS = (1, 2, 4, 8)
MAX_BIN = 128
MAX_CHANNELS = 8192


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON and YAML ``true`` are bools)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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


def _model_rules() -> list[tuple[str, Any, str]]:
    """(field, predicate, allowed values) of every ModelConfig field; the one statement of their ranges."""
    from .models.resnet import STAGE_BLOCKS, STEMS

    def is_bool(v: Any) -> bool:
        return isinstance(v, bool)

    def channels(v: Any) -> bool:
        return is_int(v) and 1 <= v <= MAX_CHANNELS

    def bins(v: Any) -> bool:
        # each pyramid branch gets an equal share of layer4's 512 or 2048 channels: 1, 2, 4 or 8 branches
        return isinstance(v, (tuple, list)) and len(v) in BIN_COUNTS and all(is_int(b) and 1 <= b <= MAX_BIN for b in v)

    return [
        ("num_classes", lambda v: is_int(v) and 1 <= v <= MAX_CLASSES, f"an integer in [1, {MAX_CLASSES}]"),
        ("depth", lambda v: is_int(v) and v in STAGE_BLOCKS, f"one of {sorted(STAGE_BLOCKS)}"),
        ("stem", lambda v: isinstance(v, str) and v in STEMS, f"one of {sorted(STEMS)}"),
        ("output_stride", lambda v: is_int(v) and v in (8, 16, 32), "8, 16 or 32"),
        ("contract_dilation", is_bool, "true or false"),
        ("bins", bins, f"a list of 1, 2, 4 or 8 integers in [1, {MAX_BIN}]"),
        ("head_channels", channels, f"an integer in [1, {MAX_CHANNELS}]"),
        ("aux", is_bool, "true or false"),
        ("aux_channels", channels, f"an integer in [1, {MAX_CHANNELS}]"),
        ("dropout", lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        ("align_corners", is_bool, "true or false"),
        ("ppm", is_bool, "true or false"),
    ]


def check_model_config(config: ModelConfig | TrainConfig, where: str, *, prefix: str = "") -> None:
    """Raise a ConfigError ``"{where}: {prefix}{field} must be ..., got ..."`` for the first model field of
    ``config`` that is out of range (types included, so a config built in code is checked too).

    ``config`` is a :class:`ModelConfig` or a :class:`TrainConfig` (which has every model field but
    ``num_classes``). Used by training configs, model files (:mod:`pspnet.weights.model_file`) and
    :class:`~pspnet.models.pspnet.PSPNet` itself, so the rules are written once.
    """
    for name, allowed, rule in _model_rules():
        if hasattr(config, name) and not allowed(getattr(config, name)):
            raise ConfigError(f"{where}: {prefix}{name} must be {rule}, got {shown(getattr(config, name))}")


T = TypeVar("T")


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


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, optimisation, precision, checkpoints. Defaults are the official recipe.

    YAML files in ``configs/`` are flat mappings of these fields (no inheritance). Model fields are those of
    :class:`ModelConfig` except ``num_classes``, which comes from the data set. Sizes are (height, width) pixels.
    """

    # data
    dataset: str
    root: str
    train_split: str = "train"
    val_split: str | None = "val"
    train_exclude: tuple[str, ...] = ()  # sample-name prefixes held out of training (e.g. a CamVid sequence)
    val_include: tuple[str, ...] = ()  # validate only on names with these prefixes (e.g. that held-out sequence)
    crop_size: tuple[int, ...] = (473, 473)
    scale_range: tuple[float, ...] = (0.5, 2.0)
    rotate_range: tuple[float, ...] = (-10.0, 10.0)
    rotate_p: float = 0.5
    blur_p: float = 0.5
    flip_p: float = 0.5
    workers: int = 2
    # model (num_classes comes from the data set)
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
    ppm: bool = True
    backbone_init: str | None = None  # a backbone file from 'pspnet convert --from official-backbone|torchvision'
    freeze_bn: bool = False  # BatchNorm in eval mode during training (tiny per-process batches)
    # optimisation (official: SGD 0.9, wd 1e-4, lr 0.01, 10x head, poly 0.9, 16 images per step)
    batch_size: int = 16  # images per optimiser step over all processes and accumulation steps
    accumulate: int = 1  # micro-batches per process per optimiser step
    lr: float = 0.01
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    aux_weight: float = 0.4
    ignore_index: int = 255
    class_weighting: str = "none"  # none (official) | median_frequency (computed from the training masks at start)
    iterations: int | None = None  # budget in optimiser steps; or
    epochs: int | None = None  # budget in passes over the training split
    # speed
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 with loss scaling, GPU only)
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    # bookkeeping
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    val_every: int | None = None  # iterations between validations (default: at every checkpoint)
    val_limit: int | None = None
    val_mode: str = "auto"
    checkpoint_every: int = 1000
    keep_last: int = 2
    tensorboard: bool = False

    def model_config(self, num_classes: int) -> ModelConfig:
        names = {f.name for f in fields(ModelConfig)} - {"num_classes"}
        return ModelConfig(num_classes=num_classes, **{n: getattr(self, n) for n in names})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


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

    return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass


def load_train_config(path: str | None, overrides: list[str] | None = None, **base: Any) -> TrainConfig:
    """Read a flat YAML config (or start from ``base``), apply ``key=value`` overrides (values parsed as YAML),
    and validate every key and type. Errors name the file or the override; a key given twice in the file is an
    error (YAML would keep the last value silently)."""
    import yaml

    data: dict[str, Any] = dict(base)
    if path is not None:
        try:
            text = Path(path).read_bytes().decode("utf-8")
            loaded = load_yaml(text)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the config: {error.strerror or error}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML text file (not UTF-8 text)") from None
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(error)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config is a flat mapping of keys to values")
        bad_keys = [key for key in loaded if not isinstance(key, str)]
        if bad_keys:
            raise ConfigError(f"{path}: config keys are names, got {bad_keys[0]!r}")
        data.update(loaded)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            data[key.strip()] = load_yaml(value)
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {yaml_problem(error)}") from None
    where = " + ".join(filter(None, [path, "--set" if overrides else None])) or "config"
    try:
        config = config_from_dict(TrainConfig, data)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    _validate_train(config, where)
    return config


def _validate_train(c: TrainConfig, where: str) -> None:
    def fail(message: str) -> None:
        raise ConfigError(f"{where}: {message}")

    if (c.iterations is None) == (c.epochs is None):
        fail("give exactly one budget: iterations or epochs")
    if (c.iterations or c.epochs or 0) < 1:
        fail("the budget (iterations or epochs) must be positive")
    if len(c.crop_size) != 2 or min(c.crop_size) < 1:
        fail(f"crop_size must be [height, width], got {list(c.crop_size)}")
    if len(c.scale_range) != 2 or not 0 < c.scale_range[0] <= c.scale_range[1]:
        fail(f"scale_range must be [low, high] with 0 < low <= high, got {list(c.scale_range)}")
    if len(c.rotate_range) != 2 or c.rotate_range[0] > c.rotate_range[1]:
        fail(f"rotate_range must be [low, high] degrees, got {list(c.rotate_range)}")
    if c.precision not in ("fp32", "bf16", "fp16"):
        fail(f"precision must be fp32, bf16 or fp16, got {c.precision!r}")
    if c.batch_size < 1 or c.accumulate < 1:
        fail("batch_size and accumulate must be positive")
    if c.checkpoint_every < 1 or c.keep_last < 1 or c.log_every < 1:
        fail("checkpoint_every, keep_last and log_every must be positive")
    from .data.datasets import DATASET_READERS

    if c.dataset not in DATASET_READERS:
        fail(f"dataset must be one of {sorted(DATASET_READERS)}, got {c.dataset!r}")
    if c.class_weighting not in ("none", "median_frequency"):
        fail(f"class_weighting must be none or median_frequency, got {c.class_weighting!r}")
    if c.val_mode not in ("auto", "whole", "slide"):
        fail(f"val_mode must be auto, whole or slide, got {c.val_mode!r}")
    for key in ("rotate_p", "blur_p", "flip_p"):
        if not 0.0 <= getattr(c, key) <= 1.0:
            fail(f"{key} must be within [0, 1], got {getattr(c, key)}")
    check_model_config(c, where)
    if c.workers < 0 or (c.val_limit is not None and c.val_limit < 1) or (c.val_every is not None and c.val_every < 1):
        fail("workers must be >= 0, val_limit and val_every positive")
    for f in fields(c):
        value = getattr(c, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            fail(f"{f.name} must be finite, got {shown(value)}")
    if c.lr < 0 or c.head_lr_mult < 0 or c.weight_decay < 0 or not 0 <= c.momentum < 1:
        fail("lr, head_lr_mult and weight_decay must be >= 0 and momentum in [0, 1)")
    if c.poly_power < 0:  # (1 - i / max_iter) ** power: a negative power divides by zero at the last step
        fail(f"poly_power must be >= 0 (0: a constant learning rate), got {c.poly_power}")
    if c.aux_weight < 0:
        fail(f"aux_weight must be >= 0, got {c.aux_weight}")
    if c.device != "auto":
        import torch

        try:
            torch.device(c.device)
        except (RuntimeError, ValueError):
            fail(f"device must be auto or a torch device name (cpu, cuda, cuda:1, mps), got {c.device!r}")
