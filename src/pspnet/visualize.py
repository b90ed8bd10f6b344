"""Pictures of label maps: colouring with a palette, blending over the photo, and a legend of the classes present."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["IGNORE_COLOR", "colorize", "legend_entries", "overlay", "with_legend"]

IGNORE_COLOR = (0, 0, 0)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]], *, ignore_color=IGNORE_COLOR) -> np.ndarray:
    """(H, W) integer label map -> (H, W, 3) uint8 RGB; values outside the palette (e.g. ignore 255) get
    ``ignore_color``."""
    table = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    labels = np.asarray(labels)
    valid = (labels >= 0) & (labels < len(table))
    out = np.empty((*labels.shape, 3), dtype=np.uint8)
    out[...] = np.asarray(ignore_color, dtype=np.uint8)
    out[valid] = table[labels[valid]]
    return out


def overlay(image: np.ndarray, color: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour map over an RGB photo: ``(1 - alpha) * image + alpha * color``, both (H, W, 3) uint8."""
    if image.shape != color.shape:
        raise ValueError(f"image {image.shape} and colour map {color.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def legend_entries(labels: np.ndarray, num_classes: int) -> list[tuple[int, float]]:
    """(class id, share of labelled pixels) of the classes present, largest share first."""
    labels = np.asarray(labels).ravel()
    labels = labels[(labels >= 0) & (labels < num_classes)]
    if labels.size == 0:
        return []
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    return [(int(c), float(counts[c] / labels.size)) for c in order]


def with_legend(
    image: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    palette: Sequence[Sequence[int]],
    *,
    max_entries: int = 20,
) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with a panel on its right listing the classes present in ``labels``.

    Each entry is a colour swatch, the class name and its share of the labelled pixels; at most ``max_entries``
    (largest first), with a final "+N more" line when there are more.
    """
    entries = legend_entries(labels, len(names))
    height = image.shape[0]
    font = ImageFont.load_default(size=max(10, min(16, height // 24)))
    row = font.size + 6
    shown = entries[:max_entries]
    lines = [(c, f"{names[c]} {100 * share:.1f}%") for c, share in shown]
    if len(entries) > len(shown):
        lines.append((-1, f"+{len(entries) - len(shown)} more"))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((probe.textlength(text, font=font) for _, text in lines), default=0)
    panel_w = int(text_w) + row + 16
    panel_h = max(height, row * len(lines) + 8)
    canvas = Image.new("RGB", (image.shape[1] + panel_w, panel_h), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = image.shape[1] + 6
    for i, (class_id, text) in enumerate(lines):
        y = 4 + i * row
        if class_id >= 0:
            swatch = tuple(int(v) for v in palette[class_id])
            draw.rectangle([x0, y, x0 + row - 6, y + row - 6], fill=swatch, outline=(0, 0, 0))
        draw.text((x0 + row, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
