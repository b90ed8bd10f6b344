"""Model files and training states are validated as strictly as a config.

Each broken file differs from a valid one in exactly one field (the checksum is recomputed unless the checksum is
the field under test), and each must be refused with one CheckpointError line naming the file and that field.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import tiny_pspnet

import pspnet
from pspnet.data.classes import DATASETS
from pspnet.engine.checkpoint import TrainState, load_checkpoint, rng_state, save_checkpoint
from pspnet.engine.config import load_train_config
from pspnet.errors import CheckpointError, ConfigError
from pspnet.models.card import ModelCard
from pspnet.models.pspnet import PSPNet
from pspnet.weights.model_file import (
    load_backbone_weights,
    make_card,
    model_metadata,
    save_model,
    tensors_sha256,
    write_weights_file,
)

K = 3
CLASSES = ["road", "car", "sky"]
DELETE = object()


@pytest.fixture(scope="module")
def model() -> PSPNet:
    torch.manual_seed(0)
    return tiny_pspnet(K).eval()


def _card(model: PSPNet) -> ModelCard:
    return make_card(model.config, classes=CLASSES, crop_size=(40, 56), base_size=56, source={"from": "test"})


def _meta(model: PSPNet) -> dict:
    return model_metadata(_card(model))


def _write_raw(path: Path, tensors: dict, meta: dict, **changes) -> Path:
    """A safetensors file with ``meta`` (its tensors_sha256 recomputed), then ``changes`` applied: dotted paths
    (``"model.depth"``) set to a value, or removed with DELETE. Nothing of pspnet's writing code is used."""
    meta = copy.deepcopy(meta)
    meta["tensors_sha256"] = tensors_sha256(tensors)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = meta
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    path.write_bytes(safetensors.torch.save(tensors, metadata={"pspnet": json.dumps(meta)}))
    return path


