"""Throughput of the paper's training augmentation on one CPU core, next to one CPU training step of a small PSPNet.

    .venv/bin/python benchmarks/augment_throughput.py [--camvid ../shared/data/camvid] [--passes 5] [--train-steps 5]

Measures, in one run and one process:

1. CamVid (real 480x360 images of ``train/``, masks of ``trainannot/``, void 11 mapped to ignore 255), crop 360x480
   (the native size, as CamVid is evaluated on the whole image): ``paper_train_transform`` on pre-decoded arrays
   (decoding excluded), the same plus conversion to a normalised float tensor, and decoding + augmentation together
   (PNG decoding with Pillow, files in the page cache after the first pass).
2. ADE20K-like: a synthetic 512x683 image and a 150-class mask, crop 473x473 (ADE20K itself is not available here;
   the cost of these operations does not depend on the pixel values).
3. One training step (forward + backward + SGD step) of ``PSPNet(num_classes=11, depth=18, head_channels=128,
   aux_channels=64, output_stride=16)`` on a batch of 8 at 360x480, with all cores, to compare images/s.

Augmentation runs on one core: OpenCV and torch are set to one thread and, where the OS allows, the process is
pinned to one CPU for that part. Each sample gets its own generator seeded from (seed, epoch, index), as the data
set does; creating it is part of the timed work.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import PIL
import torch
from PIL import Image

from pspnet.constants import IMAGENET_MEAN, IMAGENET_STD
from pspnet.data.transforms import Compose, paper_train_transform
from pspnet.engine.losses import pspnet_loss
from pspnet.models.pspnet import PSPNet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CAMVID = ROOT.parent / "shared" / "data" / "camvid"
CAMVID_VOID = 11
IGNORE = 255


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, or 'unknown'."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def usable_cpus() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def pin(cpus: set[int]) -> bool:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
        return True
    return False


def read_pair(image_path: Path, mask_path: Path, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8 RGB, mask (H, W) uint8 with void -> 255) decoded with Pillow."""
    with Image.open(image_path) as im:
        image = np.asarray(im.convert("RGB"))
    with Image.open(mask_path) as m:
        mask = lut[np.asarray(m)]
    return image, mask


