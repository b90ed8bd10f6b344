"""``pspnet bench`` (pspnet.bench.run_bench and the CLI) on a tiny model at 33x33: every section is there with
positive finite numbers, the FLOP counts equal independent counts, the training step runs train_step in a process
of its own, and the command writes its JSON. Times are never asserted."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_pspnet
from torch.utils.flop_counter import FlopCounterMode

import pspnet
from pspnet import bench
from pspnet.bench import (
    WHAT,
    conv_flops,
    forward_flops,
    measure_forward,
    measure_train,
    parse_what,
    run_bench,
    time_train_steps,
)
from pspnet.cli import main
from pspnet.inference import resized_size, window_starts

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (33, 33)
CROP, BASE = (24, 24), 33
SHAPES = ((8, 16, 12, 10), (16, 8, 9, 11))  # (Cin, Cout, H, W) of the ceiling's convolutions
BATCH, TRAIN_BATCH = 2, 2


def _tiny_model() -> pspnet.PSPNet:
    model = tiny_pspnet(3)
    model.card = pspnet.make_card(model.config, crop_size=CROP, base_size=BASE)
    return model


@pytest.fixture(scope="module")
def report(one_thread) -> dict:
    return run_bench(
        _tiny_model(),
        device="cpu",
        precision="fp32",
        size=SIZE,
        batch=BATCH,
        train_size=SIZE,
        train_batch=TRAIN_BATCH,
        repeat=1,
        ceiling_shapes=SHAPES,
        data_images=4,
    )


def _numbers(value):
    """Every int and float inside ``value`` (dicts and lists walked), booleans excluded."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_every_section_has_positive_finite_numbers(report):
    assert set(WHAT) <= set(report) and {"machine", "model", "settings"} <= set(report)
    json.loads(json.dumps(report, allow_nan=False))  # JSON as it is
    for name in WHAT:
        numbers = list(_numbers(report[name]))
        assert numbers and all(math.isfinite(n) for n in numbers), name
    for name, key in [("forward", "gflops"), ("train", "gflops"), ("protocol", "seconds"), ("data", "images_per_s")]:
        assert report[name][key] > 0 and report[name]["seconds" if name != "data" else "seconds_per_image"] > 0
    machine = report["machine"]
    assert machine["precision"] == "fp32" and machine["precision_why"] == "as asked"
    assert machine["threads"] == 1 and machine["isa"] and machine["torch"] == torch.__version__
    ceiling = report["ceiling"]
    assert {(run["precision"], run["layout"]) for run in ceiling["runs"]} >= {
        ("fp32", "NCHW"),
        ("fp32", "channels_last"),
        ("bf16", "NCHW"),
        ("bf16", "channels_last"),
    }
    assert all(run["gflops"] > 0 for run in ceiling["runs"])
    best = ceiling["best"]["fp32"]["gflops"]
    assert report["forward"]["ceiling_gflops"] == best
    assert report["forward"]["percent_of_ceiling"] == pytest.approx(100 * report["forward"]["gflops"] / best)


def test_the_forward_flops_equal_a_count_of_the_real_forward(report):
    model = _tiny_model().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(BATCH, 3, *SIZE))
    assert report["forward"]["flops"] == counter.get_total_flops() > 0
    assert report["forward"]["gflop"] == pytest.approx(counter.get_total_flops() / 1e9)


def test_the_ceiling_formula_equals_the_flop_counter(report):
    for c_in, c_out, height, width in SHAPES:
        x, weight = torch.zeros(1, c_in, height, width), torch.zeros(c_out, c_in, 3, 3)
        with FlopCounterMode(display=False) as counter:
            out = F.conv2d(x, weight, padding=1)
        assert out.shape[-2:] == (height, width)
        assert conv_flops(c_in, c_out, height, width) == counter.get_total_flops()
    formula = {(r["c_in"], r["c_out"], r["height"], r["width"]): r["flops"] for r in report["ceiling"]["runs"]}
    assert formula == {shape: conv_flops(*shape) for shape in SHAPES}


def test_the_training_step_runs_train_step_in_its_own_process(report):
    train = report["train"]
    assert train["pid"] != os.getpid()
    assert len(train["losses"]) == 2 and len(train["steps"]) == 1 and all(map(math.isfinite, train["losses"]))
    # the same step here gives the same first loss: the other process ran train_step on the same model and batch
    here = time_train_steps(_tiny_model().config, torch.device("cpu"), precision="fp32", size=SIZE, batch=2, steps=1)
    assert here["pid"] == os.getpid()
    assert train["losses"][0] == pytest.approx(here["losses"][0], rel=1e-5)
    model = _tiny_model().train()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(TRAIN_BATCH, 3, *SIZE))
    assert train["flops"] == 3 * counter.get_total_flops()
    memory = train["memory"]
    assert memory["peak_bytes"] >= memory["before_bytes"] > 0 and memory["step_bytes"] >= 0


def test_the_training_step_in_channels_last_computes_the_same_loss():
    """--train-channels-last runs the step with the model and images in channels_last: the first loss (before any
    update) is the same network's on the same batch, equal to float32 rounding of the network's depth."""
    config = _tiny_model().config
    plain = time_train_steps(config, torch.device("cpu"), precision="fp32", size=SIZE, batch=2, steps=1)
    last = time_train_steps(
        config, torch.device("cpu"), precision="fp32", size=SIZE, batch=2, steps=1, channels_last=True
    )
    assert (plain["channels_last"], last["channels_last"]) == (False, True)
    assert last["losses"][0] == pytest.approx(plain["losses"][0], rel=1e-5)


