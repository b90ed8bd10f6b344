import collections

import pytest
import torch
from conftest import tiny_pspnet
from layouts import to_imagenet, to_mmseg, to_official

import pspnet
from pspnet.data.classes import DATASETS
from pspnet.errors import ConversionError
from pspnet.models.resnet import ResNet
from pspnet.weights.convert import convert
from pspnet.weights.model_file import load_backbone_weights, read_weights_file


def _official_model(num_classes=11):
    return tiny_pspnet(num_classes)  # deep stem, uncontracted, align_corners=True: the official choices


def _assert_same_weights(model, path):
    loaded = pspnet.load_model(path)
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key
    return loaded


@pytest.mark.parametrize("wrapping", ["bare", "module-prefix", "state_dict+optimizer"])
def test_official_checkpoints_in_every_wrapping(tmp_path, wrapping):
    model = _official_model()
    sd = to_official(model.state_dict())
    if wrapping == "module-prefix":
        sd = {f"module.{k}": v for k, v in sd.items()}
    if wrapping == "state_dict+optimizer":
        sd = {
            "epoch": 50,
            "state_dict": collections.OrderedDict((f"module.{k}", v) for k, v in sd.items()),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        }
    torch.save(sd, tmp_path / "train_epoch_50.pth")
    report = convert("official", tmp_path / "train_epoch_50.pth", tmp_path / "out.safetensors")
    assert report.kind == "model" and report.config["num_classes"] == 11
    assert report.dataset == "camvid" and report.dataset_inferred
    loaded = _assert_same_weights(model, tmp_path / "out.safetensors")
    assert loaded.config == model.config
    assert loaded.meta["classes"] == list(DATASETS["camvid"].classes)
    assert loaded.meta["source"] == {"from": "official", "file": "train_epoch_50.pth"}


def test_mmseg_checkpoint(tmp_path):
    model = tiny_pspnet(19, depth=50, stem="deep-v1c", contract_dilation=True, align_corners=False)
    torch.save(
        {"meta": {"CLASSES": ["road"] * 19, "mmseg_version": "1.2.2"}, "state_dict": to_mmseg(model.state_dict())},
        tmp_path / "mmseg.pth",
    )
    report = convert("mmseg", tmp_path / "mmseg.pth", tmp_path / "out.safetensors", dataset="cityscapes")
    assert not report.dataset_inferred
    loaded = _assert_same_weights(model, tmp_path / "out.safetensors")
    assert loaded.config.stem == "deep-v1c" and loaded.config.contract_dilation and not loaded.config.align_corners
    assert loaded.meta["inference"] == {"crop_size": [713, 713], "base_size": 2048}
    model.eval()
    x = torch.randn(1, 3, 41, 57)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_missing_num_batches_tracked_is_fine(tmp_path):
    model = _official_model()
    sd = {k: v for k, v in to_official(model.state_dict()).items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "src.pth")
    convert("official", tmp_path / "src.pth", tmp_path / "out.safetensors")
    tensors, _ = read_weights_file(tmp_path / "out.safetensors")
    assert tensors["decode_head.bn.num_batches_tracked"].item() == 0


def test_unknown_and_missing_keys_are_named(tmp_path):
    sd = to_official(_official_model().state_dict())
    sd["module.extra.weight"] = torch.zeros(3)
    del sd["layer2.1.bn2.running_var"]
    torch.save({"state_dict": sd}, tmp_path / "src.pth")
    with pytest.raises(ConversionError) as error:
        convert("official", tmp_path / "src.pth", tmp_path / "out.safetensors")
    message = str(error.value)
    assert "src.pth" in message and "module.extra.weight" in message and "backbone.layer2.1.bn2.running_var" in message
    assert not (tmp_path / "out.safetensors").exists()


def test_wrong_source_layout_fails_naming_keys(tmp_path):
    torch.save(to_official(_official_model().state_dict()), tmp_path / "official.pth")
    with pytest.raises(ConversionError, match=r"as mmseg: \d+ unknown key\(s\): \['aux\.0\.weight'"):
        convert("mmseg", tmp_path / "official.pth", tmp_path / "out.safetensors")


def test_shape_mismatch_is_named(tmp_path):
    sd = to_official(_official_model().state_dict())
    sd["cls.1.weight"] = torch.ones(65)
    torch.save(sd, tmp_path / "src.pth")
    with pytest.raises(ConversionError, match=r"decode_head\.bn\.weight: file \(65,\)"):
        convert("official", tmp_path / "src.pth", tmp_path / "out.safetensors")


