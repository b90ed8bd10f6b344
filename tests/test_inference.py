import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_pspnet
from rounding import gamma, network_rtol, probability_bound, unit_roundoff
from torch import nn

from pspnet.inference import InferenceSettings, class_ids, infer_proba, normalize, resized_size, window_starts
from pspnet.weights.model_file import make_card


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


def test_class_ids_are_the_first_largest_score_of_each_pixel():
    # a hand-worked pixel row: ties go to the first class, as numpy's and torch's argmax give them
    scores = torch.tensor([[1.0, 3.0, 3.0], [3.0, 3.0, 1.0], [0.0, -1.0, 2.0]]).T.reshape(1, 3, 1, 3)
    assert class_ids(scores).tolist() == [[[1, 0, 2]]]
    # many ties (integer scores), in each layout a caller may give: against numpy's argmax
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (2, 11, 17, 23), generator=generator).float()
    expected = np.argmax(scores.numpy(), axis=1)  # numpy: the first of equal maxima
    for layout in (scores, scores.contiguous(memory_format=torch.channels_last), scores.double()):
        ids = class_ids(layout)
        assert ids.dtype == torch.int64 and ids.shape == (2, 17, 23)
        assert np.array_equal(ids.numpy(), expected)


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
    """In float64 the network's batched and one-by-one windows agree to ~1e-15 (network_rtol); what remains is
    ours keeping probabilities in float32 (the reference in float64): the softmax, the flip average and the
    average over the (at most 4) windows covering a pixel, bounded by probability_bound."""
    model = tiny_pspnet(5).double().eval()
    image = torch.randn(1, 3, *size, dtype=torch.float64)
    settings = InferenceSettings(mode="slide", crop_size=crop, flip=flip, window_batch=3)
    ours = infer_proba(model, image, settings)[0].double().numpy()
    reference = _official_slide(model, image, crop, 2 / 3, flip)
    assert ours.shape == reference.shape == (5, *size)
    with torch.no_grad():
        max_logit = float(model(image).abs().max())
    bound = probability_bound(5, max_logit, averaged=2 * 4) + network_rtol(model, pixels=crop[0] * crop[1]) * max_logit
    assert np.abs(ours - reference).max() <= bound


def test_slide_equals_whole_for_a_context_free_model():
    """A pointwise model gives each pixel the same logits in every window (float64: exact up to 1e-16); the
    probabilities of both modes are float32 softmaxes, the slide's averaged over up to 4 windows."""
    model = Pointwise().double().eval()
    image = torch.randn(2, 3, 61, 90, dtype=torch.float64)
    whole = infer_proba(model, image, InferenceSettings(mode="whole"))
    slide = infer_proba(model, image, InferenceSettings(mode="slide", crop_size=(25, 40)))
    with torch.no_grad():
        max_logit = float(model(image).abs().max())
    bound = probability_bound(4, max_logit) + probability_bound(4, max_logit, averaged=4)
    assert (slide - whole).abs().max() <= bound


def test_flip_averages_softmax_of_the_mirrored_input():
    model = LeftRight().eval()
    image = torch.randn(1, 3, 8, 12)
    got = infer_proba(model, image, InferenceSettings(mode="whole", flip=True))
    expected = (model(image).softmax(1) + model(image.flip(-1)).softmax(1).flip(-1)) / 2
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the same operations in the same order
    assert not torch.allclose(got, model(image).softmax(1))


def test_multi_scale_averages_resized_probabilities():
    model = Pointwise().eval()
    image = torch.randn(1, 3, 30, 40)
    settings = InferenceSettings(mode="whole", base_size=40, scales=(0.5, 1.0))
    got = infer_proba(model, image, settings)
    half = F.interpolate(image, size=(15, 20), mode="bilinear", align_corners=False)
    small = F.interpolate(model(half).softmax(1), size=(30, 40), mode="bilinear", align_corners=False)
    expected = (small + model(image).softmax(1)) / 2
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the same operations in the same order
    assert got.shape == (1, 4, 30, 40)
    # softmax (K + 4 roundings), bilinear resizing (4 weighted terms, their weights rounded), the scale average
    # and the test's own float32 sum over K: within gamma(2K + 9) of 1
    torch.testing.assert_close(got.sum(1), torch.ones(1, 30, 40), rtol=0, atol=gamma(2 * 4 + 9, torch.float32))


def test_auto_mode_chooses_windows_only_for_large_images(monkeypatch):
    from pspnet import inference

    calls = []
    original = inference._slide
    monkeypatch.setattr(inference, "_slide", lambda *a: calls.append(1) or original(*a))
    model = Pointwise().eval()
    infer_proba(model, torch.randn(1, 3, 36, 48), InferenceSettings(crop_size=(36, 48)))
    assert calls == []
    infer_proba(model, torch.randn(1, 3, 36, 49), InferenceSettings(crop_size=(36, 48)))
    assert calls == [1]


def test_bf16_precision_is_used_and_within_its_rounding():
    """Under bf16 a 1x1 convolution rounds its inputs and weights to bfloat16 (u = 2^-8 each), sums the three
    products (in float32) and rounds the logit: |dz| <= (2u + gamma_3) sum|w x| + u |z|, computed here from the
    absolute values; a probability moves by at most half the largest logit change (the softmax's row sums of
    |dp_i/dz_j| are 2 p_i (1 - p_i) <= 1/2), plus its own float32 rounding. And bf16 is really used: the
    probabilities differ from fp32's."""
    model = Pointwise().eval()
    image = torch.randn(1, 3, 8, 12)
    fp32 = infer_proba(model, image, InferenceSettings(mode="whole"))
    bf16 = infer_proba(model, image, InferenceSettings(mode="whole", precision="bf16"))
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    u = unit_roundoff(torch.bfloat16)
    with torch.no_grad():
        logits = model(image)
        magnitude = F.conv2d(image.abs(), model.conv.weight.abs(), model.conv.bias.abs())
    logit_error = float(((2 * u + 3 * unit_roundoff(torch.float32)) * magnitude + u * logits.abs()).max())
    bound = logit_error / 2 + 2 * probability_bound(4, float(logits.abs().max()))
    assert (fp32 - bf16).abs().max() <= bound
    assert not torch.equal(fp32, bf16)


def test_bf16_pspnet_runs_and_gives_float32_probabilities():
    """Smoke test of the whole network under bf16 (its first-order rounding bound, rounding.bf16_logit_rtol, is
    too wide for a useful comparison on a random network: the comparison is the 1x1 test above)."""
    model = tiny_pspnet(5).eval()
    bf16 = infer_proba(model, torch.randn(1, 3, 49, 49), InferenceSettings(mode="whole", precision="bf16"))
    assert bf16.dtype == torch.float32 and bf16.shape == (1, 5, 49, 49) and torch.isfinite(bf16).all()


def test_settings_from_card_and_validation():
    card = make_card(tiny_pspnet(11).config, dataset="camvid")
    settings = InferenceSettings.from_card(card, flip=True, scales=[1.0, 1.5], mode=None)
    assert settings.crop_size == (360, 480) and settings.base_size == 480
    assert InferenceSettings.from_card(None) == InferenceSettings()
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
    # the 12 values and their sum (250) are exact in float32: the mean rounds once, in the division
    assert math.isclose(out.mean().item(), (0 + 61.5 + 1) / 3, rel_tol=unit_roundoff(torch.float32))
