"""A segmentation request's checks and answers, without a web framework: the query options, the image bytes, and
the three encodings of a label map. Every refusal is an :class:`HTTPProblem` carrying its status code."""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..inference import MODES, InferenceSettings, check_image_size
from ..segmenter import as_rgb_array
from ..visualize import colorize, legend_entries, overlay

__all__ = [
    "FORMATS",
    "MAX_SCALES",
    "HTTPProblem",
    "SegmentOptions",
    "decode_image",
    "mask_png",
    "overlay_jpeg",
    "parse_options",
    "segment_summary",
    "settings_for",
]

# ?format=... -> the media type of the answer
FORMATS = {"png": "image/png", "json": "application/json", "overlay": "image/jpeg"}
MAX_SCALES = 8
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class HTTPProblem(Exception):
    """A request refused: ``status`` (413, 415, 422, 503, ...), a one-line ``message`` and extra ``headers``."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class SegmentOptions:
    """The query of ``POST /v1/segment``. ``mode``, ``scales``, ``flip``: None keeps the server's setting;
    ``alpha``: the colours' weight in an overlay, in [0, 1]."""

    format: str = "png"
    mode: str | None = None
    scales: tuple[float, ...] | None = None
    flip: bool | None = None
    alpha: float = 0.5


def _float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HTTPProblem(422, f"{name}={text!r}: not a number") from None
    if not math.isfinite(value):
        raise HTTPProblem(422, f"{name}={text!r}: not a finite number")
    return value


def parse_options(items: Iterable[tuple[str, str]]) -> SegmentOptions:
    """The options of a query given as (name, value) pairs; an unknown or repeated name, or a bad value, is a 422
    naming it. ``scales`` is a comma-separated list of at most :data:`MAX_SCALES` positive numbers."""
    seen: dict[str, str] = {}
    for name, value in items:
        if name not in ("format", "mode", "scales", "flip", "alpha"):
            raise HTTPProblem(422, f"unknown query parameter {name!r}; known: format, mode, scales, flip, alpha")
        if name in seen:
            raise HTTPProblem(422, f"query parameter {name!r} given twice")
        seen[name] = value
    options: dict[str, object] = {}
    if "format" in seen:
        if seen["format"] not in FORMATS:
            raise HTTPProblem(422, f"format={seen['format']!r}: choose one of {', '.join(FORMATS)}")
        options["format"] = seen["format"]
    if "mode" in seen:
        if seen["mode"] not in MODES:
            raise HTTPProblem(422, f"mode={seen['mode']!r}: choose one of {', '.join(MODES)}")
        options["mode"] = seen["mode"]
    if "scales" in seen:
        parts = [part.strip() for part in seen["scales"].split(",")]
        if not 1 <= len(parts) <= MAX_SCALES or not all(parts):
            raise HTTPProblem(422, f"scales={seen['scales']!r}: give 1 to {MAX_SCALES} numbers separated by commas")
        scales = tuple(_float("scales", part) for part in parts)
        if min(scales) <= 0:
            raise HTTPProblem(422, f"scales={seen['scales']!r}: scales must be positive")
        options["scales"] = scales
    if "flip" in seen:
        word = seen["flip"].lower()
        if word not in _TRUE + _FALSE:
            raise HTTPProblem(422, f"flip={seen['flip']!r}: use true or false")
        options["flip"] = word in _TRUE
    if "alpha" in seen:
        alpha = _float("alpha", seen["alpha"])
        if not 0 <= alpha <= 1:
            raise HTTPProblem(422, f"alpha={seen['alpha']!r}: must be in [0, 1]")
        options["alpha"] = alpha
    return SegmentOptions(**options)  # type: ignore[arg-type]


def settings_for(base: InferenceSettings, options: SegmentOptions) -> InferenceSettings:
    """``base`` with the request's mode, scales and flip; settings the server's pixel limit refuses (a base size
    at a large scale) are a 422 saying why."""
    changes = {
        name: getattr(options, name) for name in ("mode", "scales", "flip") if getattr(options, name) is not None
    }
    if not changes:
        return base
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as error:
        raise HTTPProblem(422, f"inference settings: {error}") from None


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """The upright ``(H, W, 3) uint8`` RGB pixels of an encoded image (any format Pillow reads).

    Not an image, or one that cannot be decoded: 415. More than ``max_pixels`` pixels: 413, decided from the
    header before the pixels are decoded. No bytes: 422.
    """
    if not data:
        raise HTTPProblem(422, "no image: send it as the multipart field 'image' or as the request body")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            raise HTTPProblem(413, f"the image is too large: {error}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise HTTPProblem(415, "not an image Pillow can read (send JPEG, PNG, WebP, BMP, TIFF, ...)") from None
        width, height = image.size
        if width * height > max_pixels:
            raise HTTPProblem(
                413, f"the image is {height}x{width} = {width * height} pixels, above this server's {max_pixels}"
            )
        try:
            return as_rgb_array(image)
        except (DataError, ValueError) as error:
            raise HTTPProblem(415, f"the image cannot be decoded: {error}") from None


def check_size(image: np.ndarray, settings: InferenceSettings) -> None:
    """413 when inference at ``settings`` would make an image above the pixel limit (large scales, windows)."""
    try:
        check_image_size(image.shape[0], image.shape[1], settings)
    except ValueError as error:
        raise HTTPProblem(413, str(error)) from None


def mask_png(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> bytes:
    """An (H, W) label map as PNG bytes: a palette PNG whose pixel values are the class ids (viewers show the
    classes' colours) for at most 256 classes, else a 16-bit grey PNG of the ids."""
    if int(labels.max(initial=0)) > 255 or len(palette) > 256:
        image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint16))
    else:
        image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))
        colours = [int(v) for colour in palette for v in colour]
        image.putpalette(colours + [0] * (768 - len(colours)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def overlay_jpeg(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float) -> bytes:
    """The class colours blended over the photo (``alpha``: the colours' weight), as JPEG bytes (quality 90)."""
    blended = overlay(image, colorize(labels, palette), alpha=alpha)
    buffer = io.BytesIO()
    Image.fromarray(blended).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def segment_summary(labels: np.ndarray, classes: Sequence[str], palette: Sequence[Sequence[int]]) -> dict:
    """The JSON answer: ``width``, ``height``, the classes present (id, name, colour, share of the pixels, largest
    first) and the mask as a base64 palette PNG (:func:`mask_png`)."""
    present = [
        {"id": class_id, "name": classes[class_id], "color": list(palette[class_id]), "share": share}
        for class_id, share in legend_entries(labels, len(classes))
    ]
    return {
        "width": int(labels.shape[1]),
        "height": int(labels.shape[0]),
        "classes": present,
        "mask_png_base64": base64.b64encode(mask_png(labels, palette)).decode("ascii"),
    }
