"""Evaluation over a data set: inference in any mode, one confusion matrix, boundary IoU, reports and pictures.

``evaluate`` runs a model over a data set and returns the metrics report (the ``metrics.json`` schema);
``write_report`` writes ``metrics.json``, a confusion-matrix image and a per-class IoU bar chart. Predictions can
be saved as palette PNGs on the way (``pred_dir``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..atomic import atomic_open
from ..data.datasets import SegmentationDataset
from ..data.io import write_mask_png
from ..errors import DataError
from ..inference import InferenceSettings, check_image_size, class_ids, infer_proba, normalize
from ..models.network import SegmentationNetwork
from ..weights.model_file import make_card
from .distributed import all_reduce_sum, rank_and_world
from .metrics import BoundaryIoU, ConfusionMatrix, metrics_report

__all__ = ["evaluate", "format_table", "write_report"]


def _identity(sample: dict[str, Any]) -> dict[str, Any]:
    return sample


def evaluate(
    model: SegmentationNetwork,
    dataset: SegmentationDataset,
    settings: InferenceSettings,
    *,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    pred_dir: Path | None = None,
    progress: bool = True,
    workers: int = 0,
) -> dict[str, Any]:
    """Evaluate ``model`` (eval mode, on ``device``) on ``dataset`` and return the metrics report.

    Images are read at their native size (no transform); ``settings`` decides whole/slide, scales and flip.
    ``limit`` evaluates only the first N images. With ``pred_dir``, each prediction is written as a palette PNG
    ``pred_dir/NAME.png``. Samples without a mask (test splits) are predicted but not scored.
    The report has the keys of :func:`metrics_report` plus ``settings``, ``images`` and ``seconds``.

    Under torch.distributed every process must call this: process r evaluates images r, r + W, r + 2W, ... and
    the counts are summed over processes, so every process returns the same report for the whole split.
    """
    info = dataset.info
    if model.num_classes != info.num_classes:
        raise DataError(
            f"the model predicts {model.num_classes} classes but data set {info.name!r} at {dataset.root} has "
            f"{info.num_classes}"
        )
    card = model.card if model.card is not None else make_card(model.config)  # ImageNet normalisation by default
    mean, std = card.mean, card.std
    dtype = next(model.parameters()).dtype  # inputs in the model's dtype (float32; float64 in numerical tests)
    device = torch.device(device)
    model.eval()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise DataError(f"data set {info.name!r} split {dataset.split!r} at {dataset.root} has no images")
    confusion = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index, device=device)
    boundary = BoundaryIoU(info.num_classes, ignore_index=info.ignore_index, device=device)
    rank, world = rank_and_world()
    progress = progress and rank == 0
    loader = DataLoader(
        Subset(dataset, range(rank, count, world)),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        generator=torch.Generator(),
    )  # leaves the global RNG alone
    started = time.perf_counter()
    scored = 0
    bar = tqdm(
        loader,
        total=len(range(rank, count, world)),
        desc=f"eval {info.name}/{dataset.split}",
        unit="img",
        disable=not progress,
    )
    for sample in bar:
        try:  # an image above the pixel cap is a bad file of the data set, named, before any allocation
            check_image_size(*np.shape(sample["image"])[:2], settings)
        except ValueError as error:
            raise DataError(f"{dataset.samples[sample['index']].image}: {error}") from None
        image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)[None].to(device)
        probs = infer_proba(model, normalize(image, mean, std, dtype=dtype), settings)  # (1, K, H, W)
        pred = class_ids(probs)[0]  # (H, W)
        if sample["mask"] is not None:
            target = torch.from_numpy(np.asarray(sample["mask"], dtype=np.int64)).to(device)
            confusion.update(pred, target)
            boundary.update(pred, target)
            scored += 1
        if pred_dir is not None:
            labels = pred.to("cpu", torch.uint8 if info.num_classes <= 256 else torch.int32).numpy()
            write_mask_png(pred_dir / f"{sample['name']}.png", labels, info.palette)
        if progress and scored:
            miou = confusion.compute().miou
            bar.set_postfix(mIoU=f"{100 * miou:.1f}" if miou is not None else "-")
    confusion.all_reduce()
    boundary.all_reduce()
    scored = int(all_reduce_sum(torch.tensor(scored, dtype=torch.int64)))
    report = metrics_report(confusion, boundary, list(info.classes))
    report["settings"] = {
        **asdict(settings),
        "dataset": info.name,
        "split": dataset.split,
        "root": str(dataset.root),
    }
    report["images"] = count
    report["scored_images"] = scored
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """The per-class table and the summary line, for humans (percentages; '-' where undefined)."""
    rows = report["per_class"]
    width = max([len("class")] + [len(r["name"]) for r in rows])
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}  {'BIoU':>7}  {'gt pixels':>12}"]
    for r in rows:
        lines.append(
            f"{r['name']:<{width}}  {_percent(r['iou']):>7}  {_percent(r['acc']):>7}  {_percent(r['biou']):>7}  "
            f"{r['gt_pixels']:>12,}"
        )
    lines.append(
        f"mIoU {_percent(report['mIoU'])}  mAcc {_percent(report['mAcc'])}  allAcc {_percent(report['allAcc'])}  "
        f"mBIoU {_percent(report['mBIoU'])}  ({report.get('scored_images', '?')} images)"
    )
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Write ``metrics.json``, ``confusion.png`` (row-normalised) and ``per_class_iou.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "confusion.png", out / "per_class_iou.png"]
    with atomic_open(written[0], "w") as handle:
        handle.write(json.dumps(report, indent=1) + "\n")
    names = [r["name"] for r in report["per_class"]]
    k = len(names)
    ticks = k <= 40

    matrix = np.asarray(report["confusion"], dtype=np.float64)
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = min(14.0, 3.0 + 0.35 * k)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the ground-truth class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    ax.set_title("Confusion matrix (rows normalised)")
    if ticks:
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    fig.tight_layout()
    with atomic_open(written[1], "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)

    ious = [r["iou"] for r in report["per_class"]]
    fig, ax = plt.subplots(figsize=(max(6.0, min(30.0, 0.3 * k + 2)), 4))
    ax.bar(range(k), [100 * v if v is not None else 0 for v in ious], color="tab:blue")
    for i, v in enumerate(ious):
        if v is None:
            ax.text(i, 1, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
    if report["mIoU"] is not None:
        ax.axhline(100 * report["mIoU"], color="tab:red", linestyle="--", label=f"mIoU {100 * report['mIoU']:.1f}")
        ax.legend(loc="upper right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title("Per-class IoU")
    if ticks:
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
    fig.tight_layout()
    with atomic_open(written[2], "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return written
