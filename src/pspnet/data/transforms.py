"""Paired image/mask transforms of PSPNet's training recipe (official PyTorch code, ``util/transform.py``).

Conventions shared by every transform here:

- ``image``: ``np.ndarray`` (H, W, 3) uint8 RGB; ``mask``: ``np.ndarray`` (H, W) integer (uint8, or int32 for more
  than 255 classes) holding class ids and the ignore value, with the image's height and width; or ``None`` for an
  unlabelled image (test splits), which stays ``None``.
- A transform is a small class with a keyword-only ``__init__`` (paper values as defaults) and
  ``__call__(image, mask, rng) -> (image, mask)``. All randomness comes from ``rng`` (a ``np.random.Generator``):
  a data set seeds one generator per sample from (seed, epoch, index), so augmentation is reproducible and does not
  depend on the number of data-loader workers.
- Masks are resampled with nearest neighbour only, so they never hold a value that was not in the input (or the
  ignore value, for pixels that come from outside the image). The mask dtype is preserved; outputs are C-contiguous
  (given contiguous inputs, which :class:`Compose` ensures). A transform that changes nothing (e.g. a flip not drawn)
  returns its input arrays themselves, not copies. :class:`Compose` checks shapes and dtypes once, up front.
- Sizes are ``(height, width)`` in pixels, angles in degrees, colours RGB in [0, 255].

The recipe, in order (:func:`paper_train_transform`): :class:`RandScale` [0.5, 2.0] -> :class:`RandRotate`
[-10, 10] deg with p 0.5 -> :class:`RandomGaussianBlur` k 5 with p 0.5 -> :class:`RandomHorizontalFlip` p 0.5 ->
:class:`RandomCrop` to the crop size, padding with the mean colour / ignore value first when the image is smaller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from ..constants import IGNORE_INDEX, IMAGENET_MEAN

__all__ = [
    "Compose",
    "PairTransform",
    "RandRotate",
    "RandScale",
    "RandomCrop",
    "RandomGaussianBlur",
    "RandomHorizontalFlip",
    "Resize",
    "pad_colour",
    "paper_train_transform",
]

# Mask dtypes OpenCV resizes, warps (nearest neighbour) and flips without converting them: values are kept exactly,
# int32 ids above 2**24 included (tests/test_transforms.py checks it). Compose rejects any other dtype (e.g. int64).
_MASK_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.int32))


class PairTransform(Protocol):
    """What :class:`Compose` chains: ``(image (H, W, 3), mask (H, W), rng) -> (image (H', W', 3), mask (H', W'))``."""

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]: ...


def pad_colour(mean: Sequence[float], dtype: np.dtype | type = np.uint8) -> tuple[float, ...]:
    """The fill colour for padded image pixels: ``mean`` (RGB in [0, 255]) as the image dtype stores it.

    For uint8 images the mean is rounded to the nearest integer and clipped to [0, 255], which is what OpenCV does
    with the official code's float ``padding`` value: ImageNet's mean gives (124, 116, 104). Float images keep the
    exact mean.
    """
    if len(mean) != 3:
        raise ValueError(f"mean must have 3 values (RGB), got {len(mean)}: {tuple(mean)}")
    if np.dtype(dtype) == np.uint8:
        return tuple(float(np.clip(np.rint(m), 0, 255)) for m in mean)
    return tuple(float(m) for m in mean)


def _check_pair(image: np.ndarray, mask: np.ndarray | None) -> None:
    """Raise a ValueError/TypeError naming the problem when ``image``/``mask`` break the conventions above."""
    if not isinstance(image, np.ndarray) or not isinstance(mask, (np.ndarray, type(None))):
        raise TypeError(
            f"image and mask must be numpy arrays (mask may be None), got {type(image).__name__} and "
            f"{type(mask).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    if mask is None:
        return
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image height and width {image.shape[:2]}")
    if mask.dtype not in _MASK_DTYPES:
        raise TypeError(
            f"mask dtype {mask.dtype} is not supported; use uint8 (up to 255 classes) or int32 "
            f"(supported: {', '.join(str(d) for d in _MASK_DTYPES)})"
        )


def _check_p(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return float(p)


def _check_range(name: str, bounds: Sequence[float], *, positive: bool = False) -> tuple[float, float]:
    if len(bounds) != 2 or not bounds[0] <= bounds[1]:
        raise ValueError(f"{name} must be (min, max) with min <= max, got {tuple(bounds)}")
    if positive and not bounds[0] > 0:
        raise ValueError(f"{name} must be positive, got {tuple(bounds)}")
    return float(bounds[0]), float(bounds[1])


def _check_size(name: str, size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"{name} must be (height, width) in positive integer pixels, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _check_ignore(ignore_index: int) -> int:
    if not 0 <= ignore_index <= np.iinfo(np.int32).max:
        raise ValueError(f"ignore_index must be a non-negative int32, got {ignore_index}")
    return int(ignore_index)


def _ignore_fits(mask: np.ndarray | None, ignore_index: int) -> None:
    """Padding writes ``ignore_index`` into the mask: it must be representable in the mask's dtype."""
    if mask is None:
        return
    info = np.iinfo(mask.dtype)
    if not info.min <= ignore_index <= info.max:
        raise ValueError(f"ignore_index {ignore_index} does not fit in a {mask.dtype} mask; use an int32 mask")


