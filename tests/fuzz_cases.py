"""Generated inputs a careless or hostile user can hand pspnet, and the one property each must satisfy.

Shared by ``tests/test_fuzz.py`` (a few hundred cases in the suite) and ``benchmarks/fuzz.py`` (10,000 or more):
hypothesis strategies draw a *case* (a small frozen description: image mode, size, format, EXIF orientation,
damage, YAML text, metadata mutations...), :func:`materialize`-style helpers write it into a folder, and each
``run_*`` function feeds it to pspnet in-process (``pspnet.cli.main`` and the Python API, a tiny model loaded from a
model file, so no case pays for a new interpreter) and returns one :class:`Outcome` per entry point:

- ``ok``: it succeeded, with the right result (a label map of the upright image's size, a report that counts the
  mask's pixels, ...);
- ``named``: it failed as documented: exit status 1 or 2 and an ``error: ...`` line (or a ``data check`` problem,
  or the documented exception) that names the file at fault;
- ``unexpected``: a raw traceback, an exception escaping ``pspnet.cli.main`` (SystemExit aside), the CLI's
  ``error: unexpected TYPE`` line, or an undocumented exception class from the API;
- ``unnamed``: an error that does not name the file at fault, or is not one line of bounded length;
- ``wrong``: an answer that contradicts the case: a valid input refused, an invalid one accepted, or an output
  of the wrong size.

Only ``ok`` and ``named`` pass. An oracle decides what each case *should* give from how the case was built (the
values written into a lossless mask, the EXIF orientation written into a photo...), not from pspnet's code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hypothesis import strategies as st
from PIL import Image, ImageOps

# -- outcomes ------------------------------------------------------------------------------------------------------

OK, NAMED, UNEXPECTED, UNNAMED, WRONG = "ok", "named", "unexpected", "unnamed", "wrong"
KINDS = (OK, NAMED, UNEXPECTED, UNNAMED, WRONG)
PASSING = (OK, NAMED)
# An error line longer than this floods a terminal: it is no longer "one line a user can act on".
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Outcome:
    """What one entry point did with one case: a kind of :data:`KINDS` and what was seen (for the report)."""

    kind: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.kind in PASSING


def describe(outcomes: dict[str, Outcome]) -> str:
    return "; ".join(f"{entry}: {o.kind} {o.detail[:600]}" for entry, o in outcomes.items())


@dataclass
class CliResult:
    """``pspnet.cli.main(argv)`` run in-process: its status, what it printed, and an exception that escaped."""

    status: int | None
    out: str
    err: str
    escaped: BaseException | None = None


def run_cli(argv: Sequence[str]) -> CliResult:
    """Run ``pspnet.cli.main(argv)`` with stdout and stderr captured; SystemExit gives the status, any other
    exception (KeyboardInterrupt aside) is kept in ``escaped``."""
    from pspnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    escaped = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 2
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - what the fuzzing looks for
            status, escaped = None, error
    return CliResult(status, out.getvalue(), err.getvalue(), escaped)


def cli_failure(result: CliResult, names: Sequence[str | Path], *, report: bool = False) -> Outcome | None:
    """The outcome of a CLI run that did not succeed cleanly, or None when it exited 0 without a traceback.

    A failure passes (``named``) when the status is 1 or 2 and some ``error: ...`` line (predict lists its
    failures indented under one) names one of ``names``. With ``report`` (``data check``, which lists problems
    in its report instead), status 1 without an error line is None too: the caller reads the report.
    """
    if result.escaped is not None:
        return Outcome(UNEXPECTED, f"escaped {type(result.escaped).__name__}: {result.escaped}")
    text = result.err + result.out
    if "Traceback (most recent call last)" in text:
        return Outcome(UNEXPECTED, "traceback: " + text[-600:])
    lines = [line.strip() for line in result.err.splitlines()]
    errors = [line for line in lines if line.startswith("error:")]
    if any(line.startswith("error: unexpected ") for line in errors):
        return Outcome(UNEXPECTED, next(line for line in errors if line.startswith("error: unexpected ")))
    if result.status == 0 or (report and result.status == 1 and not errors):
        return None
    if result.status not in (1, 2) or not errors:
        return Outcome(UNEXPECTED, f"status {result.status} without an error line: {text[-600:]}")
    candidates = [line for line in lines if line and not line.startswith("predict")]
    too_long = [line for line in candidates if len(line) > MAX_ERROR_CHARS]
    if too_long:
        return Outcome(UNNAMED, f"an error line of {len(too_long[0])} characters: {too_long[0][:300]}...")
    wanted = [str(n) for n in names]
    if any(w in line for line in candidates for w in wanted):
        return Outcome(NAMED, next(line for line in candidates if any(w in line for w in wanted)))
    return Outcome(UNNAMED, f"status {result.status}, names none of {wanted}: {' | '.join(errors)[:600]}")


def api_failure(error: BaseException, allowed: tuple[type[BaseException], ...], names: Sequence[str | Path]) -> Outcome:
    """The outcome of an exception raised by the Python API: ``named`` when it is one of ``allowed`` and its
    message names one of ``names`` (and is one bounded line), else ``unexpected`` / ``unnamed``."""
    text = str(error)
    if not isinstance(error, allowed):
        return Outcome(UNEXPECTED, f"{type(error).__name__}: {text[:600]}")
    if "\n" in text.strip() or len(text) > MAX_ERROR_CHARS:
        return Outcome(UNNAMED, f"{type(error).__name__} of {len(text)} characters on several lines: {text[:300]}")
    if not any(str(n) in text for n in names):
        return Outcome(UNNAMED, f"{type(error).__name__} names none of {[str(n) for n in names]}: {text[:600]}")
    return Outcome(NAMED, f"{type(error).__name__}: {text[:300]}")


@contextlib.contextmanager
def scratch(parent: str | Path | None = None) -> Iterator[Path]:
    """A fresh folder for one case, removed afterwards (hypothesis runs many examples per test function)."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the tiny model every case uses ---------------------------------------------------------------------------------

K = 3  # classes of the tiny model and of the folder data sets
CROP = (24, 24)
BASE_SIZE = 24  # every photo is resized to a long side of 24 pixels: a forward pass costs milliseconds


def make_model_file(path: Path) -> Path:
    """The tiny model file: PSPNet on ResNet-18 with a 16-channel head, K classes, crop 24x24, base size 24."""
    import torch

    from pspnet.models.pspnet import PSPNet
    from pspnet.weights.model_file import make_card, save_model

    torch.manual_seed(2)
    model = PSPNet(num_classes=K, depth=18, head_channels=16, aux_channels=8)
    save_model(model, path, card=make_card(model.config, crop_size=CROP, base_size=BASE_SIZE))
    return path


