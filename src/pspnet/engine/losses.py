"""PSPNet's training loss: pixel-wise cross-entropy on the main logits plus 0.4 x the same on the aux logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["AUX_WEIGHT", "IGNORE_INDEX", "cross_entropy", "loss_sum", "pspnet_loss"]

AUX_WEIGHT = 0.4  # Zhao et al. 2017, section 4.1: the auxiliary loss is weighted 0.4
IGNORE_INDEX = 255


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
) -> Tensor:
    """``sum CE(main) + aux_weight * sum CE(aux)`` over the labelled pixels (float32, not yet averaged).

    Training divides it by the number of labelled pixels of the whole optimiser step, counted over every micro-batch
    and every process, so that the gradient does not depend on how a batch is split across them.
    """
    if isinstance(outputs, Tensor):
        outputs = (outputs,)  # type: ignore[assignment]
    total = F.cross_entropy(outputs[0].float(), target.long(), ignore_index=ignore_index, reduction="sum")
    if len(outputs) > 1:
        aux = F.cross_entropy(outputs[1].float(), target.long(), ignore_index=ignore_index, reduction="sum")
        total = total + aux_weight * aux
    return total
