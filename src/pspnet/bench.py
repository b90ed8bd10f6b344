"""``pspnet bench``: what this machine sustains for PSPNet, measured in one run.

Five measurements (:data:`WHAT`), each its own function, joined by :func:`run_bench` into one JSON-ready dict that
:func:`format_report` prints as a table:

- **ceiling** (:func:`measure_ceiling`): the best sustained GFLOP/s of large 3x3 convolutions (stride 1, padding 1,
  batch 1, shapes :data:`CEILING_SHAPES`) for each precision (fp32; bf16; fp16 on CUDA) and memory layout (NCHW,
  channels_last). FLOPs = 2 x Cin x Cout x 9 x Hout x Wout x N (:func:`conv_flops`). Where the device has no native
  bf16 it is emulated, tens of times slower: bf16 is then timed on the first shape only, once.
- **forward** (:func:`measure_forward`): the eval forward of the model, batch B at H x W, under
  ``torch.inference_mode``, on a copy prepared as ``Segmenter`` prepares the model it loads (BatchNorm folded; fp32
  NCHW; bf16, and fp16 on CUDA, with the weights and inputs in that dtype, channels_last). GFLOP counted by ``torch.utils.flop_counter`` on the meta device (:func:`forward_flops`), and the
  share of the ceiling of the same precision (its best layout).
- **train** (:func:`measure_train`): optimiser steps by :func:`pspnet.engine.train.train_step`, the function
  ``pspnet train`` runs (SGD from :func:`~pspnet.engine.train.param_groups`, lr 0.01, head x10, momentum 0.9, weight
  decay 1e-4; autocast to the precision's dtype, as training does), on a synthetic batch, in a process of its own
  (``spawn``), so that its peak memory is its own: the peak resident set size on a CPU, and what the step adds to
  the RSS just before the first step; ``torch.cuda.max_memory_allocated`` on CUDA. GFLOP/s = 3 x the training-mode
  forward FLOPs (aux head included) per step / seconds per step (backward ~ 2 x forward).
- **protocol** (:func:`measure_protocol`): the official multi-scale + flip test (scales :data:`PROTOCOL_SCALES`,
  sliding windows) on one synthetic photo through :class:`~pspnet.segmenter.Segmenter`, the model prepared as for
  the forward: seconds per image.
- **data** (:func:`measure_data`): the paper's training augmentation
  (:func:`~pspnet.data.transforms.paper_train_transform`) on synthetic uint8 images and masks, in this process:
  images per second.

Times are the minimum over ``repeat`` timed runs after a warm-up run (oneDNN and cuDNN choose and build their kernels
then); a short call is repeated within a timed run until the run lasts :data:`MIN_SAMPLE_SECONDS`. Sizes are
(height, width) in pixels, times in seconds, FLOPs = 2 x multiply-adds, memory in bytes.
"""

from __future__ import annotations

import copy
import datetime
import math
import multiprocessing
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import heap
from .constants import __version__
from .data.transforms import paper_train_transform
from .engine.train import StepSettings, param_groups, train_step
from .errors import show_warning_line
from .inference import PRECISIONS, InferenceSettings, cpu_flags, infer_proba, native_bf16, resolve_precision
from .models.build import build_model
from .models.config import ARCHITECTURES, ModelConfig
from .models.network import SegmentationNetwork
from .segmenter import Segmenter, prepare_for_inference

__all__ = [
    "CEILING_SHAPES",
    "MIN_SAMPLE_SECONDS",
    "PROTOCOL_SCALES",
    "WHAT",
    "bench_precision",
    "conv_flops",
    "format_report",
    "forward_flops",
    "machine_info",
    "measure_ceiling",
    "measure_data",
    "measure_forward",
    "measure_protocol",
    "measure_train",
    "parse_what",
    "run_bench",
    "time_call",
    "time_train_steps",
]

WHAT = ("ceiling", "forward", "train", "protocol", "data")
# (Cin, Cout, H, W) of the ceiling's 3x3 convolutions: the widths of PSPNet50's layer1-2 and of its head's 3x3
# convolution, at the feature sizes of a 512x512 (64x64 at stride 8) and a 1024x1024 input.
CEILING_SHAPES: tuple[tuple[int, int, int, int], ...] = (
    (256, 256, 64, 64),
    (256, 256, 128, 128),
    (512, 512, 64, 64),
    (512, 512, 128, 128),
)
PROTOCOL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
# The protocol's crop and base size for a model without a card (the paper's ADE20K / VOC settings).
DEFAULT_CROP, DEFAULT_BASE_SIZE = (473, 473), 512
MIN_SAMPLE_SECONDS = 0.05
LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
# The train step's optimiser: the official recipe's SGD (pspnet train's defaults).
TRAIN_LR, TRAIN_HEAD_LR_MULT, TRAIN_MOMENTUM, TRAIN_WEIGHT_DECAY = 0.01, 10.0, 0.9, 1e-4

