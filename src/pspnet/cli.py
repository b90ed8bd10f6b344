"""The ``pspnet`` command line: ``pspnet info`` and ``pspnet convert`` (more commands arrive with their issues).

Exit status: 0 on success, 1 when the command ran but failed (bad checkpoint, failed conversion), 2 on usage
errors (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import __version__
from .config import ConfigError
from .data.classes import DATASETS
from .errors import CheckpointError, ConversionError
from .models.pspnet import MODELS
from .models.resnet import STEMS


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _cmd_info(args: argparse.Namespace) -> int:
    from .introspect import summarize

    height, width = args.size
    with torch.device("meta"):
        model = MODELS[args.model](
            num_classes=args.classes, output_stride=args.output_stride, stem=args.stem, aux=not args.no_aux
        )
    summary = summarize(model, height, width)
    c = model.config
    stem = "-".join(str(w) for w in STEMS[c.stem])
    print(
        f"{args.model}: PSPNet on ResNet-{c.depth} ({c.stem} stem {stem}), output stride {c.output_stride}, "
        f"bins {'-'.join(map(str, c.bins))}, {c.num_classes} classes, align_corners={c.align_corners}"
    )
    print("\nTrainable parameters (BatchNorm buffers excluded):")
    for part, count in summary.parameters_by_part.items():
        print(f"  {part:<12} {count:>14,}")
    print(f"  {'total':<12} {summary.parameters:>14,}")
    if model.aux_head is not None:
        print(f"  {'without aux':<12} {summary.parameters_without_aux:>14,}   (the aux head is used in training only)")
    print(f"\nFeature shapes for an input of (1, 3, {height}, {width}):")
    for name, shape, reduction in summary.shapes:
        print(f"  {name:<26} {str(shape):<24} 1/{reduction}")
    print(f"\nFLOPs of one eval forward at {height}x{width}, batch 1 (FLOPs = 2 x multiply-adds):")
    for part, flops in summary.flops_by_part.items():
        print(f"  {part:<12} {flops / 1e9:>10.2f} GFLOP  ({100 * flops / summary.flops:.0f}%)")
    print(f"  {'total':<12} {summary.flops / 1e9:>10.2f} GFLOP")
    print("  counted by torch.utils.flop_counter on the meta device (convolutions and matrix products only)")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .weights.convert import convert

    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        print(f"error: DST {dst}: the output is a safetensors file; name it *.safetensors", file=sys.stderr)
        return 2
    if dst.exists() and not args.force:
        print(f"error: DST {dst} exists; pass --force to replace it", file=sys.stderr)
        return 2
    report = convert(args.source, args.src, dst, dataset=args.dataset)
    print(f"converted {args.src} (--from {args.source}) -> {report.destination}")
    print(f"  kind: {report.kind}; {report.loaded} tensors loaded")
    if report.kind == "backbone":
        print(f"  backbone: ResNet-{report.config['depth']}, {report.config['stem']} stem")
        print(f"  skipped: {', '.join(report.skipped) if report.skipped else 'nothing'} (the ImageNet classifier)")
    else:
        cfg = report.config
        print(
            f"  model: ResNet-{cfg['depth']} {cfg['stem']} stem, {cfg['num_classes']} classes, aux head "
            f"{'yes' if cfg['aux'] else 'no'}, align_corners={cfg['align_corners']}, "
            f"contract_dilation={cfg['contract_dilation']}"
        )
        if report.dataset is None:
            print("  classes: unnamed (class_0..); pass --dataset to attach names and colours")
        elif report.dataset_inferred:
            print(f"  classes: {report.dataset} (assumed from the class count; pass --dataset to choose)")
        else:
            print(f"  classes: {report.dataset}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pspnet",
        description="PSPNet (Pyramid Scene Parsing Network) for semantic segmentation: build, inspect and convert "
        "models.",
        epilog="Run 'pspnet COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"pspnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = commands.add_parser(
        "info",
        help="print parameters, FLOPs, output stride and feature shapes of a model",
        description="Print trainable parameters, FLOPs (2 x multiply-adds, counted on the meta device: no weights "
        "are allocated), output stride and the feature shape of every stage for one input size.",
    )
    info.add_argument("--model", choices=sorted(MODELS), default="pspnet50", help="model name (default: pspnet50)")
    info.add_argument(
        "--size", nargs=2, type=_positive, default=(473, 473), metavar=("H", "W"), help="input size (default: 473 473)"
    )
    info.add_argument("--classes", type=_positive, default=150, help="number of classes (default: 150, ADE20K)")
    info.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=8, help="output stride (default: 8)")
    info.add_argument("--stem", choices=sorted(STEMS), default="deep", help="ResNet stem (default: deep, official)")
    info.add_argument("--no-aux", action="store_true", help="build without the auxiliary head")
    info.set_defaults(func=_cmd_info)

    conv = commands.add_parser(
        "convert",
        help="convert a published checkpoint into a pspnet model or backbone file",
        description="Convert a checkpoint from another code base into a pspnet safetensors file. Full models "
        "('official', 'mmseg') become model files that 'pspnet.load_model' reads; ImageNet ResNets "
        "('official-backbone', 'torchvision' also for timm resnet*) become backbone files for training "
        "initialisation. Every key must be used or the conversion fails naming the unknown and missing keys. "
        "Pickled sources are read with torch.load(weights_only=True): nothing but tensors is unpickled.",
    )
    conv.add_argument(
        "--from",
        dest="source",
        required=True,
        choices=["official", "official-backbone", "mmseg", "torchvision"],
        help="layout of SRC: official PSPNet, official deep-stem ImageNet ResNet, mmseg PSPNet, or "
        "torchvision/timm ImageNet ResNet",
    )
    conv.add_argument("src", metavar="SRC", help="checkpoint to convert (.pth, .pt, .tar or .safetensors)")
    conv.add_argument("dst", metavar="DST", help="output file (*.safetensors)")
    conv.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        help="attach this data set's class names, palette and inference settings (its class count must match); "
        "without it, a class count that matches one known data set selects it",
    )
    conv.add_argument("--force", action="store_true", help="replace DST if it exists")
    conv.set_defaults(func=_cmd_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (CheckpointError, ConversionError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
