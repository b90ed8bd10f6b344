"""pspnet predict end to end on a tiny checkpoint: outputs, mirrored paths, globs, videos, bad inputs, palettes,
batching, and agreement with eval --save-pred."""

import copy
import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from predict_helpers import K, photo, write_tiny_checkpoint

from pspnet.cli import main
from pspnet.data.io import read_mask
from pspnet.predict import expand_inputs, load_palette, predict_inputs
from pspnet.segmenter import Segmenter
from pspnet.visualize import colorize

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    return Segmenter.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture
def photos(tmp_path):
    """photos/a.png, photos/b.jpg, photos/trip/day1/c.png (30x44), photos/notes.txt (not an input in a folder)."""
    root = tmp_path / "photos"
    (root / "trip" / "day1").mkdir(parents=True)
    Image.fromarray(photo(40, 56, 1)).save(root / "a.png")
    Image.fromarray(photo(40, 56, 2)).save(root / "b.jpg", quality=95)
    Image.fromarray(photo(30, 44, 3)).save(root / "trip" / "day1" / "c.png")
    (root / "notes.txt").write_text("not a picture")
    return root


def _predict(*argv):
    return main(["predict", *map(str, argv), "--no-progress"])


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_outputs_mirror_the_inputs(checkpoint, segmenter, photos, tmp_path, capsys):
    out = tmp_path / "out"
    # --batch 1: the computation of segmenter.predict, so labels and float16 probabilities are identical (batched
    # forwards are compared with single ones in float64 in test_images_of_one_size_are_batched)
    assert _predict(checkpoint, photos, "--out", out, "--overlay", "--save-proba", "--batch", "1") == 0
    assert "predicted 3 image(s)" in capsys.readouterr().out
    for name, size in [("a", (40, 56)), ("b", (40, 56)), ("trip/day1/c", (30, 44))]:
        source = next(photos.glob(f"{name}.*"))
        index = Image.open(out / f"{name}.png")
        assert index.mode == "P" and index.size == size[::-1]
        labels = read_mask(out / f"{name}.png")  # a palette PNG reads back as the class ids
        expected = segmenter.predict(source)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, expected)
        assert index.getpalette()[: 3 * K] == [v for c in segmenter.palette for v in c]
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / f"{name}_color.png")), colorize(labels, segmenter.palette)
        )
        blend = Image.open(out / f"{name}_overlay.png")
        assert blend.height >= size[0] and blend.width > size[1]  # the legend panel sits on the right
        proba = np.load(out / f"{name}_proba.npy")
        assert proba.dtype == np.float16 and proba.shape == (K, *size)
        np.testing.assert_array_equal(proba, segmenter.predict_proba(source).astype(np.float16))
    assert not list(out.rglob("notes*")) and not list(out.rglob(".*"))  # no temporary files left behind
    rows = _csv(out / "predictions.csv")
    assert [r["output"] for r in rows] == ["a.png", "b.jpg".replace(".jpg", ".png"), "trip/day1/c.png"]
    for row in rows:
        shares = [float(row[f"class_{i}"]) for i in range(K)]
        labels = read_mask(out / row["output"])
        # shares are written with 6 decimals: each within 5e-7 of the pixel fraction (plus the parse's 1e-16)
        assert shares == pytest.approx(np.bincount(labels.ravel(), minlength=K) / labels.size, rel=0, abs=5e-7 + 1e-12)
        assert abs(sum(shares) - 1) <= K * (5e-7 + 1e-12)
        assert (int(row["height"]), int(row["width"]), row["frames"]) == (*labels.shape, "1")


def test_globs_and_single_files(checkpoint, photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    # a quoted recursive glob: names relative to its base "photos"; a single file: its own name
    assert _predict(checkpoint, "photos/**/*.png", str(photos / "b.jpg"), "--out", out) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "a_color.png", "b.png", "b_color.png", "trip/day1/c.png", "trip/day1/c_color.png"]
    items, failures = expand_inputs(["photos/*.png", "photos/trip", "photos/a.png", "photos/nothing*.jpg"])
    assert [(i.source.as_posix(), i.name) for i in items] == [
        ("photos/a.png", "a"),
        ("photos/trip/day1/c.png", "day1/c"),
    ]
    assert [f.source for f in failures] == ["photos/nothing*.jpg"] and "matches no images" in failures[0].message


def test_name_clashes_keep_the_suffix(photos):
    Image.fromarray(photo(40, 56, 4)).save(photos / "a.jpg")
    items, failures = expand_inputs([photos])
    assert sorted(i.name for i in items) == ["a_jpg", "a_png", "b", "trip/day1/c"] and not failures


def test_the_output_folder_inside_an_input_folder_is_not_an_input(checkpoint, photos):
    out = photos / "predictions"
    assert _predict(checkpoint, photos, "--out", out) == 0
    assert _predict(checkpoint, photos, "--out", out) == 0  # again: its own outputs are not predicted
    assert not (out / "predictions").exists() and len(_csv(out / "predictions.csv")) == 3


