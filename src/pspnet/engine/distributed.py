"""torch.distributed set-up for torchrun (single- and multi-node) and a plain single process alike.

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``: the process group is
initialised with NCCL on CUDA and gloo on the CPU, and each process takes the GPU of its local rank. Without
them nothing is initialised and every helper here acts as the identity, so single-process code needs no branches
(and never fails with "default process group has not been initialised").

:func:`launch_command` gives the shell command that starts ``pspnet`` again the way this process was launched
(plain, or torchrun with the same number of processes per node, nodes and rendezvous endpoint), for the resume
command a stopped run prints.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_reduce_max",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "gather_objects",
    "launch_command",
    "node_count",
    "rank_and_world",
    "setup",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> DistInfo:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1); pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
    """Reduce ``tensor`` over all processes in place with ``op`` (identity in a single process); returns it.

    NCCL reduces only CUDA tensors: a CPU tensor goes through this process's GPU and back.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    if "nccl" in str(dist.get_backend()).lower() and tensor.device.type != "cuda":
        work = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(work, op=op)
        tensor.copy_(work.to(tensor.device))
    else:
        dist.all_reduce(tensor, op=op)
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (identity in a single process); returns it."""
    return _all_reduce(tensor, dist.ReduceOp.SUM)


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``tensor`` over all processes in place (identity in a single process); returns it."""
    return _all_reduce(tensor, dist.ReduceOp.MAX)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_objects(obj: object) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    _rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[object] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def node_count() -> int:
    """Nodes of this torchrun job: ``GROUP_WORLD_SIZE``, else ``WORLD_SIZE // LOCAL_WORLD_SIZE``; 1 without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return int(os.environ.get("GROUP_WORLD_SIZE", str(max(world // max(per_node, 1), 1))))


def launch_command(args: Sequence[str]) -> str:
    """The shell command that runs ``pspnet ARGS`` the way this process was started.

    A single process: ``pspnet ARGS``. Under torchrun (``WORLD_SIZE`` > 1), on one node: ``torchrun --standalone
    --nproc_per_node N -m pspnet.cli ARGS`` with N = ``LOCAL_WORLD_SIZE``; on several nodes also ``--nnodes``
    (``GROUP_WORLD_SIZE``) and ``--rdzv-backend c10d --rdzv-endpoint MASTER_ADDR:MASTER_PORT``, to be run on every node.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return shlex.join(["pspnet", *args])
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    nodes = node_count()
    if nodes <= 1:
        launcher = ["torchrun", "--standalone", "--nproc_per_node", str(per_node)]
    else:
        endpoint = f"{os.environ.get('MASTER_ADDR', 'HOST')}:{os.environ.get('MASTER_PORT', '29500')}"
        launcher = ["torchrun", "--nnodes", str(nodes), "--nproc_per_node", str(per_node)]
        launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint]
    return shlex.join([*launcher, "-m", "pspnet.cli", *args])
