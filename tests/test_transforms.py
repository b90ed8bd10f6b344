"""Contracts of the paired image/mask transforms (pspnet.data.transforms).

Alignment is checked on a drawn scene: a background, a rectangle and a disk of distinct colours, each labelled in
the mask. After a transform, every pixel is classified by its nearest scene colour (the mean colour counts as the
ignore label); away from a 2-pixel band around each region's border, the classification must equal the mask.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pspnet.constants import IMAGENET_MEAN
from pspnet.data.transforms import (
    Compose,
    RandomCrop,
    RandomGaussianBlur,
    RandomHorizontalFlip,
    RandRotate,
    RandScale,
    Resize,
    pad_colour,
    paper_train_transform,
)

IGNORE = 255
MEAN_U8 = (124, 116, 104)  # ImageNet mean (123.675, 116.28, 103.53) rounded
BG, RECT, DISK = (30, 30, 30), (230, 40, 40), (40, 200, 230)
SEEDS = range(40)
TOLERANCE_PX = 2


def scene(h: int = 120, w: int = 160, *, disk_label: int = 3, dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """(image (h, w, 3) uint8, mask (h, w) dtype): background 0, an off-centre rectangle 1, a disk ``disk_label``."""
    image = np.empty((h, w, 3), np.uint8)
    image[...] = BG
    mask = np.zeros((h, w), dtype)
    r0, r1, c0, c1 = h // 6, h // 2, w // 6, w // 2 - 5
    image[r0:r1, c0:c1] = RECT
    mask[r0:r1, c0:c1] = 1
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - 0.68 * h) ** 2 + (xx - 0.72 * w) ** 2 <= (0.18 * h) ** 2
    image[disk] = DISK
    mask[disk] = disk_label
    return image, mask


def classify(image: np.ndarray, labels: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """Label of the nearest palette colour of each pixel: (H, W) int64."""
    keys = list(labels)
    colours = np.array([labels[k] for k in keys], np.float32)  # (L, 3)
    d = ((image[:, :, None, :].astype(np.float32) - colours) ** 2).sum(-1)  # (H, W, L)
    return np.array(keys)[d.argmin(-1)]


def assert_aligned(image: np.ndarray, mask: np.ndarray, disk_label: int = 3, r: int = TOLERANCE_PX) -> None:
    """Away from r pixels of each region's border, the image colour and the mask label agree (both directions)."""
    labels = {0: BG, 1: RECT, disk_label: DISK, IGNORE: MEAN_U8}
    pred = classify(image, labels)
    for k in labels:
        in_mask, in_image = mask == k, pred == k
        # mask region (shrunk by r) is painted k in the image, and the k-coloured area (shrunk by r) is labelled k
        wrong = shrink(in_mask, r) & ~in_image
        assert not wrong.any(), f"label {k}: {wrong.sum()} pixels labelled {k} away from its border are not its colour"
        wrong = shrink(in_image, r) & ~in_mask
        assert not wrong.any(), f"label {k}: {wrong.sum()} pixels of its colour away from its border have other labels"


