"""Contracts of the metrics: the confusion matrix against an independent count, hand-worked IoU/Acc numbers,
data-set-level accumulation, the official convention's difference, Boundary IoU bands against scipy and the
reference implementation's OpenCV procedure, and the all-reduce under a real (gloo) process group."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy import ndimage

from pspnet.engine.metrics import (
    BoundaryIoU,
    ConfusionMatrix,
    SegmentationMetrics,
    boundary_band,
    boundary_width,
    confusion_matrix,
    metrics_report,
    official_macc,
    official_miou,
)

IGNORE = 255


def random_labels(shape, k, *, ignore_fraction=0.1, generator=None):
    """Random (pred, target) int64 with about ``ignore_fraction`` of target pixels set to 255."""
    g = generator or torch.Generator().manual_seed(0)
    pred = torch.randint(0, k, shape, generator=g)
    target = torch.randint(0, k, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignore_fraction] = IGNORE
    return pred, target


def blobby_labels(h, w, k, *, seed, ignore=True):
    """A label map of smooth regions (argmax of blurred noise) with an ignored patch: realistic contours."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((k, h, w)), sigma=(0, 3, 3))
    labels = field.argmax(0)
    if ignore:
        labels[h // 3 : h // 2, w // 4 : w // 2] = IGNORE
    return torch.from_numpy(labels).long()


def reference_confusion(pred: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros((k, k), dtype=np.int64)
    valid = target != IGNORE
    np.add.at(m, (target[valid], pred[valid]), 1)
    return m


# ----------------------------------------------------------------------------------------------------------------
# confusion matrix


@pytest.mark.parametrize("k", [1, 2, 5, 19, 150])
def test_confusion_matrix_matches_an_independent_count(k):
    pred, target = random_labels((3, 17, 23), k)
    conf = confusion_matrix(pred, target, k)
    assert conf.dtype == torch.int64 and conf.shape == (k, k)
    np.testing.assert_array_equal(conf.numpy(), reference_confusion(pred.numpy(), target.numpy(), k))
    assert conf.sum() == (target != IGNORE).sum()


@pytest.mark.parametrize("shape", [(11,), (7, 9), (2, 7, 9), (2, 3, 7, 9)])
def test_confusion_matrix_accepts_any_shape_and_integer_dtype(shape):
    pred, target = random_labels(shape, 6)
    expected = reference_confusion(pred.numpy().ravel(), target.numpy().ravel(), 6)
    np.testing.assert_array_equal(confusion_matrix(pred, target, 6).numpy(), expected)
    # uint8 labels (as read from PNG masks): K * target must not overflow
    np.testing.assert_array_equal(confusion_matrix(pred.to(torch.uint8), target.to(torch.uint8), 6).numpy(), expected)


def test_custom_ignore_index():
    pred = torch.tensor([0, 1, 2, 1])
    target = torch.tensor([0, -1, 2, 2])
    conf = confusion_matrix(pred, target, 3, ignore_index=-1)
    assert conf.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]


def test_out_of_range_labels_are_named():
    pred = torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"target holds values outside \[0, 3\) \(ignore_index is 255\): -1, 3, 7"):
        confusion_matrix(pred, torch.tensor([7, 3, -1, 3, 255]), 3)
    with pytest.raises(ValueError, match=r"pred holds values outside \[0, 3\) at labelled pixels: 3, 5"):
        confusion_matrix(torch.tensor([5, 3, 0, 1, 1]), torch.tensor([0, 1, 2, 0, 1]), 3)
    # a prediction at an ignored pixel counts nowhere, so it is not checked either
    assert confusion_matrix(torch.tensor([9, 0]), torch.tensor([255, 0]), 3).sum() == 1
    with pytest.raises(ValueError, match="255"):  # ignore_index changed: 255 is now an out-of-range label
        confusion_matrix(torch.tensor([0, 0]), torch.tensor([255, 0]), 3, ignore_index=-1)


