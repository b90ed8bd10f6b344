"""The whole model exports to ONNX with dynamic height and width and matches eager in ONNX Runtime.

Peers' PSPNets fail here because nn.AdaptiveAvgPool2d has no ONNX form for dynamic sizes the bins do not divide.
"""

import numpy as np
import onnxruntime
import torch
from conftest import tiny_pspnet


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
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4
