"""The training engine (pspnet.engine.train, .checkpoint, .losses) and `pspnet train`.

Every run uses the tiny model of train_helpers (ResNet-18 backbone, 16/8-channel heads, 48x48 crops, 4 images per
step) on a tiny folder data set of 48x64 images written into a temporary directory; in-process runs use one thread,
subprocesses OMP_NUM_THREADS=1. Weights are compared tensor by tensor, never by summary numbers.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import naive_ce_sums, tiny_pspnet
from rounding import cross_entropy_sum_bound, unit_roundoff
from train_helpers import (
    CLASSES,
    assert_close_tensors,
    assert_equal_tensors,
    checkpoints,
    finish,
    make_folder_dataset,
    pspnet_command,
    read_log,
    run,
    start,
    stop_group,
    tiny_config,
    torchrun_command,
    train_records,
    training_rtol,
    val_records,
    wait_for,
    weights,
    write_config,
)

import pspnet
from pspnet.cli import main
from pspnet.data.datasets import build_dataset
from pspnet.data.io import read_mask
from pspnet.engine import checkpoint as checkpoint_module
from pspnet.engine import train as train_module
from pspnet.engine.config import load_train_config
from pspnet.engine.evaluate import evaluate
from pspnet.engine.losses import loss_sum, median_frequency_weights
from pspnet.engine.train import NonFiniteLossError, class_pixel_statistics, param_groups, poly_lr, train
from pspnet.errors import ConfigError
from pspnet.inference import InferenceSettings
from pspnet.weights.model_file import model_metadata, read_weights_file, write_weights_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture
def float64(monkeypatch):
    """Build and train in float64 (torch's default dtype for the test): comparisons of two runs then sit far
    above their rounding (tests/rounding.py) on every CPU. Model files hold float32/16 weights only (save_model
    refuses float64), so these runs write their checkpoints' weights with the plain tensor writer."""

    def save_raw(model, path, *, card):
        return write_weights_file(path, model.state_dict(), model_metadata(card))

    monkeypatch.setattr(checkpoint_module, "save_model", save_raw)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


# -- 1. the poly learning-rate schedule ----------------------------------------------------------------------------


def test_poly_lr_values_by_hand():
    # base * (1 - i / max) ** 0.9, worked out independently of the formula in the code
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9, rel=1e-15)
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.0053588673126814657, rel=1e-14)
    assert poly_lr(0.01, 1, 4, 0.9) == pytest.approx(0.0077188950672357050, rel=1e-14)  # 0.01 * 0.75 ** 0.9
    assert poly_lr(0.1, 3, 4, 0.9) == pytest.approx(0.0287174588749258730, rel=1e-14)  # 0.1 * 0.25 ** 0.9
    assert poly_lr(2.5, 90, 100, 0.9) == pytest.approx(2.5 * 0.1**0.9, rel=1e-15)
    assert poly_lr(0.01, 100, 100, 0.9) == 0.0  # the last step runs at 0
    assert poly_lr(0.01, 10, 20, 1.0) == pytest.approx(0.005, rel=1e-15)  # power 1: linear