def _refused(path: Path, *fields: str) -> str:
    with pytest.raises(CheckpointError) as caught:
        pspnet.load_model(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    for field in fields:
        assert field in message, message
    return message


def test_the_valid_file_the_variants_start_from_loads(tmp_path, model):
    path = _write_raw(tmp_path / "m.safetensors", model.state_dict(), _meta(model))
    loaded = pspnet.load_model(path)
    assert loaded.config == model.config and loaded.meta["classes"] == CLASSES


# One field broken per case: (field path, value), and what the message must name.
BROKEN = {
    "depth 7": ({"model.depth": 7}, "model.depth"),
    "depth true": ({"model.depth": True}, "model.depth"),
    "depth string": ({"model.depth": "50"}, "model.depth"),
    "output_stride 3": ({"model.output_stride": 3}, "model.output_stride"),
    "stem wide": ({"model.stem": "wide"}, "model.stem"),
    "bins [0]": ({"model.bins": [0]}, "model.bins"),
    "bins [1, 2, 3]": ({"model.bins": [1, 2, 3]}, "model.bins"),
    "bins [1000]": ({"model.bins": [1000]}, "model.bins"),
    "bins empty": ({"model.bins": []}, "model.bins"),
    "num_classes 0": ({"model.num_classes": 0}, "model.num_classes"),
    "num_classes 70000": ({"model.num_classes": 70000}, "model.num_classes"),
    "num_classes missing": ({"model.num_classes": DELETE}, "model.num_classes"),
    "head_channels 0": ({"model.head_channels": 0}, "model.head_channels"),
    "aux_channels 10**6": ({"model.aux_channels": 10**6}, "model.aux_channels"),
    "dropout 2": ({"model.dropout": 2}, "model.dropout"),
    "dropout NaN": ({"model.dropout": math.nan}, "model.dropout"),
    "aux yes": ({"model.aux": "yes"}, "model.aux"),
    "align_corners 1": ({"model.align_corners": 1}, "model.align_corners"),
    "ppm null": ({"model.ppm": None}, "model.ppm"),
    "contract_dilation 0": ({"model.contract_dilation": 0}, "model.contract_dilation"),
    "model unknown key": ({"model.widen": 2}, "'widen'"),
    "model not an object": ({"model": "pspnet50"}, "metadata model"),
    "classes short": ({"classes": ["road", "car"]}, "metadata classes"),
    "classes long": ({"classes": [*CLASSES, "extra"]}, "metadata classes"),
    "classes non-string": ({"classes": [1, "car", "sky"]}, "classes[0]"),
    "classes blank": ({"classes": ["road", " ", "sky"]}, "classes[1]"),
    "classes duplicate": ({"classes": ["road", "car", "road"]}, "classes[2]"),
    "classes null": ({"classes": None}, "metadata classes"),
    "palette short": ({"palette": [[0, 0, 0], [1, 1, 1]]}, "metadata palette"),
    "palette 256": ({"palette": [[0, 0, 0], [1, 256, 1], [2, 2, 2]]}, "palette[1]"),
    "palette bool": ({"palette": [[True, 0, 0], [1, 1, 1], [2, 2, 2]]}, "palette[0]"),
    "palette two channels": ({"palette": [[0, 0], [1, 1, 1], [2, 2, 2]]}, "palette[0]"),
    "palette float": ({"palette": [[0, 0, 0], [1, 1, 1], [2, 2, 2.5]]}, "palette[2]"),
    "ignore_index a class id": ({"ignore_index": 1}, "ignore_index"),
    "ignore_index 70000": ({"ignore_index": 70000}, "ignore_index"),
    "ignore_index string": ({"ignore_index": "255"}, "ignore_index"),
    "std zero": ({"normalization.std": [58.4, 0, 57.4]}, "normalization.std[1]"),
    "std negative": ({"normalization.std": [-1.0, 57.1, 57.4]}, "normalization.std[0]"),
    "std NaN": ({"normalization.std": [58.4, 57.1, math.nan]}, "normalization.std[2]"),
    "std infinite": ({"normalization.std": [58.4, math.inf, 57.4]}, "normalization.std[1]"),
    "mean of 2 values": ({"normalization.mean": [123.7, 116.3]}, "normalization.mean"),
    "mean 300": ({"normalization.mean": [300.0, 116.3, 103.5]}, "normalization.mean[0]"),
    "mean string": ({"normalization.mean": [123.7, "116", 103.5]}, "normalization.mean[1]"),
    "normalization without std": ({"normalization.std": DELETE}, "normalization"),
    "crop_size [0, 5]": ({"inference.crop_size": [0, 5]}, "inference.crop_size[0]"),
    "crop_size huge": ({"inference.crop_size": [10**6, 10**6]}, "inference.crop_size[0]"),
    "crop_size one side": ({"inference.crop_size": [473]}, "inference.crop_size"),
    "crop_size float": ({"inference.crop_size": [473, 473.5]}, "inference.crop_size[1]"),
    "base_size 0": ({"inference.base_size": 0}, "inference.base_size"),
    "base_size 10**9": ({"inference.base_size": 10**9}, "inference.base_size"),
    "base_size null": ({"inference.base_size": None}, "inference.base_size"),
    "inference unknown key": ({"inference.scales": [1.0]}, "'scales'"),
    "format_version true": ({"format_version": True}, "format_version"),
    "format_version 0": ({"format_version": 0}, "format_version"),
    "format_version 2": ({"format_version": 2}, "format_version 2 is newer"),
    "format_version string": ({"format_version": "1"}, "format_version"),
    "format_version missing": ({"format_version": DELETE}, "format_version"),
    "checksum missing": ({"tensors_sha256": DELETE}, "tensors_sha256"),
    "checksum malformed": ({"tensors_sha256": "abc123"}, "tensors_sha256"),
    "checksum upper case": ({"tensors_sha256": "A" * 64}, "tensors_sha256"),
    "kind wrong": ({"kind": "weights"}, "metadata kind"),
    "kind missing": ({"kind": DELETE}, "metadata kind"),
    "dataset number": ({"dataset": 5}, "metadata dataset"),
    "dataset empty": ({"dataset": ""}, "metadata dataset"),
    "pspnet_version null": ({"pspnet_version": None}, "pspnet_version"),
    "source a string": ({"source": "official"}, "metadata source"),
    "unknown top-level key": ({"note": "hello"}, "'note'"),
    "missing top-level key": ({"palette": DELETE}, "missing: palette"),
}


@pytest.mark.parametrize("changes, field", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_metadata_field_is_refused_naming_file_and_field(tmp_path, model, changes, field):
    path = _write_raw(tmp_path / "m.safetensors", model.state_dict(), _meta(model), **changes)
    _refused(path, field)


def test_missing_checksum_says_what_the_file_is_and_how_to_fix_it(tmp_path, model):
    path = _write_raw(tmp_path / "m.safetensors", model.state_dict(), _meta(model), tensors_sha256=DELETE)
    _refused(path, "no tensors checksum", "not written by pspnet", "pspnet.save_model")
    backbone = _write_raw(
        tmp_path / "b.safetensors",
        model.backbone.state_dict(),
        {"kind": "backbone", "format_version": 1, "backbone": {"depth": 18, "stem": "deep"}},
        tensors_sha256=DELETE,
    )
    with pytest.raises(CheckpointError, match="no tensors checksum"):
        load_backbone_weights(tiny_pspnet(K).backbone, backbone)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_known_data_sets_metadata_is_valid(tmp_path, name):
    net = tiny_pspnet(DATASETS[name].num_classes)
    path = save_model(net, tmp_path / "m.safetensors", card=make_card(net.config, dataset=name))
    assert pspnet.load_model(path).meta["dataset"] == name


def test_more_than_255_classes_get_an_ignore_index_that_is_no_class_id(tmp_path):
    net = tiny_pspnet(300)
    meta = pspnet.load_model(save_model(net, tmp_path / "m.safetensors")).meta
    assert meta["ignore_index"] == 65535 and len(meta["classes"]) == 300


def test_a_folder_data_sets_own_name_is_a_valid_dataset(tmp_path, model):
    path = _write_raw(tmp_path / "m.safetensors", model.state_dict(), _meta(model), dataset="potholes")
    assert pspnet.load_model(path).meta["dataset"] == "potholes"


# -- tensors: dtypes and finiteness --------------------------------------------------------------------------------


def _as(tensors: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_as_float32_and_compute_as_the_rounded_weights(tmp_path, model, dtype):
    stored = _as(model.state_dict(), dtype)
    path = _write_raw(tmp_path / "m.safetensors", stored, _meta(model))
    loaded = pspnet.load_model(path)
    assert {t.dtype for t in loaded.state_dict().values() if t.is_floating_point()} == {torch.float32}
    rounded = _as(stored, torch.float32)  # what the file holds, in the model's dtype
    assert any(not torch.equal(rounded[k], v) for k, v in model.state_dict().items() if v.is_floating_point())
    reference = tiny_pspnet(K)
    reference.load_state_dict(rounded)
    reference.eval()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, rounded[key]), key
    x = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))  # the same float32 network, the same computation


