"""Training survives preemption: SIGTERM / SIGINT save the last completed step and exit 143 / 130 with the resume
command; ``--resume`` then continues bitwise; a run whose checkpoints are gone is not silently restarted.

Runs use the tiny model and data of train_helpers (ResNet-18, 16/8-channel heads, 48x48 crops, 4 images per step,
about 0.1 s a step on one thread) in subprocesses with OMP_NUM_THREADS=1, signalled once their log shows two steps.
Timeouts only bound a hang; no test asserts a duration.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
from pathlib import Path

import pytest
from train_helpers import (
    VENV_BIN,
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
    train_records,
    wait_for,
    weights,
    write_config,
)

from pspnet.cli import main
from pspnet.engine import distributed
from pspnet.engine import train as train_module
from pspnet.engine.train import train
from pspnet.errors import ConfigError
from pspnet.weights.model_file import read_weights_file

pytestmark = pytest.mark.usefixtures("one_thread")

TOTAL = 8  # optimiser steps of every run here: 2 per epoch (8 images, batch 4), so 4 epochs and 4 DataLoaders
# one checkpoint at the end only (and one validation there), so any other checkpoint is the one a signal made;
# workers 1 so that each DataLoader has a worker process for the signals to reach
RUN_SETTINGS = {"iterations": TOTAL, "checkpoint_every": TOTAL, "deterministic": True, "workers": 1}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_root) -> Path:
    """The uninterrupted run the stopped-and-resumed ones must equal bit for bit."""
    tmp = tmp_path_factory.mktemp("reference")
    config = write_config(tmp / "run.yaml", data_root, **RUN_SETTINGS)
    result = run(pspnet_command("train", str(config), "--out", str(tmp / "ref"), "--quiet"), tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoints(tmp / "ref") == [TOTAL]
    return tmp / "ref"


def _logged_steps(run_dir: Path, steps: int):
    """A predicate: the run's log records at least ``steps`` optimiser steps."""

    def ready() -> bool:
        try:
            return len(train_records(run_dir)) >= steps
        except (OSError, ValueError):  # not there yet, or a line being written
            return False

    return ready


def _resume_command(stderr: str) -> str:
    found = re.findall(r"^resume with: (.+)$", stderr, flags=re.MULTILINE)
    assert len(found) == 1, f"no single resume command in:\n{stderr[-3000:]}"
    return found[0]


def _check_stopped_run(run_dir: Path, signal_name: str) -> int:
    """The stopped run saved exactly its last completed (= last logged) step, recorded it, and did not finish.
    Returns that iteration."""
    last = max(r["iteration"] for r in train_records(run_dir))
    assert last < TOTAL, "the run finished before the signal reached it; make it longer"
    assert checkpoints(run_dir) == [last]
    _, info = read_weights_file(run_dir / f"ckpt_{last}/state.safetensors")
    assert info["iteration"] == last
    events = [r for r in read_log(run_dir) if "event" in r]
    assert events[-2:] == [
        {"iteration": last, "event": "checkpoint", "path": f"ckpt_{last}"},
        {"iteration": last, "event": "stopped", "signal": signal_name},
    ]
    assert not list(run_dir.glob(".ckpt_*.tmp"))
    return last


def _check_resumed_equals_reference(run_dir: Path, reference: Path) -> None:
    assert checkpoints(run_dir)[-1] == TOTAL
    for name in ("model.safetensors", "state.safetensors"):  # weights, BN statistics, momentum buffers, RNG states
        assert_equal_tensors(weights(run_dir / f"ckpt_{TOTAL}/{name}"), weights(reference / f"ckpt_{TOTAL}/{name}"))
    records = train_records(run_dir)
    assert [r["iteration"] for r in records] == list(range(1, TOTAL + 1))
    assert [r["loss"] for r in records] == [r["loss"] for r in train_records(reference)]


# -- SIGTERM and SIGINT in a single process ------------------------------------------------------------------------


