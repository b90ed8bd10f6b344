"""The official PSPNet code's speed and memory against pspnet's, side by side in one run on this machine.

    .venv/bin/python benchmarks/official_vs_pspnet.py [--what forward,train,protocol] [--repeat 3]

PSPNet50 with 150 classes (ADE20K), random official-layout weights (the shapes of ../shared/fixtures), converted
into a pspnet model file with ``pspnet convert --from official`` so that both sides compute the same network:

- **forward**: one eval forward, batch 1, 512x512, fp32, under ``torch.inference_mode``: the official eager
  network (benchmarks/official_pspnet.py) against ``pspnet.load_model`` + ``model(x)`` (BatchNorm kept, as for
  fine-tuning) and ``Segmenter.from_checkpoint`` (BatchNorm folded; fp32, and ``precision="auto"``), with the
  largest logit difference relative to the largest official logit and the share of equal labels;
- **train**: one training step, fp32, batch 2 at 473x473, with its peak memory (peak RSS, and how far above the
  RSS before the first step it went): the official step (CE on full-resolution main
  logits + 0.4 aux, SGD) against ``pspnet.engine.train.train_step``, the step ``pspnet train`` runs;
- **protocol**: the official multi-scale (0.5 ... 1.75) + flip sliding-window test of one 512x683 image (the
  official per-window loop with float64 NumPy sums and cv2 resizes) against ``Segmenter`` with the same settings,
  with the share of equal labels; each timed once, without a warm-up (it runs the network about 90 times).

Every side runs in a spawned process of its own. pspnet's entry points keep freed memory in the process for reuse
(pspnet.heap); the official code runs with glibc's defaults, and once more with pspnet's heap setting, so that the
share of each ratio that comes from the heap alone shows. Times are the minimum over ``--repeat`` runs after a
warm-up; every ratio compares two rows of this one run. The machine, CPU capability and command are printed first;
docs/benchmarks.md keeps the results.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from official_pspnet import OfficialPSPNet, official_multiscale_labels, official_train_step
from reference_pspnet import official_state_dict

import pspnet
from pspnet import heap
from pspnet.bench import machine_info, peak_rss_bytes
from pspnet.constants import IMAGENET_MEAN, IMAGENET_STD
from pspnet.engine.train import StepSettings, param_groups, train_step
from pspnet.inference import cpu_flags, normalize
from pspnet.segmenter import Segmenter
from pspnet.weights.convert import convert

KEY_FILE = ROOT.parent / "shared" / "fixtures" / "official_pspnet50_keys.json"
CLASSES = 150
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def machine() -> str:
    """The CPU, its flags (capability, AVX512_BF16, AMX), torch and threads: the header of every record."""
    info = machine_info(torch.device("cpu"))
    return (
        f"{info['cpu_model']}; capability {'+'.join(cpu_flags())}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def best_time(fn, repeat: int, *, warm_up: bool = True) -> float:
    """The fastest of ``repeat`` calls of ``fn`` (after one warm-up call unless ``warm_up`` is False), in seconds."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def official_model() -> OfficialPSPNet:
    model = OfficialPSPNet(CLASSES)
    model.load_state_dict(official_state_dict(KEY_FILE, seed=0), strict=True)
    return model.eval()


def pspnet_file(folder: Path) -> Path:
    """The official weights as a pspnet model file, through the converter users run."""
    torch.save(official_state_dict(KEY_FILE, seed=0), folder / "official.pth")
    convert("official", folder / "official.pth", folder / "pspnet50.safetensors", dataset="ade20k")
    return folder / "pspnet50.safetensors"


def photo(height: int, width: int) -> np.ndarray:
    """A smooth RGB uint8 picture with structure (random weights respond to it like to a photo)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    picture = np.stack([x * 255 / width, y * 255 / height, (x * y) % 97 * 2.6], axis=-1)
    return np.clip(picture + rng.normal(0, 8, picture.shape), 0, 255).astype(np.uint8)


def normalized(image: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float32 for an (H, W, 3) uint8 RGB image, normalised with ImageNet's mean and std."""
    return normalize(torch.from_numpy(image).permute(2, 0, 1)[None], IMAGENET_MEAN, IMAGENET_STD)


def _set_heap(kept: bool) -> None:
    """This process's heap: freed memory kept for reuse (pspnet.heap, what pspnet's entry points apply), or glibc's
    defaults (as the official code runs), with pspnet's entry points told to leave them."""
    if kept:
        heap.keep_freed_memory()
    else:
        os.environ[heap.ENVIRONMENT_VARIABLE] = "0"


def _forward_worker(kind: str, kept: bool, path: str, repeat: int) -> list[tuple[str, float, str]]:
    _set_heap(kept)
    x = normalized(photo(512, 512))
    heap_note = "heap kept" if heap.kept() else "glibc heap defaults"
    if kind == "official":
        official = official_model()
        with torch.inference_mode():
            return [(f"official eager forward ({heap_note})", best_time(lambda: official(x), repeat), "")]
    rows: list[tuple[str, float, torch.Tensor]] = []
    with torch.inference_mode():
        loaded = pspnet.load_model(path)
        rows.append((f"pspnet load_model + model(x) ({heap_note})", best_time(lambda: loaded(x), repeat), loaded(x)))
        for precision in ("fp32", "auto"):
            segmenter = Segmenter.from_checkpoint(path, device="cpu", precision=precision, mode="whole")
            model, dtype = segmenter.model, segmenter.dtype
            layout = torch.channels_last if dtype == torch.bfloat16 else torch.contiguous_format
            xs = x.to(dtype).contiguous(memory_format=layout)
            name = f"Segmenter {precision} ({segmenter.settings.precision}, BatchNorm folded) model ({heap_note})"
            rows.append((name, best_time(lambda m=model, v=xs: m(v), repeat), model(xs).float()))
        reference = official_model()(x)  # after the timings: the official logits to compare with
    result = []
    for name, seconds, logits in rows:
        error = float((logits - reference).abs().max() / reference.abs().max())
        agree = float((logits.argmax(1) == reference.argmax(1)).float().mean())
        result.append((name, seconds, f"logits rel. {error:.1e}, labels equal {100 * agree:.3f}%"))
    return result