@pytest.mark.parametrize("dtype", [torch.float64, torch.int8, torch.uint8, torch.int32])
def test_weights_of_other_dtypes_are_refused_naming_key_and_dtype(tmp_path, model, dtype):
    tensors = dict(model.state_dict())
    tensors["decode_head.classifier.weight"] = tensors["decode_head.classifier.weight"].to(dtype)
    path = _write_raw(tmp_path / "m.safetensors", tensors, _meta(model))
    _refused(path, "'decode_head.classifier.weight'", str(dtype).removeprefix("torch."))


@pytest.mark.parametrize("dtype", [torch.int32, torch.float32])
def test_integer_buffers_must_be_int64(tmp_path, model, dtype):
    tensors = dict(model.state_dict())
    key = "backbone.stem.1.num_batches_tracked"
    tensors[key] = tensors[key].to(dtype)
    path = _write_raw(tmp_path / "m.safetensors", tensors, _meta(model))
    _refused(path, f"'{key}'", str(dtype).removeprefix("torch."), "int64")


def test_non_finite_weights_are_refused_on_load_naming_the_first_key_and_the_count(tmp_path, model):
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    tensors["decode_head.classifier.bias"][:2] = math.nan
    tensors["decode_head.classifier.bias"][2] = -math.inf
    tensors["decode_head.conv.weight"][0, 0, 0, 0] = math.inf
    path = _write_raw(tmp_path / "m.safetensors", tensors, _meta(model))
    _refused(path, "'decode_head.classifier.bias' holds 3 non-finite", "1 more tensor")


