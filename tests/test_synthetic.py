"""The embedded demo data set: determinism, the folder layout it writes, and that its ambiguity is real.

Measured on the 600 scenes of 64 x 512 the ambiguity tests draw (rng [0, i]; classifiers fit on 300 scenes,
scored on the other 300; pixels within 3 pixels of the cue strip left out, 1.2% of the context-pair pixels):

    class pixel shares: sky 17.9%, shore 4.1%, forest 4.2%, water 32.6%, grass 34.0%, lily pad 2.3%, bush 2.4%,
    rock 2.5%; sky and rock in every scene, each scene-type class in its half (49% lake scenes); the cue strip at
    the left end in 51% of the scenes, spanning 49-72 columns (mean 61).
    TV distance of local-descriptor histograms (permutation p-value over scene labels):
        water/grass     colour 0.043 (p 0.16), 3x3 patch 0.050 (p 0.11), 5x5 patch 0.052 (p 0.12)
        lily pad/bush   colour 0.045 (p 0.08), 3x3 patch 0.051 (p 0.10), 5x5 patch 0.056 (p 0.09)
        controls        water/lily pad 0.97-0.99, shore/forest 1.00
    best local majority classifier, balanced accuracy (colour 16 levels, 3x3 patch, 5x5 patch):
        water/grass 0.518 0.510 0.513; lily pad/bush 0.524 0.515 0.518 (always guessing the larger class: 0.51)
        controls: water/lily pad 0.986-1.000, shore/forest 0.998-1.000
    columns between a context-pair pixel and the cue strip: median 222 of 512; 33% of the pixels over 300; 42%
    beyond the 259-column reach of the demo network without pyramid pooling (dilated ResNet-18, output stride 8).

The departures from 0 and 0.5 are sampling noise of which scenes happen to be lakes: for one generator state the
lake and the meadow version of a scene differ only inside the cue strip (test_the_scene_type_changes_only_the_cue).
"""

from __future__ import annotations

import numpy as np
import pytest

from pspnet.data import synthetic
from pspnet.data.check import check_dataset
from pspnet.data.datasets import build_dataset
from pspnet.data.io import read_image, read_mask
from pspnet.data.synthetic import (
    BUSH,
    CLASS_NAMES,
    CLASSES,
    CONTEXT_PAIRS,
    FOREST,
    GRASS,
    LILY_PAD,
    PALETTE,
    ROCK,
    SHORE,
    SKY,
    WATER,
    make_scene,
    scene_type,
    write_synthetic_dataset,
)

K = len(CLASSES)


# -- the scenes ---------------------------------------------------------------------------------------------------


def test_classes_are_a_handful_with_distinct_names_and_colours():
    assert 5 <= K <= 8
    assert len(set(CLASS_NAMES)) == K and len(set(PALETTE)) == K
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in PALETTE)
    table = synthetic.class_table()
    assert all(name in table for name in CLASS_NAMES) and len(table.splitlines()) == K + 1
    # the context pairs are (lake class, meadow class), disjoint
    flat = [c for pair in CONTEXT_PAIRS for c in pair]
    assert len(CONTEXT_PAIRS) >= 2 and len(set(flat)) == len(flat)


@pytest.mark.parametrize("size", [(128, 128), (96, 160), (16, 16)])
def test_make_scene_shapes_and_values(size):
    image, mask = make_scene(np.random.default_rng(3), size)
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert mask.shape == size and mask.dtype == np.uint8
    assert int(mask.max()) < K  # every pixel labelled, no ignore value
    assert mask[0].tolist() == [SKY] * size[1]  # the top row is sky


def test_make_scene_refuses_tiny_images():
    with pytest.raises(ValueError, match="at least 16 x 16"):
        make_scene(np.random.default_rng(0), (8, 64))