@dataclass
class Fixture:
    """What the runners share: the model file, a Segmenter loaded from it once, a tiny valid data set and the
    tensors and metadata of the model file (for metadata mutations)."""

    root: Path
    model_file: Path
    segmenter: Any
    data_root: Path
    classes_root: Path
    tensors: dict
    meta: dict


def make_fixture(root: Path) -> Fixture:
    from pspnet.segmenter import Segmenter
    from pspnet.weights.model_file import read_weights_file

    root.mkdir(parents=True, exist_ok=True)
    model_file = make_model_file(root / "tiny.safetensors")
    tensors, meta = read_weights_file(model_file)
    data_root = make_tiny_dataset(root / "shapes")
    classes_root = make_tiny_dataset(root / "zeros", zeros=True)
    segmenter = Segmenter.from_checkpoint(model_file, device="cpu")
    return Fixture(root, model_file, segmenter, data_root, classes_root, tensors, meta)


def make_tiny_dataset(root: Path, *, zeros: bool = False) -> Path:
    """A folder data set of 2 train and 1 val 24x32 images with valid masks (classes a, b, c), for configs; with
    ``zeros`` every mask pixel is class 0, valid for any list of classes (for classes.yaml cases)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{i}.png"
            )
            mask = rng.integers(0, K, (24, 32), dtype=np.uint8) * (not zeros)
            Image.fromarray(mask).save(root / "masks" / split / f"{i}.png")
    (root / "classes.yaml").write_text("classes: [a, b, c]\ncrop_size: [24, 24]\nbase_size: 24\n")
    return root


# -- images -----------------------------------------------------------------------------------------------------

FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "GIF": ".gif"}
# Formats whose files carry an EXIF orientation that Pillow reads back (TIFF: its own Orientation tag, applied by
# Pillow while loading); BMP and GIF have none.
EXIF_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
# "PT": a palette image with a transparent index.
MODES = ("1", "L", "LA", "P", "PT", "RGB", "RGBA", "I;16", "I", "F", "CMYK", "YCbCr")
VALID_ORIENTATIONS = tuple(range(1, 9))
INVALID_ORIENTATIONS = (0, 9, 10, 255, 65535)
DAMAGES = ("none", "truncate", "garbage")


def _pixels(mode: str, height: int, width: int, seed: int) -> Image.Image:
    """A ``height x width`` image of ``mode`` holding random values (floats include NaN, infinities, extremes)."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width), dtype=np.uint8) * 255).convert("1")
    if mode in ("P", "PT"):
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        if mode == "PT":
            image.info["transparency"] = int(rng.integers(0, 256))
        return image
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31, (height, width), dtype=np.int64).astype(np.int32))
    if mode == "F":
        values = rng.choice([0.0, 0.25, 1.0, -3.0, 7.5, 1e30, -1e30, np.nan, np.inf, -np.inf], (height, width))
        return Image.fromarray(values.astype(np.float32))
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "YCbCr": 3}[mode]
    data = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if mode == "L":
        return Image.fromarray(data[:, :, 0])
    return Image.frombytes(mode, (width, height), data.tobytes())


def encode_image(mode: str, fmt: str, height: int, width: int, seed: int, orientation: int | None) -> bytes:
    """The bytes of a ``fmt`` file of a ``mode`` image with an EXIF orientation tag (None: no tag)."""
    image = _pixels(mode, height, width, seed)
    options: dict[str, Any] = {}
    if orientation is not None and fmt in EXIF_FORMATS:
        if fmt == "TIFF":
            options["tiffinfo"] = {0x0112: orientation}
        else:
            exif = Image.Exif()
            exif[0x0112] = orientation
            options["exif"] = exif
    if fmt == "JPEG":
        options["quality"] = 90
    if "transparency" in image.info and fmt in ("PNG", "GIF", "WEBP"):
        options["transparency"] = image.info["transparency"]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _savable_pairs() -> tuple[tuple[str, str], ...]:
    """(mode, format) pairs Pillow writes and reads back, found by trying a 2x3 image with an orientation tag."""
    pairs = []
    for fmt in FORMAT_SUFFIX:
        for mode in MODES:
            try:
                data = encode_image(mode, fmt, 2, 3, 0, 6)
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
            except Exception:  # noqa: BLE001, S112 - Pillow cannot write or read this pair: it is not generated
                continue
            pairs.append((mode, fmt))
    return tuple(pairs)


SAVABLE = _savable_pairs()


@dataclass(frozen=True)
class ImageCase:
    """A photo file: ``kind`` "image" (a ``mode`` image of ``height x width`` in ``fmt`` with EXIF ``orientation``,
    ``damage`` "none", "truncate" at ``cut`` of its length, or "garbage" after ``cut`` of it), "large" (a blank
    1-bit PNG of ``height x width``, up to beyond the pixel cap, in a small file), "random" (the bytes ``data``)
    or "empty"; saved under a name ending in ``suffix`` (which may lie about the format)."""

    kind: str
    mode: str = "RGB"
    fmt: str = "PNG"
    height: int = 1
    width: int = 1
    orientation: int | None = None
    seed: int = 0
    damage: str = "none"
    cut: float = 0.5
    suffix: str = ".png"
    data: bytes = b""

    @property
    def upright(self) -> tuple[int, int]:
        """(H, W) of the photo as a viewer shows it: an EXIF orientation 5..8 swaps the sides."""
        swap = self.fmt in EXIF_FORMATS and self.orientation in (5, 6, 7, 8)
        return (self.width, self.height) if swap else (self.height, self.width)

    @property
    def size_known(self) -> bool:
        """Whether a success must give :attr:`upright`: garbage or random bytes may rewrite the header's size."""
        return self.kind in ("image", "large") and self.damage in ("none", "truncate")

    @property
    def expect(self) -> str:
        """Reading it: "ok" (must succeed), "error" (must fail naming the file) or "either"."""
        if self.kind == "empty":
            return "error"
        if self.kind == "random" or self.damage != "none":
            return "either"
        return "ok"

    @property
    def predict_expect(self) -> str:
        """Predicting it: as :attr:`expect`, and an error above the pixel cap (2**24 pixels by default)."""
        return "error" if self.height * self.width > 2**24 else self.expect

    def content(self) -> bytes:
        if self.kind == "empty":
            return b""
        if self.kind == "large":
            buffer = io.BytesIO()
            Image.new("1", (self.width, self.height)).save(buffer, format="PNG")
            return buffer.getvalue()
        if self.kind == "random":
            return self.data
        data = encode_image(self.mode, self.fmt, self.height, self.width, self.seed, self.orientation)
        cut = min(int(len(data) * self.cut), len(data) - 1)
        if self.damage == "truncate":
            return data[:cut]
        if self.damage == "garbage":
            rng = random.Random(self.seed)
            return data[:cut] + bytes(rng.randrange(256) for _ in range(len(data) - cut))
        return data

    def write(self, folder: Path, stem: str = "photo") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}{self.suffix}"
        path.write_bytes(self.content())
        return path


