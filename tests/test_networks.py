"""DeepLab v3+, U-Net and PSPNet + skip decoder beside PSPNet: the config key, the modules against independent
computations and the papers' facts, and every product path (train, eval, predict, Segmenter, info, ONNX export,
exact resume, DDP) for each architecture, on tiny widths."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from rounding import network_rtol
from torch import nn
from train_helpers import (
    assert_equal_tensors,
    checkpoints,
    make_folder_dataset,
    run,
    tiny_config,
    torchrun_command,
    train_records,
    weights,
    write_config,
)

import pspnet
from pspnet.cli import main
from pspnet.engine.config import load_train_config
from pspnet.engine.train import train
from pspnet.errors import ConfigError
from pspnet.export import export_model
from pspnet.introspect import summarize
from pspnet.models.aspp import ASPP, aspp_rates
from pspnet.models.build import MODELS, NETWORKS, build_model
from pspnet.models.card import ModelCard
from pspnet.models.config import ModelConfig
from pspnet.models.decoders import SkipDecoder
from pspnet.models.resnet import output_size
from pspnet.segmenter import Segmenter
from pspnet.weights import make_card

pytestmark = pytest.mark.usefixtures("one_thread")

# The non-default networks as config fields; tiny widths come from TINY / tiny() below.
VARIANTS: dict[str, dict] = {
    "deeplabv3plus": {"architecture": "deeplabv3plus"},
    "unet": {"architecture": "unet"},
    "pspnet+skip": {"architecture": "pspnet", "skip_decoder": True},
}
CLASSES = {"deeplabv3plus": "DeepLabV3Plus", "unet": "UNet", "pspnet+skip": "PSPNet"}


def tiny(variant: str, num_classes: int = 5, **extra) -> pspnet.SegmentationNetwork:
    """A ResNet-18 network of ``variant`` with 32-channel heads (U-Net: 32-16-8-4-2 is too thin; it gets 32 too,
    the smallest width its five halving blocks allow is 16)."""
    fields = {"depth": 18, "head_channels": 32, "aux_channels": 16, **VARIANTS[variant], **extra}
    return build_model(ModelConfig(num_classes=num_classes, **fields))


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """BatchNorm statistics and affine terms far from their initial values, so eval-mode BN does something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(0.4 * torch.rand(n, generator=generator) - 0.2)


# -- the config key --------------------------------------------------------------------------------------------


def test_each_architecture_gets_its_papers_widths_and_stride_when_they_are_not_given():
    assert (ModelConfig().head_channels, ModelConfig().output_stride) == (512, 8)  # the official PSPNet, unchanged
    assert (ModelConfig(architecture="deeplabv3plus").head_channels, ModelConfig().output_stride) == (256, 8)
    unet = ModelConfig(architecture="unet")
    assert (unet.head_channels, unet.output_stride) == (256, 32)
    for name, cls in NETWORKS.items():
        config = ModelConfig(num_classes=3, architecture=name, depth=18)
        with torch.device("meta"):
            model = build_model(config)
        assert type(model) is cls and model.config == config


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"architecture": "segformer"}, "architecture must be one of ['deeplabv3plus', 'pspnet', 'unet']"),
        ({"architecture": "unet", "output_stride": 8}, "output_stride must be 32 for unet (U-Net has no dilation)"),
        ({"architecture": "deeplabv3plus", "output_stride": 32}, "output_stride must be 8 or 16 for deeplabv3plus"),
        ({"architecture": "deeplabv3plus", "bins": (1, 2)}, "bins is a PSPNet field; deeplabv3plus takes no bins"),
        ({"architecture": "unet", "ppm": False}, "ppm is a PSPNet field; unet takes no ppm"),
        ({"architecture": "unet", "skip_decoder": True}, "skip_decoder is a PSPNet field"),
        ({"architecture": "unet", "head_channels": 8}, "head_channels must be at least 16 for unet"),
        ({"architecture": "unet", "contract_dilation": True}, "contract_dilation applies to dilated backbones"),
    ],
)
def test_fields_an_architecture_cannot_take_are_refused_by_name(fields, message):
    with pytest.raises(ConfigError) as caught:
        build_model(ModelConfig(num_classes=3, depth=18, **fields))
    assert message in str(caught.value)