def test_a_failure_in_the_training_process_is_raised_here():
    with pytest.raises(RuntimeError, match="failed in its process: ValueError: steps must be positive, got 0"):
        measure_train(_tiny_model().config, torch.device("cpu"), precision="fp32", size=SIZE, batch=1, repeat=0)


def test_the_protocol_runs_every_window_of_every_scale_flipped(report):
    protocol = report["protocol"]
    assert protocol["crop_size"] == list(CROP) and protocol["base_size"] == BASE
    windows = 0
    for scale in protocol["scales"]:
        h, w = resized_size(*SIZE, round(scale * BASE))
        h, w = max(h, CROP[0]), max(w, CROP[1])  # padded to the crop
        stride = math.ceil(CROP[0] * 2 / 3)
        windows += len(window_starts(h, CROP[0], stride)) * len(window_starts(w, CROP[1], stride))
    assert protocol["forward_images"] == 2 * windows
    assert protocol["flops"] == 2 * windows * forward_flops(_tiny_model().config, 1, *CROP)


def test_emulated_bf16_is_timed_on_one_shape_once(monkeypatch):
    monkeypatch.setattr(bench, "native_bf16", lambda device: False)
    ceiling = bench.measure_ceiling(torch.device("cpu"), shapes=SHAPES, repeat=2)
    assert ceiling["emulated"] == ["bf16"]
    bf16 = [
        (r["layout"], r["c_in"], r["c_out"], r["height"], r["width"])
        for r in ceiling["runs"]
        if r["precision"] == "bf16"
    ]
    assert bf16 == [("NCHW", *SHAPES[0]), ("channels_last", *SHAPES[0])]
    assert len([r for r in ceiling["runs"] if r["precision"] == "fp32"]) == 2 * len(SHAPES)


def test_a_bf16_forward_runs_a_bf16_copy_and_keeps_the_callers_model():
    model = _tiny_model()
    result = measure_forward(model, torch.device("cpu"), precision="bf16", size=SIZE, repeat=1)
    assert "bfloat16" in result["how"] and result["gflops"] > 0 and result["percent_of_ceiling"] is None
    assert next(model.parameters()).dtype == torch.float32


def test_bad_settings_name_the_argument():
    assert parse_what("data, forward,ceiling") == ("ceiling", "forward", "data")
    with pytest.raises(ValueError, match="'speed'.*ceiling,forward,train,protocol,data"):
        parse_what("forward,speed")
    with pytest.raises(ValueError, match="at least one"):
        parse_what(",")
    model = _tiny_model()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
            run_bench(model, device="cpu", precision="fp16", what="data")
    with pytest.raises(ValueError, match="train_batch must be positive"):
        run_bench(model, device="cpu", precision="fp32", what="data", train_batch=0)


def test_the_command_writes_every_section(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "CEILING_SHAPES", SHAPES[:1])
    path = pspnet.save_model(_tiny_model(), tmp_path / "tiny.safetensors")
    out = tmp_path / "bench.json"
    argv = ["bench", str(path), "--size", "33", "33", "--train-size", "33", "33", "--repeat", "1"]
    assert main([*argv, "--precision", "fp32", "--device", "cpu", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    written = json.loads(out.read_text())
    assert set(WHAT) <= set(written) and written["model"]["name"] == str(path)
    assert written["protocol"]["crop_size"] == list(CROP) and written["train"]["pid"] != os.getpid()
    for words in ("ceiling:", "forward:", "train:", "protocol:", "data:", "GFLOP/s", "2 x Cin x Cout x 9"):
        assert words in captured.out
    assert "bench: train: starting a process" in captured.err  # progress on stderr
    # a model built by name, a few sections
    assert main(["bench", "--arch", "pspnet18", "--classes", "3", "--size", "33", "33", "--what", "forward,data"]) == 0
    assert "pspnet18 (random weights), 3 classes" in capsys.readouterr().out


def test_the_command_refuses_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["bench", "--what", "forward,speed"])
    assert done.value.code == 2 and "--what" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "m.safetensors"), "--arch", "pspnet18"]) == 2
    assert "--arch" in capsys.readouterr().err
    assert main(["bench", "--arch", "pspnet18", "--json", str(tmp_path)]) == 2
    assert "--json" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--arch", "pspnet18", "--precision", "fp16", "--device", "cpu"]) == 2
        assert "--precision fp16 needs a CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    assert ",".join(WHAT) in " ".join(capsys.readouterr().out.split())


def _child_peak(queue) -> None:
    queue.put(bench.peak_rss_bytes())


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux: the inherited ru_maxrss is Linux's")
def test_a_spawned_process_reports_its_own_peak_not_its_parents():
    """Linux's ru_maxrss survives exec, so a child spawned by a parent holding 1 GiB would report at least that;
    the training step's memory is measured in such a child (measure_train)."""
    import multiprocessing

    held = bytearray(2**30)
    held[::4096] = b"\1" * len(held[::4096])  # touch every page: resident
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child_peak, args=(queue,))
    child.start()
    peak = queue.get(timeout=120)
    child.join(timeout=60)
    assert bench.peak_rss_bytes() >= len(held)  # the parent's own peak includes what it holds
    assert 0 < peak < len(held)  # a fresh interpreter with torch imported stays far below 1 GiB
