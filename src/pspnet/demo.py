"""``pspnet demo``: the whole system in a few minutes on a CPU, on scenes where global context decides.

1. writes the embedded synthetic lake/meadow data set (:mod:`pspnet.data.synthetic`) in the folder layout;
2. trains a small PSPNet from scratch with the training engine (the same code as ``pspnet train``);
3. evaluates it on the validation scenes (``metrics.json`` has the schema of ``pspnet eval``);
4. predicts held-out test scenes and draws them beside the ground truth, with overlays and legends;
5. writes ``index.html`` that shows all of it.

More models than the PSPNet come from :data:`VARIANTS`, one table: ``ablation=True`` also trains the same network
without the pyramid pooling module, ``compare=True`` every variant (PSPNet, without pyramid pooling, with the skip
decoder, DeepLab v3+, U-Net). The first model trains for the recipe's time budget; every other one for as many
iterations as it made, with the same recipe and seed. Their metrics, sizes, times and predictions are reported side by
side, whatever the differences turn out to be.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .atomic import atomic_open
from .data.datasets import build_dataset
from .data.io import write_image_png
from .data.synthetic import CONTEXT_PAIRS, class_table, write_synthetic_dataset
from .engine.checkpoint import run_checkpoints
from .engine.config import TrainConfig, load_train_config
from .engine.evaluate import evaluate, format_table, write_report
from .engine.train import train
from .inference import InferenceSettings
from .models.aspp import aspp_rates
from .models.build import build_model
from .models.config import UNET_BLOCKS, ModelConfig
from .models.resnet import STEMS, count_trainable
from .runs import load_model
from .segmenter import Segmenter
from .visualize import colorize, overlay, with_legend

__all__ = ["DEMO_CONFIG", "VARIANTS", "Variant", "demo_config", "demo_variants", "describe_head", "run_demo"]

# The demo's training recipe; configs/demo.yaml holds the same values (a test keeps them equal).
DEMO_CONFIG: dict[str, Any] = {
    "dataset": "folder",
    "root": "runs/demo/data",
    "train_split": "train",
    "val_split": "val",
    "crop_size": [64, 512],
    "scale_range": [0.8, 1.0],
    "rotate_range": [-2.0, 2.0],
    "depth": 18,
    "stem": "deep",
    "output_stride": 8,
    "head_channels": 64,
    "aux_channels": 32,
    "dropout": 0.1,
    "batch_size": 6,
    "lr": 0.01,
    "time_budget": 4.0,
    "checkpoint_every": 100,
    "val_every": 100,
    "keep_last": 1,
    "log_every": 10,
    "workers": 1,
}
SCENES = {"train": 400, "val": 60, "test": 8}


class Variant(NamedTuple):
    """A model the demo can train: its name for people, its name in a table column, and the ModelConfig fields it
    changes from the demo's config (every other field, the widths included, stays the demo's)."""

    title: str
    short: str
    changes: dict[str, Any]


# Every model the demo can train, keyed by the suffix of its files (run{key}/, metrics{key}.json, curve{key}.png,
# NAME_pred{key}.png); "" is the demo's PSPNet, trained first. The demo's widths (head_channels 64: PSPNet's 3x3
# head conv, DeepLab v3+'s ASPP and decoder; aux head 32) hold for every model, except where a setting does not fit
# an architecture, which then keeps its own default (None):
# - U-Net's output stride is 32: it has no dilation.
# - U-Net's head_channels is its first decoder block, halved by each of the next four: 64 would leave the last
#   blocks, at full resolution, 8 and 4 channels wide for 8 classes (a measured run: 16 mIoU at 93 iterations,
#   against 35 with its own 256-128-64-32-16).
VARIANTS: dict[str, Variant] = {
    "": Variant("PSPNet", "PSPNet", {}),
    "_no_ppm": Variant("PSPNet without pyramid pooling", "no PPM", {"ppm": False}),
    "_skip_decoder": Variant("PSPNet + skip decoder", "PSPNet + skip decoder", {"skip_decoder": True}),
    "_deeplabv3plus": Variant("DeepLab v3+", "DeepLab v3+", {"architecture": "deeplabv3plus"}),
    "_unet": Variant("U-Net", "U-Net", {"architecture": "unet", "output_stride": None, "head_channels": None}),
}
_ABLATION = ("", "_no_ppm")
_DEMO_OUTPUTS = (
    "data",
    "predictions",
    "confusion.png",
    "per_class_iou.png",
    "comparison.json",
    "index.html",
    *(
        f"{stem}{key}{suffix}"
        for key in VARIANTS
        for stem, suffix in (("run", ""), ("metrics", ".json"), ("curve", ".png"))
    ),
)


def demo_config(root: Path, **overrides: Any) -> TrainConfig:
    """The demo's training config with its data at ``root``."""
    return load_train_config(None, [], **{**DEMO_CONFIG, "root": str(root), **overrides})


