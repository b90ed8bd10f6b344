"""An official-layout checkpoint, converted by ``pspnet``, must give the official network's logits.

The official network is the independent functional reference in ``reference_pspnet.py``; the checkpoint is
random (seeded) but has exactly the official keys and shapes (``/work/shared/fixtures``) and is saved the way the
authors' training script saves it (``module.``-prefixed keys inside ``{'state_dict': ...}``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from reference_pspnet import official_forward, official_state_dict  # noqa: E402

FIXTURES = Path("/work/shared/fixtures")
REL_TOL = 1e-5


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


def _check_converted_matches_reference(
    tmp_path: Path, key_file: str, classes: int, size: tuple[int, int], seed: int
) -> float:
    """Convert an official-layout checkpoint, run both networks, assert agreement; return the relative error."""
    from pspnet.weights.convert import convert

    import pspnet

    sd = official_state_dict(_fixture(key_file), seed=seed)
    src, dst = tmp_path / "official.pth", tmp_path / "model.safetensors"
    _save_official(sd, src)
    convert("official", src, dst)
    model = pspnet.load_model(dst)
    assert not model.training

    x = _normalised_input((1, 3, *size), seed=seed + 1000)
    with torch.no_grad():
        got = model(x)
        want = official_forward(sd, x)

    assert isinstance(got, Tensor)
    assert want.shape == (1, classes, *size)
    assert got.shape == want.shape
    assert got.dtype == torch.float32
    assert torch.isfinite(want).all()

    scale = want.abs().max().item()
    assert scale > 0.05, f"reference logits are too small ({scale:.3g}) for a meaningful comparison"
    spatial = want.std(dim=(2, 3)).max().item()
    assert spatial > 1e-3, "reference logits are (nearly) constant across pixels"

    rel = (got - want).abs().max().item() / scale
    print(f"{key_file} {tuple(x.shape)}: max|b|={scale:.4g} max|a-b|/max|b|={rel:.3g}")
    assert rel < REL_TOL, f"converted model differs from the official reference: relative error {rel:.3g}"
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