def test_sigterm_saves_the_last_step_prints_the_resume_command_and_resumes_bitwise(tmp_path, data_root, reference_run):
    """SIGTERM to the process group of `pspnet train` (as SLURM signals every process of a job; torch's DataLoader
    workers otherwise die of it and make the main process raise): exit 143, no traceback, ckpt_N of the last
    completed step, and running the printed command finishes the run exactly as the uninterrupted one."""
    config = write_config(tmp_path / "run.yaml", data_root, **RUN_SETTINGS)
    out = tmp_path / "run"
    victim = start(pspnet_command("train", str(config), "--out", str(out), "--quiet"), tmp_path)
    try:
        seen = wait_for(_logged_steps(out, 2), victim, timeout=120, interval=0.005)
        os.killpg(victim.pid, signal.SIGTERM)  # start() made the process the leader of its own group
        rc, _, err = finish(victim, timeout=120)
    finally:
        stop_group(victim)
    assert seen, f"the run logged no step:\n{err[-3000:]}"
    assert rc == 143, f"rc {rc}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    last = _check_stopped_run(out, "SIGTERM")
    assert f"stopped by SIGTERM after iteration {last}: saved {out / f'ckpt_{last}'}" in err
    command = _resume_command(err)
    assert command == shlex.join(["pspnet", "train", "--resume", str(out)])

    # the printed command, as printed (`pspnet` is found on PATH, the venv's bin first): RUN/config.yaml carries
    # the settings
    resumed = run(shlex.split(command), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_resumed_equals_reference(out, reference_run)


def test_sigint_to_the_process_group_like_ctrl_c(tmp_path, data_root, reference_run):
    """Ctrl-C signals the whole foreground process group, the DataLoader worker included: exit 130, no traceback
    (no KeyboardInterrupt in the main process or the worker), and the run resumes bitwise."""
    config = write_config(tmp_path / "run.yaml", data_root, **RUN_SETTINGS)
    out = tmp_path / "run"
    # Ctrl-C reaches a foreground job of an interactive shell, whose SIGINT is not ignored. A test process started in
    # the background of a non-interactive shell (`make test &`) inherits SIGINT ignored, would pass that on to the
    # run, and the run rightly keeps ignoring it: the run is started here with SIGINT not ignored (a Python handler
    # in this process becomes the default disposition in the child).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        victim = start(pspnet_command("train", str(config), "--out", str(out), "--quiet"), tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        seen = wait_for(_logged_steps(out, 1), victim, timeout=120, interval=0.005)
        os.killpg(victim.pid, signal.SIGINT)
        rc, _, err = finish(victim, timeout=120)
    finally:
        stop_group(victim)
    assert seen, f"the run logged no step:\n{err[-3000:]}"
    assert rc == 130, f"rc {rc} after {len(train_records(out))} of {TOTAL} steps:\n{err[-3000:]}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    _check_stopped_run(out, "SIGINT")
    resumed = run(shlex.split(_resume_command(err)), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_resumed_equals_reference(out, reference_run)


def test_stop_before_the_first_step_saves_nothing_and_the_first_signal_decides(
    tmp_path, data_root, monkeypatch, capsys
):
    """SIGTERM then SIGINT while the model is being built (in this process): no step completed, so nothing is
    saved; the first signal sets the exit status (143); the signal handlers are those of before afterwards."""
    build_model = train_module.build_model
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def build_then_signal(*args, **kwargs):
        if signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]:
            raise AssertionError("no SIGTERM handler installed during train(); not sending it")
        model = build_model(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # both reach the handler before os.kill returns, in this order
        os.kill(os.getpid(), signal.SIGINT)
        return model

    monkeypatch.setattr(train_module, "build_model", build_then_signal)
    config = write_config(tmp_path / "run.yaml", data_root, iterations=2, checkpoint_every=1, val_split=None)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM before a training step completed: nothing new to save" in err
    assert _resume_command(err) == shlex.join(["pspnet", "train", "--resume", str(out)])
    assert checkpoints(out) == [] and train_records(out) == []
    assert [r for r in read_log(out) if "event" in r] == [{"iteration": 0, "event": "stopped", "signal": "SIGTERM"}]
    assert {s: signal.getsignal(s) for s in before} == before


# -- two processes under torchrun ----------------------------------------------------------------------------------


def test_torchrun_sigterm_stops_both_processes_at_one_step_and_resumes(tmp_path, data_root):
    """SIGTERM to the torchrun launcher, which forwards it to each worker's process group (its DataLoader worker
    included): both processes stop after the same step, one checkpoint holds both processes' states, rank 0 alone
    prints the torchrun resume command, neither prints a traceback, and the resumed run equals one process
    accumulating 2 micro-batches bit for bit, as in test_train's DDP test (BN frozen, dropout 0; see there).

    torchrun itself ends with status 1 and its own SignalException traceback; the workers' streams go to files
    (--redirects) so that theirs are checked alone.
    """
    common = {**RUN_SETTINGS, "freeze_bn": True, "dropout": 0.0, "val_split": None}
    config = write_config(tmp_path / "ddp.yaml", data_root, accumulate=1, **common)
    out, logs = tmp_path / "ddp", tmp_path / "logs"
    launcher = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    command = [*launcher, "--log-dir", str(logs), "--redirects", "3", "-m", "pspnet.cli"]
    victim = start([*command, "train", str(config), "--out", str(out), "--quiet"], tmp_path)
    try:
        seen = wait_for(_logged_steps(out, 2), victim, timeout=120, interval=0.005)
        victim.send_signal(signal.SIGTERM)
        rc, _, launcher_err = finish(victim, timeout=120)
    finally:
        stop_group(victim)
    assert seen, f"the run logged no step:\n{launcher_err[-3000:]}"
    assert rc is not None, launcher_err[-3000:]
    streams = {int(p.parent.name): p.read_text() for p in logs.glob("*/attempt_0/*/stderr.log")}
    assert sorted(streams) == [0, 1], f"worker logs: {sorted(logs.rglob('*'))}\n{launcher_err[-3000:]}"
    for rank, text in streams.items():
        assert "Traceback" not in text, f"rank {rank}:\n{text[-3000:]}"
    assert "resume with" not in streams[1]
    last = _check_stopped_run(out, "SIGTERM")
    state = weights(out / f"ckpt_{last}/state.safetensors")
    assert {"rng.torch.0", "rng.torch.1"} <= set(state)  # written once, by both processes together
    resume = _resume_command(streams[0])
    assert resume == shlex.join(
        ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "pspnet.cli", "train", "--resume", str(out)]
    )

    resumed = run(shlex.split(resume), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = train(tiny_config(data_root, accumulate=2, **common), tmp_path / "single", progress=False)
    assert checkpoints(out)[-1] == TOTAL
    # bit for bit: DDP equals accumulation exactly (test_train's DDP test says why), and resuming is exact
    assert_equal_tensors(weights(out / f"ckpt_{TOTAL}/model.safetensors"), weights(reference / "model.safetensors"))
    assert [r["iteration"] for r in train_records(out)] == list(range(1, TOTAL + 1))
    assert [r["loss"] for r in train_records(out)] == [r["loss"] for r in train_records(tmp_path / "single")]


def test_resume_command_follows_the_launch(monkeypatch):
    """Plain, torchrun on one node (processes per node), torchrun on several nodes (nodes, rendezvous endpoint)."""
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = ["train", "--resume", "runs/my run"]
    assert distributed.launch_command(args) == "pspnet train --resume 'runs/my run'"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    assert distributed.node_count() == 1
    assert (
        distributed.launch_command(args)
        == "torchrun --standalone --nproc_per_node 4 -m pspnet.cli train --resume 'runs/my run'"
    )
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_ADDR", "node0")
    monkeypatch.setenv("MASTER_PORT", "29400")
    assert distributed.node_count() == 4
    assert distributed.launch_command(args) == (
        "torchrun --nnodes 4 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint node0:29400 -m pspnet.cli "
        "train --resume 'runs/my run'"
    )


# -- the log and --resume ------------------------------------------------------------------------------------------


def test_resume_refused_when_the_log_records_checkpoints_that_are_gone(tmp_path, data_root, capsys):
    config = write_config(tmp_path / "run.yaml", data_root, iterations=2, checkpoint_every=1, val_split=None)
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    assert [r for r in read_log(out) if r.get("event") == "checkpoint"] == [
        {"iteration": 1, "event": "checkpoint", "path": "ckpt_1"},
        {"iteration": 2, "event": "checkpoint", "path": "ckpt_2"},
    ]
    for n in checkpoints(out):
        for part in (out / f"ckpt_{n}").iterdir():
            part.unlink()
        (out / f"ckpt_{n}").rmdir()
    log = (out / "log.jsonl").read_text()

    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'log.jsonl'} records checkpoints up to ckpt_2 but {out} has none" in err
    assert "Traceback" not in err
    with pytest.raises(ConfigError, match="records checkpoints up to ckpt_2"):
        train(tiny_config(data_root, iterations=2, val_split=None), out, resume=out, progress=False)
    assert (out / "log.jsonl").read_text() == log and checkpoints(out) == []
    assert not list(out.glob("log.*.jsonl"))


def test_run_killed_before_its_first_checkpoint_restarts_with_its_log_kept_aside(
    tmp_path, data_root, monkeypatch, capsys
):
    """A kill while the first checkpoint is written (simulated) leaves a log with steps and no checkpoint: --resume
    starts again from iteration 0 and keeps the old log under the first free name (log.1.jsonl is taken here)."""
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated SIGKILL while writing the first checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "save_checkpoint", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(data_root, iterations=2, checkpoint_every=2, val_split=None), out, progress=False)
    assert checkpoints(out) == [] and [r["iteration"] for r in train_records(out)] == [1, 2]
    assert (out / "config.yaml").is_file()  # what `--resume RUN` reads
    old_log = (out / "log.jsonl").read_text()
    (out / "log.1.jsonl").write_text("an older log\n")

    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"{out / 'log.jsonl'} kept as {out / 'log.2.jsonl'}" in err
    assert (out / "log.2.jsonl").read_text() == old_log
    assert (out / "log.1.jsonl").read_text() == "an older log\n"
    assert [r["iteration"] for r in train_records(out)] == [1, 2]  # the new run's, from the start
    assert [json.loads(line)["iteration"] for line in old_log.splitlines()] == [1, 2]
    assert checkpoints(out) == [2]
