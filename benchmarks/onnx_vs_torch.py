"""PyTorch eager against ONNX Runtime fp32 and int8 on the CPU: one model, the same CamVid images, one run.

    PYTHONPATH=src .venv/bin/python benchmarks/onnx_vs_torch.py [--depth 18 | --model MODEL]
        [--images ../shared/data/camvid/val] [--calib ../shared/data/camvid/train] [--limit 8] [--repeat 2]
        [--miou-split val]

The model is a PSPNet (``--depth`` 18 or 50) with random weights and the CamVid card (11 classes, base size 480,
crop 360x480), so a 480x360 CamVid image runs whole, once, through each backend (``Segmenter``, mode auto, no
flip, batch 1, images decoded beforehand: the network and the protocol around it, nothing written):

- **PyTorch eager**: ``Segmenter.from_checkpoint(model.safetensors, precision="fp32")`` (BatchNorm folded);
- **ONNX Runtime fp32**: ``pspnet export --input normalized --output logits`` of the same model file, run by
  ``Segmenter`` (``pspnet.onnx_model``: ORT_ENABLE_ALL, ``torch.get_num_threads()`` intra-op threads);
- **ONNX Runtime int8**: the same export with ``--int8 --calib`` (the first 16 images of ``--calib``, CamVid
  train by default, so that the timed val images are not the calibration images).

Each backend predicts the first ``--limit`` images ``--repeat`` times after one warm-up image, the repeats
interleaved (every backend in turn); images/s is from the fastest repeat. Label agreement: the share of all pixels
whose int8 label equals ONNX Runtime fp32's (and fp32's equals PyTorch's). With random weights most pixels are
near-ties between classes, so the int8 agreement here is a floor, not what a trained model shows (docs/deploy.md).
``--model`` takes a trained CamVid model (a file or a run directory) instead; with ``--miou-split`` each backend
then also segments every image of that CamVid split, and its mIoU (one confusion matrix over the split,
:mod:`pspnet.engine.metrics`) shows what int8 costs in accuracy. Prints the machine, CPU capability, versions and
the command, then a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import pspnet
from pspnet.bench import machine_info
from pspnet.data.datasets import build_dataset
from pspnet.data.io import read_image
from pspnet.engine.metrics import ConfusionMatrix
from pspnet.export import calibration_images, export_model
from pspnet.inference import cpu_flags
from pspnet.segmenter import Segmenter
from pspnet.weights.model_file import make_card, save_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def machine() -> str:
    """The CPU's model name (pspnet bench's reading of /proc/cpuinfo) and its logical CPUs."""
    info = machine_info(torch.device("cpu"))
    return f"{info['cpu_model'] or '?'}, {info['logical_cpus']} logical CPUs"


def timed(
    segmenters: dict[str, Segmenter], images: list[np.ndarray], repeat: int
) -> tuple[dict[str, float], dict[str, list[np.ndarray]]]:
    """Images/s of each segmenter (the fastest of ``repeat`` passes over ``images``) and its labels of the last pass.
    The passes interleave: each repeat runs every segmenter in turn, so that a change of the machine's speed during
    the run (a shared VM's neighbours, clock changes) reaches every backend alike and the ratios stay fair."""
    for segmenter in segmenters.values():
        segmenter.predict(images[0])  # warm-up: kernels and memory pools are set up on the first run
    best = dict.fromkeys(segmenters, float("inf"))
    labels: dict[str, list[np.ndarray]] = {}
    for _ in range(repeat):
        for name, segmenter in segmenters.items():
            started = time.perf_counter()
            labels[name] = [segmenter.predict(image) for image in images]
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: len(images) / seconds for name, seconds in best.items()}, labels


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(sum(int((x == y).sum()) for x, y in zip(a, b)) / sum(x.size for x in a))


