"""The embedded demo data set: synthetic panoramas where only the far end of the scene tells two look-alikes apart.

PSPNet's motivation (Zhao et al. 2017, Fig. 2) is that local appearance is often ambiguous: a boat on a river and a
car on a road look alike up close, and only the scene around them decides. These scenes build that ambiguity in on
purpose, and put the deciding context far away: they are wide panoramas (64 x 512 by default), and the only part
that differs between the two scene types is a strip at one end::

    +----------------------------------------------------------------------------+  sky: the same in every scene
    |####|                                                                       |
    |####|   ( )         [o]                 ( )                   ( )      [o]  |  surface ("water" in a lake,
    |####|         (  )            ( )                 (  )                      |  "grass" in a meadow), with
    +----------------------------------------------------------------------------+  blobs ( ) and rocks [o]
     cue strip: "shore" (sand) in a lake scene, "forest" (trees) in a meadow scene; at the left or the right end

    blobs ( )  "lily pad" in a lake scene, "bush" in a meadow scene
    rocks [o]  "rock" in every scene (a distractor whose label is local)

Two pairs of classes are *locally indistinguishable by construction*: water and grass are painted by one texture
generator (teal base, low-frequency blotches, ripples, grain), and lily pads and bushes by another (green, spotted,
darker rim). Every geometric parameter (horizon, width and edge of the cue strip, which end it is at, number, size,
shape and position of blobs and rocks) is drawn from the same distribution in both scene types, and a per-image
brightness/colour jitter and pixel noise is applied to the whole image. So the colour, texture, shape and position
of a surface or blob pixel carry no information about its label: a classifier that sees only a pixel or a small
patch is at chance on each pair.

What decides is the cue strip (sand -> lake, forest -> meadow), about 12% of the width at one end: a region that
is itself easy to recognise but lies far from most ambiguous pixels (the median one is about 220 columns away, and
about 40% are more than 260 columns away, beyond the reach of a dilated ResNet-18 at output stride 8 without
pyramid pooling). A network must carry the scene type across the whole panorama, which is what PSPNet's global
pyramid pooling (the 1x1 bin) does.

Public API: ``CLASSES``, ``CLASS_NAMES``, ``PALETTE``, ``SCENE_TYPES``, ``CONTEXT_PAIRS``, ``class_table()``,
``make_scene(rng, size)``, ``scene_type(mask)`` and ``write_synthetic_dataset(root, train=..., val=...)``, which writes
the folder layout of docs/data.md (read it with ``build_dataset("folder", root, "train")``).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from .io import write_mask_png

__all__ = [
    "BUSH",
    "CLASSES",
    "CLASS_NAMES",
    "CONTEXT_PAIRS",
    "DEFAULT_SIZE",
    "FOREST",
    "GRASS",
    "LILY_PAD",
    "PALETTE",
    "ROCK",
    "SCENE_TYPES",
    "SHORE",
    "SKY",
    "SPLIT_STREAMS",
    "WATER",
    "SyntheticClass",
    "class_table",
    "make_scene",
    "scene_type",
    "write_synthetic_dataset",
]

Color = tuple[int, int, int]


@dataclass(frozen=True)
class SyntheticClass:
    """One class of the synthetic data set: its name, its mask colour and how it is decided."""

    name: str
    color: Color
    role: str


CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass("sky", (135, 206, 235), "top of every scene; local appearance decides"),
    SyntheticClass("shore", (230, 190, 110), "scene cue of a lake scene (sand at one end); local appearance decides"),
    SyntheticClass("forest", (20, 110, 40), "scene cue of a meadow scene (trees at one end); local appearance decides"),
    SyntheticClass("water", (30, 80, 220), "surface of a lake scene; looks exactly like grass: the scene decides"),
    SyntheticClass("grass", (140, 220, 60), "surface of a meadow scene; looks exactly like water: the scene decides"),
    SyntheticClass("lily pad", (240, 80, 180), "blob in a lake scene; looks exactly like a bush: the scene decides"),
    SyntheticClass("bush", (150, 60, 20), "blob in a meadow scene; looks exactly like a lily pad: the scene decides"),
    SyntheticClass("rock", (128, 128, 128), "distractor in every scene; local appearance decides"),
)
SKY, SHORE, FOREST, WATER, GRASS, LILY_PAD, BUSH, ROCK = range(len(CLASSES))
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
PALETTE: tuple[Color, ...] = tuple(c.color for c in CLASSES)

#: scene types; index 0 and 1 of the label tables below
SCENE_TYPES: tuple[str, ...] = ("lake", "meadow")
#: (lake class, meadow class) pairs drawn from one appearance distribution: only the scene type tells them apart
CONTEXT_PAIRS: tuple[tuple[int, int], ...] = ((WATER, GRASS), (LILY_PAD, BUSH))
DEFAULT_SIZE: tuple[int, int] = (64, 512)
#: each split draws from its own random stream, so adding a test split never changes train or val
SPLIT_STREAMS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

# the label of each drawn part, by scene type (lake, meadow); the sky and rocks are the same in both
_CUE_LABEL = (SHORE, FOREST)
_SURFACE_LABEL = (WATER, GRASS)
_BLOB_LABEL = (LILY_PAD, BUSH)


def class_table() -> str:
    """The classes as a printable table: id, name, mask colour and what decides the label."""
    lines = [f"{'id':>3}  {'class':<9} {'colour':<16} role"]
    for i, c in enumerate(CLASSES):
        lines.append(f"{i:>3}  {c.name:<9} {list(c.color)!s:<16} {c.role}")
    return "\n".join(lines)


# -- drawing ----------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) float32 value noise with features about ``cell`` pixels wide: a random grid, smoothly interpolated."""
    cell = max(float(cell), 1.0)
    ys = np.arange(h) / cell + rng.random()
    xs = np.arange(w) / cell + rng.random()
    grid = rng.standard_normal((int(ys[-1]) + 2, int(xs[-1]) + 2)).astype(np.float32)
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = ys - y0, xs - x0
    fy = (fy * fy * (3 - 2 * fy)).astype(np.float32)[:, None]  # smoothstep: no visible grid lines
    fx = (fx * fx * (3 - 2 * fx)).astype(np.float32)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy) * np.float32(1.6)  # ~unit standard deviation