def test_bad_inputs_are_refused():
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(torch.rand(2, 3), torch.zeros(2, 3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3\) and \(3, 2\)"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


# ----------------------------------------------------------------------------------------------------------------
# region metrics


def hand_example():
    # gt:   0 0 0 1 1 2 ignore      class 3 appears nowhere (its prediction at the ignored pixel counts nowhere)
    # pred: 0 0 1 1 2 2 3
    target = torch.tensor([0, 0, 0, 1, 1, 2, IGNORE])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    conf = ConfusionMatrix(4)
    conf.update(pred, target)
    return conf


def test_hand_worked_example():
    conf = hand_example()
    assert conf.matrix.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    m = conf.compute()
    # TP = 2, 1, 1; gt = 3, 2, 1; predicted = 2, 2, 2
    assert m.iou[:3] == pytest.approx([2 / 3, 1 / 3, 1 / 2], rel=1e-15)
    assert m.acc[:3] == pytest.approx([2 / 3, 1 / 2, 1.0], rel=1e-15)
    assert m.iou[3] is None and m.acc[3] is None
    assert m.gt_pixels == [3, 2, 1, 0]
    assert m.miou == pytest.approx(0.5, rel=1e-15)  # class 3 skipped: (2/3 + 1/3 + 1/2) / 3
    assert m.macc == pytest.approx(13 / 18, rel=1e-15)
    assert m.all_acc == pytest.approx(4 / 6, rel=1e-15)


def test_official_convention_differs_exactly_as_documented():
    conf = hand_example()
    # official: mean over all 4 classes, the absent class counting 0 (up to the 1e-10 epsilons)
    assert official_miou(conf.matrix) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2 + 0) / 4, abs=1e-9)
    assert official_macc(conf.matrix) == pytest.approx((2 / 3 + 1 / 2 + 1 + 0) / 4, abs=1e-9)
    m = conf.compute()
    assert official_miou(conf.matrix) == pytest.approx(m.miou * 3 / 4, abs=1e-9)
    # with every class present in the ground truth the two agree to ~1e-10
    pred, target = random_labels((64, 64), 7)
    full = ConfusionMatrix(7)
    full.update(pred, target)
    m = full.compute()
    assert abs(official_miou(full.matrix) - m.miou) < 1e-10
    assert abs(official_macc(full.matrix) - m.macc) < 1e-10


def test_class_only_in_prediction_and_all_ignored():
    conf = ConfusionMatrix(3)
    conf.update(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]))
    m = conf.compute()
    assert m.iou == [0.5, 1.0, 0.0] and m.acc == [0.5, 1.0, None]
    assert m.miou == pytest.approx(0.5) and m.macc == pytest.approx(0.75)

    empty = ConfusionMatrix(3)
    empty.update(torch.tensor([0, 1, 2]), torch.full((3,), IGNORE))
    m = empty.compute()
    assert m == SegmentationMetrics([None] * 3, [None] * 3, [0, 0, 0], None, None, None)


def test_accumulation_is_data_set_level():
    g = torch.Generator().manual_seed(1)
    batches = [random_labels((2, 9 + i, 13), 5, generator=g) for i in range(4)]
    acc = ConfusionMatrix(5)
    for pred, target in batches:
        acc.update(pred, target)
    flat_pred = torch.cat([p.flatten() for p, _ in batches])
    flat_target = torch.cat([t.flatten() for _, t in batches])
    assert torch.equal(acc.matrix, confusion_matrix(flat_pred, flat_target, 5))
    assert acc.compute() == SegmentationMetrics.from_matrix(confusion_matrix(flat_pred, flat_target, 5))
    acc.reset()
    assert acc.matrix.sum() == 0


