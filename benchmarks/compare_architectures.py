"""PSPNet, DeepLab v3+ and U-Net on one backbone and one CamVid recipe, trained and measured in one run; writes
docs/comparison.md.

    PYTHONPATH=src nice -n 19 .venv/bin/python benchmarks/compare_architectures.py [--iterations 1000]
        [--seeds 0 1 2] [--set KEY=VALUE ...] [--rows pspnet deeplabv3plus unet ...] [--context DIR|none]
        [--work runs/compare_architectures] [--doc docs/comparison.md]
    PYTHONPATH=src nice -n 19 .venv/bin/python benchmarks/compare_architectures.py --smoke --doc /tmp/smoke.md
    PYTHONPATH=src .venv/bin/python benchmarks/compare_architectures.py --method-only    # the page without results

Five rows, each trained by ``pspnet train`` (a subprocess: the product's path) with the recipe of
configs/camvid_pspnet18_cpu.yaml (ResNet-18 deep stem from scratch, its crops, augmentation, median-frequency class
weights, lr, batch and seed) for the same number of iterations, on CamVid train without sequence 0006R0, validated
on 0006R0 (the config's held-out protocol):

- PSPNet: the config as it is;
- PSPNet without pyramid pooling (``ppm=false``): what the context module itself adds;
- PSPNet + skip decoder (``skip_decoder=true``): PSPNet's head followed by DeepLab v3+'s stride-4 decoder;
- DeepLab v3+ and U-Net, whose head widths follow the config's departure from PSPNet's paper width (128 of 512:
  the same factor on their paper widths); DeepLab v3+ at the config's output stride, U-Net at 32 (it has no
  dilation).

Then, in this process: mIoU, mAcc, Boundary IoU and the IoU of thin and of large classes on 0006R0 for each run's
last checkpoint and for the checkpoints before it (the swing between them is the noise threshold of every
comparison); parameters and GFLOPs at 360x480 (``pspnet.introspect.summarize``); fp32 images/s at 360x480 with the
models timed in turn in one loop; the peak memory of a training step at the recipe's batch and crop, each model in a
process of its own (``pspnet.bench.measure_train``). The page compares the seed's qualitative claims with these
numbers, row by row, and shows one 0006R0 image segmented by each model with a zoomed crop (PNG beside the page).

``--set`` changes the recipe for every row alike (e.g. a smaller batch where a CPU cannot train five rows at the
config's batch in the time at hand; the page says so); ``--rows`` runs some rows only (PSPNet always: every verdict
compares with it; a verdict that needs a row not run says so). The context test: after the rows, the script runs
``pspnet demo --compare`` into ``--context`` (default ``WORK/demo``; a folder that already holds its
``comparison.json`` is read, not rerun) for the column of context-scene mIoU: the demo's synthetic scenes test
context directly, CamVid only indirectly. ``--context none`` leaves the column empty (a smoke run does).

Resumable: runs live in ``--work``; a finished run (its last checkpoint present) is reused, an unfinished one is
continued with ``pspnet train --resume``, evaluations are cached. Interrupt with Ctrl-C (the run in progress saves
its last step) and rerun the same command to continue.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw, ImageFont

import pspnet
from pspnet import heap
from pspnet.atomic import atomic_open
from pspnet.bench import machine_info, measure_train, time_call
from pspnet.data.classes import DATASETS
from pspnet.data.datasets import SegmentationDataset, build_dataset
from pspnet.data.io import read_mask
from pspnet.demo import describe_head
from pspnet.engine.config import TrainConfig, load_train_config
from pspnet.engine.evaluate import evaluate
from pspnet.inference import InferenceSettings, cpu_flags
from pspnet.introspect import summarize
from pspnet.models.build import build_model
from pspnet.models.config import ARCHITECTURES, UNET_BLOCKS, ModelConfig
from pspnet.segmenter import prepare_for_inference
from pspnet.visualize import colorize

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "camvid_pspnet18_cpu.yaml"
DATA = ROOT.parent / "shared" / "data" / "camvid"
WORK = ROOT / "runs" / "compare_architectures"
DOC = ROOT / "docs" / "comparison.md"
FIGURE = "images/comparison_camvid_0006R0.png"  # relative to the page's folder
HOLDOUT = "0006R0"  # the CamVid sequence held out of training (configs/camvid_pspnet18_cpu.yaml)
THIN = ("Pole", "SignSymbol", "Fence", "Pedestrian", "Bicyclist")
LARGE = ("Sky", "Building", "Road")
TIMING_SIZE = (360, 480)  # CamVid's native size, evaluated whole
# Config keys that do not change the trained model: a run in the work directory may differ in them.
BOOKKEEPING = ("keep_last", "workers", "log_every")
ROW_KEYS = ("pspnet", "pspnet_noppm", "pspnet_skip", "deeplabv3plus", "unet")  # the rows of variants(), in order
# comparison.json of `pspnet demo --compare`: its model names -> this script's rows
DEMO_ROWS = {
    "pspnet": "pspnet",
    "no_ppm": "pspnet_noppm",
    "skip_decoder": "pspnet_skip",
    "deeplabv3plus": "deeplabv3plus",
    "unet": "unet",
}
# keys the protocol or a row sets; --set may not change them
PROTOCOL_KEYS = (
    "root", "train_exclude", "val_split", "val_include", "iterations", "seed", "val_every", "checkpoint_every",
    "keep_last", "val_limit", "architecture", "head_channels", "output_stride", "ppm", "skip_decoder",
)  # fmt: skip
# The page's first section: the qualitative table the comparison tests, as the seed states it. Cells it leaves
# empty stay empty; the measured rows below never depend on this text.
CLAIM_ROWS = (
    ("context capture", "", "", "no context module"),
    ("boundary refinement", "moderate", "excellent (through its decoder)", "excellent (through skip connections)"),
    ("global understanding", "very strong", "", ""),
    ("efficiency", "", "", ""),
)
CLAIM_LIMITATIONS = "PSPNet's named limitations: thin objects such as poles, and memory."


# -- the rows ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One row: its run directory's stem, its name, ``--set`` overrides on top of the config and what it isolates."""

    key: str
    title: str
    overrides: tuple[str, ...]
    isolates: str


# U-Net's narrowest decoder block (the last, at full resolution, just before the classifier) is kept at least this
# wide: its usual width (256-128-64-32-16), above CamVid's 11 classes.
UNET_NARROWEST = 16


def head_width(config: TrainConfig, architecture: str) -> int:
    """``architecture``'s head width scaled as the config scales PSPNet's: the config's head_channels over PSPNet's
    paper width (128 / 512), times the architecture's paper width (ARCHITECTURES); for U-Net no less than keeps its
    narrowest block UNET_NARROWEST channels wide (scaled by 1/4, it would end with 4 channels for 11 classes)."""
    factor = config.model.head_channels / ARCHITECTURES["pspnet"].head_channels
    width = max(1, round(ARCHITECTURES[architecture].head_channels * factor))
    if architecture == "unet":
        width = max(width, UNET_NARROWEST * 2 ** (UNET_BLOCKS - 1))
    return width