def _sides() -> st.SearchStrategy[tuple[int, int]]:
    small = st.integers(1, 40)
    thin = st.integers(41, 300)
    return st.one_of(
        st.tuples(small, small),
        st.tuples(st.just(1), thin),  # 1 x N
        st.tuples(thin, st.just(1)),  # N x 1
        st.tuples(st.integers(1, 3), thin),
        st.tuples(thin, st.integers(1, 3)),
    )


# Blank 1-bit photos: above the pixel cap (4500x4000, one row of 2**24 + 1) and below it.
LARGE_SIDES = ((4500, 4000), (1, 2**24 + 1), (2000, 1500), (1, 100_000))


@st.composite
def image_cases(
    draw: st.DrawFn, suffixes: Sequence[str] | None = None, damaged: bool = True, large: bool = True
) -> ImageCase:
    """Photos of every savable (mode, format), 1x1 to thin 1x300 or 300x1, EXIF orientations 1..8, invalid ones
    or none; with ``damaged``, also truncated files, files with garbage after a valid start, random bytes with an
    image suffix and empty files. ``suffixes``: the names the files may have (default: each format's own, or a
    suffix that lies)."""
    kinds = ["image"] * 8 + (["random", "empty"] if damaged else []) + (["large"] if large else [])
    kind = draw(st.sampled_from(kinds))
    own = suffixes or tuple(FORMAT_SUFFIX.values())
    if kind == "large":
        height, width = draw(st.sampled_from(LARGE_SIDES))
        return ImageCase("large", "1", "PNG", height, width, suffix=".png")
    if kind != "image":
        suffix = draw(st.sampled_from(own))
        data = draw(st.binary(max_size=600)) if kind == "random" else b""
        return ImageCase(kind, suffix=suffix, data=data, seed=draw(st.integers(0, 2**16)))
    mode, fmt = draw(st.sampled_from(SAVABLE))
    height, width = draw(_sides())
    orientation = draw(st.one_of(st.none(), st.sampled_from(VALID_ORIENTATIONS), st.sampled_from(INVALID_ORIENTATIONS)))
    damage = draw(st.sampled_from(("none",) * 6 + DAMAGES[1:])) if damaged else "none"
    cut = draw(st.floats(0.0, 0.999))
    if suffixes is not None:
        suffix = FORMAT_SUFFIX[fmt] if FORMAT_SUFFIX[fmt] in suffixes else draw(st.sampled_from(suffixes))
    else:
        suffix = draw(st.sampled_from([FORMAT_SUFFIX[fmt]] * 4 + [FORMAT_SUFFIX[fmt].upper(), ".png", ".jpg"]))
    return ImageCase("image", mode, fmt, height, width, orientation, draw(st.integers(0, 2**16)), damage, cut, suffix)


def _predict_argv(model: Path, inputs: Sequence[Path], out: Path, extra: Sequence[str] = ()) -> list[str]:
    return ["predict", str(model), *map(str, inputs), "--out", str(out), "--no-progress", "--device", "cpu", *extra]


def check_image_answer(case: ImageCase, shape: tuple[int, ...], what: str, expect: str | None = None) -> Outcome:
    """An ``ok`` when a success was allowed (``expect``, default the case's) and ``shape`` starts with the upright
    (H, W), else ``wrong``."""
    if (expect or case.expect) == "error":
        return Outcome(WRONG, f"{what} accepted a file that must be refused")
    if case.size_known and tuple(shape[:2]) != case.upright:
        return Outcome(WRONG, f"{what} is {tuple(shape[:2])}, the upright photo is {case.upright}")
    return Outcome(OK)


def refused(case: ImageCase, outcome: Outcome, expect: str | None = None) -> Outcome:
    """A named failure of a case that had to succeed (``expect``, default the case's) is a wrong answer."""
    if outcome.kind == NAMED and (expect or case.expect) == "ok":
        return Outcome(WRONG, "a valid photo was refused: " + outcome.detail)
    return outcome


# Options of pspnet predict a case runs with: sliding windows, flip, scales, bf16, outputs of every kind.
PREDICT_OPTIONS = (
    (),
    (),
    ("--mode", "slide"),
    ("--flip",),
    ("--scales", "0.5", "1.0", "1.75"),
    ("--mode", "whole", "--precision", "bf16"),
    ("--batch", "1", "--overlay", "--save-proba"),
)


@dataclass(frozen=True)
class PredictCase:
    """A photo and the options ``pspnet predict`` runs on it with."""

    image: ImageCase
    options: tuple[str, ...] = ()


def predict_cases() -> st.SearchStrategy[PredictCase]:
    return st.builds(PredictCase, image_cases(), st.sampled_from(PREDICT_OPTIONS))


def run_image_cli(fixture: Fixture, case: ImageCase | PredictCase, folder: Path) -> Outcome:
    """``pspnet predict MODEL PHOTO --out OUT [OPTIONS]``: exit 0 and a label map of the upright size, or a
    failure naming the photo."""
    from pspnet.data.io import read_mask

    options = case.options if isinstance(case, PredictCase) else ()
    case = case.image if isinstance(case, PredictCase) else case
    path = case.write(folder / "in")
    out = folder / "out"
    result = run_cli(_predict_argv(fixture.model_file, [path], out, options))
    failure = cli_failure(result, [path])
    if failure is not None:
        return refused(case, failure, case.predict_expect)
    labels = out / f"{path.stem}.png"
    if not labels.is_file():
        return Outcome(WRONG, f"exit 0 but no {labels}")
    return check_image_answer(case, read_mask(labels).shape, "the label map", case.predict_expect)


