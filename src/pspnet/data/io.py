"""Reading photos and label masks, writing index masks: the only place that touches image files.

Conventions every other module relies on:

- an image is ``np.ndarray (H, W, 3) uint8`` RGB, shown upright: the EXIF orientation is applied (:func:`upright`,
  the one rule for files and PIL images alike: a malformed EXIF block is a warning, and the pixels are kept as stored);
- a mask read from disk holds the raw integers of the file (palette PNGs give their *indices*, never colours); only
  an RGB(A) mask comes back as ``(H, W, 3) uint8`` so that the folder data set can map colours to classes;
- only regular files are read (a FIFO or device would block forever): anything else is refused by name;
- every failure (missing, unreadable, truncated, unsupported) is a :class:`~pspnet.errors.DataError` naming the file:
  no raw Pillow exception escapes, so a training run that meets a bad file says which one.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from ..atomic import atomic_open
from ..errors import DataError
from .classes import default_palette

__all__ = [
    "EXIF_ORIENTATION",
    "open_regular",
    "read_image",
    "read_image_and_orientation",
    "read_mask",
    "to_rgb8",
    "upright",
    "write_image_png",
    "write_mask_png",
]

# The EXIF tag that says how a camera held the photo: 1 = upright, 2..8 = mirrored and/or rotated.
EXIF_ORIENTATION = 0x0112

_ORIENTATION_WORDS = {
    2: "mirrored left-right",
    3: "rotated 180 degrees",
    4: "mirrored top-bottom",
    5: "transposed (mirrored and rotated 90 degrees)",
    6: "rotated 90 degrees clockwise",
    7: "transversed (mirrored and rotated 90 degrees)",
    8: "rotated 90 degrees counter-clockwise",
}


def orientation_words(orientation: int) -> str:
    """What an EXIF orientation value means to a reader ('rotated 90 degrees clockwise')."""
    return _ORIENTATION_WORDS.get(orientation, "upright")


def open_regular(path: str | os.PathLike, what: str) -> IO[bytes]:
    """``path`` opened for binary reading, only when it is a regular file (symlinks followed); else a DataError.

    A FIFO, socket or device would block a reader forever or stream without end. The file is opened without
    blocking and checked on the open descriptor (``fstat``), so nothing can be swapped in between check and read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a regular {what} file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot open {what} file: {error.strerror or error}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise DataError(f"{path}: is a folder, expected a regular {what} file")
        if not stat.S_ISREG(mode):
            raise DataError(f"{path}: not a regular file (a FIFO, socket or device), expected a regular {what} file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_loaded(path: str | os.PathLike, what: str) -> Image.Image:
    """Open ``path`` (a regular file only, :func:`open_regular`) and decode every pixel now, so that a truncated
    file fails here and names itself."""
    path = Path(path)
    try:
        with open_regular(path, what) as handle, Image.open(handle) as image:
            # load() decodes the whole file: a truncated JPEG or PNG raises here instead of giving grey rows later.
            # The pixels stay in memory after the file is closed (multi-frame files would keep it open otherwise).
            image.load()
    except DataError:
        raise
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read (unknown format or corrupt header)") from None
    except MemoryError:
        raise
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors...
        text = str(error) or type(error).__name__
        if "truncated" in text.lower():
            raise DataError(f"{path}: truncated {what} file ({text})") from error
        raise DataError(f"{path}: cannot read {what} file: {text}") from error
    return image


def _upright_and_orientation(image: Image.Image, name: str) -> tuple[Image.Image, int]:
    """``image`` turned upright by its EXIF orientation, and the orientation applied (1: none, not 1..8, or ignored).

    A malformed EXIF block is no reason to refuse the pixels: its orientation is ignored, the pixels are kept as
    stored, and a ``UserWarning`` names ``name`` and says so. An orientation value outside 1..8 means no turn.
    """
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
        orientation = value if isinstance(value, int) and 1 <= value <= 8 else 1
        if orientation == 1:
            return image, 1
        return ImageOps.exif_transpose(image), orientation
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow raises SyntaxError, struct.error, ValueError...
        warnings.warn(
            f"{name}: malformed EXIF block ({str(error) or type(error).__name__}); its orientation was ignored, "
            "the pixels are used as stored",
            UserWarning,
            stacklevel=3,
        )
        return image, 1


def upright(image: Image.Image, name: str) -> Image.Image:
    """``image`` turned upright by its EXIF orientation (``ImageOps.exif_transpose``); itself when it has none.

    The rule of every photo pspnet reads, from a file or handed over as a PIL image: a malformed EXIF block is
    ignored (the pixels are kept as stored) with a ``UserWarning`` naming ``name`` (the file, or "the PIL image")
    and saying that the orientation was ignored.
    """
    return _upright_and_orientation(image, name)[0]


def to_rgb8(image: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any Pillow mode: grey, palette, alpha (dropped), CMYK, 16-bit and float."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (PNG/TIFF): scale 0..65535 to 0..255; Pillow's own convert would clip at 255 instead.
        grey = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        # Float images are taken to hold intensities in [0, 1]; NaN is 0, values beyond are clipped (before the
        # scaling, so that infinities and 1e308 raise no overflow warning). A damaged file may hold signalling NaNs,
        # whose conversion raises NumPy's "invalid value" warning: they are NaNs like the others.
        with np.errstate(invalid="ignore"):
            grey = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64)), 0.0, 1.0)
        grey = np.rint(grey * 255.0).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    try:
        if mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        # RGBA/LA: convert drops the alpha channel as it is (no compositing onto a background).
        converted = image.convert("RGB")
    except Exception as error:
        raise DataError(f"{path}: cannot convert image mode {mode!r} to RGB: {error}") from error
    return np.asarray(converted, dtype=np.uint8).copy()


