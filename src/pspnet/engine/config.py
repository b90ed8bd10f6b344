"""``TrainConfig``: one training run's settings, read from a flat YAML file plus ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..data.datasets import DATASET_READERS
from ..errors import ConfigError
from ..inference import MODES, PRECISION_CHOICES
from ..models.config import ModelConfig, check_model_config
from ..parsing import coerce_fields, load_yaml, shown, yaml_problem

__all__ = ["CLASS_WEIGHTINGS", "TrainConfig", "load_train_config", "train_config_from_dict"]

# How the loss weights classes: none (official) | median_frequency (computed from the training masks at start).
CLASS_WEIGHTINGS = ("none", "median_frequency")
_MODEL_KEYS = tuple(f.name for f in fields(ModelConfig))


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, optimisation, precision, checkpoints. Defaults are the official recipe.

    YAML files in ``configs/`` are flat mappings: the keys of :class:`~pspnet.models.config.ModelConfig` sit beside
    the others and are gathered into ``model`` (:func:`train_config_from_dict`); ``model.num_classes`` may be left
    out, the data set supplies it (given, it must match). Sizes are (height, width) pixels.
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
    # model: the PSPNet's fields (flat keys in YAML)
    model: ModelConfig = field(default_factory=ModelConfig)
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
    class_weighting: str = "none"  # one of CLASS_WEIGHTINGS
    iterations: int | None = None  # budget in optimiser steps; or
    epochs: int | None = None  # budget in passes over the training split; or
    time_budget: float | None = None  # budget in minutes of training steps, turned into steps at the start
    # speed
    precision: str = "fp32"  # fp32 | bf16 | fp16 (loss scaling, GPU only) | auto (bf16 where native, else fp32)
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
        """The model of this run for a data set of ``num_classes`` classes."""
        return dataclasses.replace(self.model, num_classes=num_classes)

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping a YAML config holds (tuples as lists; ``num_classes`` only when given)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "model":
                out.update({k: v for k, v in value.to_dict().items() if not (k == "num_classes" and v is None)})
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a flat mapping (a YAML config): unknown or missing keys and values of the wrong type are
    refused (:class:`ConfigError` naming the key); the model's keys go into ``model``. Ranges are checked by
    :func:`load_train_config`."""
    if not isinstance(data, dict):
        raise ConfigError(f"TrainConfig: expected a mapping, got {type(data).__name__}")
    run_keys = [f.name for f in fields(TrainConfig) if f.name != "model"]
    known = sorted([*run_keys, *_MODEL_KEYS])
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"TrainConfig: unknown key(s) {unknown}; known keys are {known}")
    missing = [
        f.name
        for f in fields(TrainConfig)
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"TrainConfig: missing key(s) {missing}")
    model = {k: v for k, v in data.items() if k in _MODEL_KEYS}
    run = {k: v for k, v in data.items() if k not in _MODEL_KEYS}
    model_values = coerce_fields(ModelConfig, model, name="TrainConfig")
    return TrainConfig(**coerce_fields(TrainConfig, run), model=ModelConfig(**model_values))


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
            raise ConfigError(f"{item!r}: expected key=value", argument="overrides")
        try:
            data[key.strip()] = load_yaml(value)
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            raise ConfigError(
                f"{item!r}: the value is not valid YAML: {yaml_problem(error)}", argument="overrides"
            ) from None
    try:
        config = train_config_from_dict(data)
        _validate_train(config)
    except ConfigError as error:
        if path is None and overrides:
            raise ConfigError(f": {error}", argument="overrides") from None
        where = " + ".join(filter(None, [path, "overrides" if overrides else None])) or "config"
        raise ConfigError(f"{where}: {error}") from None
    return config


def _validate_train(c: TrainConfig) -> None:
    """Raise a ConfigError naming the first field of ``c`` out of range (the types are checked when it is read)."""

    def fail(message: str) -> None:
        raise ConfigError(message)

    budgets = [value for value in (c.iterations, c.epochs, c.time_budget) if value is not None]
    if len(budgets) != 1:
        fail("give exactly one budget: iterations, epochs or time_budget (minutes)")
    if budgets[0] <= 0 or (c.time_budget is None and budgets[0] < 1):
        fail("the budget (iterations, epochs or time_budget) must be positive")
    if len(c.crop_size) != 2 or min(c.crop_size) < 1:
        fail(f"crop_size must be [height, width], got {list(c.crop_size)}")
    if len(c.scale_range) != 2 or not 0 < c.scale_range[0] <= c.scale_range[1]:
        fail(f"scale_range must be [low, high] with 0 < low <= high, got {list(c.scale_range)}")
    if len(c.rotate_range) != 2 or c.rotate_range[0] > c.rotate_range[1]:
        fail(f"rotate_range must be [low, high] degrees, got {list(c.rotate_range)}")
    if c.precision not in PRECISION_CHOICES:
        fail(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {c.precision!r}")
    if c.batch_size < 1 or c.accumulate < 1:
        fail("batch_size and accumulate must be positive")
    if c.checkpoint_every < 1 or c.keep_last < 1 or c.log_every < 1:
        fail("checkpoint_every, keep_last and log_every must be positive")
    if c.dataset not in DATASET_READERS:
        fail(f"dataset must be one of {sorted(DATASET_READERS)}, got {c.dataset!r}")
    if c.class_weighting not in CLASS_WEIGHTINGS:
        fail(f"class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, got {c.class_weighting!r}")
    if c.val_mode not in MODES:
        fail(f"val_mode must be one of {', '.join(MODES)}, got {c.val_mode!r}")
    for key in ("rotate_p", "blur_p", "flip_p"):
        if not 0.0 <= getattr(c, key) <= 1.0:
            fail(f"{key} must be within [0, 1], got {getattr(c, key)}")
    check_model_config(c.model, "", classes_given=False)
    if c.workers < 0 or (c.val_limit is not None and c.val_limit < 1) or (c.val_every is not None and c.val_every < 1):
        fail("workers must be >= 0, val_limit and val_every positive")
    for f in fields(c):
        if f.name == "model":
            continue
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
