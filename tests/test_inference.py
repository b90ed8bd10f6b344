import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_pspnet
from torch import nn

from pspnet.inference import InferenceSettings, infer_proba, normalize, resized_size, window_starts


class Pointwise(nn.Module):
    """Logits from a 1x1 conv: no context, so sliding windows must give exactly the whole-image result."""

    def __init__(self, k=4):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x):
        return self.conv(x)


class LeftRight(nn.Module):
    """Logits that depend on the column, so flipping changes them."""

    def forward(self, x):
        w = x.shape[-1]
        ramp = torch.linspace(-2, 2, w, device=x.device).view(1, 1, 1, w)
        return torch.cat([x[:, :1] + ramp, x[:, 1:2] - ramp, x[:, 2:3]], dim=1)


def test_window_starts_hand_examples():
    assert window_starts(473, 473, 316) == [0]
    assert window_starts(512, 473, 316) == [0, 39]
    assert window_starts(1000, 473, 316) == [0, 316, 527]
    assert window_starts(2048, 713, 476) == [0, 476, 952, 1335]


def test_resized_size_keeps_aspect_with_official_rounding():
    assert resized_size(375, 500, 512) == (384, 512)
    assert resized_size(500, 333, 512) == (512, 341)
    assert resized_size(1024, 2048, 1024) == (512, 1024)


def _official_slide(model, image, crop, stride_rate, flip):
    """The official scale_process written as loops over single windows, in float64 numpy where possible."""
    _, _, h, w = image.shape
    ch, cw = crop
    pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
    ph, pw = pad_h // 2, pad_w // 2
    x = F.pad(image, (pw, pad_w - pw, ph, pad_h - ph))
    new_h, new_w = x.shape[-2:]
    sh, sw = int(np.ceil(ch * stride_rate)), int(np.ceil(cw * stride_rate))
    grid_h = int(np.ceil(float(new_h - ch) / sh) + 1)
    grid_w = int(np.ceil(float(new_w - cw) / sw) + 1)
    pred, count = None, np.zeros((new_h, new_w))
    for ih in range(grid_h):
        for iw in range(grid_w):
            e_h = min(ih * sh + ch, new_h)
            s_h = e_h - ch
            e_w = min(iw * sw + cw, new_w)
            s_w = e_w - cw
            crop_x = x[:, :, s_h:e_h, s_w:e_w]
            with torch.no_grad():
                out = model(crop_x).softmax(1)[0].double().numpy()
                if flip:
                    out = (out + model(crop_x.flip(-1)).softmax(1)[0].flip(-1).double().numpy()) / 2
            if pred is None:
                pred = np.zeros((out.shape[0], new_h, new_w))
            pred[:, s_h:e_h, s_w:e_w] += out
            count[s_h:e_h, s_w:e_w] += 1
    pred /= count
    return pred[:, ph : ph + h, pw : pw + w]


@pytest.mark.parametrize("size, crop", [((50, 70), (33, 33)), ((20, 45), (33, 33)), ((41, 41), (41, 41))])
@pytest.mark.parametrize("flip", [False, True])
def test_slide_matches_the_official_window_loop(size, crop, flip):
    model = tiny_pspnet(5).eval()
    image = torch.randn(1, 3, *size)
    settings = InferenceSettings(mode="slide", crop_size=crop, flip=flip, window_batch=3)
    ours = infer_proba(model, image, settings)[0].double().numpy()
    reference = _official_slide(model, image, crop, 2 / 3, flip)
    assert ours.shape == reference.shape == (5, *size)
    assert np.abs(ours - reference).max() < 1e-5


def test_slide_equals_whole_for_a_context_free_model():
    model = Pointwise().eval()
    image = torch.randn(2, 3, 61, 90)
    whole = infer_proba(model, image, InferenceSettings(mode="whole"))
    slide = infer_proba(model, image, InferenceSettings(mode="slide", crop_size=(25, 40)))
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-6)


def test_flip_averages_softmax_of_the_mirrored_input():
    model = LeftRight().eval()
    image = torch.randn(1, 3, 8, 12)
    got = infer_proba(model, image, InferenceSettings(mode="whole", flip=True))
    expected = (model(image).softmax(1) + model(image.flip(-1)).softmax(1).flip(-1)) / 2
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, model(image).softmax(1))


def test_multi_scale_averages_resized_probabilities():
    model = Pointwise().eval()
    image = torch.randn(1, 3, 30, 40)
    settings = InferenceSettings(mode="whole", base_size=40, scales=(0.5, 1.0))
    got = infer_proba(model, image, settings)
    half = F.interpolate(image, size=(15, 20), mode="bilinear", align_corners=False)
    small = F.interpolate(model(half).softmax(1), size=(30, 40), mode="bilinear", align_corners=False)
    expected = (small + model(image).softmax(1)) / 2
    torch.testing.assert_close(got, expected)
    assert got.shape == (1, 4, 30, 40)
    torch.testing.assert_close(got.sum(1), torch.ones(1, 30, 40))


def test_auto_mode_chooses_windows_only_for_large_images(monkeypatch):
    import pspnet.inference as inference

    calls = []
    original = inference._slide
    monkeypatch.setattr(inference, "_slide", lambda *a: calls.append(1) or original(*a))
    model = Pointwise().eval()
    infer_proba(model, torch.randn(1, 3, 36, 48), InferenceSettings(crop_size=(36, 48)))
    assert calls == []
    infer_proba(model, torch.randn(1, 3, 36, 49), InferenceSettings(crop_size=(36, 48)))
    assert calls == [1]


def test_bf16_precision_is_close_to_fp32():
    model = tiny_pspnet(5).eval()
    image = torch.randn(1, 3, 49, 49)
    fp32 = infer_proba(model, image, InferenceSettings(mode="whole"))
    bf16 = infer_proba(model, image, InferenceSettings(mode="whole", precision="bf16"))
    assert bf16.dtype == torch.float32
    assert (fp32 - bf16).abs().max() < 0.05


def test_settings_from_meta_and_validation():
    meta = {"inference": {"crop_size": [360, 480], "base_size": 480}}
    settings = InferenceSettings.from_meta(meta, flip=True, scales=[1.0, 1.5], mode=None)
    assert settings.crop_size == (360, 480) and settings.base_size == 480
    assert settings.flip and settings.scales == (1.0, 1.5) and settings.mode == "auto"
    with pytest.raises(ValueError, match="mode"):
        InferenceSettings(mode="tiles")
    with pytest.raises(ValueError, match="stride rate"):
        InferenceSettings(stride_rate=0)


def test_normalize():
    images = torch.full((1, 3, 2, 2), 123, dtype=torch.uint8)
    out = normalize(images, (123.0, 0.0, 100.0), (1.0, 2.0, 23.0))
    assert out.dtype == torch.float32
    assert out[0, :, 0, 0].tolist() == [0.0, 61.5, 1.0]
    assert math.isclose(out.mean().item(), (0 + 61.5 + 1) / 3, rel_tol=1e-6)