def test_metrics_are_fractions_in_float64():
    pred, target = random_labels((50, 50), 4)
    m = ConfusionMatrix(4)
    m.update(pred, target)
    mat = m.matrix.numpy().astype(np.float64)
    tp = np.diag(mat)
    iou = tp / (mat.sum(0) + mat.sum(1) - tp)
    result = m.compute()
    assert result.iou == list(iou)  # bit-exact float64
    assert all(0 <= v <= 1 for v in result.iou + result.acc + [result.miou, result.macc, result.all_acc])


# ----------------------------------------------------------------------------------------------------------------
# Boundary IoU


def scipy_band(mask: np.ndarray, d: int) -> np.ndarray:
    """Independent reference: mask minus its binary erosion by a (2d+1)^2 square, outside counted as background."""
    padded = np.pad(mask.astype(bool), d)
    eroded = ndimage.binary_erosion(padded, structure=np.ones((2 * d + 1, 2 * d + 1), bool), border_value=0)
    return mask.astype(bool) & ~eroded[d:-d, d:-d]


def opencv_reference_band(mask: np.ndarray, d: int) -> np.ndarray:
    """The Boundary IoU reference procedure: one-pixel zero border, d erosions with a 3x3 kernel, mask - erosion."""
    h, w = mask.shape
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1 : h + 1, 1 : w + 1]
    return (mask.astype(np.uint8) - eroded).astype(bool)


def test_boundary_width():
    assert boundary_width(10, 10) == 1  # 0.28 -> at least 1 pixel
    assert boundary_width(512, 512) == 14  # 14.48
    assert boundary_width(1024, 2048) == 46  # 45.79
    assert boundary_width(360, 480) == 12  # 0.02 * 600
    assert boundary_width(473, 473, 0.01) == round(0.01 * math.hypot(473, 473))


def test_band_hand_examples():
    square = torch.zeros(10, 10, dtype=torch.bool)
    square[2:8, 2:8] = True
    band = boundary_band(square, 1)
    assert band.sum() == 20  # 36 pixels minus the 4x4 interior
    assert not band[3:7, 3:7].any() and band[2:8, 2:8].sum() == 20
    assert boundary_band(square, 2).sum() == 32 and boundary_band(square, 3).sum() == 36
    # the image border is contour: a full mask's band is its outer ring
    full = torch.ones(10, 10, dtype=torch.bool)
    assert boundary_band(full, 1).sum() == 36 and boundary_band(full, 2).sum() == 64
    assert boundary_band(full, 5).all()  # no window fits: everything is boundary
    assert not boundary_band(torch.zeros(10, 10, dtype=torch.bool), 1).any()


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("size", [(23, 37), (40, 40), (9, 50), (6, 6)])
def test_band_matches_scipy_and_the_reference_procedure(size, d):
    masks = [(blobby_labels(*size, 3, seed=s, ignore=False) == 0).numpy() for s in range(3)]
    masks.append(np.random.default_rng(d).random(size) < 0.8)  # ragged, touching the border everywhere
    for mask in masks:
        ours = boundary_band(torch.from_numpy(mask), d).numpy()
        np.testing.assert_array_equal(ours, scipy_band(mask, d))
        np.testing.assert_array_equal(ours, opencv_reference_band(mask, d))
    # batched masks give the same as one at a time
    stacked = boundary_band(torch.from_numpy(np.stack(masks)), d).numpy()
    np.testing.assert_array_equal(stacked, np.stack([scipy_band(m, d) for m in masks]))


def reference_boundary_counts(pred: np.ndarray, target: np.ndarray, k: int, ratio: float = 0.02):
    h, w = target.shape
    d = max(1, round(float(ratio * np.sqrt(h**2 + w**2))))
    valid = target != IGNORE
    inter, union = np.zeros(k, np.int64), np.zeros(k, np.int64)
    for c in range(k):
        gd, pd = scipy_band(target == c, d), scipy_band(pred == c, d)
        inter[c] = (gd & pd & valid).sum()
        union[c] = ((gd | pd) & valid).sum()
    return inter, union