def test_a_non_finite_batchnorm_statistic_is_refused(tmp_path, model):
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    tensors["backbone.layer4.1.bn2.running_var"][5] = math.inf
    path = _write_raw(tmp_path / "m.safetensors", tensors, _meta(model))
    _refused(path, "'backbone.layer4.1.bn2.running_var' holds 1 non-finite")


def test_non_finite_weights_are_never_written_and_the_old_file_stays(tmp_path, model):
    path = save_model(model, tmp_path / "m.safetensors", card=_card(model))
    good = path.read_bytes()
    broken = tiny_pspnet(K)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.decode_head.conv.weight[0, 0, 0, 0] = math.nan
    with pytest.raises(CheckpointError, match=r"not written.*'decode_head\.conv\.weight' holds 1 non-finite"):
        write_weights_file(path, broken.state_dict(), _meta(model))
    with pytest.raises(CheckpointError, match=r"'decode_head\.conv\.weight' holds 1 non-finite.*not written") as caught:
        save_model(broken, path, card=_card(model))
    assert str(caught.value).startswith(f"{path}: ")
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary file left


def test_save_refuses_what_load_would_refuse(tmp_path, model):
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match=r"metadata classes must be .*not written"):
        save_model(model, path, card=dataclasses.replace(_card(model), classes=("road",)))
    double = tiny_pspnet(K).double()
    with pytest.raises(CheckpointError, match=r"is float64.*not written"):
        save_model(double, path)
    assert not path.exists()
    half = tiny_pspnet(K).half()  # float16 is a dtype a model file may hold
    assert pspnet.load_model(save_model(half, path)).decode_head.conv.weight.dtype == torch.float32


def test_backbone_files_get_the_same_dtype_and_finite_checks(tmp_path, model):
    meta = {"kind": "backbone", "format_version": 1, "backbone": {"depth": 18, "stem": "deep"}}
    state = model.backbone.state_dict()
    half = write_weights_file(tmp_path / "half.safetensors", _as(state, torch.float16), meta)
    fresh = tiny_pspnet(K)
    load_backbone_weights(fresh.backbone, half)
    assert fresh.backbone.stem[0].weight.dtype == torch.float32
    assert torch.equal(fresh.backbone.stem[0].weight, state["stem.0.weight"].half().float())

    double = write_weights_file(tmp_path / "double.safetensors", _as(state, torch.float64), meta)
    with pytest.raises(CheckpointError, match=r"double\.safetensors: tensor '.*' is float64"):
        load_backbone_weights(tiny_pspnet(K).backbone, double)
    bad = {k: v.clone() for k, v in state.items()}
    bad["layer1.0.conv1.weight"][0] = math.nan
    nan = _write_raw(tmp_path / "nan.safetensors", bad, meta)
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: tensor 'layer1\.0\.conv1\.weight' holds \d+ non-f"):
        load_backbone_weights(tiny_pspnet(K).backbone, nan)
    shapes = _write_raw(tmp_path / "shape.safetensors", {**state, "fc.weight": torch.zeros(2)}, meta)
    with pytest.raises(CheckpointError, match=r"shape\.safetensors: weights do not fit.*fc\.weight"):
        load_backbone_weights(tiny_pspnet(K).backbone, shapes)


# -- model-config rules are written once -------------------------------------------------------------------------


def test_pspnet_itself_names_a_bad_field_before_building_anything():
    with pytest.raises(ConfigError, match=r"PSPNet: depth must be one of \[18, 34, 50, 101, 152\], got 7"):
        PSPNet(num_classes=2, depth=7)
    with pytest.raises(ConfigError, match="PSPNet: num_classes must be"):
        PSPNet(num_classes=0)
    with pytest.raises(ConfigError, match="PSPNet: bins must be"):
        PSPNet(num_classes=2, depth=18, bins=(1, 2, 3))


