"""pspnet predict never loses or escapes with a user's file, and one bad input never stops the others:
inputs inside --out, globs with '..', symlinked folders, output collisions, CSV formulas, thin
images, failing forwards, FIFOs, absurd scales and sizes, the pixel cap."""

import csv
import dataclasses
import json
import os
import threading

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from predict_helpers import K, photo, write_tiny_checkpoint

import pspnet
from pspnet.cli import main
from pspnet.data.io import read_image, read_mask
from pspnet.errors import DataError
from pspnet.inference import DEFAULT_MAX_PIXELS, InferenceSettings, check_image_size, infer_proba, resized_size
from pspnet.predict import InputItem, UnsafeOutputs, csv_cell, expand_inputs, plan_outputs, predict_inputs
from pspnet.segmenter import Segmenter
from pspnet.visualize import colorize
from pspnet.weights.model_file import METADATA_KEY, read_weights_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    return Segmenter.from_checkpoint(checkpoint, device="cpu")


def _save(path, height=40, width=56, seed=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(height, width, seed)).save(path)
    return path


def _predict(*argv):
    return main(["predict", *map(str, argv), "--no-progress"])


def _csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _snapshot(root):
    """Every file under ``root`` with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- 2. never lose or escape with a user's file -------------------------------------------------------------------


def test_an_input_named_inside_out_is_refused_before_any_work(checkpoint, tmp_path, capsys):
    photo = _save(tmp_path / "photos" / "photo.png")
    before = _snapshot(tmp_path / "photos")
    assert _predict(checkpoint, photo, "--out", tmp_path / "photos") == 2
    err = capsys.readouterr().err
    assert f"output {photo} is the input {photo}" in err and "would overwrite it" in err
    assert _snapshot(tmp_path / "photos") == before  # the photo unchanged, nothing written (no predictions.csv)


def test_an_output_that_is_another_input_is_refused(checkpoint, tmp_path, capsys):
    # x.png's colour map would be out/x_color.png, which is an input given on its own
    x = _save(tmp_path / "a" / "x.png")
    colour_input = _save(tmp_path / "out" / "x_color.png", seed=3)
    before = _snapshot(tmp_path)
    assert _predict(checkpoint, x, colour_input, "--out", tmp_path / "out") == 2
    assert f"output {colour_input} is the input {colour_input}" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_every_input_counts_even_one_whose_name_clashes(tmp_path):
    """a.jpg and a.png become a_jpg and a_png; a.jpg's labels out/a_jpg.png are the input out/a_jpg.png, whose own
    name a_jpg clashes too: it is still an input that must not be overwritten."""
    _save(tmp_path / "photos" / "a.jpg")
    _save(tmp_path / "photos" / "a.png")
    named = _save(tmp_path / "out" / "a_jpg.png")
    items, failures = expand_inputs([tmp_path / "photos", named], exclude=tmp_path / "out")
    assert [i.name for i in items] == ["a_jpg", "a_png", "a_jpg"] and not failures
    with pytest.raises(UnsafeOutputs, match=f"output {named} is the input {named}"):
        plan_outputs(items, tmp_path / "out", overlay=False, save_proba=False)


def test_a_hard_link_to_an_input_inside_out_is_the_same_file(checkpoint, tmp_path, capsys):
    photo = _save(tmp_path / "photos" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    os.link(photo, out / "a.png")
    before = _snapshot(tmp_path)
    assert _predict(checkpoint, photo, "--out", out) == 2
    assert f"output {out / 'a.png'} is the input {photo}" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_a_glob_that_climbs_with_dotdot_stays_inside_out(checkpoint, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    x = _save(tmp_path / "data" / "x.png")
    monkeypatch.chdir(work)
    assert [i.name for i in expand_inputs(["*/../../data/*.png"])[0]] == ["data/x"]
    before = _snapshot(tmp_path)
    # 'sub/../../data/x.png' mirrored under ../o once reached ../o/sub/../../data/x.png: the input itself
    assert _predict(checkpoint, "*/../../data/*.png", "--out", "../o") == 0
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("o/")} == before  # nothing outside --out changed
    assert sorted(k for k in after if k.startswith("o/")) == ["o/data/x.png", "o/data/x_color.png", "o/predictions.csv"]
    assert after["data/x.png"] == x.read_bytes() == before["data/x.png"]


def test_a_symlinked_folder_inside_out_cannot_lead_outputs_elsewhere(checkpoint, tmp_path, capsys):
    _save(tmp_path / "photos" / "trip" / "c.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "trip").symlink_to(elsewhere, target_is_directory=True)
    assert _predict(checkpoint, tmp_path / "photos", "--out", out) == 2
    err = capsys.readouterr().err
    assert (
        f"output {out / 'trip' / 'c.png'} would be written in {elsewhere.resolve()}, outside the output folder {out}"
        in err
    )
    assert not list(elsewhere.iterdir()) and sorted(p.name for p in out.iterdir()) == ["trip"]


def test_hand_made_names_that_leave_out_are_refused(segmenter, tmp_path):
    photo = _save(tmp_path / "a.png")
    for name in ["../a", "/tmp/a", "x/./a", ""]:
        with pytest.raises(ValueError, match="not a plain relative path"):
            predict_inputs(segmenter, [InputItem(photo, name)], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_outputs_that_collide_skip_the_later_input(checkpoint, segmenter, tmp_path, capsys):
    """x.png's colour map and overlay are the label maps of x_color.png and x_overlay.png: those two are reported
    (naming x.png and the path) and skipped, x.png is predicted and its outputs are its own."""
    folder = tmp_path / "photos"
    x = _save(folder / "x.png", seed=1)
    _save(folder / "x_color.png", seed=2)
    _save(folder / "x_overlay.png", seed=3)
    out = tmp_path / "out"
    assert _predict(checkpoint, folder, "--out", out, "--overlay") == 1
    err = capsys.readouterr().err
    for clash, path in [("x_color.png", "x_color.png"), ("x_overlay.png", "x_overlay.png")]:
        assert f"{folder / clash}: its output {out / path} is already an output of {x}" in err
    assert "2 input(s) failed" in err
    labels = read_mask(out / "x.png")
    np.testing.assert_array_equal(labels, segmenter.predict(x))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "x_color.png")), colorize(labels, segmenter.palette))
    assert Image.open(out / "x_overlay.png").width > 56  # x's overlay with its legend, not a label map
    assert [r["input"] for r in _csv(out / "predictions.csv")] == [str(x)]


def test_collisions_are_found_case_insensitively_and_through_symlinked_folders(tmp_path):
    a = _save(tmp_path / "in" / "x.png")
    b = _save(tmp_path / "in" / "X_COLOR.png")
    c = _save(tmp_path / "in" / "y.png")
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "alias").symlink_to(out / "real", target_is_directory=True)
    items = [InputItem(a, "x"), InputItem(b, "X_COLOR"), InputItem(c, "real/y"), InputItem(a, "alias/y")]
    kept, failures = plan_outputs(items, out, overlay=False, save_proba=False)
    assert kept == items[:1] + items[2:3]
    assert [f.source for f in failures] == [str(b), str(a)]
    assert f"its output {out / 'X_COLOR.png'} is already an output of {a}" in failures[0].message
    assert f"its output {out / 'alias' / 'y.png'} is already an output of {c}" in failures[1].message


def test_csv_cells_that_spreadsheets_would_run_are_neutralised(checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    names = ["=HYPERLINK(1+2).png", "-1+2.png", "+SUM(A1).png", "@cmd.png", "plain.png"]
    for i, name in enumerate(names):
        _save(folder / name, seed=i)
    monkeypatch.chdir(folder)
    out = tmp_path / "out"
    assert _predict(checkpoint, "=HYPERLINK(1+2).png", "@cmd.png", "plain.png", "--out", out) == 0
    assert _predict(checkpoint, folder, "--out", tmp_path / "out2") == 0
    rows = _csv(out / "predictions.csv")
    assert [(r["input"], r["output"]) for r in rows] == [
        ("'=HYPERLINK(1+2).png", "'=HYPERLINK(1+2).png"),
        ("'@cmd.png", "'@cmd.png"),
        ("plain.png", "plain.png"),
    ]
    outputs = sorted(r["output"] for r in _csv(tmp_path / "out2" / "predictions.csv"))
    assert outputs == sorted(["'=HYPERLINK(1+2).png", "'-1+2.png", "'+SUM(A1).png", "'@cmd.png", "plain.png"])
    assert (tmp_path / "out2" / "-1+2.png").is_file()  # only the CSV cell changes, not the file name
    assert [csv_cell(v) for v in ["\tx", "\rx", "a=b", 3, -1.5]] == ["'\tx", "'\rx", "a=b", 3, -1.5]


# -- 3. one bad input never stops the others ----------------------------------------------------------------------


def test_thin_images_are_predicted_and_the_later_inputs_too(checkpoint, segmenter, tmp_path):
    # 5000x3 at base size 56 has a short side of round(0.034) = 0: clamped to 1 pixel instead of failing
    assert resized_size(3, 5000, 56) == (1, 56) and resized_size(5000, 3, 512) == (512, 1)
    wide = _save(tmp_path / "in" / "1_wide.png", 3, 5000)
    tall = _save(tmp_path / "in" / "2_tall.png", 5000, 3)
    later = _save(tmp_path / "in" / "3_later.png")
    out = tmp_path / "out"
    assert _predict(checkpoint, wide, tall, later, "--out", out) == 0
    assert read_mask(out / "1_wide.png").shape == (3, 5000) and read_mask(out / "2_tall.png").shape == (5000, 3)
    np.testing.assert_array_equal(read_mask(out / "3_later.png"), segmenter.predict(later))
    rows = _csv(out / "predictions.csv")
    assert [(r["output"], r["height"], r["width"]) for r in rows] == [
        ("1_wide.png", "3", "5000"),
        ("2_tall.png", "5000", "3"),
        ("3_later.png", "40", "56"),
    ]


def _poisoned(folder):
    """p0, p1, p2 of one size; p1 all 7s: the patched network refuses any batch holding it."""
    _save(folder / "p0.png", seed=1)
    Image.fromarray(np.full((40, 56, 3), 7, np.uint8)).save(folder / "p1.png")
    _save(folder / "p2.png", seed=2)


def test_a_failing_forward_fails_only_its_image(checkpoint, tmp_path, monkeypatch, capsys):
    _poisoned(tmp_path / "in")
    batches = []
    infer = Segmenter.infer

    def flaky(self, images):
        batches.append(len(images))
        if any((image == 7).all() for image in images):
            raise RuntimeError("boom\nsecond line of a torch message")
        return infer(self, images)

    monkeypatch.setattr(Segmenter, "infer", flaky)
    out = tmp_path / "out"
    assert _predict(checkpoint, tmp_path / "in", "--out", out, "--batch", "4") == 1
    assert batches == [3, 1, 1, 1]  # the batch failed, then each image alone
    err = capsys.readouterr().err
    assert f"{tmp_path / 'in' / 'p1.png'}: RuntimeError: boom" in err and "1 input(s) failed" in err
    assert "second line" not in err  # one line per failure
    assert [r["output"] for r in _csv(out / "predictions.csv")] == ["p0.png", "p2.png"]
    assert (out / "p0.png").is_file() and (out / "p2.png").is_file() and not (out / "p1.png").exists()


def test_a_failing_write_fails_only_its_image(checkpoint, tmp_path, monkeypatch, capsys):
    from pspnet.predict.outputs import OutputWriter

    _poisoned(tmp_path / "in")
    write = OutputWriter.write_image

    def flaky(self, item, image, labels, proba):
        if item.name == "p1":
            raise KeyError("no such colour")
        return write(self, item, image, labels, proba)

    monkeypatch.setattr(OutputWriter, "write_image", flaky)
    out = tmp_path / "out"
    assert _predict(checkpoint, tmp_path / "in", "--out", out) == 1
    assert f"{tmp_path / 'in' / 'p1.png'}: cannot write its predictions" in capsys.readouterr().err
    assert [r["output"] for r in _csv(out / "predictions.csv")] == ["p0.png", "p2.png"]


def test_an_interrupt_still_stops_the_run(checkpoint, tmp_path, monkeypatch):
    _save(tmp_path / "in" / "a.png")

    def interrupted(self, images):
        raise KeyboardInterrupt

    monkeypatch.setattr(Segmenter, "infer", interrupted)
    # not taken for a bad input: the run stops (the command line reports it in one line, status 130)
    assert _predict(checkpoint, tmp_path / "in", "--out", tmp_path / "out") == 130


def _within(seconds, function, rescue):
    """``function()`` in a thread; when it is still running after ``seconds``, call ``rescue()`` (which must end
    it) and fail. Returns its result or raises its exception."""
    result = {}

    def target():
        try:
            result["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    hung = thread.is_alive()
    if hung:
        rescue()
        thread.join(30)
    assert not hung, f"still running after {seconds} s: blocked on a FIFO"
    if "error" in result:
        raise result["error"]
    return result["value"]


def _fifos(*paths):
    for path in paths:
        os.mkfifo(path)

    def rescue():  # a writer that opens and closes gives a blocked reader its end of file
        for path in paths:
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    return rescue


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_are_named_and_never_block(checkpoint, tmp_path, capsys):
    image_pipe, video_pipe = tmp_path / "pipe.png", tmp_path / "pipe.mp4"
    rescue = _fifos(image_pipe, video_pipe)
    photo = _save(tmp_path / "in" / "a.png")
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=f"{image_pipe}: not a regular file"):
            _within(60, lambda read=reader: read(image_pipe), rescue)
    out = tmp_path / "out"
    status = _within(120, lambda: _predict(checkpoint, image_pipe, video_pipe, photo, "--out", out), rescue)
    assert status == 1
    err = capsys.readouterr().err
    assert f"{image_pipe}: not a regular file" in err and f"{video_pipe}: not a regular file" in err
    assert [r["output"] for r in _csv(out / "predictions.csv")] == ["a.png"]


@pytest.mark.parametrize("value", ["nan", "inf", "1e999", "0", "-1"])
def test_scales_that_are_not_finite_positive_numbers_are_usage_errors(checkpoint, tmp_path, capsys, value):
    predict = ["predict", str(checkpoint), "x.png", "--out", str(tmp_path / "o")]
    evaluate = ["eval", str(checkpoint), "--dataset", "camvid", "--root", str(tmp_path)]
    for command in (predict, evaluate):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--scales", value])
        assert exit_info.value.code == 2
        assert f"argument --scales: must be a finite positive number, got {value}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_scale_that_rounds_to_nothing_is_a_usage_error(checkpoint, tmp_path, capsys):
    assert _predict(checkpoint, "x.png", "--out", tmp_path / "o", "--scales", "0.0001") == 2
    err = capsys.readouterr().err
    assert "error: inference settings for" in err and "scale 0.0001 of base size 56" in err and "rounds to 0" in err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def folder_dataset(tmp_path):
    root = tmp_path / "folder"
    (root / "classes.yaml").parent.mkdir(parents=True)
    (root / "classes.yaml").write_text("classes: [c0, c1, c2, c3, c4]\ncrop_size: [40, 56]\nbase_size: 56\n")
    _save(root / "images" / "val" / "big.png")
    mask = (np.arange(40 * 56) % K).reshape(40, 56).astype(np.uint8)
    (root / "masks" / "val").mkdir(parents=True)
    Image.fromarray(mask).save(root / "masks" / "val" / "big.png")
    return root


def test_eval_base_sizes_beyond_the_pixel_cap_are_usage_errors(checkpoint, folder_dataset, capsys):
    argv = ["eval", str(checkpoint), "--dataset", "folder", "--root", str(folder_dataset), "--workers", "0"]
    assert main([*argv, "--base-size", "100000"]) == 2
    err = capsys.readouterr().err
    assert "base size 100000 at scale 1.0 makes images up to 100000 pixels on a side" in err
    assert f"above the limit of {DEFAULT_MAX_PIXELS} pixels; raise it with --max-pixels" in err
    # the conservative square rule: 4096 x 4096 is the default cap exactly, one pixel more on a side is refused
    assert main([*argv, "--base-size", "4096", "--max-pixels", "100", "--crop", "8", "8"]) == 2
    assert "4096x4096, above the limit of 100 pixels" in capsys.readouterr().err
    assert InferenceSettings(base_size=4096).max_pixels == DEFAULT_MAX_PIXELS == 4096**2
    with pytest.raises(ValueError, match="4097x4097, above the limit of 16777216 pixels"):
        InferenceSettings(base_size=4097)
    assert InferenceSettings(base_size=4097, max_pixels=4097**2).base_size == 4097
    # Cityscapes multi-scale, the largest official protocol, fits the default cap
    InferenceSettings(crop_size=(713, 713), base_size=2048, scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75))


def test_eval_names_an_image_above_the_pixel_cap(checkpoint, folder_dataset, capsys):
    argv = ["eval", str(checkpoint), "--dataset", "folder", "--root", str(folder_dataset), "--workers", "0"]
    argv += ["--base-size", "native", "--crop", "20", "20", "--mode", "whole", "--max-pixels", "1000"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    image = folder_dataset / "images" / "val" / "big.png"
    assert f"error: {image}: the image is 40x56 = 2240 pixels, above the limit of 1000 pixels" in err


def _with_meta(source, target, change):
    """A copy of the model file ``source`` whose metadata ``change(meta)`` edited, written without any checks."""
    tensors, meta = read_weights_file(source)
    change(meta["inference"])
    safetensors.torch.save_file(tensors, str(target), metadata={METADATA_KEY: json.dumps(meta)})
    return target


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("base_size", 10**6, "base size 1000000"), ("crop_size", [10**6, 10**6], "crop size 1000000x1000000")],
)
def test_model_metadata_asking_for_absurd_sizes_is_refused(checkpoint, tmp_path, capsys, field, value, words):
    absurd = _with_meta(checkpoint, tmp_path / "absurd.safetensors", lambda inference: inference.update({field: value}))
    photo = _save(tmp_path / "a.png")
    status = _predict(absurd, photo, "--out", tmp_path / "o")
    err = capsys.readouterr().err
    # refused by the inference settings (exit 2), or by a stricter model-file check at load (exit 1)
    assert status in (1, 2) and (field in err or words in err)
    if status == 2:
        assert words in err and f"limit of {DEFAULT_MAX_PIXELS} pixels" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=f"{words}.*above the limit of {DEFAULT_MAX_PIXELS} pixels"):
        card = pspnet.load_model(checkpoint).card
        InferenceSettings.from_card(
            dataclasses.replace(card, **{field: tuple(value) if isinstance(value, list) else value})
        )


def test_the_pixel_cap_holds_for_native_size_images(checkpoint, tmp_path):
    """Without a base size, the input itself and the padded window canvas are checked before any allocation."""
    model = Segmenter.from_checkpoint(checkpoint, device="cpu").model
    settings = InferenceSettings(mode="whole", crop_size=(20, 20), max_pixels=1000)
    big = _save(tmp_path / "in" / "big.png", 40, 56)
    small = _save(tmp_path / "in" / "small.png", 20, 30)
    report = predict_inputs(Segmenter(model, settings), [big, small], tmp_path / "out", progress=False)
    assert [f.source for f in report.failures] == [str(big)]
    assert "the image is 40x56 = 2240 pixels, above the limit of 1000 pixels" in report.failures[0].message
    assert [r["output"] for r in _csv(tmp_path / "out" / "predictions.csv")] == ["small.png"]
    # a 10x60 image fits, but padded to the 30x30 crop for sliding windows it would be 30x60
    slide = InferenceSettings(mode="slide", crop_size=(30, 30), max_pixels=1000)
    check_image_size(10, 60, InferenceSettings(mode="whole", crop_size=(30, 30), max_pixels=1000))
    with pytest.raises(ValueError, match="padded for sliding windows to 30x60 = 1800 pixels"):
        check_image_size(10, 60, slide)

    class Untouchable(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the network ran")

    with pytest.raises(ValueError, match="at scale 2.0 the image is resized to 40x40 = 1600 pixels"):
        settings = InferenceSettings(crop_size=(20, 20), scales=(1.0, 2.0), max_pixels=1000)
        infer_proba(Untouchable(), torch.zeros(1, 3, 20, 20), settings)


def test_settings_refuse_scales_that_are_not_finite():
    for scales in [(float("nan"),), (1.0, float("inf")), (0.0,), ()]:
        with pytest.raises(ValueError, match="scales must be finite positive numbers"):
            InferenceSettings(scales=scales)
    with pytest.raises(ValueError, match="max pixels must be a positive integer"):
        InferenceSettings(max_pixels=0)