def test_learning_rates_used_in_a_run_follow_poly_from_1_with_10x_head(tmp_path, data_root):
    """log.jsonl's lr / lr_head are the rates of every optimiser step: base * (1 - i / max) ** 0.9 for i = 1..max
    (counted from 1, so the first step is already below base and the last one is 0), the head at exactly 10x.
    The last step running at 0 is also checked on the weights: they do not change in it (BN frozen, so no
    running statistics move either)."""
    base, total = 0.02, 4
    config = tiny_config(
        data_root, iterations=total, checkpoint_every=1, keep_last=2, lr=base, freeze_bn=True, val_split=None
    )
    assert config.head_lr_mult == 10.0 and config.poly_power == 0.9
    out = tmp_path / "run"
    train(config, out, progress=False)
    records = train_records(out)
    assert [r["iteration"] for r in records] == list(range(1, total + 1))
    for r in records:
        i = r["iteration"]
        expected = base * (1 - i / total) ** 0.9
        assert r["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-18), i
        assert r["lr_head"] == pytest.approx(10 * expected, rel=1e-12, abs=1e-18), i
        assert r["lr_head"] == pytest.approx(10 * r["lr"], rel=1e-12, abs=1e-18), i
    assert records[0]["lr"] < base  # iteration 1, not 0
    assert records[-1]["lr"] == 0.0 and records[-1]["lr_head"] == 0.0
    assert checkpoints(out) == [total - 1, total]
    before, after = (
        weights(out / f"ckpt_{total - 1}/model.safetensors"),
        weights(out / f"ckpt_{total}/model.safetensors"),
    )
    assert_equal_tensors(after, before)  # lr 0 in the last step: momentum and weight decay move nothing
    first = weights(out / f"ckpt_{total - 1}/state.safetensors")
    assert any(k.startswith("optimizer.1.") for k in first) and any(k.startswith("optimizer.0.") for k in first)


# -- 2. the 10x head parameter groups -----------------------------------------------------------------------------


def test_param_groups_backbone_at_base_everything_else_at_10x():
    model = tiny_pspnet(num_classes=4)
    groups = param_groups(model, lr=0.01, head_lr_mult=10.0)
    assert len(groups) == 2
    assert groups[0]["lr"] == 0.01 and groups[1]["lr"] == pytest.approx(0.1, rel=1e-15)
    assert groups[0]["base_lr"] == groups[0]["lr"] and groups[1]["base_lr"] == groups[1]["lr"]
    by_id = {id(p): name for name, p in model.named_parameters()}
    ids = [[id(p) for p in g["params"]] for g in groups]
    for group in ids:
        assert len(group) == len(set(group)), "a parameter twice in one group"
    assert not set(ids[0]) & set(ids[1]), "a parameter in both groups"
    assert set(ids[0]) | set(ids[1]) == set(by_id), "parameters missing from the groups"
    assert sum(map(len, ids)) == len(list(model.parameters()))
    names0 = {by_id[i] for i in ids[0]}
    names1 = {by_id[i] for i in ids[1]}
    assert names0 == {n for n in by_id.values() if n.startswith("backbone.")}
    assert all(not n.startswith("backbone.") for n in names1)
    # the pyramid pooling module, the 3x3 head, the classifier and the aux head are all at 10x
    for part in ("ppm.", "decode_head.conv.", "decode_head.classifier.", "aux_head.conv.", "aux_head.classifier."):
        assert any(part in n for n in names1), part
    assert any("bn" in n for n in names0)  # BatchNorm affine parameters of the backbone too


# -- 3. the loss --------------------------------------------------------------------------------------------------


def test_loss_sum_equals_naive_float64_main_plus_04_aux_over_labelled_pixels():
    torch.manual_seed(1)
    n, k, h, w = 2, 5, 6, 7
    main_logits = torch.randn(n, k, h, w) * 3
    aux_logits = torch.randn(n, k, h, w) * 3
    target = torch.randint(0, k, (n, h, w))
    target[torch.rand(n, h, w) < 0.3] = 255
    target[0, 0, 0] = 255
    main_sum, labelled = naive_ce_sums(main_logits, target)
    aux_sum, _ = naive_ce_sums(aux_logits, target)
    expected = main_sum + 0.4 * aux_sum
    assert 0 < labelled < n * h * w
    got = loss_sum((main_logits, aux_logits), target)
    assert got.dtype == torch.float32
    bound = cross_entropy_sum_bound(main_logits, target) + 0.4 * cross_entropy_sum_bound(aux_logits, target)
    assert float(got) == pytest.approx(expected, rel=0, abs=bound + 2 * unit_roundoff(torch.float32) * expected)
    # the aux weight is a parameter, and a single tensor gives the main term only
    main_only = loss_sum(main_logits, target)
    assert float(loss_sum((main_logits, aux_logits), target, aux_weight=0.0)) == pytest.approx(float(main_only))
    # bf16 logits are summed in float32
    assert loss_sum((main_logits.bfloat16(), aux_logits.bfloat16()), target).dtype == torch.float32


# -- 4. bf16 on the CPU -------------------------------------------------------------------------------------------


def test_bf16_training_on_cpu_finite_loss_and_weights_change(tmp_path, data_root):
    out = tmp_path / "run"
    train(
        tiny_config(data_root, iterations=3, checkpoint_every=1, keep_last=3, precision="bf16", val_split=None),
        out,
        progress=False,
    )
    records = train_records(out)
    assert len(records) == 3 and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    first, second = weights(out / "ckpt_1/model.safetensors"), weights(out / "ckpt_2/model.safetensors")
    assert all(v.dtype in (torch.float32, torch.int64) for v in second.values())  # float32 master weights
    changed = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], second[k])]
    assert any(k.startswith("backbone.") and k.endswith(".weight") for k in changed)
    assert any(k.startswith("decode_head.classifier.") for k in changed)
    assert all(torch.isfinite(v).all() for v in second.values() if v.is_floating_point())


# -- 5. gradient accumulation -------------------------------------------------------------------------------------