@pytest.mark.parametrize(
    "override, message",
    [
        ("bins=[1, 2, 3]", "bins must be a list of 1, 2, 4 or 8 integers"),
        ("head_channels=0", "head_channels must be an integer in [1, 8192]"),
        ("dropout=1.5", "dropout must be a number in [0, 1]"),
        ("stem=wide", "stem must be one of"),
    ],
)
def test_training_configs_use_the_same_model_rules(override, message):
    with pytest.raises(ConfigError) as caught:
        load_train_config(None, ["dataset=camvid", "root=x", "iterations=2", override])
    assert str(caught.value).startswith("overrides: ") and message in str(caught.value)


# -- training state --------------------------------------------------------------------------------------------


def _optimizer(net: PSPNet) -> torch.optim.SGD:
    return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model) -> Path:
    """A checkpoint after one SGD step (so every parameter has a momentum buffer) with class weights."""
    net = tiny_pspnet(K)
    net.load_state_dict(model.state_dict())
    net.train()
    optimizer = _optimizer(net)
    logits, aux = net(torch.randn(2, 3, 32, 32))
    (logits.square().mean() + aux.square().mean()).backward()
    optimizer.step()
    state = TrainState(
        iteration=1, epoch=0, step_in_epoch=1, best_miou=0.25, best_iteration=1, class_weights=[1.0, 2.0, 0.5]
    )
    return save_checkpoint(
        tmp_path_factory.mktemp("run"),
        model=net,
        card=_card(net),
        optimizer=optimizer,
        state=state,
        config={"lr": 0.01},
        keep_last=2,
        rng_states=[rng_state()],
    )


def _load(checkpoint: Path) -> tuple[PSPNet, TrainState]:
    net = tiny_pspnet(K)
    state, _ = load_checkpoint(checkpoint, model=net, optimizer=_optimizer(net), device=torch.device("cpu"))
    return net, state


def test_a_valid_checkpoint_loads(checkpoint):
    _, state = _load(checkpoint)
    assert (state.iteration, state.best_miou, state.class_weights) == (1, 0.25, [1.0, 2.0, 0.5])


@pytest.fixture(scope="module")
def target(model):
    """A fresh model and optimiser that broken checkpoints are loaded into, and a copy of its weights: a refused
    load must leave both untouched."""
    net = tiny_pspnet(K)
    return net, _optimizer(net), {k: v.clone() for k, v in net.state_dict().items()}


def _load_into(target, checkpoint: Path) -> None:
    net, optimizer, before = target
    try:
        load_checkpoint(checkpoint, model=net, optimizer=optimizer, device=torch.device("cpu"))
    finally:  # nothing restored before everything was checked
        assert not optimizer.state
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def _broken_state(
    tmp_path: Path, checkpoint: Path, tensors=None, *, broken: str = "state.safetensors", **changes
) -> Path:
    """A copy of ``checkpoint`` whose file ``broken`` has ``changes`` in its metadata and ``tensors(stored)`` as its
    tensors (the other file linked as it is)."""
    copy_dir = tmp_path / checkpoint.name
    copy_dir.mkdir()
    other = "model.safetensors" if broken == "state.safetensors" else "state.safetensors"
    os.link(checkpoint / other, copy_dir / other)
    with safetensors.safe_open(checkpoint / broken, "pt") as handle:
        info = json.loads(handle.metadata()["pspnet"])
        stored = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    _write_raw(copy_dir / broken, tensors(stored) if tensors else stored, info, **changes)
    return copy_dir


