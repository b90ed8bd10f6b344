"""Load on ``pspnet serve``: concurrent clients on loopback for a fixed time, latency percentiles, images/s, the
server's peak memory and the error count (which must be 0).

    .venv/bin/python benchmarks/serve_load.py [MODEL] [--clients 32] [--seconds 60] [--max-requests 5000]
        [--images ../shared/data/camvid/val] [--batch 4] [--queue 64]

Without MODEL, a PSPNet18 with random weights and CamVid's card (11 classes, base size 480: CamVid's native size)
is written to a temporary file: a model small enough for a 2-core CPU. The server runs as ``pspnet serve`` in its
own process (``--timeout`` long enough that no request times out under this load); each client posts CamVid
images (PNG, the raw body, default format: the palette PNG) one after another until the time is up or the
request budget is spent. Latency is measured by the client, from sending to the whole answer. Peak RSS is the
server process's VmHWM from /proc at the end. Prints the machine, the command and a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def random_camvid_model(path: Path) -> Path:
    """A PSPNet18 with random weights and CamVid's card, written to ``path``."""
    from pspnet.data.classes import DATASETS
    from pspnet.models.build import MODELS
    from pspnet.weights.model_file import make_card, save_model

    model = MODELS["pspnet18"](num_classes=len(DATASETS["camvid"].classes))
    save_model(model, path, card=make_card(model.config, dataset="camvid"))
    return path


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set size) of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(base: str, bodies: list[bytes], clients: int, seconds: float, budget: int) -> tuple[list, list]:
    """(latencies in s of the 200 answers, other answers as status codes or exception names)."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    sent = 0

    async def client(k: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(timeout=600) as http:
            i = k
            while time.monotonic() < deadline and sent < budget:
                sent += 1
                start = time.perf_counter()
                try:
                    answer = await http.post(f"{base}/v1/segment", content=bodies[i % len(bodies)])
                    if answer.status_code == 200:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors.append(str(answer.status_code))
                except httpx.HTTPError as error:
                    errors.append(type(error).__name__)
                i += clients

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="model file or run directory (default: random PSPNet18, CamVid card)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "camvid" / "val"))
    parser.add_argument("--limit", type=int, default=16, help="distinct images posted (default: 16)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--queue", type=int, default=64)
    args = parser.parse_args()

    import httpx

    load_before = os.getloadavg()
    files = sorted(Path(args.images).glob("*.png"))[: args.limit]
    if not files:
        sys.exit(f"error: no PNG images in {args.images}")
    bodies = [f.read_bytes() for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(random_camvid_model(Path(tmp) / "pspnet18_camvid_random.safetensors"))
        port = free_port()
        command = [
            sys.executable, "-m", "pspnet.cli", "serve", model, "--port", str(port), "--batch", str(args.batch),
            "--queue", str(args.queue), "--timeout", "600", "--precision", "fp32",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        log = open(Path(tmp) / "server.log", "w+")  # noqa: SIM115 - read back at the end
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                sys.exit("error: the server did not start")
            httpx.post(f"{base}/v1/segment", content=bodies[0], timeout=600)  # warm-up: oneDNN builds kernels
            start = time.perf_counter()
            latencies, errors = asyncio.run(load(base, bodies, args.clients, args.seconds, args.max_requests))
            elapsed = time.perf_counter() - start
            rss = peak_rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(120)
    ms = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99]) if latencies else [float("nan")] * 3
    shape = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(files[0])).shape
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average before: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f}"
    )
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"server: {shlex.join(command[1:])}")
    print(f"images: {len(files)} CamVid val PNGs, {shape[1]}x{shape[0]}\n")
    print(
        "| clients | time (s) | answers 200 | errors | images/s | p50 (ms) | p95 (ms) | p99 (ms) | server peak RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.clients} | {elapsed:.1f} | {len(latencies)} | {len(errors)} | {len(latencies) / elapsed:.2f} | "
        f"{ms[0]:.0f} | {ms[1]:.0f} | {ms[2]:.0f} | {rss:.0f} |"
    )
    if errors:
        print(f"\nerrors: {sorted(set(errors))}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