def read_image_and_orientation(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """The upright (H, W, 3) uint8 RGB image and the EXIF orientation tag the file carried (1 when none).

    The returned pixels already have the orientation applied (:func:`upright`); for tags 5..8 the raw pixel grid of
    the file is W x H. ``data check`` uses the tag to warn about masks drawn on the raw grid. A malformed EXIF block
    is a warning naming the file: the pixels come as stored, with orientation 1.
    """
    path = Path(path)
    image, orientation = _upright_and_orientation(_open_loaded(path, "image"), str(path))
    return to_rgb8(image, path), orientation


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A photo as (H, W, 3) uint8 RGB, upright (EXIF orientation applied, see :func:`upright`), fully decoded.

    Grey, palette, RGBA (alpha dropped), CMYK, 16-bit (scaled to 8 bits) and float ([0, 1]) images all become
    8-bit RGB. A missing, unreadable or truncated file raises :class:`DataError` naming it.
    """
    return read_image_and_orientation(path)[0]


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """The raw label values of a mask file, without any class mapping.

    - palette ('P') PNGs: the palette *indices* (Pascal VOC's SegmentationClass), never the colours;
    - 'L' (8-bit): ``(H, W) uint8``; 'I;16'/'I' (16/32-bit): ``(H, W) int32``; '1': 0/1 as uint8;
    - 'RGB'/'RGBA': ``(H, W, 3) uint8`` (alpha dropped), for data sets that encode classes as colours;
    - 'LA'/'PA': the first channel (grey value or palette index).

    The EXIF orientation is not applied: label files are taken as stored. Errors are DataErrors naming the file.
    """
    path = Path(path)
    image = _open_loaded(path, "mask")
    mode = image.mode
    if mode in ("P", "L"):
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("PA", "LA"):
        return np.asarray(image.getchannel(0), dtype=np.uint8).copy()
    if mode == "1":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode == "I":
        return np.asarray(image).astype(np.int32)
    if mode in ("RGB", "RGBA"):
        return np.asarray(image.convert("RGB") if mode == "RGBA" else image, dtype=np.uint8).copy()
    raise DataError(
        f"{path}: mask mode {mode!r} is not supported; save masks as index PNGs (8-bit grey or palette) or RGB PNGs"
    )


def write_image_png(path: str | os.PathLike, pixels: np.ndarray, *, compress_level: int = 6) -> None:
    """Write an (H, W, 3) RGB or (H, W) grey uint8 array as a PNG, atomically (temporary file + rename).

    ``compress_level`` is zlib's 0-9 (1: fast and a little larger, for outputs written while predicting).
    """
    image = Image.fromarray(np.ascontiguousarray(pixels))
    with atomic_open(path, "wb") as handle:
        image.save(handle, format="PNG", compress_level=compress_level)


def write_mask_png(path: str | os.PathLike, mask: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> None:
    """Write an (H, W) index mask with values 0..255 as a PNG, atomically (temporary file + rename).

    With ``palette`` (RGB triples, at most 256) the file is a palette PNG: viewers show colours, :func:`read_mask`
    gives back the indices. Entries the palette does not cover (e.g. 255, the ignore value) get the Pascal VOC
    colour map's colour, so 255 shows as VOC's cream border colour. With ``palette=None`` it is a plain 8-bit grey
    index PNG (the SegmentationClassAug convention).
    """
    path = Path(path)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: a mask to write must be 2-D (H, W), got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
        raise ValueError(f"{path}: a mask to write must hold integers, got dtype {mask.dtype}")
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > 255):
        raise ValueError(
            f"{path}: mask values must be within 0..255 for an 8-bit PNG, got {int(mask.min())}..{int(mask.max())}"
        )
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))  # 2-D uint8 -> mode 'L'
    if palette is not None:
        colours = [tuple(int(c) for c in colour) for colour in palette]
        if len(colours) > 256 or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colours):
            raise ValueError(f"{path}: the palette must be at most 256 (r, g, b) triples with values 0..255")
        colours += list(default_palette(256)[len(colours) :])
        # putpalette on an 'L' image turns it into a 'P' image whose indices are the mask values, unchanged.
        image.putpalette([value for colour in colours for value in colour])
    with atomic_open(path, "wb") as handle:
        image.save(handle, format="PNG")
