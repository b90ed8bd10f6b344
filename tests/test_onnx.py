"""The whole model exports to ONNX with dynamic height and width and matches eager in ONNX Runtime.

Peers' PSPNets fail here because nn.AdaptiveAvgPool2d has no ONNX form for dynamic sizes the bins do not divide.

ONNX Runtime has no float64 convolution, so both sides run in float32 and are compared with the network's
float32 rounding bound (tests/rounding.py: about 1.6e-2 of the largest logit for this model). It is wide, but the
error it is there to catch is wider: the peers' export, average pooling with kernel and stride floor(L / bins),
moves the logits of this model at these sizes by more than twice the bound (checked below).
"""

import contextlib

import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F
from conftest import tiny_pspnet
from rounding import network_rtol


def test_dynamic_size_export_matches_eager(tmp_path):
    model = tiny_pspnet(6, aux=False).eval()
    path = tmp_path / "pspnet.onnx"
    height = torch.export.Dim("height", min=16, max=1024)
    width = torch.export.Dim("width", min=16, max=1024)
    batch = torch.export.Dim("batch", min=1, max=16)
    torch.onnx.export(
        model,
        (torch.randn(2, 3, 64, 64),),
        path,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: batch, 2: height, 3: width}},
        dynamo=True,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # sizes whose 1/8 feature maps (13x10, 16x9, 11x17) are not divisible by the bins 2, 3 and 6
    for n, h, w in [(1, 97, 75), (3, 121, 67), (2, 83, 131)]:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"image": x.numpy()})
        assert got.shape == (n, 6, h, w)
        assert np.abs(expected).max() > 1e-3
        rtol = network_rtol(model, pixels=h * w, dtype=torch.float32)
        assert np.abs(got - expected).max() <= rtol * np.abs(expected).max()
        # the bound has teeth: the peers' fixed-kernel pooling lies outside it
        with torch.no_grad(), _floor_kernel_pooling():
            wrong = model(x).numpy()
        assert np.abs(wrong - expected).max() > 2 * rtol * np.abs(expected).max()


@contextlib.contextmanager
def _floor_kernel_pooling():
    """The pyramid pooling as peers export it for fixed sizes: average pooling with kernel = stride = floor(L / b),
    which drops the last rows and columns when b does not divide L."""
    from pspnet.models import ppm

    def pool(x, bins):
        h, w = x.shape[-2:]
        return [F.avg_pool2d(x, (h // b, w // b), (h // b, w // b))[..., :b, :b] for b in bins]

    original = ppm.pool_pyramid
    ppm.pool_pyramid = pool
    try:
        yield
    finally:
        ppm.pool_pyramid = original
