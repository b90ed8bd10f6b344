"""Prediction throughput on a folder of CamVid images, fp32 and bf16 in one run, and how often bf16 agrees.

    .venv/bin/python benchmarks/predict_throughput.py CHECKPOINT [--images ../shared/data/camvid/val] [--limit N]
        [--batch 4] [--device auto] [--mode auto]

For each precision the same model (loaded once) predicts the first N images of the folder twice:

- **pipeline**: what ``pspnet predict FOLDER --out DIR`` does (``pspnet.predict.predict_inputs``): decoding ahead
  and PNG writing in a 2-thread pool, overlapping the network; index PNG + colour PNG + CSV written per image;
- **model only**: the same batches on images decoded beforehand, nothing written: the compute-bound ceiling.

pipeline / model-only close to 1 means prediction is compute-bound (decoding and writing hide behind compute).
Agreement: the share of all pixels whose bf16 label equals the fp32 label (from the written index PNGs), and the
lowest per-image share. One warm-up batch per precision runs before timing (oneDNN builds its kernels then).
Prints the machine, the versions and the command, then a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import PIL
import torch

import pspnet
from pspnet.data.io import read_image, read_mask
from pspnet.predict import InputItem, predict_inputs
from pspnet.segmenter import Segmenter, size_batches

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    except OSError:
        cpu = platform.processor() or "?"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
        f"{platform.system()} {platform.release()}; load average {load}"
    )


def versions() -> str:
    return (
        f"Python {platform.python_version()}, pspnet {pspnet.__version__}, torch {torch.__version__}, "
        f"numpy {np.__version__}, Pillow {PIL.__version__}, OpenCV {cv2.__version__}"
    )


def model_only(segmenter: Segmenter, images: list[np.ndarray], batch: int) -> float:
    """Seconds to predict ``images`` (decoded) in batches of one size, labels to the CPU, nothing written."""
    started = time.perf_counter()
    for chunk in size_batches([image.shape for image in images], batch):
        segmenter.labels(segmenter.infer([images[i] for i in chunk]))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="model file (.safetensors) or training run directory")
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "camvid" / "val"))
    parser.add_argument("--limit", type=int, default=20, help="number of images (default: 20)")
    parser.add_argument("--batch", type=int, default=4, help="images per forward pass (default: 4)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mode", default="auto", choices=["auto", "whole", "slide"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()

    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"command: {shlex.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")

    folder = Path(args.images)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.limit]
    if not paths:
        print(f"error: no images in {folder}", file=sys.stderr)
        return 1
    base = Segmenter.from_checkpoint(args.checkpoint, device=args.device, mode=args.mode, max_batch=args.batch)
    s = base.settings
    sizes = sorted({f"{w}x{h}" for h, w in (read_image(p).shape[:2] for p in paths[:5])})
    print(
        f"checkpoint: {args.checkpoint} ({base.model.config.depth}-layer ResNet, {base.num_classes} classes, "
        f"output stride {base.model.config.output_stride}) on {base.device}; mode {s.mode}, crop "
        f"{s.crop_size[0]}x{s.crop_size[1]}, base size {s.base_size or 'native'}, batch {args.batch}"
    )
    print(f"images: the first {len(paths)} of {folder} (sizes {', '.join(sizes)}{', ...' if len(paths) > 5 else ''})")
    decoded = [read_image(p) for p in paths]
    items = [InputItem(p, p.stem) for p in paths]

    rows = []
    with tempfile.TemporaryDirectory(prefix="pspnet-predict-bench-") as work:
        outs = {}
        for precision in args.precisions:
            segmenter = Segmenter(base.model, dataclasses.replace(s, precision=precision), max_batch=args.batch)
            segmenter.labels(segmenter.infer(decoded[: min(args.batch, len(decoded))]))  # warm-up, not timed
            outs[precision] = Path(work) / precision
            report = predict_inputs(segmenter, items, outs[precision], batch=args.batch, progress=False)
            if report.failures:
                for failure in report.failures:
                    print(f"error: {failure.message}", file=sys.stderr)
                return 1
            compute = model_only(segmenter, decoded, args.batch)
            rows.append((precision, len(paths) / report.seconds, len(paths) / compute, compute / report.seconds))
            print(f"  {precision}: done", file=sys.stderr, flush=True)
        agreement = ""
        if "fp32" in outs and len(outs) > 1:
            other = next(p for p in args.precisions if p != "fp32")
            equal = total = 0
            lowest = 1.0
            for item in items:
                a = read_mask(outs["fp32"] / f"{item.name}.png")
                b = read_mask(outs[other] / f"{item.name}.png")
                same = int((a == b).sum())
                equal += same
                total += a.size
                lowest = min(lowest, same / a.size)
            agreement = (
                f"{other} label = fp32 label on {100 * equal / total:.2f}% of {total:,} pixels "
                f"(lowest image: {100 * lowest:.2f}%)"
            )

    print()
    print("| precision | pipeline images/s | model-only images/s | pipeline / model-only |")
    print("|---|---:|---:|---:|")
    for precision, pipeline, compute, ratio in rows:
        print(f"| {precision} | {pipeline:.2f} | {compute:.2f} | {ratio:.2f} |")
    if agreement:
        print(f"\nagreement: {agreement}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