def variants(config: TrainConfig) -> list[Variant]:
    """The five rows for ``config`` (a PSPNet config): widths and output strides derived from it."""
    if config.model.architecture != "pspnet":
        raise SystemExit(f"error: the base config must be a PSPNet, got architecture {config.model.architecture}")
    stride = config.model.output_stride
    unet_stride = ARCHITECTURES["unet"].output_strides[0]
    deeplab, unet = head_width(config, "deeplabv3plus"), head_width(config, "unet")
    return [
        Variant("pspnet", "PSPNet", (), "the config as it is"),
        Variant("pspnet_noppm", "PSPNet without pyramid pooling", ("ppm=false",), "the context module"),
        Variant("pspnet_skip", "PSPNet + skip decoder", ("skip_decoder=true",), "a stride-4 decoder on PSPNet"),
        Variant(
            "deeplabv3plus",
            "DeepLab v3+",
            ("architecture=deeplabv3plus", f"head_channels={deeplab}", f"output_stride={stride}"),
            "ASPP + decoder",
        ),
        Variant(
            "unet",
            "U-Net",
            ("architecture=unet", f"head_channels={unet}", f"output_stride={unet_stride}"),
            "skip connections, no context module",
        ),
    ]


# -- the plan ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything the command line decides."""

    config: Path
    recipe: tuple[str, ...]  # --set overrides of the config, the same for every row
    root: Path
    iterations: int
    seeds: tuple[int, ...]
    val_every: int
    swing: int  # validations at the end of a run whose spread is the noise threshold
    eval_limit: int | None  # evaluate the first N held-out images only (smoke)
    speed_repeats: int
    memory_batch: int
    memory_crop: tuple[int, int]
    memory_steps: int
    memory_processes: int
    work: Path
    doc: Path
    smoke: bool
    rows: tuple[str, ...] | None = None  # --rows: the rows run, None for all
    context: Path | None = None  # --context: a `pspnet demo --compare` comparison.json


def protocol_overrides(plan: Plan, seed: int) -> list[str]:
    """``--set`` values shared by every row: the held-out protocol, the budget, the seed, validation and checkpoints
    at the same iterations (so the last ``swing`` checkpoints stay on disk to be evaluated)."""
    overrides = [
        *plan.recipe,
        f"root={json.dumps(str(plan.root))}",
        f"train_exclude=[{HOLDOUT}]",
        "val_split=train",
        f"val_include=[{HOLDOUT}]",
        f"iterations={plan.iterations}",
        f"seed={seed}",
        f"val_every={plan.val_every}",
        f"checkpoint_every={plan.val_every}",
        f"keep_last={plan.swing + 2}",  # room for a checkpoint saved on an interruption or two
    ]
    if plan.eval_limit is not None:
        overrides.append(f"val_limit={plan.eval_limit}")
    return overrides


def run_overrides(plan: Plan, variant: Variant, seed: int) -> list[str]:
    return [*protocol_overrides(plan, seed), *variant.overrides]


def run_dir(plan: Plan, variant: Variant, seed: int) -> Path:
    return plan.work / f"{variant.key}_seed{seed}"


def display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def train_command(plan: Plan, variant: Variant, seed: int) -> list[str]:
    """The ``pspnet train`` command line of one row (``python -m pspnet.cli``: the source tree on PYTHONPATH)."""
    command = ["-m", "pspnet.cli", "train", display_path(plan.config)]
    for item in run_overrides(plan, variant, seed):
        command += ["--set", item]
    return [*command, "--out", display_path(run_dir(plan, variant, seed))]


def machine_line() -> str:
    info = machine_info(torch.device("cpu"))
    flags = cpu_flags()
    load = info["load_average"]
    return (
        f"CPU {info['cpu_model'] or '?'}, {info['logical_cpus']} logical CPUs; "
        f"torch.backends.cpu.get_cpu_capability() = {torch.backends.cpu.get_cpu_capability()}, "
        f"AVX512_BF16 {'yes' if 'AVX512_BF16' in flags else 'no'}, AMX {'yes' if 'AMX' in flags else 'no'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; niceness {os.nice(0)}"
        + (f"; load average {load[0]:.2f}" if load is not None else "")
    )


# -- training, resumable -----------------------------------------------------------------------------------------


def saved_config_differences(run: Path, intended: dict[str, Any]) -> list[str]:
    """The keys whose value in ``run/config.yaml`` differs from ``intended`` ([] without a saved config)."""
    path = run / "config.yaml"
    if not path.is_file():
        return []
    saved = yaml.safe_load(path.read_text()) or {}
    return sorted(key for key in set(saved) | set(intended) if saved.get(key) != intended.get(key))


def run_child(command: list[str]) -> tuple[int, int | None]:
    """Run ``command`` from the repository root with ``src`` first on PYTHONPATH. SIGINT or SIGTERM received here
    sends the training run SIGTERM, which it honours even where it inherited an ignored SIGINT (a job in the
    background of a non-interactive shell): it saves its last step and exits. Returns (exit status, the signal
    received or None)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        print(f"\n{signal.Signals(signum).name}: waiting for pspnet train to save its last step", file=sys.stderr)
        process.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code, received[0] if received else None


def train_or_reuse(plan: Plan, variant: Variant, seed: int, position: str) -> Path:
    """The run directory of ``variant`` / ``seed``, trained to ``plan.iterations``: reused when finished, else
    trained by ``pspnet train`` (``--resume`` when the directory exists). Exits when the run was stopped by a signal
    or failed, and when the directory holds a run with other settings."""
    run = run_dir(plan, variant, seed)
    overrides = run_overrides(plan, variant, seed)
    intended = load_train_config(str(plan.config), overrides).to_dict()  # a bad override fails here, named
    changed = [key for key in saved_config_differences(run, intended) if key not in BOOKKEEPING]
    if changed:
        raise SystemExit(
            f"error: {run} holds a run with other settings ({', '.join(changed)}); give another --work or remove it"
        )
    if (run / f"ckpt_{plan.iterations}" / "model.safetensors").is_file():
        print(f"{position} {variant.title}, seed {seed}: finished run reused ({run})", flush=True)
        return run
    command = [sys.executable, *train_command(plan, variant, seed)]
    resuming = run.is_dir()
    if resuming:
        command.append("--resume")
    print(
        f"{position} {variant.title}, seed {seed}: {'resuming' if resuming else 'training'} {plan.iterations} "
        f"iterations\n  {shlex.join(['python', *command[1:]])}",
        flush=True,
    )
    code, received = run_child(command)
    if received is not None or code in (130, 143):
        print(
            f"stopped during {variant.title}, seed {seed}; rerun the same command to continue (finished runs are "
            "reused, this one resumes from its last checkpoint)",
            file=sys.stderr,
        )
        raise SystemExit(code or 130)
    if code != 0:
        raise SystemExit(f"error: pspnet train exited with status {code} for {variant.title}, seed {seed} ({run})")
    return run


# -- reading a run -------------------------------------------------------------------------------------------------


def log_records(run: Path) -> list[dict[str, Any]]:
    records = []
    for line in (run / "log.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return records


def validations(run: Path) -> list[tuple[int, float | None]]:
    """(iteration, held-out mIoU) of every validation the run logged, in order."""
    found = {r["iteration"]: r["val_mIoU"] for r in log_records(run) if "val_mIoU" in r}
    return sorted(found.items())


def training_time(run: Path) -> dict[str, float]:
    """Seconds of optimiser steps (validation excluded) and iterations, from the run's last step record."""
    steps = [r for r in log_records(run) if "train_seconds" in r]
    last = steps[-1]
    return {"train_seconds": last["train_seconds"], "iterations": last["iteration"]}


# -- evaluation ----------------------------------------------------------------------------------------------------


def holdout_set(root: Path) -> SegmentationDataset:
    return build_dataset("camvid", root, "train").select(include=[HOLDOUT])


