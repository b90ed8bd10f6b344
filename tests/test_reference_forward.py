"""An official-layout checkpoint, converted by ``pspnet``, must give the official network's logits.

The official network is the independent functional reference in ``reference_pspnet.py``; the checkpoint is
random (seeded) but has exactly the official keys and shapes (``/work/shared/fixtures``) and is saved the way the
authors' training script saves it (``module.``-prefixed keys inside ``{'state_dict': ...}``).

The same holds for an mmsegmentation PSPNet R-50-D8 checkpoint (keys built by ``reference_pspnet.mmseg_keys``,
saved inside ``{'meta', 'state_dict', 'optimizer'}``): the converted model must give the logits of the reference
with contracted dilation and ``align_corners=False``, and clearly not those of the official variant.

Both networks run in float64 on the file's (float32) weights, so they agree to ~1e-15 and are compared within the
rounding bound of the network (tests/rounding.py, about 3e-10 for PSPNet50) on every CPU; the wrong variants
differ by 1e-2 and more.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES
from rounding import network_rtol
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from reference_pspnet import (
    load_key_file,
    mmseg_forward,
    mmseg_keys,
    mmseg_state_dict,
    mmseg_to_official,
    official_forward,
    official_state_dict,
)

# The mmseg logits must differ from those of a reference run with either official switch by more than this.
SENSITIVITY_REL = 1e-3
MMSEG_SIZE = (60, 76)  # not 8n+1, so align_corners=True/False give different upsampling grids
MMSEG_CLASSES = 19


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"fixture {path} is missing")
    return path


def _save_official(sd: dict[str, Tensor], path: Path) -> None:
    """Save ``sd`` like the authors' training script does (DataParallel prefix, epoch and optimizer entries)."""
    checkpoint = {
        "epoch": 1,
        "state_dict": {"module." + k: v for k, v in sd.items()},
        "optimizer": {"state": {}, "param_groups": []},
    }
    torch.save(checkpoint, path)


def _normalised_input(shape: tuple[int, ...], seed: int) -> Tensor:
    """A seeded image in [0, 1] normalised with the ImageNet mean and std, as the model expects."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(shape, generator=gen)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (image - mean) / std


def _save_mmseg(sd: dict[str, Tensor], path: Path) -> None:
    """Save ``sd`` like mmsegmentation's checkpoint hook does (bare keys, ``meta`` and ``optimizer`` entries)."""
    checkpoint = {
        "meta": {"mmseg_version": "1.2.2", "epoch": 1, "iter": 80000, "dataset_meta": {"classes": ["c"] * 19}},
        "state_dict": sd,
        "optimizer": {"state": {}, "param_groups": []},
    }
    torch.save(checkpoint, path)


def _float64(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """The state dict's floating tensors in float64 (exact: they are float32 values)."""
    return {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}


def _check_logits(got: Tensor, want: Tensor, classes: int, size: tuple[int, int]) -> float:
    """Shape, dtype, finiteness and non-constant checks; return the scale max|want|."""
    assert isinstance(got, Tensor)
    assert want.shape == (1, classes, *size)
    assert got.shape == want.shape
    assert got.dtype == want.dtype == torch.float64
    assert torch.isfinite(want).all()
    assert torch.isfinite(got).all()

    scale = want.abs().max().item()
    assert scale > 0.05, f"reference logits are too small ({scale:.3g}) for a meaningful comparison"
    spatial = want.std(dim=(2, 3)).max().item()
    assert spatial > 1e-3, "reference logits are (nearly) constant across pixels"
    return scale


def _relative_error(got: Tensor, want: Tensor) -> float:
    return (got - want).abs().max().item() / want.abs().max().item()


def _check_converted_matches_reference(
    tmp_path: Path, key_file: str, classes: int, size: tuple[int, int], seed: int
) -> float:
    """Convert an official-layout checkpoint, run both networks, assert agreement; return the relative error."""
    import pspnet
    from pspnet.weights.convert import convert

    sd = official_state_dict(_fixture(key_file), seed=seed)
    src, dst = tmp_path / "official.pth", tmp_path / "model.safetensors"
    _save_official(sd, src)
    convert("official", src, dst)
    model = pspnet.load_model(dst)
    assert not model.training and model.decode_head.classifier.weight.dtype == torch.float32

    x = _normalised_input((1, 3, *size), seed=seed + 1000).double()
    with torch.no_grad():
        got = model.double()(x)
        want = official_forward(_float64(sd), x)

    scale = _check_logits(got, want, classes, size)
    rel = _relative_error(got, want)
    bound = network_rtol(model, pixels=size[0] * size[1])
    print(f"{key_file} {tuple(x.shape)}: max|b|={scale:.4g} max|a-b|/max|b|={rel:.3g} (bound {bound:.3g})")
    assert rel <= bound, f"converted model differs from the official reference: relative error {rel:.3g}"
    return rel


def test_pspnet50_official_checkpoint_matches_reference(tmp_path: Path) -> None:
    _check_converted_matches_reference(tmp_path, "official_pspnet50_keys.json", 150, (65, 81), seed=50)


def test_pspnet101_official_checkpoint_matches_reference(tmp_path: Path) -> None:
    _check_converted_matches_reference(tmp_path, "official_pspnet101_keys.json", 19, (49, 57), seed=101)


def test_reference_global_pool_branch_is_spatial_mean() -> None:
    """Sanity of the reference's building block: the 1x1 pyramid bin is the mean over the feature map."""
    x = torch.randn(2, 8, 7, 9, generator=torch.Generator().manual_seed(0))
    pooled = F.adaptive_avg_pool2d(x, 1)
    torch.testing.assert_close(pooled, x.mean(dim=(2, 3), keepdim=True))
    # Upsampling a 1x1 map with align_corners=True broadcasts it unchanged.
    up = F.interpolate(pooled, size=(7, 9), mode="bilinear", align_corners=True)
    torch.testing.assert_close(up, pooled.expand_as(up))


def test_reference_state_dict_is_seeded_and_complete() -> None:
    key_file = _fixture("official_pspnet50_keys.json")
    a = official_state_dict(key_file, seed=3)
    b = official_state_dict(key_file, seed=3)
    c = official_state_dict(key_file, seed=4)
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["cls.4.weight"], c["cls.4.weight"])
    nbt = a["layer0.1.num_batches_tracked"]
    assert nbt.dtype == torch.int64 and nbt.dim() == 0
    assert all((v > 0).all() for k, v in a.items() if k.endswith("running_var"))