def _resize_pair(
    image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int], mask_interpolation: int
) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = size
    if (h, w) == image.shape[:2]:
        return image, mask
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        mask = cv2.resize(mask, (w, h), interpolation=mask_interpolation)
    return image, mask


class Compose:
    """Apply transforms in order, threading one ``rng`` through all of them.

    ``Compose([RandScale(), RandomCrop(size=(473, 473))])(image, mask, rng)``.
    """

    def __init__(self, transforms: Sequence[PairTransform]):
        self.transforms = list(transforms)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        _check_pair(image, mask)
        image = np.ascontiguousarray(image)  # no-ops for the usual inputs
        mask = None if mask is None else np.ascontiguousarray(mask)
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {t!r}" for t in self.transforms)
        return f"{type(self).__name__}([\n{inner}\n])"


class RandScale:
    """Resize by a random factor ``s ~ U(scale)``: (H, W) -> (round(H * s_y), round(W * s_x)), at least 1 pixel.

    Without ``aspect_ratio`` (the paper) ``s_x = s_y = s``. With ``aspect_ratio=(a, b)`` a ratio ``r ~ U(a, b)`` is
    drawn as well and ``s_x = s * sqrt(r)``, ``s_y = s / sqrt(r)`` (the official code's option, off in its configs).
    Image: bilinear; mask: nearest neighbour. ``nearest_exact=True`` samples the mask at pixel centres
    (``cv2.INTER_NEAREST_EXACT``), which lines it up with the bilinear image to within half a pixel; the default
    ``cv2.INTER_NEAREST`` is what the official code uses (it can be off by up to one output pixel).
    """

    def __init__(
        self,
        *,
        scale: tuple[float, float] = (0.5, 2.0),
        aspect_ratio: tuple[float, float] | None = None,
        nearest_exact: bool = False,
    ):
        self.scale = _check_range("scale", scale, positive=True)
        self.aspect_ratio = None if aspect_ratio is None else _check_range("aspect_ratio", aspect_ratio, positive=True)
        self.nearest_exact = nearest_exact
        self._mask_interpolation = cv2.INTER_NEAREST_EXACT if nearest_exact else cv2.INTER_NEAREST

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        s = rng.uniform(*self.scale)
        sx = sy = s
        if self.aspect_ratio is not None:
            root = math.sqrt(rng.uniform(*self.aspect_ratio))
            sx, sy = s * root, s / root
        h, w = image.shape[:2]
        size = (max(1, round(h * sy)), max(1, round(w * sx)))
        return _resize_pair(image, mask, size, self._mask_interpolation)

    def __repr__(self) -> str:
        return f"RandScale(scale={self.scale}, aspect_ratio={self.aspect_ratio}, nearest_exact={self.nearest_exact})"


