"""PSPNet's training loss: pixel-wise cross-entropy on the main logits plus 0.4 x the same on the aux logits."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..constants import IGNORE_INDEX

__all__ = [
    "AUX_WEIGHT",
    "cross_entropy",
    "cross_entropy_sum",
    "label_weight_sum",
    "loss_sum",
    "median_frequency_weights",
    "pspnet_loss",
]

AUX_WEIGHT = 0.4  # Zhao et al. 2017, section 4.1: the auxiliary loss is weighted 0.4


def cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross-entropy over the pixels whose label is not ``ignore_index``.

    ``logits`` (N, K, H, W) float, ``target`` (N, H, W) integer. A batch whose pixels are all ignored gives 0
    (with a gradient of zeros) instead of NaN. Computed in float32 whatever the logits' dtype.
    """
    losses = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="none")
    valid = (target != ignore_index).sum()
    return losses.sum() / valid.clamp(min=1)


def pspnet_loss(
    outputs: Tensor | tuple[Tensor, Tensor],
    target: Tensor,
    *,
    aux_weight: float = AUX_WEIGHT,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """``CE(main) + aux_weight * CE(aux)`` for the training output ``(logits, aux_logits)`` of a PSPNet.

    A single tensor (a model without aux head, or in eval mode) gives ``CE(main)``.
    """
    if isinstance(outputs, Tensor):
        return cross_entropy(outputs, target, ignore_index=ignore_index)
    main, aux = outputs
    loss = cross_entropy(main, target, ignore_index=ignore_index)
    return loss + aux_weight * cross_entropy(aux, target, ignore_index=ignore_index)


def loss_sum(
    outputs: Tensor | tuple[Tensor, Tensor],
    target: Tensor,
    *,
    aux_weight: float = AUX_WEIGHT,
    ignore_index: int = IGNORE_INDEX,
    class_weights: Tensor | None = None,
) -> Tensor:
    """``sum CE(main) + aux_weight * sum CE(aux)`` over the labelled pixels, not yet averaged; float32 for
    float32, bfloat16 or float16 logits, float64 for float64 logits.

    With ``class_weights`` (K,) each pixel's term is multiplied by the weight of its label. Training divides the
    sum by :func:`label_weight_sum` of the whole optimiser step (every micro-batch, every process), so that the
    gradient is that of the step's weighted mean loss however a batch is split.
    """
    if isinstance(outputs, Tensor):
        outputs = (outputs,)  # type: ignore[assignment]
    dtype = torch.promote_types(outputs[0].dtype, torch.float32)  # bf16/fp16 logits: float32; float64 stays
    weight = None if class_weights is None else class_weights.to(dtype)
    total = cross_entropy_sum(outputs[0], target, weight, ignore_index)
    if len(outputs) > 1:
        total = total + aux_weight * cross_entropy_sum(outputs[1], target, weight, ignore_index)
    return total


# Elements of logits turned into float at once by cross_entropy_sum: 2**22 (16 MiB of float32).
CHUNK_ELEMENTS = 2**22


def _row_chunks(logits: Tensor) -> list[tuple[int, int, int]]:
    """(image, first row, end row) chunks of (N, K, H, W) logits, each at most CHUNK_ELEMENTS values (>= 1 row)."""
    n, k, h, w = logits.shape
    rows = max(1, CHUNK_ELEMENTS // max(1, k * w))
    return [(i, r, min(r + rows, h)) for i in range(n) for r in range(0, h, rows)]


class _CrossEntropySum(torch.autograd.Function):
    """``sum_p w[t_p] * (logsumexp(z_p) - z_p[t_p])`` over the labelled pixels p, in row chunks.

    What ``F.cross_entropy(z.float(), t, weight=w, reduction="sum", ignore_index=...)`` computes, without its
    full-size float copy of the logits and its full-size log-softmax: only the logits (in their own dtype) and the
    per-pixel log-sum-exp (N, H, W) are kept for the backward pass, which builds the gradient chunk by chunk.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int) -> Tensor:
        dtype = torch.promote_types(logits.dtype, torch.float32)
        n, _, h, w = logits.shape
        lse = torch.empty((n, h, w), dtype=dtype, device=logits.device)
        total = torch.zeros((), dtype=dtype, device=logits.device)
        for i, top, end in _row_chunks(logits):
            z = logits[i, :, top:end].to(dtype)  # (K, rows, W)
            t = target[i, top:end].long()
            valid = t != ignore_index
            label = torch.where(valid, t, 0)
            lse[i, top:end] = torch.logsumexp(z, dim=0)
            picked = z.gather(0, label[None])[0]
            scale = valid.to(dtype) if weight is None else weight[label] * valid
            total += ((lse[i, top:end] - picked) * scale).sum()
        ctx.save_for_backward(logits, target, weight if weight is not None else torch.empty(0), lse)
        ctx.ignore_index = ignore_index
        ctx.has_weight = weight is not None
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        logits, target, weight, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        for i, top, end in _row_chunks(logits):
            z = logits[i, :, top:end].to(lse.dtype)
            t = target[i, top:end].long()
            valid = t != ctx.ignore_index
            label = torch.where(valid, t, 0)
            scale = (weight[label] * valid if ctx.has_weight else valid.to(lse.dtype)) * grad
            g = torch.exp(z - lse[i, top:end])  # softmax
            g.scatter_add_(0, label[None], -torch.ones_like(g[:1]))  # minus the one-hot label
            out[i, :, top:end] = (g * scale).to(logits.dtype)
        return out, None, None, None


def cross_entropy_sum(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Summed cross-entropy of ``logits`` (N, K, H, W) against ``target`` (N, H, W) over the pixels not labelled
    ``ignore_index``, each weighted by ``weight[label]`` (K,) when given; a scalar in float32 (float64 for float64
    logits). Equal to ``F.cross_entropy(logits.float(), target, weight, reduction="sum")`` up to the order of the
    sums, with far less memory: the logits are read in chunks of at most ``CHUNK_ELEMENTS`` values (see
    :class:`_CrossEntropySum`)."""
    return _CrossEntropySum.apply(logits, target, weight, ignore_index)


def label_weight_sum(
    target: Tensor, *, ignore_index: int = IGNORE_INDEX, class_weights: Tensor | None = None
) -> Tensor:
    """The denominator of the mean loss: the number of labelled pixels of ``target`` (N, H, W), or with
    ``class_weights`` (K,) the sum of their labels' weights. float64 scalar."""
    valid = target != ignore_index
    if class_weights is None:
        return valid.sum().double()
    labels = torch.where(valid, target.long(), 0)  # no boolean indexing: no host sync on CUDA
    return (class_weights.double()[labels] * valid).sum()


def median_frequency_weights(class_pixels: Sequence[int], present_pixels: Sequence[int]) -> list[float]:
    """Median-frequency class weights (Eigen & Fergus, ICCV 2015; used for CamVid by SegNet).

    ``freq[c] = class_pixels[c] / present_pixels[c]``, where ``present_pixels[c]`` counts the labelled pixels of the
    images in which class c appears, and ``weight[c] = median(freq) / freq[c]``, the median taken over the classes
    that appear. A class that never appears gets weight 1 (it has no pixels to weigh).
    """
    if len(class_pixels) != len(present_pixels):
        raise ValueError(f"{len(class_pixels)} class pixel counts but {len(present_pixels)} present-pixel counts")
    freq = {c: n / present_pixels[c] for c, n in enumerate(class_pixels) if n > 0}
    if not freq:
        raise ValueError("no class has any labelled pixel")
    median = statistics.median(freq.values())
    return [median / freq[c] if c in freq else 1.0 for c in range(len(class_pixels))]
