"""The losses against naive float64 loops; each float32 result within the rounding bound of its computation
(tests/rounding.py: cross_entropy_sum_bound), never a tolerance taken from one machine."""

import math

import pytest
import torch
from conftest import naive_ce_sums
from rounding import cross_entropy_sum_bound, unit_roundoff

from pspnet.engine import losses
from pspnet.engine.losses import (
    AUX_WEIGHT,
    cross_entropy,
    cross_entropy_sum,
    label_weight_sum,
    loss_sum,
    median_frequency_weights,
    pspnet_loss,
)

U32 = unit_roundoff(torch.float32)


def _naive_ce(logits, target, ignore=255):
    """Per-pixel -log softmax in float64, averaged over labelled pixels."""
    total, count = naive_ce_sums(logits, target, ignore=ignore)
    return total / count


def _mean_bound(logits, target):
    """The float32 bound of the mean: that of the sum divided by the pixel count, plus the division's rounding."""
    count = int((target != 255).sum())
    return cross_entropy_sum_bound(logits, target) / count + U32 * _naive_ce(logits, target)


def test_cross_entropy_against_a_naive_reference():
    logits = torch.randn(2, 4, 5, 6) * 3
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255
    expected = _naive_ce(logits, target)
    assert cross_entropy(logits, target).item() == pytest.approx(expected, rel=0, abs=_mean_bound(logits, target))


def test_main_plus_weighted_aux():
    main, aux = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0, 0] = 255
    expected = _naive_ce(main, target) + 0.4 * _naive_ce(aux, target)
    # each mean within its bound; the 0.4 x and the addition round once more each
    bound = _mean_bound(main, target) + 0.4 * _mean_bound(aux, target) + 2 * U32 * expected
    assert AUX_WEIGHT == 0.4
    assert pspnet_loss((main, aux), target).item() == pytest.approx(expected, rel=0, abs=bound)
    main_only = _naive_ce(main, target)
    assert pspnet_loss(main, target).item() == pytest.approx(main_only, rel=0, abs=_mean_bound(main, target))


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = pspnet_loss((logits, logits), torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_bf16_logits_are_reduced_in_float32():
    logits = torch.randn(1, 3, 8, 8)
    target = torch.randint(0, 3, (1, 8, 8))
    loss = cross_entropy(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
    rounded = logits.bfloat16().float()  # the bf16 values exactly; the reduction's error is float32's
    assert loss.item() == pytest.approx(_naive_ce(rounded, target), rel=0, abs=_mean_bound(rounded, target))


# -- class weighting (median frequency) ---------------------------------------------------------------------------


def test_weighted_loss_sum_and_divisor_against_naive_float64():
    torch.manual_seed(3)
    n, k, h, w = 2, 4, 5, 6
    main, aux = torch.randn(n, k, h, w) * 3, torch.randn(n, k, h, w) * 3
    target = torch.randint(0, k, (n, h, w))
    target[0, :2] = 255
    class_weights = torch.tensor([0.25, 1.0, 3.5, 8.0])
    main_sum, divisor = naive_ce_sums(main, target, class_weights)
    aux_sum, _ = naive_ce_sums(aux, target, class_weights)
    total = main_sum + 0.4 * aux_sum
    bound = (
        cross_entropy_sum_bound(main, target, class_weights=class_weights)
        + 0.4 * cross_entropy_sum_bound(aux, target, class_weights=class_weights)
        + 2 * U32 * total
    )
    got = float(loss_sum((main, aux), target, class_weights=class_weights))
    assert got == pytest.approx(total, rel=0, abs=bound)
    got_divisor = label_weight_sum(target, class_weights=class_weights)
    # a float64 sum of 50 weights that are exact in binary (0.25, 1, 3.5, 8): exact
    assert got_divisor.dtype == torch.float64 and float(got_divisor) == divisor
    # without weights the divisor is the labelled pixel count, and all-ones weights change nothing
    assert float(label_weight_sum(target)) == int((target != 255).sum())
    ones = loss_sum((main, aux), target, class_weights=torch.ones(k))
    unweighted_sum = naive_ce_sums(main, target)[0] + 0.4 * naive_ce_sums(aux, target)[0]
    both = 2 * (cross_entropy_sum_bound(main, target) + 0.4 * cross_entropy_sum_bound(aux, target) + 2 * U32 * total)
    assert float(ones) == pytest.approx(float(loss_sum((main, aux), target)), rel=0, abs=both)  # each within its own
    assert abs(float(ones) - unweighted_sum) <= both / 2


def test_median_frequency_weights_hand_worked():
    # class 0 in images of 100 + 100 labelled pixels with 50 + 30 of its own: freq 80 / 200 = 0.4
    # class 1 in one image of 100 pixels, 10 of its own: freq 0.1; class 2: 60 / 100 = 0.6; class 3 never appears
    weights = median_frequency_weights([80, 10, 60, 0], [200, 100, 100, 0])
    # median of (0.4, 0.1, 0.6) is 0.4: weights 0.4/0.4, 0.4/0.1, 0.4/0.6, and 1 for the absent class
    assert weights == pytest.approx([1.0, 4.0, 2.0 / 3.0, 1.0])
    with pytest.raises(ValueError, match="no class"):
        median_frequency_weights([0, 0], [0, 0])
    with pytest.raises(ValueError, match="2 class pixel counts but 3"):
        median_frequency_weights([1, 2], [3, 4, 5])


# -- the chunked cross-entropy sum ----------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
def test_chunked_cross_entropy_sum_and_its_gradient_against_float64_autograd(monkeypatch, weighted):
    """Forward and gradient in float64 against F.cross_entropy's, with chunks of 7 values (several per row and
    image). The forward is within two float64 sum bounds; the gradient is (softmax - one-hot) x weight x the
    incoming gradient, where each side's softmax exp(z - logsumexp) is off by at most (2 (max|z| + log K) + 2) u
    (the subtraction's rounding, amplified by exp, and exp's own)."""
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 7)
    torch.manual_seed(5)
    n, k, h, w = 2, 4, 5, 6
    logits = (torch.randn(n, k, h, w, dtype=torch.float64) * 4).requires_grad_()
    target = torch.randint(0, k, (n, h, w))
    target[1, 2:] = 255
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64) if weighted else None
    got = cross_entropy_sum(logits, target, weight)
    (grad,) = torch.autograd.grad(got * 1.5, logits)
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weight, ignore_index=255, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected * 1.5, logits)
    bound = 2 * cross_entropy_sum_bound(logits, target, class_weights=weight, dtype=torch.float64)
    assert got.dtype == torch.float64 and abs(float(got.detach() - expected.detach())) <= bound
    u64 = unit_roundoff(torch.float64)
    scale = 1.5 * (4.0 if weighted else 1.0)
    softmax_error = (2 * (float(logits.detach().abs().max()) + math.log(k)) + 2) * u64
    assert float((grad - expected_grad).abs().max()) <= 2 * softmax_error * scale
    assert float(grad[1, :, 2:].abs().max()) == 0.0  # ignored pixels get no gradient