def to_tensor(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """What a data set does after augmentation: (3, H, W) float32 normalised image, (H, W) int64 mask."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = torch.from_numpy(image).permute(2, 0, 1).float().sub_(mean).div_(std)
    return x, torch.from_numpy(mask).long()


def rate(passes: list[float], n: int) -> str:
    """'median img/s (min-max), ms/img' over timed passes of n images each."""
    rates = [n / t for t in passes]
    med = statistics.median(rates)
    return f"{med:8.1f} img/s  ({min(rates):.1f}-{max(rates):.1f} over {len(rates)} passes)  {1000 / med:6.2f} ms/img"


def timed_passes(fn: Callable[[int], None], passes: int) -> list[float]:
    """Seconds of each call fn(epoch) for epochs 1..passes, after one untimed warm-up call (epoch 0)."""
    fn(0)
    out = []
    for epoch in range(1, passes + 1):
        t0 = time.perf_counter()
        fn(epoch)
        out.append(time.perf_counter() - t0)
    return out


def breakdown(transform: Compose, pairs: list[tuple[np.ndarray, np.ndarray]], seed: int, repeats: int) -> str:
    """Mean ms per sample in each step of ``transform``, averaged over all samples (a step not drawn costs ~0)."""
    totals = [0.0] * len(transform.transforms)
    for epoch in range(1, repeats + 1):
        for i, (image, mask) in enumerate(pairs):
            rng = np.random.default_rng((seed, epoch, i))
            for k, step in enumerate(transform.transforms):
                t0 = time.perf_counter()
                image, mask = step(image, mask, rng)
                totals[k] += time.perf_counter() - t0
    n = repeats * len(pairs)
    return ", ".join(f"{type(t).__name__} {1000 * s / n:.2f}" for t, s in zip(transform.transforms, totals))


def bench_camvid(root: Path, passes: int, seed: int) -> dict[str, float]:
    names = sorted(p.name for p in (root / "train").glob("*.png"))
    if not names:
        raise SystemExit(f"{root / 'train'}: no PNG images (give --camvid DIR)")
    lut = np.arange(256, dtype=np.uint8)
    lut[CAMVID_VOID] = IGNORE
    pairs = [read_pair(root / "train" / n, root / "trainannot" / n, lut) for n in names]
    shapes = {p[0].shape for p in pairs}
    transform = paper_train_transform(crop_size=(360, 480))
    n = len(pairs)

    def augment(epoch: int) -> None:
        for i, (image, mask) in enumerate(pairs):
            transform(image, mask, np.random.default_rng((seed, epoch, i)))

    def augment_tensor(epoch: int) -> None:
        for i, (image, mask) in enumerate(pairs):
            to_tensor(*transform(image, mask, np.random.default_rng((seed, epoch, i))))

    def decode_augment(epoch: int) -> None:
        for i, name in enumerate(names):
            image, mask = read_pair(root / "train" / name, root / "trainannot" / name, lut)
            transform(image, mask, np.random.default_rng((seed, epoch, i)))

    def decode_only(epoch: int) -> None:
        for name in names:
            read_pair(root / "train" / name, root / "trainannot" / name, lut)

    print(f"\n## CamVid train: {n} real images {sorted(shapes)} -> crop 360x480")
    results = {}
    for label, fn, k in [
        ("augment (decoding excluded)", augment, passes),
        ("augment + to normalised float tensor", augment_tensor, passes),
        ("decode only (Pillow PNG, image + mask)", decode_only, max(2, passes // 2)),
        ("decode + augment", decode_augment, max(2, passes // 2)),
    ]:
        times = timed_passes(fn, k)
        print(f"  {label:42s} {rate(times, n)}")
        results[label] = statistics.median(n / t for t in times)
    print(f"  per step, ms/img: {breakdown(transform, pairs, seed, 2)}")
    return results


def bench_ade_like(samples: int, passes: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (512, 683, 3), dtype=np.uint8)
    # 150 classes in 16x16-pixel blocks plus some ignore, so the mask looks like labels rather than noise
    blocks = rng.integers(0, 151, (32, 43)).astype(np.uint8)
    blocks[blocks == 150] = IGNORE
    mask = np.ascontiguousarray(np.kron(blocks, np.ones((16, 16), np.uint8))[:512, :683])
    transform = paper_train_transform(crop_size=(473, 473))

    def augment(epoch: int) -> None:
        for i in range(samples):
            transform(image, mask, np.random.default_rng((seed, epoch, i)))

    print(f"\n## ADE20K-like: synthetic 512x683 image, 150-class mask -> crop 473x473 ({samples} samples per pass)")
    times = timed_passes(augment, passes)
    print(f"  {'augment':42s} {rate(times, samples)}")
    print(f"  per step, ms/img: {breakdown(transform, [(image, mask)] * samples, seed, 1)}")
    return statistics.median(samples / t for t in times)


def bench_train_step(steps: int, batch: int, size: tuple[int, int], threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = PSPNet(num_classes=11, depth=18, head_channels=128, aux_channels=64, output_stride=16).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, *size)
    target = torch.randint(0, 11, (batch, *size))
    target[:, :8] = IGNORE

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = pspnet_loss(model(x), target)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(
        f"\n## Training step: PSPNet depth 18, head 128, aux 64, OS 16, 11 classes; batch {batch} at "
        f"{size[0]}x{size[1]}; fp32, {threads} threads"
    )
    print(
        f"  {'forward + backward + SGD step':42s} {med:6.2f} s/step (min {min(times):.2f}, {steps} steps)  "
        f"{batch / med:6.2f} img/s"
    )
    return batch / med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camvid", type=Path, default=DEFAULT_CAMVID, help="CamVid root with train/ and trainannot/")
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the data per measurement")
    parser.add_argument("--ade-samples", type=int, default=200, help="augmented samples per ADE-like pass")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps (0: skip)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    all_cpus = usable_cpus()
    print("# Augmentation throughput (pspnet.data.transforms.paper_train_transform)")
    print(f"date     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"command  {shlex.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"machine  {cpu_model()}, {os.cpu_count()} logical CPUs ({len(all_cpus)} usable), {platform.platform()}")
    print(
        f"versions python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}, "
        f"Pillow {PIL.__version__}, torch {torch.__version__}"
    )

    print(f"load     {loadavg()} at start (other processes on these cores distort every figure below)")

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    pinned = pin({min(all_cpus)})
    print(f"augmentation: 1 thread (cv2, torch){', pinned to CPU ' + str(min(all_cpus)) if pinned else ''}")
    camvid = bench_camvid(args.camvid, args.passes, args.seed)
    ade = bench_ade_like(args.ade_samples, args.passes, args.seed)
    if pinned:
        pin(all_cpus)

    if args.train_steps <= 0:
        return
    train = bench_train_step(args.train_steps, args.batch, (360, 480), len(all_cpus))
    aug = camvid["augment (decoding excluded)"]
    full = camvid["decode + augment"]
    print("\n## Side by side at 360x480 (CamVid)")
    print(f"  augmentation, 1 core            {aug:8.1f} img/s")
    print(f"  decode + augmentation, 1 core   {full:8.1f} img/s")
    print(f"  training step, {len(all_cpus)} cores          {train:8.2f} img/s")
    print(f"  ratio augmentation / training   {aug / train:8.1f}x  (decode + augment: {full / train:.1f}x)")
    print(f"  ADE20K-like augmentation, 1 core at 473x473: {ade:.1f} img/s")
    print(f"\nload     {loadavg()} at the end (this run itself keeps up to {len(all_cpus)} cores busy)")


if __name__ == "__main__":
    main()