def evaluate_checkpoint(
    checkpoint: Path, dataset: SegmentationDataset, limit: int | None, cache: Path, pred_dir: Path | None = None
) -> dict[str, Any]:
    """``pspnet.engine.evaluate.evaluate`` of the checkpoint on the held-out images (whole image, fp32), as
    ``pspnet eval --mode whole`` runs it; cached in ``cache`` (JSON) for the same model file and image count."""
    stat = (checkpoint / "model.safetensors").stat()
    stamp = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "limit": limit}
    if cache.is_file() and (pred_dir is None or pred_dir.is_dir()):
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return cached["report"]
    print(f"  evaluating {checkpoint} on {HOLDOUT}", flush=True)
    model = pspnet.load_model(checkpoint)
    settings = InferenceSettings.from_card(model.card, mode="whole", precision="fp32")
    report = evaluate(model, dataset, settings, limit=limit, pred_dir=pred_dir, progress=True)
    report.pop("confusion")
    with atomic_open(cache, "w") as handle:
        json.dump({"stamp": stamp, "report": report}, handle)
    return report


def class_mean(report: dict[str, Any], names: Sequence[str], key: str = "iou") -> float | None:
    values = [c[key] for c in report["per_class"] if c["name"] in names and c[key] is not None]
    return 100 * sum(values) / len(values) if values else None


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def scores(report: dict[str, Any]) -> dict[str, float | None]:
    """The compared scores of one evaluation, in percent."""
    out: dict[str, float | None] = {
        "mIoU": percent(report["mIoU"]),
        "mAcc": percent(report["mAcc"]),
        "mBIoU": percent(report["mBIoU"]),
        "thin": class_mean(report, THIN),
        "large": class_mean(report, LARGE),
    }
    for entry in report["per_class"]:
        if entry["name"] in (*THIN, *LARGE):
            out[entry["name"]] = percent(entry["iou"])
    return out


