import os

import pytest

import pspnet
from pspnet.atomic import atomic_open
from pspnet.cli import main
from pspnet.engine.config import load_train_config
from pspnet.errors import ConfigError

BASE = ["dataset=camvid", "root=somewhere", "iterations=2"]


def test_yaml_1_1_exponent_floats_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: camvid\nroot: x\niterations: 3\nweight_decay: 1e-4\n")
    config = load_train_config(str(path), ["lr=2e-3"])
    assert config.weight_decay == 1e-4 and config.lr == 2e-3


@pytest.mark.parametrize(
    "override, named",
    [
        ("val_mode=slid", "val_mode"),
        ("class_weighting=inverse", "class_weighting"),
        ("dataset=ade", "dataset"),
        ("rotate_p=1.5", "rotate_p"),
        ("depth=42", "depth"),
        ("output_stride=4", "output_stride"),
        ("precision=fp64", "precision"),
        ("crop_size=[64]", "crop_size"),
        ("typo_key=1", "typo_key"),
    ],
)
def test_bad_values_are_refused_up_front_naming_the_key(override, named):
    with pytest.raises(ConfigError, match=named) as error:
        load_train_config(None, [*BASE, override])
    assert str(error.value).startswith("overrides") and error.value.argument == "overrides"  # the CLI says --set


def test_budget_must_be_given_once():
    with pytest.raises(ConfigError, match="exactly one budget"):
        load_train_config(None, ["dataset=camvid", "root=x"])
    with pytest.raises(ConfigError, match="exactly one budget"):
        load_train_config(None, [*BASE, "epochs=3"])


def test_atomic_files_get_the_usual_mode(tmp_path):
    with atomic_open(tmp_path / "f.txt", "w") as handle:
        handle.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_bad_device_and_numbers_are_usage_errors(capsys):
    for argv in (
        ["eval", "m.safetensors", "--dataset", "camvid", "--root", "r", "--device", "gpu0"],
        ["eval", "m.safetensors", "--dataset", "camvid", "--root", "r", "--stride-rate", "0"],
        ["eval", "m.safetensors", "--dataset", "camvid", "--root", "r", "--scales", "-1"],
        ["predict", "m.safetensors", "x.png", "--out", "o", "--device", "nonsense"],
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
    err = capsys.readouterr().err
    assert "not a device: 'gpu0'" in err and "must be in (0, 1]" in err and "must be a finite positive number" in err


def test_the_models_keys_sit_flat_in_yaml_and_gather_in_model(tmp_path):
    config = load_train_config(None, [*BASE, "depth=18", "ppm=false", "bins=[1, 2]"])
    assert config.model == pspnet.ModelConfig(num_classes=None, depth=18, ppm=False, bins=(1, 2))
    flat = config.to_dict()
    assert flat["depth"] == 18 and flat["bins"] == [1, 2] and "model" not in flat and "num_classes" not in flat
    assert load_train_config(None, [f"{k}={v!r}" for k, v in flat.items() if v is not None]) == config
    assert config.model_config(11) == pspnet.ModelConfig(num_classes=11, depth=18, ppm=False, bins=(1, 2))
    with pytest.raises(ConfigError, match="overrides: num_classes must be an integer in"):
        load_train_config(None, [*BASE, "num_classes=0"])
