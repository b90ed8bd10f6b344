"""Segmentation metrics from one confusion matrix over the whole data set, and Boundary IoU.

Region metrics (mIoU, mAcc, allAcc, per-class IoU and accuracy) all come from one (K, K) int64 confusion matrix
(rows = ground truth, columns = prediction) accumulated over the whole data set, never averaged per image. Pixels
whose ground truth is ``ignore_index`` count nowhere. Under DDP the matrix is summed across processes before
``compute()``.

Conventions, and how they differ from the official PSPNet code
---------------------------------------------------------------
Here, for class c with TP_c = matrix[c, c], FN_c = row sum - TP_c, FP_c = column sum - TP_c:

- ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``, *undefined* (None) when ``TP_c + FP_c + FN_c == 0`` (the class appears
  neither in the ground truth nor in the prediction);
- ``Acc_c = TP_c / (TP_c + FN_c)``, *undefined* (None) when the class has no ground-truth pixel;
- mIoU and mAcc are means over the classes whose value is defined (None when none is);
- ``allAcc = sum_c TP_c / number of labelled pixels`` (None when no pixel is labelled).

All values are fractions in [0, 1] (not percentages), computed in float64.

The official PSPNet code (``test.py``/``util.py`` of the authors' PyTorch release) computes
``iou = intersection / (union + 1e-10)`` and ``acc = intersection / (target + 1e-10)`` per class and then takes the
mean over ALL K classes. There, a class absent from both ground truth and prediction gets IoU 0 and drags the mean
down, and a class without ground-truth pixels gets accuracy 0 (even when it was predicted, its IoU is 0 in both
conventions). When every class appears in the ground truth of the data set, the two conventions agree to ~1e-10
(the epsilon's relative effect); for mIoU it is enough that every class appears in the ground truth or the
prediction. :func:`official_miou` and :func:`official_macc` compute the official numbers from the same matrix so
that both can be reported and compared with published tables.

Boundary IoU
------------
Boundary IoU (Cheng et al., CVPR 2021, "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation"):
the boundary band ``M_d`` of a binary mask M is the set of pixels of M within distance d of its contour, i.e. M
minus its erosion by a (2d+1) x (2d+1) square (chessboard distance), where pixels outside the image count as
background, so the image border is contour. This equals the reference implementation (``mask_to_boundary`` of
``boundary-iou-api``), which pads the mask with a one-pixel zero border and erodes d times with a 3x3 kernel.
``d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))`` with ``dilation_ratio = 0.02``, H x W being the image
evaluated. For semantic segmentation, per class c, G = (target == c), P = (pred == c); ``|G_d & P_d|`` and
``|G_d | P_d|`` are summed over the data set, counting only pixels whose target is not ``ignore_index``.
Class boundary IoU = intersection / union, None when the union is 0; the mean skips None.

Ignored pixels follow the reference's panoptic evaluation (``coco_panoptic_api``: VOID is background of every
ground-truth mask, the predicted band is taken on the whole prediction and its part on VOID leaves the union). So
the edge of an ignored region is contour of the ground-truth mask but not of a prediction that runs through it: a
prediction right on every labelled pixel scores below 1 next to ignored regions (VOC's 255 outlines around every
object, for instance). Compare models with each other on one data set, not with 1.

Implementation: a pixel p of class c = L[p] is in the band of c's mask exactly when the (2d+1)^2 window around p
leaves the image or holds a label other than c. So every class's band comes from one pass over the label map
(instead of one erosion per class), and "is the window constant and inside the image" is computed separably with
cumulative sums of label changes: O(1) per pixel whatever d and K, exact, on CPU and GPU alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .distributed import all_reduce_sum

__all__ = [
    "BoundaryIoU",
    "ConfusionMatrix",
    "SegmentationMetrics",
    "boundary_band",
    "boundary_width",
    "confusion_matrix",
    "metrics_report",
    "official_macc",
    "official_miou",
]

BOUNDARY_DILATION_RATIO = 0.02  # Cheng et al. 2021: d = 2% of the image diagonal


# --------------------------------------------------------------------------------------------------------------
# label checks shared by every metric


def _labels(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """(pred, target, valid) as int64 after checking shapes, dtypes and label ranges; ``valid = target != ignore``.

    Raises ValueError naming every target value outside [0, K) that is not ``ignore_index``, and every predicted
    value outside [0, K) at a labelled pixel (predictions at ignored pixels count nowhere and are not checked).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex():
            raise TypeError(
                f"{name} must be an integer tensor of class indices, got {t.dtype}"
                + ("; take the argmax over the class dimension of the logits first" if name == "pred" else "")
            )
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.device != target.device:
        raise ValueError(f"pred and target must be on the same device, got {pred.device} and {target.device}")
    pred, target = pred.long(), target.long()
    valid = target != ignore_index
    for name, values in (("target", target[valid]), ("pred", pred[valid])):
        bad = (values < 0) | (values >= num_classes)
        if bool(bad.any()):
            found = torch.unique(values[bad]).tolist()
            shown = ", ".join(map(str, found[:10])) + (f", ... ({len(found)} distinct)" if len(found) > 10 else "")
            where = f" (ignore_index is {ignore_index})" if name == "target" else " at labelled pixels"
            raise ValueError(f"{name} holds values outside [0, {num_classes}){where}: {shown}")
    return pred, target, valid


