"""Rounding-error bounds for the tests' float comparisons: derived from the computation, never from one machine.

Two computations of one value that differ only in the order of their floating-point operations (a batch split in
two, another memory layout, a batch of windows instead of one, another CPU: AVX-512 and AVX2 machines pick
different convolution kernels) differ by rounding alone. How much follows from the classic error analysis of sums
(Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., 2002, sections 3.1 and 4.2): a sum of n terms
computed in a format of unit roundoff u is off by at most gamma(n - 1) * sum |x_i|, with gamma(n) = n u / (1 - n u),
whatever the order of the additions.

A test that checks that two computations are the same mathematics runs them in float64 (u = 2^-53, 2^29 times
finer than float32), so the bound is tiny and any real difference (a wrong divisor, a wrong window, a dropped
term) lies orders of magnitude above it; a test of a float32 result against a float64 reference uses float32's u.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "bf16_logit_rtol",
    "cross_entropy_sum_bound",
    "gamma",
    "network_rtol",
    "probability_bound",
    "unit_roundoff",
]


def unit_roundoff(dtype: torch.dtype) -> float:
    """u: the largest relative error of rounding one real number to ``dtype`` (half the machine epsilon)."""
    return float(torch.finfo(dtype).eps) / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of n successive roundings in ``dtype``."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"{n} operations exhaust the precision of {dtype}: no bound")
    return nu / (1 - nu)


def _layers_and_fan_in(model: nn.Module) -> tuple[int, int]:
    """(number of convolution and linear layers, the largest number of products one output of them sums)."""
    layers, fan_in = 0, 1
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            layers += 1
            fan_in = max(fan_in, module.in_channels // module.groups * math.prod(module.kernel_size))
        elif isinstance(module, nn.Linear):
            layers += 1
            fan_in = max(fan_in, module.in_features)
    return layers, fan_in


def network_rtol(model: nn.Module, *, pixels: int, steps: int = 1, dtype: torch.dtype = torch.float64) -> float:
    """Bound on ``max|a - b| / max|b|`` for two runs of ``model`` (forward; or training, ``steps`` optimiser steps)
    that differ only in the order of their float operations.

    Every value a layer makes is a sum: a convolution output sums ``fan-in`` products, a weight gradient sums over
    the ``pixels`` of a batch, so each layer adds at most gamma(n) relative error with n the larger of the two;
    the errors of the layers a value passes through add up (first order), and so do those of successive optimiser
    steps. The bound takes each sum's absolute terms at the largest magnitude of the result (no cancellation beyond
    what n covers), which the margin of float64 over the differences that matter makes safe: for the tiny
    ResNet-18 PSPNet of the tests it is about 1e-10, real differences (wrong divisor, BatchNorm statistics of
    another batch) are above 1e-4.
    """
    layers, fan_in = _layers_and_fan_in(model)
    return steps * layers * gamma(max(fan_in, pixels), dtype)


def cross_entropy_sum_bound(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = 255,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Bound on the absolute error of ``sum_p w[y_p] * CE_p`` over the labelled pixels p, computed in ``dtype``
    from these logits ``(N, K, H, W)`` (exact in ``dtype``), against the exact value.

    Per pixel, ``CE = m + log(sum_j exp(z_j - m)) - z_y`` with m the largest logit: K exponentials (each within
    2u), their sum (gamma_K), the log of a number in [1, K] (an absolute error of its relative one plus u), and
    three additions of numbers up to max|z| + log K: at most ``(K + 4) u + 3 u (max|z| + log K)`` absolute, times
    the pixel's weight (and its multiplication, u relative); the sum of the n terms then adds gamma_n times their
    sum. All quantities come from float64 copies of the inputs.
    """
    z = logits.detach().double()
    k = z.shape[1]
    valid = target != ignore_index
    labels = torch.where(valid, target.long(), 0)
    ce = torch.logsumexp(z, dim=1) - z.gather(1, labels[:, None])[:, 0]  # (N, H, W) in float64
    w = torch.ones_like(ce) if class_weights is None else class_weights.double()[labels]
    w = w * valid
    u = unit_roundoff(dtype)
    per_pixel = (k + 4) * u + 3 * u * (float(z.abs().max()) + math.log(k))
    terms = w * ce
    n = int(valid.sum())
    return float((w * per_pixel).sum() + u * terms.abs().sum() + gamma(max(n, 1), dtype) * terms.abs().sum())


def probability_bound(
    classes: int, max_logit: float, *, averaged: int = 1, dtype: torch.dtype = torch.float32
) -> float:
    """Bound on the absolute error of a probability computed in ``dtype`` as the softmax of logits rounded to
    ``dtype`` (from exact or float64 values up to ``max_logit`` in magnitude), then averaged with ``averaged - 1``
    others (additions, one division).

    Rounding a logit moves it by u |z|, which moves a probability by at most 2 u max|z| (the softmax's derivative
    dp_i/dz_j = p_i (delta_ij - p_j)); the softmax itself rounds K exponentials (2u each), their sum (gamma_K) and a
    division (u): (K + 4) u relative, and probabilities are at most 1. Averaging values in [0, 1] adds
    gamma(averaged + 1).
    """
    u = unit_roundoff(dtype)
    return (classes + 4) * u + 2 * u * max_logit + gamma(averaged + 1, dtype)


def bf16_logit_rtol(model: nn.Module) -> float:
    """First-order bound on ``max|logits_bf16 - logits_fp32| / max|logits_fp32|`` for a forward under bfloat16
    autocast: every convolution rounds its input, its weights and its output to bfloat16 (u = 2^-9 each) and is
    followed by at most one more rounding elementwise step (BatchNorm, residual addition, pooling, upsampling);
    the relative errors of the layers on a path add up. Its float32 accumulation is negligible beside these."""
    layers, _ = _layers_and_fan_in(model)
    return 4 * layers * unit_roundoff(torch.bfloat16)
