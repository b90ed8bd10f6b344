"""Full-size one-off: an official-layout PSPNet50 checkpoint with 11 classes, converted, evaluated on CamVid val.

The weights are random (seeded), so the mIoU is meaningless; what this measures is that every inference mode runs
end to end on real data through the command line, and how long each takes on this machine.

    .venv/bin/python benchmarks/eval_modes_camvid.py [--limit 3] [--root ../shared/data/camvid] [--work /tmp/x]

Prints one Markdown table row per mode with the exact command and the wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the hand-written official key layout used by the converter tests
from layouts import to_official

from pspnet.models.build import MODELS

MODES = {
    "whole (CamVid default: native 480x360)": ["--mode", "whole"],
    "slide 240x240, stride 2/3": ["--mode", "slide", "--crop", "240", "240"],
    "whole + flip": ["--mode", "whole", "--flip"],
    "multi-scale 0.5-1.75 + flip, slide 360x480": [
        "--mode",
        "slide",
        "--flip",
        "--scales",
        "0.5",
        "0.75",
        "1.0",
        "1.25",
        "1.5",
        "1.75",
    ],
    "whole, bf16": ["--mode", "whole", "--precision", "bf16"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--work", default="/tmp/pspnet-eval-modes")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pspnet_cli = str(Path(sys.executable).parent / "pspnet")

    torch.manual_seed(0)
    model = MODELS["pspnet50"](num_classes=11)
    state = {f"module.{k}": v for k, v in to_official(model.state_dict()).items()}
    torch.save({"epoch": 1, "state_dict": state, "optimizer": {}}, work / "official_pspnet50_camvid.pth")
    dst = work / "pspnet50_camvid.safetensors"
    convert = [pspnet_cli, "convert", "--from", "official", str(work / "official_pspnet50_camvid.pth"), str(dst)]
    subprocess.run([*convert, "--dataset", "camvid", "--force"], check=True)

    cpu = next(
        (
            l.split(":", 1)[1].strip()
            for l in Path("/proc/cpuinfo").read_text().splitlines()
            if l.startswith("model name")
        ),
        "?",
    )
    print(
        f"\nmachine: {cpu}, {torch.get_num_threads()} threads; torch {torch.__version__}; {platform.python_version()}"
    )
    print(
        "| mode | command (after `pspnet eval pspnet50_camvid.safetensors --dataset camvid --root DIR --limit N`) "
        "| wall time | s/image | mIoU (random weights) |"
    )
    print("|---|---|---:|---:|---:|")
    for name, extra in MODES.items():
        out = work / name.split()[0]
        command = [pspnet_cli, "eval", str(dst), "--dataset", "camvid", "--root", args.root, "--limit", str(args.limit)]
        command += ["--out", str(out), *extra]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        report = json.loads((out / "metrics.json").read_text())
        print(
            f"| {name} | `{' '.join(extra)}` | {seconds:.1f} s | {report['seconds'] / args.limit:.2f} | "
            f"{100 * report['mIoU']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