def shrink(region: np.ndarray, r: int) -> np.ndarray:
    """Erode a boolean (H, W) region by r pixels (square); the frame of r pixels at the array's edge is dropped too,
    since a crop may cut a region just beyond it."""
    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    out = cv2.erode(region.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


def check_output(image: np.ndarray, mask: np.ndarray, mask_dtype) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert mask.dtype == mask_dtype and mask.shape == image.shape[:2]
    assert image.flags.c_contiguous and mask.flags.c_contiguous


# Every transform with its random part always applied.
ALWAYS = {
    "scale": lambda: RandScale(),
    "scale_aspect": lambda: RandScale(aspect_ratio=(0.5, 2.0)),
    "scale_exact": lambda: RandScale(nearest_exact=True),
    "rotate": lambda: RandRotate(p=1.0),
    "blur": lambda: RandomGaussianBlur(p=1.0),
    "flip": lambda: RandomHorizontalFlip(p=1.0),
    "crop_small": lambda: RandomCrop(size=(90, 100)),
    "crop_pad": lambda: RandomCrop(size=(150, 210)),
    "crop_mixed": lambda: RandomCrop(size=(200, 64)),
    "resize": lambda: Resize(long_side=97),
    "paper": lambda: paper_train_transform(crop_size=(96, 128)),
    "paper_big_crop": lambda: paper_train_transform(crop_size=(250, 330), rotate_p=1.0, blur_p=1.0),
}


# --- alignment -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALWAYS)
def test_image_and_mask_stay_aligned(name):
    transform = ALWAYS[name]()
    image, mask = scene()
    for seed in SEEDS:
        out_image, out_mask = transform(image, mask, np.random.default_rng(seed))
        check_output(out_image, out_mask, mask.dtype)
        assert_aligned(out_image, out_mask)


def test_alignment_check_catches_a_one_sided_flip():
    """The check above is not vacuous: flipping only the image is caught."""
    image, mask = scene()
    with pytest.raises(AssertionError):
        assert_aligned(np.ascontiguousarray(image[:, ::-1]), mask)


def test_pipeline_alignment_with_int32_mask():
    transform = paper_train_transform(crop_size=(100, 100))
    image, mask = scene(disk_label=70_000, dtype=np.int32)
    for seed in SEEDS:
        out_image, out_mask = transform(image, mask, np.random.default_rng(seed))
        check_output(out_image, out_mask, np.int32)
        assert_aligned(out_image, out_mask, disk_label=70_000)


# --- mask values -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, ids", [(np.uint8, [0, 1, 2, 7, 149]), (np.int32, [0, 3, 300, 70_000, 2**24 + 1])])
@pytest.mark.parametrize("name", ALWAYS)
def test_mask_values_are_input_ids_or_ignore(name, dtype, ids):
    """Per-pixel noise masks: any interpolation would create new values; ids above 2**24 catch float32 paths."""
    rng = np.random.default_rng(123)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    mask = np.array(ids + [IGNORE], dtype)[rng.integers(0, len(ids) + 1, (70, 90))]
    transform = ALWAYS[name]()
    for seed in range(10):
        out_image, out_mask = transform(image, mask, np.random.default_rng(seed))
        check_output(out_image, out_mask, dtype)
        assert set(np.unique(out_mask)) <= set(ids) | {IGNORE}


def test_int32_index_mask_is_resampled_exactly():
    """A mask holding each pixel's flat index (up to 2**31 - 1) survives scale and rotation as exact indices."""
    h, w = 60, 80
    mask = (np.arange(h * w, dtype=np.int64) + (2**31 - 1 - h * w)).astype(np.int32).reshape(h, w)
    image = np.zeros((h, w, 3), np.uint8)
    for transform in (RandScale(), RandRotate(p=1.0)):
        for seed in range(5):
            _, out = transform(image, mask, np.random.default_rng(seed))
            assert set(np.unique(out)) <= set(mask.ravel().tolist()) | {IGNORE}


# --- determinism -----------------------------------------------------------------------------------------------


def test_same_seed_same_output_different_seeds_differ():
    transform = paper_train_transform(crop_size=(64, 64))
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    mask = rng.integers(0, 12, (80, 100)).astype(np.uint8)
    outputs = []
    for seed in range(10):
        a = transform(image, mask, np.random.default_rng(seed))
        b = transform(image, mask, np.random.default_rng(seed))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        outputs.append(a[0].tobytes() + a[1].tobytes())
    assert len(set(outputs)) == len(outputs)


def test_seeding_from_seed_epoch_index_is_order_independent():
    """What a data set does: one generator per sample from (seed, epoch, index), whatever the order of calls."""
    transform = paper_train_transform(crop_size=(48, 48))
    image, mask = scene(60, 80)
    first = {i: transform(image, mask, np.random.default_rng((0, 1, i))) for i in range(6)}
    for i in reversed(range(6)):
        again = transform(image, mask, np.random.default_rng((0, 1, i)))
        assert np.array_equal(again[0], first[i][0]) and np.array_equal(again[1], first[i][1])


# --- crop -------------------------------------------------------------------------------------------------------


def test_crop_pads_smaller_input_evenly_with_mean_and_ignore():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (101, 50, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (101, 50)).astype(np.uint8)
    out_image, out_mask = RandomCrop(size=(200, 80))(image, mask, np.random.default_rng(1))
    assert out_image.shape == (200, 80, 3) and out_mask.shape == (200, 80)
    top, left = 99 // 2, 30 // 2  # pad_h = 99: 49 above, 50 below; pad_w = 30: 15 each side
    assert np.array_equal(out_image[top : top + 101, left : left + 50], image)
    assert np.array_equal(out_mask[top : top + 101, left : left + 50], mask)
    pad = np.ones((200, 80), bool)
    pad[top : top + 101, left : left + 50] = False
    assert (out_image[pad] == MEAN_U8).all() and (out_mask[pad] == IGNORE).all()
    assert pad[:top].all() and pad[top + 101 :].all() and pad[:, :left].all() and pad[:, left + 50 :].all()
    assert pad.sum() == 200 * 80 - 101 * 50 and top + 101 + 50 == 200


def test_crop_pads_one_side_and_crops_the_other():
    h, w = 300, 50
    image = np.zeros((h, w, 3), np.uint8)
    mask = np.arange(h * w, dtype=np.int32).reshape(h, w)
    image[..., 0] = np.arange(h)[:, None] % 256
    ignore = 2**31 - 1  # any int32 ignore value works
    crop = RandomCrop(size=(200, 80), ignore_index=ignore)
    for seed in range(20):
        out_image, out_mask = crop(image, mask, np.random.default_rng(seed))
        assert out_mask.shape == (200, 80)
        assert (out_mask[:, :15] == ignore).all() and (out_mask[:, 65:] == ignore).all()
        assert (out_image[:, :15] == MEAN_U8).all() and (out_image[:, 65:] == MEAN_U8).all()
        y = out_mask[0, 15] // w
        assert np.array_equal(out_mask[:, 15:65], mask[y : y + 200])
        assert np.array_equal(out_image[:, 15:65], image[y : y + 200])


def test_crop_of_larger_input_is_a_window_at_every_possible_offset():
    h, w, ch, cw = 40, 50, 35, 46
    mask = np.arange(h * w, dtype=np.int32).reshape(h, w)
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    offsets = set()
    for seed in range(300):
        out_image, out_mask = RandomCrop(size=(ch, cw))(image, mask, np.random.default_rng(seed))
        y, x = divmod(int(out_mask[0, 0]), w)
        assert np.array_equal(out_mask, mask[y : y + ch, x : x + cw])
        assert np.array_equal(out_image, image[y : y + ch, x : x + cw])
        offsets.add((y, x))
    assert offsets == {(y, x) for y in range(h - ch + 1) for x in range(w - cw + 1)}


@pytest.mark.parametrize("crop", [(1, 1), (50, 300), (473, 473), (64, 64)])
def test_pipeline_output_is_the_crop_size(crop):
    image, mask = scene(90, 120)
    for seed in range(5):
        out_image, out_mask = paper_train_transform(crop_size=crop)(image, mask, np.random.default_rng(seed))
        assert out_image.shape == (*crop, 3) and out_mask.shape == crop


# --- probabilities and ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RandRotate, RandomGaussianBlur, RandomHorizontalFlip])
def test_p0_is_identity_and_p_half_applies_about_half_the_time(cls):
    image, mask = scene(40, 60)
    for seed in range(50):
        out_image, out_mask = cls(p=0.0)(image, mask, np.random.default_rng(seed))
        assert out_image is image and out_mask is mask
    applied = sum(cls(p=0.5)(image, mask, np.random.default_rng(s))[0] is not image for s in range(400))
    assert 160 <= applied <= 240


def test_p1_always_applies():
    image, mask = scene(40, 60)
    for seed in range(50):
        rng = np.random.default_rng(seed)
        out_image, out_mask = RandomHorizontalFlip(p=1.0)(image, mask, rng)
        assert np.array_equal(out_image, image[:, ::-1]) and np.array_equal(out_mask, mask[:, ::-1])
        out_image, out_mask = RandRotate(angle=(3.0, 10.0), p=1.0)(image, mask, rng)
        assert not np.array_equal(out_mask, mask)
        out_image, out_mask = RandomGaussianBlur(p=1.0)(image, mask, rng)
        assert not np.array_equal(out_image, image)


def test_blur_is_opencv_gaussian_k5_sigma_from_kernel_and_leaves_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (45, 70)).astype(np.uint8)
    out_image, out_mask = RandomGaussianBlur(p=1.0)(image, mask, rng)
    assert np.array_equal(out_image, cv2.GaussianBlur(image, (5, 5), 0))
    # OpenCV's sigma-0 kernel for k = 5 is its fixed table: the binomial [1, 4, 6, 4, 1] / 16 (sigma 1), reflected
    # borders; up to its fixed-point rounding
    binomial = np.array([1, 4, 6, 4, 1], np.float64) / 16
    reference = cv2.sepFilter2D(image, -1, binomial, binomial, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(out_image.astype(int) - reference).max() <= 1
    assert out_mask is mask


def test_scale_range_is_honoured():
    image, mask = scene(100, 150)
    heights = []
    for seed in range(300):
        _out_image, out_mask = RandScale(scale=(0.5, 2.0))(image, mask, np.random.default_rng(seed))
        h, w = out_mask.shape
        assert 50 <= h <= 200 and 75 <= w <= 300
        assert abs(h / 100 - w / 150) <= 0.011  # same factor on both axes, up to rounding
        heights.append(h)
    assert min(heights) <= 55 and max(heights) >= 195
    for seed in range(100):  # aspect-ratio jitter: s_x / s_y in [0.5, 2]
        _, out_mask = RandScale(scale=(1.0, 1.0), aspect_ratio=(0.5, 2.0))(image, mask, np.random.default_rng(seed))
        h, w = out_mask.shape
        assert 0.5 - 0.02 <= (w / 150) / (h / 100) <= 2.0 + 0.02
    _, out_mask = RandScale(scale=(0.001, 0.001))(image, mask, np.random.default_rng(0))
    assert out_mask.shape == (1, 1)


def test_rotation_pads_image_with_mean_and_mask_with_ignore():
    image = np.empty((80, 120, 3), np.uint8)
    image[...] = RECT
    mask = np.ones((80, 120), np.int32)
    out_image, out_mask = RandRotate(angle=(10.0, 10.0), p=1.0)(image, mask, np.random.default_rng(0))
    for y, x in [(0, 0), (0, 119), (79, 0), (79, 119)]:  # corners rotate in from outside the image
        assert tuple(out_image[y, x]) == MEAN_U8 and out_mask[y, x] == IGNORE
    assert tuple(out_image[40, 60]) == RECT and out_mask[40, 60] == 1
    assert set(np.unique(out_mask)) == {1, IGNORE}
    # a custom mean / ignore value is used, and ignored pixels are mean-coloured (up to bilinear edges)
    out_image, out_mask = RandRotate(angle=(-10.0, -10.0), p=1.0, mean=(10, 20, 30), ignore_index=99)(
        image, mask, np.random.default_rng(0)
    )
    assert tuple(out_image[0, 0]) == (10, 20, 30) and out_mask[0, 0] == 99
    pred = classify(out_image, {1: RECT, 99: (10, 20, 30)})
    assert (pred[shrink(out_mask == 99, 1)] == 99).all() and (pred[shrink(out_mask == 1, 1)] == 1).all()


def test_pad_colour_is_the_mean_rounded_for_uint8():
    assert pad_colour(IMAGENET_MEAN) == MEAN_U8
    assert pad_colour(IMAGENET_MEAN, np.float32) == IMAGENET_MEAN


# --- factory, resize, errors ---------------------------------------------------------------------------------------


def test_paper_train_transform_is_the_official_order_with_its_parameters():
    t = paper_train_transform(crop_size=(473, 473))
    assert [type(s) for s in t.transforms] == [
        RandScale,
        RandRotate,
        RandomGaussianBlur,
        RandomHorizontalFlip,
        RandomCrop,
    ]
    scale, rotate, blur, flip, crop = t.transforms
    assert scale.scale == (0.5, 2.0) and scale.aspect_ratio is None
    assert rotate.angle == (-10.0, 10.0) and rotate.p == 0.5 and rotate.mean == IMAGENET_MEAN
    assert rotate.ignore_index == 255 and crop.ignore_index == 255 and crop.mean == IMAGENET_MEAN
    assert blur.kernel_size == 5 and blur.sigma == 0.0 and blur.p == 0.5 and flip.p == 0.5
    assert crop.size == (473, 473)
    t = paper_train_transform(
        crop_size=(10, 20),
        scale=(1.0, 1.5),
        rotate=(-5, 5),
        rotate_p=0.2,
        blur_p=0.1,
        blur_kernel=3,
        flip_p=0.0,
        mean=(1, 2, 3),
        ignore_index=0,
    )
    scale, rotate, blur, flip, crop = t.transforms
    assert scale.scale == (1.0, 1.5) and rotate.angle == (-5.0, 5.0) and rotate.p == 0.2
    assert blur.p == 0.1 and blur.kernel_size == 3 and flip.p == 0.0
    assert crop.size == (10, 20) and crop.mean == (1.0, 2.0, 3.0) and crop.ignore_index == 0
    assert "RandScale" in repr(t)


def test_resize():
    image, mask = scene(90, 120)
    out_image, out_mask = Resize(long_side=60)(image, mask, None)
    assert out_image.shape == (45, 60, 3) and out_mask.shape == (45, 60)
    out_image, out_mask = Resize(size=(33, 44))(image, mask, np.random.default_rng(0))
    assert out_mask.shape == (33, 44)
    out_image, out_mask = Resize(size=(90, 120))(image, mask, None)
    assert out_image is image and out_mask is mask


def test_errors_name_the_problem():
    image, mask = scene(20, 30)
    rng = np.random.default_rng(0)
    compose = Compose([RandomHorizontalFlip()])
    with pytest.raises(ValueError, match=r"mask shape \(20, 29\)"):
        compose(image, mask[:, :29], rng)
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\)"):
        compose(image[..., 0], mask, rng)
    with pytest.raises(TypeError, match="mask dtype int64"):
        compose(image, mask.astype(np.int64), rng)
    with pytest.raises(ValueError, match="scale"):
        RandScale(scale=(2.0, 0.5))
    with pytest.raises(ValueError, match="scale"):
        RandScale(scale=(0.0, 2.0))
    with pytest.raises(ValueError, match="p must be a probability"):
        RandomHorizontalFlip(p=1.5)
    with pytest.raises(ValueError, match="odd"):
        RandomGaussianBlur(kernel_size=4)
    with pytest.raises(ValueError, match="size"):
        RandomCrop(size=(0, 10))
    with pytest.raises(ValueError, match="mean must have 3"):
        RandRotate(mean=(1.0, 2.0))
    with pytest.raises(ValueError, match="exactly one"):
        Resize(size=(2, 2), long_side=3)
    with pytest.raises(ValueError, match="does not fit in a uint8 mask"):
        RandomCrop(size=(40, 40), ignore_index=300)(image, mask, rng)


def test_compose_makes_non_contiguous_inputs_contiguous():
    image, mask = scene(40, 60)
    image, mask = image[:, ::-1], mask[:, ::-1]  # views with negative strides
    for t in (Compose([]), Compose([RandomHorizontalFlip(p=0.0)]), paper_train_transform(crop_size=(30, 30))):
        out_image, out_mask = t(image, mask, np.random.default_rng(0))
        assert out_image.flags.c_contiguous and out_mask.flags.c_contiguous
        assert np.array_equal(out_image, image) or out_image.shape == (30, 30, 3)


@pytest.mark.parametrize("name", ALWAYS)
def test_unlabelled_image_gives_the_same_image_and_no_mask(name):
    """mask=None (a test split) is allowed: the image is transformed exactly as with a mask, the mask stays None."""
    image, mask = scene(50, 70)
    transform = ALWAYS[name]()
    for seed in range(5):
        with_mask, _ = transform(image, mask, np.random.default_rng(seed))
        out_image, out_mask = transform(image, None, np.random.default_rng(seed))
        assert out_mask is None and np.array_equal(out_image, with_mask)
