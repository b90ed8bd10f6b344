"""The training engine: the official PSPNet recipe on one CPU, one GPU or many processes under torchrun.

Recipe (official PyTorch code): SGD with momentum 0.9 and weight decay 1e-4; the backbone at the base learning rate,
pyramid pooling, head and auxiliary head at 10x; poly decay ``lr = base * (1 - i / max_iter) ** 0.9`` per
optimiser step, with i counted from 1 as the official code does (so the last step runs at 0); loss = CE(main) +
0.4 x CE(aux) with ignore 255; the paper's augmentation (:func:`pspnet.data.transforms.paper_train_transform`).

One optimiser step consumes ``batch_size`` images: ``accumulate`` micro-batches on each of ``world_size``
processes. The images of a step are consecutive entries of a permutation drawn from (seed, epoch), so the data
order does not depend on how many processes or workers there are, and a run resumes mid-epoch exactly. The loss of
every micro-batch is divided by the number of labelled pixels of the whole step (all micro-batches, all processes),
so the gradient is that of the step's mean loss however the batch is split. With ``class_weighting:
median_frequency`` each pixel's loss is weighted by its class's median-frequency weight, computed once from the
training masks, and the divisor is the sum of the step's pixel weights instead of their count.

Preemption: SIGTERM or SIGINT during :func:`train` only sets a flag. Every process checks it (one all-reduce, so all
stop after the same step) after fetching a step's batches and after each optimiser step; the run then writes a
checkpoint of its last completed step by the usual path (no validation) and raises :class:`TrainingStopped`, which
``pspnet train`` turns into the resume command and exit status 143 (SIGTERM) or 130 (SIGINT). Every checkpoint
written is recorded in ``RUN/log.jsonl`` (``{"iteration": N, "event": "checkpoint", "path": "ckpt_N"}``), so that a
``--resume`` of a run whose checkpoints are gone is refused instead of silently starting again.

A run goes in named steps: :func:`set_up_run` builds a :class:`TrainingRun` from a TrainConfig (data sets, model,
optimiser, grad scaler, class weights, resumed state, log); :func:`train_step` is one optimiser step, the code the
loop of :func:`train` runs and the one a benchmark times (a model, an SGD optimiser from :func:`param_groups`, a
grad scaler, batches and :class:`StepSettings` are all it needs: no data set, run directory or process group);
after each step the loop logs, validates, checkpoints and checks for a stop signal when due.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import json
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NoReturn, Self

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import heap
from ..atomic import atomic_open
from ..constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from ..data.datasets import SegmentationDataset, build_dataset, collate
from ..data.io import read_mask
from ..data.transforms import paper_train_transform
from ..errors import ConfigError, DataError, TrainingStopped
from ..inference import PRECISIONS, InferenceSettings, normalize, resolve_device, resolve_precision
from ..models.build import build_model
from ..models.network import SegmentationNetwork
from ..weights.model_file import load_backbone_weights, make_card
from . import distributed
from .checkpoint import TrainState, latest_checkpoint, load_checkpoint, repair_run_dir, rng_state, save_checkpoint
from .config import TrainConfig
from .losses import AUX_WEIGHT, label_weight_sum, loss_sum, median_frequency_weights

__all__ = [
    "NonFiniteLossError",
    "StepSettings",
    "TrainingRun",
    "TrainingStopped",
    "class_pixel_statistics",
    "make_optimizer",
    "measure_step_seconds",
    "param_groups",
    "poly_lr",
    "set_up_run",
    "step_batches",
    "train",
    "train_step",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class NonFiniteLossError(RuntimeError):
    """The loss, or the weights, became NaN or infinite. From :func:`train` the message names the iteration and the
    last good checkpoint; ``loss`` is the step's non-finite mean loss (None when the weights were found non-finite).
    """

    def __init__(self, message: str, *, loss: float | None = None) -> None:
        super().__init__(message)
        self.loss = loss


class _StopRequest:
    """SIGTERM and SIGINT turned into a request to stop at the next step boundary: the handler only records the
    first signal, so repeated signals (a second Ctrl-C, a launcher forwarding one again) never interrupt a save.

    A context manager: installs the handlers on entry and restores the previous ones on exit. Python allows signal
    handlers only in the main thread: elsewhere nothing is installed. A signal ignored on entry (a job started with
    ``nohup`` or in the background of a non-interactive shell ignores SIGINT) stays ignored.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for signum, previous in self._previous.items():  # None: a handler not set from Python; the default then
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def _ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: its worker processes ignore SIGTERM and SIGINT.

    They share the main process's process group, so Ctrl-C and torchrun's shutdown (a signal to the group) reach them
    too; torch's worker loop would end on KeyboardInterrupt, and a worker ended by SIGTERM makes torch raise in the
    main process in the middle of a step. The main process decides when to stop; the workers end when it shuts its
    loader down (or, should it die, when their watchdog sees it gone).
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float = 0.9) -> float:
    """Learning rate of optimiser step ``iteration`` (1-based, as in the official code) of ``max_iter``."""
    return base_lr * (1.0 - iteration / max_iter) ** power


