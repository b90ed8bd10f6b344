"""Inference preparation: BatchNorm folded into the convolutions (the same network to float rounding), and the
precision "auto" resolves to bf16 only where the hardware computes it natively."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_pspnet
from rounding import network_rtol, probability_bound
from torch import nn

import pspnet
from pspnet import inference
from pspnet.errors import CheckpointError
from pspnet.models.fold import batchnorm_pairs, fold_batchnorm
from pspnet.segmenter import Segmenter


def _with_batch_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with random BatchNorm statistics and affine parameters, so that folding has work to do."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 2 + 0.1)
                module.weight.copy_(torch.randn(shape, generator=generator))
                module.bias.copy_(torch.randn(shape, generator=generator))
    return model.eval()


def test_folding_computes_the_same_logits_to_rounding():
    torch.manual_seed(0)
    model = _with_batch_statistics(tiny_pspnet(5).double())
    x = torch.randn(2, 3, 37, 45, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        bn_count = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert len(batchnorm_pairs(model)) == bn_count  # every BatchNorm sits right after its convolution
        assert model.fold_batchnorm() is model and model.inference_only and not model.training
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        folded = model(x)
    error = ((folded - expected).abs().max() / expected.abs().max()).item()
    assert error <= network_rtol(model, pixels=37 * 45)
    assert error > 0 or bn_count == 0  # the weights did change


def test_a_wrong_fold_is_caught_by_the_same_comparison():
    """The comparison above can fail: folding with the variance instead of the standard deviation is far off."""
    torch.manual_seed(0)
    model = _with_batch_statistics(tiny_pspnet(5).double())
    x = torch.randn(1, 3, 33, 33, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        for _, _, conv, bn in batchnorm_pairs(model):
            bn.running_var.copy_(bn.running_var.sqrt())  # what a fold that forgot the square root would use
        fold_batchnorm(model)
        wrong = model(x)
    assert ((wrong - expected).abs().max() / expected.abs().max()).item() > 1e3 * network_rtol(model, pixels=33 * 33)


def test_a_folded_model_cannot_train_or_be_saved_and_a_loaded_one_keeps_its_batchnorm(tmp_path):
    model = tiny_pspnet(3)
    path = pspnet.save_model(model, tmp_path / "m.safetensors")
    loaded = pspnet.load_model(path)
    assert any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())  # fine-tuning keeps BatchNorm
    loaded.train()
    loaded.fold_batchnorm()
    with pytest.raises(RuntimeError, match="folded for inference; load the model again"):
        loaded.train()
    with pytest.raises(CheckpointError, match="folded for inference"):
        pspnet.save_model(loaded, tmp_path / "folded.safetensors")


def test_batchnorm_without_a_convolution_before_it_is_refused():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="1: a BatchNorm with no convolution right before it"):
        fold_batchnorm(model)
    with pytest.raises(ValueError, match="4 channels after a 3-channel conv"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(4)))


@pytest.mark.parametrize("native, chosen", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_where_native(monkeypatch, native, chosen):
    monkeypatch.setattr(inference, "native_bf16", lambda device: native)
    precision, why = inference.resolve_precision("auto", torch.device("cpu"))
    assert precision == chosen and why.startswith("auto: this CPU")
    assert inference.resolve_precision("fp32", torch.device("cpu")) == ("fp32", "as asked")


@pytest.mark.parametrize(
    "flags, environ, native",
    [
        (["AVX512", "AVX512_BF16"], {}, True),
        (["AVX512", "AMX"], {"ONEDNN_MAX_CPU_ISA": "ALL"}, True),
        (["AVX512", "AVX512_BF16"], {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, True),
        (["AVX512"], {}, False),  # AVX-512 without bf16 instructions
        (["AVX2"], {}, False),  # an AVX2-only CPU
        (["AVX2", "AVX512_BF16"], {}, False),  # ATEN_CPU_CAPABILITY=avx2 on a bf16 CPU
        (["AVX512", "AVX512_BF16"], {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),  # oneDNN capped below bf16
        (["AVX512", "AVX512_BF16"], {"DNNL_MAX_CPU_ISA": "avx512_core_vnni"}, False),
    ],
)
def test_bf16_counts_as_native_only_where_the_kernels_may_use_it(flags, environ, native):
    """A CPU with bf16 instructions whose kernels are capped below them (measured: the bf16 forward 0.17x the fp32
    one with ATen and oneDNN forced to AVX2) must not make precision "auto" pick bf16."""
    assert inference.cpu_bf16_kernels(flags, environ) is native


def test_explicit_bf16_where_it_is_emulated_warns_once(monkeypatch):
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    monkeypatch.setattr(inference, "_WARNED_EMULATED_BF16", set())
    with pytest.warns(UserWarning, match="no native bf16: PyTorch emulates it"):
        assert inference.resolve_precision("bf16", torch.device("cpu")) == ("bf16", "as asked")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inference.resolve_precision("bf16", torch.device("cpu"))  # said once is enough
    monkeypatch.setattr(inference, "native_bf16", lambda device: True)
    monkeypatch.setattr(inference, "_WARNED_EMULATED_BF16", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inference.resolve_precision("bf16", torch.device("cpu"))  # native: nothing to say
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        inference.resolve_precision("fp8", torch.device("cpu"))


def test_the_segmenter_prepares_the_model_once(tmp_path, monkeypatch):
    from pspnet.weights.model_file import make_card

    torch.manual_seed(0)
    model = _with_batch_statistics(tiny_pspnet(4))
    # the photo's own size (base size 41): one small forward per run, since bf16 is emulated, slowly, on some CPUs
    card = make_card(model.config, crop_size=(48, 48), base_size=41)
    path = pspnet.save_model(model, tmp_path / "m.safetensors", card=card)
    photo = np.random.default_rng(0).integers(0, 256, (33, 41, 3), dtype=np.uint8)
    fp32 = Segmenter.from_checkpoint(path, device="cpu", precision="fp32")
    assert fp32.model.inference_only and fp32.dtype == torch.float32
    reference = pspnet.load_model(path)  # BatchNorm kept: the network as trained
    expected = Segmenter(reference).predict_proba(photo)
    with torch.no_grad():
        max_logit = float(reference(torch.randn(1, 3, 33, 41)).abs().max())  # the logits' scale, for the bound
    # two float32 runs of one network, each within the network's rounding of the exact logits, then a softmax
    drift = network_rtol(reference, pixels=33 * 41, dtype=torch.float32) * max_logit
    bound = 2 * (probability_bound(4, max_logit) + drift)
    assert np.abs(fp32.predict_proba(photo) - expected).max() <= bound
    monkeypatch.setattr(inference, "native_bf16", lambda device: True)
    auto = Segmenter.from_checkpoint(path, device="cpu")
    weight = auto.model.decode_head.conv.weight
    assert auto.settings.precision == "bf16" and "natively" in auto.precision_reason
    assert weight.dtype == torch.bfloat16 and weight.is_contiguous(memory_format=torch.channels_last)
    proba = auto.predict_proba(photo)
    assert proba.dtype == np.float32 and np.isfinite(proba).all() and proba.shape == expected.shape