class _Reducible:
    """Accumulators whose ``all_reduce`` may be called any number of times (each call reduces only what was added
    since the previous one), as long as every process calls it the same number of times."""

    def _state(self) -> Tensor:  # the accumulated counts, one tensor
        raise NotImplementedError

    def _set_state(self, value: Tensor) -> None:
        raise NotImplementedError

    def _reset_reduced(self) -> None:
        self._reduced = torch.zeros_like(self._state())

    def all_reduce(self) -> None:
        """Sum the counts across processes (``torch.distributed``); a no-op without an initialised process group."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        state = self._state()
        delta = all_reduce_sum(state - self._reduced)  # what this process added since the last reduction
        self._set_state(self._reduced + delta)
        self._reduced = self._state().clone()


# --------------------------------------------------------------------------------------------------------------
# confusion matrix and region metrics


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """(K, K) int64 confusion matrix on the inputs' device: ``m[t, p]`` = pixels of ground truth t predicted p.

    ``pred`` and ``target`` are integer tensors of the same (any) shape. Pixels whose target is ``ignore_index``
    count nowhere. Raises ValueError naming the target values outside [0, K) that are not ``ignore_index``, and the
    predicted values outside [0, K) at labelled pixels.
    """
    pred, target, valid = _labels(pred, target, num_classes, ignore_index)
    k = num_classes
    return torch.bincount(k * target[valid] + pred[valid], minlength=k * k).view(k, k)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Region metrics of one confusion matrix; fractions in [0, 1], None where undefined (see the module notes)."""

    iou: list[float | None]  # per class: TP / (TP + FP + FN); None when the class is in neither gt nor prediction
    acc: list[float | None]  # per class: TP / (TP + FN); None when the class has no ground-truth pixel
    gt_pixels: list[int]  # per class: labelled ground-truth pixels
    miou: float | None  # mean of the defined IoUs
    macc: float | None  # mean of the defined accuracies
    all_acc: float | None  # sum TP / labelled pixels

    @classmethod
    def from_matrix(cls, matrix: Tensor) -> SegmentationMetrics:
        counts = _square(matrix).to("cpu", torch.int64)
        tp = counts.diagonal().tolist()
        gt = counts.sum(1).tolist()  # TP + FN
        union = [g + p - t for g, p, t in zip(gt, counts.sum(0).tolist(), tp)]  # TP + FN + FP
        # exact integer counts, then one float64 division each (Python floats are IEEE float64)
        iou = [None if u == 0 else t / u for t, u in zip(tp, union)]
        acc = [None if g == 0 else t / g for t, g in zip(tp, gt)]
        total = sum(gt)
        return cls(
            iou=iou,
            acc=acc,
            gt_pixels=gt,
            miou=_mean_defined(iou),
            macc=_mean_defined(acc),
            all_acc=None if total == 0 else sum(tp) / total,
        )


def _square(matrix: Tensor) -> Tensor:
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"a confusion matrix must be (K, K), got shape {tuple(matrix.shape)}")
    return matrix


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return math.fsum(defined) / len(defined) if defined else None


