import dataclasses
import json
import os

import pytest
import safetensors.torch
import torch
from conftest import tiny_pspnet

import pspnet
from pspnet.data.classes import DATASETS, DatasetInfo
from pspnet.errors import CheckpointError
from pspnet.runs import resolve_model_path
from pspnet.weights.model_file import (
    FORMAT_VERSION,
    load_backbone_weights,
    make_card,
    model_metadata,
    read_weights_file,
    save_model,
    write_weights_file,
)


def _saved(tmp_path, name="model.safetensors", **meta_args):
    model = tiny_pspnet(11)
    path = save_model(model, tmp_path / name, card=make_card(model.config, dataset="camvid", **meta_args))
    return model, path


def test_round_trip_of_weights_and_metadata(tmp_path):
    model, path = _saved(tmp_path, source={"from": "test"})
    loaded = pspnet.load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    original = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    _, stored = read_weights_file(path)
    assert stored["kind"] == "model" and stored["format_version"] == FORMAT_VERSION
    meta = loaded.meta
    assert {k: v for k, v in stored.items() if k not in ("kind", "format_version", "tensors_sha256")} == meta
    assert loaded.card.classes == DATASETS["camvid"].classes and loaded.card.mean == (123.675, 116.28, 103.53)
    assert meta["classes"] == list(DATASETS["camvid"].classes)
    assert meta["palette"] == [list(c) for c in DATASETS["camvid"].palette]
    assert meta["ignore_index"] == 255
    assert meta["normalization"] == {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    assert meta["inference"] == {"crop_size": [360, 480], "base_size": 480}
    assert meta["model"] == model.config.to_dict()
    assert meta["source"] == {"from": "test"}
    # the same logits, and the loaded parameters train
    model.eval()
    x = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert all(p.requires_grad for p in loaded.parameters())


def test_save_uses_the_models_meta_and_default_meta(tmp_path):
    model = tiny_pspnet(3)
    meta = pspnet.load_model(save_model(model, tmp_path / "a.safetensors")).meta
    assert meta["classes"] == ["class_0", "class_1", "class_2"]
    assert len(meta["palette"]) == 3 and meta["dataset"] is None


def test_metadata_is_plain_json_under_the_pspnet_key(tmp_path):
    _, path = _saved(tmp_path)
    with safetensors.safe_open(path, "pt") as handle:
        meta = json.loads(handle.metadata()["pspnet"])
    assert meta["model"]["num_classes"] == 11


def test_write_is_atomic(tmp_path, monkeypatch):
    _model, path = _saved(tmp_path)
    good = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny_pspnet(11), path)
    assert path.read_bytes() == good  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp file left


@pytest.mark.parametrize("keep", [4, 100, 0.5, -100])
def test_truncated_file_is_named(tmp_path, keep):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (keep if keep > 0 else len(data) + keep)
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=str(path)):
        pspnet.load_model(path)


def test_flipped_tensor_bytes_are_detected(tmp_path):
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path}: corrupted"):
        pspnet.load_model(path)


def test_garbled_header_is_named(tmp_path):
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[12:20] = b"\x00\x01garbl"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(path)):
        pspnet.load_model(path)


@pytest.mark.parametrize("name", ["model.pth", "model.safetensors"])
def test_pickles_are_refused_with_a_pointer_to_convert(tmp_path, name):
    path = tmp_path / name
    torch.save({"state_dict": tiny_pspnet(2).state_dict()}, path)
    with pytest.raises(CheckpointError, match="pspnet convert") as error:
        pspnet.load_model(path)
    assert str(path) in str(error.value)


def test_foreign_safetensors_without_metadata_is_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a pspnet checkpoint.*pspnet convert"):
        pspnet.load_model(path)


def test_backbone_file_is_refused_by_load_model(tmp_path):
    path = write_weights_file(
        tmp_path / "backbone.safetensors",
        tiny_pspnet(2).backbone.state_dict(),
        {"kind": "backbone", "format_version": 1, "backbone": {"depth": 18, "stem": "deep"}},
    )
    with pytest.raises(CheckpointError, match="backbone.*pspnet convert"):
        pspnet.load_model(path)
    fresh = tiny_pspnet(2)
    load_backbone_weights(fresh.backbone, path)
    with pytest.raises(CheckpointError, match="ResNet-18.*ResNet-34"):
        load_backbone_weights(tiny_pspnet(2, depth=34).backbone, path)


