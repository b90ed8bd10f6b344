"""Where one fp32 training step of PSPNet50 goes on this CPU: its convolutions against the rest, and the kernel time.

    .venv/bin/python benchmarks/profile_train_step.py [--steps 3] [--glibc-heap]

``pspnet.engine.train.train_step`` (the step ``pspnet train`` runs) on PSPNet50 with 150 classes, random weights,
one synthetic batch of 2 x 473x473, SGD as ``pspnet bench`` builds it. After one warm-up step it times ``--steps``
steps with the process's user and system CPU time (``resource.getrusage``: the system time is mostly page faults
when freed memory goes back to the kernel), then profiles one more step with ``torch.profiler`` and prints the
self time of the convolutions (forward ``aten::mkldnn_convolution`` and ``aten::convolution_backward``) and of the
ten largest other operators. ``--glibc-heap`` keeps glibc's heap defaults instead of ``pspnet.heap``'s setting.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from pspnet import heap
from pspnet.bench import machine_info
from pspnet.engine.train import StepSettings, param_groups, train_step
from pspnet.inference import cpu_flags
from pspnet.models.pspnet import PSPNet

CONVOLUTIONS = ("aten::mkldnn_convolution", "aten::convolution_backward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (default 3)")
    parser.add_argument("--glibc-heap", action="store_true", help="keep glibc's heap defaults (no pspnet.heap)")
    args = parser.parse_args()
    if not args.glibc_heap:
        heap.keep_freed_memory()
    info = machine_info(torch.device("cpu"))
    print(
        f"machine: {info['cpu_model']}; capability {'+'.join(cpu_flags())}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; heap {'kept' if heap.kept() else 'glibc defaults'}"
    )
    print(f"command: {shlex.join([sys.executable.split('/')[-1], *sys.argv])}")

    torch.manual_seed(0)
    model = PSPNet(num_classes=150, depth=50)
    optimizer = torch.optim.SGD(param_groups(model, lr=0.01, head_lr_mult=10), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 256, (2, 3, 473, 473), generator=generator, dtype=torch.uint8),
        "mask": torch.randint(0, 150, (2, 473, 473), generator=generator),
    }
    settings = StepSettings()

    def step() -> None:
        train_step(model, optimizer, scaler, [batch], settings)

    step()  # warm-up
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    seconds = []
    for _ in range(args.steps):
        begun = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - begun)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    print(
        f"{args.steps} steps: {', '.join(f'{s:.2f}' for s in seconds)} s; over them {wall:.1f} s wall, "
        f"{after.ru_utime - before.ru_utime:.1f} s user, {after.ru_stime - before.ru_stime:.1f} s system CPU time"
    )

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        started = time.perf_counter()
        step()
        profiled = time.perf_counter() - started
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    convolutions = sum(e.self_cpu_time_total for e in events if e.key in CONVOLUTIONS) / 1e6
    print(
        f"profiled step: {profiled:.2f} s wall; self CPU time {total:.2f} s in all (summed over threads' calls), "
        f"{convolutions:.2f} s in convolutions ({100 * convolutions / total:.0f}%)"
    )
    for event in [e for e in events if e.key not in CONVOLUTIONS][:10]:
        print(f"  {event.key:<45} {event.self_cpu_time_total / 1e6:7.3f} s  {event.count:5d} calls")


if __name__ == "__main__":
    main()