def test_bad_inputs_are_reported_and_skipped(checkpoint, photos, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.jpg").write_text("hello")
    (bad / "empty.png").write_bytes(b"")
    Image.fromarray(photo(40, 56, 5)).save(bad / "truncated.png")
    data = (bad / "truncated.png").read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    status = _predict(checkpoint, photos / "a.png", bad, tmp_path / "missing.png", photos / "b.jpg", "--out", out)
    assert status == 1
    err = capsys.readouterr().err
    for name in ("text.jpg", "empty.png", "truncated.png", "missing.png"):
        assert name in err.split("failed and were skipped:")[1], name
    assert "4 input(s) failed" in err
    assert (out / "a.png").is_file() and (out / "b.png").is_file()
    assert [r["output"] for r in _csv(out / "predictions.csv")] == ["a.png", "b.png"]
    assert not list(out.glob("text*")) and not list(out.glob("empty*")) and not list(out.glob("truncated*"))


def test_palettes_by_name_and_file(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(checkpoint, photos / "a.png", "--out", out, "--palette", "camvid") == 2
    err = capsys.readouterr().err
    assert "'camvid' has 11 colours" in err and "5 classes" in err
    assert not out.exists()  # refused before any work

    colours = [[10 * i, 200 - 10 * i, 7] for i in range(K)]
    text_file = tmp_path / "palette.txt"
    text_file.write_text("# my colours\n" + "\n".join(" ".join(map(str, c)) for c in colours) + "\n")
    json_file = tmp_path / "palette.json"
    json_file.write_text(json.dumps(colours))
    assert load_palette(str(text_file), K) == load_palette(str(json_file), K) == [tuple(c) for c in colours]
    assert _predict(checkpoint, photos / "a.png", "--out", out, "--palette", text_file) == 0
    assert Image.open(out / "a.png").getpalette()[: 3 * K] == [v for c in colours for v in c]
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "a_color.png")), colorize(read_mask(out / "a.png"), colours)
    )
    short = tmp_path / "short.txt"
    short.write_text("1 2 3\n4 5 6\n")
    assert _predict(checkpoint, photos / "a.png", "--out", out, "--palette", short) == 2
    assert f"palette file {short} has 2 colours" in capsys.readouterr().err
    with pytest.raises(ValueError, match="three integers"):
        short.write_text("1 2 300\n" * K)
        load_palette(str(short), K)


def test_video_in_and_out(checkpoint, tmp_path):
    clip = tmp_path / "videos" / "clip.mp4"
    clip.parent.mkdir()
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (56, 40))
    for i in range(5):
        writer.write(photo(40, 56, i)[:, :, ::-1].copy())
    writer.release()
    out = tmp_path / "out"
    assert _predict(checkpoint, tmp_path / "videos", "--out", out, "--batch", "2") == 0
    capture = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 5 and {f.shape for f in frames} == {(40, 56, 3)}
    (row,) = _csv(out / "predictions.csv")
    assert (row["output"], row["frames"], row["height"], row["width"]) == ("clip_overlay.mp4", "5", "40", "56")
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00" * 100)
    assert _predict(checkpoint, tmp_path / "videos" / "broken.mp4", "--out", tmp_path / "out2") == 1


def test_images_of_one_size_are_batched(checkpoint, segmenter, photos, tmp_path, monkeypatch):
    for i in range(5):
        Image.fromarray(photo(40, 56, 10 + i)).save(photos / f"z{i}.png")
    sizes = []
    infer = Segmenter.infer
    monkeypatch.setattr(Segmenter, "infer", lambda self, images: sizes.append(len(images)) or infer(self, images))
    assert _predict(checkpoint, photos, "--out", tmp_path / "out", "--batch", "4") == 0
    # sorted: a.png b.jpg (one size), trip/day1/c.png (another), z0..z4 (the first size again, 4 + 1)
    assert sizes == [2, 1, 4, 1]
    # each batched output belongs to its own input: in float64 (logits of batched and single forwards within
    # ~1e-15, below float32's resolution) the labels equal one-by-one predictions exactly
    sizes.clear()
    exact = Segmenter(copy.deepcopy(segmenter.model).double(), segmenter.settings)
    assert predict_inputs(exact, [photos], tmp_path / "out64", batch=4, progress=False).ok
    assert sizes == [2, 1, 4, 1]
    for source in sorted(p for p in photos.rglob("*") if p.suffix in (".png", ".jpg")):
        name = source.relative_to(photos).with_suffix("").as_posix()
        np.testing.assert_array_equal(read_mask(tmp_path / "out64" / f"{name}.png"), exact.predict(source))


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_predict_gives_the_labels_of_eval_save_pred(checkpoint, tmp_path, mode):
    root = tmp_path / "folder"
    (root / "images" / "val" / "site").mkdir(parents=True)
    (root / "masks" / "val" / "site").mkdir(parents=True)
    (root / "classes.yaml").write_text("classes: [c0, c1, c2, c3, c4]\ncrop_size: [40, 56]\nbase_size: 56\n")
    for i, name in enumerate(["p0", "p1", "site/p2"]):
        size = (40, 56) if i < 2 else (48, 36)
        Image.fromarray(photo(*size, 20 + i)).save(root / "images" / "val" / f"{name}.png")
        Image.fromarray((np.arange(size[0] * size[1]) % K).reshape(size).astype(np.uint8)).save(
            root / "masks" / "val" / f"{name}.png"
        )
    ev = tmp_path / "eval"
    argv = ["eval", str(checkpoint), "--dataset", "folder", "--root", str(root), "--mode", mode]
    assert main([*argv, "--save-pred", "--out", str(ev), "--workers", "0"]) == 0
    pr = tmp_path / "pred"
    # --batch 1: eval forwards one image at a time; the same computation gives bit-identical probabilities
    assert _predict(checkpoint, root / "images" / "val", "--out", pr, "--mode", mode, "--batch", "1") == 0
    for name in ["p0", "p1", "site/p2"]:
        np.testing.assert_array_equal(read_mask(pr / f"{name}.png"), read_mask(ev / "predictions" / f"{name}.png"))
