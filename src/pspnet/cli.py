"""The ``pspnet`` command line: ``demo``, ``train``, ``eval``, ``predict``, ``convert``, ``export``, ``serve``,
``info``, ``bench`` and ``data``.

Exit status: 0 on success, 1 when the command ran but failed (bad checkpoint, failed conversion, bad input
files), 2 on usage errors (argparse's convention), 130 / 143 when SIGINT / SIGTERM stopped it (training saves its
last step first).

Every failure is one line on stderr, ``error: ...``, naming the file or argument at fault; no Python traceback
is shown unless ``--debug`` (or the environment variable ``PSPNET_DEBUG=1``) asks for it, for bug reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import heap
from .constants import __version__
from .data.classes import DATASETS
from .data.cli_data import add_data_commands, positive_int
from .data.datasets import DATASET_READERS
from .errors import ConfigError, InputError, TrainingStopped, show_warning_line
from .inference import DEFAULT_MAX_PIXELS, MODES, PRECISION_CHOICES
from .models.build import MODELS, NETWORKS, build_model
from .models.config import ARCHITECTURES, ModelConfig, check_model_config
from .models.resnet import STEMS
from .weights.convert import SOURCES

if TYPE_CHECKING:
    from .export import SizeCheck


def _cmd_info(args: argparse.Namespace) -> int:
    from .introspect import summarize

    height, width = args.size
    architecture = next(a for a in NETWORKS if args.model.removeprefix(a).isdigit())
    config = ModelConfig(
        num_classes=args.classes,
        architecture=architecture,
        depth=int(args.model.removeprefix(architecture)),
        stem=args.stem,
        output_stride=args.output_stride,
        aux=not args.no_aux,
        skip_decoder=args.skip_decoder,
    )
    try:
        check_model_config(config, "", prefix="--")
    except ConfigError as error:  # name the option as typed: "--output-stride must be 32 for unet ..."
        raise ConfigError(str(error).replace("--output_stride", "--output-stride").replace("_", "-", 1)) from None
    with torch.device("meta"):
        model = build_model(config)
    summary = summarize(model, height, width)
    c = model.config
    stem = "-".join(str(w) for w in STEMS[c.stem])
    head = f", bins {'-'.join(map(str, c.bins))}" if architecture == "pspnet" else ""
    head += " + stride-4 skip decoder" if c.skip_decoder else ""
    print(
        f"{args.model}: {ARCHITECTURES[architecture].title} on ResNet-{c.depth} ({c.stem} stem {stem}), output "
        f"stride {c.output_stride}{head}, {c.num_classes} classes, align_corners={c.align_corners}"
    )
    print("\nTrainable parameters (BatchNorm buffers excluded):")
    for part, count in summary.parameters_by_part.items():
        print(f"  {part:<12} {count:>14,}")
    print(f"  {'total':<12} {summary.parameters:>14,}")
    if model.aux_head is not None:
        print(f"  {'without aux':<12} {summary.parameters_without_aux:>14,}   (the aux head is used in training only)")
    print(f"\nFeature shapes for an input of (1, 3, {height}, {width}):")
    for name, shape, reduction in summary.shapes:
        print(f"  {name:<26} {shape!s:<24} 1/{reduction}")
    print(f"\nFLOPs of one eval forward at {height}x{width}, batch 1 (FLOPs = 2 x multiply-adds):")
    for part, flops in summary.flops_by_part.items():
        print(f"  {part:<12} {flops / 1e9:>10.2f} GFLOP  ({100 * flops / summary.flops:.0f}%)")
    print(f"  {'total':<12} {summary.flops / 1e9:>10.2f} GFLOP")
    print("  counted by torch.utils.flop_counter on the meta device (convolutions and matrix products only)")
    return 0


def _what(text: str) -> tuple[str, ...]:
    from .bench import parse_what

    try:
        return parse_what(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _cmd_bench(args: argparse.Namespace) -> int:
    from .atomic import atomic_open
    from .bench import WHAT, bench_precision, format_report, run_bench
    from .inference import resolve_device
    from .runs import load_model

    if args.model is not None and (args.arch is not None or args.classes is not None):
        print("error: --arch and --classes build a model with random weights; MODEL brings its own", file=sys.stderr)
        return 2
    if args.json is not None and Path(args.json).is_dir():
        print(f"error: --json {args.json} is a folder; name the file to write", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    try:
        bench_precision(args.precision, device)
    except ValueError as error:  # fp16 without CUDA
        print(f"error: --{error}", file=sys.stderr)
        return 2
    if args.model is not None:
        model = load_model(args.model, device=device)
        name = str(args.model)
    else:
        arch = args.arch or "pspnet50"
        model = MODELS[arch](num_classes=args.classes or 150)
        name = f"{arch} (random weights)"

    def progress(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    report = run_bench(
        model,
        device=device,
        precision=args.precision,
        size=tuple(args.size),
        batch=args.batch,
        train_size=tuple(args.train_size),
        train_batch=args.train_batch,
        train_channels_last=args.train_channels_last,
        train_compile=args.train_compile,
        what=args.what or WHAT,
        repeat=args.repeat,
        name=name,
        progress=progress,
    )
    print(format_report(report))
    if args.json is not None:
        with atomic_open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
        print(f"wrote {args.json}")
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


def _size_line(check: SizeCheck) -> str:
    """One row of the export check: the batch and size, the logit (or probability) difference, the labels."""
    parts = []
    if check.logit_rdiff is not None:
        parts.append(f"largest logit difference {check.logit_rdiff:.2e} of the largest logit")
    if check.proba_diff is not None:
        parts.append(f"largest probability difference {check.proba_diff:.2e} (allowed {check.proba_tolerance:.2e})")
    parts.append(f"labels equal on {100 * check.label_agreement:.4f}% of {check.pixels:,} pixels")
    if check.decided_pixels is not None:
        decided = "-" if check.decided_agreement is None else f"{100 * check.decided_agreement:.4f}%"
        parts.append(f"on {decided} of the {check.decided_pixels:,} clearly decided")
    where = f"{check.batch} x {check.height}x{check.width}" + (f" ({check.variant})" if check.variant else "")
    return f"  {where:<{31 if check.variant else 14}}" + ", ".join(parts)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import require_serve

    require_serve()  # before the model is loaded: says how to install the 'serve' extra
    from .runs import resolve_model_path
    from .segmenter import Segmenter
    from .serve.app import ServeConfig, run_server

    config = ServeConfig(max_bytes=args.max_bytes, batch=args.batch, queue=args.queue, timeout=args.timeout)
    source = resolve_model_path(args.model)
    segmenter = Segmenter.from_checkpoint(
        source, device=args.device, precision=args.precision, max_batch=args.batch, max_pixels=args.max_pixels
    )
    print(
        f"serving {source} ({segmenter.num_classes} classes, {segmenter.settings.precision}: "
        f"{segmenter.precision_reason}) on http://{args.host}:{args.port}/ (page), /v1/segment, /v1/model, "
        f"/healthz, /metrics; batch {args.batch}, queue {args.queue}, timeout {args.timeout:g} s",
        file=sys.stderr,
        flush=True,
    )
    run_server(segmenter, config, host=args.host, port=args.port)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import (
        INPUT_KINDS,
        INT8_DECIDED_MARGIN,
        INT8_MIN_LABEL_AGREEMENT,
        LOGIT_RTOL,
        MIN_LABEL_AGREEMENT,
        OUTPUT_KINDS,
        PRECISIONS,
        SUFFIXES,
        calibration_images,
        export_model,
        require_onnx,
    )
    from .runs import load_model, resolve_model_path
    from .weights import make_card

    out = Path(args.out)
    suffix = SUFFIXES[args.format]
    if out.suffix != suffix:
        print(f"error: --out {out}: the {args.format} file must be named *{suffix}", file=sys.stderr)
        return 2
    if out.is_dir():
        print(f"error: --out {out} is a folder; name the file to write", file=sys.stderr)
        return 2
    if out.exists() and not args.force:
        print(f"error: --out {out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    if args.opset is not None and args.format != "onnx":
        print(f"error: --opset is an ONNX setting; --format {args.format} has none", file=sys.stderr)
        return 2
    if args.int8 and args.format != "onnx":
        print(f"error: --int8 quantises ONNX files; --format {args.format} has no int8", file=sys.stderr)
        return 2
    if args.int8 != (args.calib is not None):
        print("error: --int8 and --calib DIR go together: int8 is calibrated on images of DIR", file=sys.stderr)
        return 2
    if args.fp16 and args.format != "onnx":
        print(f"error: --fp16 writes a float16 ONNX graph; --format {args.format} has no fp16", file=sys.stderr)
        return 2
    if args.fp16 and args.int8:
        print(
            "error: --fp16 and --int8 are two precisions of the file (float16 for GPU runtimes, int8 for CPUs); "
            "choose one",
            file=sys.stderr,
        )
        return 2
    if args.format == "onnx":
        require_onnx()  # before the model is loaded: says how to install the 'onnx' extra
    source = resolve_model_path(args.model)
    model = load_model(source)
    static = tuple(args.static) if args.static else None
    calibration = None
    if args.int8:  # at the size the file will see: --static's, else the crop of sliding windows
        card = model.card if model.card is not None else make_card(model.config)
        calibration = calibration_images(args.calib, static or card.crop_size)
    print(f"exporting {source} to {out} ({args.format}) and checking it...", file=sys.stderr, flush=True)
    report = export_model(
        model,
        out,
        format=args.format,
        input_kind=args.input,
        output_kind=args.output,
        static_size=static,
        opset=args.opset,
        calibration=calibration,
        precision="fp16" if args.fp16 else "fp32",
    )
    meta, check = report.metadata, report.check
    opset = f", opset {report.opset}" if report.opset is not None else ""
    print(
        f"exported {source} -> {report.path} ({report.format}{opset}, {report.bytes / 1e6:.1f} MB, "
        f"{report.export_seconds:.1f} s; BatchNorm folded, {'float16' if args.fp16 else 'float32'})"
    )
    if args.fp16:
        print(f"  inside: {PRECISIONS['fp16']}")
    if static is None:
        low = json.loads(meta["min_size"])
        sides = "dynamic batch, height and width" + (f" (from {low[0]}x{low[1]})" if low else "")
    else:
        sides = f"dynamic batch, static {static[0]}x{static[1]}"
    print(f"  input:  {INPUT_KINDS[args.input]}; {sides}")
    print(f"  output: {OUTPUT_KINDS[args.output]} (K = {model.num_classes})")
    print(f"  metadata: {', '.join(meta)}")
    print(
        f"checked with {check.runtime} against eager PyTorch (float32, random images) in {report.check_seconds:.1f} s:"
    )
    if args.fp16:
        print(
            "  (run as written, where ONNX Runtime's CPU provider computes the float16 operators in float32, and with "
            "every float16 tensor rounded as a GPU runtime stores it: 'float16 emulated')"
        )
    for size in check.sizes:
        print(_size_line(size))
    if args.fp16:
        print(
            f"passed: logits within {check.logit_rtol:.3g} of the largest logit (the float16 bound: 4 x 2^-11 per "
            f"layer, plus the float32 file's {LOGIT_RTOL:.0e}), labels equal on every pixel whose two best logits are "
            "more than twice that apart"
        )
    else:
        print(
            f"passed: logits within {LOGIT_RTOL:.0e} of the largest logit, labels equal on at least "
            f"{100 * MIN_LABEL_AGREEMENT:g}% of the pixels"
        )
    int8 = report.int8
    if int8 is not None:
        print(
            f"quantised to int8 in {report.quantize_seconds:.1f} s ({meta['quantization']} from {args.calib}, "
            f"resized to {calibration.shape[1]}x{calibration.shape[2]}); checked on those images against eager:"
        )
        if int8.logit_rdiff is not None:
            print(f"  largest logit difference {int8.logit_rdiff:.2e} of the largest logit")
        print(f"  labels equal on {100 * int8.label_agreement:.2f}% of {int8.pixels:,} pixels")
        decided = "none" if int8.decided_agreement is None else f"{100 * int8.decided_agreement:.2f}%"
        print(
            f"  labels equal on {decided} of the {int8.decided_pixels:,} clearly decided pixels (two best logits "
            f"{100 * INT8_DECIDED_MARGIN:g}% of the largest apart; at least {100 * INT8_MIN_LABEL_AGREEMENT:g}% "
            "needed)"
        )
    return 0


def _device(text: str) -> str:
    from .inference import resolve_device

    try:
        resolve_device(text)
    except RuntimeError:  # torch.device() does not know the name
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (auto, cpu, cuda, cuda:1, mps)") from None
    except ValueError as error:  # a CUDA device on a machine without CUDA
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


_MAX_PIXELS_HELP = (
    f"the most pixels (height x width) of any image inference makes: the input, each scale's resized image and "
    f"the canvas padded for sliding windows (default: {DEFAULT_MAX_PIXELS} = 2**24, 16.8 MP); settings that could "
    f"exceed it (the base size at the largest scale, counted as a square) are a usage error, a larger image fails"
)


def _base_size(text: str) -> int | str:
    if text == "native":
        return text
    return positive_int(text)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .data.datasets import build_dataset
    from .engine.evaluate import evaluate, format_table, write_report
    from .inference import InferenceSettings, resolve_device, resolve_precision
    from .runs import load_model

    device = resolve_device(args.device)
    model = load_model(args.checkpoint, device=device)
    dataset = build_dataset(args.dataset, args.root, args.split).select(include=args.include, exclude=args.exclude)
    card, info = model.card, dataset.info
    # the model card's protocol sizes when it was made for this data set, else the data set's own
    made_here = card is not None and card.dataset == info.name
    crop, base = (card.crop_size, card.base_size) if made_here else (info.crop_size, info.base_size)
    if args.base_size is not None:  # the flag wins; "native" keeps each image's size
        base = None if args.base_size == "native" else args.base_size
    options = {
        "mode": args.mode,
        "stride_rate": args.stride_rate,
        "flip": args.flip or None,
        "precision": resolve_precision(args.precision, device)[0] if args.precision else None,
    }
    try:
        settings = InferenceSettings(
            crop_size=tuple(args.crop or crop),
            base_size=base,
            scales=tuple(args.scales or (1.0,)),
            max_pixels=args.max_pixels,
            **{key: value for key, value in options.items() if value is not None},
        )
    except ValueError as error:  # sizes beyond --max-pixels, scales that round to nothing
        print(f"error: inference settings: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    if args.save_pred and out is None:
        print("error: --save-pred needs --out DIR", file=sys.stderr)
        return 2
    if out is not None:  # made now: a folder that cannot be made fails before the evaluation, not after it
        out.mkdir(parents=True, exist_ok=True)
    print(
        f"evaluating {args.checkpoint} on {args.dataset}/{args.split} ({len(dataset)} images"
        f"{f', first {args.limit}' if args.limit else ''}) on {device}: mode {settings.mode}, crop "
        f"{settings.crop_size[0]}x{settings.crop_size[1]}, base size {settings.base_size or 'native'}, scales "
        f"{list(settings.scales)}, flip {settings.flip}, {settings.precision}",
        file=sys.stderr,
    )
    report = evaluate(
        model,
        dataset,
        settings,
        device=device,
        limit=args.limit,
        pred_dir=out / "predictions" if args.save_pred and out else None,
        workers=args.workers,
    )
    report["settings"]["checkpoint"] = str(args.checkpoint)
    print(format_table(report))
    if out is not None:
        written = write_report(report, out)
        print(
            f"wrote {', '.join(str(p) for p in written)}" + (f" and {out / 'predictions'}/" if args.save_pred else "")
        )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from .engine import distributed
    from .engine.config import load_train_config
    from .engine.train import NonFiniteLossError, train

    config_path = args.config
    if config_path is None:
        if args.resume in (None, "latest"):
            print(
                "error: give CONFIG.yaml, or --resume RUN_DIR to continue a run with its saved config", file=sys.stderr
            )
            return 2
        config_path = str(Path(args.resume) / "config.yaml")
        if not Path(config_path).is_file():
            config_path = str(Path(args.resume).parent / "config.yaml")
    config = load_train_config(config_path, args.set)
    resume = None
    if args.out:
        out = Path(args.out)
    elif args.resume not in (None, "latest"):  # continue in the run directory itself
        given = Path(args.resume)
        out = given.parent if (given / "state.safetensors").is_file() else given
    else:
        out = Path("runs") / Path(config_path).stem
    if args.resume is not None:
        resume = out if args.resume == "latest" else args.resume
    if not args.quiet:
        print(f"# resolved config ({config_path}{' + --set ' + ' '.join(args.set) if args.set else ''})")
        print(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
        print(f"# run directory: {out}" + (f" (resuming from {resume})" if resume else ""), flush=True)
    try:
        final = train(config, out, resume=resume, progress=not args.quiet)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TrainingStopped as stopped:  # SIGTERM / SIGINT: the last completed step is saved (rank 0 reports it)
        if stopped.is_main:
            if stopped.checkpoint is not None:
                how = "saved" if stopped.saved else "its checkpoint is"
                line = f"after iteration {stopped.iteration}: {how} {stopped.checkpoint}"
            else:
                line = "before a training step completed: nothing new to save"
            print(f"stopped by {stopped.signal_name} {line}", file=sys.stderr)
            if stopped.checkpoint is None and resume is not None and Path(resume).resolve() != out.resolve():
                print(f"continue from {resume} by running the same command again", file=sys.stderr)
            else:
                where = " (on every node)" if distributed.node_count() > 1 else ""
                command = distributed.launch_command(["train", "--resume", str(out)])
                print(f"resume with{where}: {command}", file=sys.stderr, flush=True)
        return stopped.exit_code
    print(
        f"done: model {final / 'model.safetensors'}; best {out / 'best'} (if validated); log {out / 'log.jsonl'}; "
        f"curve {out / 'curve.png'}"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    out = Path(args.out)
    try:
        result = run_demo(out, force=args.force, ablation=args.ablation, compare=args.compare)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    line = f"mIoU on the validation scenes: {100 * result['mIoU']:.1f}"
    if "mIoU_no_ppm" in result:
        gap = 100 * (result["mIoU"] - result["mIoU_no_ppm"])
        line += f"; without pyramid pooling: {100 * result['mIoU_no_ppm']:.1f} (gap {gap:+.1f} points)"
    print(line)
    compared = f"; every model's in {result['comparison']}" if "comparison" in result else ""
    print(
        f"demo finished in {result['seconds']['total']:.0f} s. Open {result['index']} in a browser; the model is "
        f"{out / 'run' / 'best' / 'model.safetensors'}, metrics in {out / 'metrics.json'}{compared}."
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import UnsafeOutputs, load_palette, predict_inputs
    from .segmenter import Segmenter

    if not 0.0 <= args.alpha <= 1.0:
        print(f"error: --alpha must be within 0..1, got {args.alpha}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} exists and is not a folder", file=sys.stderr)
        return 2
    try:
        segmenter = Segmenter.from_checkpoint(
            args.checkpoint,
            device=args.device,
            precision=args.precision,
            mode=args.mode,
            scales=args.scales or (1.0,),
            flip=args.flip,
            max_batch=args.batch,
            max_pixels=args.max_pixels,
        )
    except InputError:  # a bad file: one line and status 1, by main()
        raise
    except ValueError as error:  # the inference settings: sizes beyond --max-pixels, scales that round to nothing
        print(f"error: {error}", file=sys.stderr)  # "inference settings for CHECKPOINT: ..."
        return 2
    palette = None
    if args.palette is not None:
        try:
            palette = load_palette(args.palette, segmenter.num_classes)
        except ValueError as error:
            print(f"error: --palette: {error}", file=sys.stderr)
            return 2
    s = segmenter.settings
    print(
        f"predicting with {args.checkpoint} on {segmenter.device} ({segmenter.backend}): {segmenter.num_classes} classes, mode {s.mode}, "
        f"crop {s.crop_size[0]}x{s.crop_size[1]}, base size {s.base_size or 'native'}, scales {list(s.scales)}, "
        f"flip {s.flip}, {s.precision} ({segmenter.precision_reason}), batch {args.batch}",
        file=sys.stderr,
    )
    try:
        report = predict_inputs(
            segmenter,
            args.inputs,
            out,
            overlay=args.overlay,
            alpha=args.alpha,
            palette=palette,
            save_proba=args.save_proba,
            batch=args.batch,
            progress=not args.no_progress,
        )
    except UnsafeOutputs as error:  # refused before anything was written
        print(f"error: {error}", file=sys.stderr)
        return 2
    done = report.images + report.frames
    videos = f" and {report.videos} video(s) ({report.frames} frames)" if report.videos else ""
    print(
        f"predicted {report.images} image(s){videos} in {report.seconds:.1f} s "
        f"({done / max(report.seconds, 1e-9):.2f} img/s); outputs in {out}/, class shares in {report.csv_path}"
    )
    if report.failures:
        print(f"error: {len(report.failures)} input(s) failed and were skipped:", file=sys.stderr)
        for failure in report.failures:
            print(f"  {failure.message}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pspnet",
        description="PSPNet (Pyramid Scene Parsing Network) for semantic segmentation: train, evaluate, predict, "
        "convert and inspect models, check data sets. Start with 'pspnet demo'.",
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
    info.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="pspnet50",
        metavar="NAME",
        help="architecture and ResNet depth: pspnetD, deeplabv3plusD or unetD with D in 18, 34, 50, 101, 152 "
        "(default: pspnet50)",
    )
    info.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        default=(473, 473),
        metavar=("H", "W"),
        help="input size (default: 473 473)",
    )
    info.add_argument("--classes", type=positive_int, default=150, help="number of classes (default: 150, ADE20K)")
    info.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16, 32),
        help="output stride (default: the architecture's: 8, U-Net 32)",
    )
    info.add_argument("--stem", choices=sorted(STEMS), default="deep", help="ResNet stem (default: deep, official)")
    info.add_argument("--no-aux", action="store_true", help="build without the auxiliary head")
    info.add_argument(
        "--skip-decoder",
        action="store_true",
        help="PSPNet only: add DeepLab v3+'s stride-4 decoder after the pyramid pooling head",
    )
    info.set_defaults(func=_cmd_info)

    bench = commands.add_parser(
        "bench",
        help="measure this machine: convolution ceiling, forward, training step, test protocol, data pipeline",
        description="Measure, in one run on this machine: the ceiling (best sustained GFLOP/s of large 3x3 "
        "convolutions, per precision and memory layout; FLOPs = 2 x Cin x Cout x 9 x Hout x Wout x N), the eval "
        "forward of the model (seconds, GFLOP counted by torch.utils.flop_counter, GFLOP/s, % of the ceiling), one "
        "training step through the engine's train_step in a process of its own (seconds, GFLOP/s from 3 x the "
        "training-mode forward FLOPs, peak memory), the official multi-scale + flip test protocol on one synthetic "
        "photo (seconds per image) and the paper's training augmentation (images/s). In bf16 or fp16 the forward "
        "runs a copy of the model cast to that dtype (channels_last); the training step and the protocol use "
        "autocast. Times are the minimum over --repeat runs after a warm-up. Prints a table; --json writes every "
        "number. On a CPU the default pspnet50 run takes minutes (the protocol runs dozens of forwards per image).",
    )
    bench.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="model file (.safetensors) or training run directory; its card gives the protocol's crop and base "
        "size (default: --arch with random weights)",
    )
    bench.add_argument(
        "--arch",
        choices=sorted(MODELS),
        metavar="NAME",
        help="model built with random weights: pspnetD, deeplabv3plusD or unetD with D in 18, 34, 50, 101, 152 "
        "(default: pspnet50)",
    )
    bench.add_argument("--classes", type=positive_int, help="classes of the --arch model (default: 150, ADE20K)")
    bench.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        default=(512, 512),
        metavar=("H", "W"),
        help="input size of the forward, the protocol's photo and the augmented images (default: 512 512)",
    )
    bench.add_argument("--batch", type=positive_int, default=1, help="batch of the forward (default: 1)")
    bench.add_argument(
        "--train-size",
        nargs=2,
        type=positive_int,
        default=(473, 473),
        metavar=("H", "W"),
        help="input size of the training step, and the augmentation's crop (default: 473 473)",
    )
    bench.add_argument("--train-batch", type=positive_int, default=2, help="batch of the training step (default: 2)")
    bench.add_argument(
        "--train-channels-last", action="store_true", help="the training step in channels_last (config channels_last)"
    )
    bench.add_argument(
        "--train-compile",
        action="store_true",
        help="the training step's forward through torch.compile (config compile)",
    )
    bench.add_argument(
        "--what",
        type=_what,
        metavar="LIST",
        help="what to measure, comma-separated: ceiling,forward,train,protocol,data (default: all five)",
    )
    bench.add_argument(
        "--precision",
        choices=list(PRECISION_CHOICES),
        default="auto",
        help="auto: bf16 where the device computes it natively, else fp32; fp16 only on CUDA (default: auto)",
    )
    bench.add_argument(
        "--repeat", type=positive_int, default=3, help="timed runs of each measurement after its warm-up (default: 3)"
    )
    bench.add_argument(
        "--device", type=_device, default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ..."
    )
    bench.add_argument("--json", metavar="OUT", help="also write every number to this JSON file")
    bench.set_defaults(func=_cmd_bench)

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
        choices=list(SOURCES),
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

    ev = commands.add_parser(
        "eval",
        help="evaluate a model file on a data set (mIoU, mAcc, allAcc, boundary IoU)",
        description="Evaluate a model file (or a training run directory) on a data set split: one confusion matrix "
        "over the whole split gives mIoU, mAcc, allAcc and per-class IoU/accuracy; boundary IoU (d = 2% of the "
        "image diagonal) shows how sharp the edges are. Defaults come from the checkpoint's metadata (crop and base "
        "size) when it was made for this data set, else from the data set. Official single-scale protocol: "
        "--mode slide --flip; multi-scale: add --scales 0.5 0.75 1.0 1.25 1.5 1.75.",
    )
    ev.add_argument("checkpoint", metavar="CHECKPOINT", help="model file (.safetensors) or training run directory")
    ev.add_argument("--dataset", required=True, choices=sorted(DATASET_READERS), help="data set reader")
    ev.add_argument("--root", required=True, help="data set root folder (see docs/data.md for the layouts)")
    ev.add_argument("--split", default="val", help="split to evaluate (default: val)")
    ev.add_argument(
        "--mode",
        choices=MODES,
        help="whole image, sliding windows, or auto: windows only when a side exceeds the crop (default: auto)",
    )
    ev.add_argument(
        "--crop", nargs=2, type=positive_int, metavar=("H", "W"), help="sliding-window size (default: model's)"
    )
    ev.add_argument("--stride-rate", type=_fraction, help="window step as a fraction of the crop (default: 2/3)")
    ev.add_argument(
        "--base-size",
        type=_base_size,
        help="long side in pixels at scale 1.0, or 'native' to keep the image size (default: model's)",
    )
    ev.add_argument("--scales", nargs="+", type=_positive_float, help="scales to average (default: 1.0)")
    ev.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N", help=_MAX_PIXELS_HELP)
    ev.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    ev.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        help="inference precision (default: fp32, so that published protocols give the same numbers on every machine; "
        "auto: bf16 where the device computes it natively)",
    )
    ev.add_argument("--limit", type=positive_int, help="evaluate only the first N images")
    ev.add_argument("--include", nargs="+", default=[], metavar="PREFIX", help="only images whose name starts so")
    ev.add_argument("--exclude", nargs="+", default=[], metavar="PREFIX", help="skip images whose name starts so")
    ev.add_argument("--save-pred", action="store_true", help="save predicted label maps as palette PNGs under --out")
    ev.add_argument("--out", help="write metrics.json, confusion.png and per_class_iou.png here")
    ev.add_argument(
        "--device", type=_device, default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ..."
    )
    ev.add_argument("--workers", type=_non_negative, default=2, help="image-decoding worker processes (default: 2)")
    ev.set_defaults(func=_cmd_eval)

    tr = commands.add_parser(
        "train",
        help="train a PSPNet from a YAML config (one CPU/GPU, or many processes under torchrun)",
        description="Train with the official recipe (SGD 0.9, poly 0.9, 10x head LR, main + 0.4 aux loss, the "
        "paper's augmentation) from a flat YAML config (see configs/). Checkpoints go to OUT/ckpt_N/ (model + "
        "training state, written atomically; the last keep_last kept) and OUT/best/ (best validation mIoU). "
        "Multi-GPU / multi-node: torchrun --nproc_per_node N -m pspnet.cli train CONFIG.yaml. On SIGTERM or "
        "SIGINT the run saves its last completed step, prints the resume command and exits with 143 or 130.",
    )
    tr.add_argument("config", nargs="?", metavar="CONFIG.yaml", help="flat YAML config (optional with --resume RUN)")
    tr.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    tr.add_argument("--out", help="run directory (default: runs/CONFIG_NAME)")
    tr.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="RUN_DIR_OR_CKPT",
        help="continue exactly from a run directory's latest checkpoint (default: --out) or a ckpt_N directory",
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bar or config print-out")
    tr.set_defaults(func=_cmd_train)

    demo = commands.add_parser(
        "demo",
        help="train, evaluate and show a small PSPNet on synthetic scenes (about 5 minutes on 2 CPU cores)",
        description="Generate synthetic lake/meadow scenes whose classes depend on global context, train a small "
        "PSPNet on the CPU, evaluate it, predict held-out scenes and write an index.html report.",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--force", action="store_true", help="replace an earlier demo in --out")
    demo.add_argument(
        "--ablation",
        action="store_true",
        help="also train PSPNet without pyramid pooling, for as many iterations, and compare (about twice as long)",
    )
    demo.add_argument(
        "--compare",
        action="store_true",
        help="train every architecture on the same scenes, recipe, seed and iterations: PSPNet, PSPNet without "
        "pyramid pooling, PSPNet + skip decoder, DeepLab v3+ and U-Net, and show their metrics, sizes, training "
        "times and predictions side by side (about 20-25 minutes on 2 CPU cores; the expected time is printed at "
        "the start and after each model). It includes --ablation's model: --ablation with --compare is --compare",
    )
    demo.set_defaults(func=_cmd_demo)

    pr = commands.add_parser(
        "predict",
        help="segment images, folders, globs and videos with a model file (or an .onnx file on ONNX Runtime)",
        description="Segment images and videos with a model file (or a training run directory, or an .onnx file run "
        "by ONNX Runtime: see CHECKPOINT). INPUTs are files, "
        "folders (searched recursively), globs (quote them: expanded here, '**' included) and videos (.mp4 .avi "
        ".mov). Under --out, outputs mirror each input's path relative to its folder or glob base: NAME.png (palette "
        "PNG of class ids), NAME_color.png, with --overlay NAME_overlay.png (blend and legend), with --save-proba "
        "NAME_proba.npy (float16, classes x H x W); a video gives NAME_overlay.mp4|avi|mov. predictions.csv lists "
        "each image's class pixel shares (a cell starting with = + - @ gets a leading ' so spreadsheets show text, "
        "not a formula). Names never leave --out: '..', '.' and root parts of a mirrored path are dropped. Before "
        "any work, a run where an output would be an input file or be written outside --out (a symlinked folder) "
        "is refused (exit 2, nothing written); stems that clash (a.jpg, a.png) keep their suffix (a_jpg, a_png); "
        "when two inputs would still write one path (compared case-insensitively, e.g. x.png's x_color.png and an "
        "input x_color.png), the later input is reported and skipped. Any input that cannot be read (FIFOs and "
        "other non-regular files included), predicted or written is reported by name and skipped, the others are "
        "still predicted and predictions.csv is always written; the exit status is 0 only when every input "
        "succeeded.",
    )
    pr.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="model file (.safetensors), training run directory, or an ONNX file (.onnx, run by ONNX Runtime on the "
        "CPU in fp32, its classes and colours from its metadata) exported with 'pspnet export MODEL --out FILE.onnx "
        "--input normalized --output logits' (--int8 too)",
    )
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video file, folder, or glob pattern")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png: blend with a legend")
    pr.add_argument("--alpha", type=float, default=0.5, help="weight of the colours in overlays (default: 0.5)")
    pr.add_argument(
        "--palette",
        metavar="NAME_OR_FILE",
        help=f"colours: a data set's ({', '.join(sorted(DATASETS))}) or a file (JSON list of [r, g, b], or one "
        "'r g b' per line); its class count must match the model's (default: the checkpoint's)",
    )
    pr.add_argument("--save-proba", action="store_true", help="also write NAME_proba.npy (float16 probabilities)")
    pr.add_argument(
        "--mode",
        choices=MODES,
        default="auto",
        help="whole image, sliding windows, or auto: windows only when a side exceeds the checkpoint's crop after "
        "base-size resizing (default: auto)",
    )
    pr.add_argument("--scales", nargs="+", type=_positive_float, help="scales to average (default: 1.0)")
    pr.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N", help=_MAX_PIXELS_HELP)
    pr.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    pr.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="inference precision; auto (the default): bf16 where the device computes it natively (CUDA, CPUs with "
        "AVX512_BF16 or AMX), else fp32; bf16 elsewhere is emulated and slow (a warning says so); an .onnx file "
        "runs in fp32 only",
    )
    pr.add_argument(
        "--device",
        type=_device,
        default="auto",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ...; an .onnx file runs on the CPU",
    )
    pr.add_argument("--batch", type=positive_int, default=4, help="images of one size per forward pass (default: 4)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_predict)

    _add_export_command(commands)
    _add_serve_command(commands)
    add_data_commands(commands)
    _add_debug_flag(parser, top=True)
    return parser


def _add_export_command(commands: argparse._SubParsersAction) -> None:
    from .export import (
        CHECK_SIZES,
        FORMATS,
        INPUT_KINDS,
        INT8_DECIDED_MARGIN,
        INT8_MIN_LABEL_AGREEMENT,
        MAX_CALIBRATION_IMAGES,
        OUTPUT_KINDS,
        SUFFIXES,
    )

    sizes = " and ".join(f"{b} x {h}x{w}" for b, h, w in CHECK_SIZES)
    ex = commands.add_parser(
        "export",
        help="export a model for deployment (ONNX, TorchScript, ExportedProgram), checked against PyTorch",
        description="Export a model file (or a training run directory) as one file a deployer can run with nothing "
        "else: the model with BatchNorm folded, float32 (float16 with --fp16), with the input normalisation inside "
        "(by default), its "
        "classes, palette, normalisation, crop and base size, architecture, input and output kinds and pspnet "
        "version in its metadata (an ONNX file's metadata_props; a TorchScript or ExportedProgram archive's "
        "pspnet_metadata.json). Batch, height and width are dynamic unless --static. The file is written under a "
        f"temporary name and checked before it is put in place: run by its runtime (ONNX Runtime, or reloaded by "
        f"torch) on random images (batch x height x width: {sizes}, sizes the pyramid bins do not divide; with "
        "--static that size) against eager PyTorch; it must give logits within 1e-4 of the largest logit and the "
        "same labels on at least 99.99% of the pixels (--fp16: see there), else the command fails (exit 1) and "
        "writes nothing. "
        "ONNX needs the 'onnx' extra: pip install 'pspnet[onnx]'.",
    )
    ex.add_argument("model", metavar="MODEL", help="model file (.safetensors) or training run directory")
    ex.add_argument("--out", required=True, metavar="FILE", help="the file to write (*.onnx, *.pt, *.pt2 by --format)")
    ex.add_argument(
        "--format",
        choices=list(FORMATS),
        default="onnx",
        help="file format and the runtimes it serves (default: onnx): "
        + "; ".join(f"{name} (*{SUFFIXES[name]}): {runtimes}" for name, runtimes in FORMATS.items()),
    )
    ex.add_argument(
        "--opset", type=positive_int, metavar="N", help="ONNX opset (default: torch.onnx's, 20 in torch 2.13)"
    )
    ex.add_argument(
        "--input",
        choices=list(INPUT_KINDS),
        default="uint8-rgb",
        help="; ".join(f"{name}: {text}" for name, text in INPUT_KINDS.items()) + " (default: uint8-rgb)",
    )
    ex.add_argument(
        "--output",
        choices=list(OUTPUT_KINDS),
        default="logits",
        help="; ".join(f"{name}: {text}" for name, text in OUTPUT_KINDS.items()) + " (default: logits)",
    )
    ex.add_argument(
        "--static",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="fix the input's height and width (the batch stays dynamic); the check runs at that size only",
    )
    ex.add_argument(
        "--int8",
        action="store_true",
        help="ONNX: quantise the checked float32 graph to int8 for CPUs (ONNX Runtime's static quantiser: QDQ, "
        "int8 weights per output channel, uint8 activations) calibrated on --calib; it is checked on those "
        f"images: labels equal to eager's on at least {100 * INT8_MIN_LABEL_AGREEMENT:g}%% of the pixels whose two "
        f"best logits are {100 * INT8_DECIDED_MARGIN:g}%% of the largest apart (docs/deploy.md)",
    )
    ex.add_argument(
        "--calib",
        metavar="DIR",
        help=f"with --int8: a folder of images (the first {MAX_CALIBRATION_IMAGES} by name, resized to the model's "
        "crop) to calibrate the activation ranges with; take images like those the model will see",
    )
    ex.add_argument(
        "--fp16",
        action="store_true",
        help="ONNX: a float16 graph for GPU runtimes (ONNX Runtime's CUDA and TensorRT providers, TensorRT): weights "
        "and activations in float16, half the file size; the ends stay those of a float32 file: a uint8-rgb input "
        "is normalised in float32 and then cast, a normalized input is float32 and cast inside, and the logits are "
        "cast to float32 before the softmax or argmax. Checked against float32 eager within a bound derived from "
        "float16's rounding (4 x 2^-11 per layer; about 0.12 of the largest logit for PSPNet50), with labels equal "
        "wherever the two best logits are further apart than twice that, both as ONNX Runtime's CPU provider runs "
        "the file and with float16 storage emulated (docs/deploy.md). Not with --int8",
    )
    ex.add_argument("--force", action="store_true", help="replace FILE if it exists")
    ex.set_defaults(func=_cmd_export)


def _add_serve_command(commands: argparse._SubParsersAction) -> None:
    se = commands.add_parser(
        "serve",
        help="serve a model over HTTP: a JSON/PNG API, Prometheus metrics and a page to try it",
        description="Serve a model file (or a training run directory) over HTTP with Starlette and uvicorn (the "
        "'serve' extra: pip install 'pspnet[serve]'). The model is loaded once; one worker thread runs every "
        "forward pass, taking images from one bounded queue and batching those of equal size. POST /v1/segment "
        "takes an image (multipart field 'image' or the raw body) and answers a palette PNG of class ids at the "
        "image's size, or with ?format=json the classes present with their pixel shares and the mask as base64 "
        "PNG, or with ?format=overlay a JPEG overlay (&alpha=0.5); &mode=auto|whole|slide, &scales=1,1.5 and "
        "&flip=true change the test protocol per request. GET /v1/model: classes, palette, normalisation, "
        "architecture; GET /healthz; GET /metrics (Prometheus text); GET /: a page to try it. Answers 413 above "
        "--max-bytes or --max-pixels, 415 for what is not an image, 422 for bad parameters or a missing image, 400 "
        "for a malformed multipart body or a body cut short, 503 with Retry-After when the queue is full, 504 when a "
        "request waited --timeout seconds. SIGTERM or Ctrl-C: stop accepting, finish the queued images, exit.",
    )
    se.add_argument("model", metavar="MODEL", help="model file (.safetensors) or training run directory")
    se.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    se.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    se.add_argument(
        "--max-bytes",
        type=positive_int,
        default=20 * 2**20,
        metavar="N",
        help="largest request body in bytes (default: 20971520 = 20 MiB)",
    )
    se.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N", help=_MAX_PIXELS_HELP)
    se.add_argument(
        "--batch", type=positive_int, default=4, help="most images of one size per forward pass (default: 4)"
    )
    se.add_argument("--queue", type=positive_int, default=64, help="most images waiting (default: 64); then 503")
    se.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds a request waits for its answer before a 504; its queue slot is freed (default: 30)",
    )
    se.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="inference precision; auto (the default): bf16 where the device computes it natively, else fp32",
    )
    se.add_argument(
        "--device", type=_device, default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ..."
    )
    se.set_defaults(func=_cmd_serve)


def _add_debug_flag(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--debug`` on the top-level parser and on every (sub)command, so it may follow the command too."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,  # a subcommand's absent flag keeps the top-level value
        help="show the Python traceback of a failure (for bug reports; also PSPNET_DEBUG=1)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_debug_flag(sub, top=False)


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` as one line. An error raised in a DataLoader worker process reaches the main
    process with the worker's whole traceback in its message ("Caught DataError in DataLoader worker process 1.
    Original Traceback ..."): only the original message, its last line, is kept."""
    text = str(error)
    if "Original Traceback (most recent call last)" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else text
        kind = type(error)
        for prefix in (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: "):
            last = last.removeprefix(prefix)
        text = last
    return " ".join(text.split()) or type(error).__name__


# The command-line flag of each library argument an InputError can name (see pspnet.errors.InputError).
_FLAGS = {
    "source": "--from",
    "dataset": "--dataset",
    "resume": "--resume",
    "out": "--out",
    "overrides": "--set",
    "format": "--format",
    "opset": "--opset",
    "input_kind": "--input",
    "output_kind": "--output",
    "static_size": "--static",
}


def _as_flags(error: InputError) -> InputError | str:
    """The error's message with the library arguments it names (its ``argument``, and ``name=VALUE`` advice) shown
    as the flags they are given as."""
    if error.argument is None:
        return error
    detail = error.detail
    for name, flag in _FLAGS.items():
        detail = detail.replace(f" {name}=", f" {flag} ")
    return error.naming(_FLAGS.get(error.argument, error.argument), detail)


def _os_error(error: OSError) -> str:
    """``FILE: reason`` for an operating-system error (a folder that cannot be made, a full disk, ...)."""
    if error.filename is None:
        return one_line(error)
    where = os.fsdecode(error.filename)
    if error.filename2 is not None:
        where += f" -> {os.fsdecode(error.filename2)}"
    return f"{where}: {error.strerror or one_line(error)}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    heap.keep_freed_memory()  # the memory of one forward pass is reused by the next (see pspnet.heap)
    debug = args.debug or os.environ.get("PSPNET_DEBUG", "") not in ("", "0")
    with warnings.catch_warnings():  # the warning printer is restored when the command returns
        if not debug:
            warnings.showwarning = show_warning_line
        return _run(args, debug)


def _run(args: argparse.Namespace, debug: bool) -> int:
    """Run the chosen command; every failure becomes one ``error: ...`` line (see the module docstring)."""
    try:
        return int(args.func(args))
    except TrainingStopped as stopped:  # 'pspnet train' reports its own stop; the demo's training lands here
        print(f"error: {stopped}; nothing after it was run", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except InputError as error:  # a bad file, config or argument
        if debug:
            raise
        print(f"error: {one_line(_as_flags(error))}", file=sys.stderr)
        return 1
    except OSError as error:  # an --out that cannot be made or written, a disk that fills up, ...
        if debug:
            raise
        print(f"error: {_os_error(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            raise
        print(
            f"error: unexpected {type(error).__name__}: {one_line(error)} (run again with --debug for the "
            "traceback and report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