def split_miou(segmenter: Segmenter, root: Path, split: str) -> float:
    """mIoU of ``segmenter`` over every image of CamVid ``split`` under ``root``: one confusion matrix."""
    dataset = build_dataset("camvid", root, split)
    matrix = ConfusionMatrix(dataset.info.num_classes, dataset.info.ignore_index)
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        matrix.update(torch.from_numpy(segmenter.predict(image).astype(np.int64)), torch.from_numpy(mask).long())
    return float(matrix.compute().miou)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, choices=(18, 50), default=18)
    parser.add_argument("--model", type=Path, help="a trained CamVid model file or run directory (else random)")
    parser.add_argument("--miou-split", help="with --model: also the mIoU of each backend on this CamVid split")
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "camvid" / "val")
    parser.add_argument("--calib", type=Path, default=SHARED / "data" / "camvid" / "train")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    if args.miou_split and args.model is None:
        parser.error("--miou-split needs a trained --model")
    if args.model is not None:
        model = pspnet.load_model(args.model)
        card = model.card
        what = f"trained model {args.model} ({model.config.architecture}, ResNet-{model.config.depth})"
    else:
        torch.manual_seed(0)
        model = pspnet.PSPNet(num_classes=11, depth=args.depth).eval()
        card = make_card(model.config, dataset="camvid")
        model.card = card
        what = f"PSPNet{args.depth}, random weights"
    names = sorted(args.images.glob("*.png"))[: args.limit]
    images = [read_image(name) for name in names]
    calibration = calibration_images(args.calib, card.crop_size)
    print(f"# {datetime.date.today()} on {machine()}")
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}; pspnet.inference.cpu_flags: {cpu_flags()}")
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}, "
        f"pspnet {pspnet.__version__}; {what}, 11 classes; {len(images)} CamVid images "
        f"{images[0].shape[1]}x{images[0].shape[0]} from {args.images}, whole image, batch 1; int8 calibrated on "
        f"{len(calibration)} images of {args.calib} at {card.crop_size[1]}x{card.crop_size[0]}"
    )
    print("command: PYTHONPATH=src " + shlex.join([Path(sys.executable).name, *sys.argv]), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        save_model(model, folder / "model.safetensors", card=card)
        started = time.perf_counter()
        export_model(model, folder / "fp32.onnx", input_kind="normalized", output_kind="logits")
        fp32_export = time.perf_counter() - started
        started = time.perf_counter()
        report = export_model(
            model, folder / "int8.onnx", input_kind="normalized", output_kind="logits", calibration=calibration
        )
        int8_export = time.perf_counter() - started
        print(
            f"exports: fp32 {fp32_export:.0f} s, int8 {int8_export:.0f} s (its check on the calibration images: "
            f"labels {100 * report.int8.label_agreement:.2f}% equal, decided pixels "
            f"{100 * (report.int8.decided_agreement or 0):.2f}% of {report.int8.decided_pixels:,}, logits "
            f"{report.int8.logit_rdiff:.3f} of the largest); sizes fp32 "
            f"{(folder / 'fp32.onnx').stat().st_size / 1e6:.1f} MB, int8 {report.bytes / 1e6:.1f} MB",
            flush=True,
        )
        segmenters = {
            label: Segmenter.from_checkpoint(path, max_batch=1, **options)
            for label, path, options in (
                (
                    "PyTorch eager fp32 (BN folded)",
                    folder / "model.safetensors",
                    {"device": "cpu", "precision": "fp32"},
                ),
                ("ONNX Runtime fp32", folder / "fp32.onnx", {}),
                ("ONNX Runtime int8 (QDQ, per-channel)", folder / "int8.onnx", {}),
            )
        }
        speeds, results = timed(segmenters, images, args.repeat)
        for label, segmenter in segmenters.items():
            miou = split_miou(segmenter, args.images.parent, args.miou_split) if args.miou_split else None
            rows.append((label, speeds[label], miou))
            print(
                f"  {label}: {speeds[label]:.3f} images/s" + (f", mIoU {100 * miou:.2f}" if miou is not None else ""),
                flush=True,
            )
    torch_labels, fp32_labels, int8_labels = results.values()
    print()
    column = f" mIoU on {args.miou_split} |" if args.miou_split else ""
    print("| backend | images/s | vs PyTorch | vs ORT fp32 |" + column)
    print("|---|---|---|---|" + ("---|" if column else ""))
    for label, speed, miou in rows:
        cell = f" {100 * miou:.2f} |" if miou is not None else ""
        print(f"| {label} | {speed:.3f} | {speed / rows[0][1]:.2f}x | {speed / rows[1][1]:.2f}x |" + cell)
    print()
    print(f"labels: ORT fp32 = PyTorch on {100 * agreement(fp32_labels, torch_labels):.4f}% of the pixels; ")
    print(f"        ORT int8 = ORT fp32 on {100 * agreement(int8_labels, fp32_labels):.2f}% of the pixels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