def test_dataset_with_another_class_count_is_refused(tmp_path):
    torch.save(to_official(_official_model(11).state_dict()), tmp_path / "src.pth")
    with pytest.raises(ConversionError, match="dataset ade20k: has 150 classes.*11"):
        convert("official", tmp_path / "src.pth", tmp_path / "out.safetensors", dataset="ade20k")


def test_unknown_class_count_gets_generic_names(tmp_path):
    torch.save(to_official(_official_model(7).state_dict()), tmp_path / "src.pth")
    report = convert("official", tmp_path / "src.pth", tmp_path / "out.safetensors")
    assert report.dataset is None
    assert pspnet.load_model(tmp_path / "out.safetensors").meta["classes"][6] == "class_6"


class Payload:  # an arbitrary object: weights_only loading must refuse it
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_unsafe_pickle_is_refused_naming_the_file(tmp_path):
    sd = to_official(_official_model().state_dict())
    torch.save({"state_dict": sd, "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match=r"evil\.pth: refused to unpickle"):
        convert("official", tmp_path / "evil.pth", tmp_path / "out.safetensors")


def test_unreadable_source_is_named(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConversionError, match=r"broken\.pth"):
        convert("official", tmp_path / "broken.pth", tmp_path / "out.safetensors")
    with pytest.raises(ConversionError, match="no such file"):
        convert("official", tmp_path / "absent.pth", tmp_path / "out.safetensors")


@pytest.mark.parametrize("source, stem, depth", [("official-backbone", "deep", 50), ("torchvision", "basic", 18)])
def test_imagenet_backbones(tmp_path, source, stem, depth):
    backbone = ResNet(depth=depth, stem=stem)
    sd = to_imagenet(backbone.state_dict(), deep=stem == "deep")
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, backbone.channels[-1]), torch.zeros(1000)
    torch.save(sd, tmp_path / "imagenet.pth")
    report = convert(source, tmp_path / "imagenet.pth", tmp_path / "backbone.safetensors")
    assert report.kind == "backbone"
    assert report.skipped == ["fc.bias", "fc.weight"]
    assert report.loaded == len(sd) - 2
    assert report.config == {"depth": depth, "stem": stem}
    fresh = pspnet.PSPNet(num_classes=3, depth=depth, stem=stem, head_channels=32, aux_channels=16)
    meta = load_backbone_weights(fresh.backbone, tmp_path / "backbone.safetensors")
    assert meta["kind"] == "backbone" and meta["source"]["from"] == source
    for key, value in backbone.state_dict().items():
        assert torch.equal(fresh.backbone.state_dict()[key], value), key
    with pytest.raises(pspnet.CheckpointError, match="backbone"):
        pspnet.load_model(tmp_path / "backbone.safetensors")


def test_backbone_safetensors_source_and_missing_key(tmp_path):
    import safetensors.torch

    sd = to_imagenet(ResNet(depth=18, stem="basic").state_dict(), deep=False)
    del sd["layer3.0.downsample.0.weight"]
    safetensors.torch.save_file(sd, tmp_path / "resnet18.safetensors")
    with pytest.raises(ConversionError, match=r"missing key\(s\).*layer3\.0\.downsample\.0\.weight"):
        convert("torchvision", tmp_path / "resnet18.safetensors", tmp_path / "backbone.safetensors")


def test_timm_resnet_d_is_refused_naming_keys(tmp_path):
    sd = to_imagenet(ResNet(depth=50, stem="deep").state_dict(), deep=True)
    sd = {k.replace("conv2.", "conv1.3.") if k.startswith("conv2.") else k: v for k, v in sd.items()}  # resnet50d stem
    torch.save(sd, tmp_path / "resnet50d.pth")
    with pytest.raises(ConversionError, match=r"as torchvision: 11 unknown key\(s\): \['bn2\.bias'"):
        convert("torchvision", tmp_path / "resnet50d.pth", tmp_path / "backbone.safetensors")


def test_dataset_is_refused_for_backbones(tmp_path):
    torch.save(to_imagenet(ResNet(depth=18, stem="basic").state_dict(), deep=False), tmp_path / "r18.pth")
    with pytest.raises(ConversionError, match="dataset applies to full models"):
        convert("torchvision", tmp_path / "r18.pth", tmp_path / "b.safetensors", dataset="voc")