class RandRotate:
    """With probability ``p``, rotate by ``angle ~ U(angle)`` degrees (counter-clockwise) about (W/2, H/2).

    The output keeps the input size (H, W); corners that come from outside the image are filled with ``mean``
    (see :func:`pad_colour`) in the image and ``ignore_index`` in the mask. Image: bilinear; mask: nearest.
    """

    def __init__(
        self,
        *,
        angle: tuple[float, float] = (-10.0, 10.0),
        p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        ignore_index: int = IGNORE_INDEX,
    ):
        self.angle = _check_range("angle", angle)
        self.p = _check_p("p", p)
        self.mean = tuple(float(m) for m in mean)
        pad_colour(self.mean)  # validates the length
        self.ignore_index = _check_ignore(ignore_index)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if not rng.random() < self.p:
            return image, mask
        angle = rng.uniform(*self.angle)
        _ignore_fits(mask, self.ignore_index)
        h, w = image.shape[:2]
        # The official code's centre (w / 2, h / 2), not the pixel-centre ((w - 1) / 2, (h - 1) / 2); the same
        # matrix moves image and mask, so they stay aligned either way.
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)  # (2, 3)
        image = cv2.warpAffine(
            image,
            matrix,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=pad_colour(self.mean, image.dtype),
        )
        if mask is None:
            return image, None
        mask = cv2.warpAffine(
            mask,
            matrix,
            (w, h),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=self.ignore_index,
        )
        return image, mask

    def __repr__(self) -> str:
        return f"RandRotate(angle={self.angle}, p={self.p}, mean={self.mean}, ignore_index={self.ignore_index})"


class RandomGaussianBlur:
    """With probability ``p``, blur the image with ``cv2.GaussianBlur(image, (k, k), sigma)``; the mask is untouched.

    ``sigma=0`` (the official code) lets OpenCV choose the kernel from its size: for odd k <= 7 a fixed table (k = 5:
    the binomial ``[1, 4, 6, 4, 1] / 16``, a standard deviation of 1 pixel), above that a Gaussian of
    ``sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8`` pixels. Borders are reflected (OpenCV's default BORDER_REFLECT_101).
    """

    def __init__(self, *, kernel_size: int = 5, sigma: float = 0.0, p: float = 0.5):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number of pixels, got {kernel_size}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0 pixels (0: derived from kernel_size), got {sigma}")
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)
        self.p = _check_p("p", p)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if not rng.random() < self.p:
            return image, mask
        k = self.kernel_size
        return cv2.GaussianBlur(image, (k, k), self.sigma), mask

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(kernel_size={self.kernel_size}, sigma={self.sigma}, p={self.p})"


