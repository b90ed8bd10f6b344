"""PSPNet's training loss: pixel-wise cross-entropy on the main logits plus 0.4 x the same on the aux logits."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..constants import IGNORE_INDEX
from ..models.ppm import upsampling_matrices

__all__ = [
    "AUX_WEIGHT",
    "cross_entropy",
    "cross_entropy_sum",
    "interpolation_matrix",
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
    align_corners: bool | None = None,
) -> Tensor:
    """``sum CE(main) + aux_weight * sum CE(aux)`` over the labelled pixels, not yet averaged; float32 for
    float32, bfloat16 or float16 logits, float64 for float64 logits.

    Logits at the target's size are used as they are; smaller ones (``PSPNet.forward(x, upsample=False)``, as
    training passes them) are upsampled to it bilinearly with ``align_corners`` inside the loss (see
    :func:`cross_entropy_sum`).

    With ``class_weights`` (K,) each pixel's term is multiplied by the weight of its label. Training divides the
    sum by :func:`label_weight_sum` of the whole optimiser step (every micro-batch, every process), so that the
    gradient is that of the step's weighted mean loss however a batch is split.
    """
    if isinstance(outputs, Tensor):
        outputs = (outputs,)  # type: ignore[assignment]
    dtype = torch.promote_types(outputs[0].dtype, torch.float32)  # bf16/fp16 logits: float32; float64 stays
    weight = None if class_weights is None else class_weights.to(dtype)
    total = cross_entropy_sum(outputs[0], target, weight, ignore_index, align_corners=align_corners)
    if len(outputs) > 1:
        total = total + aux_weight * cross_entropy_sum(
            outputs[1], target, weight, ignore_index, align_corners=align_corners
        )
    return total


# Elements of (upsampled) logits held in float at once by cross_entropy_sum: 2**22 (16 MiB of float32).
CHUNK_ELEMENTS = 2**22


def interpolation_matrix(size_out: int, size_in: int, *, align_corners: bool, dtype: torch.dtype) -> Tensor:
    """The (size_out, size_in) matrix A of 1-D linear interpolation as ``F.interpolate(mode="bilinear")`` computes it
    along one axis: ``out = A @ in``. Bilinear upsampling of a (h, w) map x to (H, W) is ``A_H @ x @ A_W^T``.

    Source position of output index i: ``i * (size_in - 1) / (size_out - 1)`` with ``align_corners`` (0 for one
    output), else ``(i + 0.5) * size_in / size_out - 0.5`` clamped at 0; weights ``1 - f`` and ``f`` on the two
    input indices around it (the upper one clamped to the last). Computed in float64 by
    :func:`~pspnet.models.ppm.upsampling_matrices` (one grid, no shift), returned in ``dtype``.
    """
    like = torch.empty((), dtype=torch.float64)  # the pyramid head's shifted matrices, unshifted, one grid
    return upsampling_matrices(size_out, [size_in], range(1), align_corners=align_corners, like=like)[0].to(dtype)


class _CrossEntropySum(torch.autograd.Function):
    """``sum_p w[t_p] * (logsumexp(z_p) - z_p[t_p])`` over the labelled pixels p of the target, where z are the
    logits bilinearly upsampled to the target's size (the logits themselves when the sizes are equal), in chunks
    of rows.

    What ``F.cross_entropy(F.interpolate(x, size, mode="bilinear").float(), t, weight=w, reduction="sum",
    ignore_index=...)`` computes, without a full-size tensor: the upsampling is two matrix products per chunk
    (:func:`interpolation_matrix`), so neither the upsampled logits, nor their float copy, nor their log-softmax,
    nor their gradient ever exist whole. With ``with_grad`` the forward pass also computes each chunk's gradient
    (softmax minus the one-hot label, times the pixel's weight) while the chunk is at hand and sends it back
    through the transposed interpolation into a gradient of the logits' size, which is all the backward pass keeps
    and scales: no chunk is upsampled twice.
    """

    @staticmethod
    def forward(
        ctx,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
        align_corners: bool,
        with_grad: bool,
    ) -> Tensor:
        dtype = torch.promote_types(logits.dtype, torch.float32)
        _, k, h, _ = logits.shape
        height, width = target.shape[-2:]
        total = torch.zeros((), dtype=dtype, device=logits.device)
        matrices = _matrices(logits, (height, width), align_corners, dtype)
        gradient = torch.empty_like(logits) if with_grad else None
        if with_grad and matrices is not None:
            row_matrix, column_matrix = matrices
            source_grad = torch.zeros((h, k * width), dtype=dtype, device=logits.device)
        for i, top, end, z, fresh in _chunks(logits, (height, width), matrices, dtype):
            label, scale = _label_and_scale(target[i, top:end], weight, ignore_index, dtype)
            picked = z.gather(1, label[:, None])[:, 0]  # (rows, W)
            peak = z.amax(1, keepdim=True)  # (rows, 1, W)
            e = (z.sub_(peak) if fresh else z - peak).exp_()  # (rows, K, W)
            summed = e.sum(1)  # (rows, W); logsumexp = peak + log(summed)
            total += ((peak[:, 0] + summed.log() - picked) * scale).sum()
            if gradient is None:
                continue
            g = e.div_(summed[:, None])  # softmax
            g.scatter_add_(1, label[:, None], torch.full_like(g[:, :1], -1.0))  # minus the one-hot label
            g.mul_(scale[:, None])
            if matrices is not None:
                source_grad.addmm_(row_matrix[top:end].T, g.view(end - top, k * width))
                if end == height:  # the image's last chunk: back through the columns' interpolation
                    image_grad = source_grad.view(h, k, width).permute(1, 0, 2) @ column_matrix  # (K, h, w)
                    gradient[i] = image_grad.to(logits.dtype)
                    source_grad.zero_()
            else:
                gradient[i, :, top:end] = g.permute(1, 0, 2).to(logits.dtype)
        if gradient is not None:  # else nothing will ask for it: the result does not require grad
            ctx.save_for_backward(gradient)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None, None]:
        (gradient,) = ctx.saved_tensors
        return gradient * grad.to(gradient.dtype), None, None, None, None, None


def _matrices(
    logits: Tensor, size: Sequence[int], align_corners: bool, dtype: torch.dtype
) -> tuple[Tensor, Tensor] | None:
    """The rows' (H, h) and the columns' (W, w) interpolation matrices from ``logits``' size to ``size``; None when
    the sizes are equal (nothing to upsample)."""
    h, w = logits.shape[-2:]
    if (h, w) == tuple(size):
        return None
    rows = interpolation_matrix(size[0], h, align_corners=align_corners, dtype=dtype).to(logits.device)
    columns = interpolation_matrix(size[1], w, align_corners=align_corners, dtype=dtype).to(logits.device)
    return rows, columns


def _chunks(logits: Tensor, size: Sequence[int], matrices: tuple[Tensor, Tensor] | None, dtype: torch.dtype):
    """Yield ``(image, first row, end row, z, fresh)``: z (rows, K, W) the logits of those output rows upsampled to
    ``size`` (H, W) with ``matrices`` (:func:`_matrices`; None: the logits are at ``size``) in ``dtype``, each chunk
    at most CHUNK_ELEMENTS values (>= 1 row); ``fresh`` says whether z is a new tensor (upsampled or cast) that may
    be changed in place, rather than a view of ``logits``."""
    n, k, h, _ = logits.shape
    height, width = size
    rows = max(1, CHUNK_ELEMENTS // max(1, k * width))
    if matrices is not None:
        row_matrix, column_matrix = matrices
    for i in range(n):
        if matrices is not None:
            # the columns first, once per image: (K, h, w) @ (w, W) -> (h, K, W), one row of logits per matrix row
            source = (logits[i].to(dtype) @ column_matrix.T).permute(1, 0, 2).reshape(h, k * width)
        for top in range(0, height, rows):
            end = min(top + rows, height)
            if matrices is not None:
                yield i, top, end, (row_matrix[top:end] @ source).view(end - top, k, width), True
            else:
                z = logits[i, :, top:end].permute(1, 0, 2)
                yield i, top, end, z.to(dtype), z.dtype != dtype


def _label_and_scale(
    target: Tensor, weight: Tensor | None, ignore_index: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """A chunk's labels (ignored pixels as 0, int64) and each pixel's weight (0 where ignored), both (rows, W)."""
    valid = target != ignore_index
    label = torch.where(valid, target.long(), 0)
    scale = valid.to(dtype) if weight is None else weight[label] * valid
    return label, scale


def cross_entropy_sum(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    *,
    align_corners: bool | None = None,
) -> Tensor:
    """Summed cross-entropy of ``logits`` (N, K, h, w) against ``target`` (N, H, W) over the pixels not labelled
    ``ignore_index``, each weighted by ``weight[label]`` (K,) when given; a scalar in float32 (float64 for float64
    logits).

    Logits smaller than the target (a network's output before its final upsampling) are upsampled bilinearly to
    (H, W) inside the loss, with ``align_corners`` as the network would have (required then): equal to
    ``F.cross_entropy(F.interpolate(logits, (H, W), mode="bilinear", align_corners=...).float(), target, weight,
    reduction="sum")`` up to float rounding, with far less memory and time, since the full-size logits are never
    made (see :class:`_CrossEntropySum`)."""
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"logits must be (N, K, h, w) and target (N, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if tuple(logits.shape[-2:]) != tuple(target.shape[-2:]) and align_corners is None:
        raise ValueError(
            f"the logits' size {tuple(logits.shape[-2:])} differs from the target's {tuple(target.shape[-2:])}: pass "
            "align_corners, the upsampling of the network that made them"
        )
    with_grad = torch.is_grad_enabled() and logits.requires_grad
    return _CrossEntropySum.apply(logits, target, weight, ignore_index, bool(align_corners), with_grad)


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
