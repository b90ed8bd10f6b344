"""``pspnet demo``: the whole system in a few minutes on a CPU, on scenes where global context decides.

1. writes the embedded synthetic lake/meadow data set (:mod:`pspnet.data.synthetic`) in the folder layout;
2. trains a small PSPNet from scratch with the training engine (the same code as ``pspnet train``);
3. evaluates it on the validation scenes (``metrics.json`` has the schema of ``pspnet eval``);
4. predicts held-out test scenes and draws them beside the ground truth, with overlays and legends;
5. writes ``index.html`` that shows all of it.

With ``ablation=True`` the same network is also trained without the pyramid pooling module, and both mIoUs are
reported side by side, whatever the gap turns out to be.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_open
from .data.datasets import build_dataset
from .data.io import write_image_png
from .data.synthetic import CONTEXT_PAIRS, class_table, write_synthetic_dataset
from .engine.config import TrainConfig, load_train_config
from .engine.evaluate import evaluate, format_table, write_report
from .engine.train import train
from .inference import InferenceSettings
from .runs import load_model
from .segmenter import Segmenter
from .visualize import colorize, overlay, with_legend

__all__ = ["DEMO_CONFIG", "demo_config", "run_demo"]

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
_DEMO_OUTPUTS = (
    "data",
    "run",
    "run_no_ppm",
    "predictions",
    "metrics.json",
    "metrics_no_ppm.json",
    "confusion.png",
    "per_class_iou.png",
    "curve.png",
    "curve_no_ppm.png",
    "index.html",
)


def demo_config(root: Path, **overrides: Any) -> TrainConfig:
    """The demo's training config with its data at ``root``."""
    return load_train_config(None, [], **{**DEMO_CONFIG, "root": str(root), **overrides})


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


def _html_metrics(report: dict[str, Any], other: dict[str, Any] | None) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    head = "<tr><th>class</th><th>IoU (PSPNet)</th>" + ("<th>IoU (no PPM)</th>" if other else "") + "<th>BIoU</th></tr>"
    body = []
    for i, row in enumerate(report["per_class"]):
        cells = f"<td>{html.escape(row['name'])}</td><td>{pct(row['iou'])}</td>"
        if other:
            cells += f"<td>{pct(other['per_class'][i]['iou'])}</td>"
        body.append(f"<tr>{cells}<td>{pct(row['biou'])}</td></tr>")
    summary = f"<tr><th>mIoU</th><th>{pct(report['mIoU'])}</th>" + (f"<th>{pct(other['mIoU'])}</th>" if other else "")
    summary += f"<th>{pct(report['mBIoU'])}</th></tr>"
    return f"<table>{head}{''.join(body)}{summary}</table>"