Progress = Callable[[str], None]


def _quiet(line: str) -> None:
    """The progress callback that says nothing."""


def parse_what(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"forward,ceiling"`` (or a sequence of names) -> the measurements in :data:`WHAT`'s order, each once.

    Raises ``ValueError`` naming the unknown item and the choices."""
    items = [item.strip() for item in (text.split(",") if isinstance(text, str) else text)]
    items = [item for item in items if item]
    unknown = [item for item in items if item not in WHAT]
    if unknown:
        raise ValueError(f"unknown item {unknown[0]!r}; choose from {','.join(WHAT)} (comma-separated)")
    if not items:
        raise ValueError(f"name at least one of {','.join(WHAT)}")
    return tuple(name for name in WHAT if name in items)


def bench_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """``(precision, why)`` for a benchmark on ``device``: :func:`pspnet.inference.resolve_precision`, with fp16
    refused (``ValueError`` naming ``precision``) anywhere but on CUDA."""
    chosen, why = resolve_precision(precision, device)
    if chosen == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device, got {device}; use bf16, fp32 or auto")
    return chosen, why


def _synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_call(
    fn: Callable[[], object],
    device: torch.device,
    *,
    repeat: int,
    warm_up: bool = True,
    min_seconds: float = 0.0,
) -> list[float]:
    """Seconds per call of ``fn``, one value per timed run (``repeat`` runs; take the minimum).

    With ``warm_up`` a first call runs untimed, and its duration sets how many calls make one timed run: enough to
    last ``min_seconds`` (at most 1000), so short calls are not lost in the timer's and the device queue's noise.
    The device is synchronised before and after every timed run."""
    if repeat < 1:
        raise ValueError(f"repeat must be positive, got {repeat}")
    calls = 1
    _synchronize(device)
    if warm_up:
        start = time.perf_counter()
        fn()
        _synchronize(device)
        first = time.perf_counter() - start
        if min_seconds > 0:
            calls = min(1000, max(1, math.ceil(min_seconds / max(first, 1e-9))))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _synchronize(device)
        samples.append((time.perf_counter() - start) / calls)
    return samples


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform.processor()`` says, else None."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info(device: torch.device) -> dict[str, Any]:
    """Versions, threads and the device: on a CPU its vector capability (``isa``: AMX, AVX512_BF16, else
    ``torch.backends.cpu.get_cpu_capability()``, e.g. AVX512 or AVX2) and whether it has native bf16 and AMX tiles;
    on CUDA the GPU's name and whether fp32 convolutions may use TF32. ``heap_kept``: whether freed memory stays in the
    process for reuse (:func:`pspnet.heap.keep_freed_memory`, which the ``pspnet`` command applies). ``load_average`` (1, 5, 15 minutes; None where
    the system has none) tells whether other work shared the machine."""
    info: dict[str, Any] = {
        "pspnet": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "native_bf16": native_bf16(device),
        "heap_kept": heap.kept(),
    }
    if device.type == "cpu":
        capability, *extras = cpu_flags()
        bf16, amx = "AVX512_BF16" in extras, "AMX" in extras
        info.update(
            capability=capability,
            avx512_bf16=bf16,
            amx=amx,
            isa="AMX" if amx else "AVX512_BF16" if bf16 else capability,
        )
    elif device.type == "cuda":
        info.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
        )
    return info


# -- FLOP counts ---------------------------------------------------------------------------------------------------


def conv_flops(c_in: int, c_out: int, h_out: int, w_out: int, batch: int = 1, kernel: int = 3) -> int:
    """FLOPs of a dense ``kernel x kernel`` convolution: 2 x Cin x Cout x kernel^2 x Hout x Wout x N."""
    return 2 * c_in * c_out * kernel * kernel * h_out * w_out * batch


def forward_flops(config: ModelConfig, batch: int, height: int, width: int, *, training: bool = False) -> int:
    """FLOPs of one forward of a model of ``config`` on ``(batch, 3, height, width)``, counted by
    ``torch.utils.flop_counter`` (convolutions and matrix products) on the meta device: no weights are allocated.
    ``training`` counts the training-mode forward, whose aux head adds its share."""
    with torch.device("meta"):
        model = build_model(config)
    model.train(training)
    with warnings.catch_warnings(), torch.no_grad(), FlopCounterMode(display=False) as counter:
        warnings.simplefilter("ignore")  # what the model warns about a real batch (e.g. of one image) is moot here
        model(torch.empty(batch, 3, height, width, device="meta"))
    return int(counter.get_total_flops())


# -- the measurements ----------------------------------------------------------------------------------------------


def _ceiling_precisions(device: torch.device) -> list[str]:
    """fp32 and bf16 everywhere, fp16 on CUDA."""
    return ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]


def _time_conv(
    device: torch.device,
    shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    memory_format: torch.memory_format,
    *,
    repeat: int,
    min_seconds: float,
) -> float:
    """Minimum seconds of one 3x3 convolution (stride 1, padding 1, no bias) of ``shape`` = (Cin, Cout, H, W) at
    batch 1 in ``dtype`` and ``memory_format`` (input and weight), under ``torch.inference_mode``."""
    c_in, c_out, height, width = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, c_in, height, width, generator=generator).to(device, dtype)
    weight = (torch.randn(c_out, c_in, 3, 3, generator=generator) / math.sqrt(9 * c_in)).to(device, dtype)
    x = x.contiguous(memory_format=memory_format)
    weight = weight.contiguous(memory_format=memory_format)
    with torch.inference_mode():
        samples = time_call(lambda: F.conv2d(x, weight, padding=1), device, repeat=repeat, min_seconds=min_seconds)
    return min(samples)


def measure_ceiling(
    device: torch.device,
    *,
    shapes: Sequence[tuple[int, int, int, int]] = CEILING_SHAPES,
    repeat: int = 3,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """The best sustained GFLOP/s of 3x3 convolutions (stride 1, padding 1, batch 1, no bias) of ``shapes``
    ((Cin, Cout, H, W); the output is H x W) per precision and layout, under ``torch.inference_mode``.

    Returns ``{"runs": [{precision, layout, c_in, c_out, height, width, flops, gflop, seconds, gflops}], "best":
    {precision: {gflops, layout, shape}}, "emulated": [precisions timed on the first shape, once, because the
    device emulates them], ...}``."""
    runs: list[dict[str, Any]] = []
    emulated = [] if native_bf16(device) else ["bf16"]
    for precision in _ceiling_precisions(device):
        dtype = PRECISIONS[precision] or torch.float32
        capped = precision in emulated
        for layout, memory_format in LAYOUTS.items():
            progress(f"ceiling: {precision} {layout}" + (" (emulated: one shape, once)" if capped else ""))
            for shape in shapes[:1] if capped else shapes:
                c_in, c_out, height, width = shape
                seconds = _time_conv(
                    device,
                    shape,
                    dtype,
                    memory_format,
                    repeat=1 if capped else repeat,
                    min_seconds=0.0 if capped else MIN_SAMPLE_SECONDS,
                )
                flops = conv_flops(c_in, c_out, height, width)
                runs.append(
                    {
                        "precision": precision,
                        "layout": layout,
                        "c_in": c_in,
                        "c_out": c_out,
                        "height": height,
                        "width": width,
                        "flops": flops,
                        "gflop": flops / 1e9,
                        "seconds": seconds,
                        "gflops": flops / seconds / 1e9,
                    }
                )
    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        top = best.get(run["precision"])
        if top is None or run["gflops"] > top["gflops"]:
            shape_text = f"{run['c_in']}->{run['c_out']} {run['height']}x{run['width']}"
            best[run["precision"]] = {"gflops": run["gflops"], "layout": run["layout"], "shape": shape_text}
    return {
        "flops_formula": "2 x Cin x Cout x 9 x Hout x Wout x N",
        "kernel": 3,
        "batch": 1,
        "repeat": repeat,
        "emulated": emulated,
        "runs": runs,
        "best": best,
    }


def _forward_copy(
    model: SegmentationNetwork, precision: str
) -> tuple[torch.nn.Module, torch.dtype, torch.memory_format]:
    """The model to time for ``precision``: a copy prepared as ``Segmenter`` prepares the model it loads
    (:func:`~pspnet.segmenter.prepare_for_inference`: BatchNorm folded; bf16 weights in channels_last), fp16 (CUDA)
    cast to float16 in channels_last. Returns (model, input dtype, input memory format)."""
    net = prepare_for_inference(copy.deepcopy(model), precision)
    if precision == "fp16":
        net = net.to(dtype=torch.float16, memory_format=torch.channels_last)
    dtype = next(net.parameters()).dtype
    return net, dtype, torch.contiguous_format if dtype == torch.float32 else torch.channels_last


def measure_forward(
    model: SegmentationNetwork,
    device: torch.device,
    *,
    precision: str,
    size: tuple[int, int],
    batch: int = 1,
    repeat: int = 3,
    ceiling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Seconds of one eval forward of ``model`` (on ``device``) on a ``(batch, 3, H, W)`` input (``size`` =
    (H, W)) under ``torch.inference_mode``, at ``precision`` (see :func:`_forward_copy`), its FLOPs
    (:func:`forward_flops`), GFLOP/s, and with a ``ceiling`` (:func:`measure_ceiling`) the percentage of that
    precision's best ceiling."""
    height, width = size
    net, dtype, memory_format = _forward_copy(model, precision)
    net.eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, height, width, generator=generator).to(device, dtype)
    x = x.contiguous(memory_format=memory_format)
    with torch.inference_mode():
        samples = time_call(lambda: net(x), device, repeat=repeat, min_seconds=MIN_SAMPLE_SECONDS)
    flops = forward_flops(model.config, batch, height, width)
    seconds = min(samples)
    gflops = flops / seconds / 1e9
    top = (ceiling or {}).get("best", {}).get(precision)
    return {
        "precision": precision,
        "how": "BatchNorm folded, NCHW"
        if dtype == torch.float32
        else f"BatchNorm folded, weights and inputs {dtype}, channels_last",
        "batch": batch,
        "height": height,
        "width": width,
        "flops": flops,
        "gflop": flops / 1e9,
        "seconds": seconds,
        "samples": samples,
        "gflops": gflops,
        "images_per_s": batch / seconds,
        "ceiling_gflops": top["gflops"] if top else None,
        "percent_of_ceiling": 100 * gflops / top["gflops"] if top else None,
    }


