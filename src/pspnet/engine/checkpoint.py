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

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..weights.model_file import (
    FORMAT_VERSION,
    check_state_dict,
    read_weights_file,
    run_checkpoints,
    save_model,
    write_weights_file,
)

__all__ = ["TrainState", "latest_checkpoint", "load_checkpoint", "repair_run_dir", "rng_state", "save_checkpoint"]



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
    meta: dict[str, Any],
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
    save_model(model, tmp / "model.safetensors", meta=meta)  # type: ignore[arg-type]
    info = {
        "kind": "train_state",
        "format_version": FORMAT_VERSION,
        "iteration": state.iteration,
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "best_miou": state.best_miou,
        "best_iteration": state.best_iteration,
        "train_seconds": state.train_seconds,
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


def load_checkpoint(
    checkpoint: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, rank: int = 0
) -> tuple[TrainState, dict[str, Any]]:
    """Restore weights, optimiser buffers and process ``rank``'s RNG states from ``checkpoint`` (a ``ckpt_N``).

    Returns the counters and the run config saved with it.
    """
    weights, _ = read_weights_file(checkpoint / "model.safetensors")
    tensors, info = read_weights_file(checkpoint / "state.safetensors")
    if info.get("kind") != "train_state":
        raise CheckpointError(f"{checkpoint / 'state.safetensors'}: not a training state")
    check_state_dict(checkpoint / "model.safetensors", weights, model.state_dict())  # names keys and shapes
    model.load_state_dict(weights)
    for g, group in enumerate(optimizer.param_groups):
        for p, param in enumerate(group["params"]):
            prefix = f"optimizer.{g}.{p}."
            for key in [k for k in tensors if k.startswith(prefix)]:
                value = tensors[key]
                if value.shape != param.shape:
                    raise CheckpointError(f"{checkpoint}: optimiser state {key} does not fit its parameter")
                optimizer.state[param][key[len(prefix) :]] = value.to(device)
    if f"rng.torch.{rank}" not in tensors:
        raise CheckpointError(f"{checkpoint}: no random state for process {rank} (saved with fewer processes)")
    torch.set_rng_state(tensors[f"rng.torch.{rank}"])
    if f"rng.cuda.{rank}" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"], device)
    state = TrainState(
        iteration=int(info["iteration"]),
        epoch=int(info["epoch"]),
        step_in_epoch=int(info["step_in_epoch"]),
        best_miou=info.get("best_miou"),
        best_iteration=info.get("best_iteration"),
        train_seconds=float(info.get("train_seconds", 0.0)),
        scaler=info.get("scaler") or {},
        class_weights=info.get("class_weights"),
    )
    return state, info.get("config") or {}