def test_accumulation_equals_one_big_batch_with_frozen_batchnorm(tmp_path, data_root, float64):
    """batch_size 4 as 2 micro-batches of 2 (accumulate 2) gives the weights of one batch of 4 (accumulate 1).

    BatchNorm must be frozen (``freeze_bn: true``, running statistics): in training mode each BN layer normalises
    with the mean and variance of the batch in front of it, and those of two micro-batches of 2 are not those of
    the batch of 4, so forward outputs, gradients and running-statistics updates differ (the last part of this
    test shows how much). Dropout is 0 because its masks are drawn per micro-batch from the RNG stream, so the
    two runs would drop different units. With both removed the loss of a step is the same function of the weights,
    and the engine divides every micro-batch's summed loss by the labelled pixels of the whole step, so the
    accumulated gradient is the big batch's up to rounding: both runs are made in float64 and compared within
    the rounding bound of 4 steps of this network (tests/rounding.py).
    """
    common = {"iterations": 4, "checkpoint_every": 4, "dropout": 0.0, "val_split": None}
    one = train(tiny_config(data_root, accumulate=1, freeze_bn=True, **common), tmp_path / "acc1", progress=False)
    two = train(tiny_config(data_root, accumulate=2, freeze_bn=True, **common), tmp_path / "acc2", progress=False)
    assert one == tmp_path / "acc1/ckpt_4" and two == tmp_path / "acc2/ckpt_4"
    rtol = training_rtol(data_root, steps=4)
    assert weights(one / "model.safetensors")["decode_head.classifier.weight"].dtype == torch.float64
    assert_close_tensors(weights(two / "model.safetensors"), weights(one / "model.safetensors"), rtol=rtol)
    # momentum buffers too (the optimiser state that the next step would use)
    state_one, state_two = weights(one / "state.safetensors"), weights(two / "state.safetensors")
    momentum = [k for k in state_one if k.startswith("optimizer.")]
    assert momentum
    assert_close_tensors({k: state_two[k] for k in momentum}, {k: state_one[k] for k in momentum}, rtol=rtol)
    losses_one = [r["loss"] for r in train_records(tmp_path / "acc1")]
    losses_two = [r["loss"] for r in train_records(tmp_path / "acc2")]
    assert losses_two == pytest.approx(losses_one, rel=rtol, abs=0)
    # the comparison has teeth: with BatchNorm in training mode the same two runs end far apart
    live = train(tiny_config(data_root, accumulate=2, freeze_bn=False, **common), tmp_path / "live", progress=False)
    with pytest.raises(AssertionError):
        assert_close_tensors(weights(live / "model.safetensors"), weights(one / "model.safetensors"), rtol=1e-3)


def test_class_pixel_statistics_count_every_mask_pixel(data_root):
    dataset = build_dataset("folder", data_root, "train")
    class_pixels, present = [0, 0, 0], [0, 0, 0]
    for name in sorted((data_root / "masks" / "train").iterdir()):
        mask = read_mask(name)
        labelled = int((mask != 255).sum())
        for c in range(3):
            count = int((mask == c).sum())
            class_pixels[c] += count
            present[c] += labelled if count else 0
    assert class_pixel_statistics(dataset) == (class_pixels, present)
    assert 0 < class_pixels[1] < present[1]  # the counts are not trivially equal


def test_median_frequency_weighting_is_logged_and_split_independent(tmp_path, data_root, monkeypatch, float64):
    """With class_weighting median_frequency the step's loss is divided by the summed pixel weights of the whole
    step: 2 accumulated micro-batches still equal one batch (BN frozen, dropout 0, as above), and scaling every
    weight by 8 changes nothing (a divisor that ignored the weights would make the gradient 8x); the weights are
    those of the training masks and change the result."""
    common = {"iterations": 3, "checkpoint_every": 3, "dropout": 0.0, "val_split": None, "freeze_bn": True}
    weighted = {**common, "class_weighting": "median_frequency"}
    one = train(tiny_config(data_root, accumulate=1, **weighted), tmp_path / "w1", progress=False)
    two = train(tiny_config(data_root, accumulate=2, **weighted), tmp_path / "w2", progress=False)
    one_weights = weights(one / "model.safetensors")
    rtol = training_rtol(data_root, steps=3)
    assert_close_tensors(weights(two / "model.safetensors"), one_weights, rtol=rtol)
    with monkeypatch.context() as patch:
        patch.setattr(
            train_module, "median_frequency_weights", lambda *a: [8 * w for w in median_frequency_weights(*a)]
        )
        scaled = train(tiny_config(data_root, accumulate=1, **weighted), tmp_path / "w8", progress=False)
    assert_close_tensors(weights(scaled / "model.safetensors"), one_weights, rtol=rtol)
    logged = [r for r in read_log(tmp_path / "w1") if r.get("event") == "class weights"]
    expected = median_frequency_weights(*class_pixel_statistics(build_dataset("folder", data_root, "train")))
    logged_weights = [logged[0]["class_weights"][name] for name in CLASSES]
    assert len(logged) == 1 and logged_weights == pytest.approx(expected, abs=5e-5)  # logged rounded to 4 decimals
    assert max(expected) / min(expected) > 1.5  # the shapes data set is unbalanced: the weighting has an effect
    plain = train(tiny_config(data_root, accumulate=1, **common), tmp_path / "plain", progress=False)
    with pytest.raises(AssertionError):
        assert_close_tensors(weights(plain / "model.safetensors"), one_weights, rtol=1e-3)


