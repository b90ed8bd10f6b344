"""pspnet eval end to end: a converted official-layout checkpoint with 11 classes on the shared CamVid val split.

Images are evaluated at a long side of at most 97 px (--base-size) so that the tiny model runs in seconds; the
metrics are meaningless for random weights, the run and its bookkeeping are what is checked.
"""

import json

import numpy as np
import pytest
import torch
from conftest import SHARED, tiny_pspnet
from layouts import to_official
from PIL import Image

from pspnet.cli import main
from pspnet.data.io import read_mask
from pspnet.weights.convert import convert

CAMVID = SHARED / "data" / "camvid"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(3)
    sd = {f"module.{k}": v for k, v in to_official(tiny_pspnet(11).state_dict()).items()}
    torch.save({"epoch": 1, "state_dict": sd}, folder / "official.pth")
    convert("official", folder / "official.pth", folder / "camvid.safetensors", dataset="camvid")
    return folder / "camvid.safetensors"


def _eval(checkpoint, out, *extra):
    argv = ["eval", str(checkpoint), "--dataset", "camvid", "--root", str(CAMVID), "--limit", "2"]
    argv += ["--out", str(out), "--workers", "0", *extra]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


MODES = {
    "whole": ["--mode", "whole", "--base-size", "97"],
    "slide": ["--mode", "slide", "--base-size", "97", "--crop", "49", "49"],
    "auto-native-small-crop": ["--base-size", "80", "--crop", "60", "60"],
    "multi-scale-flip": [
        "--mode",
        "slide",
        "--base-size",
        "64",
        "--crop",
        "49",
        "49",
        "--flip",
        "--scales",
        "0.75",
        "1.0",
        "1.5",
    ],
    "bf16": ["--mode", "whole", "--base-size", "97", "--precision", "bf16"],
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_eval_in_every_mode(checkpoint, tmp_path, mode, capsys):
    report = _eval(checkpoint, tmp_path, *MODES[mode])
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "Bicyclist" in printed
    assert set(report) >= {"mIoU", "mAcc", "allAcc", "mBIoU", "per_class", "confusion", "settings"}
    assert [row["name"] for row in report["per_class"]][:2] == ["Sky", "Building"]
    for key in ("mIoU", "mAcc", "allAcc", "mBIoU"):
        assert report[key] is None or 0.0 <= report[key] <= 1.0
    confusion = np.array(report["confusion"])
    assert confusion.shape == (11, 11)
    # every labelled pixel of the two images is counted exactly once, at full resolution
    names = sorted(p.name for p in (CAMVID / "valannot").iterdir())[:2]
    labelled = sum(int((read_mask(CAMVID / "valannot" / n) != 11).sum()) for n in names)
    assert confusion.sum() == labelled
    assert [row["gt_pixels"] for row in report["per_class"]] == confusion.sum(1).tolist()
    assert (tmp_path / "confusion.png").stat().st_size > 0 and (tmp_path / "per_class_iou.png").stat().st_size > 0
    assert report["settings"]["dataset"] == "camvid" and report["images"] == 2


def test_saved_predictions_give_the_reported_metrics(checkpoint, tmp_path):
    report = _eval(checkpoint, tmp_path, "--mode", "whole", "--base-size", "97", "--save-pred")
    preds = sorted((tmp_path / "predictions").glob("*.png"))
    assert len(preds) == 2
    k = 11
    matrix = np.zeros((k, k), dtype=np.int64)
    for pred_path in preds:
        pred_image = Image.open(pred_path)
        assert pred_image.mode == "P" and pred_image.size == (480, 360)
        pred = np.asarray(pred_image).astype(np.int64)
        gt = np.asarray(Image.open(CAMVID / "valannot" / pred_path.name)).astype(np.int64)
        valid = gt != 11
        np.add.at(matrix, (gt[valid], pred[valid]), 1)
    assert matrix.tolist() == report["confusion"]
    tp = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - tp
    ious = [t / u for t, u in zip(tp, union) if u > 0]
    assert report["mIoU"] == pytest.approx(float(np.mean(ious)), abs=1e-12)
    assert report["allAcc"] == pytest.approx(tp.sum() / matrix.sum(), abs=1e-12)


def test_eval_refuses_a_model_with_another_class_count(tmp_path, capsys):
    from pspnet.weights.model_file import save_model

    path = save_model(tiny_pspnet(5), tmp_path / "five.safetensors")
    assert main(["eval", str(path), "--dataset", "camvid", "--root", str(CAMVID), "--limit", "1"]) == 1
    assert "5 classes" in capsys.readouterr().err


def test_save_pred_needs_out(checkpoint):
    assert main(["eval", str(checkpoint), "--dataset", "camvid", "--root", str(CAMVID), "--save-pred"]) == 2


def test_sizes_default_to_the_data_set_for_a_checkpoint_made_elsewhere(tmp_path):
    from pspnet.weights.model_file import make_card, save_model

    model = tiny_pspnet(11)
    path = save_model(model, tmp_path / "generic.safetensors", card=make_card(model.config, crop_size=(97, 97)))
    report = _eval(path, tmp_path / "out", "--base-size", "97", "--limit", "1")
    assert report["settings"]["crop_size"] == [360, 480]  # CamVid's, not the checkpoint's 97x97
    assert report["settings"]["base_size"] == 97  # the explicit flag wins


def test_native_base_size_keeps_the_image_size(checkpoint, tmp_path):
    report = _eval(checkpoint, tmp_path, "--mode", "whole", "--base-size", "native", "--limit", "1")
    assert report["settings"]["base_size"] is None
    assert np.array(report["confusion"]).sum() > 0