def spread(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return max(defined) - min(defined) if len(defined) > 1 else None


def swing_iterations(plan: Plan) -> list[int]:
    """The last ``plan.swing`` iterations at which a run validates and keeps a checkpoint: multiples of
    ``val_every`` and the last iteration."""
    scheduled = {*range(plan.val_every, plan.iterations + 1, plan.val_every), plan.iterations}
    return sorted(scheduled)[-plan.swing :]


def run_results(plan: Plan, run: Path, dataset: SegmentationDataset) -> dict[str, Any]:
    """One run: its last checkpoint's scores, the held-out mIoU of its last ``plan.swing`` validations (log.jsonl)
    and every score's swing over the checkpoints of those validations, its training time.

    A run stopped by a signal right at a validation skips it (and saves its checkpoint): that checkpoint's mIoU
    then comes from its evaluation here, the same computation on the same images."""
    logged = dict(validations(run))
    evals: dict[int, dict[str, float | None]] = {}
    for iteration in swing_iterations(plan):
        checkpoint = run / f"ckpt_{iteration}"
        if not (checkpoint / "model.safetensors").is_file():
            print(f"  {checkpoint} is missing (removed by keep_last after interruptions): left out", flush=True)
            continue
        final = iteration == plan.iterations
        cache = plan.work / "eval" / run.name / f"ckpt_{iteration}.json"
        pred_dir = plan.work / "eval" / run.name / f"predictions_{iteration}" if final else None
        evals[iteration] = scores(evaluate_checkpoint(checkpoint, dataset, plan.eval_limit, cache, pred_dir))
    final_scores = evals[plan.iterations]
    history = [
        (i, percent(logged[i]) if logged.get(i) is not None else evals[i]["mIoU"])
        for i in swing_iterations(plan)
        if i in logged or i in evals
    ]
    swings = {key: spread([e[key] for e in evals.values()]) for key in final_scores}
    swings["mIoU"] = spread([m for _, m in history])
    return {
        "run": str(run),
        "scores": final_scores,
        "swings": swings,
        "validations": history,
        "from_evaluation": [i for i, _ in history if logged.get(i) is None],
        "log_agrees": all(
            abs(percent(logged[i]) - evals[i]["mIoU"]) < 1e-9 for i in evals if logged.get(i) is not None
        ),
        **training_time(run),
    }


def combine_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """A row over its seeds: the mean of each score, and its noise = the largest checkpoint swing of any seed or
    the spread between the seeds' final scores, whichever is larger."""
    keys = per_seed[0]["scores"]
    values, noise = {}, {}
    for key in keys:
        finals = [r["scores"][key] for r in per_seed if r["scores"][key] is not None]
        values[key] = sum(finals) / len(finals) if finals else None
        candidates = [r["swings"][key] for r in per_seed if r["swings"][key] is not None]
        candidates.append(spread(finals))
        defined = [c for c in candidates if c is not None]
        noise[key] = max(defined) if defined else None
    return {"scores": values, "noise": noise, "seeds": per_seed}


def read_context(path: Path) -> dict[str, Any]:
    """The context-scene results of ``pspnet demo --compare`` from its ``comparison.json`` (``path`` is the file
    or the demo's output folder): ``{"source", "iterations": {row: n}, "mIoU": {row: percent}, "mBIoU": ...}``
    for the rows it has."""
    file = path / "comparison.json" if path.is_dir() else path
    try:
        models = json.loads(file.read_text())["models"]
        found = {DEMO_ROWS[m["name"]]: m for m in models if m["name"] in DEMO_ROWS}
        out: dict[str, Any] = {"source": display_path(file), "iterations": {}, "mIoU": {}, "mBIoU": {}}
        for key, model in found.items():
            out["iterations"][key] = int(model["iterations"])
            out["mIoU"][key] = percent(model["mIoU"])
            out["mBIoU"][key] = percent(model["mBIoU"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"error: --context {file}: not a comparison.json of pspnet demo --compare ({error})") from None
    if not found:
        raise SystemExit(f"error: --context {file}: none of its models is a row here ({', '.join(DEMO_ROWS)})")
    return out


def context_results(plan: Plan) -> dict[str, Any] | None:
    """The context scenes' results: ``plan.context``'s comparison.json, written first by ``pspnet demo --compare``
    (a subprocess, as the rows) when the folder has none; None without ``plan.context``."""
    if plan.context is None:
        return None
    file = plan.context if plan.context.suffix == ".json" else plan.context / "comparison.json"
    if not file.is_file():
        if plan.context.suffix == ".json":
            raise SystemExit(f"error: --context {file}: no such file")
        command = [sys.executable, "-m", "pspnet.cli", "demo", "--compare", "--out", display_path(plan.context)]
        if plan.context.exists():
            command.append("--force")  # an interrupted demo: the demo replaces its own files, refuses others
        print(f"context scenes: {shlex.join(['python', *command[1:]])}", flush=True)
        code, received = run_child(command)
        if received is not None or code != 0:
            raise SystemExit(f"error: pspnet demo --compare exited with status {code} ({plan.context})")
    return read_context(file)


# -- efficiency ----------------------------------------------------------------------------------------------------


def counts(config: ModelConfig) -> dict[str, float]:
    """Parameters (inference: aux head excluded; training: included) and GFLOPs of one eval forward at 360x480."""
    with torch.device("meta"):
        model = build_model(config)
    summary = summarize(model, *TIMING_SIZE)
    return {
        "parameters": summary.parameters_without_aux,
        "parameters_training": summary.parameters,
        "gflops": summary.flops / 1e9,
    }


def measure_speed(models: dict[str, torch.nn.Module], repeats: int) -> dict[str, list[float]]:
    """Seconds of one fp32 eval forward at 360x480, batch 1, BatchNorm folded as ``Segmenter`` runs it; every
    model warmed up once, then ``repeats`` rounds that time each model once, in turn. Returns the samples."""
    x = torch.randn(1, 3, *TIMING_SIZE, generator=torch.Generator().manual_seed(0))
    nets = {key: prepare_for_inference(copy.deepcopy(model), "fp32") for key, model in models.items()}
    samples: dict[str, list[float]] = {key: [] for key in nets}
    cpu = torch.device("cpu")
    with torch.inference_mode():
        for net in nets.values():
            net(x)
        for round_ in range(repeats):
            print(f"  speed: round {round_ + 1} of {repeats}", flush=True)
            for key, net in nets.items():
                samples[key] += time_call(lambda n=net: n(x), cpu, repeat=1, warm_up=False)
    return samples


def measure_memory(configs: dict[str, ModelConfig], plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """``pspnet.bench.measure_train`` (one warm-up step, then ``plan.memory_steps``, in a spawned process of its
    own) for each model at the recipe's batch and crop, fp32; ``plan.memory_processes`` rounds, models in turn."""
    results: dict[str, list[dict[str, Any]]] = {key: [] for key in configs}
    for round_ in range(plan.memory_processes):
        for key, config in configs.items():
            print(f"  training step: {key}, process {round_ + 1} of {plan.memory_processes}", flush=True)
            results[key].append(
                measure_train(
                    config,
                    torch.device("cpu"),
                    precision="fp32",
                    size=plan.memory_crop,
                    batch=plan.memory_batch,
                    repeat=plan.memory_steps,
                )
            )
    return results


def efficiency(
    samples: dict[str, list[float]], memory: dict[str, list[dict[str, Any]]], key: str
) -> dict[str, float | None]:
    """images/s (fastest round) with the rounds' relative spread; training-step seconds; peak RSS and what the
    step adds above the RSS before it (smallest process), with their spread over processes, in GiB."""
    seconds = samples[key]
    steps = memory[key]
    peak = [m["memory"]["peak_bytes"] / 2**30 for m in steps]
    added = [m["memory"]["step_bytes"] / 2**30 for m in steps]
    return {
        "images_per_s": 1 / min(seconds),
        "speed_noise": max(seconds) / min(seconds) - 1 if len(seconds) > 1 else None,
        "step_seconds": min(m["seconds"] for m in steps),
        "peak_gib": min(peak),
        "step_gib": min(added),
        "step_gib_noise": spread(added),
    }


# -- verdicts ------------------------------------------------------------------------------------------------------


def judge(
    va: float | None, vb: float | None, noise: Sequence[float | None], subject: str, unit: str, digits: int = 1
) -> tuple[int | None, str]:
    """(+1 when ``va`` exceeds ``vb`` by more than the larger noise, -1 when it falls short by more, 0 within it,
    None when a value or every noise is missing; the numbers in words). ``subject`` names a against b."""
    if va is None or vb is None:
        return None, f"{subject}: undefined on these images"
    known = [n for n in noise if n is not None]
    gap = va - vb
    numbers = f"{va:.{digits}f} against {vb:.{digits}f}{unit}, gap {gap:+.{digits}f}"
    if not known:
        return None, f"{subject}: {numbers}; not judged: the noise was not measured"
    threshold = max(known)
    numbers += f", noise {threshold:.{digits}f}"
    if abs(gap) <= threshold:
        return 0, f"{subject}: no measurable difference ({numbers})"
    return (1 if gap > 0 else -1), f"{subject}: {'higher' if gap > 0 else 'lower'} ({numbers})"


def compare(a: str, b: str, rows: dict[str, dict[str, Any]], key: str, what: str) -> tuple[int | None, str]:
    """Row ``a`` against row ``b`` on score ``key`` (points), with the larger of their noises for that score."""
    missing = [key for key in (a, b) if key not in rows]
    if missing:
        return None, f"{what}, {a} against {b}: not judged, {' and '.join(missing)} not run (--rows)"
    subject = f"{what}, {rows[a]['title']} against {rows[b]['title']}"
    noise = (rows[a]["noise"][key], rows[b]["noise"][key])
    return judge(rows[a]["scores"][key], rows[b]["scores"][key], noise, subject, "")


def overall(signs: Sequence[int | None]) -> str:
    """The verdict on a claim from the comparisons it implies (+1: as claimed beyond the noise, -1: against it
    beyond the noise, 0: within the noise, None: not judged)."""
    judged = [s for s in signs if s is not None]
    if not judged:
        return "not judged: a row it needs was not run, or the noise was not measured"
    if any(s == -1 for s in judged):
        return "mixed: some measured gaps go against it" if 1 in judged else "does not hold on this evidence"
    if all(s == 0 for s in judged):
        return "not shown: no measurable difference"
    if len(judged) == len(signs) and all(s == 1 for s in judged):
        return "holds on this evidence"
    return "partly holds: the other gaps are within the noise or not judged"


def verdicts(
    rows: dict[str, dict[str, Any]], context: dict[str, Any] | None = None
) -> list[tuple[str, str, list[str]]]:
    """(claim, verdict, evidence sentences) for every row of the seed's table, computed from ``rows``; each
    comparison is oriented so that "higher" is what the claim says. ``context`` (:func:`read_context`) adds the
    context scenes' mIoU as evidence; one demo run has no noise measure, so it is shown but not judged."""
    out = []

    context_signs = [
        compare("pspnet", "pspnet_noppm", rows, "mIoU", "mIoU"),
        compare("pspnet", "pspnet_noppm", rows, "large", "large-class IoU"),
        compare("pspnet", "unet", rows, "large", "large-class IoU"),
    ]
    scenes = []
    if context is not None:
        for other in ("pspnet_noppm", "unet"):
            if "pspnet" in context["mIoU"] and other in context["mIoU"]:
                title = rows[other]["title"] if other in rows else other
                subject = f"context-scene mIoU (pspnet demo --compare), PSPNet against {title}"
                scenes.append(judge(context["mIoU"]["pspnet"], context["mIoU"][other], [None], subject, "")[1])
    out.append(
        (
            "context capture (PSPNet's pyramid pooling; U-Net has no context module)",
            overall([s for s, _ in context_signs]),
            [text for _, text in context_signs] + scenes,
        )
    )

    boundary = [
        compare("deeplabv3plus", "pspnet", rows, "mBIoU", "Boundary IoU"),
        compare("unet", "pspnet", rows, "mBIoU", "Boundary IoU"),
    ]
    decoder = compare("pspnet_skip", "pspnet", rows, "mBIoU", "Boundary IoU (the decoder alone)")
    out.append(
        (
            "boundary refinement (PSPNet moderate; DeepLab v3+ and U-Net excellent)",
            overall([s for s, _ in boundary]),
            [text for _, text in boundary] + [decoder[1]],
        )
    )

    large = [compare("pspnet", other, rows, "large", "large-class IoU") for other in rows if other != "pspnet"]
    miou = [compare("pspnet", other, rows, "mIoU", "mIoU") for other in ("deeplabv3plus", "unet")]
    out.append(
        (
            "global understanding (PSPNet very strong)",
            overall([s for s, _ in large]),
            [text for _, text in large + miou],
        )
    )

    base = rows["pspnet"]["efficiency"]
    memory = []
    for other in ("deeplabv3plus", "unet"):
        if other not in rows:
            continue
        value = rows[other]["efficiency"]
        subject = f"training-step memory, PSPNet against {rows[other]['title']}"
        noise = (base["step_gib_noise"], value["step_gib_noise"])
        memory.append(judge(base["step_gib"], value["step_gib"], noise, subject, " GiB", digits=2))
    speed = []
    for key, row in rows.items():
        if key != "pspnet":
            value = row["efficiency"]
            subject = f"images/s, {row['title']} against PSPNet"
            noise = [
                n * min(value["images_per_s"], base["images_per_s"]) if n is not None else None
                for n in (value["speed_noise"], base["speed_noise"])
            ]
            speed.append(judge(value["images_per_s"], base["images_per_s"], noise, subject, "", digits=2))
    out.append(
        (
            "efficiency (PSPNet's named limitation: memory)",
            overall([s for s, _ in memory]),
            [text for _, text in memory + speed],
        )
    )

    thin = [compare(other, "pspnet", rows, "thin", "thin-class IoU") for other in ("deeplabv3plus", "unet")]
    more = [
        compare("pspnet_skip", "pspnet", rows, "thin", "thin-class IoU (the decoder alone)"),
        compare("deeplabv3plus", "pspnet", rows, "Pole", "Pole IoU"),
        compare("unet", "pspnet", rows, "Pole", "Pole IoU"),
    ]
    out.append(
        (
            "PSPNet's named limitation: thin objects such as poles (below the decoder architectures)",
            overall([s for s, _ in thin]),
            [text for _, text in thin + more],
        )
    )
    return out


# -- the figure ----------------------------------------------------------------------------------------------------


def thin_pixels(mask: np.ndarray) -> np.ndarray:
    names = DATASETS["camvid"].classes
    return np.isin(mask, [names.index(name) for name in THIN])


def pick_image(dataset: SegmentationDataset, limit: int | None) -> int:
    """The evaluated held-out image with the most thin-class pixels in its ground truth."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    totals = [int(thin_pixels(dataset.load(i)[1]).sum()) for i in range(count)]
    return int(np.argmax(totals))


def zoom_window(mask: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the ``size`` window holding the most thin-class pixels (an integral image over the mask)."""
    h, w = size
    cumulative = np.pad(thin_pixels(mask).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = cumulative[h:, w:] - cumulative[:-h, w:] - cumulative[h:, :-w] + cumulative[:-h, :-w]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def write_figure(
    path: Path, photo: np.ndarray, truth: np.ndarray, predictions: list[tuple[str, np.ndarray]], title: str
) -> tuple[int, int, int, int]:
    """One column per panel (photo, ground truth, each model): the whole image at half size with the zoomed window
    outlined, and under it the window at twice its size. Returns the window (top, left, height, width)."""
    palette = DATASETS["camvid"].palette
    height, width = truth.shape
    window = (height // 4, width // 4)
    top, left = zoom_window(truth, window)
    panels = [("photo", photo), ("ground truth", colorize(truth, palette))]
    panels += [(name, colorize(labels, palette)) for name, labels in predictions]
    cell_w, cell_h = width // 2, height // 2
    gap, header = 6, 22
    font = ImageFont.load_default(size=13)
    legend_y = 2 * header + 2 * cell_h + 2 * gap
    canvas = Image.new("RGB", (len(panels) * (cell_w + gap) + gap, legend_y + header), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 3), title, fill="black", font=font)
    for column, (name, pixels) in enumerate(panels):
        x = gap + column * (cell_w + gap)
        draw.text((x, header + 2), name, fill="black", font=font)
        resample = Image.Resampling.BILINEAR if column == 0 else Image.Resampling.NEAREST
        whole = Image.fromarray(pixels).resize((cell_w, cell_h), resample)
        canvas.paste(whole, (x, 2 * header))
        box = [x + left // 2, 2 * header + top // 2, x + (left + window[1]) // 2, 2 * header + (top + window[0]) // 2]
        draw.rectangle(box, outline=(255, 255, 0), width=2)
        crop = pixels[top : top + window[0], left : left + window[1]]
        zoomed = Image.fromarray(crop).resize((cell_w, cell_h), resample)
        canvas.paste(zoomed, (x, 2 * header + cell_h + gap))
    x = gap
    for name, colour in zip(DATASETS["camvid"].classes, palette):  # the legend
        draw.rectangle([x, legend_y + 3, x + 12, legend_y + 15], fill=tuple(colour), outline="black")
        draw.text((x + 16, legend_y + 2), name, fill="black", font=font)
        x += 24 + int(draw.textlength(name, font=font))
    draw.text((x + 8, legend_y + 2), "void: black", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        canvas.save(handle, format="PNG")
    return top, left, window[0], window[1]


# -- the page ------------------------------------------------------------------------------------------------------


def cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def claim_lines() -> list[str]:
    lines = [
        "## The claim",
        "",
        "The seed's qualitative table, quoted as the claim this page tests (cells the claim does not fill are empty):",
        "",
        "> | | PSPNet | DeepLab v3+ | U-Net |",
        "> |---|---|---|---|",
    ]
    lines += [f"> | {row} | {a} | {b} | {c} |" for row, a, b, c in CLAIM_ROWS]
    return [*lines, ">", f"> {CLAIM_LIMITATIONS}", ""]


def method_lines(
    plan: Plan, config: TrainConfig, rows: list[Variant], models: dict[str, ModelConfig], sizes: dict[str, int]
) -> list[str]:
    m = config.model
    base = load_train_config(str(plan.config))  # the config as written, before --set
    factor = m.head_channels / ARCHITECTURES["pspnet"].head_channels
    literal_narrowest = round(ARCHITECTURES["unet"].head_channels * factor) // 2 ** (UNET_BLOCKS - 1)
    lines = [
        "## Method",
        "",
        (
            f"- **Recipe**: `{display_path(plan.config)}` "
            + (
                f"with {', '.join(f'`{o}`' for o in plan.recipe)} for every row (the same departure for all)"
                if plan.recipe
                else "unchanged for every row"
            )
            + f": ResNet-{m.depth} with the {m.stem} "
            f"stem from scratch, crops {config.crop_size[0]}x{config.crop_size[1]} from images scaled "
            f"{config.scale_range[0]}-{config.scale_range[1]}, rotation {config.rotate_range[0]:g} to "
            f"{config.rotate_range[1]:g} degrees, blur and flip, batch {config.batch_size}, SGD lr {config.lr:g} "
            f"({config.head_lr_mult:g}x for the heads), weight decay {config.weight_decay:g}, poly "
            f"{config.poly_power:g}, class weighting {config.class_weighting}, {config.precision}, the auxiliary "
            f"FCN head on layer3 ({m.aux_channels} wide, loss weight {config.aux_weight:g}) for every row. The "
            f"budget: **{plan.iterations} iterations** for every row, {plan.iterations * config.batch_size:,} "
            f"training crops (the config as written: {base.iterations} iterations of {base.batch_size}, "
            f"{base.iterations * base.batch_size:,}), seed{'s' if len(plan.seeds) > 1 else ''} "
            f"{', '.join(map(str, plan.seeds))}."
        ),
        f"- **Held-out protocol** (the config's): trained on CamVid train without sequence {HOLDOUT} "
        f"({sizes['train']} images), validated and evaluated on {HOLDOUT} ({sizes['holdout']} images"
        + (f", the first {plan.eval_limit} in this run" if plan.eval_limit is not None else "")
        + "), whole 480x360 image, fp32. Every run validates and keeps a checkpoint every "
        f"{plan.val_every} iterations; the last checkpoint is reported, not `best/` (chosen on the same images).",
        (
            f"- **Widths**: the config departs from PSPNet's paper head (512) with {m.head_channels} channels, a factor "
            f"of {factor:g}; DeepLab v3+'s and U-Net's paper widths ({ARCHITECTURES['deeplabv3plus'].head_channels} "
            f"and {ARCHITECTURES['unet'].head_channels}) get the same factor, except that U-Net's last decoder block "
            f"stays at least {UNET_NARROWEST} channels wide (its usual width; the factor alone would leave it "
            f"{literal_narrowest} channels for {DATASETS['camvid'].num_classes} classes). Output stride: the config's "
            f"{m.output_stride} for PSPNet and DeepLab v3+ (ASPP rates follow it), "
            f"{ARCHITECTURES['unet'].output_strides[0]} for U-Net (no dilation). DeepLab v3+'s 48-channel reduction of "
            "layer1 is a fixed constant of the decoder and is not scaled."
        ),
        "",
        (
            "| row | `--set` beyond the protocol | isolates | head | output stride | parameters (inference) | GFLOPs "
            f"at {TIMING_SIZE[0]}x{TIMING_SIZE[1]} |"
        ),
        "|---|---|---|---|---:|---:|---:|",
    ]
    for variant in rows:
        config_row = models[variant.key]
        numbers = counts(config_row)
        overrides = " ".join(f"`{o}`" for o in variant.overrides) or "(none)"
        lines.append(
            f"| {variant.title} | {overrides} | {variant.isolates} | {describe_head(config_row)} | "
            f"{config_row.output_stride} | {numbers['parameters'] / 1e6:.2f} M | {numbers['gflops']:.1f} |"
        )
    unet = models.get("unet")
    narrowest = unet.head_channels // 2 ** (UNET_BLOCKS - 1) if unet is not None else UNET_NARROWEST
    classes = DATASETS["camvid"].num_classes
    lines.append("")
    lines.append(
        "Parameters exclude the auxiliary head (training only); counts and FLOPs (2 x multiply-adds of the "
        "convolutions, `pspnet.introspect.summarize` on the meta device) are exact, not measurements."
        + (
            f" The factor taken literally leaves U-Net's last decoder block {narrowest} channels wide, fewer than "
            f"CamVid's {classes} classes, just before its full-resolution classifier: a handicap of this scaling "
            "rule that its result may show."
            if narrowest < classes
            else ""
        )
    )
    if plan.rows is not None:
        left = [v.title for v in variants(config) if v.key not in plan.rows]
        if left:
            lines += ["", f"Not run in this measurement (`--rows`): {', '.join(left)}."]
    lines += [
        "",
        "Measured by the script in one run:",
        "",
        (
            f"- **Accuracy** on {HOLDOUT} (`pspnet.engine.evaluate.evaluate`, one confusion matrix over the images): "
            "mIoU, mAcc, Boundary IoU (Cheng et al. 2021, band 2% of the diagonal); the mean IoU of the thin classes "
            f"({', '.join(THIN)}) and of the large ones ({', '.join(LARGE)})."
        ),
        (
            f"- **Noise**: the held-out mIoU at each run's last {plan.swing} validations (`log.jsonl`) and every score "
            "at the checkpoints of those validations; a row's noise for a score is its largest spread between those "
            "checkpoints (and between seeds, with several). A gap between two rows within the larger of their noises "
            "is reported as *no measurable difference*."
        ),
        (
            f"- **Speed**: fp32 images/s of one eval forward at {TIMING_SIZE[0]}x{TIMING_SIZE[1]}, batch 1, BatchNorm "
            f"folded (as `Segmenter` runs it); every model once per round, in turn, {plan.speed_repeats} rounds, the "
            "fastest counts; the noise is the spread between rounds."
        ),
        (
            f"- **Training memory**: `pspnet.bench.measure_train` (the step `pspnet train` runs: SGD, main + aux loss) "
            f"at batch {plan.memory_batch} and {plan.memory_crop[0]}x{plan.memory_crop[1]}, each model in a process of "
            f"its own ({plan.memory_processes} per model, in turn; 1 warm-up + {plan.memory_steps} steps): peak RSS and "
            "what the step adds above the RSS before it (the compared figure); random weights and masks, no class "
            "weights (they add one vector)."
        ),
        (
            f"- **Context scenes**: {HOLDOUT} tests context only indirectly; `pspnet demo`'s synthetic scenes, where "
            "the cue that decides a region's class lies farther away than a network without a context module sees, "
            "test it directly. `pspnet demo --compare` trains every row there with the demo's own recipe and widths "
            "(its model names pspnet, no_ppm, skip_decoder, deeplabv3plus, unet are these rows); the script runs it "
            "after the rows and reads its `comparison.json` into the column *context-scene mIoU*. "
            + (
                f"This page's: `{display_path(plan.context)}`."
                if plan.context is not None
                else "Not run for this page (`--context none`): the column is empty."
            )
        ),
        "",
        "Command (from the repository root; rerunning it continues an interrupted run):",
        "",
        "```",
        plan_command(plan),
        "```",
        "",
    ]
    return lines


def plan_command(plan: Plan) -> str:
    """The command that produces this page's measurements with ``plan``'s settings."""
    words = ["PYTHONPATH=src", "nice", "-n", "19", ".venv/bin/python", "benchmarks/compare_architectures.py"]
    if plan.smoke:
        words += ["--smoke", "--doc", str(plan.doc)]
    else:
        words += ["--iterations", str(plan.iterations)]
        for item in plan.recipe:
            words += ["--set", item]
        if plan.rows is not None:
            words += ["--rows", *plan.rows]
        if plan.context is None:
            words += ["--context", "none"]
        elif plan.context != (plan.work / "demo").resolve():
            words += ["--context", display_path(plan.context)]
        if plan.seeds != (0,):
            words += ["--seeds", *map(str, plan.seeds)]
        words += ["--work", display_path(plan.work)]
        if plan.doc.resolve() != DOC.resolve():
            words += ["--doc", display_path(plan.doc)]
    return shlex.join(words).replace("'", "")


def results_lines(plan: Plan, results: dict[str, Any]) -> list[str]:
    rows = results["rows"]
    keys = list(rows)
    seeds = len(plan.seeds)
    mean = f" (mean of {seeds} seeds)" if seeds > 1 else ""
    lines = [
        "## Results",
        "",
        f"- Date: {results['started']} to {results['finished']} UTC ({results['hours']:.2f} h of this command).",
        f"- Machine: {results['machine']}.",
        f"- Load average at the end: {results['load_end']}.",
        "",
        (
            f"| architecture | mIoU{mean} | mAcc | Boundary IoU | thin-class IoU | large-class IoU | mIoU noise | "
            "context-scene mIoU | parameters | GFLOPs | images/s fp32 | training step s | step memory GiB (peak RSS) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    context = results.get("context") or {"mIoU": {}, "iterations": {}}
    for key in keys:
        row = rows[key]
        s, e, c = row["scores"], row["efficiency"], row["counts"]
        lines.append(
            f"| {row['title']} | {cell(s['mIoU'])} | {cell(s['mAcc'])} | {cell(s['mBIoU'])} | {cell(s['thin'])} | "
            f"{cell(s['large'])} | {cell(row['noise']['mIoU'])} | {cell(context['mIoU'].get(key))} | "
            f"{c['parameters'] / 1e6:.2f} M | "
            f"{c['gflops']:.1f} | {e['images_per_s']:.2f} | {e['step_seconds']:.2f} | {e['step_gib']:.2f} "
            f"({e['peak_gib']:.2f}) |"
        )
    lines += [
        "",
        (
            "Scores in percent on the held-out images; noise in points (see Method). Training step: batch "
            f"{plan.memory_batch} at {plan.memory_crop[0]}x{plan.memory_crop[1]}, fastest step; step memory: what "
            "the step adds above the RSS before it (peak RSS of its process in brackets: VmHWM, its own)."
        ),
        "",
        (
            f"Context-scene mIoU: `pspnet demo --compare` ({context['source']}), on the demo's scenes with the demo's "
            "recipe and widths; iterations: "
            + ", ".join(f"{rows[k]['title'] if k in rows else k} {n}" for k, n in context["iterations"].items())
            + "".join(
                f"; {k} (not a row of this run): mIoU {cell(v)}" for k, v in context["mIoU"].items() if k not in rows
            )
            + "; one run, no noise measured."
            if context.get("source")
            else "Context-scene mIoU: not measured for this page (`--context none`)."
        ),
        "",
        f"Held-out mIoU at the last {plan.swing} validations, and each score's noise:",
        "",
        "| architecture | seed | held-out mIoU at iteration | mIoU | mAcc | Boundary IoU | thin | large |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for key in keys:
        row = rows[key]
        for seed, run in zip(plan.seeds, row["seeds"]):
            history = ", ".join(
                f"{i}: {cell(m)}{'*' if i in run['from_evaluation'] else ''}" for i, m in run["validations"]
            )
            sw = run["swings"]
            lines.append(
                f"| {row['title']} | {seed} | {history} | {cell(sw['mIoU'])} | {cell(sw['mAcc'])} | "
                f"{cell(sw['mBIoU'])} | {cell(sw['thin'])} | {cell(sw['large'])} |"
            )
    runs = [run for row in rows.values() for run in row["seeds"]]
    agree = all(run["log_agrees"] for run in runs)
    lines += [
        "",
        (
            "Swings in points, from the last checkpoint and those before it (mIoU: the validations logged by the "
            "runs). "
            + (
                "* this validation was skipped when the run was stopped there and resumed; the value is this "
                "script's evaluation of that checkpoint. "
                if any(run["from_evaluation"] for run in runs)
                else ""
            )
            + (
                "The logged validation mIoU equals this script's evaluation of the same checkpoints."
                if agree
                else "The logged validation mIoU differs from this script's evaluation of the same checkpoint for "
                "some runs: see results.json."
            )
        ),
    ]
    names = [*THIN, *LARGE]
    lines += [
        "",
        "IoU per class (thin, then large):",
        "",
        f"| architecture | {' | '.join(names)} |",
        "|---|" + "---:|" * len(names),
    ]
    for key in keys:
        row = rows[key]
        lines.append(f"| {row['title']} | " + " | ".join(cell(row["scores"][n]) for n in names) + " |")
    lines += ["", "## The claim against the numbers", ""]
    lines.append(
        "Each verdict is computed by the script from the tables above; a gap within the noise counts as no difference."
    )
    lines.append("")
    for claim, verdict, evidence in results["verdicts"]:
        lines.append(f"- **{claim}**: {verdict}.")
        lines += [f"  - {text}" for text in evidence]
    figure = results["figure"]
    lines += [
        "",
        f"![{HOLDOUT} image segmented by each architecture]({FIGURE})",
        "",
        (
            f"{figure['name']} (the evaluated {HOLDOUT} image with the most thin-class pixels), segmented by each "
            "row's last checkpoint; top: the whole image, bottom: the window of "
            f"{figure['window'][2]}x{figure['window'][3]} pixels at ({figure['window'][0]}, {figure['window'][1]}) "
            "with the most thin-class pixels, enlarged 2x. Void pixels of the ground truth are black."
        ),
        "",
    ]
    return lines


def write_page(
    plan: Plan,
    config: TrainConfig,
    rows: list[Variant],
    models: dict[str, ModelConfig],
    sizes: dict[str, int],
    results: dict[str, Any] | None,
) -> None:
    title = "# PSPNet, DeepLab v3+ and U-Net on one backbone: CamVid, held-out sequence"
    lines = [title, ""]
    if plan.smoke:
        lines += [
            (
                f"**Smoke run** ({plan.iterations} iterations, {plan.eval_limit} held-out images, tiny timings): it "
                "checks the script end to end; its numbers say nothing about the architectures."
            ),
            "",
        ]
    lines += [
        (
            "`benchmarks/compare_architectures.py` trains five rows on the same ResNet backbone with the same CamVid "
            "recipe, measures them side by side in one run and writes this page: the seed's qualitative claim, the "
            "method, the measured table and, row by row, whether the claim holds on this evidence."
        ),
        "",
    ]
    lines += claim_lines()
    lines += method_lines(plan, config, rows, models, sizes)
    if results is None:
        lines += [
            "## Results",
            "",
            (
                "**Not measured yet.** The full run (five rows of "
                f"{plan.iterations} iterations each on a 2-core CPU: hours) has not been run; no measured number is on "
                "this page. The command above writes the measured table, the verdicts on each row of the claim and "
                f"the figure (`docs/{FIGURE}`) here."
            ),
            "",
        ]
    else:
        lines += results_lines(plan, results)
    plan.doc.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(plan.doc, "w") as handle:
        handle.write("\n".join(wrapped(lines)))


def wrapped(lines: list[str], width: int = 120) -> list[str]:
    """Paragraphs and list items wrapped at ``width`` as the other pages are; tables, headings, quotes, images and
    code blocks as they are."""
    out, code = [], False
    for line in lines:
        code ^= line.startswith("```")
        if code or line.startswith(("```", "|", "#", ">", "![")) or len(line) <= width:
            out.append(line)
            continue
        indent = "    " if line.startswith("  - ") else "  " if line.startswith("- ") else ""
        out.append(textwrap.fill(line, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False))
    return out


# -- the whole run -------------------------------------------------------------------------------------------------


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")


def measure(
    plan: Plan, rows: list[Variant], models: dict[str, ModelConfig], dataset: SegmentationDataset, machine: str
) -> dict[str, Any]:
    """Train (or reuse) every run, then measure every row; the results the page shows."""
    started, clock = utc_now(), time.monotonic()
    runs: dict[str, list[Path]] = {}
    total = len(rows) * len(plan.seeds)
    done = 0
    for seed in plan.seeds:
        for variant in rows:
            done += 1
            runs.setdefault(variant.key, []).append(train_or_reuse(plan, variant, seed, f"[{done}/{total}]"))
    context = context_results(plan)
    print("\ntraining-step memory, each model in a process of its own", flush=True)
    memory = measure_memory(models, plan)
    print("\nevaluating on the held-out sequence", flush=True)
    table: dict[str, dict[str, Any]] = {}
    for variant in rows:
        per_seed = [run_results(plan, run, dataset) for run in runs[variant.key]]
        table[variant.key] = {"title": variant.title, **combine_seeds(per_seed), "counts": counts(models[variant.key])}
    print("\nspeed: fp32 forwards at 360x480, models in turn", flush=True)
    trained = {v.key: pspnet.load_model(runs[v.key][0] / f"ckpt_{plan.iterations}") for v in rows}
    samples = measure_speed(trained, plan.speed_repeats)
    for key, row in table.items():
        row["efficiency"] = efficiency(samples, memory, key)
        row["speed_samples"] = samples[key]
    index = pick_image(dataset, plan.eval_limit)
    photo, truth = dataset.load(index)
    name = dataset.samples[index].name
    first = plan.seeds[0]
    predictions = [
        (
            v.title,
            read_mask(
                plan.work / "eval" / run_dir(plan, v, first).name / f"predictions_{plan.iterations}" / f"{name}.png"
            ),
        )
        for v in rows
    ]
    figure_path = plan.doc.parent / FIGURE
    window = write_figure(figure_path, photo, truth, predictions, f"CamVid {name} (held out), seed {first}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "started": started,
        "finished": utc_now(),
        "hours": (time.monotonic() - clock) / 3600,
        "machine": machine,
        "load_end": ", ".join(f"{v:.2f}" for v in load) if load else "n/a",
        "rows": table,
        "verdicts": verdicts(table, context),
        "context": context,
        "figure": {"name": name, "window": window, "path": str(figure_path)},
    }


def estimate(plan: Plan, results: dict[str, Any], dataset_size: int, full_iterations: int, batch: int) -> str:
    """The full run's time from this run's measured step and evaluation times (bench's steps scaled from
    ``plan.memory_batch`` to the recipe's ``batch`` images)."""
    per_iteration = {
        key: max(r["train_seconds"] / r["iterations"] for r in row["seeds"]) for key, row in results["rows"].items()
    }
    bench_step = {key: row["efficiency"]["step_seconds"] for key, row in results["rows"].items()}
    validations = full_iterations // max(1, full_iterations // 10)
    images_per_s = min(row["efficiency"]["images_per_s"] for row in results["rows"].values())
    validation_hours = len(per_iteration) * validations * dataset_size / images_per_s / 3600
    upper = sum(per_iteration.values()) * full_iterations / 3600
    lower = sum(bench_step.values()) * batch / plan.memory_batch * full_iterations / 3600
    scaled = f", scaled from batch {plan.memory_batch} to {batch}" if batch != plan.memory_batch else ""
    return (
        f"estimate for {full_iterations} iterations x {len(per_iteration)} rows on this machine, now: training "
        f"{upper:.1f} h from this run's seconds per iteration (first steps included) or {lower:.1f} h from bench's "
        f"step times{scaled}, plus about {validation_hours:.1f} h for {validations} validations of {dataset_size} "
        "images per row"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=1000, help="training iterations of every row (1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds; more than one adds runs (0)")
    parser.add_argument("--swing", type=int, default=3, help="last validations whose spread is the noise (3)")
    parser.add_argument("--work", type=Path, help=f"run directory (default {display_path(WORK)}; smoke: a temp one)")
    parser.add_argument("--doc", type=Path, help=f"the page to write (default {display_path(DOC)})")
    parser.add_argument("--root", type=Path, default=DATA, help="CamVid (SegNet's layout)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the PSPNet recipe every row trains with")
    parser.add_argument("--speed-repeats", type=int, default=5, help="rounds of the speed loop (5)")
    parser.add_argument("--memory-processes", type=int, default=2, help="training-step processes per model (2)")
    parser.add_argument(
        "--smoke", action="store_true", help="3 iterations, 2 images, tiny timings, into a temporary directory"
    )
    parser.add_argument(
        "--set",
        dest="recipe",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of --config for every row (repeatable), e.g. batch_size=2",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=ROW_KEYS,
        help=f"run these rows only (default all: {' '.join(ROW_KEYS)}); pspnet, the reference, is always run",
    )
    parser.add_argument(
        "--context",
        metavar="DIR",
        help="where pspnet demo --compare runs (default WORK/demo; one that holds comparison.json is read, not "
        "rerun), or a comparison.json, or none",
    )
    parser.add_argument("--method-only", action="store_true", help="write the page without training or measuring")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.swing < 1 or args.speed_repeats < 1 or args.memory_processes < 1:
        parser.error("--iterations, --swing, --speed-repeats and --memory-processes must be positive")
    doc = args.doc or DOC
    if args.smoke and (args.doc is None or doc.resolve() == DOC.resolve()):
        parser.error(f"--smoke needs --doc PATH other than {display_path(DOC)} (a smoke page is not a result)")
    fixed = [item for item in args.recipe if item.split("=", 1)[0].strip() in PROTOCOL_KEYS]
    if fixed:
        parser.error(f"--set {fixed[0]}: the protocol or a row sets this key (--iterations, --seeds, --rows)")
    config = load_train_config(str(args.config), list(args.recipe))  # a bad --set fails here, named
    rows = variants(config)
    chosen = None if args.rows is None else tuple(dict.fromkeys(["pspnet", *args.rows]))
    if chosen is not None:
        rows = [v for v in rows if v.key in chosen]
    iterations = 3 if args.smoke else args.iterations
    with tempfile.TemporaryDirectory(prefix="compare-architectures-") as temporary:
        work = args.work or (Path(temporary) if args.smoke else WORK)
        if args.context == "none" or (args.smoke and args.context is None):
            context_path = None
        else:
            context_path = (Path(args.context) if args.context else work / "demo").resolve()
        plan = Plan(
            config=args.config.resolve(),
            recipe=tuple(args.recipe),
            root=args.root.resolve(),
            iterations=iterations,
            seeds=tuple(dict.fromkeys(args.seeds)),
            val_every=max(1, iterations // 10),
            swing=args.swing,
            eval_limit=2 if args.smoke else None,
            speed_repeats=1 if args.smoke else args.speed_repeats,
            memory_batch=2 if args.smoke else config.batch_size,
            memory_crop=tuple(config.crop_size),  # type: ignore[arg-type]
            memory_steps=1 if args.smoke else 2,
            memory_processes=1 if args.smoke else args.memory_processes,
            work=work.resolve(),
            doc=doc.resolve(),
            smoke=args.smoke,
            rows=chosen,
            context=context_path,
        )
        classes = DATASETS["camvid"].classes
        missing = [name for name in (*THIN, *LARGE) if name not in classes]
        if missing:
            raise SystemExit(f"error: CamVid has no class {missing[0]!r}; its classes: {', '.join(classes)}")
        num_classes = len(classes)
        models = {
            v.key: load_train_config(str(plan.config), [*plan.recipe, *v.overrides]).model_config(num_classes)
            for v in rows
        }
        train_set = build_dataset("camvid", plan.root, "train").select(exclude=[HOLDOUT])
        dataset = holdout_set(plan.root)
        sizes = {"train": len(train_set), "holdout": len(dataset)}
        machine = machine_line()
        print(f"machine: {machine}")
        print(f"command: {shlex.join(['python', *sys.argv])}")
        print(f"work: {plan.work}\npage: {plan.doc}\n", flush=True)
        heap.keep_freed_memory()  # as pspnet's entry points run
        existing = (
            plan.context if plan.context is None or plan.context.suffix == ".json" else plan.context / "comparison.json"
        )
        if existing is not None and existing.is_file():
            read_context(existing)  # a bad file fails before the training
        results = None if args.method_only else measure(plan, rows, models, dataset, machine)
        write_page(plan, config, rows, models, sizes, results)
        if results is not None:
            (plan.work / "results.json").write_text(json.dumps(results, indent=1, default=str))
            print(f"\nresults: {plan.work / 'results.json'}")
            full = args.iterations if not args.smoke else 1000
            print(estimate(plan, results, sizes["holdout"], full, config.batch_size))
        print(f"page: {plan.doc}" + (f"\nfigure: {results['figure']['path']}" if results else ""))


if __name__ == "__main__":
    main()