def _write_html(out: Path, report: dict, other: dict | None, rows: list[dict], seconds: dict[str, float]) -> Path:
    labels = [""] + (["_no_ppm"] if other else [])
    scene_rows = []
    for row in rows:
        cells = [
            f"<figure><img src='predictions/{row['image']}'><figcaption>{html.escape(row['name'])}</figcaption></figure>",
            f"<figure><img src='predictions/{row['truth']}'><figcaption>ground truth</figcaption></figure>",
        ]
        for label in labels:
            title = "PSPNet" if not label else "without pyramid pooling"
            cells.append(
                f"<figure><img src='predictions/{row['pred' + label]}'><figcaption>{title}</figcaption></figure>"
            )
            cells.append(
                f"<figure><img src='predictions/{row['overlay' + label]}'><figcaption>{title}, overlay"
                "</figcaption></figure>"
            )
        scene_rows.append("<div class='scene'>" + "".join(cells) + "</div>")
    gap = ""
    if other and report["mIoU"] is not None and other["mIoU"] is not None:
        gap = (
            f"<p class='gap'>Pyramid pooling: mIoU {100 * report['mIoU']:.1f} vs {100 * other['mIoU']:.1f} "
            f"without it (gap {100 * (report['mIoU'] - other['mIoU']):+.1f} points, measured on this run).</p>"
        )
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pspnet demo</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child {{ text-align: left; }} img {{ image-rendering: pixelated; max-height: 256px; }}
.scene {{ display: flex; gap: 8px; flex-wrap: wrap; margin-bottom: 12px; }} figure {{ margin: 0; }}
figcaption {{ font-size: 12px; color: #555; }} .gap {{ font-size: 1.2em; font-weight: bold; }}
pre {{ background: #f5f5f5; padding: 8px; }}
</style></head><body>
<h1>pspnet demo</h1>
<p>A small PSPNet (ResNet-18, output stride 8) trained from scratch on CPU on synthetic panoramas (64 x 512) of lakes
and meadows. Water and grass, and lily pads and bushes, look the same up close: only the strip at one end of the
scene (a sand beach for a lake, a forest edge for a meadow) tells them apart, up to about 450 pixels away from
them. Without pyramid pooling every output pixel sees at most about 255 pixels to either side (the receptive field
of this network), so the far part of each panorama cannot see the cue; the global pooling can carry it across.
That is the global context pyramid pooling brings.</p>
<pre>{html.escape(class_table())}</pre>
<h2>Validation ({report.get("scored_images", "?")} scenes)</h2>
{gap}
{_html_metrics(report, other)}
<p>Time: {html.escape(timing)}. Files: <a href="metrics.json">metrics.json</a>{', <a href="metrics_no_ppm.json">metrics_no_ppm.json</a>' if other else ""}.</p>
<h2>Training curve</h2><img src="curve.png" style="max-height:none">
{'<img src="curve_no_ppm.png" style="max-height:none">' if other else ""}
<h2>Per-class IoU and confusion matrix</h2><img src="per_class_iou.png" style="max-height:none">
<img src="confusion.png" style="max-height:500px">
<h2>Held-out scenes</h2>
{"".join(scene_rows)}
</body></html>
"""
    path = out / "index.html"
    with atomic_open(path, "w") as handle:
        handle.write(page)
    return path


def run_demo(
    out: Path, *, force: bool = False, ablation: bool = False, progress: bool = True, iterations: int | None = None
) -> dict[str, Any]:
    """Run the demo into ``out``; returns ``{"mIoU": ..., "mIoU_no_ppm": ..., "index": path, ...}``.

    ``iterations`` overrides the training length (tests use a handful).
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
    variants = {"": config}
    if ablation:
        variants["_no_ppm"] = replace(config, model=replace(config.model, ppm=False))
    reports: dict[str, dict[str, Any]] = {}
    models = {}
    val = build_dataset("folder", data_root, "val")
    for label, variant in variants.items():
        name = "PSPNet" if not label else "PSPNet without pyramid pooling"
        length = f"{variant.iterations} iterations" if variant.iterations else f"{variant.time_budget} minutes of steps"
        print(f"training {name} for {length} ...", flush=True)
        tick = time.perf_counter()
        train(variant, out / f"run{label}", progress=progress)
        seconds[f"training{label.replace('_', ' ')}"] = time.perf_counter() - tick
        model = load_model(out / f"run{label}")
        models[label] = model
        report = evaluate(model, val, InferenceSettings(mode="whole"), progress=False)
        report["settings"]["checkpoint"] = str(out / f"run{label}")
        reports[label] = report
        if label:  # the main model's metrics.json comes with write_report below
            with atomic_open(out / f"metrics{label}.json", "w") as handle:
                handle.write(json.dumps(report, indent=1) + "\n")
        with atomic_open(out / f"curve{label}.png", "wb") as handle:
            handle.write((out / f"run{label}" / "curve.png").read_bytes())
        print(format_table(report))
    write_report(reports[""], out)
    tick = time.perf_counter()
    rows = _predict_scenes(models, data_root, out / "predictions")
    seconds["predictions"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    index = _write_html(out, reports[""], reports.get("_no_ppm"), rows, seconds)
    result = {"mIoU": reports[""]["mIoU"], "index": str(index), "seconds": seconds}
    if ablation:
        result["mIoU_no_ppm"] = reports["_no_ppm"]["mIoU"]
    return result
