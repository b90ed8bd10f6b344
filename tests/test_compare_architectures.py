"""benchmarks/compare_architectures.py: its tables and the arithmetic of its verdicts, on hand-worked cases (the
script's end-to-end run trains five models; its ``--smoke`` mode checks that path outside the suite)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pspnet.demo import VARIANTS
from pspnet.engine.config import load_train_config
from pspnet.models.config import ARCHITECTURES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_architectures.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("compare_architectures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_the_row_tables_agree_with_the_rows_built(script):
    config = load_train_config(str(script.CONFIG))
    rows = script.variants(config)
    assert tuple(v.key for v in rows) == script.ROW_KEYS
    # the demo's comparison.json names (a VARIANTS key without its "_", "" for PSPNet) map onto every row once
    demo_names = [key.removeprefix("_") or "pspnet" for key in VARIANTS]
    assert sorted(script.DEMO_ROWS) == sorted(demo_names)
    assert sorted(script.DEMO_ROWS.values()) == sorted(script.ROW_KEYS)


def test_head_widths_scale_with_the_configs_departure_from_the_paper(script):
    # the CPU config's PSPNet head is 128 wide against the paper's 512: a factor of 1/4
    config = load_train_config(str(script.CONFIG))
    assert config.model.head_channels * 4 == ARCHITECTURES["pspnet"].head_channels
    assert script.head_width(config, "deeplabv3plus") == ARCHITECTURES["deeplabv3plus"].head_channels // 4
    # U-Net's 256 / 4 = 64 would leave its last block 64 / 2**4 = 4 channels for 11 classes: kept at 16 * 2**4
    assert ARCHITECTURES["unet"].head_channels // 4 == 64
    assert script.head_width(config, "unet") == script.UNET_NARROWEST * 2 ** (script.UNET_BLOCKS - 1) == 256


def test_judge_calls_a_gap_only_beyond_the_larger_noise(script):
    assert script.judge(30.0, 25.0, [2.0, 4.0], "a vs b", "") == (
        1,
        "a vs b: higher (30.0 against 25.0, gap +5.0, noise 4.0)",
    )
    assert script.judge(21.0, 25.0, [None, 3.5], "a vs b", "")[0] == -1  # gap -4.0 beyond 3.5
    assert script.judge(29.0, 25.0, [4.0, 1.0], "a vs b", "")[0] == 0  # a gap equal to the noise is within it
    assert script.judge(29.0, 25.0, [None, None], "a vs b", "") == (
        None,
        "a vs b: 29.0 against 25.0, gap +4.0; not judged: the noise was not measured",
    )
    assert script.judge(None, 25.0, [1.0], "a vs b", "")[0] is None
    assert "0.41 against 0.52 GiB, gap -0.11" in script.judge(0.41, 0.52, [0.01], "m", " GiB", digits=2)[1]


@pytest.mark.parametrize(
    ("signs", "verdict"),
    [
        ([1, 1], "holds on this evidence"),
        ([1, None], "partly holds"),
        ([1, 0], "partly holds"),
        ([0, 0, None], "not shown"),
        ([-1, 0], "does not hold"),
        ([-1, 1], "mixed"),
        ([None, None], "not judged"),
    ],
)
def test_overall_verdicts(script, signs, verdict):
    assert script.overall(signs).startswith(verdict)


def test_noise_is_the_larger_of_the_checkpoint_swing_and_the_seed_spread(script):
    seeds = [
        {"scores": {"mIoU": 30.0, "thin": None}, "swings": {"mIoU": 1.5, "thin": None}},
        {"scores": {"mIoU": 27.0, "thin": None}, "swings": {"mIoU": 2.0, "thin": None}},
    ]
    row = script.combine_seeds(seeds)
    assert row["scores"] == {"mIoU": 28.5, "thin": None}
    assert row["noise"] == {"mIoU": 3.0, "thin": None}  # the seeds differ by 3.0, more than either swing
    seeds[1]["scores"]["mIoU"] = 29.5
    assert script.combine_seeds(seeds)["noise"]["mIoU"] == 2.0
    assert script.spread([None, 4.0]) is None and script.spread([3.0, None, 5.5, 4.0]) == 2.5


def test_swing_iterations_are_the_last_validations_and_the_end(script):
    plan = script.Plan(
        config=script.CONFIG, recipe=(), root=Path("."), iterations=1000, seeds=(0,), val_every=100, swing=3,
        eval_limit=None, speed_repeats=1, memory_batch=2, memory_crop=(24, 24), memory_steps=1, memory_processes=1,
        work=Path("."), doc=Path("page.md"), smoke=True,
    )  # fmt: skip
    assert script.swing_iterations(plan) == [800, 900, 1000]
    from dataclasses import replace

    assert script.swing_iterations(replace(plan, iterations=250)) == [100, 200, 250]


def test_context_results_are_read_from_the_demos_comparison(script, tmp_path):
    models = [
        {"name": "pspnet", "iterations": 40, "mIoU": 0.5, "mBIoU": 0.25},
        {"name": "no_ppm", "iterations": 40, "mIoU": 0.375, "mBIoU": 0.125},
        {"name": "someone_else", "iterations": 40, "mIoU": 0.9, "mBIoU": 0.9},
    ]
    (tmp_path / "comparison.json").write_text(json.dumps({"models": models}))
    context = script.read_context(tmp_path)
    assert context["mIoU"] == {"pspnet": 50.0, "pspnet_noppm": 37.5}
    assert context["mBIoU"] == {"pspnet": 25.0, "pspnet_noppm": 12.5}
    assert context["iterations"] == {"pspnet": 40, "pspnet_noppm": 40}

    broken = tmp_path / "broken.json"
    broken.write_text('{"models": [{"name": "pspnet"}]}')
    with pytest.raises(SystemExit, match=r"--context .*broken\.json: not a comparison\.json"):
        script.read_context(broken)