def test_a_training_config_names_the_architecture_and_a_bad_one_is_named(tmp_path):
    root = tmp_path / "data"
    config = load_train_config(
        None, ["dataset=folder", f"root={root}", "iterations=1", "architecture=unet", "depth=18"]
    )
    assert config.model.architecture == "unet" and config.model.output_stride == 32
    assert config.to_dict()["architecture"] == "unet"
    with pytest.raises(ConfigError, match="architecture must be one of"):
        load_train_config(None, ["dataset=folder", f"root={root}", "iterations=1", "architecture=UNet"])
    with pytest.raises(ConfigError, match="output_stride must be 32 for unet"):
        load_train_config(
            None, ["dataset=folder", f"root={root}", "iterations=1", "architecture=unet", "output_stride=16"]
        )


def test_model_files_record_the_architecture_and_files_from_before_it_load_as_pspnet(tmp_path):
    for variant in VARIANTS:
        model = tiny(variant, 4)
        _randomise_batchnorm(model)
        path = pspnet.save_model(model, tmp_path / f"{variant}.safetensors")
        loaded = pspnet.load_model(path)
        assert type(loaded).__name__ == CLASSES[variant] and loaded.config == model.config
        assert loaded.meta["model"]["architecture"] == model.config.architecture
        assert_equal_tensors(dict(loaded.state_dict()), dict(model.state_dict()))
    old = make_card(ModelConfig(num_classes=4, depth=18)).to_dict()
    for key in ("architecture", "skip_decoder"):  # the fields a model file written before them lacks
        del old["model"][key]
    assert ModelCard.from_dict(old, "old.safetensors").config == ModelConfig(num_classes=4, depth=18)


# -- the modules against independent computations -----------------------------------------------------------------