def test_same_seed_same_scene_different_seed_different_scene():
    a_image, a_mask = make_scene(np.random.default_rng(11))
    b_image, b_mask = make_scene(np.random.default_rng(11))
    c_image, c_mask = make_scene(np.random.default_rng(12))
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_image, c_image) and not np.array_equal(a_mask, c_mask)


class _ForcedKind:
    """A generator whose first ``integers`` draw (the scene type in ``make_scene``) is replaced by ``kind``."""

    def __init__(self, seed, kind: int):
        self._rng, self._kind, self._first = np.random.default_rng(seed), kind, True

    def integers(self, *args, **kwargs):
        value = self._rng.integers(*args, **kwargs)
        if self._first:
            self._first = False
            return self._kind
        return value

    def __getattr__(self, name):
        return getattr(self._rng, name)


def test_the_scene_type_changes_only_the_cue():
    """The same random draws as a lake and as a meadow: identical pixels everywhere but in the cue strip, and the
    same layout, with every label swapped for its partner."""
    swap = {SHORE: FOREST, WATER: GRASS, LILY_PAD: BUSH}
    for i in range(10):
        lake_image, lake_mask = make_scene(_ForcedKind([9, i], 0))
        meadow_image, meadow_mask = make_scene(_ForcedKind([9, i], 1))
        assert scene_type(lake_mask) == "lake" and scene_type(meadow_mask) == "meadow"
        swapped = lake_mask.copy()
        for a, b in swap.items():
            swapped[lake_mask == a] = b
        np.testing.assert_array_equal(swapped, meadow_mask)
        differs = (lake_image != meadow_image).any(-1)
        assert differs.any() and not (differs & (lake_mask != SHORE)).any()


def test_scene_type_reads_the_mask():
    kinds = set()
    for i in range(20):
        _, mask = make_scene(np.random.default_rng([5, i]))
        kind = scene_type(mask)
        kinds.add(kind)
        present = set(np.unique(mask).tolist())
        if kind == "lake":
            assert SHORE in present and WATER in present and not present & {FOREST, GRASS, BUSH}
        else:
            assert FOREST in present and GRASS in present and not present & {SHORE, WATER, LILY_PAD}
    assert kinds == {"lake", "meadow"}
    with pytest.raises(ValueError, match="both scene types"):
        scene_type(np.array([[WATER, GRASS]], np.uint8))


# -- the folder layout --------------------------------------------------------------------------------------------


def test_written_tree_is_a_valid_folder_data_set(tmp_path):
    root = write_synthetic_dataset(tmp_path / "synthetic", train=6, val=3, test=2, size=(64, 96), seed=4)
    assert root == tmp_path / "synthetic"
    for split, count in [("train", 6), ("val", 3), ("test", 2)]:
        dataset = build_dataset("folder", root, split)
        assert len(dataset) == count
        assert [s.name for s in dataset.samples] == [f"{i:04d}" for i in range(count)]
        info = dataset.info
        assert info.name == "synthetic" and info.classes == CLASS_NAMES and info.palette == PALETTE
        assert info.crop_size == (64, 96) and info.base_size == 96 and info.ignore_index == 255
        report = check_dataset("folder", root, split, progress=False)
        assert report.ok, report.format()
        assert report.images == report.masks == count and dict(report.image_sizes) == {(64, 96): count}
    # a sample on disk is exactly the scene of its seed stream, the mask a palette PNG read by index
    image, mask = dataset.load(1)  # test split, sample 1
    want_image, want_mask = make_scene(np.random.default_rng([4, synthetic.SPLIT_STREAMS["test"], 1]), (64, 96))
    np.testing.assert_array_equal(image, want_image)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(read_mask(root / "masks" / "test" / "0001.png"), want_mask)


