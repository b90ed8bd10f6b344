"""pspnet demo end to end with a handful of iterations (the real demo trains for DEMO_CONFIG['time_budget']
minutes of training steps)."""

import json
import re

import yaml

from pspnet.cli import main
from pspnet.demo import DEMO_CONFIG


def test_demo_config_file_matches_the_package():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    assert yaml.safe_load(path.read_text()) == DEMO_CONFIG


def test_demo_with_ablation_writes_a_complete_report(tmp_path, monkeypatch, capsys):
    from pspnet import demo

    monkeypatch.setitem(demo.DEMO_CONFIG, "time_budget", None)
    monkeypatch.setitem(demo.DEMO_CONFIG, "iterations", 3)
    monkeypatch.setitem(demo.DEMO_CONFIG, "checkpoint_every", 3)
    monkeypatch.setitem(demo.DEMO_CONFIG, "val_every", 3)
    monkeypatch.setattr(demo, "SCENES", {"train": 24, "val": 4, "test": 2})
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--ablation"]) == 0
    printed = capsys.readouterr().out
    assert re.search(
        r"mIoU on the validation scenes: [\d.]+; without pyramid pooling: [\d.]+ \(gap [-+][\d.]+ points\)", printed
    )
    assert "index.html" in printed
    report = json.loads((out / "metrics.json").read_text())
    assert set(report) >= {"mIoU", "mAcc", "allAcc", "mBIoU", "per_class", "confusion", "settings"}
    assert len(report["per_class"]) == 8 and report["per_class"][3]["name"] == "water"
    assert json.loads((out / "metrics_no_ppm.json").read_text())["mIoU"] is not None
    # every picture the page shows exists
    page = (out / "index.html").read_text()
    sources = re.findall(r"src=['\"]([^'\"]+)['\"]", page)
    assert len(sources) >= 2 * (2 + 4) + 4  # two scenes x (photo, truth, 2 x (prediction, overlay)) + charts
    for source in sources:
        assert (out / source).is_file(), source
    # the trained models load from the run directories
    import pspnet

    assert pspnet.load_model(out / "run").config.ppm is True
    assert pspnet.load_model(out / "run_no_ppm").config.ppm is False
    # a second demo into the same folder needs --force
    assert main(["demo", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_demo_refuses_a_folder_with_other_files(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    assert main(["demo", "--out", str(tmp_path), "--force"]) == 2
    assert "thesis.tex" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "precious"
