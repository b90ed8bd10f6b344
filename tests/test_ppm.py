import warnings

import pytest
import torch
import torch.nn.functional as F
from rounding import gamma

from pspnet.models.ppm import PyramidPoolingModule, adaptive_avg_pool2d, pool_pyramid


def test_hand_worked_overlapping_bins():
    # L = 5 into 3 bins: [floor(0), ceil(5/3)) = [0, 2), [floor(5/3), ceil(10/3)) = [1, 4), [floor(10/3), 5) = [3, 5)
    x = torch.arange(5, dtype=torch.float64).view(1, 1, 1, 5)
    pooled = pool_pyramid(x, [1, 3])
    assert pooled[1].shape == (1, 1, 3, 3)  # H = 1 < 3 bins: every row bin covers the single row
    assert pooled[1][0, 0].tolist() == [[0.5, 2.0, 3.5]] * 3
    assert pooled[0].item() == 2.0


@pytest.mark.parametrize("size", [(1, 1), (2, 5), (7, 13), (60, 60), (61, 47), (9, 6), (128, 33)])
@pytest.mark.parametrize("bins", [(1, 2, 3, 6), (4,), (5, 7)])
def test_equals_pytorch_adaptive_pooling(size, bins):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    for b, pooled in zip(bins, pool_pyramid(x, bins)):
        torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, b), rtol=1e-12, atol=1e-12)


def test_single_grid_helper_and_channels_last():
    """float32 channels_last input against the exact (float64) bin means: a bin of 17x23 split 6x6 spans at most
    4 x 5 pixels, and the two averaging-matrix products round at most 4 + 5 additions and 2 multiplications, so
    each mean is within gamma(11) x max|x| (tests/rounding.py)."""
    x = torch.randn(1, 8, 17, 23).to(memory_format=torch.channels_last)
    exact = F.adaptive_avg_pool2d(x.double(), 6)
    got = adaptive_avg_pool2d(x, 6)
    assert got.dtype == torch.float32 and got.shape == (1, 8, 6, 6)
    assert float((got.double() - exact).abs().max()) <= gamma(11, torch.float32) * float(x.abs().max())


def test_ppm_shape_and_channels():
    ppm = PyramidPoolingModule(64)
    out = ppm(torch.randn(2, 64, 11, 9))
    assert ppm.branch_channels == 16 and ppm.out_channels == 128
    assert out.shape == (2, 128, 11, 9)


def test_ppm_passes_input_through_first():
    ppm = PyramidPoolingModule(8, bins=(1, 2)).eval()
    x = torch.randn(1, 8, 5, 7)
    assert torch.equal(ppm(x)[:, :8], x)


def test_bad_bins_are_named():
    with pytest.raises(ValueError, match="bins"):
        PyramidPoolingModule(64, bins=())
    with pytest.raises(ValueError, match="divisible"):
        PyramidPoolingModule(64, bins=(1, 2, 3))


def test_batch_of_one_uses_running_statistics_with_one_warning():
    ppm = PyramidPoolingModule(16, bins=(1, 2)).train()
    branch = ppm.branches[0]
    branch.bn.running_mean.normal_()
    branch.bn.running_var.uniform_(0.5, 2.0)
    before = branch.bn.running_mean.clone()
    x = torch.randn(1, 16, 6, 6)
    with pytest.warns(UserWarning, match="running statistics"):
        ppm(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ppm(x)  # no second warning
    # the 1x1 branch was normalised with the running statistics (and did not update them)
    bn = branch.bn
    pooled = x.mean((2, 3), keepdim=True)
    expected = F.relu(
        (branch.conv(pooled) - bn.running_mean.view(1, -1, 1, 1))
        / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
        * bn.weight.view(1, -1, 1, 1)
        + bn.bias.view(1, -1, 1, 1)
    )
    torch.testing.assert_close(out[:, 16:24], expected.expand(-1, -1, 6, 6))
    assert torch.equal(bn.running_mean, before)
    # the 2x2 branch still trained on batch statistics
    assert not torch.equal(ppm.branches[1].bn.num_batches_tracked, torch.tensor(0))


def test_batch_of_two_uses_batch_statistics():
    ppm = PyramidPoolingModule(16, bins=(1,)).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ppm(torch.randn(2, 16, 6, 6))
    assert ppm.branches[0].bn.num_batches_tracked.item() == 1


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(1, 1), (2, 5), (4, 9), (6, 6), (13, 7), (33, 30)])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_convolve_is_the_conv_of_the_concatenation(align_corners, size, kernel):
    """PyramidPoolingModule.convolve against conv(ppm(x)), the definition, in float64: values and the gradients of
    the input, the conv's weight and bias and a branch's weight; sizes below, at and above the largest grid."""
    torch.manual_seed(0)
    ppm = PyramidPoolingModule(8, bins=(1, 2, 3, 6), align_corners=align_corners).double().train()
    conv = torch.nn.Conv2d(16, 5, kernel, padding=kernel // 2).double()
    x = torch.randn(2, 8, *size, dtype=torch.float64, requires_grad=True)
    expected = conv(ppm(x))
    got = ppm.convolve(x, conv)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    inputs = [x, conv.weight, conv.bias, ppm.branches[2].conv.weight]
    upstream = torch.randn_like(expected)
    for g, e in zip(torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_shifted_upsampling_matrix_hand_worked():
    """Grid side 2 upsampled to 4 with align_corners=True: sources 0, 1/3, 2/3, 1, so rows (1, 0), (2/3, 1/3),
    (1/3, 2/3), (0, 1); the offset -1 moves every row down one (the first is the zero padding), +1 up one."""
    from pspnet.models.ppm import upsampling_matrices

    m = upsampling_matrices(4, [2], range(-1, 2), align_corners=True, like=torch.zeros((), dtype=torch.float64))
    rows = [[1, 0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1]]
    zero = [[0, 0]]
    expected = torch.tensor([zero + rows[:3], rows, rows[1:] + zero], dtype=torch.float64)
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-15)


def test_convolve_refuses_a_conv_it_cannot_split():
    ppm = PyramidPoolingModule(8, bins=(1, 2))
    with pytest.raises(ValueError, match="stride-1"):
        ppm.convolve(torch.randn(1, 8, 5, 5), torch.nn.Conv2d(16, 4, 3, padding=2, dilation=2))
    with pytest.raises(ValueError, match="16 channels"):
        ppm.convolve(torch.randn(1, 8, 5, 5), torch.nn.Conv2d(12, 4, 3, padding=1))