def test_chunked_cross_entropy_keeps_the_logits_dtype_for_the_gradient():
    logits = torch.randn(1, 3, 9, 7).bfloat16().requires_grad_()
    target = torch.randint(0, 3, (1, 9, 7))
    loss = cross_entropy_sum(logits, target)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    rounded = logits.detach().float()
    expected = torch.nn.functional.cross_entropy(rounded, target, reduction="sum")
    assert abs(float(loss.detach() - expected)) <= 2 * cross_entropy_sum_bound(rounded, target)


# -- the loss on low-resolution logits, upsampled inside it ---------------------------------------------------------


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(7, 5), (1, 1), (13, 6)])
def test_interpolation_matrix_is_f_interpolate_along_one_axis(align_corners, size):
    """A (h, w) map upsampled by ``A_H @ x @ A_W^T`` equals F.interpolate's bilinear upsampling in float64 (both
    are a few additions of products of numbers up to max|x|: within 8u of it)."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    out = (29, 17)
    rows = losses.interpolation_matrix(out[0], size[0], align_corners=align_corners, dtype=torch.float64)
    columns = losses.interpolation_matrix(out[1], size[1], align_corners=align_corners, dtype=torch.float64)
    expected = torch.nn.functional.interpolate(x, size=out, mode="bilinear", align_corners=align_corners)
    got = rows @ x @ columns.T
    assert float((got - expected).abs().max()) <= 8 * unit_roundoff(torch.float64) * float(x.abs().max())
    assert torch.allclose(rows.sum(1), torch.ones(out[0], dtype=torch.float64))  # each row a convex combination


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_of_upsampled_logits_and_its_gradient_against_f_interpolate(monkeypatch, align_corners, weighted):
    """``cross_entropy_sum`` of (N, K, h, w) logits against an (N, H, W) target is the cross-entropy of the logits
    upsampled by F.interpolate, forward and gradient, in float64, with chunks of a few rows (``CHUNK_ELEMENTS``
    set to 2 rows of 4 x 23 values).

    The bounds: the two sides' upsampled logits differ by at most delta = (2 (h + w) + 7) u max|x| (two matrix
    products of h and w terms whose weights sum to 1, against F.interpolate's two-term sums); a pixel's
    cross-entropy moves by at most 2 delta with them; plus each side's own sum bound. The gradient reaches x
    through the transposed interpolation, whose column sums are at most s_H = max_j sum_i A_H[i, j] (and s_W):
    each x gets at most s_H s_W x scale x (2 softmax rounding + 2 delta + m u) with m the terms it sums."""
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 2 * 4 * 23)
    torch.manual_seed(7)
    n, k, h, w, height, width = 2, 4, 5, 6, 19, 23
    x = (torch.randn(n, k, h, w, dtype=torch.float64) * 4).requires_grad_()
    target = torch.randint(0, k, (n, height, width))
    target[1, 4:9] = 255
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64) if weighted else None
    got = cross_entropy_sum(x, target, weight, align_corners=align_corners)
    (grad,) = torch.autograd.grad(got * 1.5, x)
    upsampled = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=align_corners)
    expected = torch.nn.functional.cross_entropy(upsampled, target, weight=weight, ignore_index=255, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected * 1.5, x)

    u64 = unit_roundoff(torch.float64)
    max_x = float(x.detach().abs().max())
    delta = (2 * (h + w) + 7) * u64 * max_x
    w_pixels = (weight[torch.where(target == 255, 0, target)] if weighted else torch.ones(target.shape)) * (
        target != 255
    )
    bound = 2 * cross_entropy_sum_bound(upsampled, target, class_weights=weight, dtype=torch.float64)
    bound += 2 * delta * float(w_pixels.sum())
    assert got.dtype == torch.float64 and abs(float(got.detach() - expected.detach())) <= bound

    rows = losses.interpolation_matrix(height, h, align_corners=align_corners, dtype=torch.float64)
    columns = losses.interpolation_matrix(width, w, align_corners=align_corners, dtype=torch.float64)
    s_h, s_w = float(rows.sum(0).max()), float(columns.sum(0).max())
    scale = 1.5 * (4.0 if weighted else 1.0)
    softmax_error = (2 * (float(upsampled.detach().abs().max()) + math.log(k)) + 2) * u64
    terms = height * width
    grad_bound = s_h * s_w * scale * (2 * softmax_error + 2 * delta + terms * u64 * 2)
    assert float((grad - expected_grad).abs().max()) <= grad_bound
    # without grad mode the forward skips the gradient's work and gives the same sum, the same operations in order
    with torch.no_grad():
        assert torch.equal(cross_entropy_sum(x, target, weight, align_corners=align_corners), got.detach())
    # the other corner rule is a different upsampling: far outside these bounds (the check can fail)
    other = cross_entropy_sum(x, target, weight, align_corners=not align_corners)
    assert abs(float(other.detach() - expected.detach())) > 10 * bound


def test_cross_entropy_of_smaller_logits_needs_align_corners():
    with pytest.raises(ValueError, match="pass align_corners"):
        cross_entropy_sum(torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
        cross_entropy_sum(torch.randn(3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))


def test_loss_sum_upsamples_low_resolution_outputs_like_the_model_would():
    """loss_sum on (main, aux) at 1/8 with align_corners equals it on the F.interpolate'd outputs (float32, each
    side within its own bound plus the upsampling's difference)."""
    torch.manual_seed(3)
    main, aux = torch.randn(2, 5, 6, 7), torch.randn(2, 5, 6, 7)
    target = torch.randint(0, 5, (2, 41, 53))

    def up(t):
        return torch.nn.functional.interpolate(t, size=(41, 53), mode="bilinear", align_corners=True)

    got = float(loss_sum((main, aux), target, align_corners=True))
    expected = float(loss_sum((up(main), up(aux)), target))
    delta = (2 * (6 + 7) + 7) * U32 * float(torch.maximum(main.abs().max(), aux.abs().max()))
    pixels = int(target.numel())
    bound = 2 * (cross_entropy_sum_bound(up(main), target) + AUX_WEIGHT * cross_entropy_sum_bound(up(aux), target))
    bound += (1 + AUX_WEIGHT) * 2 * delta * pixels
    assert abs(got - expected) <= bound