def test_writing_is_deterministic_and_splits_are_independent(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", train=3, val=2, size=(32, 32), seed=1)
    b = write_synthetic_dataset(tmp_path / "b", train=3, val=2, test=2, size=(32, 32), seed=1)
    c = write_synthetic_dataset(tmp_path / "c", train=3, val=2, size=(32, 32), seed=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 10 and not (a / "images" / "test").exists()
    for rel in files:  # adding a test split changes nothing in train and val
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "classes.yaml").read_bytes() == (b / "classes.yaml").read_bytes()
    assert not np.array_equal(read_image(a / files[0]), read_image(c / files[0]))
    # train and val scenes are different scenes
    assert not np.array_equal(read_image(a / "images/train/0000.png"), read_image(a / "images/val/0000.png"))


def test_rewriting_a_smaller_set_removes_left_over_samples(tmp_path):
    root = write_synthetic_dataset(tmp_path, train=5, val=2, size=(32, 32))
    (tmp_path / "images" / "train" / "notes.png").write_bytes(b"not ours")  # not a numbered sample: kept
    write_synthetic_dataset(tmp_path, train=3, val=2, size=(32, 32))
    assert sorted(p.name for p in (root / "masks" / "train").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == [
        "0000.png",
        "0001.png",
        "0002.png",
        "notes.png",
    ]


def test_refuses_to_overwrite_another_data_set(tmp_path):
    (tmp_path / "classes.yaml").write_text("name: potholes\nclasses: [road, pothole]\n")
    with pytest.raises(FileExistsError, match="another data set"):
        write_synthetic_dataset(tmp_path, train=1, val=1)
    with pytest.raises(ValueError, match="non-negative"):
        write_synthetic_dataset(tmp_path / "x", train=-1, val=1)


# -- the ambiguity is real ----------------------------------------------------------------------------------------
#
# Local descriptors of a pixel: its colour, or the mean colour and texture (standard deviation) of its 3x3 or 5x5
# neighbourhood, quantised. Pixels within MARGIN pixels (in rows and columns) of the cue strip are left out: their
# 5x5 window reaches into the strip, which is the context itself (it is what should decide), not local appearance.

FIT, EVAL = 300, 300  # scenes to fit the local classifiers on, scenes to score them on
MARGIN = 3


def near(flags: np.ndarray, radius: int) -> np.ndarray:
    """(N, H, W) bool: pixels with a flagged pixel within ``radius`` rows and columns (a box dilation)."""
    out = flags.copy()
    for axis in (1, 2):
        grown = out.copy()
        for d in range(1, radius + 1):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(None, -d), slice(d, None)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


def columns_from_cue(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) columns between each pixel and the nearest column the cue strip reaches in its scene (0 inside
    that span). A lower bound on the distance to the nearest cue pixel."""
    cols = np.arange(masks.shape[2])
    cue = np.isin(masks, (SHORE, FOREST)).any(axis=1)  # (N, W) columns holding cue pixels
    first = np.where(cue, cols, masks.shape[2]).min(axis=1)[:, None, None]
    last = np.where(cue, cols, -1).max(axis=1)[:, None, None]
    return np.broadcast_to(np.maximum(np.maximum(first - cols, cols - last), 0), masks.shape)


@pytest.fixture(scope="module")
def scenes():
    """600 scenes at the default size: images (N, H, W, 3), masks (N, H, W), lake (N,) flags and far (N, H, W):
    pixels more than MARGIN pixels (rows and columns) from every cue pixel."""
    drawn = [make_scene(np.random.default_rng([0, i])) for i in range(FIT + EVAL)]
    images = np.stack([d[0] for d in drawn])
    masks = np.stack([d[1] for d in drawn])
    lake = np.array([scene_type(m) == "lake" for m in masks])
    return images, masks, lake, ~near(np.isin(masks, (SHORE, FOREST)), MARGIN)


def colour_keys(images: np.ndarray, levels: int) -> tuple[np.ndarray, int]:
    """Each pixel's colour quantised to ``levels`` per channel: (keys (N, H, W), number of keys)."""
    q = images.astype(np.int64) * levels // 256
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2], levels**3


def patch_keys(images: np.ndarray, k: int = 3, levels: int = 8, std_step: float = 4.0, std_levels: int = 6):
    """Each pixel's k x k neighbourhood summarised and quantised: mean colour (levels per channel) and mean
    per-channel standard deviation (std_levels steps of std_step); -1 where the window leaves the image."""
    x = images.astype(np.int32)

    def box(v):  # mean over k x k windows ("valid"): separable sums of shifted views, exact in int32
        h, w = v.shape[1] - k + 1, v.shape[2] - k + 1
        rows = sum(v[:, i : i + h] for i in range(k))
        return sum(rows[:, :, j : j + w] for j in range(k)).astype(np.float32) / np.float32(k * k)

    mean, mean2 = box(x), box(x * x)
    std = np.sqrt(np.clip(mean2 - mean * mean, 0, None)).mean(-1)
    q = np.clip((mean * levels / 256).astype(np.int64), 0, levels - 1)
    qs = np.clip((std / std_step).astype(np.int64), 0, std_levels - 1)
    keys = np.full(images.shape[:3], -1, np.int64)
    p = k // 2
    keys[:, p : images.shape[1] - p, p : images.shape[2] - p] = (
        (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
    ) * std_levels + qs
    return keys, levels**3 * std_levels


@pytest.fixture(scope="module")
def local_keys(scenes):
    """Local descriptors of every pixel, computed once: name -> (keys (N, H, W), number of keys)."""
    images = scenes[0]

    def patches(k):  # in chunks of scenes: small temporaries are faster
        parts = [patch_keys(images[i : i + 50], k=k) for i in range(0, len(images), 50)]
        return np.concatenate([keys for keys, _ in parts]), parts[0][1]

    return {
        "colour 8 levels": colour_keys(images, 8),
        "colour 16 levels": colour_keys(images, 16),
        "3x3 patch": patches(3),
        "5x5 patch": patches(5),
    }


def tv_distance(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """Total-variation distance between the histograms of keys ``a`` and ``b`` (0 = same, 1 = disjoint)."""
    ha = np.bincount(a, minlength=n) / len(a)
    hb = np.bincount(b, minlength=n) / len(b)
    return 0.5 * float(np.abs(ha - hb).sum())


def tv_permutation_test(keys, masks, use, a, b, n, permutations=200):
    """TV distance between the key histograms of classes a and b, and its p-value under "same distribution".

    In a scene only one class of a context pair occurs, so the histogram of a is that of the pair's pixels pooled
    over the a-scenes. Pixels of one scene share its lighting and texture draws (they are not independent), so the
    null distribution comes from shuffling the scene labels, not the pixels: p-value = (1 + number of shuffles
    with a TV at least the observed one) / (1 + shuffles)."""
    count = len(keys)
    pick = ((masks == a) | (masks == b)) & (keys >= 0) & use
    per_scene = np.bincount((keys + np.arange(count)[:, None, None] * n)[pick], minlength=count * n)
    per_scene = per_scene.reshape(count, n).astype(np.float64)  # (N, n) key counts of the pair in each scene
    is_a = (masks == a).any(axis=(1, 2))

    def tv(flags):
        ha, hb = per_scene[flags].sum(0), per_scene[~flags].sum(0)
        return 0.5 * float(np.abs(ha / ha.sum() - hb / hb.sum()).sum())

    observed = tv(is_a)
    rng = np.random.default_rng(0)
    null = np.array([tv(rng.permutation(is_a)) for _ in range(permutations)])
    return observed, (1 + int((null >= observed).sum())) / (1 + permutations)


def local_classifier_accuracy(keys, masks, use, a, b, n):
    """Fit the best local classifier for the pair (a, b) on the first FIT scenes: for each key, the class with more
    pixels of that key, each class's pixels weighted by 1 / its pixel count (so a class that is merely larger in
    these scenes does not win by default). Score it on the pair's pixels of the last EVAL scenes.

    Returns (balanced accuracy: mean recall of a and b, 0.5 for any constant guess; plain accuracy; share of the
    larger class among the scored pixels, the plain accuracy of always guessing it)."""
    fit_keys, fit_masks = keys[:FIT], masks[:FIT]
    pick = ((fit_masks == a) | (fit_masks == b)) & (fit_keys >= 0) & use[:FIT]
    is_b = fit_masks[pick] == b
    weights = np.where(is_b, 1 / is_b.sum(), 1 / (~is_b).sum())
    votes_b = np.bincount(fit_keys[pick], weights=weights * is_b, minlength=n)
    votes_a = np.bincount(fit_keys[pick], weights=weights * ~is_b, minlength=n)
    table = votes_b > votes_a  # keys never seen: guess a
    eval_keys, eval_masks = keys[FIT:], masks[FIT:]
    pick = ((eval_masks == a) | (eval_masks == b)) & (eval_keys >= 0) & use[FIT:]
    truth = eval_masks[pick] == b
    guess = table[eval_keys[pick]]
    balanced = 0.5 * float(guess[truth].mean() + (~guess[~truth]).mean())
    return balanced, float((guess == truth).mean()), float(max(truth.mean(), 1 - truth.mean()))


def _pair_id(pair):
    return f"{CLASS_NAMES[pair[0]]}-{CLASS_NAMES[pair[1]]}"


def test_every_class_is_common(scenes):
    _, masks, lake, _ = scenes
    shares = np.bincount(masks.ravel(), minlength=K) / masks.size
    present = np.array([[np.any(m == c) for c in range(K)] for m in masks]).mean(0)
    # measured: see the module docstring
    low = {SKY: 0.12, SHORE: 0.025, FOREST: 0.025, WATER: 0.25, GRASS: 0.25, LILY_PAD: 0.01, BUSH: 0.01, ROCK: 0.005}
    high = {SKY: 0.22, SHORE: 0.06, FOREST: 0.06, WATER: 0.45, GRASS: 0.45, LILY_PAD: 0.04, BUSH: 0.04, ROCK: 0.03}
    for c in range(K):
        assert low[c] < shares[c] < high[c], (CLASS_NAMES[c], shares[c])
    assert present[SKY] == 1 and present[ROCK] > 0.95
    assert 0.4 < lake.mean() < 0.6
    for lake_class, meadow_class in CONTEXT_PAIRS + ((SHORE, FOREST),):
        assert present[lake_class] == pytest.approx(lake.mean(), abs=0.02)
        assert present[meadow_class] == pytest.approx(1 - lake.mean(), abs=0.02)


@pytest.mark.parametrize("pair", CONTEXT_PAIRS, ids=_pair_id)
def test_context_pairs_have_the_same_local_statistics(scenes, local_keys, pair):
    _, masks, _, far = scenes
    a, b = pair
    other = LILY_PAD if a == WATER else WATER  # a class that looks different from a
    for name in ("colour 8 levels", "3x3 patch", "5x5 patch"):
        keys, n = local_keys[name]
        distance, p_value = tv_permutation_test(keys, masks, far, a, b, n)
        assert distance < 0.1 and p_value >= 0.01, (name, distance, p_value)
        # the same statistic tells a locally distinct pair apart
        in_a, in_other = (masks == a) & (keys >= 0) & far, (masks == other) & (keys >= 0) & far
        assert tv_distance(keys[in_a], keys[in_other], n) > 0.9


@pytest.mark.parametrize("pair", CONTEXT_PAIRS, ids=_pair_id)
def test_a_local_classifier_is_at_chance_on_context_pairs(scenes, local_keys, pair):
    _, masks, _, far = scenes
    a, b = pair
    for name in ("colour 16 levels", "3x3 patch", "5x5 patch"):
        keys, n = local_keys[name]
        balanced, accuracy, larger_share = local_classifier_accuracy(keys, masks, far, a, b, n)
        assert abs(balanced - 0.5) < 0.05, (name, balanced)
        assert accuracy < larger_share + 0.03, (name, accuracy, larger_share)  # no better than a constant guess
        # the same classifier is near perfect where local appearance decides
        control = local_classifier_accuracy(keys, masks, far, a, LILY_PAD if a == WATER else WATER, n)[0]
        assert control > 0.97, (name, control)
        control = local_classifier_accuracy(keys, masks, np.ones_like(far), SHORE, FOREST, n)[0]
        assert control > 0.97, (name, control)


def test_the_scene_cue_decides_and_is_far_away(scenes, local_keys):
    """The cue strip (sand vs trees) is far apart in appearance, and a rule that looks only at the two ends of the
    scene tells the scene type, hence the label of every context pair, in every scene. The strip sits at one end,
    so most ambiguous pixels are hundreds of columns away from it."""
    images, masks, lake, _ = scenes
    keys, n = local_keys["colour 8 levels"]
    assert tv_distance(keys[masks == SHORE], keys[masks == FOREST], n) > 0.95
    width = images.shape[2]
    ends = np.concatenate([images[:, :, : width * 15 // 100], images[:, :, -width * 15 // 100 :]], 2)
    ends = ends.astype(np.int64)
    sandy = ((ends[..., 0] - ends[..., 2]) > 40).mean(axis=(1, 2))  # sand is red-yellow; sky, trees and water are not
    np.testing.assert_array_equal(sandy > 0.1, lake)
    # the cue is at the left end in about half of the scenes, at the right end in the others
    cue_columns = np.isin(masks, (SHORE, FOREST)).any(axis=1)  # (N, W)
    left = cue_columns[:, 0]
    assert np.all(left != cue_columns[:, -1]) and 0.4 < left.mean() < 0.6
    assert cue_columns.sum(1).max() < 0.2 * width
    distance = columns_from_cue(masks)
    ambiguous = np.isin(masks, [c for pair in CONTEXT_PAIRS for c in pair])
    assert np.median(distance[ambiguous]) > width / 3
    assert (distance[ambiguous] > 300).mean() > 0.25


def demo_receptive_field() -> tuple[int, int]:
    """Columns to the left and right of an output pixel that can change it, in the demo network without pyramid
    pooling (evaluation mode, random weights; the reach is a property of the architecture): the extent of the
    nonzero input gradient of one output pixel's logits, on a random input wider than the reach."""
    import torch

    from pspnet.demo import demo_config
    from pspnet.models import build_model

    torch.manual_seed(0)
    model = build_model(demo_config("unused", ppm=False).model_config(K)).eval()
    h, w = 64, 1024
    x = torch.randn(1, 3, h, w, requires_grad=True)
    model(x)[0, :, h // 2, w // 2].sum().backward()
    columns = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)) > 0).flatten()
    return w // 2 - int(columns.min()), int(columns.max()) - w // 2


def test_most_ambiguous_pixels_lie_beyond_the_reach_of_the_demo_network_without_pyramid_pooling(scenes):
    """What "scenes large relative to the receptive field" means here: without pyramid pooling the demo network's
    output at a pixel depends on the input only within a fixed reach (about 255 columns each way for ResNet-18 at
    output stride 8 with the 3x3 head conv); a good share of the context-pair pixels lies farther than that from
    every cue pixel, so such a network cannot tell them apart at all. Pyramid pooling sees the whole scene."""
    _, masks, _, _ = scenes
    reach = max(demo_receptive_field())
    assert 200 < reach < 300, reach  # the architecture's, not a trained one's
    distance = columns_from_cue(masks)
    ambiguous = np.isin(masks, [c for pair in CONTEXT_PAIRS for c in pair])
    beyond = (distance[ambiguous] > reach).mean()
    assert beyond > 0.3, beyond