def demo_variants(*, ablation: bool = False, compare: bool = False) -> tuple[str, ...]:
    """The keys of :data:`VARIANTS` a demo trains, in order: with ``compare`` all of them (the ablation's no-PPM
    network among them, so ``ablation`` adds nothing), with ``ablation`` PSPNet and PSPNet without pyramid
    pooling, else PSPNet alone."""
    if compare:
        return tuple(VARIANTS)
    return _ABLATION if ablation else ("",)


def _prepare(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(
                f"{out} is not empty; replace the demo there with force=True (--force), or choose another folder"
            )
        unknown = sorted(p.name for p in out.iterdir() if p.name not in _DEMO_OUTPUTS)
        if unknown:
            raise FileExistsError(
                f"{out} holds files the demo did not write ({', '.join(unknown[:5])}); not touching it"
            )
        for name in _DEMO_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _save_png(array: np.ndarray, path: Path) -> str:
    write_image_png(path, array)
    return path.name


def describe_head(config: ModelConfig) -> str:
    """A model's decode head in words, with its widths."""
    width = config.head_channels
    if config.architecture == "pspnet":
        bins = "-".join(map(str, config.bins))
        text = f"pyramid pooling (bins {bins}), " if config.ppm else "no pyramid pooling, "
        text += f"3x3 head conv {width} channels"
        if config.skip_decoder:
            text += f", then a stride-4 skip decoder {max(width // 2, 1)} channels on layer1"
        return text
    if config.architecture == "deeplabv3plus":
        rates = "-".join(map(str, aspp_rates(config.output_stride)))
        return f"ASPP (rates {rates}) {width} channels, stride-4 decoder {width} channels on layer1"
    widths = "-".join(str(width // 2**i) for i in range(UNET_BLOCKS))  # unet
    return f"{UNET_BLOCKS} decoder blocks {widths} channels, skips from the stem and layer1-3"


def describe_model(config: ModelConfig) -> str:
    """The settings of a model in one line for people: backbone, output stride, head and widths, aux head."""
    stem = "-".join(map(str, STEMS[config.stem]))
    text = f"ResNet-{config.depth} ({config.stem} stem {stem}), output stride {config.output_stride}; "
    text += describe_head(config)
    if config.aux:
        text += f"; aux FCN head on layer3 {config.aux_channels} channels (training only)"
    return f"{text}; dropout {config.dropout}"


@dataclass
class _Trained:
    """One trained model of the demo and what the page says about it."""

    key: str
    variant: Variant
    config: ModelConfig  # as trained, the architecture's defaults filled in
    report: dict[str, Any]  # the evaluation on the validation scenes (the schema of metrics.json)
    iterations: int
    seconds: float  # wall time of its training (set-up and validations included)
    parameters: int  # trainable, aux head excluded: the network that predicts
    aux_parameters: int  # the aux head's, used in training only

    @property
    def metrics_file(self) -> str:
        return f"metrics{self.key}.json"

    def summary(self) -> dict[str, Any]:
        """Its entry in comparison.json."""
        return {
            "name": self.key.removeprefix("_") or "pspnet",
            "title": self.variant.title,
            "architecture": self.config.architecture,
            "settings": describe_model(self.config),
            "model": self.config.to_dict(),
            "parameters": self.parameters,
            "aux_head_parameters": self.aux_parameters,
            "iterations": self.iterations,
            "training_seconds": round(self.seconds, 1),
            "mIoU": self.report["mIoU"],
            "mBIoU": self.report["mBIoU"],
            "per_class": [{"name": r["name"], "iou": r["iou"], "biou": r["biou"]} for r in self.report["per_class"]],
            "metrics": self.metrics_file,
            "run": f"run{self.key}",
        }


def _relative_costs(configs: dict[str, TrainConfig], num_classes: int) -> dict[str, float]:
    """Each model's FLOPs of one forward pass at the crop size relative to the first model's (counted on the meta
    device, no weights): how the time of one model's iterations predicts another's."""
    from .introspect import summarize  # FlopCounterMode: only when several models are trained

    flops = {}
    for key, config in configs.items():
        with torch.device("meta"):
            model = build_model(config.model_config(num_classes))
        flops[key] = summarize(model, *config.crop_size).flops
    first = flops[next(iter(configs))]
    return {key: value / first for key, value in flops.items()}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 90 else f"{seconds:.0f} s"


class _Schedule:
    """The expected duration of training several models one after another, from the FLOPs of each model's step
    and the seconds measured so far (training time is taken to grow with the FLOPs; evaluating and the rest
    are taken as equal for every model)."""

    def __init__(self, costs: dict[str, float]):
        self.costs = costs
        self.trained: dict[str, float] = {}  # key -> seconds of training
        self.other: dict[str, float] = {}  # key -> seconds of the rest (evaluation, pictures)

    def plan(self, config: TrainConfig) -> str:
        weights = ", ".join(f"{VARIANTS[k].short} x{c:.2f}" for k, c in self.costs.items())
        first = VARIANTS[next(iter(self.costs))].title
        if config.time_budget is not None:
            total = config.time_budget * 60 * sum(self.costs.values())
            return (
                f"{len(self.costs)} models, one after another: {first} for {config.time_budget} minutes of training "
                f"steps, then each other for as many iterations. By their FLOPs per step relative to {first}'s "
                f"({weights}) that is about {_minutes(total)} of training steps in all, plus set-up and evaluation; "
                "the estimate is measured again after each model."
            )
        return (
            f"{len(self.costs)} models, one after another, {config.iterations} iterations each; the expected "
            f"duration follows from the first model's time and their FLOPs per step ({weights})."
        )

    def done(self, key: str, training: float, other: float) -> str:
        """Record a model's seconds; the expected time left."""
        self.trained[key], self.other[key] = training, other
        left = [k for k in self.costs if k not in self.trained]
        if not left:
            return "all models trained"
        per_cost = sum(self.trained.values()) / sum(self.costs[k] for k in self.trained)
        rest = sum(self.other.values()) / len(self.other)
        seconds = sum(per_cost * self.costs[k] + rest for k in left)
        return f"about {_minutes(seconds)} left for the other {len(left)} (measured so far, weighted by FLOPs)"


def _predict_scenes(models: dict[str, torch.nn.Module], data_root: Path, out: Path) -> list[dict[str, str]]:
    """Draw every test scene: photo, ground truth, each model's prediction and overlay (with legends)."""
    test = build_dataset("folder", data_root, "test")
    info = test.info
    names, palette = list(info.classes), [tuple(c) for c in info.palette]
    rows = []
    segmenters = {label: Segmenter(model, InferenceSettings(mode="whole")) for label, model in models.items()}
    for index in range(len(test)):
        image, mask = test.load(index)
        name = test.samples[index].name
        row = {"name": name}
        row["image"] = _save_png(image, out / f"{name}_image.png")
        row["truth"] = _save_png(with_legend(colorize(mask, palette), mask, names, palette), out / f"{name}_truth.png")
        for label, segmenter in segmenters.items():
            pred = segmenter.predict(image)
            color = colorize(pred, palette)
            row[f"pred{label}"] = _save_png(with_legend(color, pred, names, palette), out / f"{name}_pred{label}.png")
            row[f"overlay{label}"] = _save_png(overlay(image, color, alpha=0.5), out / f"{name}_overlay{label}.png")
        rows.append(row)
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _html_metrics(models: list[_Trained]) -> str:
    """Per-class IoU of every model, then its Boundary IoU; the means in the last row."""
    several = len(models) > 1
    head = "<tr><th>class</th>" + "".join(f"<th>IoU ({html.escape(m.variant.short)})</th>" for m in models)
    head += "".join(f"<th>BIoU ({html.escape(m.variant.short)})</th>" if several else "<th>BIoU</th>" for m in models)
    body = []
    for i, row in enumerate(models[0].report["per_class"]):
        cells = f"<td>{html.escape(row['name'])}</td>"
        cells += "".join(f"<td>{_pct(m.report['per_class'][i]['iou'])}</td>" for m in models)
        cells += "".join(f"<td>{_pct(m.report['per_class'][i]['biou'])}</td>" for m in models)
        body.append(f"<tr>{cells}</tr>")
    summary = "<tr><th>mIoU</th>" + "".join(f"<th>{_pct(m.report['mIoU'])}</th>" for m in models)
    summary += "".join(f"<th>{_pct(m.report['mBIoU'])}</th>" for m in models) + "</tr>"
    return f"<table>{head}</tr>{''.join(body)}{summary}</table>"


def _html_models(models: list[_Trained], config: TrainConfig) -> str:
    """The models trained side by side: their settings, sizes, iterations, training times and mean scores."""
    if len(models) < 2:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(m.variant.title)}</td><td>{html.escape(describe_model(m.config))}</td>"
        f"<td>{m.parameters:,}</td><td>{m.iterations}</td><td>{m.seconds:.0f}</td>"
        f"<td>{_pct(m.report['mIoU'])}</td><td>{_pct(m.report['mBIoU'])}</td></tr>"
        for m in models
    )
    length = f"{models[0].iterations} iterations"
    if config.time_budget is not None:
        length += f", as many as {models[0].variant.title} made in its {config.time_budget}-minute time budget"
    return (
        "<h3>Models</h3><p>Every model trained from scratch on the same scenes with the same recipe (batch "
        f"{config.batch_size}, crop {config.crop_size[0]} x {config.crop_size[1]}, learning rate {config.lr}, "
        f"head x{config.head_lr_mult}, aux loss x{config.aux_weight}), seed {config.seed} and {length}, on the same "
        f"ResNet-{models[0].config.depth} backbone with the demo's widths; where a setting does not fit an "
        "architecture it keeps that architecture's own (U-Net: output stride 32, having no dilation, and its decoder "
        "widths, as the demo's 64 would leave its last blocks 8 and 4 channels wide). "
        "Parameters: trainable, aux head excluded (it is used in training only). Boundary IoU (BIoU): IoU of the "
        "pixels within 2% of the image diagonal of each class's contour.</p>"
        "<table class='models'><tr><th>model</th><th>settings</th><th>parameters</th><th>iterations</th>"
        f"<th>training s</th><th>mIoU</th><th>mBIoU</th></tr>{rows}</table>"
    )


def _write_html(
    out: Path, models: list[_Trained], config: TrainConfig, rows: list[dict], seconds: dict[str, float]
) -> Path:
    several = len(models) > 1
    scene_rows = []
    for row in rows:
        cells = [
            f"<figure><img src='predictions/{row['image']}'><figcaption>{html.escape(row['name'])}</figcaption></figure>",
            f"<figure><img src='predictions/{row['truth']}'><figcaption>ground truth</figcaption></figure>",
        ]
        for m in models:
            title = html.escape(m.variant.title)
            cells.append(
                f"<figure><img src='predictions/{row['pred' + m.key]}'><figcaption>{title}</figcaption></figure>"
            )
            cells.append(
                f"<figure><img src='predictions/{row['overlay' + m.key]}'><figcaption>{title}, overlay"
                "</figcaption></figure>"
            )
        scene_rows.append("<div class='scene'>" + "".join(cells) + "</div>")
    reports = {m.key: m.report for m in models}
    gap = ""
    main, plain = reports[""], reports.get("_no_ppm")
    if plain and main["mIoU"] is not None and plain["mIoU"] is not None:
        gap = (
            f"<p class='gap'>Pyramid pooling: mIoU {100 * main['mIoU']:.1f} vs {100 * plain['mIoU']:.1f} "
            f"without it (gap {100 * (main['mIoU'] - plain['mIoU']):+.1f} points, measured on this run).</p>"
        )
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    files = "".join(f', <a href="{m.metrics_file}">{m.metrics_file}</a>' for m in models[1:])
    if several:
        files += ', <a href="comparison.json">comparison.json</a>'
    curves = '<h2>Training curve</h2><img src="curve.png" style="max-height:none">\n'
    if several:
        curves = "<h2>Training curves</h2>" + "".join(
            f'<figure><img src="curve{m.key}.png" style="max-height:none"><figcaption>'
            f"{html.escape(m.variant.title)}</figcaption></figure>"
            for m in models
        )
    first = f" ({html.escape(models[0].variant.title)})" if several else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pspnet demo</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child {{ text-align: left; }} img {{ image-rendering: pixelated; max-height: 256px; }}
.scene {{ display: flex; gap: 8px; flex-wrap: wrap; margin-bottom: 12px; }} figure {{ margin: 0; }}
figcaption {{ font-size: 12px; color: #555; }} .gap {{ font-size: 1.2em; font-weight: bold; }}
pre {{ background: #f5f5f5; padding: 8px; }}{" .models td:nth-child(2) { text-align: left; font-size: 12px; }" if several else ""}
</style></head><body>
<h1>pspnet demo</h1>
<p>A small PSPNet (ResNet-18, output stride 8) trained from scratch on CPU on synthetic panoramas (64 x 512) of lakes
and meadows. Water and grass, and lily pads and bushes, look the same up close: only the strip at one end of the
scene (a sand beach for a lake, a forest edge for a meadow) tells them apart, up to about 450 pixels away from
them. Without pyramid pooling every output pixel sees at most about 255 pixels to either side (the receptive field
of this network), so the far part of each panorama cannot see the cue; the global pooling can carry it across.
That is the global context pyramid pooling brings.</p>
<pre>{html.escape(class_table())}</pre>
<h2>Validation ({main.get("scored_images", "?")} scenes)</h2>
{gap}{_html_models(models, config)}
{_html_metrics(models)}
<p>Time: {html.escape(timing)}. Files: <a href="metrics.json">metrics.json</a>{files}.</p>
{curves}
<h2>Per-class IoU and confusion matrix{first}</h2><img src="per_class_iou.png" style="max-height:none">
<img src="confusion.png" style="max-height:500px">
<h2>Held-out scenes</h2>
{"".join(scene_rows)}
</body></html>
"""
    path = out / "index.html"
    with atomic_open(path, "w") as handle:
        handle.write(page)
    return path


def _budget(config: TrainConfig, iterations: int) -> TrainConfig:
    """``config`` trained for exactly ``iterations`` steps (the other models of a comparison)."""
    return replace(config, iterations=iterations, time_budget=None, epochs=None)


def _format_models(models: list[_Trained]) -> str:
    """The comparison as text: one line per model."""
    width = max(len(m.variant.title) for m in models)
    lines = [f"{'model':<{width}}  {'mIoU':>5}  {'mBIoU':>5}  {'parameters':>11}  {'iterations':>10}  training"]
    for m in models:
        lines.append(
            f"{m.variant.title:<{width}}  {_pct(m.report['mIoU']):>5}  {_pct(m.report['mBIoU']):>5}  "
            f"{m.parameters:>11,}  {m.iterations:>10}  {m.seconds:.0f} s"
        )
    return "\n".join(lines)


def run_demo(
    out: Path,
    *,
    force: bool = False,
    ablation: bool = False,
    compare: bool = False,
    progress: bool = True,
    iterations: int | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns ``{"mIoU": ..., "mIoU_no_ppm": ..., "index": path, ...}``.

    ``ablation`` also trains PSPNet without pyramid pooling, ``compare`` every model of :data:`VARIANTS`
    (:func:`demo_variants`); the result then has ``"mIoU{key}"`` for each, ``"models"`` (the entries of
    ``comparison.json``) and ``"comparison"`` (its path). ``iterations`` overrides the training length (tests use a
    handful).
    """
    started = time.perf_counter()
    out = Path(out)
    _prepare(out, force)
    seconds: dict[str, float] = {}
    data_root = write_synthetic_dataset(out / "data", **SCENES, seed=0)
    config = demo_config(data_root, **({"iterations": iterations, "time_budget": None} if iterations else {}))
    if iterations:
        config = replace(config, checkpoint_every=iterations, val_every=iterations)
    print(class_table())
    print(f"context pairs (same local look, class decided by the scene): {CONTEXT_PAIRS}")
    keys = demo_variants(ablation=ablation, compare=compare)
    variants = {key: replace(config, model=replace(config.model, **VARIANTS[key].changes)) for key in keys}
    val = build_dataset("folder", data_root, "val")
    schedule = _Schedule(_relative_costs(variants, len(val.info.classes))) if len(keys) > 1 else None
    if schedule is not None:
        print(schedule.plan(config), flush=True)
    trained: list[_Trained] = []
    models = {}
    for number, (label, variant) in enumerate(variants.items(), start=1):
        if trained:  # the others train as long as the first did, in iterations
            variant = _budget(variant, trained[0].iterations)
        name = VARIANTS[label].title
        length = f"{variant.iterations} iterations" if variant.iterations else f"{variant.time_budget} minutes of steps"
        if schedule is None:
            print(f"training {name} for {length} ...", flush=True)
        else:
            settings = describe_model(variant.model_config(len(val.info.classes)))
            print(f"[{number}/{len(keys)}] training {name} for {length} ({settings}) ...", flush=True)
        tick = time.perf_counter()
        train(variant, out / f"run{label}", progress=progress)
        training = time.perf_counter() - tick
        seconds[f"training{label.replace('_', ' ')}"] = training
        model = load_model(out / f"run{label}")
        models[label] = model
        report = evaluate(model, val, InferenceSettings(mode="whole"), progress=False)
        report["settings"]["checkpoint"] = str(out / f"run{label}")
        head = count_trainable(model.aux_head) if model.aux_head is not None else 0
        steps = run_checkpoints(out / f"run{label}")[-1][0]  # iterations made: its last checkpoint's
        trained.append(
            _Trained(
                key=label,
                variant=VARIANTS[label],
                config=model.config,
                report=report,
                iterations=steps,
                seconds=training,
                parameters=count_trainable(model) - head,
                aux_parameters=head,
            )
        )
        if label:  # the main model's metrics.json comes with write_report below
            with atomic_open(out / f"metrics{label}.json", "w") as handle:
                handle.write(json.dumps(report, indent=1) + "\n")
        with atomic_open(out / f"curve{label}.png", "wb") as handle:
            handle.write((out / f"run{label}" / "curve.png").read_bytes())
        print(format_table(report))
        if schedule is not None:
            left = schedule.done(label, training, time.perf_counter() - tick - training)
            print(
                f"[{number}/{len(keys)}] {name}: {steps} iterations, {training:.0f} s of training; {left}", flush=True
            )
    write_report(trained[0].report, out)
    tick = time.perf_counter()
    rows = _predict_scenes(models, data_root, out / "predictions")
    seconds["predictions"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    result: dict[str, Any] = {"mIoU": trained[0].report["mIoU"], "seconds": seconds}
    if len(trained) > 1:
        entries = [m.summary() for m in trained]
        recipe = {k: v for k, v in config.to_dict().items() if k not in {f.name for f in fields(ModelConfig)}}
        with atomic_open(out / "comparison.json", "w") as handle:
            handle.write(json.dumps({"models": entries, "recipe": recipe}, indent=1) + "\n")
        print(_format_models(trained))
        result.update({f"mIoU{m.key}": m.report["mIoU"] for m in trained[1:]})
        result.update(models=entries, comparison=str(out / "comparison.json"))
    result["index"] = str(_write_html(out, trained, config, rows, seconds))
    return result