def test_resumed_run_keeps_the_class_weights_it_started_with(tmp_path, data_root, monkeypatch):
    """The weights are saved in the training state; a resumed run uses them without reading the masks again."""
    config = tiny_config(
        data_root, iterations=3, checkpoint_every=1, keep_last=3, val_split=None, class_weighting="median_frequency"
    )
    whole = train(config, tmp_path / "whole", progress=False)
    expected = median_frequency_weights(*class_pixel_statistics(build_dataset("folder", data_root, "train")))
    _, info = read_weights_file(tmp_path / "whole/ckpt_1/state.safetensors")
    assert info["class_weights"] == pytest.approx(expected, rel=1e-12)
    shutil.copytree(tmp_path / "whole/ckpt_1", tmp_path / "resumed/ckpt_1")
    shutil.copy(tmp_path / "whole/config.yaml", tmp_path / "resumed/config.yaml")

    def fail(*args):
        raise AssertionError("the masks were read again on resume")

    monkeypatch.setattr(train_module, "class_pixel_statistics", fail)
    resumed = train(config, tmp_path / "resumed", resume=tmp_path / "resumed", progress=False)
    assert resumed == tmp_path / "resumed/ckpt_3"
    assert_equal_tensors(weights(resumed / "model.safetensors"), weights(whole / "model.safetensors"))


# -- 6. two processes under torchrun ------------------------------------------------------------------------------