STATE_BROKEN = {
    "iteration -1": ({"iteration": -1}, "metadata iteration"),
    "iteration string": ({"iteration": "3"}, "metadata iteration"),
    "iteration true": ({"iteration": True}, "metadata iteration"),
    "iteration missing": ({"iteration": DELETE}, "missing key(s) iteration"),
    "epoch 1.5": ({"epoch": 1.5}, "metadata epoch"),
    "step_in_epoch null": ({"step_in_epoch": None}, "metadata step_in_epoch"),
    "best_miou 1.5": ({"best_miou": 1.5}, "metadata best_miou"),
    "best_miou NaN": ({"best_miou": math.nan}, "metadata best_miou"),
    "best_iteration after iteration": ({"best_iteration": 7}, "metadata best_iteration"),
    "train_seconds negative": ({"train_seconds": -1.0}, "metadata train_seconds"),
    "scaler a string": ({"scaler": "x"}, "metadata scaler"),
    "scaler partial": ({"scaler": {"scale": 1.0}}, "metadata scaler"),
    "scaler scale zero": (
        {
            "scaler": {
                "scale": 0.0,
                "growth_factor": 2.0,
                "backoff_factor": 0.5,
                "growth_interval": 2000,
                "_growth_tracker": 0,
            }
        },
        "metadata scaler.scale",
    ),
    "class_weights short": ({"class_weights": [1.0]}, "metadata class_weights"),
    "class_weights negative": ({"class_weights": [1.0, -1.0, 1.0]}, "class_weights[1]"),
    "class_weights NaN": ({"class_weights": [1.0, 1.0, math.nan]}, "class_weights[2]"),
    "config a string": ({"config": "x"}, "metadata config"),
    "unknown key": ({"mystery": 1}, "'mystery'"),
    "kind model": ({"kind": "model"}, "not a training state"),
    "checksum missing": ({"tensors_sha256": DELETE}, "tensors_sha256"),
}


@pytest.mark.parametrize("changes, field", STATE_BROKEN.values(), ids=STATE_BROKEN.keys())
def test_a_broken_training_state_field_is_refused_naming_the_file(tmp_path, checkpoint, target, changes, field):
    broken = _broken_state(tmp_path, checkpoint, **changes)
    with pytest.raises(CheckpointError) as caught:
        _load_into(target, broken)
    message = str(caught.value)
    assert message.startswith(f"{broken / 'state.safetensors'}: ") and field in message, message


BUFFER = "optimizer.0.0.momentum_buffer"


def _set(key, value):
    return lambda tensors: {**tensors, key: value(tensors[key]) if callable(value) else value}


TENSOR_BROKEN = {
    "buffer float64": (_set(BUFFER, lambda t: t.double()), f"'{BUFFER}' is float64"),
    "buffer shape": (_set(BUFFER, lambda t: t.reshape(-1)), f"'{BUFFER}'"),
    "buffer NaN": (_set(BUFFER, lambda t: torch.full_like(t, math.nan)), f"'{BUFFER}' holds"),
    "buffer of no parameter": (_set("optimizer.9.0.momentum_buffer", torch.zeros(1)), "belongs to no parameter"),
    "unknown tensor": (_set("junk", torch.zeros(1)), "unknown tensor 'junk'"),
    "rng float": (_set("rng.torch.0", lambda t: t.float()), "'rng.torch.0'"),
    "rng truncated": (_set("rng.torch.0", lambda t: t[:10]), "'rng.torch.0' has 10 bytes"),
    "rng missing": (lambda tensors: {k: v for k, v in tensors.items() if k != "rng.torch.0"}, "no random state"),
}


@pytest.mark.parametrize("tensors, field", TENSOR_BROKEN.values(), ids=TENSOR_BROKEN.keys())
def test_a_broken_training_state_tensor_is_refused_naming_the_file_and_key(
    tmp_path, checkpoint, target, tensors, field
):
    broken = _broken_state(tmp_path, checkpoint, tensors=tensors)
    with pytest.raises(CheckpointError) as caught:
        _load_into(target, broken)
    message = str(caught.value)
    assert message.startswith(f"{broken / 'state.safetensors'}: ") and field in message, message


def test_the_checkpoints_model_file_is_validated_too(tmp_path, checkpoint, target):
    copy_dir = _broken_state(tmp_path, checkpoint, broken="model.safetensors", classes=["road"])
    with pytest.raises(CheckpointError) as caught:
        _load_into(target, copy_dir)
    assert str(caught.value).startswith(f"{copy_dir / 'model.safetensors'}: metadata classes must be")