def official_miou(matrix: Tensor) -> float:
    """mIoU as the official PSPNet code computes it: ``mean over ALL K classes of I / (U + 1e-10)``.

    A class absent from both ground truth and prediction counts as IoU 0. Compare with ``SegmentationMetrics.miou``.
    """
    m = _square(matrix).to("cpu", torch.float64)
    tp = m.diagonal()
    return float((tp / (m.sum(1) + m.sum(0) - tp + 1e-10)).mean())


def official_macc(matrix: Tensor) -> float:
    """mAcc as the official PSPNet code computes it: ``mean over ALL K classes of I / (gt + 1e-10)``.

    A class without ground-truth pixels counts as accuracy 0. Compare with ``SegmentationMetrics.macc``.
    """
    m = _square(matrix).to("cpu", torch.float64)
    return float((m.diagonal() / (m.sum(1) + 1e-10)).mean())


class ConfusionMatrix(_Reducible):
    """Data-set-level confusion matrix: ``update`` per batch, ``all_reduce`` once under DDP, then ``compute``.

    ``matrix`` is the (K, K) int64 count (rows = ground truth, columns = prediction) on ``device``; updates from
    tensors on another device are counted there and only the (K, K) result is moved.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self._reset_reduced()

    def _state(self) -> Tensor:
        return self.matrix

    def _set_state(self, value: Tensor) -> None:
        self.matrix.copy_(value)

    def reset(self) -> None:
        self.matrix.zero_()
        self._reset_reduced()

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count a batch: integer ``pred`` and ``target`` of the same shape, e.g. (H, W) or (N, H, W)."""
        conf = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.matrix += conf.to(self.matrix.device)

    def compute(self) -> SegmentationMetrics:
        return SegmentationMetrics.from_matrix(self.matrix)


# --------------------------------------------------------------------------------------------------------------
# Boundary IoU