def test_boundary_iou_matches_a_per_class_reference():
    k = 6
    metric = BoundaryIoU(k)
    inter, union = np.zeros(k, np.int64), np.zeros(k, np.int64)
    for seed, (h, w) in enumerate([(60, 80), (101, 77), (150, 150)]):  # d = 2, 3, 4
        target = blobby_labels(h, w, 5, seed=seed)  # class 5 never in the ground truth
        pred = blobby_labels(h, w, 6, seed=seed + 100, ignore=False)
        pred[: h // 2] = target[: h // 2].clamp(max=k - 1)  # half right, half different
        metric.update(pred, target)
        i, u = reference_boundary_counts(pred.numpy(), target.numpy(), k)
        inter += i
        union += u
    np.testing.assert_array_equal(metric.inter.numpy(), inter)
    np.testing.assert_array_equal(metric.union.numpy(), union)
    per_class, mean = metric.compute()
    assert per_class == [i / u for i, u in zip(inter, union)]
    assert mean == pytest.approx(np.mean(inter / union))


def test_boundary_iou_batched_equals_one_by_one():
    k = 4
    target = torch.stack([blobby_labels(40, 48, k, seed=s) for s in range(3)])
    pred = torch.stack([blobby_labels(40, 48, k, seed=s + 10, ignore=False) for s in range(3)])
    batched, single = BoundaryIoU(k), BoundaryIoU(k)
    batched.update(pred, target)
    for p, t in zip(pred, target):
        single.update(p, t)
    assert torch.equal(batched.inter, single.inter) and torch.equal(batched.union, single.union)


def test_boundary_iou_of_a_perfect_prediction_is_one():
    k = 5
    target = blobby_labels(64, 96, 4, seed=3)  # class 4 absent, an ignored patch
    metric = BoundaryIoU(k)
    metric.update(target.clone(), target)
    per_class, mean = metric.compute()
    assert per_class == [1.0, 1.0, 1.0, 1.0, None] and mean == 1.0
    # as in the reference's panoptic evaluation, the edge of an ignored region is contour of the ground-truth mask
    # but not of a prediction that runs through it: right on every labelled pixel is not a perfect boundary score
    filled = target.clone()
    filled[target == IGNORE] = 0
    metric = BoundaryIoU(k)
    metric.update(filled, target)
    per_class, _ = metric.compute()
    assert per_class[0] < 1.0
    no_void = blobby_labels(64, 96, 4, seed=3, ignore=False)
    metric = BoundaryIoU(k)
    metric.update(no_void.clone(), no_void)
    assert metric.compute()[1] == 1.0
    # all ignored: nothing defined
    empty = BoundaryIoU(k)
    empty.update(filled, torch.full_like(target, IGNORE))
    assert empty.compute() == ([None] * k, None)


def test_boundary_iou_checks_its_inputs():
    with pytest.raises(ValueError, match=r"target holds values outside \[0, 3\) \(ignore_index is 255\): 4"):
        BoundaryIoU(3).update(torch.zeros(5, 5, dtype=torch.long), torch.full((5, 5), 4))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(N, H, W\)"):
        BoundaryIoU(3).update(torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------------------
# report and distributed


def test_metrics_report_is_json_ready():
    conf = hand_example()
    biou = BoundaryIoU(4)
    biou.update(torch.zeros(8, 8, dtype=torch.long), torch.zeros(8, 8, dtype=torch.long))
    report = metrics_report(conf, biou, ["a", "b", "c", "d"])
    assert json.loads(json.dumps(report)) == report
    assert set(report) == {"mIoU", "mAcc", "allAcc", "mBIoU", "per_class", "confusion"}
    assert report["mIoU"] == pytest.approx(0.5) and report["mBIoU"] == 1.0
    assert report["per_class"][0] == {
        "name": "a",
        "iou": pytest.approx(2 / 3),
        "acc": pytest.approx(2 / 3),
        "biou": 1.0,
        "gt_pixels": 3,
    }
    assert report["per_class"][3] == {"name": "d", "iou": None, "acc": None, "biou": None, "gt_pixels": 0}
    assert report["confusion"] == conf.matrix.tolist()
    no_biou = metrics_report(conf, None, ["a", "b", "c", "d"])
    assert no_biou["mBIoU"] is None and all(c["biou"] is None for c in no_biou["per_class"])
    with pytest.raises(ValueError, match="3 class names for a 4-class"):
        metrics_report(conf, None, ["a", "b", "c"])


def test_all_reduce_without_a_process_group_is_a_no_op():
    assert not (dist.is_available() and dist.is_initialized())
    conf = hand_example()
    before = conf.matrix.clone()
    conf.all_reduce()
    conf.all_reduce()
    assert torch.equal(conf.matrix, before)
    biou = BoundaryIoU(3)
    biou.update(torch.zeros(6, 6, dtype=torch.long), torch.zeros(6, 6, dtype=torch.long))
    biou.all_reduce()
    assert biou.inter.tolist() == [20, 0, 0] and biou.union.tolist() == [20, 0, 0]


def _rank_data(rank: int):
    g = torch.Generator().manual_seed(rank)
    return random_labels((2, 12, 12), 4, generator=g)


def _distributed_worker(rank: int, world_size: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        conf, biou = ConfusionMatrix(4), BoundaryIoU(4)
        pred, target = _rank_data(rank)
        conf.update(pred, target)
        biou.update(pred, target)
        conf.all_reduce()
        biou.all_reduce()
        conf.all_reduce()  # a second call adds nothing new
        biou.all_reduce()
        expected_conf, expected_biou = ConfusionMatrix(4), BoundaryIoU(4)
        for r in range(world_size):
            expected_conf.update(*_rank_data(r))
            expected_biou.update(*_rank_data(r))
        assert torch.equal(conf.matrix, expected_conf.matrix), (conf.matrix, expected_conf.matrix)
        assert torch.equal(biou.inter, expected_biou.inter) and torch.equal(biou.union, expected_biou.union)
        # more updates after a reduction are reduced once more, without counting the old ones twice
        conf.update(pred, target)
        conf.all_reduce()
        for r in range(world_size):
            expected_conf.update(*_rank_data(r))
        assert torch.equal(conf.matrix, expected_conf.matrix)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_all_reduce_sums_across_two_gloo_processes(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "store")), nprocs=2, join=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    k = 7
    target = torch.stack([blobby_labels(90, 130, k, seed=s) for s in range(2)])
    pred = torch.stack([blobby_labels(90, 130, k, seed=s + 5, ignore=False) for s in range(2)])
    cpu_conf, gpu_conf = ConfusionMatrix(k), ConfusionMatrix(k, device="cuda")
    cpu_biou, gpu_biou = BoundaryIoU(k), BoundaryIoU(k, device="cuda")
    cpu_conf.update(pred, target)
    cpu_biou.update(pred, target)
    gpu_conf.update(pred.cuda(), target.cuda())
    gpu_biou.update(pred.cuda(), target.cuda())
    assert confusion_matrix(pred.cuda(), target.cuda(), k).device.type == "cuda"
    assert gpu_conf.matrix.device.type == "cuda" and torch.equal(gpu_conf.matrix.cpu(), cpu_conf.matrix)
    assert torch.equal(gpu_biou.inter.cpu(), cpu_biou.inter) and torch.equal(gpu_biou.union.cpu(), cpu_biou.union)
    assert gpu_conf.compute() == cpu_conf.compute() and gpu_biou.compute() == cpu_biou.compute()
    # GPU inputs into a CPU accumulator: counted on the GPU, only the (K, K) result moves
    mixed = ConfusionMatrix(k)
    mixed.update(pred.cuda(), target.cuda())
    assert torch.equal(mixed.matrix, cpu_conf.matrix)