def _train_worker(kind: str, kept: bool, path: str, repeat: int) -> list[tuple[str, float, str]]:
    _set_heap(kept)
    torch.manual_seed(0)
    images = torch.from_numpy(photo(473, 473)).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    target = torch.randint(0, CLASSES, (2, 473, 473))
    if kind == "official":
        model = OfficialPSPNet(CLASSES)
        model.load_state_dict(official_state_dict(KEY_FILE, seed=0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        x = normalize(images, IMAGENET_MEAN, IMAGENET_STD)
        name = "official training step"

        def step() -> float:
            return official_train_step(model, optimizer, x, target)
    else:
        model = pspnet.load_model(path)
        optimizer = torch.optim.SGD(
            param_groups(model, lr=0.01, head_lr_mult=10.0), lr=0.01, momentum=0.9, weight_decay=1e-4
        )
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        batch = {"image": images, "mask": target}
        name = "pspnet train_step"

        def step() -> float:
            return train_step(model, optimizer, scaler, [batch], StepSettings())

    before = peak_rss_bytes()
    seconds = best_time(step, repeat)
    peak = peak_rss_bytes()
    note = f"peak RSS {peak / 2**30:.2f} GiB ({(peak - before) / 2**30:.2f} GiB above the RSS before the first step)"
    return [(f"{name} ({'heap kept' if heap.kept() else 'glibc heap defaults'})", seconds, note)]


def _protocol_worker(kind: str, kept: bool, path: str, repeat: int) -> list[tuple[str, float, str]]:
    _set_heap(kept)
    image = photo(512, 683)
    heap_note = "heap kept" if heap.kept() else "glibc heap defaults"
    official = official_model()

    def run_official() -> np.ndarray:
        return official_multiscale_labels(
            official, image, CLASSES, crop=473, base_size=512, scales=SCALES, mean=IMAGENET_MEAN, std=IMAGENET_STD
        )

    if kind == "official":
        return [(f"official multi-scale + flip test ({heap_note})", best_time(run_official, repeat, warm_up=False), "")]
    rows = []
    for precision in ("fp32", "auto"):
        segmenter = Segmenter.from_checkpoint(
            path, device="cpu", precision=precision, mode="slide", scales=SCALES, flip=True
        )
        got: dict[str, np.ndarray] = {}

        def run(s: Segmenter = segmenter, out: dict[str, np.ndarray] = got) -> None:
            out["labels"] = s.predict(image)

        seconds = best_time(run, repeat, warm_up=False)
        name = f"Segmenter multi-scale + flip, {precision} ({segmenter.settings.precision}) ({heap_note})"
        rows.append((name, seconds, got["labels"]))
    labels = run_official()  # after the timings: the official labels to compare with
    return [
        (name, seconds, f"labels equal {100 * float((ours == labels).mean()):.3f}%") for name, seconds, ours in rows
    ]


WORKERS = {"forward": _forward_worker, "train": _train_worker, "protocol": _protocol_worker}
# (side, heap kept?) per row group: the official code as it runs (glibc's defaults) and with pspnet's heap setting,
# so that the heap's share of a ratio shows; pspnet as its entry points run it (heap kept), and for the training
# step also with glibc's defaults (its memory without the setting).
SIDES = {
    "forward": [("official", False), ("official", True), ("pspnet", True)],
    "train": [("official", False), ("official", True), ("pspnet", True), ("pspnet", False)],
    "protocol": [("official", False), ("official", True), ("pspnet", True)],
}


def _in_process(connection, what: str, kind: str, kept: bool, path: str, repeat: int) -> None:
    connection.send(WORKERS[what](kind, kept, path, repeat))
    connection.close()


def bench(what: str, path: Path, repeat: int) -> list[tuple[str, float, str]]:
    """Every side of ``what`` in a spawned process of its own (its heap setting and its peak memory its own)."""
    context = multiprocessing.get_context("spawn")
    rows = []
    for kind, kept in SIDES[what]:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_in_process, args=(sender, what, kind, kept, str(path), repeat))
        process.start()
        sender.close()
        rows.extend(receiver.recv())
        process.join()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", default="forward,train,protocol", help="comma-separated: forward, train, protocol")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row, after one warm-up (default 3)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"command: {shlex.join([sys.executable.split('/')[-1], *sys.argv])}\n")
    with tempfile.TemporaryDirectory() as folder:
        path = pspnet_file(Path(folder))
        for what in args.what.split(","):
            rows = bench(what, path, args.repeat if what != "protocol" else 1)
            base = rows[0][1]
            print(f"| {what} | seconds | speed vs official | notes |\n|---|---:|---:|---|")
            for name, seconds, note in rows:
                print(f"| {name} | {seconds:.2f} | {base / seconds:.2f}x | {note} |")
            print(flush=True)


if __name__ == "__main__":
    main()
