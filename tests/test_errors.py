"""Every failure of the command line is one line that names the file or argument at fault, never a traceback
(unless --debug asks for one): bad data under DataLoader workers, folders that cannot be made or written, bad
configs and overrides."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from conftest import tiny_pspnet
from train_helpers import make_folder_dataset, write_config

from pspnet.cli import main, one_line
from pspnet.errors import ConfigError, DataError
from pspnet.weights.model_file import make_card, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data") / "shapes", n_train=4, n_val=3)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    model = tiny_pspnet(3)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path, card=make_card(model.config, crop_size=(48, 64), base_size=64))
    return path


def _error_line(capsys) -> str:
    """The one line of stderr (progress bars aside) of the last command, which must start with 'error: '."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def broken_copy(tmp_path, data_root) -> tuple[Path, Path]:
    """A copy of the data set whose second val image (and second train image) is cut in half."""
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(data_root, root)
    victims = []
    for split in ("train", "val"):
        victim = root / "images" / split / "001.png"
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
        victims.append(victim)
    return root, victims[1]


def test_a_bad_file_read_by_a_dataloader_worker_is_named_in_one_line(model_file, broken_copy, capsys):
    """Under DataLoader workers torch re-raises the worker's error with its whole traceback in the message; the
    command prints the original message alone."""
    root, victim = broken_copy
    argv = ["eval", str(model_file), "--dataset", "folder", "--root", str(root), "--workers", "2"]
    assert main(argv) == 1
    line = _error_line(capsys)
    assert str(victim) in line and "truncated" in line and "Caught" not in line


def test_a_bad_training_image_under_workers_is_named_in_one_line(tmp_path, broken_copy, capsys):
    root, _ = broken_copy
    config = write_config(tmp_path / "c.yaml", root, iterations=2, workers=1, val_split=None, batch_size=4)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    line = _error_line(capsys)
    assert str(root / "images" / "train" / "001.png") in line and "truncated" in line
    # the loader's workers (which ignore SIGTERM, see engine.train) are shut down on the way out: one left behind
    # would hang the process at exit, where multiprocessing terminates and then joins it
    assert multiprocessing.active_children() == []


def test_one_line_keeps_the_original_message_of_a_worker_error():
    wrapped = DataError(
        "Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n    raise DataError(...)\npspnet.errors.DataError: /d/a.png: truncated image\n'
    )
    assert one_line(wrapped) == "/d/a.png: truncated image"
    assert one_line(ValueError("two\nlines")) == "two lines"


def test_an_out_folder_that_cannot_be_made_fails_in_one_line_before_any_work(model_file, data_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    photo = data_root / "images" / "val" / "000.png"
    assert main(["predict", str(model_file), str(photo), "--out", str(blocker / "out"), "--no-progress"]) == 1
    line = _error_line(capsys)
    assert str(blocker / "out") in line or str(blocker) in line
    argv = ["eval", str(model_file), "--dataset", "folder", "--root", str(data_root), "--out", str(blocker / "ev")]
    assert main([*argv, "--workers", "0"]) == 1
    line = _error_line(capsys)
    assert str(blocker) in line
    assert "mIoU" not in capsys.readouterr().out  # refused before evaluating


def test_a_predictions_csv_that_cannot_be_written_fails_in_one_line_after_the_images(
    model_file, data_root, tmp_path, capsys
):
    out = tmp_path / "out"
    (out / "predictions.csv").mkdir(parents=True)  # a folder where the CSV goes: the final rename fails
    photo = data_root / "images" / "val" / "000.png"
    assert main(["predict", str(model_file), str(photo), "--out", str(out), "--no-progress"]) == 1
    assert str(out / "predictions.csv") in _error_line(capsys)
    assert (out / "000.png").is_file()  # the image's outputs were written before


@pytest.mark.parametrize(
    "override, words",
    [
        ("crop_size=[64, 64", ["--set 'crop_size=[64, 64'", "not valid YAML"]),
        ("device=bogus", ["device", "'bogus'"]),
        ("poly_power=-5", ["poly_power", "-5"]),
        ("lr=.nan", ["lr", "finite"]),
        ("aux_weight=-1", ["aux_weight"]),
    ],
)
def test_bad_overrides_are_named_in_one_line(tmp_path, data_root, capsys, override, words):
    config = write_config(tmp_path / "c.yaml", data_root, iterations=2, val_split=None)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--set", override, "--quiet"]) == 1
    line = _error_line(capsys)
    assert all(word in line for word in words), line
    assert not (tmp_path / "run").exists()  # refused before anything was made


def test_a_binary_config_is_named(tmp_path, capsys):
    config = tmp_path / "weights.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 1
    line = _error_line(capsys)
    assert str(config) in line and "not a YAML text file" in line


def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path, data_root, capsys):
    config = write_config(tmp_path / "c.yaml", data_root, iterations=2)
    config.write_text(config.read_text() + "iterations: 5\n")
    first = next(i for i, line in enumerate(config.read_text().splitlines(), 1) if line.startswith("iterations"))
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 1
    line = _error_line(capsys)
    assert str(config) in line and "duplicate key 'iterations'" in line and f"line {first}" in line


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: camvid\ndataset: voc\n")
    with pytest.raises(ConfigError, match="duplicate key"):
        main(["train", str(config), "--debug"])
    with pytest.raises(ConfigError, match="duplicate key"):
        main(["--debug", "train", str(config)])
    monkeypatch.setenv("PSPNET_DEBUG", "1")
    with pytest.raises(ConfigError, match="duplicate key"):
        main(["train", str(config)])
    monkeypatch.setenv("PSPNET_DEBUG", "0")
    assert main(["train", str(config)]) == 1
    assert "duplicate key" in _error_line(capsys)


def test_an_unexpected_error_is_one_line_that_says_how_to_report_it(monkeypatch, capsys):
    import pspnet.introspect

    def broken(*args, **kwargs):
        raise RuntimeError("something\nwent wrong")

    monkeypatch.setattr(pspnet.introspect, "summarize", broken)
    assert main(["info", "--model", "pspnet50"]) == 1
    line = _error_line(capsys)
    assert line == (
        "error: unexpected RuntimeError: something went wrong (run again with --debug for the traceback and report it)"
    )


def test_an_interrupt_is_one_line_with_status_130(monkeypatch, capsys):
    import pspnet.introspect

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pspnet.introspect, "summarize", interrupted)
    assert main(["info"]) == 130
    assert _error_line(capsys) == "error: interrupted"


def test_warnings_are_one_line_each(monkeypatch, capsys):
    """A warning (Pillow's on a damaged file, say) is one 'warning: ...' line, not Python's two lines with the
    source line of the warning call."""
    import warnings

    import pspnet.introspect

    def warns(*args, **kwargs):
        warnings.warn("Corrupt EXIF data.\n  Expecting to read 12 bytes", UserWarning, stacklevel=1)
        raise KeyboardInterrupt

    monkeypatch.setattr(pspnet.introspect, "summarize", warns)
    assert main(["info"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: Corrupt EXIF data. Expecting to read 12 bytes", "error: interrupted"]
