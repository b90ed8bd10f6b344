"""Training-run checkpoints: ``RUN/ckpt_N/`` directories written atomically, the last K kept, plus ``RUN/best/``.

A checkpoint directory holds

- ``model.safetensors``: the loadable model file (``pspnet.load_model`` reads it, or the run directory);
- ``state.safetensors``: everything else needed to continue exactly, as tensors plus JSON metadata, so nothing is
  pickled: the optimiser's momentum buffers, the RNG states (CPU and every CUDA device), and in the metadata the
  iteration, epoch, step within the epoch (the data order is a function of seed and epoch), the loss scaler, the
  best validation mIoU so far and the run's config.

A directory is written under a temporary name and renamed when complete, so a run killed at any moment leaves
only whole checkpoints behind.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..models.card import ModelCard
from ..parsing import is_int, is_number, metadata_error
from ..weights.model_file import (
    FORMAT_VERSION,
    check_state_dict,
    read_weights_file,
    save_model,
    validate_model_file,
    write_weights_file,
)

__all__ = [
    "TrainState",
    "latest_checkpoint",
    "load_checkpoint",
    "repair_run_dir",
    "rng_state",
    "run_checkpoints",
    "save_checkpoint",
    "train_state_from_meta",
]


@dataclass
class TrainState:
    """Counters of a run: optimiser steps done, position in the data order, best validation score."""

    iteration: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_miou: float | None = None
    best_iteration: int | None = None
    train_seconds: float = 0.0
    scaler: dict[str, Any] = field(default_factory=dict)
    class_weights: list[float] | None = None  # the run's loss weights per class (class_weighting), fixed at its start
    total_iterations: int | None = None  # the schedule's length a time_budget run derived at its start


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for g, group in enumerate(optimizer.param_groups):
        for p, param in enumerate(group["params"]):
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{g}.{p}.{name}"] = value
                elif value is not None:
                    raise TypeError(f"optimiser state {name!r} is not a tensor")  # SGD only keeps momentum buffers
    return tensors


def run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(N, run_dir/ckpt_N)`` for every checkpoint directory of a training run, sorted by N."""
    found = []
    for path in run_dir.glob("ckpt_*"):
        match = re.fullmatch(r"ckpt_(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random state: the CPU generator and, when CUDA is in use, its current device's."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(
    run_dir: Path,
    *,
    model: nn.Module,
    card: ModelCard,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
    keep_last: int,
    rng_states: list[dict[str, torch.Tensor]],
    best: bool = False,
) -> Path:
    """Write ``run_dir/ckpt_{iteration}`` (and ``best/`` when ``best``); delete all but the last ``keep_last``.

    ``rng_states[r]`` is the :func:`rng_state` of process r (one entry in a single process).
    """
    final = run_dir / f"ckpt_{state.iteration}"
    tmp = run_dir / f".ckpt_{state.iteration}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, tmp / "model.safetensors", card=card)  # type: ignore[arg-type]
    info = {
        "kind": "train_state",
        "format_version": FORMAT_VERSION,
        "iteration": state.iteration,
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "best_miou": state.best_miou,
        "best_iteration": state.best_iteration,
        "train_seconds": state.train_seconds,
        "total_iterations": state.total_iterations,
        "scaler": state.scaler,
        "class_weights": state.class_weights,
        "config": config,
    }
    rng = {f"rng.{name}.{rank}": value for rank, states in enumerate(rng_states) for name, value in states.items()}
    write_weights_file(tmp / "state.safetensors", {**_optimizer_tensors(optimizer), **rng}, info)
    if best:  # best/ is in place before the checkpoint that records it appears (a kill in between loses nothing)
        staging = run_dir / ".best.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(tmp, staging)
        old = run_dir / ".best.old"
        shutil.rmtree(old, ignore_errors=True)
        if (run_dir / "best").exists():
            (run_dir / "best").rename(old)
        staging.rename(run_dir / "best")
        shutil.rmtree(old, ignore_errors=True)
    if final.exists():  # left by an earlier attempt of the same iteration
        shutil.rmtree(final)
    tmp.rename(final)
    for _, stale in run_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(stale)
    return final


def repair_run_dir(run_dir: Path) -> None:
    """Undo what a run killed while writing left behind: put a moved-aside best/ back, drop temporary folders."""
    if not (run_dir / "best").exists() and (run_dir / ".best.old").is_dir():
        (run_dir / ".best.old").rename(run_dir / "best")
    for leftover in [run_dir / ".best.tmp", run_dir / ".best.old", *run_dir.glob(".ckpt_*.tmp")]:
        shutil.rmtree(leftover, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The ``ckpt_N`` directory of ``run_dir`` with the largest N, or None."""
    found = run_checkpoints(run_dir)
    return found[-1][1] if found else None


# -- reading a training state back, checked -------------------------------------------------------------------------

# GradScaler.state_dict() of an fp16 run ({} for the other precisions), with the ranges GradScaler accepts.
_SCALER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "scale": (lambda v: is_number(v) and v > 0, "a positive finite number"),
    "growth_factor": (lambda v: is_number(v) and v > 1, "a finite number > 1"),
    "backoff_factor": (lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "growth_interval": (lambda v: is_int(v) and v >= 1, "a positive integer"),
    "_growth_tracker": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
}


def _check_scaler(path: Path, value: Any) -> None:
    if not isinstance(value, dict) or (value and set(value) != set(_SCALER_RULES)):
        raise metadata_error(path, "scaler", f"{{}} or an object with the keys {', '.join(_SCALER_RULES)}", value)
    for key, item in value.items():
        allowed, rule = _SCALER_RULES[key]
        if not allowed(item):
            raise metadata_error(path, f"scaler.{key}", rule, item)


def _check_class_weights(path: Path, value: Any, num_classes: int) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) != num_classes:
        raise metadata_error(path, "class_weights", f"null or a list of {num_classes} numbers (one per class)", value)
    for i, weight in enumerate(value):
        if not is_number(weight) or weight <= 0:
            raise metadata_error(path, f"class_weights[{i}]", "a positive finite number", weight)


# The keys of a training state's metadata. kind, format_version and tensors_sha256 are checked by read_weights_file
# (and kind below), scaler and class_weights by the functions above, the rest by these rules.
_STATE_REQUIRED = ("kind", "format_version", "tensors_sha256", "iteration", "epoch", "step_in_epoch")
_STATE_OPTIONAL = (
    "best_miou",
    "best_iteration",
    "train_seconds",
    "scaler",
    "class_weights",
    "config",
    "total_iterations",
)
_STATE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "iteration": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "epoch": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "step_in_epoch": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "best_miou": (lambda v: v is None or (is_number(v) and 0 <= v <= 1), "null or a number in [0, 1]"),
    "best_iteration": (lambda v: v is None or (is_int(v) and v >= 0), "null or an integer >= 0"),
    "train_seconds": (lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
    "total_iterations": (lambda v: v is None or (is_int(v) and v >= 1), "null or a positive integer"),
    "config": (lambda v: isinstance(v, dict), "an object (the run's config)"),
}


def train_state_from_meta(path: Path, info: Mapping[str, Any], *, num_classes: int) -> tuple[TrainState, dict]:
    """The counters and the run config of a ``state.safetensors`` file's metadata, every field checked.

    Raises a CheckpointError naming ``path`` and the field: another kind of file, unknown or missing keys,
    counters that are not integers >= 0, ``best_miou`` outside [0, 1], ``best_iteration`` after ``iteration``, a
    malformed loss-scaler state, class weights that are not ``num_classes`` positive finite numbers, a config that
    is not an object. Keys of ``_STATE_OPTIONAL`` that are absent take TrainState's defaults.
    """
    if info.get("kind") != "train_state":
        raise CheckpointError(f"{path}: not a training state (kind {info.get('kind')!r})")
    unknown = sorted(set(info) - set(_STATE_REQUIRED) - set(_STATE_OPTIONAL))
    missing = [key for key in _STATE_REQUIRED if key not in info]
    if unknown or missing:
        problems = [f"unknown key(s) {', '.join(map(repr, unknown))}"] if unknown else []
        problems += [f"missing key(s) {', '.join(missing)}"] if missing else []
        raise CheckpointError(f"{path}: training state metadata with {' and '.join(problems)}")
    for key, (allowed, rule) in _STATE_RULES.items():
        if key in info and not allowed(info[key]):
            raise metadata_error(path, key, rule, info[key])
    if info.get("best_iteration") is not None and info["best_iteration"] > info["iteration"]:
        raise metadata_error(path, "best_iteration", f"at most iteration ({info['iteration']})", info["best_iteration"])
    _check_scaler(path, info.get("scaler", {}))
    _check_class_weights(path, info.get("class_weights"), num_classes)
    state = TrainState(
        iteration=info["iteration"],
        epoch=info["epoch"],
        step_in_epoch=info["step_in_epoch"],
        best_miou=None if info.get("best_miou") is None else float(info["best_miou"]),
        best_iteration=info.get("best_iteration"),
        train_seconds=float(info.get("train_seconds", 0.0)),
        total_iterations=info.get("total_iterations"),
        scaler=info.get("scaler", {}),
        class_weights=None if info.get("class_weights") is None else [float(w) for w in info["class_weights"]],
    )
    return state, info.get("config", {})


def _optimizer_buffers(
    path: Path, tensors: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> list[tuple[torch.nn.Parameter, str, torch.Tensor]]:
    """(parameter, buffer name, value) of every ``optimizer.G.P.NAME`` tensor, each checked against its parameter:
    the parameter exists, and the buffer has its shape and dtype and is finite."""
    params = [list(group["params"]) for group in optimizer.param_groups]
    found = []
    for key in sorted(k for k in tensors if k.startswith("optimizer.")):
        match = re.fullmatch(r"optimizer\.(\d+)\.(\d+)\.(\w+)", key)
        g, p = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
        if not (0 <= g < len(params) and 0 <= p < len(params[g])):
            raise CheckpointError(
                f"{path}: optimiser state '{key}' belongs to no parameter of this run's optimiser "
                f"({len(params)} parameter groups of {[len(group) for group in params]} parameters)"
            )
        value, param = tensors[key], params[g][p]
        if value.shape != param.shape or value.dtype != param.dtype:
            raise CheckpointError(
                f"{path}: optimiser state '{key}' is {str(value.dtype).removeprefix('torch.')} "
                f"{tuple(value.shape)}; its parameter is {str(param.dtype).removeprefix('torch.')} {tuple(param.shape)}"
            )
        if not bool(torch.isfinite(value).all()):
            count = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{path}: optimiser state '{key}' holds {count} non-finite value(s) (NaN or inf)")
        found.append((param, match.group(3), value))  # type: ignore[union-attr]
    return found


def _rng_tensors(path: Path, tensors: Mapping[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Process ``rank``'s random states ``{"torch": ..., "cuda": ...}``; every ``rng.*`` tensor is a uint8 vector
    and the CPU generator's has the size this PyTorch uses."""
    for key in [k for k in tensors if not k.startswith("optimizer.")]:
        value = tensors[key]
        if not re.fullmatch(r"rng\.(torch|cuda)\.\d+", key):
            raise CheckpointError(f"{path}: unknown tensor '{key}' (a training state holds optimizer.* and rng.*)")
        if value.dtype != torch.uint8 or value.dim() != 1:
            raise CheckpointError(
                f"{path}: random state '{key}' must be a uint8 vector, got {str(value.dtype).removeprefix('torch.')} "
                f"{tuple(value.shape)}"
            )
    if f"rng.torch.{rank}" not in tensors:
        raise CheckpointError(f"{path}: no random state for process {rank} (saved with fewer processes)")
    cpu = tensors[f"rng.torch.{rank}"]
    if cpu.shape != torch.get_rng_state().shape:
        raise CheckpointError(
            f"{path}: random state 'rng.torch.{rank}' has {cpu.numel()} bytes; this PyTorch's CPU generator has "
            f"{torch.get_rng_state().numel()}"
        )
    return {name: tensors[f"rng.{name}.{rank}"] for name in ("torch", "cuda") if f"rng.{name}.{rank}" in tensors}


def load_checkpoint(
    checkpoint: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, rank: int = 0
) -> tuple[TrainState, dict[str, Any]]:
    """Restore weights, optimiser buffers and process ``rank``'s RNG states from ``checkpoint`` (a ``ckpt_N``).

    Returns the counters and the run config saved with it. Both files are checked in full before anything is
    restored: ``model.safetensors`` as any model file (:func:`pspnet.weights.model_file.validate_model_file`) and
    against ``model``; ``state.safetensors`` by :func:`train_state_from_meta` and its tensors against ``optimizer``.
    A problem raises a CheckpointError naming the file and the field or tensor.
    """
    model_path, state_path = checkpoint / "model.safetensors", checkpoint / "state.safetensors"
    weights, meta = read_weights_file(model_path)
    card, weights = validate_model_file(model_path, weights, meta)
    check_state_dict(model_path, weights, model.state_dict())  # names keys and shapes (a changed model config)
    tensors, info = read_weights_file(state_path)
    state, run_config = train_state_from_meta(state_path, info, num_classes=card.num_classes)
    buffers = _optimizer_buffers(state_path, tensors, optimizer)
    rng = _rng_tensors(state_path, tensors, rank)

    model.load_state_dict(weights)
    for param, name, value in buffers:
        optimizer.state[param][name] = value.to(device)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    return state, run_config