def run_image_api(fixture: Fixture, case: ImageCase, folder: Path) -> dict[str, Outcome]:
    """``as_rgb_array(path)``, ``Segmenter.predict(path)`` and, when Pillow opens the file, ``Segmenter.predict``
    of the PIL image: the upright size, or a DataError / ValueError naming the file."""
    from pspnet.errors import DataError
    from pspnet.segmenter import as_rgb_array

    path = case.write(folder / "in")
    outcomes: dict[str, Outcome] = {}
    for entry, call, expect in (
        ("as_rgb_array", lambda: as_rgb_array(path), case.expect),
        ("Segmenter.predict", lambda: fixture.segmenter.predict(path), case.predict_expect),
    ):
        try:
            answer = call()
        except Exception as error:  # noqa: BLE001 - classified
            outcomes[entry] = refused(case, api_failure(error, (DataError, ValueError), [path]), expect)
            continue
        outcome = check_image_answer(case, answer.shape, entry, expect)
        if outcome.kind == OK and answer.dtype != np.uint8:
            outcome = Outcome(WRONG, f"{entry} gave dtype {answer.dtype}")
        outcomes[entry] = outcome
    # A PIL image is turned upright by ImageOps.exif_transpose, as documented: the size Pillow's own function
    # gives is the answer (for a palette TIFF opened by name, Pillow 13 loads the raw grid while Image.open reported
    # the upright size, so exif_transpose leaves it raw; a file read by name through pspnet is upright).
    try:
        with Image.open(path) as image:
            pillow_hw = tuple(reversed(ImageOps.exif_transpose(image).size))
    except Exception:  # noqa: BLE001 - Pillow itself cannot open or decode it: no answer to compare with
        pillow_hw = None
    try:
        image = Image.open(path)
    except Exception:  # noqa: BLE001 - Pillow itself cannot open it: nothing to hand to the API
        return outcomes
    with image:
        try:
            answer = fixture.segmenter.predict(image)
        except Exception as error:  # noqa: BLE001 - classified
            outcome = api_failure(error, (DataError, ValueError), [path, "PIL image"])
            if outcome.kind == NAMED and pillow_hw is not None and case.predict_expect != "error":
                outcome = Outcome(WRONG, "an image Pillow decodes was refused: " + outcome.detail)
        else:
            outcome = Outcome(OK)
            if case.predict_expect == "error":
                outcome = Outcome(WRONG, "Segmenter.predict(PIL) accepted an image that must be refused")
            elif pillow_hw is None and case.expect == "ok":
                outcome = Outcome(WRONG, "Pillow cannot decode a photo that must be valid")
            elif pillow_hw is not None and tuple(answer.shape) != pillow_hw:
                outcome = Outcome(
                    WRONG, f"Segmenter.predict(PIL) is {answer.shape}, Pillow's exif_transpose gives {pillow_hw}"
                )
        outcomes["Segmenter.predict(PIL)"] = outcome
    return outcomes


# -- masks in a folder data set ---------------------------------------------------------------------------------

# The classes.yaml of the mask cases: 3 classes with the default palette (black, dark red, dark green), ignore 255.
MASK_CLASSES_YAML = "classes: [a, b, c]\ncrop_size: [24, 24]\nbase_size: 24\n"
CLASS_COLOURS = ((0, 0, 0), (128, 0, 0), (0, 128, 0))
IGNORE = 255
# How a mask is stored: PNG modes, plus content that is not a PNG index mask behind a .png name.
MASK_STORAGE = ("L", "P", "I;16", "1", "LA", "RGB", "RGBA", "F-tiff", "L-jpeg", "CMYK-jpeg")
MASK_SIZES = ("same", "same", "same", "transposed", "other")
MASK_VALUES = ("valid", "valid", "out_of_range")