def _conv_bn_relu64(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv + eval-mode BN + ReLU (a conv_bn_relu Sequential or a PooledBranch) from their definitions, in float64."""
    conv, bn = (block[0], block[1]) if isinstance(block, nn.Sequential) else (block.conv, block.bn)
    y = F.conv2d(x, conv.weight.double(), None, padding=conv.padding, dilation=conv.dilation)
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    y = (y - bn.running_mean.double().view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + bn.bias.double().view(1, -1, 1, 1)
    return y.clamp_min(0)


def test_aspp_is_its_five_branches_concatenated_and_projected():
    torch.manual_seed(0)
    aspp = ASPP(6, channels=4, rates=(2, 3, 5))
    _randomise_batchnorm(aspp)
    aspp.eval()
    x = torch.randn(2, 6, 11, 13, dtype=torch.float64)
    branches = [_conv_bn_relu64(block, x) for block in aspp.branches]
    pooled = _conv_bn_relu64(aspp.image_pool, x.mean(dim=(2, 3), keepdim=True))  # one value per image and channel
    branches.append(pooled * torch.ones(1, 1, 11, 13, dtype=torch.float64))
    expected = _conv_bn_relu64(aspp.project, torch.cat(branches, dim=1))
    got = copy.deepcopy(aspp).double()(x)
    assert got.shape == (2, 4, 11, 13)
    assert (got - expected).abs().max() <= network_rtol(aspp, pixels=x[0, 0].numel()) * expected.abs().max()
    assert [block[0].dilation for block in aspp.branches] == [(1, 1), (2, 2), (3, 3), (5, 5)]


def test_deeplab_has_the_papers_rates_widths_and_decoder():
    assert aspp_rates(16) == (6, 12, 18) and aspp_rates(8) == (12, 24, 36)
    with torch.device("meta"):
        model = MODELS["deeplabv3plus50"](num_classes=19)
        model16 = MODELS["deeplabv3plus50"](num_classes=19, output_stride=16)
    head = model.decode_head
    assert [b[0].dilation[0] for b in head.aspp.branches] == [1, 12, 24, 36]
    assert [b[0].dilation[0] for b in model16.decode_head.aspp.branches] == [1, 6, 12, 18]
    assert head.aspp.project[0].in_channels == 5 * 256 and head.aspp.project[0].out_channels == 256
    # layer1 of ResNet-50 (256 channels) reduced to 48; 256 + 48 = 304 into two 3x3 convs of 256
    assert (head.decoder.reduce[0].in_channels, head.decoder.reduce[0].out_channels) == (256, 48)
    assert [(b[0].in_channels, b[0].out_channels, b[0].kernel_size) for b in head.decoder.fuse] == [
        (304, 256, (3, 3)),
        (256, 256, (3, 3)),
    ]


def test_the_skip_decoder_sees_layer1_through_a_5x5_window():
    """Two 3x3 convs after 1x1 ones: an output pixel of the stride-4 decoder depends on the low-level features
    within 2 pixels of it, and on no others (gradient of one output pixel, float64, eval mode)."""
    torch.manual_seed(0)
    decoder = SkipDecoder(8, 6, 3, channels=4).double().eval()
    high = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    low = torch.randn(1, 6, 17, 19, dtype=torch.float64, requires_grad=True)
    decoder(high, low)[0, :, 8, 9].sum().backward()
    reached = low.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = torch.nonzero(reached, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 10, 7, 11)
    assert reached[6:11, 7:12].sum() > 0.5 * 25  # most of the window (ReLUs may zero a few)


def test_unet_has_no_dilation_and_halves_its_decoder_blocks():
    with torch.device("meta"):
        model = MODELS["unet50"](num_classes=11)
    assert all(m.dilation == (1, 1) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert [block[1][0].out_channels for block in model.decode_head.blocks] == [256, 128, 64, 32, 16]
    # block i concatenates the upsampled features with the skip of the stage it returns to (layer3 .. the stem)
    assert [block[0][0].in_channels for block in model.decode_head.blocks] == [
        2048 + 1024,
        256 + 512,
        128 + 256,
        64 + 128,
        32,
    ]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_at_odd_sizes_and_the_logits_the_loss_gets(variant):
    torch.manual_seed(0)
    model = tiny(variant).double()
    x = torch.randn(2, 3, 67, 91, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        logits, small = model(x), model(x, upsample=False)
    assert logits.shape == (2, 5, 67, 91)
    head_reduction = {"deeplabv3plus": 4, "unet": 1, "pspnet+skip": 4}[variant]
    assert small.shape[-2:] == (output_size(67, head_reduction), output_size(91, head_reduction))
    # upsample=False is the same computation without the final bilinear upsampling
    expected = F.interpolate(small, size=(67, 91), mode="bilinear", align_corners=True)
    assert torch.equal(logits, expected)
    model.train()
    main, aux = model(x)
    assert main.shape == aux.shape == (2, 5, 67, 91)
    aux_reduction = 32 // 2 if variant == "unet" else 16 // 2  # layer3: H/16 at output stride 32, H/8 at 8
    assert model(x, upsample=False)[1].shape[-2:] == (output_size(67, aux_reduction), output_size(91, aux_reduction))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_parameter_learns_from_the_loss(variant):
    """No parameter without a gradient (DistributedDataParallel would refuse such a model)."""
    torch.manual_seed(0)
    model = tiny(variant).train()
    main, aux = model(torch.randn(2, 3, 48, 40))
    (main.square().mean() + aux.square().mean()).backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_a_training_batch_of_one_image_uses_the_image_poolings_running_statistics():
    model = tiny("deeplabv3plus", 3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="ASPP image pooling: a training batch of one image"):
        main, aux = model(torch.randn(1, 3, 45, 45))
    (main.square().mean() + aux.square().mean()).backward()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "decode_head.aspp.image_pool.bn.running_mean" not in changed  # read, not updated
    assert "decode_head.aspp.branches.0.1.running_mean" in changed  # the other branches see 45 x 45 / 8^2 pixels
    assert model.decode_head.aspp.image_pool.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_folding_batchnorm_keeps_the_logits(variant):
    torch.manual_seed(0)
    model = tiny(variant).double()
    _randomise_batchnorm(model)
    model.eval()
    x = torch.randn(1, 3, 53, 70, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        folded = copy.deepcopy(model).fold_batchnorm()
        got = folded(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert (got - expected).abs().max() <= 2 * network_rtol(model, pixels=53 * 70) * expected.abs().max()
    with pytest.raises(RuntimeError, match="folded for inference"):
        folded.train()


@pytest.mark.parametrize("name", ["deeplabv3plus18", "unet18"])
def test_info_counts_what_the_convolutions_compute(name, capsys):
    """FLOPs from torch's counter equal 2 x multiply-adds of every convolution, counted here from each one's
    output shape; the command prints the architecture and that total."""
    with torch.device("meta"):
        model = MODELS[name](num_classes=11)
    counted = []

    def count(module, _inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        counted.append(2 * k * output.numel())

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(count)
    summary = summarize(model, 72, 96)
    assert summary.flops == sum(counted) > 0
    assert main(["info", "--model", name, "--classes", "11", "--size", "72", "96"]) == 0
    out = capsys.readouterr().out
    title = {"deeplabv3plus18": "DeepLab v3+ on ResNet-18", "unet18": "U-Net on ResNet-18"}[name]
    assert out.startswith(f"{name}: {title}")
    totals = [line.split() for line in out.splitlines() if line.split()[:1] == ["total"] and "GFLOP" in line]
    assert totals and totals[-1][1] == f"{summary.flops / 1e9:.2f}"
    assert main(["info", "--model", "unet18", "--output-stride", "8"]) == 1
    assert "--output-stride must be 32 for unet" in capsys.readouterr().err


# -- every product path, for each architecture ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root) -> dict[str, Path]:
    """``pspnet train`` of 2 iterations per architecture, from a YAML config, with a validation."""
    out = {}
    for variant, fields in VARIANTS.items():
        folder = tmp_path_factory.mktemp(variant.replace("+", "_"))
        config = write_config(folder / "run.yaml", data_root, iterations=2, checkpoint_every=2, **fields)
        assert main(["train", str(config), "--out", str(folder / "run"), "--quiet"]) == 0
        out[variant] = folder / "run"
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_train_eval_predict_and_segmenter(variant, runs, data_root, tmp_path, capsys):
    run_dir = runs[variant]
    model = pspnet.load_model(run_dir)
    assert type(model).__name__ == CLASSES[variant]
    assert model.config.architecture == VARIANTS[variant]["architecture"]
    assert model.config.skip_decoder == (variant == "pspnet+skip")
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "val_mIoU" in r] == [2]
    assert all(0 <= r["val_mBIoU"] <= 1 for r in records if "val_mIoU" in r)  # boundary IoU logged beside mIoU

    capsys.readouterr()
    args = ["--dataset", "folder", "--root", str(data_root), "--workers", "0", "--out", str(tmp_path / "eval")]
    assert main(["eval", str(run_dir), *args]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["images"] == 2 and 0 <= metrics["mIoU"] <= 1

    image = min((data_root / "images/val").glob("*.png"))
    assert main(["predict", str(run_dir), str(image), "--out", str(tmp_path / "pred"), "--no-progress"]) == 0
    written = np.asarray(Image.open(tmp_path / "pred" / image.name))
    labels = Segmenter.from_checkpoint(run_dir, device="cpu").predict(image)  # precision auto, as predict
    assert written.shape == labels.shape == (48, 64)
    assert np.array_equal(written, labels)
    segmenter = Segmenter.from_checkpoint(run_dir, device="cpu", precision="fp32")
    assert type(segmenter.model).__name__ == CLASSES[variant]
    assert np.array_equal(segmenter.predict(image), labels)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_onnx_export_with_dynamic_sizes_and_onnx_runtime_labels(variant, tmp_path):
    torch.manual_seed(1)
    model = tiny(variant, 11).eval()
    _randomise_batchnorm(model, seed=2)
    model.card = make_card(model.config, dataset="camvid", crop_size=(64, 64), base_size=96)
    pspnet.save_model(model, tmp_path / "model.safetensors", card=model.card)
    report = export_model(model, tmp_path / "model.onnx", input_kind="normalized", output_kind="logits")
    # the export's own check ran ONNX Runtime against eager PyTorch at sizes no stride divides, and passed
    assert {(c.height, c.width) for c in report.check.sizes} >= {(97, 75), (121, 67)}
    assert (tmp_path / "model.onnx").is_file()
    image = np.random.default_rng(0).integers(0, 256, (90, 117, 3), dtype=np.uint8)
    torch_labels = Segmenter.from_checkpoint(tmp_path / "model.safetensors", device="cpu", mode="whole")
    onnx_labels = Segmenter.from_checkpoint(tmp_path / "model.onnx", mode="whole")
    same = torch_labels.predict(image) == onnx_labels.predict(image)
    assert same.mean() >= 0.9999


# -- exact resume and DDP -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_resumed_run_is_the_uninterrupted_one_bit_for_bit(variant, data_root, tmp_path):
    """4 steps straight, against 2 steps, then a resume from ckpt_2 for the last 2 (as after a kill)."""
    config = tiny_config(
        data_root, iterations=4, checkpoint_every=2, deterministic=True, val_split=None, **VARIANTS[variant]
    )
    train(config, tmp_path / "ref", progress=False)
    shutil.copytree(tmp_path / "ref", tmp_path / "run")
    shutil.rmtree(tmp_path / "run/ckpt_4")
    log = tmp_path / "run/log.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines() if json.loads(line)["iteration"] <= 2))
    train(config, tmp_path / "run", resume=tmp_path / "run", progress=False)
    assert checkpoints(tmp_path / "run") == checkpoints(tmp_path / "ref") == [2, 4]
    for name in ("model.safetensors", "state.safetensors"):
        assert_equal_tensors(weights(tmp_path / f"run/ckpt_4/{name}"), weights(tmp_path / f"ref/ckpt_4/{name}"))
    assert [r["loss"] for r in train_records(tmp_path / "run")] == [r["loss"] for r in train_records(tmp_path / "ref")]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ddp_two_processes_equal_one_process_accumulating(variant, data_root, tmp_path):
    """As tests/test_train.py's DDP test (which says why the two are equal bit for bit), for each architecture."""
    common = {
        "iterations": 2,
        "checkpoint_every": 2,
        "freeze_bn": True,
        "dropout": 0.0,
        "val_split": None,
        **VARIANTS[variant],
    }
    config = write_config(tmp_path / "ddp.yaml", data_root, accumulate=1, **common)
    result = run(torchrun_command(2, "train", str(config), "--out", str(tmp_path / "ddp"), "--quiet"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = train(tiny_config(data_root, accumulate=2, **common), tmp_path / "single", progress=False)
    assert_equal_tensors(weights(tmp_path / "ddp/ckpt_2/model.safetensors"), weights(reference / "model.safetensors"))
    assert [r["loss"] for r in train_records(tmp_path / "ddp")] == [
        r["loss"] for r in train_records(tmp_path / "single")
    ]


@pytest.mark.parametrize(
    "overrides, architecture",
    [
        ([], "pspnet"),
        (["ppm=false"], "pspnet"),
        (["skip_decoder=true"], "pspnet"),
        (["architecture=deeplabv3plus"], "deeplabv3plus"),
        (["architecture=unet"], "unet"),
    ],
)
def test_the_gpu_comparison_config_takes_each_architecture_as_its_comment_says(overrides, architecture):
    path = Path(__file__).resolve().parents[1] / "configs" / "camvid_compare_r50_gpu.yaml"
    assert all(f"--set {o}" in path.read_text() for o in overrides)
    config = load_train_config(str(path), overrides)
    assert config.model.architecture == architecture and config.model.depth == 50
    with torch.device("meta"):
        model = build_model(config.model_config(11))
    assert type(model) is NETWORKS[architecture]