def param_groups(model: SegmentationNetwork, *, lr: float, head_lr_mult: float) -> list[dict[str, Any]]:
    """Two groups: the backbone at ``lr``; pyramid pooling, head and aux head at ``lr * head_lr_mult``."""
    head = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    return [
        {"params": list(model.backbone.parameters()), "lr": lr, "base_lr": lr, "name": "backbone"},
        {"params": head, "lr": lr * head_lr_mult, "base_lr": lr * head_lr_mult, "name": "head"},
    ]


def step_batches(
    num_samples: int, *, seed: int, epoch: int, micro_batch: int, accumulate: int, rank: int, world_size: int
) -> list[list[list[int]]]:
    """Index lists of every optimiser step of ``epoch`` for one process: ``steps[s][j]`` is its micro-batch j.

    A step takes the next ``micro_batch * accumulate * world_size`` entries of the epoch's permutation; micro-batch
    j of process r is the slice ``(j * world_size + r) * micro_batch`` of them. The incomplete last step is dropped.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_samples, generator=generator).tolist()
    per_step = micro_batch * accumulate * world_size
    steps = []
    for s in range(num_samples // per_step):
        chunk = order[s * per_step : (s + 1) * per_step]
        steps.append(
            [
                chunk[(j * world_size + rank) * micro_batch : (j * world_size + rank + 1) * micro_batch]
                for j in range(accumulate)
            ]
        )
    return steps


def make_optimizer(model: SegmentationNetwork, config: TrainConfig) -> torch.optim.SGD:
    """The run's SGD: :func:`param_groups` at ``config.lr`` (head x ``head_lr_mult``), its momentum and weight decay."""
    return torch.optim.SGD(
        param_groups(model, lr=config.lr, head_lr_mult=config.head_lr_mult),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@dataclass(frozen=True, eq=False)
class StepSettings:
    """What one optimiser step (:func:`train_step`) needs besides the model, the optimiser and the batches.

    ``class_weights`` (K,) is in the model's parameter dtype on its device (None: every labelled pixel counts 1);
    ``autocast_dtype`` None runs the forward in the parameter dtype; ``world_size`` is the number of processes
    that share the step (more than 1 only under an initialised process group, with the model wrapped in
    DistributedDataParallel); ``align_corners`` is the model's upsampling, which the loss applies to the logits
    the model returns at 1/8 (``forward(x, upsample=False)``).
    """

    aux_weight: float = AUX_WEIGHT
    ignore_index: int = IGNORE_INDEX
    class_weights: torch.Tensor | None = None
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    freeze_bn: bool = False
    world_size: int = 1
    align_corners: bool = True

    @classmethod
    def from_config(
        cls, config: TrainConfig, *, world_size: int = 1, class_weights: torch.Tensor | None = None
    ) -> StepSettings:
        """The settings of ``config``'s steps (aux weight, ignore index, precision, memory layout, frozen BN, the
        model's upsampling)."""
        return cls(
            aux_weight=config.aux_weight,
            ignore_index=config.ignore_index,
            class_weights=class_weights,
            autocast_dtype=PRECISIONS[config.precision],
            channels_last=config.channels_last,
            freeze_bn=config.freeze_bn,
            world_size=world_size,
            align_corners=config.model.align_corners,
        )


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    settings: StepSettings,
    *,
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> float:
    """One optimiser step over ``micro_batches`` (this process's share of the step); returns the step's mean loss.

    ``net`` is the PSPNet, or under torchrun the DistributedDataParallel that wraps it; ``forward`` is what computes
    its outputs (``net`` itself, or ``torch.compile(net)``). Each micro-batch is a collated batch ``{"image": uint8
    (N, 3, H, W) RGB in [0, 255], "mask": int64 (N, H, W)}``; their number is the accumulation. The step runs at the
    learning rates ``optimizer``'s groups hold (:func:`train` sets them by :func:`poly_lr` before each step).

    Every micro-batch's summed loss (:func:`~pspnet.engine.losses.loss_sum`, forward under autocast) is divided by
    the labelled pixels (or their class weights) of the whole step, all micro-batches and processes, and
    multiplied by the number of processes (DistributedDataParallel averages the gradients over them); gradients are
    exchanged after the last micro-batch only. The mean loss is summed over processes in float64. When it is NaN or
    infinite, :class:`NonFiniteLossError` is raised before the optimiser steps (the gradients stay in place).
    Single-process use needs no process group: the reductions are then the identity.
    """
    forward = net if forward is None else forward
    parameter = next(net.parameters())
    device, param_dtype = parameter.device, parameter.dtype
    targets = [m["mask"].to(device, non_blocking=True) for m in micro_batches]
    labelled = sum(
        label_weight_sum(t, ignore_index=settings.ignore_index, class_weights=settings.class_weights) for t in targets
    )
    labelled = distributed.all_reduce_sum(labelled)
    labelled = torch.where(labelled > 0, labelled, torch.ones_like(labelled))  # all ignored: loss 0, not NaN
    net.train()
    if settings.freeze_bn:
        _freeze_batchnorm(net)
    optimizer.zero_grad(set_to_none=True)
    step_loss = torch.zeros((), dtype=torch.float64, device=device)
    autocast_dtype = settings.autocast_dtype
    for j, (batch, target) in enumerate(zip(micro_batches, targets)):
        images = normalize(batch["image"].to(device, non_blocking=True), IMAGENET_MEAN, IMAGENET_STD, dtype=param_dtype)
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        sync = contextlib.nullcontext()
        if settings.world_size > 1 and j < len(micro_batches) - 1:
            sync = net.no_sync()  # type: ignore[operator]
        with sync:
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                outputs = forward(images, upsample=False)  # logits at 1/8: the loss upsamples them chunk by chunk
            total_loss = loss_sum(
                outputs,
                target,
                aux_weight=settings.aux_weight,
                ignore_index=settings.ignore_index,
                class_weights=settings.class_weights,
                align_corners=settings.align_corners,
            )
            # DDP averages gradients over processes: scale by world size to get the step's mean loss
            scaler.scale(total_loss * (settings.world_size / labelled).to(total_loss.dtype)).backward()
        step_loss += total_loss.detach().double()
    step_loss = distributed.all_reduce_sum(step_loss) / labelled
    loss_value = float(step_loss)
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(f"the loss became {loss_value}; the optimiser step was not taken", loss=loss_value)
    scaler.step(optimizer)
    scaler.update()
    return loss_value


class _Log:
    """JSON lines in RUN/log.jsonl (rank 0), optionally mirrored to TensorBoard."""

    def __init__(self, path: Path, *, resume_from: int | None, tensorboard: bool):
        self.path = path
        if resume_from is not None and path.exists():  # drop what the interrupted run logged after the checkpoint
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by the kill
                    continue
                if record.get("iteration", 0) <= resume_from:
                    kept.append(line)
            with atomic_open(path, "w") as handle:
                handle.write("".join(line + "\n" for line in kept))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "iteration":
                    self.writer.add_scalar(key, value, record["iteration"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _logged_checkpoints(run_dir: Path) -> list[int]:
    """The iterations of the checkpoints that ``run_dir/log.jsonl`` records as written ("checkpoint" events)."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if isinstance(record, dict) and record.get("event") == "checkpoint" and type(record.get("iteration")) is int:
            found.append(record["iteration"])
    return found


def _resolve_resume(resume: str | Path, out: Path) -> Path | None:
    """The checkpoint to continue from; None when ``resume`` is this run's directory and it never wrote one.

    A run directory without checkpoints whose log.jsonl records some (deleted since) is refused: starting again
    from iteration 0 there would silently throw its progress away.
    """
    path = Path(resume)
    if (path / "state.safetensors").is_file():
        return path
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is not None:
            return found
        logged = _logged_checkpoints(path)
        if logged:
            raise ConfigError(
                f"{resume}: {path / 'log.jsonl'} records checkpoints up to ckpt_{max(logged)} but {path} has "
                f"none; put them back to continue, or train into another run directory to start again",
                argument="resume",
            )
        if path.resolve() == out.resolve():  # killed before its first checkpoint: start from the beginning
            return None
    raise ConfigError(
        f"{resume}: no checkpoint there (expected RUN_DIR with ckpt_N/ or a ckpt_N/ directory)", argument="resume"
    )


def _keep_log_aside(path: Path) -> Path:
    """Rename the log of a run that starts again from iteration 0 to the first free ``log.K.jsonl``; returns it."""
    k = 1
    while (aside := path.with_name(f"{path.stem}.{k}{path.suffix}")).exists():
        k += 1
    path.rename(aside)
    return aside


def _validate(
    model: SegmentationNetwork, dataset: SegmentationDataset, config: TrainConfig, device: torch.device
) -> dict:
    from .evaluate import evaluate

    settings = InferenceSettings(
        mode=config.val_mode,
        crop_size=dataset.info.crop_size,
        base_size=dataset.info.base_size,
        precision=config.precision,
    )
    was_training = model.training
    report = evaluate(model, dataset, settings, device=device, limit=config.val_limit, progress=False, workers=0)
    model.train(was_training)
    return report


def class_pixel_statistics(dataset: SegmentationDataset, *, progress: bool = False) -> tuple[list[int], list[int]]:
    """Per class c: the pixels labelled c in the split's masks, and the labelled pixels of the masks where c appears.

    Reads the masks only (no augmentation); raises DataError naming a mask with invalid label values.
    """
    k, ignore = dataset.info.num_classes, dataset.info.ignore_index
    class_pixels = np.zeros(k, dtype=np.int64)
    present_pixels = np.zeros(k, dtype=np.int64)
    for sample in tqdm(dataset.samples, desc="class weights", unit="mask", disable=not progress, leave=False):
        assert sample.mask is not None  # training refuses unlabelled splits before this
        mask, problem = dataset.convert_mask(read_mask(sample.mask), sample)
        if problem is not None:
            raise DataError(f"{sample.mask}: {problem}")
        labels = mask[mask != ignore].astype(np.int64)
        counts = np.bincount(labels, minlength=k)[:k]
        class_pixels += counts
        present_pixels[counts > 0] += labels.size
    return class_pixels.tolist(), present_pixels.tolist()


@dataclass
class TrainingRun:
    """Everything one training run works with, as :func:`set_up_run` builds it from a TrainConfig.

    The loop of :func:`train` advances ``state``; ``last_good`` (the newest checkpoint known to hold finite weights)
    and ``saved_iteration`` (the iteration of the last checkpoint this run wrote, -1 before the first) follow the
    checkpoints it writes. ``log`` is None on every process but rank 0.
    """

    config: TrainConfig
    out: Path
    dist: distributed.DistInfo
    train_set: SegmentationDataset
    val_set: SegmentationDataset | None
    micro_batch: int  # images per micro-batch and process
    steps_per_epoch: int
    total: int  # optimiser steps of the whole run
    val_every: int
    model: SegmentationNetwork
    net: nn.Module  # the model, or the DistributedDataParallel that wraps it
    forward: Callable[[torch.Tensor], Any]  # net, or torch.compile(net)
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler
    class_weights: torch.Tensor | None  # (K,) in the parameter dtype, on the device
    step_settings: StepSettings
    state: TrainState
    checkpoint: Path | None  # the checkpoint the run resumed from
    log: _Log | None
    start_iteration: int
    last_good: str | None
    saved_iteration: int = -1

    @property
    def device(self) -> torch.device:
        return self.dist.device


def train(
    config: TrainConfig,
    out: Path,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train by ``config`` into the run directory ``out``; returns the final checkpoint directory.

    ``resume`` is a run directory (its latest ``ckpt_N``) or a ``ckpt_N`` directory to continue from exactly.

    SIGTERM and SIGINT (handled from the end of the process-group set-up until return) stop the run at the next
    step boundary, on every process at the same iteration: the last completed step is saved as ``ckpt_N`` (no
    validation is run, a validation due at that iteration is skipped) and :class:`TrainingStopped` is raised.
    """
    try:
        device = resolve_device(config.device)
    except ValueError as error:  # a CUDA device on a machine without one
        raise ConfigError(f"device: {error}") from None
    dist = distributed.setup(device)
    heap.keep_freed_memory()  # each step's memory is reused by the next (pspnet.heap)
    if config.precision == "auto":  # bf16 where this device computes it natively, else fp32; saved as resolved
        config = dataclasses.replace(config, precision=resolve_precision("auto", dist.device)[0])
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with _StopRequest() as stop:
            return _train(config, Path(out), resume, progress, dist, stop)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        distributed.cleanup()


def _train(
    config: TrainConfig,
    out: Path,
    resume: str | Path | None,
    progress: bool,
    dist: distributed.DistInfo,
    stop: _StopRequest,
) -> Path:
    """Set the run up, run its optimiser steps (each followed by logging, validation and checkpoints when due), and
    finish: the final checkpoint directory, or :class:`TrainingStopped` after a stop signal."""
    run = set_up_run(config, out, dist, resume=resume, progress=progress)
    state = run.state
    bar = tqdm(
        total=run.total, initial=state.iteration, desc="train", unit="it", disable=not (progress and dist.is_main)
    )
    window_images, window_start = 0, time.perf_counter()
    final: Path | None = None
    stopped: int | None = None  # the signal the run stops on
    batches: Iterator[dict[str, torch.Tensor]] | None = None
    try:
        while state.iteration < run.total and stopped is None:
            steps, batches = _epoch_batches(run)
            for _ in steps:
                started = time.perf_counter()
                micro = [next(batches) for _ in range(config.accumulate)]
                stopped = _agreed_stop_signal(stop, run.device)  # a signal during validation, saving or fetching
                if stopped is not None:  # this step has not started
                    break
                iteration = state.iteration + 1
                for group in run.optimizer.param_groups:
                    group["lr"] = poly_lr(group["base_lr"], iteration, run.total, config.poly_power)
                try:
                    loss_value = train_step(
                        run.net, run.optimizer, run.scaler, micro, run.step_settings, forward=run.forward
                    )
                except NonFiniteLossError as error:
                    bar.close()
                    _fail_on_non_finite_loss(run, iteration, error)
                _count_step(run, iteration, started)
                window_images += config.batch_size
                bar.update(1)
                if iteration % config.log_every == 0 or iteration == run.total:
                    rate = window_images / max(time.perf_counter() - window_start, 1e-9)
                    _log_step(run, bar, iteration, loss_value, rate)
                    window_images, window_start = 0, time.perf_counter()
                stopped = _agreed_stop_signal(stop, run.device)  # every process stops after this same step
                if stopped is not None:
                    break
                is_best = False
                if run.val_set is not None and (iteration % run.val_every == 0 or iteration == run.total):
                    is_best = _validate_and_track_best(run, iteration, bar)
                    window_start = time.perf_counter()
                if iteration % config.checkpoint_every == 0 or iteration == run.total or is_best:
                    final = _save(run, best=is_best)
                    window_start = time.perf_counter()
            _shut_down(batches)  # the loader's worker processes end now
    finally:  # an error too: workers left behind ignore SIGTERM and would hang the exit
        if batches is not None:
            _shut_down(batches)
    bar.close()
    if stopped is not None:
        _stop(run, stopped)
    return _finish(run, final)


def _check_settings(config: TrainConfig, dist: distributed.DistInfo) -> int:
    """The images of one micro-batch of one process; ConfigError for settings this machine cannot run."""
    if config.precision == "fp16" and dist.device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device (loss scaling); use bf16 on the CPU")
    resolve_precision(config.precision, dist.device)  # bf16 where it is emulated: a warning, once
    global_micro = config.batch_size / (config.accumulate * dist.world_size)
    if global_micro != int(global_micro):
        raise ConfigError(
            f"batch_size {config.batch_size} is not divisible by accumulate {config.accumulate} x "
            f"{dist.world_size} processes"
        )
    if config.tensorboard:  # checked on every process before any collective call
        try:
            importlib.import_module("torch.utils.tensorboard")
        except ImportError:
            raise ConfigError("tensorboard: true needs the tensorboard package (pip install tensorboard)") from None
    return int(global_micro)


def _build_datasets(config: TrainConfig) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """The training split (with the paper's augmentation) and the validation split (None without ``val_split``);
    ConfigError for a split with unlabelled images or an ignore index the data set does not use."""
    augment = paper_train_transform(
        crop_size=tuple(config.crop_size),
        scale=tuple(config.scale_range),
        rotate=tuple(config.rotate_range),
        rotate_p=config.rotate_p,
        blur_p=config.blur_p,
        flip_p=config.flip_p,
        ignore_index=config.ignore_index,
    )
    train_set = build_dataset(config.dataset, config.root, config.train_split, transform=augment, seed=config.seed)
    train_set.select(exclude=config.train_exclude)
    val_set = None
    if config.val_split:
        val_set = build_dataset(config.dataset, config.root, config.val_split).select(include=config.val_include)
    for split_set in (train_set, val_set):
        unlabelled = [s.name for s in split_set.samples if s.mask is None] if split_set is not None else []
        if unlabelled:
            raise ConfigError(
                f"split {split_set.split!r} of {config.root} has {len(unlabelled)} image(s) without masks (e.g. "
                f"{unlabelled[0]}); training and validation need labelled splits"
            )
    if train_set.info.ignore_index != config.ignore_index:
        raise ConfigError(
            f"ignore_index {config.ignore_index} differs from the data set's {train_set.info.ignore_index}"
        )
    return train_set, val_set


def _open_log(
    config: TrainConfig,
    out: Path,
    *,
    checkpoint: Path | None,
    state: TrainState,
    class_weights: torch.Tensor | None,
    classes: Sequence[str],
    progress: bool,
) -> _Log:
    """Rank 0's ``out/log.jsonl``: cut back to the checkpoint a resumed run continues from, or (a run starting at
    iteration 0) begun afresh with an older log kept aside; a new run's class weights are its first record."""
    resume_from = state.iteration if checkpoint is not None else None  # drop what a killed run logged later
    if checkpoint is None and (out / "log.jsonl").is_file():  # starting again: keep the old log, do not mix it in
        aside = _keep_log_aside(out / "log.jsonl")
        print(f"{out / 'log.jsonl'} kept as {aside}: this run starts again from iteration 0", file=sys.stderr)
    log = _Log(out / "log.jsonl", resume_from=resume_from, tensorboard=config.tensorboard)
    if class_weights is not None:
        named = {name: round(float(w), 4) for name, w in zip(classes, class_weights.tolist())}
        if state.iteration == 0:
            log.write({"iteration": 0, "event": "class weights", "class_weights": named})
        if progress:
            tqdm.write("class weights (median frequency): " + ", ".join(f"{n} {w:.3g}" for n, w in named.items()))
    return log


def _wrap_for_processes(model: nn.Module, dist: distributed.DistInfo) -> nn.Module:
    """``model`` itself in one process; under torch.distributed wrapped in DistributedDataParallel (with
    SyncBatchNorm on GPUs)."""
    if not dist.distributed:
        return model
    if dist.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)


def measure_step_seconds(
    config: TrainConfig,
    model: nn.Module,
    dist: distributed.DistInfo,
    train_set: SegmentationDataset,
    micro_batch: int,
    settings: StepSettings,
    *,
    steps: int = 2,
) -> float:
    """Seconds of one optimiser step of this run, measured before it starts: copies of the model and of a fresh
    optimiser run :func:`train_step` on the run's first step's batches, once to warm up and then ``steps`` times
    (the fastest counts); the slowest process's time counts under torch.distributed. The random state is put back
    afterwards, so the run that follows is exactly the one an explicit iteration count would give. Data loading,
    validation and checkpoints are not counted."""
    first = step_batches(
        len(train_set),
        seed=config.seed,
        epoch=0,
        micro_batch=micro_batch,
        accumulate=config.accumulate,
        rank=dist.rank,
        world_size=dist.world_size,
    )[0]
    train_set.set_epoch(0)
    batches = [collate([train_set[i] for i in indices]) for indices in first]
    saved_rng = rng_state()
    probe = copy.deepcopy(model)
    net = _wrap_for_processes(probe, dist)
    optimizer = make_optimizer(probe, config)
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
    times = []
    for _ in range(steps + 1):
        if dist.device.type == "cuda":
            torch.cuda.synchronize(dist.device)
        start = time.perf_counter()
        train_step(net, optimizer, scaler, batches, settings)
        if dist.device.type == "cuda":
            torch.cuda.synchronize(dist.device)
        times.append(time.perf_counter() - start)
    torch.set_rng_state(saved_rng["torch"])
    if "cuda" in saved_rng and dist.device.type == "cuda":
        torch.cuda.set_rng_state(saved_rng["cuda"], dist.device)
    seconds = torch.tensor([min(times[1:])], dtype=torch.float64, device=dist.device)
    return float(distributed.all_reduce_max(seconds)[0])


def set_up_run(
    config: TrainConfig,
    out: Path,
    dist: distributed.DistInfo,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> TrainingRun:
    """Everything the run by ``config`` into ``out`` needs, on the device and in the process group of ``dist``.

    Checks the settings, seeds the random number generators (``seed + rank``), finds the checkpoint to resume from
    (``resume``: see :func:`train`), builds the data sets, the model and its card, the optimiser, the grad
    scaler and the class weights, restores a resumed run's state, wraps the model for DDP (and torch.compile), and
    on rank 0 writes ``out/config.yaml`` and opens ``out/log.jsonl``. Raises ConfigError for settings or a run
    directory it cannot use.
    """
    device = dist.device
    micro_batch = _check_settings(config, dist)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(config.seed + dist.rank)  # dropout differs per process; data order does not

    checkpoint = _resolve_resume(resume, out) if resume is not None else None
    if resume is not None and dist.is_main and out.is_dir():
        repair_run_dir(out)
    if checkpoint is None and out.exists() and latest_checkpoint(out) is not None:  # every process refuses alike
        raise ConfigError(
            f"{out} already holds checkpoints; pass resume={out} to continue it, or choose another run directory",
            argument="out",
        )

    train_set, val_set = _build_datasets(config)
    info = train_set.info
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"the training split has {len(train_set)} images, fewer than batch_size {config.batch_size}")
    if config.iterations is not None:
        total = config.iterations
    elif config.epochs is not None:
        total = config.epochs * steps_per_epoch
    else:  # a time budget: the length comes from the measured speed, below
        total = 0

    if config.model.num_classes not in (None, info.num_classes):
        raise ConfigError(f"num_classes {config.model.num_classes} differs from the data set's {info.num_classes}")
    model = build_model(config.model_config(info.num_classes))
    # the data set's names, colours and inference protocol (CamVid: the whole 360x480 image)
    model.card = make_card(model.config, dataset=info, source={"from": "pspnet train", "run": str(out)})
    if config.backbone_init and checkpoint is None:
        load_backbone_weights(model.backbone, config.backbone_init)
    model.to(device)
    # float32 as built; float64 when the tests build under torch.set_default_dtype(torch.float64) to compare two
    # computations far below float32 rounding. Inputs and class weights follow it; autocast lowers the forward.
    param_dtype = next(model.parameters()).dtype
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    state = TrainState()
    if checkpoint is not None:
        state, saved_config = load_checkpoint(
            checkpoint, model=model, optimizer=optimizer, device=device, rank=dist.rank
        )
        changed = sorted(k for k, v in config.to_dict().items() if k in saved_config and saved_config[k] != v)
        if changed and dist.is_main:  # allowed (e.g. more workers), but the result is then not the same run
            warnings.warn(
                f"resuming {checkpoint} with changed settings {changed}: not an exact continuation", stacklevel=3
            )
    class_weights = None
    if config.class_weighting == "median_frequency":
        if state.class_weights is None:  # a new run; a resumed one keeps the weights it started with
            # every process reads the masks, so a bad mask stops them all alike (no collective call waits for it)
            statistics = class_pixel_statistics(train_set, progress=progress and dist.is_main)
            state.class_weights = median_frequency_weights(*statistics)
        class_weights = torch.tensor(state.class_weights, dtype=param_dtype, device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
    if state.scaler and config.precision == "fp16":
        scaler.load_state_dict(state.scaler)

    net = _wrap_for_processes(model, dist)
    forward = torch.compile(net) if config.compile else net
    step_settings = StepSettings.from_config(config, world_size=dist.world_size, class_weights=class_weights)
    measured: float | None = None  # seconds per step, when a time budget is turned into steps now
    if config.time_budget is not None:
        if state.total_iterations is None:  # a new run: its schedule's length comes from its measured speed
            measured = measure_step_seconds(config, model, dist, train_set, micro_batch, step_settings)
            state.total_iterations = max(1, int(config.time_budget * 60 / measured))
        total = state.total_iterations

    log = None
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "config.yaml", "w") as handle:
            handle.write(yaml.safe_dump(config.to_dict(), sort_keys=False))
        log = _open_log(
            config,
            out,
            checkpoint=checkpoint,
            state=state,
            class_weights=class_weights,
            classes=info.classes,
            progress=progress,
        )
        if measured is not None:
            record = {"minutes": config.time_budget, "seconds_per_step": round(measured, 4), "iterations": total}
            log.write({"iteration": 0, "event": "time budget", **record})
            if progress:
                tqdm.write(f"time budget {config.time_budget} min at {measured:.3g} s per step: {total} iterations")
    return TrainingRun(
        config=config,
        out=out,
        dist=dist,
        train_set=train_set,
        val_set=val_set,
        micro_batch=micro_batch,
        steps_per_epoch=steps_per_epoch,
        total=total,
        val_every=config.val_every or config.checkpoint_every,
        model=model,
        net=net,
        forward=forward,
        optimizer=optimizer,
        scaler=scaler,
        class_weights=class_weights,
        step_settings=step_settings,
        state=state,
        checkpoint=checkpoint,
        log=log,
        start_iteration=state.iteration,
        last_good=str(checkpoint) if checkpoint is not None else None,
    )


def _epoch_batches(run: TrainingRun) -> tuple[list[list[list[int]]], Iterator[dict[str, torch.Tensor]]]:
    """The steps left in the current epoch (index lists, see :func:`step_batches`) and an iterator over their
    collated micro-batches, in order, from a DataLoader started for this epoch."""
    config, state = run.config, run.state
    epoch, first = divmod(state.iteration, run.steps_per_epoch)
    state.epoch = epoch
    run.train_set.set_epoch(epoch)
    steps = step_batches(
        len(run.train_set),
        seed=config.seed,
        epoch=epoch,
        micro_batch=run.micro_batch,
        accumulate=config.accumulate,
        rank=run.dist.rank,
        world_size=run.dist.world_size,
    )[first : first + (run.total - state.iteration)]
    loader = DataLoader(
        run.train_set,
        batch_sampler=[micro for step in steps for micro in step],
        num_workers=config.workers,
        collate_fn=collate,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG (dropout) untouched
        worker_init_fn=_ignore_stop_signals,
    )
    return steps, iter(loader)


def _shut_down(batches: Iterator[dict[str, torch.Tensor]]) -> None:
    """End the worker processes of a DataLoader iterator now (they ignore SIGTERM: :func:`_ignore_stop_signals`).

    Dropping the iterator is not enough when an error ends the run: the error's traceback keeps it alive until a
    garbage collection, and at the process's exit multiprocessing would SIGTERM its workers, which ignore it, and
    wait for them forever. A single-process iterator has nothing to end."""
    shut_down = getattr(batches, "_shutdown_workers", None)  # torch's own clean shutdown (idempotent)
    if shut_down is not None:
        shut_down()


def _agreed_stop_signal(stop: _StopRequest, device: torch.device) -> int | None:
    """The signal every process acts on now (the largest one any received: SIGTERM before SIGINT), or None.

    A collective call: every process makes it at the same points of the loop."""
    flag = torch.tensor([stop.signum or 0], dtype=torch.int64, device=device)
    agreed = int(distributed.all_reduce_max(flag)[0])
    return agreed or None


def _fail_on_non_finite_loss(run: TrainingRun, iteration: int, error: NonFiniteLossError) -> NoReturn:
    """Log the non-finite loss of step ``iteration`` and raise NonFiniteLossError naming the last good checkpoint."""
    if run.log is not None:
        run.log.write({"iteration": iteration, "event": "non-finite loss", "loss": str(error.loss)})
    raise NonFiniteLossError(
        f"the loss became {error.loss} at iteration {iteration}; stopped without saving it. Last good "
        f"checkpoint: {run.last_good or 'none (no checkpoint was written yet)'}; resume from it after "
        f"lowering lr or switching precision",
        loss=error.loss,
    ) from None


def _count_step(run: TrainingRun, iteration: int, started: float) -> None:
    """Record in ``run.state`` that step ``iteration`` completed; ``started``: its ``time.perf_counter()`` start."""
    state = run.state
    state.iteration = iteration
    state.step_in_epoch = iteration % run.steps_per_epoch
    state.epoch = iteration // run.steps_per_epoch
    state.train_seconds += time.perf_counter() - started
    if run.config.precision == "fp16":
        state.scaler = dict(run.scaler.state_dict())


def _log_step(run: TrainingRun, bar: tqdm, iteration: int, loss: float, rate: float) -> None:
    """Show step ``iteration``'s mean loss, learning rate and ``rate`` (images per second) on the progress bar and
    append them to the log."""
    lrs = [g["lr"] for g in run.optimizer.param_groups]
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs[0]:.2e}", img_s=f"{rate:.1f}")
    if run.log is not None:
        run.log.write(
            {
                "iteration": iteration,
                "epoch": iteration / run.steps_per_epoch,
                "loss": loss,
                "lr": lrs[0],
                "lr_head": lrs[1],
                "images_per_s": rate,
                "train_seconds": round(run.state.train_seconds, 3),
            }
        )


def _validate_and_track_best(run: TrainingRun, iteration: int, bar: tqdm) -> bool:
    """Score the model on the validation split after step ``iteration`` (every process its share), log the scores,
    and record a new best val mIoU in ``run.state``; returns whether this iteration is the new best."""
    assert run.val_set is not None
    state = run.state
    report = _validate(run.model, run.val_set, run.config, run.device)
    miou = report["mIoU"]
    is_best = False
    if miou is not None and (state.best_miou is None or miou > state.best_miou):
        state.best_miou, state.best_iteration, is_best = miou, iteration, True
    if run.log is not None:
        run.log.write(
            {
                "iteration": iteration,
                "val_mIoU": miou,
                "val_mAcc": report["mAcc"],
                "val_allAcc": report["allAcc"],
                "val_mBIoU": report["mBIoU"],
                "val_images": report["images"],
            }
        )
        bar.write(
            f"iteration {iteration}: val mIoU {100 * miou:.2f}"
            if miou is not None
            else f"iteration {iteration}: val mIoU undefined"
        )
    return is_best


def _save(run: TrainingRun, *, best: bool = False) -> Path | None:
    """Write ``ckpt_N`` of the run's current iteration N (rank 0; ``best`` also makes it ``best/``) with every
    process's random state, log it, and update ``run.last_good`` and ``run.saved_iteration``. Returns the directory
    on rank 0, None elsewhere.

    Refuses (NonFiniteLossError, nothing written) when the weights or BatchNorm statistics of any process are not
    finite. Collective: every process calls it at the same iteration.
    """
    state, dist = run.state, run.dist
    finite = torch.tensor(
        float(all(bool(torch.isfinite(t).all()) for t in run.model.state_dict().values() if t.is_floating_point())),
        device=run.device,
    )
    if float(distributed.all_reduce_sum(finite)) < dist.world_size:
        raise NonFiniteLossError(
            f"weights or BatchNorm statistics became non-finite by iteration {state.iteration} (the loss was still "
            f"finite); not saved. Last good checkpoint: {run.last_good or 'none (no checkpoint was written yet)'}"
        )
    rng_states = distributed.gather_objects(rng_state())  # every process's own random state
    path = None
    if dist.is_main:
        path = save_checkpoint(
            run.out,
            model=run.model,
            card=run.model.card,
            optimizer=run.optimizer,
            state=state,
            config=run.config.to_dict(),
            keep_last=run.config.keep_last,
            rng_states=rng_states,  # type: ignore[arg-type]
            best=best,
        )
        run.last_good = str(path)
        if run.log is not None:
            run.log.write({"iteration": state.iteration, "event": "checkpoint", "path": path.name})
    run.saved_iteration = state.iteration
    distributed.barrier()
    return path


def _stop(run: TrainingRun, signum: int) -> NoReturn:
    """End a run stopped by ``signum``: save its last completed step unless nothing new was done or it is saved
    already (no validation: one can outlast a scheduler's grace period), log the stop, raise TrainingStopped."""
    state = run.state
    saved = state.iteration > run.start_iteration and run.saved_iteration != state.iteration
    if saved:
        _save(run)
    if run.log is not None:
        run.log.write({"iteration": state.iteration, "event": "stopped", "signal": signal.Signals(signum).name})
        run.log.close()
    kept = run.out / f"ckpt_{state.iteration}"
    raise TrainingStopped(
        signum,
        iteration=state.iteration,
        checkpoint=kept if kept.is_dir() else None,
        saved=saved,
        is_main=run.dist.is_main,
    )


def _finish(run: TrainingRun, final: Path | None) -> Path:
    """Close the log, plot the training curve (rank 0) and return the final checkpoint directory: ``final`` (the
    last one this process wrote), else ``ckpt_N`` of the run's last iteration."""
    if run.log is not None:
        run.log.close()
    if run.dist.is_main:
        from .curves import plot_training_curve

        plot_training_curve(run.out / "log.jsonl", run.out / "curve.png")
    return final if final is not None else run.out / f"ckpt_{run.state.iteration}"
