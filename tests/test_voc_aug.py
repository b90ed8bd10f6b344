"""``pspnet data prepare voc-aug`` on a tiny fake SBD release and VOC 2012 tree."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
from test_datasets import label, opened, photo, save

from pspnet.data.classes import DATASETS
from pspnet.data.cli_data import add_data_commands
from pspnet.data.datasets import build_dataset
from pspnet.data.io import write_mask_png
from pspnet.data.voc_aug import prepare_voc_aug, read_sbd_mat
from pspnet.errors import DataError

scipy_io = pytest.importorskip("scipy.io")

SBD_TRAIN = ["2008_000002", "2008_000003", "2007_000039"]
SBD_VAL = ["2008_000004", "2007_000033"]  # 2007_000033 is in VOC val: excluded
VOC_TRAIN = ["2007_000032", "2007_000039"]
VOC_VAL = ["2007_000033"]
EXPECTED = ["2007_000032", "2007_000039", "2008_000002", "2008_000003", "2008_000004"]


def save_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    """A cls/*.mat file as the SBD release stores it: struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8)
    scipy_io.savemat(
        path, {"GTcls": {"Segmentation": segmentation, "Boundaries": np.zeros(1), "CategoriesPresent": present}}
    )


def make_trees(tmp_path: Path) -> tuple[Path, Path]:
    sbd = tmp_path / "benchmark_RELEASE"
    for i, name in enumerate(SBD_TRAIN + SBD_VAL):
        save_sbd_mat(sbd / "dataset" / "cls" / f"{name}.mat", label([0, i + 1, 20]))
    (sbd / "dataset" / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "dataset" / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for name in sorted(set(SBD_TRAIN + SBD_VAL + VOC_TRAIN + VOC_VAL)):
        save(voc / "JPEGImages" / f"{name}.jpg", photo())
    for name in VOC_TRAIN + VOC_VAL:
        write_mask_png(voc / "SegmentationClass" / f"{name}.png", label([15, 255, 0]), DATASETS["voc"].palette)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    return sbd, voc


def test_read_sbd_mat_round_trip(tmp_path):
    mask = label([0, 5, 20])
    save_sbd_mat(tmp_path / "a.mat", mask)
    out = read_sbd_mat(tmp_path / "a.mat")
    assert out.dtype == np.uint8 and (out == mask).all()
    save_sbd_mat(tmp_path / "b.mat", label([0, 42]))
    with pytest.raises(DataError, match=r"b\.mat.*42"):
        read_sbd_mat(tmp_path / "b.mat")
    scipy_io.savemat(tmp_path / "c.mat", {"other": np.zeros(2)})
    with pytest.raises(DataError, match=r"c\.mat.*GTcls"):
        read_sbd_mat(tmp_path / "c.mat")


def test_prepare_voc_aug(tmp_path):
    sbd, voc = make_trees(tmp_path)
    summary = prepare_voc_aug(sbd, tmp_path, progress=False)
    assert (summary.sbd_train, summary.sbd_val, summary.voc_train, summary.voc_val) == (3, 2, 2, 1)
    assert summary.train_aug == 5 and summary.from_voc == 2 and summary.from_sbd == 3
    list_file = voc / "ImageSets" / "Segmentation" / "train_aug.txt"
    assert summary.list_file == list_file and list_file.read_text().split() == EXPECTED
    assert sorted(p.name for p in (voc / "SegmentationClassAug").iterdir()) == [f"{n}.png" for n in EXPECTED]
    assert opened(voc / "SegmentationClassAug" / "2008_000002.png").mode == "L"  # plain index PNGs
    assert "train_aug: 5 images" in summary.format()

    aug = build_dataset("voc", tmp_path, "train_aug")
    masks = {s.name: aug.load(i)[1] for i, s in enumerate(aug.samples)}
    assert masks["2008_000002"].flat[:3].tolist() == [0, 1, 20]  # from SBD
    assert masks["2007_000039"].flat[:3].tolist() == [15, 255, 0]  # in both: VOC's mask (with its border) wins
    assert masks["2007_000032"].flat[:3].tolist() == [15, 255, 0]  # VOC train only

    # SBD root given as its dataset/ folder works too; a rerun rewrites the same files
    again = prepare_voc_aug(sbd / "dataset", voc, progress=False)
    assert again.train_aug == 5 and list_file.read_text().split() == EXPECTED


def test_prepare_voc_aug_refuses_missing_inputs(tmp_path):
    sbd, voc = make_trees(tmp_path)
    with pytest.raises(DataError, match="SBD"):
        prepare_voc_aug(tmp_path / "nothing", voc, progress=False)
    (sbd / "dataset" / "cls" / "2008_000003.mat").unlink()
    with pytest.raises(DataError, match=r"1 train_aug masks not found: .*2008_000003\.mat"):
        prepare_voc_aug(sbd, voc, progress=False)
    assert not (voc / "SegmentationClassAug").exists()  # refused before writing anything
    (sbd / "dataset" / "val.txt").unlink()
    with pytest.raises(DataError, match=r"val\.txt"):
        prepare_voc_aug(sbd, voc, progress=False)


def test_prepare_cli_and_missing_scipy(tmp_path, capsys, monkeypatch):
    sbd, voc = make_trees(tmp_path)
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "prepare", "voc-aug", "--sbd", str(sbd), "--voc", str(voc), "--no-progress"])
    assert args.func(args) == 0
    assert "train_aug: 5 images" in capsys.readouterr().out
    args = parser.parse_args(["data", "prepare", "voc-aug", "--sbd", str(tmp_path / "x"), "--voc", str(voc)])
    assert args.func(args) == 1
    assert "SBD folder not found" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    args = parser.parse_args(["data", "prepare", "voc-aug", "--sbd", str(sbd), "--voc", str(voc)])
    assert args.func(args) == 1
    assert "pip install 'pspnet[sbd]'" in capsys.readouterr().err
