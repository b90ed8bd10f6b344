"""Helpers for tests/test_train.py: a tiny folder data set, tiny training configs, runs in subprocesses, comparisons.

Everything here is sized so that one optimiser step of the tiny PSPNet (ResNet-18 backbone, 16-channel head,
8-channel aux head, 48x48 crops, 4 images) takes about 0.1 s on one CPU thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from pspnet.data.io import write_mask_png
from pspnet.engine.config import TrainConfig, load_train_config
from pspnet.weights.model_file import read_weights_file

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CLASSES = ["a", "b", "c"]
PALETTE = [[40, 40, 40], [200, 30, 30], [30, 30, 200]]

# The tiny model and data settings every test starts from.
TINY: dict[str, Any] = {
    "dataset": "folder",
    "depth": 18,
    "head_channels": 16,
    "aux_channels": 8,
    "crop_size": [48, 48],
    "batch_size": 4,
    "workers": 0,
    "log_every": 1,
    "device": "cpu",
}


def make_folder_dataset(root: Path, *, n_train: int = 8, n_val: int = 2, seed: int = 0) -> Path:
    """``root`` in pspnet's folder layout: 48x64 RGB images of a dark background (class a) with a red rectangle
    (class b) and a blue disc (class c), index-PNG masks with an ignored (255) top border, and classes.yaml."""
    rng = np.random.default_rng(seed)
    colours = np.array(PALETTE, np.uint8)
    yy, xx = np.mgrid[:48, :64]
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            mask = np.zeros((48, 64), np.uint8)
            y, x = rng.integers(0, 30), rng.integers(0, 42)
            mask[y : y + 16, x : x + 20] = 1
            cy, cx, r = rng.integers(10, 38), rng.integers(10, 54), rng.integers(5, 10)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 2
            image = colours[mask] + rng.integers(0, 40, (48, 64, 3)).astype(np.uint8)
            mask[:2] = 255
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            write_mask_png(root / "masks" / split / f"{i:03d}.png", mask, PALETTE)
    (root / "classes.yaml").write_text(
        "classes: [{name: a}, {name: b}, {name: c}]\ncrop_size: [48, 48]\nbase_size: 48\n"
    )
    return root


def settings(root: Path, **extra: Any) -> dict[str, Any]:
    """The tiny settings for data set ``root`` with ``extra`` on top (a flat config mapping)."""
    return {**TINY, "root": str(root), **extra}


def tiny_config(root: Path, **extra: Any) -> TrainConfig:
    """A validated TrainConfig built the way the CLI builds it: ``key=value`` overrides parsed as YAML."""
    overrides = [f"{key}={json.dumps(value)}" for key, value in settings(root, **extra).items()]
    return load_train_config(None, overrides)


def write_config(path: Path, root: Path, **extra: Any) -> Path:
    path.write_text(yaml.safe_dump(settings(root, **extra), sort_keys=False))
    return path


def read_log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def train_records(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_log(run) if "loss" in r and "event" not in r]


def val_records(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_log(run) if "val_mIoU" in r]


def checkpoints(run: Path) -> list[int]:
    """The N of every ``ckpt_N`` directory of ``run``, sorted."""
    return sorted(int(p.name[5:]) for p in run.glob("ckpt_*") if p.is_dir() and p.name[5:].isdigit())


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_weights_file(path)[0]


def assert_close_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, rtol: float, atol: float = 0.0):
    """Same keys; every tensor within ``max|a - b| <= rtol * max|b| + atol`` (integer tensors exactly)."""
    assert sorted(a) == sorted(b)
    bad = []
    for key in sorted(a):
        x, y = a[key], b[key]
        assert x.shape == y.shape and x.dtype == y.dtype, key
        if not x.is_floating_point():
            if not torch.equal(x, y):
                bad.append(f"{key}: differs")
            continue
        x, y = x.double(), y.double()
        diff = (x - y).abs().max().item() if x.numel() else 0.0
        scale = y.abs().max().item() if y.numel() else 0.0
        if not diff <= rtol * scale + atol:
            bad.append(f"{key}: max|a-b| {diff:.3g} > {rtol:g} x max|b| {scale:.3g} + {atol:g}")
    assert not bad, f"{len(bad)} of {len(a)} tensors differ:\n" + "\n".join(bad[:20])


def assert_equal_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bitwise equality of every tensor (torch.equal) and the same keys."""
    assert sorted(a) == sorted(b)
    bad = [key for key in sorted(a) if a[key].dtype != b[key].dtype or not torch.equal(a[key], b[key])]
    assert not bad, f"{len(bad)} of {len(a)} tensors are not bitwise equal: {bad[:20]}"


def subprocess_env() -> dict[str, str]:
    """Environment of a training subprocess: one thread, the venv first on PATH, no inherited torchrun variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def pspnet_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pspnet.cli", *args]


def torchrun_command(nproc: int, *args: str) -> list[str]:
    return [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", str(nproc), "-m", "pspnet.cli", *args]


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``command`` in its own process group (so that a timeout can stop it and every child it made)."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float) -> tuple[int | None, str, str]:
    """Wait up to ``timeout`` s; on time-out kill the process and every descendant and return rc None."""
    try:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        stop_group(process)
        out, err = process.communicate(timeout=30)
        return None, out, err


def _descendants(pid: int) -> list[int]:
    """Ids of every process below ``pid`` (torchrun starts its workers in sessions of their own, so killing the
    launcher's process group does not reach them; their parent ids do)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_group(process: subprocess.Popen) -> None:
    """SIGKILL a process that :func:`start` made, its process group and all its descendants (by their ids)."""
    below = _descendants(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run(command: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    rc, out, err = finish(start(command, cwd), timeout)
    assert rc is not None, f"{command} did not finish in {timeout} s\nstdout:\n{out}\nstderr:\n{err}"
    return subprocess.CompletedProcess(command, rc, out, err)


def wait_for(predicate, process: subprocess.Popen, timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true (True), the process ends or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return bool(predicate())
        time.sleep(interval)
    return False


def training_rtol(root: Path, *, steps: int, **extra: Any) -> float:
    """The rounding bound (tests/rounding.py) of ``steps`` float64 optimiser steps of the tiny model that
    :func:`tiny_config` builds for data set ``root``: its layers and fan-ins, and the pixels of one step's batch."""
    from rounding import network_rtol

    from pspnet.models.build import build_model

    config = tiny_config(root, iterations=1, **extra)
    with torch.device("meta"):
        model = build_model(config.model_config(len(CLASSES)))
    pixels = config.batch_size * config.crop_size[0] * config.crop_size[1]
    return network_rtol(model, pixels=pixels, steps=steps, dtype=torch.float64)