def _rss_bytes() -> int | None:
    """This process's resident set size now (Linux /proc/self/statm), else None."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size, else None: ``VmHWM`` of ``/proc/self/status`` on Linux, the peak of
    this process's own memory since it started; elsewhere ``ru_maxrss`` (bytes on macOS). Linux's ``ru_maxrss``
    is no use in a spawned process: it keeps the parent's peak across ``exec`` (a child of a parent holding 1 GiB
    starts at 1 GiB there, at 14 MiB in ``VmHWM``)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def time_train_steps(
    config: ModelConfig,
    device: torch.device,
    *,
    precision: str,
    size: tuple[int, int],
    batch: int,
    steps: int,
    threads: int | None = None,
    channels_last: bool = False,
    compile: bool = False,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """``steps`` + 1 optimiser steps of :func:`pspnet.engine.train.train_step` in this process, on a model of
    ``config`` built here (random weights: the time does not depend on them) and one synthetic collated batch
    (``{"image": uint8 (B, 3, H, W), "mask": int64 (B, H, W)}`` of classes 0..K-1). The first step is a warm-up.

    Returns the pid, the seconds of each timed step and its minimum, the losses, and the memory: on CUDA
    ``torch.cuda.max_memory_allocated`` (``kind`` "cuda allocated"), else the peak resident set size of this process
    (``kind`` "peak RSS"); ``before_bytes`` is the same measure just before the first step (the model, optimiser and
    batch in place), ``step_bytes`` the difference: what the steps add (activations, gradients, momentum). The batch
    stays on the CPU and goes to the device in every step, as a data loader's does. ``channels_last`` and
    ``compile`` are the training config's options of the same names (the model and images in channels_last; the
    forward through ``torch.compile``, whose compilation falls in the warm-up step)."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    height, width = size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(config).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(
        param_groups(model, lr=TRAIN_LR, head_lr_mult=TRAIN_HEAD_LR_MULT),
        lr=TRAIN_LR,
        momentum=TRAIN_MOMENTUM,
        weight_decay=TRAIN_WEIGHT_DECAY,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    settings = StepSettings(
        autocast_dtype=PRECISIONS[precision], channels_last=channels_last, align_corners=config.align_corners
    )
    generator = torch.Generator().manual_seed(0)
    micro_batch = {
        "image": torch.randint(0, 256, (batch, 3, height, width), generator=generator, dtype=torch.uint8),
        "mask": torch.randint(0, config.num_classes, (batch, height, width), generator=generator, dtype=torch.int64),
    }
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
    else:
        before = _rss_bytes() or peak_rss_bytes()
    losses: list[float] = []
    seconds: list[float] = []
    for step in range(steps + 1):
        progress(f"train: step {step + 1} of {steps + 1}" + (" (warm-up)" if step == 0 else ""))
        _synchronize(device)
        start = time.perf_counter()
        losses.append(train_step(model, optimizer, scaler, [micro_batch], settings, forward=forward))
        _synchronize(device)
        if step:
            seconds.append(time.perf_counter() - start)
    if device.type == "cuda":
        kind, peak = "cuda allocated", torch.cuda.max_memory_allocated(device)
    else:
        kind, peak = "peak RSS", peak_rss_bytes()
    return {
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
        "compile": compile,
        "steps": seconds,
        "seconds": min(seconds),
        "losses": losses,
        "memory": {
            "kind": kind,
            "peak_bytes": peak,
            "before_bytes": before,
            "step_bytes": peak - before if peak is not None and before is not None else None,
        },
    }


