import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_pspnet
from layouts import to_official

import pspnet
from pspnet.cli import main
from pspnet.introspect import summarize
from pspnet.models.build import MODELS


def _analytic_flops(model, height, width):
    """2 x multiply-adds of every convolution run as a module (from hooks on a real forward), plus, counted from the
    head's input, the pyramid pooling matmuls and the head's 3x3 conv as PyramidPoolingModule.convolve computes it:
    a conv of layer4's C channels, a 1x1 map per tap of the grids laid on one B x B grid and two interpolation
    products."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        total += 2 * output.numel() * per_output

    def head_hook(head, inputs):
        nonlocal total
        _, c, h, w = inputs[0].shape
        bins, o, k = head.ppm.bins, head.conv.out_channels, head.conv.kernel_size[0]
        b_sum, branch = sum(bins), head.ppm.branch_channels
        total += 2 * c * b_sum * h * w + 2 * c * b_sum * w * b_sum  # pooling: rows, then columns
        total += 2 * o * c * k * k * h * w  # the 3x3 conv on layer4's channels
        total += 2 * k * k * o * len(bins) * branch * b_sum * b_sum  # every tap's 1x1 map of the B x B grid
        total += 2 * k * o * b_sum * (k * b_sum) * w  # the columns' interpolation, summed over the taps
        total += 2 * o * h * (k * b_sum) * w  # the rows' interpolation, summed over the taps

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    handles.append(model.decode_head.register_forward_pre_hook(head_hook))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, height, width))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("size", [(65, 81), (50, 50)])
def test_flop_count_matches_an_analytic_count(size):
    model = tiny_pspnet(11)
    summary = summarize(model, *size)
    assert summary.flops == _analytic_flops(model, *size)
    assert summary.flops == sum(summary.flops_by_part.values())


def test_summary_on_the_meta_device():
    with torch.device("meta"):
        model = MODELS["pspnet50"](num_classes=150)
    summary = summarize(model, 473, 473)
    assert summary.parameters == 49_180_908 and summary.parameters_without_aux == 46_782_550
    shapes = {name: shape for name, shape, _ in summary.shapes}
    assert shapes["layer4"] == (1, 2048, 60, 60) and shapes["output (upsampled)"] == (1, 150, 473, 473)


def test_info_command(capsys):
    assert main(["info", "--model", "pspnet18", "--size", "65", "81", "--classes", "11", "--output-stride", "16"]) == 0
    out = capsys.readouterr().out
    assert "output stride 16" in out and "FLOPs = 2 x multiply-adds" in out
    assert re.search(r"layer4\s+\(1, 512, 5, 6\)\s+1/16", out)
    with torch.device("meta"):
        expected = sum(p.numel() for p in MODELS["pspnet18"](num_classes=11, output_stride=16).parameters())
    assert f"{expected:,}" in out


def test_help_of_every_command(capsys):
    for argv in (["--help"], ["info", "--help"], ["convert", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    out = capsys.readouterr().out
    assert "official-backbone" in out and "--dataset" in out and "--size" in out


def test_convert_command(tmp_path, capsys):
    model = tiny_pspnet(19)
    torch.save({"state_dict": to_official(model.state_dict())}, tmp_path / "src.pth")
    dst = tmp_path / "model.safetensors"
    assert main(["convert", "--from", "official", str(tmp_path / "src.pth"), str(dst), "--dataset", "cityscapes"]) == 0
    out = capsys.readouterr().out
    assert "19 classes" in out and "cityscapes" in out
    assert pspnet.load_model(dst).meta["dataset"] == "cityscapes"
    # an existing destination is kept unless --force
    assert main(["convert", "--from", "official", str(tmp_path / "src.pth"), str(dst)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["convert", "--from", "official", str(tmp_path / "src.pth"), str(dst), "--force"]) == 0
    # a failed conversion exits 1 and names the file
    assert main(["convert", "--from", "mmseg", str(tmp_path / "src.pth"), str(tmp_path / "x.safetensors")]) == 1
    assert "src.pth" in capsys.readouterr().err
    assert main(["convert", "--from", "official", str(tmp_path / "src.pth"), str(tmp_path / "x.pth")]) == 2


def test_installed_entry_point():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "pspnet"),
            "info",
            "--model",
            "pspnet18",
            "--size",
            "33",
            "33",
            "--classes",
            "3",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "GFLOP" in result.stdout
