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


def _small_demo(monkeypatch, schedule: dict, train_scenes: int, test_scenes: int) -> None:
    """The demo on small crops (32x128, batch 2, no loader workers) of a few scenes, with ``schedule`` (its
    stopping rule and validation) set in DEMO_CONFIG."""
    from pspnet import demo

    for key, value in {**schedule, "batch_size": 2, "crop_size": [32, 128], "workers": 0}.items():
        monkeypatch.setitem(demo.DEMO_CONFIG, key, value)
    monkeypatch.setattr(demo, "SCENES", {"train": train_scenes, "val": 2, "test": test_scenes})


def test_demo_with_ablation_writes_a_complete_report(tmp_path, monkeypatch, capsys):
    # a small demo: a few iterations on small crops of a few scenes (the page and files are what is tested)
    _small_demo(monkeypatch, {"time_budget": None, "iterations": 3, "checkpoint_every": 3, "val_every": 3}, 6, 2)
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


def _demo_help() -> str:
    from pspnet.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return commands.choices["demo"].format_help()


def test_compare_includes_the_ablation_and_every_architecture():
    from pspnet.demo import VARIANTS, demo_variants
    from pspnet.models.config import ARCHITECTURES

    assert demo_variants() == ("",)
    assert demo_variants(ablation=True) == ("", "_no_ppm")
    assert demo_variants(compare=True) == demo_variants(compare=True, ablation=True) == tuple(VARIANTS)
    assert {VARIANTS[key].changes.get("architecture", "pspnet") for key in VARIANTS} == set(ARCHITECTURES)
    assert "--ablation with --compare is --compare" in " ".join(_demo_help().split())


def test_demo_compare_trains_every_architecture_for_the_same_iterations(tmp_path, monkeypatch, capsys):
    import numpy as np

    import pspnet
    from pspnet import demo
    from pspnet.data.datasets import build_dataset
    from pspnet.data.io import read_image
    from pspnet.inference import InferenceSettings
    from pspnet.segmenter import Segmenter
    from pspnet.visualize import colorize, with_legend

    # the smallest demo that still trains every model: a time budget far below one step gives the first model one
    # iteration, and every other model must then train exactly as many
    _small_demo(monkeypatch, {"time_budget": 0.001, "val_split": None}, 4, 1)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--compare"]) == 0
    printed = capsys.readouterr().out
    titles = [variant.title for variant in demo.VARIANTS.values()]
    assert "5 models, one after another: PSPNet for 0.001 minutes of training steps" in printed
    for number, title in enumerate(titles, start=1):
        assert f"[{number}/5] training {title} for " in printed
        assert re.search(rf"\[{number}/5\] {re.escape(title)}: 1 iterations, \d+ s of training; ", printed)
    assert re.search(r"about [\d.]+ (s|minutes) left for the other 4", printed)
    assert "comparison.json" in printed

    comparison = json.loads((out / "comparison.json").read_text())
    entries = {entry["name"]: entry for entry in comparison["models"]}
    assert list(entries) == ["pspnet", "no_ppm", "skip_decoder", "deeplabv3plus", "unet"]
    assert [entries[n]["architecture"] for n in entries] == ["pspnet"] * 3 + ["deeplabv3plus", "unet"]
    assert {entry["iterations"] for entry in entries.values()} == {1}
    # the demo's widths, except where they do not fit an architecture: U-Net keeps its output stride and widths
    width = demo.DEMO_CONFIG["head_channels"]
    assert [entries[n]["model"]["head_channels"] for n in entries] == [width] * 4 + [256]
    assert [entries[n]["model"]["output_stride"] for n in entries] == [8, 8, 8, 8, 32]
    assert {entry["model"]["aux_channels"] for entry in entries.values()} == {demo.DEMO_CONFIG["aux_channels"]}
    assert "5 decoder blocks 256-128-64-32-16 channels" in entries["unet"]["settings"]
    assert entries["no_ppm"]["model"]["ppm"] is False and entries["skip_decoder"]["model"]["skip_decoder"] is True
    assert len({entry["parameters"] for entry in entries.values()}) == 5
    for name, entry in entries.items():
        assert entry["training_seconds"] > 0 and entry["settings"]
        metrics = json.loads((out / entry["metrics"]).read_text())
        assert metrics["mIoU"] == entry["mIoU"] and metrics["mBIoU"] == entry["mBIoU"]
        assert metrics["settings"]["checkpoint"] == str(out / entry["run"])
        assert len(entry["per_class"]) == 8
        model = pspnet.load_model(out / entry["run"])
        assert model.config.architecture == entry["architecture"]
        log = [json.loads(line) for line in (out / entry["run"] / "log.jsonl").read_text().splitlines()]
        # the first model turned the time budget into iterations; the others were given that many
        assert any(record.get("event") == "time budget" for record in log) == (name == "pspnet")

    # the page: every model in the tables, its metrics file, its curve and its prediction of each held-out scene
    page = (out / "index.html").read_text()
    assert "seed 0 and 1 iterations, as many as PSPNet made in its 0.001-minute time budget" in page
    for title in titles:
        assert page.count(f"<td>{title}</td>") == 1, title  # its row in the models table
        assert page.count(f"<figcaption>{title}</figcaption>") == 2, title  # its curve and its prediction
    for entry in entries.values():
        assert f'href="{entry["metrics"]}"' in page or entry["metrics"] == "metrics.json"
    sources = re.findall(r"src=['\"]([^'\"]+)['\"]", page)
    for source in sources:
        assert (out / source).is_file(), source
    predictions = sorted(s for s in sources if "_pred" in s)
    assert len(predictions) == 5

    # each picture is its own model's prediction, not a copy of another's
    data = out / "data"
    test = build_dataset("folder", data, "test")
    image, _ = test.load(0)
    palette = [tuple(c) for c in test.info.palette]
    pictures = []
    for key, entry in zip(demo.VARIANTS, entries.values()):
        pred = Segmenter(pspnet.load_model(out / entry["run"]), InferenceSettings(mode="whole")).predict(image)
        expected = with_legend(colorize(pred, palette), pred, list(test.info.classes), palette)
        shown = read_image(out / "predictions" / f"{test.samples[0].name}_pred{key}.png")
        assert np.array_equal(shown, expected), entry["name"]
        pictures.append(shown.tobytes())
    assert len(set(pictures)) == 5

    # --force can clear every file the comparison wrote
    demo._prepare(out, force=True)
    assert list(out.iterdir()) == []
