"""The training curve: loss and learning rate per iteration, validation mIoU, from a run's log.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_open

__all__ = ["plot_training_curve"]


def plot_training_curve(log_path: Path, png_path: Path) -> Path | None:
    """Draw ``png_path`` from ``log_path``; returns None when the log holds no training record yet."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    records = []
    for line in log_path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a killed run
            continue
    train = [r for r in records if "loss" in r and isinstance(r["loss"], (int, float))]
    val = [r for r in records if r.get("val_mIoU") is not None]
    if not train:
        return None
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["iteration"] for r in train], [r["loss"] for r in train], color="tab:blue", label="loss")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss (main + 0.4 aux)")
    ax_loss.grid(alpha=0.3)
    ax_lr = ax_loss.twinx()
    ax_lr.plot([r["iteration"] for r in train], [r["lr"] for r in train], color="tab:gray", linestyle=":", label="lr")
    ax_lr.set_ylabel("backbone learning rate")
    ax_loss.set_title("Training loss and learning rate")
    if val:
        ax_val.plot([r["iteration"] for r in val], [100 * r["val_mIoU"] for r in val], marker="o", color="tab:red")
        best = max(val, key=lambda r: r["val_mIoU"])
        ax_val.annotate(f"best {100 * best['val_mIoU']:.1f}", (best["iteration"], 100 * best["val_mIoU"]))
    else:
        ax_val.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_val.transAxes)
    ax_val.set_xlabel("iteration")
    ax_val.set_ylabel("validation mIoU (%)")
    ax_val.set_title("Validation")
    ax_val.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(png_path, "wb") as handle:  # makes the folder too
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return png_path