class RandomHorizontalFlip:
    """With probability ``p``, mirror image and mask left-right."""

    def __init__(self, *, p: float = 0.5):
        self.p = _check_p("p", p)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if not rng.random() < self.p:
            return image, mask
        return cv2.flip(image, 1), None if mask is None else cv2.flip(mask, 1)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop:
    """Crop a ``size`` = (h, w) window at a uniformly random position; the output is always (h, w).

    A side shorter than the crop is first padded on both sides, ``pad // 2`` before and the rest after (as the
    official code does), with ``mean`` (see :func:`pad_colour`) in the image and ``ignore_index`` in the mask; the
    offsets are then drawn in [0, padded - crop] for each side (always two draws, rows first). The padded image is
    never built: the window is filled with the pad values and the overlapping part of the input copied in.
    """

    def __init__(
        self,
        *,
        size: tuple[int, int],
        mean: Sequence[float] = IMAGENET_MEAN,
        ignore_index: int = IGNORE_INDEX,
    ):
        self.size = _check_size("size", size)
        self.mean = tuple(float(m) for m in mean)
        pad_colour(self.mean)  # validates the length
        self.ignore_index = _check_ignore(ignore_index)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        ch, cw = self.size
        h, w = image.shape[:2]
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        # Offset of the crop window in the (virtually) padded image, whose size is (h + pad_h, w + pad_w).
        y = int(rng.integers(0, h + pad_h - ch + 1))
        x = int(rng.integers(0, w + pad_w - cw + 1))
        if pad_h == 0 and pad_w == 0:
            image = np.ascontiguousarray(image[y : y + ch, x : x + cw])
            return image, None if mask is None else np.ascontiguousarray(mask[y : y + ch, x : x + cw])
        _ignore_fits(mask, self.ignore_index)
        # The window in input coordinates starts at (y - top, x - left); copy the part that overlaps the input.
        y0, x0 = y - pad_h // 2, x - pad_w // 2
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(y0 + ch, h), min(x0 + cw, w)
        out_image = np.empty((ch, cw, image.shape[2]), dtype=image.dtype)
        out_image[...] = np.asarray(pad_colour(self.mean, image.dtype), dtype=image.dtype)
        out_image[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        if mask is None:
            return out_image, None
        out_mask = np.full((ch, cw), self.ignore_index, dtype=mask.dtype)
        out_mask[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = mask[sy0:sy1, sx0:sx1]
        return out_image, out_mask

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, mean={self.mean}, ignore_index={self.ignore_index})"


class Resize:
    """Deterministic resize (``rng`` is not used), e.g. for evaluation at a fixed scale.

    Give exactly one of ``size`` = (h, w), or ``long_side``: the longer side becomes ``long_side`` pixels and the
    other keeps the aspect ratio (rounded, at least 1 pixel). Image: bilinear; mask: nearest neighbour
    (``nearest_exact`` as in :class:`RandScale`).
    """

    def __init__(
        self,
        *,
        size: tuple[int, int] | None = None,
        long_side: int | None = None,
        nearest_exact: bool = False,
    ):
        if (size is None) == (long_side is None):
            raise ValueError("give exactly one of size=(height, width) or long_side=pixels")
        self.size = None if size is None else _check_size("size", size)
        if long_side is not None and not long_side > 0:
            raise ValueError(f"long_side must be a positive number of pixels, got {long_side}")
        self.long_side = None if long_side is None else int(long_side)
        self.nearest_exact = nearest_exact
        self._mask_interpolation = cv2.INTER_NEAREST_EXACT if nearest_exact else cv2.INTER_NEAREST

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) that an input of (height, width) is resized to."""
        if self.size is not None:
            return self.size
        f = self.long_side / max(height, width)
        return max(1, round(height * f)), max(1, round(width * f))

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return _resize_pair(image, mask, self.output_size(*image.shape[:2]), self._mask_interpolation)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, long_side={self.long_side}, nearest_exact={self.nearest_exact})"


def paper_train_transform(
    *,
    crop_size: tuple[int, int],
    scale: tuple[float, float] = (0.5, 2.0),
    rotate: tuple[float, float] = (-10.0, 10.0),
    rotate_p: float = 0.5,
    blur_p: float = 0.5,
    blur_kernel: int = 5,
    flip_p: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    ignore_index: int = IGNORE_INDEX,
) -> Compose:
    """The official PSPNet training augmentation; outputs are ``crop_size`` = (h, w), e.g. (473, 473) for ADE20K.

    Scale -> rotate -> blur -> flip -> crop. Normalisation (mean/std) and the conversion to tensors are not here:
    they belong to the data set / collate step, after augmentation, on uint8 images.
    """
    return Compose(
        [
            RandScale(scale=scale),
            RandRotate(angle=rotate, p=rotate_p, mean=mean, ignore_index=ignore_index),
            RandomGaussianBlur(kernel_size=blur_kernel, p=blur_p),
            RandomHorizontalFlip(p=flip_p),
            RandomCrop(size=crop_size, mean=mean, ignore_index=ignore_index),
        ]
    )