def boundary_width(height: int, width: int, dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> int:
    """Band width d in pixels: ``max(1, round(dilation_ratio * sqrt(H^2 + W^2)))`` as in Cheng et al. 2021."""
    return max(1, round(dilation_ratio * math.sqrt(height**2 + width**2)))


def _window_uniform(labels: Tensor, d: int) -> Tensor:
    """(..., H, W) bool: the (2d+1) x (2d+1) window centred on each pixel lies inside the image and holds one label.

    Separable and O(1) per pixel: a vertical run of 2d+1 pixels is uniform when no label changes between its first
    and last row (a difference of cumulative change counts); the square window is uniform when the 2d+1 vertical
    runs across it are all uniform and the centre row does not change label across it.
    """
    h, w = labels.shape[-2:]
    out = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    k = 2 * d + 1
    if h < k or w < k:
        return out  # every window leaves the image
    # changes[i] = 1 where row i+1 differs from row i; cum[i] = changes between rows 0 and i (cum[0] = 0)
    changes = (labels[..., 1:, :] != labels[..., :-1, :]).to(torch.int32)
    cum = torch.nn.functional.pad(changes.cumsum(-2, dtype=torch.int32), (0, 0, 1, 0))  # (..., H, W)
    vertical = cum[..., k - 1 :, :] == cum[..., : h - k + 1, :]  # (..., H-2d, W): rows i-d..i+d uniform, i = d..H-1-d
    rows = labels[..., d : h - d, :]  # (..., H-2d, W) centre rows
    row_changes = torch.nn.functional.pad((rows[..., 1:] != rows[..., :-1]).to(torch.int32), (1, 0))
    # window columns a..a+k-1 (centre j = a+d): no non-uniform run among them, no centre-row change inside them
    cum_runs = torch.nn.functional.pad((~vertical).to(torch.int32).cumsum(-1, dtype=torch.int32), (1, 0))
    cum_rows = row_changes.cumsum(-1, dtype=torch.int32)  # cum_rows[j] = changes between columns 0 and j
    runs_ok = cum_runs[..., k:] == cum_runs[..., : w - k + 1]  # (..., H-2d, W-2d)
    rows_ok = cum_rows[..., k - 1 :] == cum_rows[..., : w - k + 1]
    out[..., d : h - d, d : w - d] = runs_ok & rows_ok
    return out


def boundary_band(mask: Tensor, d: int) -> Tensor:
    """Boundary band of binary masks (..., H, W): pixels of the mask within chessboard distance d of its contour,
    i.e. the mask minus its erosion by a (2d+1)^2 square with pixels outside the image counted as background."""
    if d < 1:
        raise ValueError(f"the band width d must be >= 1, got {d}")
    mask = mask.bool()
    return mask & ~_window_uniform(mask.to(torch.uint8), d)


class BoundaryIoU(_Reducible):
    """Data-set-level Boundary IoU per class (Cheng et al. 2021): ``update`` per batch, ``all_reduce``, ``compute``.

    ``inter`` and ``union`` are (K,) int64 sums over the data set of ``|G_d & P_d|`` and ``|G_d | P_d|`` counted at
    pixels whose target is not ``ignore_index``; d comes from each image's own size (see :func:`boundary_width`).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: str | torch.device = "cpu",
        dilation_ratio: float = BOUNDARY_DILATION_RATIO,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.dilation_ratio = dilation_ratio
        self.inter = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.union = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self._reset_reduced()

    def _state(self) -> Tensor:
        return torch.stack([self.inter, self.union])

    def _set_state(self, value: Tensor) -> None:
        self.inter.copy_(value[0])
        self.union.copy_(value[1])

    def reset(self) -> None:
        self.inter.zero_()
        self.union.zero_()
        self._reset_reduced()

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count (H, W) or (N, H, W) integer label maps (one d for the batch, from its H x W)."""
        if pred.dim() < 2:
            raise ValueError(f"BoundaryIoU needs (H, W) or (N, H, W) label maps, got shape {tuple(pred.shape)}")
        pred, target, valid = _labels(pred, target, self.num_classes, self.ignore_index)
        d = boundary_width(target.shape[-2], target.shape[-1], self.dilation_ratio)
        k = self.num_classes
        # a pixel is in the band of its own label's mask when its window is not uniform (or leaves the image)
        gt_band = valid & ~_window_uniform(target, d)
        pred_band = valid & ~_window_uniform(pred, d)
        both = gt_band & pred_band & (target == pred)
        inter = torch.bincount(target[both], minlength=k)
        union = torch.bincount(target[gt_band], minlength=k) + torch.bincount(pred[pred_band], minlength=k) - inter
        self.inter += inter.to(self.inter.device)
        self.union += union.to(self.union.device)

    def compute(self) -> tuple[list[float | None], float | None]:
        """(per-class boundary IoU, None where the union is empty; mean over the defined classes)."""
        per_class = [None if u == 0 else i / u for i, u in zip(self.inter.tolist(), self.union.tolist())]
        return per_class, _mean_defined(per_class)


# --------------------------------------------------------------------------------------------------------------
# report


def metrics_report(conf: ConfusionMatrix, biou: BoundaryIoU | None, class_names: list[str]) -> dict:
    """The JSON-ready evaluation report: ``mIoU``, ``mAcc``, ``allAcc``, ``mBIoU`` (None without ``biou``),
    ``per_class`` (``{name, iou, acc, biou, gt_pixels}`` per class) and ``confusion`` (K x K ints, rows = gt).

    Fractions in [0, 1]; undefined values are None (JSON null). Call ``all_reduce`` on the accumulators first.
    """
    k = conf.num_classes
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k}-class confusion matrix")
    if biou is not None and biou.num_classes != k:
        raise ValueError(f"BoundaryIoU has {biou.num_classes} classes, the confusion matrix {k}")
    metrics = conf.compute()
    per_biou, mbiou = biou.compute() if biou is not None else ([None] * k, None)
    return {
        "mIoU": metrics.miou,
        "mAcc": metrics.macc,
        "allAcc": metrics.all_acc,
        "mBIoU": mbiou,
        "per_class": [
            {"name": str(name), "iou": iou, "acc": acc, "biou": b, "gt_pixels": gt}
            for name, iou, acc, b, gt in zip(class_names, metrics.iou, metrics.acc, per_biou, metrics.gt_pixels)
        ],
        "confusion": conf.matrix.tolist(),
    }