def test_newer_format_is_refused(tmp_path):
    model = tiny_pspnet(2)
    meta = model_metadata(make_card(model.config))
    meta["format_version"] = FORMAT_VERSION + 1
    path = write_weights_file(tmp_path / "future.safetensors", model.state_dict(), meta)
    with pytest.raises(CheckpointError, match="newer"):
        pspnet.load_model(path)


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    model = tiny_pspnet(2)
    sd = model.state_dict()
    del sd["decode_head.bn.bias"]
    meta = model_metadata(make_card(model.config))
    path = write_weights_file(tmp_path / "broken.safetensors", sd, meta)
    with pytest.raises(CheckpointError, match="decode_head.bn.bias"):
        pspnet.load_model(path)


def test_missing_file_and_directory_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        pspnet.load_model(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no model file"):
        pspnet.load_model(tmp_path)


def test_run_directory_resolves_best_then_latest(tmp_path):
    for n in (2, 10):
        _saved(tmp_path, f"ckpt_{n}/model.safetensors")
    assert resolve_model_path(tmp_path) == tmp_path / "ckpt_10" / "model.safetensors"
    _saved(tmp_path, "best/model.safetensors")
    assert resolve_model_path(tmp_path) == tmp_path / "best" / "model.safetensors"
    assert pspnet.load_model(tmp_path).num_classes == 11


def test_read_weights_file_returns_tensors_and_meta(tmp_path):
    model, path = _saved(tmp_path)
    tensors, meta = read_weights_file(path)
    assert set(tensors) == set(model.state_dict())
    assert meta["dataset"] == "camvid"


def test_make_card_checks_its_arguments():
    config = tiny_pspnet(5).config
    with pytest.raises(ValueError, match="11 classes"):
        make_card(config, dataset="camvid")
    with pytest.raises(ValueError, match="class names"):
        make_card(config, classes=["a", "b"])
    with pytest.raises(ValueError, match="unknown dataset"):
        make_card(config, dataset="coco")


@pytest.mark.parametrize("target", [0x380, 0x4B50])
def test_header_lengths_that_start_like_a_pickle_or_zip_still_load(tmp_path, target):
    # The first bytes of a safetensors file are its header length: b"\x80\x03" (a pickle's protocol mark) or b"PK"
    # (a zip's) must not be taken for a PyTorch pickle.
    tensors = {"w": torch.arange(6.0)}

    def save_with(pad):
        meta = {"kind": "backbone", "format_version": 1, "note": "x" * pad}
        path = write_weights_file(tmp_path / "w.safetensors", tensors, meta)
        return path, int.from_bytes(path.read_bytes()[:8], "little")

    _, base = save_with(0)
    for pad in range(max(0, target - base - 16), target - base + 16):
        path, announced = save_with(pad)
        if announced == target:
            break
    else:
        pytest.fail("could not produce the header length")
    assert path.read_bytes()[:2] in (b"\x80\x03", b"PK")
    loaded, meta = read_weights_file(path)
    assert meta["note"] == "x" * pad and torch.equal(loaded["w"], tensors["w"])


def test_the_model_card_round_trips_through_its_one_parser():
    card = make_card(tiny_pspnet(11).config, dataset="camvid", source={"from": "test"})
    assert pspnet.ModelCard.from_dict(card.to_dict(), "card") == card
    assert card.classes == DATASETS["camvid"].classes and card.crop_size == (360, 480) and card.base_size == 480
    # a card built in code is checked by the same rules when it is written
    bad = dataclasses.replace(card, mean=(0.0, 300.0, 0.0))
    with pytest.raises(
        CheckpointError, match=r"card: metadata normalization\.mean\[1\] must be a number in \[0, 255\]"
    ):
        bad.checked("card")


def test_make_card_takes_a_folder_data_sets_facts():
    info = DatasetInfo("potholes", ("road", "pothole"), ((0, 0, 0), (255, 0, 0)), (64, 96), 128, ignore_index=7)
    card = make_card(tiny_pspnet(2).config, dataset=info)
    assert (card.dataset, card.classes, card.palette) == ("potholes", info.classes, info.palette)
    assert (card.crop_size, card.base_size, card.ignore_index) == ((64, 96), 128, 7)


def test_meta_is_the_cards_dict_and_a_model_without_a_card_has_none():
    model = tiny_pspnet(3)
    assert model.card is None and model.meta == {}
    model.card = make_card(model.config)
    assert model.meta == model.card.to_dict() and model.meta["classes"] == ["class_0", "class_1", "class_2"]