@dataclass(frozen=True)
class MaskCase:
    """A folder data set of one photo (``image``, suffix of a folder data set) and its mask: stored as
    ``storage``, of ``size`` "same" (the photo's upright size), "transposed" or "other" (``other_hw``), holding
    ``values`` "valid" (class ids and 255, or class colours) or "out_of_range" ones, with ``damage``."""

    image: ImageCase
    storage: str
    size: str
    values: str
    other_hw: tuple[int, int]
    seed: int
    damage: str = "none"
    cut: float = 0.5

    def mask_hw(self) -> tuple[int, int]:
        h, w = self.image.upright
        return {"same": (h, w), "transposed": (w, h), "other": self.other_hw}[self.size]

    def mask_array(self) -> np.ndarray:
        """The label values written: (H, W) integers, or (H, W, 3) colours for RGB storage."""
        rng = np.random.default_rng(self.seed)
        h, w = self.mask_hw()
        if self.storage in ("RGB", "RGBA"):
            colours = np.array(CLASS_COLOURS, np.uint8)
            mask = colours[rng.integers(0, K, (h, w))]
            if self.values == "out_of_range":
                bad = rng.integers(0, 256, 3).astype(np.uint8)
                if tuple(bad) in CLASS_COLOURS:
                    bad[0] = 7
                mask[rng.integers(0, h), rng.integers(0, w)] = bad
            return mask
        if self.storage == "1":
            return rng.integers(0, 2, (h, w)).astype(np.int64)  # 0/1: always class ids
        mask = rng.choice(np.array([0, 1, 2, IGNORE]), (h, w))
        if self.values == "out_of_range":
            top = 65535 if self.storage == "I;16" else 254
            value = int(rng.integers(K, top + 1))
            mask[rng.integers(0, h), rng.integers(0, w)] = value if value != IGNORE else K
        return mask

    @property
    def lossless(self) -> bool:
        return self.storage not in ("L-jpeg", "CMYK-jpeg")

    @property
    def readable(self) -> bool:
        """Whether pspnet reads this storage as a mask at all (float and CMYK masks are refused)."""
        return self.storage not in ("F-tiff", "CMYK-jpeg")

    def content(self) -> bytes:
        mask = self.mask_array()
        buffer = io.BytesIO()
        if self.storage in ("L", "P", "LA"):
            image = Image.fromarray(mask.astype(np.uint8))
            if self.storage == "P":
                image.putpalette(np.random.default_rng(self.seed).integers(0, 256, 768, dtype=np.uint8).tobytes())
            elif self.storage == "LA":
                image = Image.merge("LA", (image, Image.new("L", image.size, 200)))
            image.save(buffer, format="PNG")
        elif self.storage == "I;16":
            Image.fromarray(mask.astype(np.uint16)).save(buffer, format="PNG")
        elif self.storage == "1":
            Image.fromarray((mask * 255).astype(np.uint8)).convert("1").save(buffer, format="PNG")
        elif self.storage in ("RGB", "RGBA"):
            image = Image.fromarray(mask.astype(np.uint8))
            (image.convert("RGBA") if self.storage == "RGBA" else image).save(buffer, format="PNG")
        elif self.storage == "F-tiff":
            Image.fromarray(mask.astype(np.float32)).save(buffer, format="TIFF")
        elif self.storage == "L-jpeg":
            Image.fromarray(mask.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
        else:  # CMYK-jpeg
            Image.fromarray(mask.astype(np.uint8)).convert("CMYK").save(buffer, format="JPEG")
        data = buffer.getvalue()
        cut = min(int(len(data) * self.cut), len(data) - 1)
        if self.damage == "truncate":
            return data[:cut]
        if self.damage == "empty":
            return b""
        return data

    def counts(self) -> tuple[list[int], int]:
        """(pixels of each class, ignored pixels) the mask holds when it is valid."""
        mask = self.mask_array()
        if mask.ndim == 3:
            codes = [tuple(c) for c in mask.reshape(-1, 3).tolist()]
            return [codes.count(c) for c in CLASS_COLOURS], 0
        return [int((mask == k).sum()) for k in range(K)], int((mask == IGNORE).sum())

    @property
    def expect(self) -> str:
        """ "ok", "error" or "either" for reading this data set as training does."""
        if self.image.expect == "error" or self.damage == "empty" or not self.readable:
            return "error"
        if self.size == "other" and self.other_hw == self.image.upright:
            size_ok = True
        else:
            size_ok = self.size == "same" or (
                self.size == "transposed" and self.image.upright[0] == self.image.upright[1]
            )
        if not size_ok:
            return "error"
        if self.image.expect == "either" or not self.lossless or self.damage == "truncate":
            return "either"  # a PNG cut after its pixel data (before IEND) still decodes
        return "ok" if self.values == "valid" or self.storage == "1" else "error"

    def write(self, root: Path) -> tuple[Path, Path]:
        """ROOT/images/val/<photo>, ROOT/masks/val/photo.png and ROOT/classes.yaml; returns (image, mask)."""
        image = self.image.write(root / "images" / "val")
        mask = root / "masks" / "val" / "photo.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        mask.write_bytes(self.content())
        (root / "classes.yaml").write_text(MASK_CLASSES_YAML)
        return image, mask


FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@st.composite
def mask_cases(draw: st.DrawFn) -> MaskCase:
    """A photo (mostly valid, any mode/format a folder data set reads, EXIF included) and a mask of any storage,
    size and values, sometimes damaged."""
    damaged = draw(st.booleans()) and draw(st.booleans())
    image = draw(image_cases(suffixes=FOLDER_SUFFIXES, damaged=damaged, large=False))
    return MaskCase(
        image=image,
        storage=draw(st.sampled_from(MASK_STORAGE)),
        size=draw(st.sampled_from(MASK_SIZES)),
        values=draw(st.sampled_from(MASK_VALUES)),
        other_hw=draw(st.tuples(st.integers(1, 40), st.integers(1, 40))),
        seed=draw(st.integers(0, 2**16)),
        damage=draw(st.sampled_from(("none",) * 8 + ("truncate", "empty"))),
        cut=draw(st.floats(0.0, 0.999)),
    )


def run_mask_check(case: MaskCase, folder: Path) -> Outcome:
    """``pspnet data check --dataset folder --split val --json``: exit 0 with the mask's own pixel counts, or exit
    1 with a problem naming the photo or the mask."""
    root = folder / "data"
    image, mask = case.write(root)
    result = run_cli(
        ["data", "check", "--dataset", "folder", "--root", root, "--split", "val", "--json", "--workers", "1"]
    )
    failure = cli_failure(result, [image, mask], report=True)
    if failure is not None and failure.kind != NAMED:
        return failure
    try:
        report = json.loads(result.out)
    except ValueError:
        return Outcome(WRONG, f"status {result.status} without a JSON report: {result.out[:300]}")
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    long = [p for p in report["problems"] if len(p["detail"]) > MAX_ERROR_CHARS]
    if long:
        return Outcome(
            UNNAMED, f"a problem described in {len(long[0]['detail'])} characters: {long[0]['detail'][:300]}"
        )
    if result.status == 0:
        if case.expect == "error" or errors:
            return Outcome(WRONG, f"exit 0 for a data set that must fail: {errors}")
        if case.expect == "ok":
            pixels, ignored = case.counts()
            seen = [c["pixels"] for c in report["classes"]]
            if seen != pixels or report["ignored_pixels"] != ignored:
                return Outcome(
                    WRONG, f"counted {seen} + {report['ignored_pixels']} ignored, wrote {pixels} + {ignored}"
                )
        return Outcome(OK)
    if result.status != 1 or not errors:
        return Outcome(UNEXPECTED, f"status {result.status}, problems {report['problems']}")
    unnamed = [p for p in errors if not {str(image), str(mask)} & set(p["files"])]
    if unnamed:
        return Outcome(UNNAMED, f"problems that name neither file: {unnamed}")
    if case.expect == "ok":
        return Outcome(WRONG, f"a valid pair was refused: {errors}")
    return Outcome(NAMED, "; ".join(f"{p['kind']}: {p['detail']}" for p in errors)[:600])


def run_mask_eval(fixture: Fixture, case: MaskCase, folder: Path) -> Outcome:
    """``pspnet eval MODEL --dataset folder --split val --workers 0``: exit 0, or one error line naming the photo
    or the mask."""
    root = folder / "data"
    if not root.exists():
        case.write(root)
    image, mask = root / "images" / "val" / f"photo{case.image.suffix}", root / "masks" / "val" / "photo.png"
    result = run_cli(
        [
            "eval",
            fixture.model_file,
            "--dataset",
            "folder",
            "--root",
            root,
            "--split",
            "val",
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    failure = cli_failure(result, [image, mask])
    if failure is None:
        if case.expect == "error":
            return Outcome(WRONG, "exit 0 for a data set that must fail")
        if "mIoU" not in result.out:
            return Outcome(WRONG, f"exit 0 without metrics: {result.out[:300]}")
        return Outcome(OK)
    if failure.kind == NAMED and case.expect == "ok":
        return Outcome(WRONG, "a valid pair was refused: " + failure.detail)
    return failure


# -- YAML texts: classes.yaml and training configs -------------------------------------------------------------

_INTERESTING_INTS = (0, 1, -1, 2, 3, 7, 8, 16, 18, 32, 50, 255, 256, 473, 65535, 65536, 2**31, 2**63, 10**30)


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(_INTERESTING_INTS),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["", "a", "auto", "cpu", "folder", "val", "fp32", "nan", ".inf", "1e-3", "~", "yes"]),
    )


def values() -> st.SearchStrategy[Any]:
    """Any YAML/JSON-able value: scalars of every type, lists and mappings of them, nested a few levels."""
    return st.recursive(
        _scalars(),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
        max_leaves=8,
    )


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def alias_bomb(key: str, levels: int, fan: int) -> str:
    """``key: {...}``: a mapping whose aliases expand to ``fan ** levels`` items (a "billion laughs", kept small
    here): cheap to load, since YAML shares the aliased lists, but not to print in full."""
    items = ["l0: &b0 [x]"] + [f"l{i}: &b{i} [{', '.join([f'*b{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return f"{key}: {{{', '.join(items)}}}\n"


@st.composite
def nasty_texts(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """Texts that break a YAML reader rather than the schema: binary, not UTF-8, a list, an integer of 5000
    digits, nesting 5000 deep, an alias bomb, a tag that would run code if the loader were unsafe, ... The ones
    about one value are put under a key of ``base`` (a valid mapping), after its other keys, so that a reader
    reaches them."""
    key = draw(st.sampled_from(sorted(base)))
    levels, fan = draw(st.integers(2, 6)), draw(st.integers(2, 10))
    values = {
        "huge integer": f"{key}: {'9' * 5000}\n",  # beyond Python's 4300-digit int conversion limit
        "deep nesting": f"{key}: {'[' * 1000}{']' * 1000}\n",  # deeper than the recursion limit
        "unclosed": f"{key}: [1, 2\n",
        "tab": f"{key}:\n\t- a\n",
        "python tag": f"{key}: !!python/object/apply:os.system ['true']\n",  # code, if the loader were unsafe
        "unhashable key": f"? [a, b]\n: 1\n{key}: 1\n",
        "alias bomb": alias_bomb(key, levels, fan),
        "infinity": f"{key}: .inf\n",
        "not a number": f"{key}: .nan\n",
    }
    whole = {
        "empty": b"",
        "binary": draw(st.binary(max_size=200)),
        "utf-16": b"\xff\xfe" + _dump(base).encode("utf-16-le"),
        "latin-1": (_dump(base) + "name: caf\xe9\n").encode("latin-1"),
        "a list": b"- a\n- b\n",
        "a string": b"just a string\n",
    }
    how = draw(st.sampled_from(sorted(values) + sorted(whole)))
    if how in whole:
        return whole[how]
    rest = {k: v for k, v in base.items() if k != key}
    return ((_dump(rest) if rest else "") + values[how]).encode()


@dataclass(frozen=True)
class TextCase:
    """A YAML file's bytes and what reading it must give: "ok", "error" or "either"."""

    data: bytes
    expect: str
    how: str


CLASSES_KEYS = ("classes", "ignore_index", "ignore_color", "name", "crop_size", "base_size")
VALID_CLASSES = {
    "name": "potholes",
    "classes": [{"name": "road", "color": [128, 64, 128]}, {"name": "pothole", "color": [255, 0, 0]}, "crack"],
    "ignore_index": 255,
    "ignore_color": [1, 2, 3],
    "crop_size": [24, 24],
    "base_size": 24,
}


@st.composite
def classes_cases(draw: st.DrawFn) -> TextCase:
    """``classes.yaml`` files: the valid example with fields deleted, replaced or retyped; random mappings; a key
    or class name given twice; texts that break YAML (binary, not UTF-8, huge numbers, deep nesting, aliases)."""
    how = draw(st.sampled_from(["mutate", "mutate", "mutate", "random", "duplicate", "nasty"]))
    if how == "nasty":
        return TextCase(draw(nasty_texts(VALID_CLASSES)), "either", how)
    if how == "random":
        data = draw(st.dictionaries(st.sampled_from(CLASSES_KEYS + ("other",)), values(), max_size=6))
        return TextCase(_dump(data).encode(), "either", how)
    data = json.loads(json.dumps(VALID_CLASSES))
    if how == "duplicate":
        key = draw(st.sampled_from(CLASSES_KEYS))
        text = _dump(data) + _dump({key: data[key]})  # the same key again, at the end
        return TextCase(text.encode(), "error", f"duplicate key {key}")
    mutations = draw(st.lists(json_mutations(fields=CLASSES_KEYS), min_size=1, max_size=3))
    return TextCase(_dump(apply_mutations(data, mutations)).encode(), "either", f"mutate {mutations}")


def run_classes(fixture: Fixture, case: TextCase, folder: Path) -> dict[str, Outcome]:
    """``pspnet data check --dataset folder`` on a valid data set with this ``classes.yaml``, and
    ``build_dataset``: success (then both agree), or a DataError / ``bad_classes_file`` naming classes.yaml."""
    from pspnet.data.datasets import build_dataset
    from pspnet.errors import DataError

    root = folder / "data"
    shutil.copytree(fixture.classes_root, root)
    path = root / "classes.yaml"
    path.write_bytes(case.data)
    outcomes: dict[str, Outcome] = {}
    result = run_cli(
        ["data", "check", "--dataset", "folder", "--root", root, "--split", "val", "--json", "--no-progress"]
    )
    failure = cli_failure(result, [path], report=True)
    if failure is not None and failure.kind != NAMED:
        outcomes["data check"] = failure
    else:
        try:
            problems = json.loads(result.out)["problems"]
        except ValueError:
            problems = None
        if problems is None:
            outcomes["data check"] = Outcome(WRONG, f"no JSON report: {result.out[:300]}")
        elif any(len(p["detail"]) > MAX_ERROR_CHARS for p in problems):
            outcomes["data check"] = Outcome(UNNAMED, f"a problem of {max(len(p['detail']) for p in problems)} chars")
        elif result.status == 0:
            outcomes["data check"] = Outcome(OK) if case.expect != "error" else Outcome(WRONG, "accepted " + case.how)
        elif not problems or any(str(path) not in p["files"] for p in problems):
            outcomes["data check"] = Outcome(UNNAMED, f"problems not naming {path}: {problems}"[:600])
        else:
            outcomes["data check"] = Outcome(NAMED, problems[0]["detail"][:300])
    try:
        build_dataset("folder", root, "val")
    except Exception as error:  # noqa: BLE001 - classified
        outcome = api_failure(error, (DataError,), [path])
    else:
        outcome = Outcome(OK) if case.expect != "error" else Outcome(WRONG, "accepted " + case.how)
    outcomes["build_dataset"] = outcome
    check = outcomes["data check"].kind
    if outcome.kind in PASSING and check in PASSING and (outcome.kind == OK) != (check == OK):
        outcomes["build_dataset"] = Outcome(WRONG, f"build_dataset {outcome.kind} but data check {check}")
    return outcomes


# Settings of a training run that takes about a second: what a valid generated config is trained with.
TINY_CONFIG = {
    "dataset": "folder",
    "depth": 18,
    "head_channels": 16,
    "aux_channels": 8,
    "crop_size": [24, 24],
    "batch_size": 2,
    "workers": 0,
    "log_every": 1,
    "device": "cpu",
    "iterations": 1,
    "val_split": None,
}


def _cheap(config: Any) -> bool:
    """Whether a valid TrainConfig trains in seconds (anything bigger is not run, only validated)."""
    budget = config.iterations if config.iterations is not None else config.epochs * 2
    return (
        budget <= 2
        and config.depth == 18
        and max(config.head_channels, config.aux_channels) <= 64
        and config.crop_size[0] * config.crop_size[1] <= 48 * 48
        and config.batch_size * config.accumulate <= 8
        and config.scale_range[1] <= 4
        and not config.compile
        and config.workers == 0
        and config.device in ("cpu", "auto")
        and config.precision in ("fp32", "bf16")
        and config.val_split in (None, "val", "train")
        and config.output_stride in (8, 16, 32)
        and len(config.bins) <= 4
        and max(config.bins) <= 16
    )


@st.composite
def config_cases(draw: st.DrawFn) -> TextCase:
    """Training configs: the tiny valid config with keys deleted, replaced (wrong types, NaN, infinities, negative
    and huge numbers) or added; random mappings; a key given twice; texts that break YAML."""
    how = draw(st.sampled_from(["mutate", "mutate", "mutate", "mutate", "random", "duplicate", "nasty"]))
    if how == "nasty":
        return TextCase(draw(nasty_texts(dict(TINY_CONFIG, root="{root}"))), "either", how)
    if how == "random":
        keys = st.sampled_from(sorted(TINY_CONFIG) + ["lr", "epochs", "poly_power", "root", "bogus"])
        return TextCase(_dump(draw(st.dictionaries(keys, values(), max_size=8))).encode(), "either", how)
    data = dict(TINY_CONFIG, root="{root}")
    if how == "duplicate":
        key = draw(st.sampled_from(sorted(data)))
        return TextCase((_dump(data) + _dump({key: data[key]})).encode(), "error", f"duplicate key {key}")
    extra = (
        "lr",
        "epochs",
        "poly_power",
        "aux_weight",
        "momentum",
        "scale_range",
        "bins",
        "output_stride",
        "precision",
        "accumulate",
        "val_limit",
        "class_weighting",
        "ignore_index",
        "freeze_bn",
    )
    mutations = draw(st.lists(json_mutations(extra, fields=sorted(data)), min_size=1, max_size=3))
    return TextCase(_dump(apply_mutations(data, mutations)).encode(), "either", f"mutate {mutations}")


def run_config(fixture: Fixture, case: TextCase, folder: Path, *, train_valid: bool) -> dict[str, Outcome]:
    """``load_train_config(path)``: a TrainConfig or a ConfigError naming the file; then ``pspnet train path
    --out RUN``: for an invalid config, exit 1 naming the file; a valid one is trained only when it is tiny
    (:func:`_cheap`) and ``train_valid``: exit 0, or a failure naming the file, the data set or the run folder."""
    from pspnet.engine.config import load_train_config
    from pspnet.errors import ConfigError

    path = folder / "config.yaml"
    path.write_bytes(
        case.data.replace(b"'{root}'", str(fixture.data_root).encode()).replace(
            b"{root}", str(fixture.data_root).encode()
        )
    )
    outcomes: dict[str, Outcome] = {}
    config = None
    try:
        config = load_train_config(str(path))
    except Exception as error:  # noqa: BLE001 - classified
        outcomes["load_train_config"] = api_failure(error, (ConfigError,), [path])
    else:
        outcomes["load_train_config"] = (
            Outcome(OK) if case.expect != "error" else Outcome(WRONG, "accepted " + case.how)
        )
    if config is not None and not (train_valid and _cheap(config)):
        return outcomes
    run = folder / "run"
    result = run_cli(["train", path, "--out", run, "--quiet"])
    named = [path, fixture.data_root, run]
    if config is not None:  # a valid config may name a data set or backbone file that is not there
        named += [p for p in (config.root, config.backbone_init) if p]
    failure = cli_failure(result, named)
    if failure is not None and failure.kind == UNNAMED and config is not None:
        # a valid config the data or the machine cannot honour: naming the key at fault is naming the argument
        keys = [f.name for f in dataclasses.fields(config)]
        line = next((line for line in result.err.splitlines() if line.startswith("error:")), "")
        if re.search(r"\b(" + "|".join(keys) + r")\b", line) and len(line) <= MAX_ERROR_CHARS:
            failure = Outcome(NAMED, line)
    if config is None:
        outcomes["train"] = failure or Outcome(WRONG, "pspnet train accepted a config load_train_config refused")
    elif failure is None:
        outcomes["train"] = (
            Outcome(OK)
            if (run / "model.safetensors").is_file() or list(run.glob("ckpt_*"))
            else (Outcome(WRONG, f"exit 0 without a model in {run}: {result.out[-300:]}"))
        )
    else:
        outcomes["train"] = failure
    return outcomes


# -- JSON mutations (model-file metadata, and the YAML mappings above) ------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """Change the value at a path chosen by ``pick`` (an index into the paths of the tree, modulo their
    number): ``op`` delete, replace (with ``value``), retype (into a string, list, mapping or null), alike (another
    value of its type, see :func:`_alike`), add (an unknown key ``key`` beside it), nest (wrap it in a list), grow
    (append ``value`` to a list) or shrink (drop a list's last item). With ``field``, the path is one under that
    top-level key: every field gets its share of mutations, however many leaves the others have."""

    op: str
    pick: int
    value: Any = None
    key: str = ""
    field: str | None = None  # pick among the paths under this top-level key (when the tree has it)


def json_mutations(extra_keys: Sequence[str] = (), fields: Sequence[str] = ()) -> st.SearchStrategy[Mutation]:
    ops = st.sampled_from(["delete", "replace", "replace", "retype", "add", "nest", "grow", "shrink"] + ["alike"] * 6)
    keys = st.one_of(st.text(max_size=8), st.sampled_from(tuple(extra_keys) or ("x",)))
    field = st.one_of(st.none(), st.sampled_from(tuple(fields))) if fields else st.none()
    return st.builds(Mutation, op=ops, pick=st.integers(0, 10**6), value=values(), key=keys, field=field)


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path below the root of a JSON tree: tuples of mapping keys and list indices."""
    found = []
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return found
    for key, child in items:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


def _alike(value: Any, m: Mutation) -> Any:
    """Another value of the same JSON type as ``value`` (ranges' edges, NaN, infinities, empty and odd strings),
    so that a mutation often keeps a file well-formed and reaches the checks of ranges and the code behind them."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        choices = [*_INTERESTING_INTS, -value, value + 1, value - 1, 2 * value, value * 1000]
    elif isinstance(value, float):
        choices = [0.0, -1.0, 1e-9, 0.5, 255.0, 1e9, math.nan, math.inf, -math.inf, -value, 2 * value]
    elif isinstance(value, str):
        choices = ["", " ", "x", value * 2, value.upper(), "\u00e9\u00e8", "a\nb", "=1+1", m.key, "../" + value]
    elif isinstance(value, list) and value:
        choices = [value[::-1], value * 2, value[:1], [value[0]] * len(value)]
    else:
        return m.value
    return choices[m.pick % len(choices)]


def _retype(value: Any, pick: int) -> Any:
    choices = [str(value), [value], {"value": value}, None, json.dumps(value, default=str)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        choices += [float(value) if math.isfinite(value) else 0.5, -value, bool(value)]
    return choices[pick % len(choices)]


def apply_mutations(tree: Any, mutations: Sequence[Mutation]) -> Any:
    """A copy of the JSON tree (mapping at the root) with ``mutations`` applied in order."""
    tree = json.loads(json.dumps(tree))
    for m in mutations:
        paths = _paths(tree)
        if m.field is not None and any(p[0] == m.field for p in paths):
            paths = [p for p in paths if p[0] == m.field]
        if not paths:
            if isinstance(tree, dict):
                tree[m.key] = m.value
            continue
        path = paths[m.pick % len(paths)]
        parent = tree
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        current = parent[last]
        if m.op == "delete":
            del parent[last]
        elif m.op == "replace":
            parent[last] = m.value
        elif m.op == "retype":
            parent[last] = _retype(current, m.pick)
        elif m.op == "alike":
            parent[last] = _alike(current, m)
        elif m.op == "add":
            target = current if isinstance(current, dict) else parent if isinstance(parent, dict) else tree
            target[m.key] = m.value
        elif m.op == "nest":
            parent[last] = [current]
        elif m.op == "grow" and isinstance(current, list):
            current.append(m.value)
        elif m.op == "shrink" and isinstance(current, list) and current:
            current.pop()
        else:
            parent[last] = m.value
    return tree


@dataclass(frozen=True)
class MetaCase:
    mutations: tuple[Mutation, ...]


def meta_cases() -> st.SearchStrategy[MetaCase]:
    """The tiny model file's metadata with 1 to 3 random mutations (any field, nested ones too)."""
    extra = ("crop_size", "base_size", "num_classes", "depth", "classes", "palette", "mean", "std")
    fields = (
        "model",
        "classes",
        "palette",
        "ignore_index",
        "normalization",
        "inference",
        "source",
        "dataset",
        "kind",
        "format_version",
        "pspnet_version",
    )
    return st.builds(MetaCase, st.lists(json_mutations(extra, fields), min_size=1, max_size=3).map(tuple))


def run_meta(fixture: Fixture, case: MetaCase, folder: Path, photo: Path) -> dict[str, Outcome]:
    """Write the mutated metadata with ``write_weights_file`` (the checksum stays right) and load it with
    ``load_model``, ``Segmenter.from_checkpoint`` and ``pspnet predict``: success, or a CheckpointError (an
    ``error: ...`` line) naming the file. They must agree, except that a crop or base size a model file may hold
    can exceed the pixel cap of inference: load_model accepts it, the other two refuse it naming the file."""
    from pspnet import load_model
    from pspnet.errors import CheckpointError
    from pspnet.segmenter import Segmenter
    from pspnet.weights.model_file import write_weights_file

    meta = apply_mutations(fixture.meta, case.mutations)
    path = folder / "model.safetensors"
    write_weights_file(path, fixture.tensors, meta)
    outcomes: dict[str, Outcome] = {}
    for entry, call, allowed in (
        ("load_model", lambda: load_model(path), (CheckpointError,)),
        # a ValueError naming the file: crop or base sizes a model file may hold, beyond the pixel cap
        ("Segmenter.from_checkpoint", lambda: Segmenter.from_checkpoint(path, device="cpu"), (ValueError,)),
    ):
        try:
            call()
        except Exception as error:  # noqa: BLE001 - classified
            outcomes[entry] = api_failure(error, allowed, [path])
        else:
            outcomes[entry] = Outcome(OK)
    result = run_cli(_predict_argv(path, [photo], folder / "out"))
    failure = cli_failure(result, [path])
    outcomes["predict"] = failure or Outcome(OK)
    verdicts = {entry: o.kind for entry, o in outcomes.items()}
    if set(verdicts.values()) <= set(PASSING) and (
        verdicts["Segmenter.from_checkpoint"] != verdicts["predict"]
        or (verdicts["load_model"] == NAMED and verdicts["predict"] == OK)
    ):
        outcomes["agreement"] = Outcome(WRONG, f"entry points disagree: {verdicts}")
    return outcomes


# -- the categories, for the benchmark --------------------------------------------------------------------------


@dataclass
class Category:
    """A kind of generated input: its strategy and the function running one case (fixture, case, folder)."""

    name: str
    strategy: st.SearchStrategy[Any]
    run: Callable[[Fixture, Any, Path], dict[str, Outcome]]
    weight: float = 1.0
    notes: list[str] = field(default_factory=list)


def photo_for(fixture: Fixture) -> Path:
    path = fixture.root / "photo.png"
    if not path.is_file():
        Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
    return path


def categories(*, train_valid: bool = True) -> list[Category]:
    """Every category the benchmark runs, with its share of the cases (weights by cost)."""

    def images_cli(f: Fixture, case: ImageCase, folder: Path) -> dict[str, Outcome]:
        return {"pspnet predict": run_image_cli(f, case, folder)}

    def masks(f: Fixture, case: MaskCase, folder: Path) -> dict[str, Outcome]:
        return {"pspnet data check": run_mask_check(case, folder), "pspnet eval": run_mask_eval(f, case, folder)}

    return [
        Category("images: pspnet predict", predict_cases(), images_cli, 1.5),
        Category("images: Python API", image_cases(), run_image_api, 2.5),
        Category("masks: data check + eval", mask_cases(), masks, 1.5),
        Category("classes.yaml", classes_cases(), run_classes, 1.5),
        Category("training configs", config_cases(), lambda f, c, d: run_config(f, c, d, train_valid=train_valid), 1.5),
        Category("model-file metadata", meta_cases(), lambda f, c, d: run_meta(f, c, d, photo_for(f)), 1.5),
    ]


def python_info() -> str:
    return f"Python {sys.version.split()[0]}"
