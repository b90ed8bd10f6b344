import math

import pytest
import torch

from pspnet.engine.losses import AUX_WEIGHT, cross_entropy, pspnet_loss


def _naive_ce(logits, target, ignore=255):
    """Per-pixel -log softmax in float64, averaged over labelled pixels, written out with loops."""
    total, count = 0.0, 0
    n, k, h, w = logits.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                label = int(target[b, i, j])
                if label == ignore:
                    continue
                scores = [float(logits[b, c, i, j]) for c in range(k)]
                top = max(scores)
                log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
                total += log_sum - scores[label]
                count += 1
    return total / count


def test_cross_entropy_against_a_naive_reference():
    logits = torch.randn(2, 4, 5, 6) * 3
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255
    assert cross_entropy(logits, target).item() == pytest.approx(_naive_ce(logits, target), rel=1e-6)


def test_main_plus_weighted_aux():
    main, aux = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0, 0] = 255
    expected = _naive_ce(main, target) + 0.4 * _naive_ce(aux, target)
    assert AUX_WEIGHT == 0.4
    assert pspnet_loss((main, aux), target).item() == pytest.approx(expected, rel=1e-6)
    assert pspnet_loss(main, target).item() == pytest.approx(_naive_ce(main, target), rel=1e-6)


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
    assert loss.item() == pytest.approx(_naive_ce(logits.bfloat16().float(), target), rel=1e-5)
