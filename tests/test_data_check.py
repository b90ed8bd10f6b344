"""``pspnet data check``: clean trees pass, every problem kind is found with its files, the CLI's exit status."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_datasets import CLASSES_YAML, H, W, label, make_camvid, make_folder, make_voc, photo, save

from pspnet.data.check import check_dataset
from pspnet.data.cli_data import add_data_commands


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    add_data_commands(commands)
    args = parser.parse_args(argv)
    return args.func(args)


def test_clean_tree_exits_0_and_frequencies_sum_to_1(tmp_path, capsys):
    make_camvid(tmp_path)
    assert run(["data", "check", "--dataset", "camvid", "--root", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "images: 3 (3 with masks)" in out and "all 6x8" in out and "OK: no problems found" in out
    assert "Bicyclist" in out and "Sky" in out
    report = check_dataset("camvid", tmp_path, "train", progress=False)
    assert report.ok and report.images == report.masks == 3
    assert sum(report.class_frequencies) == pytest.approx(1.0)
    # label([0, 10, 11, 3]): 3 ignored pixels, 1 Bicyclist and 1 Road pixel per mask, the rest Sky
    assert report.ignored_pixels == 3 and report.class_pixels[10] == 3 and report.class_pixels[3] == 3
    assert report.class_pixels[0] == 3 * (H * W - 3)


def _by_kind(report):
    found: dict[str, list] = {}
    for problem in report.problems:
        found.setdefault(problem.kind, []).append(problem)
    return found


def test_every_problem_kind_names_its_files(tmp_path, capsys):
    root = make_folder(tmp_path / "data")
    images, masks = root / "images" / "train", root / "masks" / "train"
    save(images / "lonely.jpg", photo())  # image without mask
    save(masks / "orphan.png", label([0]))  # mask without image
    save(images / "wide.png", photo(h=H, w=W + 2))  # size mismatch
    save(masks / "wide.png", label([0]))
    save(images / "badlabel.png", photo())  # value 7 is no class of 3 and not 255
    save(masks / "badlabel.png", label([0, 7, 9]))
    save(images / "colour.png", photo())  # colour not in classes.yaml
    colour = np.full((H, W, 3), (128, 64, 128), np.uint8)
    colour[0, 0] = (1, 2, 3)
    save(masks / "colour.png", colour)
    cut = save(images / "cut.jpg", photo(h=64, w=64))  # truncated
    cut.write_bytes(cut.read_bytes()[:300])
    save(masks / "cut.png", label([0], h=64, w=64))
    save(images / "dup.jpg", photo())  # two images with one name
    save(images / "dup.png", photo())
    save(masks / "dup.png", label([0]))
    exif = Image.Exif()
    exif[0x0112] = 6
    save(images / "raw.jpg", photo(h=H, w=W), exif=exif)  # upright it is W x H; mask drawn on the raw H x W grid
    save(masks / "raw.png", label([0], h=H, w=W))
    save(images / "upright.jpg", photo(h=H, w=W), exif=exif)  # mask matches the upright size: a warning
    save(masks / "upright.png", label([0], h=W, w=H))

    report = check_dataset("folder", root, "train", progress=False)
    found = _by_kind(report)
    assert [p.files for p in found["image_without_mask"]] == [(str(images / "lonely.jpg"),)]
    assert [p.files for p in found["mask_without_image"]] == [(str(masks / "orphan.png"),)]
    assert [p.files for p in found["size_mismatch"]] == [(str(images / "wide.png"), str(masks / "wide.png"))]
    bad = {p.files: p.detail for p in found["bad_labels"]}
    assert "7, 9" in bad[(str(masks / "badlabel.png"),)]
    assert "(1, 2, 3)" in bad[(str(masks / "colour.png"),)]
    assert [p.files for p in found["unreadable"]] == [(str(cut),)] and "truncated" in found["unreadable"][0].detail
    assert {f for p in found["duplicate_image"] for f in p.files} == {str(images / "dup.jpg"), str(images / "dup.png")}
    exif_problems = {p.files[0]: p for p in found["exif_orientation"]}
    raw = exif_problems[str(images / "raw.jpg")]
    assert raw.severity == "error" and "RAW size" in raw.detail and raw.files[1] == str(masks / "raw.png")
    upright = exif_problems[str(images / "upright.jpg")]
    assert upright.severity == "warning" and "upright size" in upright.detail
    assert not report.ok
    assert sum(report.class_frequencies) == pytest.approx(1.0)

    assert run(["data", "check", "--dataset", "folder", "--root", str(root), "--no-progress"]) == 1
    out = capsys.readouterr().out
    for name in ("lonely.jpg", "orphan.png", "wide.png", "badlabel.png", "colour.png", "cut.jpg", "raw.jpg"):
        assert name in out
    assert "FAILED" in out and "exif_orientation (2)" in out


def test_camvid_raw_values_above_11_and_warnings_only(tmp_path):
    make_camvid(tmp_path)
    save(tmp_path / "trainannot" / "0001TP_000001.png", label([0, 11, 12, 255]))
    report = check_dataset("camvid", tmp_path, "train", progress=False)
    (problem,) = report.problems
    assert problem.kind == "bad_labels" and problem.files == (str(tmp_path / "trainannot" / "0001TP_000001.png"),)
    assert "12, 255" in problem.detail and "11" not in problem.detail.split("neither")[0]
    # a folder split with only a warning (no masks folder: unlabelled) passes
    make_folder(tmp_path / "f")
    save(tmp_path / "f" / "images" / "predict" / "x.png", photo())
    report = check_dataset("folder", tmp_path / "f", "predict", progress=False)
    assert report.ok and [p.kind for p in report.problems] == ["unlabelled_split"]


def test_layout_problems_missing_root_list_and_empty_split(tmp_path, capsys):
    assert run(["data", "check", "--dataset", "voc", "--root", str(tmp_path / "none"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "missing_root" in out and f"{tmp_path / 'none'}: data set root folder not found" in out
    make_voc(tmp_path / "VOC2012")
    report = check_dataset("voc", tmp_path, "trainval", progress=False)
    assert [(p.kind, p.files) for p in report.problems] == [
        ("missing_list", (str(tmp_path / "VOC2012" / "ImageSets" / "Segmentation" / "trainval.txt"),))
    ]
    (tmp_path / "VOC2012" / "ImageSets" / "Segmentation" / "empty.txt").write_text("")
    assert [p.kind for p in check_dataset("voc", tmp_path, "empty", progress=False).problems] == ["empty_split"]
    (tmp_path / "VOC2012" / "ImageSets" / "Segmentation" / "gone.txt").write_text("2009_999999\n")
    (problem,) = check_dataset("voc", tmp_path, "gone", progress=False).problems[:1]
    assert problem.kind == "missing_image" and problem.files[0].endswith("2009_999999.jpg")
    make_folder(tmp_path / "f", CLASSES_YAML.replace("ignore_index", "ignore"))
    (problem,) = check_dataset("folder", tmp_path / "f", "train", progress=False).problems
    assert problem.kind == "bad_classes_file" and "'ignore'" in problem.detail


def test_json_output_and_usage_errors(tmp_path, capsys):
    make_camvid(tmp_path)
    assert run(["data", "check", "--dataset", "camvid", "--root", str(tmp_path), "--split", "val", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] and data["images"] == 3 and data["split"] == "val" and data["problems"] == []
    assert data["image_sizes"]["counts"] == [{"height": H, "width": W, "count": 3}]
    assert [c["name"] for c in data["classes"]][:2] == ["Sky", "Building"]
    assert sum(c["frequency"] for c in data["classes"]) == pytest.approx(1.0)
    assert captured.err == ""  # no progress bar with --json
    assert run(["data", "check", "--dataset", "camvid", "--root", str(tmp_path), "--split", "tran"]) == 2
    assert "train, val, test" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        run(["data", "check", "--dataset", "coco", "--root", str(tmp_path)])
    assert caught.value.code == 2
    assert run(["data", "check", "--dataset", "camvid", "--root", str(tmp_path / "nope"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert not data["ok"] and data["problems"][0]["kind"] == "missing_root"


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    make_camvid(tmp_path)
    report = check_dataset("camvid", Path(tmp_path), "train", progress=True, workers=1)
    captured = capsys.readouterr()
    assert report.ok and "check camvid/train" in captured.err and "3/3" in captured.err and captured.out == ""
    assert "OK: no problems found" in report.format() and report.to_dict()["ok"]
