"""A segmentation request's checks and answers, without a web framework: the query options, the image bytes (the raw
body or the ``image`` field of a multipart body), and the three encodings of a label map. Every refusal is an
:class:`HTTPProblem` carrying its status code."""

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
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import DataError
from ..inference import MODES, InferenceSettings, check_image_size
from ..segmenter import as_rgb_array
from ..visualize import colorize, legend_entries, overlay

__all__ = [
    "FORMATS",
    "MAX_PARTS",
    "MAX_SCALES",
    "HTTPProblem",
    "SegmentOptions",
    "decode_image",
    "mask_png",
    "multipart_image",
    "overlay_jpeg",
    "parse_options",
    "segment_summary",
    "settings_for",
]

# ?format=... -> the media type of the answer
FORMATS = {"png": "image/png", "json": "application/json", "overlay": "image/jpeg"}
MAX_SCALES = 8
MAX_PARTS = 16  # parts of a multipart body: the image and a few other fields a form may send along
_MAX_BOUNDARY = 70  # RFC 2046, section 5.1.1
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


def multipart_image(body: bytes, content_type: str) -> bytes:
    """The bytes of the file field ``image`` of a ``multipart/form-data`` ``body`` whose Content-Type header is
    ``content_type``.

    A body that is not well-formed multipart is a 400 saying what is wrong: no boundary (or one longer than RFC
    2046's 70 characters) in the Content-Type, a body that does not begin with that boundary, a part without a
    ``Content-Disposition: form-data; name=...`` header, more than :data:`MAX_PARTS` parts, or a body that ends
    before its closing boundary (``--BOUNDARY--``: a truncated upload). A well-formed body without one file field
    ``image`` is a 422: no such field, the field given twice, or a text field instead of a file.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if not boundary:
        raise HTTPProblem(400, "malformed multipart body: the Content-Type has no boundary=... parameter")
    if len(boundary) > _MAX_BOUNDARY:
        raise HTTPProblem(
            400, f"malformed multipart body: its boundary is {len(boundary)} characters long, above the 70 allowed"
        )
    delimiter = b"--" + boundary
    shown = delimiter.decode("latin-1")
    if body and not body.lstrip(b"\r\n").startswith(delimiter):
        raise HTTPProblem(400, f"malformed multipart body: it does not begin with its boundary {shown!r}")
    parts: list[dict] = []
    header: list[bytes] = [b"", b""]  # the field and value of the header being read
    ended = False

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise HTTPProblem(400, f"malformed multipart body: more than {MAX_PARTS} parts")
        parts.append({"headers": {}, "data": []})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"][header[0].strip().lower()] = header[1].strip()
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"].append(data[start:end])

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as error:
        raise HTTPProblem(400, f"malformed multipart body: {error}") from None
    if not ended:
        raise HTTPProblem(
            400,
            f"malformed multipart body: it ends before its closing boundary {shown + '--'!r} (after {len(body)} "
            "bytes; was the upload cut short?)",
        )
    images = []
    for part in parts:
        kind, options = parse_options_header(part["headers"].get(b"content-disposition"))
        if kind != b"form-data" or not options.get(b"name"):
            raise HTTPProblem(
                400, "malformed multipart body: a part has no 'Content-Disposition: form-data; name=...' header"
            )
        if options[b"name"] == b"image":
            images.append((options, b"".join(part["data"])))
    if not images:
        raise HTTPProblem(422, "the multipart body has no field 'image'")
    if len(images) > 1:
        raise HTTPProblem(422, "the multipart field 'image' is given more than once; send one image")
    options, data = images[0]
    if b"filename" not in options:
        raise HTTPProblem(422, "the multipart field 'image' must be a file (curl -F image=@photo.jpg)")
    return data


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