def _wave(rng: np.random.Generator, w: int, amplitude: float) -> np.ndarray:
    """(w,) a gently wavy line offset: two sinusoids of random period and phase."""
    x = np.arange(w, dtype=np.float32)
    out = np.zeros(w, dtype=np.float32)
    for scale in (1.0, 0.4):
        period = w * rng.uniform(0.4, 1.2) * scale
        out += amplitude * scale * np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi))
    return out


def _rgb(base: tuple[float, float, float]) -> np.ndarray:
    return np.asarray(base, dtype=np.float32)


def _blob(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """A wobbly rotated ellipse: (inside (h, w) bool, normalised radius (h, w), 0 at the centre, 1 at the edge)."""
    a = radius
    b = radius * rng.uniform(0.6, 1.0)
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / a
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / b
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    lobes = int(rng.integers(3, 7))
    edge = (
        1.0
        + 0.12 * np.sin(lobes * theta + rng.uniform(0, 2 * np.pi))
        + 0.06 * np.sin((lobes + 3) * theta + rng.uniform(0, 2 * np.pi))
    )
    r = rho / edge
    return r < 1.0, r


def _sky(rng: np.random.Generator, h: int, w: int, yy: np.ndarray, horizon: float) -> np.ndarray:
    t = np.clip(yy / max(horizon, 1.0), 0, 1)[..., None]  # (h, 1, 1): 0 at the top, 1 at the horizon
    image = _rgb((105, 155, 225)) * (1 - t) + _rgb((190, 215, 240)) * t
    clouds = np.clip(_smooth_noise(rng, h, w, max(h, w) / 8) - 0.4, 0, None)[..., None]
    return image + 45 * clouds + 3 * rng.standard_normal((h, w, 1), dtype=np.float32)


def _shore(rng: np.random.Generator, h: int, w: int, yy: np.ndarray, xx: np.ndarray, s: int) -> np.ndarray:
    """Sand: beige with coarse grain and diagonal wind ripples."""
    period = s * rng.uniform(0.04, 0.07)
    ripples = np.sin(2 * np.pi * (yy + 0.35 * xx) / period + 1.5 * _smooth_noise(rng, h, w, s / 8))
    grain = rng.standard_normal((h, w), dtype=np.float32)
    tone = 8 * ripples + 10 * grain + 10 * _smooth_noise(rng, h, w, s / 6)
    return _rgb((208, 184, 132)) + tone[..., None] * _rgb((1.0, 0.95, 0.8))


def _forest(rng: np.random.Generator, h: int, w: int, xx: np.ndarray, s: int) -> np.ndarray:
    """Trees: dark green with vertical crowns and trunks."""
    width = s * rng.uniform(0.035, 0.06)
    crowns = np.abs(np.sin(np.pi * xx / width + 0.8 * _smooth_noise(rng, h, w, s / 10)))
    tone = 28 * crowns + 8 * _smooth_noise(rng, h, w, s / 20) + 5 * rng.standard_normal((h, w), dtype=np.float32)
    return _rgb((22, 52, 28)) + tone[..., None] * _rgb((0.5, 1.0, 0.55))


def _surface(rng: np.random.Generator, h: int, w: int, yy: np.ndarray, s: int) -> np.ndarray:
    """Water or grass (one generator for both): teal blotches with horizontal ripples and grain."""
    blotches = _smooth_noise(rng, h, w, s / 5)
    period = s * rng.uniform(0.05, 0.09)
    ripples = np.sin(2 * np.pi * yy / period + 1.2 * _smooth_noise(rng, h, w, s / 6) + rng.uniform(0, 2 * np.pi))
    grain = rng.standard_normal((h, w), dtype=np.float32)
    image = _rgb((62, 112, 104)) + (14 * blotches)[..., None] * _rgb((0.8, 1.0, 0.9))
    return image + (9 * ripples)[..., None] * _rgb((0.6, 0.8, 1.0)) + (6 * grain)[..., None]


def _blob_texture(rng: np.random.Generator, r: np.ndarray, s: int) -> np.ndarray:
    """Lily pad or bush (one generator for both): spotted green with a darker rim; ``r`` is the blob's radius map."""
    h, w = r.shape
    spots = _smooth_noise(rng, h, w, s / 40)
    rim = np.clip((r - 0.75) / 0.25, 0, 1)
    tone = 22 * spots - 35 * rim + 5 * rng.standard_normal((h, w), dtype=np.float32)
    return _rgb((82, 150, 58)) + tone[..., None] * _rgb((0.7, 1.0, 0.5))


def _rock_texture(
    rng: np.random.Generator, dy: np.ndarray, shape: tuple[int, int], radius: float, s: int
) -> np.ndarray:
    """Rock: grey, mottled, lit from above; ``dy`` is the row offset from the rock's centre."""
    h, w = shape
    shade = np.clip(dy / radius, -1, 1)
    tone = 18 * _smooth_noise(rng, h, w, s / 30) - 25 * shade + 4 * rng.standard_normal((h, w), dtype=np.float32)
    return _rgb((128, 124, 118)) + tone[..., None]


def _window(cy: float, cx: float, extent: float, h: int, w: int) -> tuple[slice, slice]:
    """Rows and columns of the box of half-size ``extent`` around (cy, cx), clipped to the image."""
    return (
        slice(max(int(cy - extent), 0), min(int(cy + extent) + 2, h)),
        slice(max(int(cx - extent), 0), min(int(cx + extent) + 2, w)),
    )


def _draw(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    h, w = (int(v) for v in size)
    if h < 16 or w < 16:
        raise ValueError(f"synthetic scenes need at least 16 x 16 pixels, got {h} x {w}")
    s = 2 * min(h, w)  # texture scale: ripple periods, spot and blotch sizes are fractions of it
    aspect = w / h
    kind = int(rng.integers(len(SCENE_TYPES)))  # 0 lake, 1 meadow; nothing else below depends on it but labels
    mirror = bool(rng.integers(2))  # the scene is drawn with its cue at the left end, then mirrored half the time
    yy = np.arange(h, dtype=np.float32)[:, None]  # (h, 1)
    xx = np.arange(w, dtype=np.float32)[None, :]  # (1, w)

    # Layout: sky across the top; below it the scene-cue strip at the left end (a wavy edge down the scene) and the
    # surface everywhere else. Identical for both scene types.
    sky_bottom = h * rng.uniform(0.12, 0.22) + _wave(rng, w, 0.03 * h)  # (w,)
    cue_edge = np.maximum(w * rng.uniform(0.08, 0.12) + _wave(rng, h, 0.015 * w), 3.0)  # (h,) strip width per row
    region = np.where(yy < sky_bottom[None, :], 0, np.where(xx < cue_edge[:, None], 1, 2))  # (h, w)
    mask = np.choose(region, (SKY, _CUE_LABEL[kind], _SURFACE_LABEL[kind])).astype(np.uint8)

    image = _surface(rng, h, w, yy, s)
    image = np.where((region == 0)[..., None], _sky(rng, h, w, yy, float(sky_bottom.mean())), image)
    # The cue strip is the only part drawn differently per scene type. Both generators run (the unused one is
    # discarded) so that every later random draw is the same whatever the scene type.
    cues = (_shore(rng, h, w, yy, xx, s), _forest(rng, h, w, xx, s))
    image = np.where((region == 1)[..., None], cues[kind], image)

    # Blobs (lily pads / bushes) anywhere on the surface below the horizon, then rocks on top of them; their number
    # grows with the width. Each is drawn in its bounding window only.
    top = float(sky_bottom.max())
    for _ in range(int(rng.integers(max(1, round(0.5 * aspect)), max(2, round(aspect)) + 1))):
        radius = min(h, w) * rng.uniform(0.12, 0.22)
        cy = rng.uniform(min(top + 0.15 * h, 0.9 * h), 0.95 * h)
        cx = rng.uniform(0.03 * w, 0.97 * w)
        ys, xs = _window(cy, cx, 1.25 * radius, h, w)
        inside, r = _blob(rng, yy[ys], xx[:, xs], cy, cx, radius)
        inside &= region[ys, xs] == 2
        texture = _blob_texture(rng, r, s)
        image[ys, xs] = np.where(inside[..., None], texture, image[ys, xs])
        mask[ys, xs][inside] = _BLOB_LABEL[kind]
    for _ in range(int(rng.integers(max(1, round(0.375 * aspect)), max(2, round(0.75 * aspect)) + 1))):
        radius = min(h, w) * rng.uniform(0.1, 0.18)
        cy = rng.uniform(min(top + 0.05 * h, 0.9 * h), 0.97 * h)
        cx = rng.uniform(0.03 * w, 0.97 * w)
        ys, xs = _window(cy, cx, 1.25 * radius, h, w)
        inside, _ = _blob(rng, yy[ys], xx[:, xs], cy, cx, radius)
        inside &= region[ys, xs] == 2
        texture = _rock_texture(rng, yy[ys] - cy, inside.shape, radius, s)
        image[ys, xs] = np.where(inside[..., None], texture, image[ys, xs])
        mask[ys, xs][inside] = ROCK
    if mirror:
        image, mask = image[:, ::-1], mask[:, ::-1]

    # Whole-image photometric jitter and sensor noise: the same for both scene types.
    gain = rng.uniform(0.85, 1.15)
    offset = rng.normal(0, 6, size=3).astype(np.float32)
    image = image * gain + offset + 3 * rng.standard_normal((h, w, 3), dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), np.ascontiguousarray(mask), kind


def make_scene(rng: np.random.Generator, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One random scene: (image (H, W, 3) uint8 RGB, mask (H, W) uint8 class ids 0..7, no ignored pixels).

    ``size`` is (height, width), at least 16 x 16. The same generator state gives the same scene.
    """
    image, mask, _ = _draw(rng, size)
    return image, mask


def scene_type(mask: np.ndarray) -> str:
    """'lake' or 'meadow': the scene type of a mask, read from its labels (any class of one scene type decides)."""
    present = np.bincount(np.asarray(mask).ravel(), minlength=len(CLASSES))
    lake = int(present[[SHORE, WATER, LILY_PAD]].sum())
    meadow = int(present[[FOREST, GRASS, BUSH]].sum())
    if lake and meadow:
        raise ValueError("mask holds classes of both scene types: not a synthetic scene")
    if not lake and not meadow:
        raise ValueError("mask holds no class that tells the scene type")
    return SCENE_TYPES[0] if lake else SCENE_TYPES[1]


# -- writing the folder layout -------------------------------------------------------------------------------------


def _save_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB PNG atomically (temporary file + rename)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(image).save(stream, format="PNG", compress_level=1)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_synthetic_dataset(
    root: str | os.PathLike,
    *,
    train: int,
    val: int,
    test: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
) -> Path:
    """Write the synthetic data set in the folder layout (docs/data.md) under ``root`` and return ``root``.

    ``root/images/SPLIT/NNNN.png`` (RGB), ``root/masks/SPLIT/NNNN.png`` (palette index PNGs) and
    ``root/classes.yaml`` (name ``synthetic``, the classes and colours, crop_size = size, base_size = its long side).
    Sample i of split S is drawn from ``np.random.default_rng([seed, SPLIT_STREAMS[S], i])``: the same arguments
    give identical files, and each split is independent of the others' counts. A split of count 0 is not written.
    Writing again into the same root replaces the files of the splits it writes and removes numbered PNGs left
    over from a larger earlier run; a root whose classes.yaml belongs to another data set is refused.
    """
    root = Path(root)
    counts = {"train": train, "val": val, "test": test}
    for split, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"write_synthetic_dataset: {split} must be a non-negative integer, got {count!r}")
    h, w = (int(v) for v in size)
    classes_file = root / "classes.yaml"
    if classes_file.is_file():
        try:
            existing = yaml.safe_load(classes_file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            existing = None
        if not isinstance(existing, dict) or existing.get("name") != "synthetic":
            raise FileExistsError(f"{classes_file}: holds another data set; not overwriting it with synthetic data")
    for split, count in counts.items():
        if count == 0:
            continue
        width = max(4, len(str(count - 1)))
        image_dir, mask_dir = root / "images" / split, root / "masks" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        names = set()
        for i in range(count):
            name = f"{i:0{width}d}"
            names.add(name)
            image, mask = make_scene(np.random.default_rng([seed, SPLIT_STREAMS[split], i]), (h, w))
            _save_png(image_dir / f"{name}.png", image)
            write_mask_png(mask_dir / f"{name}.png", mask, PALETTE)
        for folder in (image_dir, mask_dir):  # numbered files of an earlier, larger run
            for path in folder.glob("*.png"):
                if re.fullmatch(r"\d+", path.stem) and path.stem not in names:
                    path.unlink()
    text = yaml.safe_dump(
        {
            "name": "synthetic",
            "classes": [{"name": c.name, "color": list(c.color)} for c in CLASSES],
            "ignore_index": 255,
            "crop_size": [h, w],
            "base_size": max(h, w),
        },
        sort_keys=False,
        default_flow_style=None,
    )
    root.mkdir(parents=True, exist_ok=True)
    header = "# written by pspnet.data.synthetic.write_synthetic_dataset: lake and meadow scenes (see its docstring)\n"
    (root / ".classes.yaml.tmp").write_text(header + text, encoding="utf-8")
    os.replace(root / ".classes.yaml.tmp", classes_file)
    return root