@pytest.fixture(scope="module")
def mmseg_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Tensor], Tensor, Tensor, object]:
    """(mmseg state dict, input, converted model's logits, converted model) for a seeded R-50-D8, 19 classes."""
    import pspnet
    from pspnet.weights.convert import convert

    tmp_path = tmp_path_factory.mktemp("mmseg")
    sd = mmseg_state_dict(seed=250, depth=50, num_classes=MMSEG_CLASSES)
    src, dst = tmp_path / "mmseg.pth", tmp_path / "model.safetensors"
    _save_mmseg(sd, src)
    convert("mmseg", src, dst, dataset="cityscapes")
    model = pspnet.load_model(dst).double()
    assert not model.training
    x = _normalised_input((1, 3, *MMSEG_SIZE), seed=1250).double()
    with torch.no_grad():
        got = model(x)
    return _float64(sd), x, got, model


def test_pspnet50_mmseg_checkpoint_matches_reference(mmseg_case) -> None:
    sd, x, got, model = mmseg_case
    assert model.config.contract_dilation is True
    assert model.config.align_corners is False
    with torch.no_grad():
        want = mmseg_forward(sd, x)
    scale = _check_logits(got, want, MMSEG_CLASSES, MMSEG_SIZE)
    rel = _relative_error(got, want)
    bound = network_rtol(model, pixels=MMSEG_SIZE[0] * MMSEG_SIZE[1])
    print(f"mmseg R-50-D8 {tuple(x.shape)}: max|b|={scale:.4g} max|a-b|/max|b|={rel:.3g} (bound {bound:.3g})")
    assert rel <= bound, f"converted mmseg model differs from the mmseg reference: relative error {rel:.3g}"


@pytest.mark.parametrize(
    "switches",
    [
        {"contract_dilation": False, "align_corners": False},
        {"contract_dilation": True, "align_corners": True},
        {"contract_dilation": False, "align_corners": True},
    ],
    ids=["uncontracted", "align_corners", "official"],
)
def test_pspnet50_mmseg_comparison_is_sensitive_to_the_variant(mmseg_case, switches: dict[str, bool]) -> None:
    """The mmseg comparison would catch a converted model that ran with the official dilation or upsampling."""
    sd, x, got, _ = mmseg_case
    with torch.no_grad():
        other = official_forward(mmseg_to_official(sd), x, **switches)
    rel = _relative_error(got, other)
    print(f"mmseg model vs reference {switches}: max|a-b|/max|b|={rel:.3g}")
    assert rel > SENSITIVITY_REL, f"logits barely depend on {switches} (relative difference {rel:.3g})"


def test_mmseg_keys_have_the_resnet_v1c_layout() -> None:
    shapes = dict(mmseg_keys(depth=50, num_classes=MMSEG_CLASSES))
    assert shapes["backbone.stem.0.weight"] == (32, 3, 3, 3)
    assert shapes["backbone.stem.3.weight"] == (32, 32, 3, 3)
    assert shapes["backbone.stem.6.weight"] == (64, 32, 3, 3)
    assert shapes["backbone.layer1.0.conv1.weight"] == (64, 64, 1, 1)
    assert shapes["backbone.layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["backbone.layer3.5.conv2.weight"] == (256, 256, 3, 3)
    assert "backbone.layer3.6.conv1.weight" not in shapes
    assert shapes["decode_head.psp_modules.3.1.conv.weight"] == (512, 2048, 1, 1)
    assert shapes["decode_head.bottleneck.conv.weight"] == (512, 4096, 3, 3)
    assert shapes["decode_head.conv_seg.bias"] == (MMSEG_CLASSES,)
    assert shapes["auxiliary_head.convs.0.conv.weight"] == (256, 1024, 3, 3)
    assert shapes["auxiliary_head.conv_seg.weight"] == (MMSEG_CLASSES, 256, 1, 1)
    # Same set of tensors as the official PSPNet50 apart from the stem widths and the class count.
    official = dict(load_key_file(_fixture("official_pspnet50_keys.json")))
    renamed = mmseg_to_official(dict(mmseg_keys(depth=50, num_classes=150)))
    assert sorted(renamed) == sorted(official)
    differ = sorted(k for k in official if renamed[k] != official[k])
    assert all(k.startswith(("layer0.", "layer1.0.conv1.", "layer1.0.downsample.0.")) for k in differ), differ