def _train_worker(connection: Any, arguments: dict[str, Any]) -> None:
    """The spawned process of :func:`measure_train`: :func:`time_train_steps`, its result (or its error as
    ``{"error": text}``) sent back through ``connection``."""
    warnings.showwarning = show_warning_line  # as pspnet prints warnings
    if arguments.pop("heap_kept"):  # the heap as the parent's (a spawned process starts with glibc's defaults)
        heap.keep_freed_memory()
    try:
        progress: Progress = _quiet
        if arguments.pop("progress"):

            def progress(line: str) -> None:
                print(f"bench: {line}", file=sys.stderr, flush=True)

        arguments["device"] = torch.device(arguments["device"])
        result = time_train_steps(progress=progress, **arguments)
    except Exception as error:  # noqa: BLE001 - sent to the parent, which raises it
        result = {"error": f"{type(error).__name__}: {error}"}
    connection.send(result)
    connection.close()


def measure_train(
    config: ModelConfig,
    device: torch.device,
    *,
    precision: str,
    size: tuple[int, int] = (473, 473),
    batch: int = 2,
    repeat: int = 3,
    channels_last: bool = False,
    compile: bool = False,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """:func:`time_train_steps` (one warm-up step, then ``repeat``; ``channels_last`` and ``compile`` as there) in a
    process of its own (multiprocessing's
    ``spawn``: a fresh interpreter, so its peak memory is the step's alone), with this process's thread count;
    plus the FLOPs of a step (3 x the training-mode forward of the batch: the backward costs about twice the
    forward), GFLOP/s and images per second. A failure in that process is a ``RuntimeError`` giving its error."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    arguments = {
        "config": config,
        "device": str(device),
        "precision": precision,
        "size": tuple(size),
        "batch": batch,
        "steps": repeat,
        "channels_last": channels_last,
        "compile": compile,
        "threads": torch.get_num_threads(),
        "progress": progress is not _quiet,
        "heap_kept": heap.kept(),
    }
    process = context.Process(target=_train_worker, args=(sender, arguments), name="pspnet-bench-train")
    progress(f"train: starting a process for {repeat + 1} steps of batch {batch} at {size[0]}x{size[1]}")
    process.start()
    sender.close()  # the child holds the only sending end: its exit ends recv() below
    result: dict[str, Any] | None = None
    try:
        result = receiver.recv()
    except EOFError:  # it ended without sending
        pass
    except BaseException:  # interrupted here: the process started for the step ends too
        process.terminate()
        process.join()
        raise
    finally:
        receiver.close()
    process.join()
    if result is None:
        raise RuntimeError(
            f"the training-step process ended without a result (exit code {process.exitcode}; out of memory?)"
        )
    if "error" in result:
        raise RuntimeError(f"the training step failed in its process: {result['error']}")
    flops = 3 * forward_flops(config, batch, size[0], size[1], training=True)
    result.update(
        precision=precision,
        autocast=str(PRECISIONS[precision]) if PRECISIONS[precision] is not None else None,
        batch=batch,
        height=size[0],
        width=size[1],
        flops=flops,
        gflop=flops / 1e9,
        flops_rule="3 x the training-mode forward FLOPs (aux head included)",
        gflops=flops / result["seconds"] / 1e9,
        images_per_s=batch / result["seconds"],
    )
    return result


def measure_protocol(
    model: SegmentationNetwork,
    device: torch.device,
    *,
    precision: str,
    size: tuple[int, int],
    crop_size: tuple[int, int] | None = None,
    base_size: int | None = None,
    repeat: int = 3,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Seconds per image of the official multi-scale + flip test (:data:`PROTOCOL_SCALES`, sliding windows of
    ``crop_size`` with stride 2/3, long side ``base_size`` at scale 1) on one synthetic ``size`` = (H, W) RGB photo
    through :class:`~pspnet.segmenter.Segmenter` at ``precision``, the model prepared as ``Segmenter.from_checkpoint`` prepares it (:func:`~pspnet.segmenter.prepare_for_inference`), label map included. Crop and base size
    default to the model card's, else 473x473 and 512. One whole-crop forward warms up; each of the ``repeat`` timed
    runs is one image. ``forward_images`` counts the images the network ran on per photo (windows, flips), and
    ``flops`` their forwards' FLOPs (:func:`forward_flops`; the resizing, softmax and averaging are not counted)."""
    card = model.card
    crop = tuple(crop_size or (card.crop_size if card is not None else DEFAULT_CROP))
    base = base_size if base_size is not None else card.base_size if card is not None else DEFAULT_BASE_SIZE
    settings = InferenceSettings(
        mode="slide", crop_size=crop, base_size=base, scales=PROTOCOL_SCALES, flip=True, precision=precision
    )
    segmenter = Segmenter(prepare_for_inference(copy.deepcopy(model), precision), settings)
    height, width = size
    photo = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    progress(f"protocol: warm-up forward at {crop[0]}x{crop[1]}")
    warm = torch.zeros(1, 3, *crop, device=device, dtype=segmenter.dtype)
    infer_proba(segmenter.model, warm, InferenceSettings(precision=precision))
    inputs_seen: list[tuple[int, int, int]] = []  # (batch, height, width) of every network forward

    def record(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        inputs_seen.append((int(inputs[0].shape[0]), int(inputs[0].shape[2]), int(inputs[0].shape[3])))

    handle = segmenter.model.register_forward_pre_hook(record)
    samples: list[float] = []
    try:
        for run in range(repeat):
            progress(f"protocol: image {run + 1} of {repeat}")
            samples += time_call(lambda: segmenter.predict(photo), device, repeat=1, warm_up=False)
    finally:
        handle.remove()
    counts: dict[tuple[int, int, int], int] = {}
    for shape in inputs_seen:
        counts[shape] = counts.get(shape, 0) + 1
    flops = sum(n * forward_flops(model.config, *shape) for shape, n in counts.items()) // repeat
    seconds = min(samples)
    return {
        "precision": precision,
        "height": height,
        "width": width,
        "mode": "slide",
        "scales": list(PROTOCOL_SCALES),
        "flip": True,
        "crop_size": list(crop),
        "base_size": base,
        "forward_images": sum(b for b, _, _ in inputs_seen) // repeat,
        "flops": flops,
        "gflop": flops / 1e9,
        "samples": samples,
        "seconds": seconds,
        "gflops": flops / seconds / 1e9,
        "images_per_s": 1 / seconds,
    }


def measure_data(
    *,
    size: tuple[int, int],
    crop_size: tuple[int, int] = (473, 473),
    num_classes: int = 150,
    images: int = 32,
    repeat: int = 3,
) -> dict[str, Any]:
    """Images per second of :func:`~pspnet.data.transforms.paper_train_transform` (crop ``crop_size``) in this
    process, on ``images`` synthetic uint8 RGB images of ``size`` = (H, W) with masks of classes 0..K-1 (uint8, or
    int32 above 256 classes); a generator per sample from (0, index), made inside the timing as the data sets do.
    Decoding, normalisation and collation are not included. One pass warms up; the best of ``repeat`` passes
    counts."""
    height, width = size
    transform = paper_train_transform(crop_size=tuple(crop_size))
    rng = np.random.default_rng(0)
    distinct = min(images, 4)
    mask_dtype = np.uint8 if num_classes <= 256 else np.int32
    pairs = [
        (
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            rng.integers(0, num_classes, (height, width)).astype(mask_dtype),
        )
        for _ in range(distinct)
    ]

    def one_pass() -> None:
        for index in range(images):
            image, mask = pairs[index % distinct]
            transform(image, mask, np.random.default_rng((0, index)))

    samples = time_call(one_pass, torch.device("cpu"), repeat=repeat)
    try:
        import cv2

        cv2_threads: int | None = int(cv2.getNumThreads())
    except ImportError:
        cv2_threads = None
    return {
        "height": height,
        "width": width,
        "crop_size": list(crop_size),
        "images": images,
        "opencv_threads": cv2_threads,
        "seconds_per_image": min(samples) / images,
        "images_per_s": images / min(samples),
    }


# -- the whole run -------------------------------------------------------------------------------------------------


def run_bench(
    model: SegmentationNetwork,
    *,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    size: tuple[int, int] = (512, 512),
    batch: int = 1,
    train_size: tuple[int, int] = (473, 473),
    train_batch: int = 2,
    train_channels_last: bool = False,
    train_compile: bool = False,
    what: str | Sequence[str] = WHAT,
    repeat: int = 3,
    ceiling_shapes: Sequence[tuple[int, int, int, int]] | None = None,
    crop_size: tuple[int, int] | None = None,
    base_size: int | None = None,
    data_images: int = 32,
    name: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure ``what`` (items of :data:`WHAT`) for ``model`` on ``device`` in this run; returns a JSON-ready dict
    with ``machine`` (:func:`machine_info` and the precision chosen, with its reason), ``model``, ``settings`` and
    one entry per measurement (see the module docstring and each ``measure_*`` function).

    ``model`` is moved to ``device`` and put in eval mode. ``precision`` "auto" picks bf16 where the device computes
    it natively, else fp32 (:func:`bench_precision`; fp16 only on CUDA). ``size`` (H, W) and ``batch`` are the
    forward's, and ``size`` the protocol's photo and the data pipeline's images; ``train_size`` and
    ``train_batch`` the train step's (``train_size`` is also the augmentation's crop), which runs in channels_last
    and through ``torch.compile`` with ``train_channels_last`` and ``train_compile``. ``ceiling_shapes`` default to
    :data:`CEILING_SHAPES`; ``crop_size`` and ``base_size`` of the protocol to the model card's. ``progress`` gets a
    line before each long step. Raises ``ValueError`` naming the argument for a bad value."""
    device = torch.device(device)
    items = parse_what(what)
    chosen, why = bench_precision(precision, device)
    for label, value in (("batch", batch), ("train_batch", train_batch), ("repeat", repeat)):
        if value < 1:
            raise ValueError(f"{label} must be positive, got {value}")
    for label, pair in (("size", size), ("train_size", train_size)):
        if len(pair) != 2 or min(pair) < 1:
            raise ValueError(f"{label} must be two positive integers (height, width), got {pair!r}")
    say = progress or _quiet
    model = model.to(device).eval()
    card = model.card
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(device), "precision_asked": precision, "precision": chosen, "precision_why": why},
        "model": {
            "name": name,
            "architecture": model.config.architecture,
            "depth": model.config.depth,
            "num_classes": model.num_classes,
            "output_stride": model.config.output_stride,
            "aux": model.config.aux,
            "parameters": sum(p.numel() for p in model.parameters()),
            "card_crop_size": list(card.crop_size) if card is not None else None,
            "card_base_size": card.base_size if card is not None else None,
        },
        "settings": {
            "what": list(items),
            "size": list(size),
            "batch": batch,
            "train_size": list(train_size),
            "train_batch": train_batch,
            "train_channels_last": train_channels_last,
            "train_compile": train_compile,
            "repeat": repeat,
        },
    }
    if "ceiling" in items:
        say("ceiling: 3x3 convolutions")
        shapes = CEILING_SHAPES if ceiling_shapes is None else tuple(ceiling_shapes)
        report["ceiling"] = measure_ceiling(device, shapes=shapes, repeat=repeat, progress=say)
    if "forward" in items:
        say(f"forward: batch {batch} at {size[0]}x{size[1]}, {chosen}")
        report["forward"] = measure_forward(
            model, device, precision=chosen, size=size, batch=batch, repeat=repeat, ceiling=report.get("ceiling")
        )
    if "train" in items:
        report["train"] = measure_train(
            model.config,
            device,
            precision=chosen,
            size=train_size,
            batch=train_batch,
            repeat=repeat,
            channels_last=train_channels_last,
            compile=train_compile,
            progress=say,
        )
    if "protocol" in items:
        report["protocol"] = measure_protocol(
            model,
            device,
            precision=chosen,
            size=size,
            crop_size=crop_size,
            base_size=base_size,
            repeat=repeat,
            progress=say,
        )
    if "data" in items:
        say(f"data: paper_train_transform on {size[0]}x{size[1]} images, crop {train_size[0]}x{train_size[1]}")
        report["data"] = measure_data(
            size=size, crop_size=train_size, num_classes=model.num_classes, images=data_images, repeat=repeat
        )
    return report


# -- the printed table ---------------------------------------------------------------------------------------------


def _bytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def _header_lines(report: dict[str, Any]) -> list[str]:
    machine, model = report["machine"], report["model"]
    if "isa" in machine:
        device = (
            f"CPU {machine['cpu_model'] or '?'}: {machine['isa']} (capability {machine['capability']}, native bf16 "
            f"{'yes' if machine['avx512_bf16'] else 'no'}, AMX {'yes' if machine['amx'] else 'no'})"
        )
    elif "gpu" in machine:
        tf32 = "may use TF32" if machine["cudnn_allow_tf32"] else "no TF32"
        device = f"{machine['device']} {machine['gpu']} (CUDA {machine['cuda']}; fp32 convolutions {tf32})"
    else:
        device = machine["device"]
    title = ARCHITECTURES[model.get("architecture", "pspnet")].title
    name = model["name"] or f"{title} on ResNet-{model['depth']}"
    load = machine["load_average"]
    versions = (
        f"torch {machine['torch']}, Python {machine['python']}, {machine['threads']} threads, "
        f"{machine['logical_cpus']} logical CPUs"
        + (f", load average {load[0]:.2f} at the start" if load is not None else "")
    )
    return [
        f"pspnet bench {report['date']}: {name}, {model['num_classes']} classes, {model['parameters']:,} parameters",
        versions,
        f"device: {device}",
        f"precision: {machine['precision']} ({machine['precision_why']})",
        "heap: "
        + (
            "freed memory kept for reuse (pspnet.heap.keep_freed_memory)"
            if machine.get("heap_kept")
            else "glibc's defaults (big blocks mapped and returned on free)"
        ),
        "FLOPs = 2 x multiply-adds; times are the minimum over the timed runs after a warm-up",
    ]


def _ceiling_lines(ceiling: dict[str, Any]) -> list[str]:
    lines = ["", f"ceiling: 3x3 convolutions, stride 1, batch {ceiling['batch']}, torch.inference_mode"]
    lines.append(f"  FLOPs = {ceiling['flops_formula']}")
    lines.append(f"  {'precision':<10}{'layout':<15}{'Cin->Cout HxW':<20}{'GFLOP':>8}{'seconds':>11}{'GFLOP/s':>10}")
    for run in ceiling["runs"]:
        shape = f"{run['c_in']}->{run['c_out']} {run['height']}x{run['width']}"
        lines.append(
            f"  {run['precision']:<10}{run['layout']:<15}{shape:<20}{run['gflop']:>8.2f}{run['seconds']:>11.4f}"
            f"{run['gflops']:>10.1f}"
        )
    best = ", ".join(f"{p} {b['gflops']:.1f} GFLOP/s ({b['layout']})" for p, b in ceiling["best"].items())
    lines.append(f"  best: {best}")
    for precision in ceiling["emulated"]:
        lines.append(f"  {precision} is emulated on this device: timed on one shape, once")
    return lines


def _forward_lines(forward: dict[str, Any]) -> list[str]:
    if forward["percent_of_ceiling"] is not None:
        share = (
            f", {forward['percent_of_ceiling']:.0f}% of the {forward['precision']} ceiling "
            f"({forward['ceiling_gflops']:.1f} GFLOP/s)"
        )
    else:
        share = " (ceiling not measured)"
    title = (
        f"forward: eval, batch {forward['batch']} at {forward['height']}x{forward['width']}, {forward['precision']} "
        f"({forward['how']}), torch.inference_mode"
    )
    numbers = (
        f"  {forward['seconds']:.4f} s, {forward['gflop']:.2f} GFLOP (torch.utils.flop_counter), "
        f"{forward['gflops']:.1f} GFLOP/s{share}; {forward['images_per_s']:.2f} images/s"
    )
    return ["", title, numbers]


def _train_lines(train: dict[str, Any]) -> list[str]:
    memory = train["memory"]
    autocast = f"autocast {train['autocast']}" if train["autocast"] else "no autocast"
    options = "".join(
        f", {name}"
        for name, on in (("channels_last", train["channels_last"]), ("torch.compile", train["compile"]))
        if on
    )
    title = (
        f"train: pspnet.engine.train.train_step, batch {train['batch']} at {train['height']}x{train['width']}, "
        f"{train['precision']} ({autocast}{options}), SGD, in its own process (pid {train['pid']}, "
        f"{train['threads']} threads)"
    )
    speed = (
        f"  {train['seconds']:.3f} s per step ({len(train['steps'])} timed after 1 warm-up), "
        f"{train['images_per_s']:.2f} images/s; {train['gflop']:.1f} GFLOP per step ({train['flops_rule']}): "
        f"{train['gflops']:.1f} GFLOP/s"
    )
    peak = (
        f"  memory ({memory['kind']}): peak {_bytes(memory['peak_bytes'])}, {_bytes(memory['step_bytes'])} above "
        f"the {_bytes(memory['before_bytes'])} before the first step; last loss {train['losses'][-1]:.4f}"
    )
    return ["", title, speed, peak]


def _protocol_lines(protocol: dict[str, Any]) -> list[str]:
    crop = protocol["crop_size"]
    scales = " ".join(f"{s:g}" for s in protocol["scales"])
    title = (
        f"protocol: Segmenter, scales {scales}, flip, mode slide, crop {crop[0]}x{crop[1]}, base size "
        f"{protocol['base_size'] or 'native'}, {protocol['precision']}, one {protocol['height']}x{protocol['width']} "
        "photo"
    )
    numbers = (
        f"  {protocol['seconds']:.3f} s per image; {protocol['forward_images']} network inputs per image, "
        f"{protocol['gflop']:.1f} GFLOP in their forwards: {protocol['gflops']:.1f} GFLOP/s"
    )
    return ["", title, numbers]


def _data_lines(data: dict[str, Any]) -> list[str]:
    crop = data["crop_size"]
    title = (
        f"data: paper_train_transform (scale, rotate, blur, flip, crop {crop[0]}x{crop[1]}) on "
        f"{data['height']}x{data['width']} uint8 images + masks, one process, OpenCV threads {data['opencv_threads']}"
    )
    numbers = f"  {data['images_per_s']:.1f} images/s ({1000 * data['seconds_per_image']:.2f} ms per image)"
    return ["", title, numbers]


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`run_bench` as the text ``pspnet bench`` prints: a header, then one block per
    measurement."""
    lines = _header_lines(report)
    blocks = {
        "ceiling": _ceiling_lines,
        "forward": _forward_lines,
        "train": _train_lines,
        "protocol": _protocol_lines,
        "data": _data_lines,
    }
    for name, block in blocks.items():
        if name in report:
            lines += block(report[name])
    return "\n".join(lines)