def test_ddp_two_processes_equal_one_process_accumulating(tmp_path, data_root):
    """torchrun with 2 CPU processes (gloo), batch 4 = 2 per process, equals 1 process with accumulate 2 (the same
    micro-batches: micro-batch j of process r is the same slice of the step's images as the single process's
    micro-batch j * world + r). BN frozen and dropout 0 for the reason given in the accumulation test.

    The two are equal bit for bit, on any CPU: each process computes its micro-batch's gradient with the same
    kernels as the single process (same shapes, one thread each) but for the loss scaled by world size 2, a power
    of two, which scales every product and sum of the backward pass exactly; the all-reduce adds the two gradients
    (a + b = b + a exactly) and DDP divides by 2 (exact), where the single process accumulates a + b.

    Validation is off (val_split null) to keep the comparison about the training steps;
    test_ddp_run_with_validation_finishes covers validation under torchrun. SyncBatchNorm (used only on CUDA) needs
    GPUs and is checked on a GPU machine, not here.
    """
    common = {"iterations": 4, "checkpoint_every": 4, "freeze_bn": True, "dropout": 0.0, "val_split": None}
    config = write_config(tmp_path / "ddp.yaml", data_root, accumulate=1, **common)
    result = run(torchrun_command(2, "train", str(config), "--out", str(tmp_path / "ddp"), "--quiet"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = train(tiny_config(data_root, accumulate=2, **common), tmp_path / "single", progress=False)
    assert checkpoints(tmp_path / "ddp") == [4]
    assert_equal_tensors(weights(tmp_path / "ddp/ckpt_4/model.safetensors"), weights(reference / "model.safetensors"))
    ddp_state, single_state = (
        weights(tmp_path / "ddp/ckpt_4/state.safetensors"),
        weights(reference / "state.safetensors"),
    )
    momentum = [k for k in single_state if k.startswith("optimizer.")]
    assert momentum
    assert_equal_tensors({k: ddp_state[k] for k in momentum}, {k: single_state[k] for k in momentum})
    ddp_losses = [r["loss"] for r in train_records(tmp_path / "ddp")]
    single_losses = [r["loss"] for r in train_records(tmp_path / "single")]
    assert len(ddp_losses) == 4 and ddp_losses == single_losses


def test_ddp_run_with_validation_finishes(tmp_path, data_root):
    """Validation at a checkpoint under torchrun (2 CPU processes, gloo) finishes and is logged once."""
    config = write_config(tmp_path / "ddp.yaml", data_root, iterations=1, checkpoint_every=1, freeze_bn=True)
    out = tmp_path / "ddp"
    process = start(torchrun_command(2, "train", str(config), "--out", str(out), "--quiet"), tmp_path)
    try:
        # wait for the training step (start-up takes a few seconds), then allow the validation of 2 tiny images,
        # the checkpoint and the curve 20 s: they take about 2; a deadlock is killed (rc None)
        wait_for(lambda: (out / "log.jsonl").is_file() and bool(train_records(out)), process, timeout=120, interval=0.1)
        rc, _out, err = finish(process, timeout=20)
    finally:
        stop_group(process)
    assert rc == 0, f"torchrun did not finish (rc {rc}):\n{err[-2000:]}"
    assert [r["iteration"] for r in val_records(out)] == [1]
    assert checkpoints(out) == [1] and (out / "best/model.safetensors").is_file()


# -- 7. kill and resume, bitwise ----------------------------------------------------------------------------------


def test_killed_run_resumes_bitwise_identical(tmp_path, data_root):
    """SIGKILL `pspnet train` between checkpoints, `--resume` it, and get exactly the uninterrupted run.

    The kill comes after ckpt_2 and after the run logged a later iteration, so the resumed run must also drop the
    log records the killed run wrote after its last checkpoint."""
    total = 8
    config = write_config(tmp_path / "run.yaml", data_root, iterations=total, checkpoint_every=2, deterministic=True)
    reference = start(pspnet_command("train", str(config), "--out", str(tmp_path / "ref"), "--quiet"), tmp_path)
    victim = start(pspnet_command("train", str(config), "--out", str(tmp_path / "run"), "--quiet"), tmp_path)

    def logged_past_checkpoint() -> bool:
        done = checkpoints(tmp_path / "run")
        try:
            logged = [r["iteration"] for r in train_records(tmp_path / "run")]
        except (OSError, ValueError):  # not there yet, or a line being written
            return False
        return bool(done) and done[-1] >= 2 and max(logged) > done[-1]

    try:
        seen = wait_for(logged_past_checkpoint, victim, timeout=120, interval=0.005)
    finally:
        stop_group(victim)
    _, _, victim_err = finish(victim, timeout=30)
    assert seen, f"no checkpoint appeared:\n{victim_err[-2000:]}"
    assert victim.returncode == -9
    at_kill = checkpoints(tmp_path / "run")
    assert total not in at_kill, f"the run finished before it was killed ({at_kill}); make it longer"
    logged_at_kill = [r["iteration"] for r in train_records(tmp_path / "run")]
    assert max(logged_at_kill) > at_kill[-1], "killed exactly at a checkpoint; the log check below would be void"
    rc, _, err = finish(reference, timeout=120)
    assert rc == 0, err[-2000:]

    resumed = run(pspnet_command("train", str(config), "--out", str(tmp_path / "run"), "--resume", "--quiet"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoints(tmp_path / "run") == checkpoints(tmp_path / "ref") == [total - 2, total]
    for name in ("model.safetensors", "state.safetensors"):
        for n in (total - 2, total):
            assert_equal_tensors(weights(tmp_path / f"run/ckpt_{n}/{name}"), weights(tmp_path / f"ref/ckpt_{n}/{name}"))
    _, info = read_weights_file(tmp_path / f"run/ckpt_{total}/state.safetensors")
    assert info["iteration"] == total
    assert not list((tmp_path / "run").glob(".ckpt_*.tmp"))
    # one log record per logged iteration, none left over from the killed run, and the same losses
    records = train_records(tmp_path / "run")
    assert [r["iteration"] for r in records] == list(range(1, total + 1))
    assert [r["iteration"] for r in val_records(tmp_path / "run")] == [2, 4, 6, 8]
    assert [r["loss"] for r in records] == [r["loss"] for r in train_records(tmp_path / "ref")]
    assert [r["val_mIoU"] for r in val_records(tmp_path / "run")] == [
        r["val_mIoU"] for r in val_records(tmp_path / "ref")
    ]


def test_run_killed_before_best_was_written_gets_best_back(tmp_path, data_root, monkeypatch):
    """Simulates SIGKILL while the first best/ is being written (the copy into best/ is interrupted).

    lr 0 and frozen BN keep the model, hence the val mIoU, constant: iteration 2 stays the best for the whole run.
    """
    config = tiny_config(data_root, iterations=4, checkpoint_every=2, lr=0.0, freeze_bn=True)
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated SIGKILL while copying into best/")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module.shutil, "copytree", killed)
        with pytest.raises(KeyboardInterrupt):
            train(config, out, progress=False)
    # best/ is written before the checkpoint that records it: the interrupted save left neither half-done
    assert checkpoints(out) == [] and not (out / "best").exists()
    train(config, out, resume=out, progress=False)  # nothing saved yet: the resumed run starts from the beginning
    assert not list(out.glob(".*.tmp"))
    assert (out / "best/model.safetensors").is_file(), "best/ is missing after the resumed run"
    _, info = read_weights_file(out / "best/state.safetensors")
    assert info["iteration"] == 2


# -- 8. non-finite loss -------------------------------------------------------------------------------------------


def test_non_finite_loss_stops_naming_iteration_and_last_checkpoint(tmp_path, data_root, capsys):
    """lr 1e8 blows the weights up; the run stops with NonFiniteLossError before stepping or saving that iteration."""
    config = tiny_config(data_root, iterations=6, checkpoint_every=1, keep_last=5, lr=1e8, val_split=None)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as caught:
        train(config, out, progress=False)
    events = [r for r in read_log(out) if r.get("event") == "non-finite loss"]
    assert len(events) == 1
    bad = events[0]["iteration"]
    assert 2 <= bad < 6
    message = str(caught.value)
    assert f"iteration {bad}" in message
    assert str(out / f"ckpt_{bad - 1}") in message
    assert checkpoints(out) == list(range(1, bad))  # nothing saved for the failing iteration
    assert [r["iteration"] for r in train_records(out)] == list(range(1, bad))
    for n in checkpoints(out):
        model = pspnet.load_model(out / f"ckpt_{n}")
        assert model.meta["classes"] == CLASSES
        _, info = read_weights_file(out / f"ckpt_{n}/state.safetensors")
        assert info["iteration"] == n
    assert not list(out.glob(".ckpt_*.tmp"))

    cli_out = tmp_path / "cli"
    yaml_path = write_config(
        tmp_path / "nan.yaml", data_root, iterations=6, checkpoint_every=1, keep_last=5, lr=1e8, val_split=None
    )
    capsys.readouterr()
    assert main(["train", str(yaml_path), "--out", str(cli_out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"iteration {bad}" in err and str(cli_out / f"ckpt_{bad - 1}") in err
    assert "Traceback" not in err


def test_last_good_checkpoint_of_a_non_finite_run_has_finite_weights(tmp_path, data_root):
    """lr 1e4 diverges more slowly than 1e8: the checkpoint the error names must hold finite parameters and buffers
    (an inf BN running variance makes the model predict NaN in eval mode and can never recover in training)."""
    config = tiny_config(data_root, iterations=6, checkpoint_every=1, keep_last=6, lr=1e4, val_split=None)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as caught:
        train(config, out, progress=False)
    named = [out / f"ckpt_{n}" for n in checkpoints(out) if str(out / f"ckpt_{n}") in str(caught.value)]
    assert len(named) == 1
    tensors = weights(named[0] / "model.safetensors")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, f"{named[0].name}, named as the last good checkpoint, holds non-finite {bad[:5]}"


# -- 9 and 10. retention, best/, loading a run directory ----------------------------------------------------------


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory, data_root) -> Path:
    """5 iterations, a checkpoint and a validation at every one, the last 2 checkpoints kept. Frozen BN makes the
    eval-mode model the trained one, so the val mIoU moves within these few steps."""
    out = tmp_path_factory.mktemp("validated") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            tiny_config(data_root, iterations=5, checkpoint_every=1, keep_last=2, lr=0.01, freeze_bn=True),
            out,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return out


def test_retention_keeps_last_two_and_best_is_the_highest_val_miou(validated_run, data_root):
    out = validated_run
    assert checkpoints(out) == [4, 5]
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == ["best", "ckpt_4", "ckpt_5"], dirs  # and no temporary directory left
    for name in ("ckpt_4", "ckpt_5", "best"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["model.safetensors", "state.safetensors"]
        _, info = read_weights_file(out / name / "state.safetensors")
        assert info["kind"] == "train_state"
    vals = val_records(out)
    assert [r["iteration"] for r in vals] == [1, 2, 3, 4, 5]
    mious = [r["val_mIoU"] for r in vals]
    assert len(set(mious)) > 1, f"the val mIoU did not move ({mious}): this test cannot tell checkpoints apart"
    best_miou = max(mious)
    _, info = read_weights_file(out / "best/state.safetensors")
    best_iteration = info["iteration"]
    assert info["best_iteration"] == best_iteration
    assert info["best_miou"] == best_miou
    assert mious[best_iteration - 1] == best_miou
    # best/ holds the weights that scored it: re-evaluate them the way validation does
    model = pspnet.load_model(out / "best")
    settings = InferenceSettings(mode="auto", crop_size=(48, 48), base_size=48)
    report = evaluate(model, build_dataset("folder", data_root, "val"), settings, progress=False)
    assert report["mIoU"] == pytest.approx(best_miou, abs=1e-12)
    best = weights(out / "best/model.safetensors")
    kept = {n: weights(out / f"ckpt_{n}/model.safetensors") for n in (4, 5)}
    if best_iteration in kept:
        assert_equal_tensors(best, kept[best_iteration])
    else:  # an earlier iteration's weights, not those of a later checkpoint
        for n, later in kept.items():
            assert any(not torch.equal(best[k], v) for k, v in later.items()), n


def test_load_model_from_run_directory_and_eval_cli(validated_run, data_root, tmp_path, capsys):
    model = pspnet.load_model(validated_run)
    assert not model.training
    assert model.meta["classes"] == CLASSES
    assert model.num_classes == 3
    assert_equal_tensors(dict(model.state_dict()), weights(validated_run / "best/model.safetensors"))

    # without best/ the model is the latest checkpoint, by number: ckpt_10 (a copy of ckpt_5), not ckpt_9 (a
    # copy of best/, an earlier iteration with other weights)
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copytree(validated_run / "best", plain / "ckpt_9")
    shutil.copytree(validated_run / "ckpt_5", plain / "ckpt_10")
    older, newer = weights(plain / "ckpt_9/model.safetensors"), weights(plain / "ckpt_10/model.safetensors")
    assert any(not torch.equal(older[k], v) for k, v in newer.items()), "best/ is the last checkpoint here"
    latest = pspnet.load_model(plain)
    assert latest.meta["classes"] == CLASSES
    assert_equal_tensors(dict(latest.state_dict()), newer)

    capsys.readouterr()
    rc = main(
        [
            "eval",
            str(validated_run),
            "--dataset",
            "folder",
            "--root",
            str(data_root),
            "--limit",
            "1",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "mIoU" in captured.out
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["images"] == 1
    assert [c["name"] for c in metrics["per_class"]] == CLASSES


# -- configuration and the command line ---------------------------------------------------------------------------


def test_existing_run_refused_without_resume_and_set_reaches_saved_config(tmp_path, data_root, capsys):
    config = write_config(tmp_path / "c.yaml", data_root, iterations=2, checkpoint_every=2, val_split=None)
    out = tmp_path / "run"
    assert (
        main(["train", str(config), "--out", str(out), "--quiet", "--set", "lr=0.0123", "--set", "head_lr_mult=5"]) == 0
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lr"] == 0.0123 and saved["head_lr_mult"] == 5.0 and saved["iterations"] == 2
    _, info = read_weights_file(out / "ckpt_2/state.safetensors")
    assert info["config"]["lr"] == 0.0123
    assert train_records(out)[0]["lr_head"] == pytest.approx(5 * train_records(out)[0]["lr"], rel=1e-12)
    before = weights(out / "ckpt_2/model.safetensors")
    log_before = (out / "log.jsonl").read_text()

    capsys.readouterr()
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--resume" in err and str(out) in err
    with pytest.raises(ConfigError, match="pass resume="):
        train(load_train_config(str(config)), out, progress=False)
    assert checkpoints(out) == [2]
    assert_equal_tensors(weights(out / "ckpt_2/model.safetensors"), before)
    assert (out / "log.jsonl").read_text() == log_before
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 0.0123  # not overwritten by the refused run


def test_bad_config_key_is_named(tmp_path, data_root, capsys):
    path = write_config(tmp_path / "bad.yaml", data_root, iterations=2, learning_rate=0.1)
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(str(path))
    capsys.readouterr()
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "learning_rate" in err and str(path) in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="bacth_size"):
        load_train_config(str(write_config(tmp_path / "ok.yaml", data_root, iterations=2)), ["bacth_size=8"])


def test_resume_run_directory_alone_continues_in_that_directory(tmp_path, data_root, monkeypatch):
    """`pspnet train --resume RUN_DIR` (no CONFIG, no --out) continues the run with its saved config, in RUN_DIR."""
    config = write_config(tmp_path / "c.yaml", data_root, iterations=2, checkpoint_every=1, val_split=None)
    run_dir = tmp_path / "elsewhere" / "myrun"
    assert main(["train", str(config), "--out", str(run_dir), "--quiet", "--set", "iterations=1"]) == 0
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    # the saved config says iterations 1; raise it so there is something left to do
    assert main(["train", "--resume", str(run_dir), "--quiet", "--set", "iterations=2"]) == 0
    assert not (workdir / "runs").exists(), "the resumed run went to ./runs/"
    assert checkpoints(run_dir) == [1, 2]


# -- backbone initialisation and channels_last --------------------------------------------------------------------


def test_backbone_init_loads_the_imagenet_file_before_training(tmp_path, data_root):
    """One step at lr 0 (poly: the last step has lr 0) leaves the convolutions exactly as the backbone file has them."""
    from layouts import to_imagenet

    from pspnet.models.resnet import ResNet
    from pspnet.weights.convert import convert

    source = ResNet(depth=18, stem="basic")
    torch.save(to_imagenet(source.state_dict(), deep=False), tmp_path / "resnet18.pth")
    convert("torchvision", tmp_path / "resnet18.pth", tmp_path / "r18.safetensors")
    config = tiny_config(
        data_root, iterations=1, stem="basic", backbone_init=str(tmp_path / "r18.safetensors"), val_split=None
    )
    run = tmp_path / "run"
    train(config, run, progress=False)
    trained = weights(run / "ckpt_1" / "model.safetensors")
    for key, value in source.state_dict().items():
        if key.endswith(".weight") and value.dim() == 4:  # conv weights: untouched by an lr-0 step
            assert torch.equal(trained[f"backbone.{key}"], value), key


def test_channels_last_training_matches_the_default_layout(tmp_path, data_root, float64):
    """The memory layout changes only the order of the float operations: in float64, two steps in channels_last
    end within the rounding bound of two steps of this network (tests/rounding.py) of the default layout's."""
    base = {"iterations": 2, "freeze_bn": True, "dropout": 0.0, "val_split": None}
    train(tiny_config(data_root, **base), tmp_path / "a", progress=False)
    train(tiny_config(data_root, channels_last=True, **base), tmp_path / "b", progress=False)
    assert_close_tensors(
        weights(tmp_path / "b" / "ckpt_2" / "model.safetensors"),
        weights(tmp_path / "a" / "ckpt_2" / "model.safetensors"),
        rtol=training_rtol(data_root, steps=2),
    )


# -- a budget in minutes ------------------------------------------------------------------------------------------


def test_a_time_budget_fixes_the_schedule_once_and_resumes_bitwise(tmp_path, data_root, monkeypatch):
    """time_budget: the step time measured at the start (on copies, the random state put back) sets the number of
    iterations, which the run keeps: the run equals one given that count, and a resume does not measure again."""
    real = train_module.measure_step_seconds
    calls = []

    def measured(*args, **kwargs):
        calls.append(real(*args, **kwargs))  # the real probe runs (copies, random state) ...
        return 0.5  # ... but the count it gives is fixed: 0.05 minutes at 0.5 s per step = 6 iterations

    monkeypatch.setattr(train_module, "measure_step_seconds", measured)
    base = {"checkpoint_every": 3, "val_split": None, "iterations": None}
    budget = tmp_path / "budget"
    train(tiny_config(data_root, time_budget=0.05, **base), budget, progress=False)
    assert len(calls) == 1 and calls[0] > 0
    assert checkpoints(budget) == [3, 6]
    event = [r for r in read_log(budget) if r.get("event") == "time budget"]
    assert event == [
        {"iteration": 0, "event": "time budget", "minutes": 0.05, "seconds_per_step": 0.5, "iterations": 6}
    ]
    _, info = read_weights_file(budget / "ckpt_6" / "state.safetensors")
    assert info["total_iterations"] == 6 and info["config"]["time_budget"] == 0.05

    explicit = tmp_path / "explicit"
    train(tiny_config(data_root, **{**base, "iterations": 6}), explicit, progress=False)
    assert_equal_tensors(
        weights(budget / "ckpt_6" / "model.safetensors"), weights(explicit / "ckpt_6" / "model.safetensors")
    )

    shutil.rmtree(budget / "ckpt_6")
    monkeypatch.setattr(train_module, "measure_step_seconds", lambda *a, **k: pytest.fail("measured again"))
    train(tiny_config(data_root, time_budget=0.05, **base), budget, resume=budget, progress=False)
    assert_equal_tensors(
        weights(budget / "ckpt_6" / "model.safetensors"), weights(explicit / "ckpt_6" / "model.safetensors")
    )


def test_exactly_one_budget_is_given(data_root):
    with pytest.raises(ConfigError, match="exactly one budget: iterations, epochs or time_budget"):
        tiny_config(data_root, iterations=5, time_budget=1.0)
    with pytest.raises(ConfigError, match="must be positive"):
        tiny_config(data_root, iterations=None, time_budget=0)


@pytest.mark.parametrize("native, resolved", [(True, "bf16"), (False, "fp32")])
def test_precision_auto_trains_in_bf16_only_where_native_and_saves_what_it_chose(
    tmp_path, data_root, monkeypatch, native, resolved
):
    monkeypatch.setattr("pspnet.inference.native_bf16", lambda device: native)
    out = tmp_path / "run"
    train(tiny_config(data_root, precision="auto", iterations=1, val_split=None), out, progress=False)
    assert yaml.safe_load((out / "config.yaml").read_text())["precision"] == resolved
    _, info = read_weights_file(out / "ckpt_1" / "state.safetensors")
    assert info["config"]["precision"] == resolved
