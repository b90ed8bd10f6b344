"""Fuzz pspnet with generated user inputs, in-process, and count what happens to each.

    .venv/bin/python benchmarks/fuzz.py [--cases 10000] [--seed 0] [--only NAME ...] [--no-train] [--show 3]

The generators are those of the test suite (``tests/fuzz_cases.py``, hypothesis strategies): photos of every
Pillow mode and format down to 1x1 and 1x300 with EXIF orientations and damage, masks of a folder data set,
``classes.yaml`` files, training configs and model-file metadata. Each case goes through ``pspnet.cli.main`` and the
Python API in this one process, with a tiny model (ResNet-18, 16-channel head, 3 classes, base size 24) loaded
from its model file, so no case pays for a new interpreter. Each entry point's outcome is one of

    ok          success with the right result (the upright size, the mask's pixel counts, ...)
    named       a documented failure: one 'error: ...' line, a data check problem or a named exception naming
                the file at fault
    unexpected  a raw traceback, an exception escaping pspnet.cli.main, 'error: unexpected TYPE', an
                undocumented exception class, or a case that ran for more than --timeout seconds
    unnamed     an error that does not name the file at fault (or is no bounded single line)
    wrong       a valid input refused, an invalid one accepted, a result of the wrong size

The cases are split between the categories by the weights in ``fuzz_cases.categories`` (cheap ones get more).
Valid generated training configs are trained (a second or so) only when tiny; --no-train only validates them.
Prints a table per category and entry point, the seed, the machine and the command to rerun; a few failing cases
of each kind with --show. Exit status 1 when any outcome is unexpected, unnamed or wrong.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fuzz_cases as fc
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

import pspnet


class CaseTimeout(BaseException):
    """A case ran past --timeout (a BaseException, so that no ``except Exception`` in pspnet swallows it)."""


def _alarm(signum, frame):
    raise CaseTimeout()


def run_category(
    category: fc.Category,
    fixture: fc.Fixture,
    count: int,
    seed_value: int,
    timeout: int,
    show: int,
    tallies: dict,
    examples: dict,
    scratch_root: Path,
) -> int:
    """Run ``count`` cases of ``category`` drawn with ``seed_value``; returns how many ran."""
    ran = 0
    started = time.perf_counter()

    @seed(seed_value)
    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(category.strategy)
    def body(case):
        nonlocal ran
        ran += 1
        signal.alarm(timeout)
        try:
            with fc.scratch(scratch_root) as folder:
                outcomes = category.run(fixture, case, folder)
        except CaseTimeout:
            outcomes = {"(any)": fc.Outcome(fc.UNEXPECTED, f"ran past {timeout} s")}
        except Exception as error:  # noqa: BLE001 - an exception the runner let through: an API escape
            outcomes = {"(runner)": fc.Outcome(fc.UNEXPECTED, "".join(traceback.format_exception_only(error)))}
        finally:
            signal.alarm(0)
        for entry, outcome in outcomes.items():
            tallies[(category.name, entry)][outcome.kind] += 1
            if not outcome.passed and len(examples[(category.name, outcome.kind)]) < show:
                examples[(category.name, outcome.kind)].append(
                    f"{entry}: {outcome.detail[:500]}\n      case: {repr(case)[:700]}"
                )
        if ran % 100 == 0:
            rate = ran / (time.perf_counter() - started) * 60
            print(f"  {category.name}: {ran}/{count} ({rate:.0f} cases/min)", file=sys.stderr, flush=True)

    body()
    return ran


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000, help="cases in all, split by weight (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed; category i uses seed + i")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="categories whose name starts so")
    parser.add_argument("--no-train", action="store_true", help="validate valid configs without training them")
    parser.add_argument("--timeout", type=int, default=120, help="seconds one case may run (default: 120)")
    parser.add_argument("--show", type=int, default=3, help="failing cases shown per category and kind")
    args = parser.parse_args()

    torch.set_num_threads(1)  # tensors this small gain nothing from threads; the machine is shared
    signal.signal(signal.SIGALRM, _alarm)
    chosen = [
        c for c in fc.categories(train_valid=not args.no_train) if not args.only or c.name.startswith(tuple(args.only))
    ]
    total_weight = sum(c.weight for c in chosen)
    counts = [max(1, round(args.cases * c.weight / total_weight)) for c in chosen]
    tallies: dict = defaultdict(Counter)
    examples: dict = defaultdict(list)
    ran: dict[str, int] = {}
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pspnet-fuzz-") as tmp:
        fixture = fc.make_fixture(Path(tmp) / "fixture")
        for i, (category, count) in enumerate(zip(chosen, counts)):
            print(f"{category.name}: {count} cases, seed {args.seed + i}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            ran[category.name] = run_category(
                category, fixture, count, args.seed + i, args.timeout, args.show, tallies, examples, Path(tmp)
            )
            seconds[category.name] = time.perf_counter() - t0
    total = time.perf_counter() - started

    command = shlex.join([".venv/bin/python", "benchmarks/fuzz.py", *sys.argv[1:]])
    print(f"pspnet {pspnet.__version__} fuzzing, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"command: {command}  (seed {args.seed}; category i draws with seed {args.seed} + i)")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch CPU "
        f"capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, {fc.python_info()}, "
        f"1 intra-op thread"
    )
    print()
    header = ["category", "cases", "s/case", "entry point", *fc.KINDS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    bad = Counter()
    for category in chosen:
        name = category.name
        entries = sorted(entry for (cat, entry) in tallies if cat == name)
        for n, entry in enumerate(entries):
            counter = tallies[(name, entry)]
            first = [name, str(ran[name]), f"{seconds[name] / max(ran[name], 1):.3f}"] if n == 0 else ["", "", ""]
            print("| " + " | ".join([*first, entry, *(str(counter[k]) for k in fc.KINDS)]) + " |")
            for kind in fc.KINDS:
                if kind not in fc.PASSING:
                    bad[kind] += counter[kind]
    cases = sum(ran.values())
    print()
    print(
        f"{cases} cases in {total:.0f} s ({cases / total * 60:.0f} cases/min, {total / max(cases, 1):.3f} s/case); "
        f"failures: {bad[fc.UNEXPECTED]} unexpected (raw traceback or escape), {bad[fc.UNNAMED]} not naming the "
        f"file, {bad[fc.WRONG]} wrong results"
    )
    for (name, kind), shown in sorted(examples.items()):
        print(f"\n{name}: {kind}")
        for line in shown:
            print(f"  - {line}")
    return 1 if sum(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
