"""Keep the memory that PyTorch frees inside the process for reuse, instead of handing it back to the kernel.

Why: glibc's ``malloc`` gives every block above a threshold (128 KiB at the start, raised as blocks are freed to at
most 32 MiB) a mapping of its own and unmaps it on ``free``, and it returns the free top of its heap to the kernel
once more than 128 KiB sit there. A network's activations are tens to hundreds of MiB each, so without this every
forward pass and every training step asks the kernel for the same memory again, as fresh zeroed pages, one page fault
per 4 KiB. On the 2-core VM of docs/benchmarks.md a PSPNet50 training step spent 3.3 s of system CPU time per step
of about 15 s without this setting and 0.3 s with it (benchmarks/profile_train_step.py), and the official code's
fp32 forward at 512x512 took 2.30 s without it and 2.07 s with it (benchmarks/official_vs_pspnet.py).

:func:`keep_freed_memory` raises both thresholds with glibc's ``mallopt``, for the whole process and its forked
children (DataLoader workers), as PyTorch's CUDA allocator keeps GPU memory it has freed. The cost: the process's
resident memory no longer shrinks after a peak, and the peak itself may grow a little (pspnet's training step: 3.57
against 3.40 GiB peak RSS in benchmarks/official_vs_pspnet.py). The entry points that run networks apply it: every ``pspnet`` command,
``pspnet.load_model``, ``Segmenter`` and ``pspnet.engine.train.train``. The environment variable
``PSPNET_KEEP_FREED_MEMORY=0`` turns it off (glibc's defaults stay). Elsewhere (macOS, Windows, musl) it changes
nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["ENVIRONMENT_VARIABLE", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory", "kept"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # bytes: a block above 1 GiB still gets a mapping of its own, returned on free
TRIM_THRESHOLD = (1 << 31) - 1  # bytes (the largest int mallopt takes): free heap top kept up to 2 GiB
ENVIRONMENT_VARIABLE = "PSPNET_KEEP_FREED_MEMORY"  # "0" turns keep_freed_memory off

_kept = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to :data:`MMAP_THRESHOLD` bytes in the heap for the next allocation
    (``mallopt(M_MMAP_THRESHOLD)``) and not trim the heap below :data:`TRIM_THRESHOLD` bytes of free top
    (``mallopt(M_TRIM_THRESHOLD)``), for this process and the children it forks from now on.

    Returns True when both settings took effect (Linux with glibc), False elsewhere and when the environment variable
    ``PSPNET_KEEP_FREED_MEMORY`` is ``0``: nothing changed then. Calling it again does nothing more.
    """
    global _kept
    if _kept:
        return True
    if os.environ.get(ENVIRONMENT_VARIABLE, "").strip() == "0":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the symbols the process already has: glibc's malloc, which torch's allocator uses
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept


def kept() -> bool:
    """Whether :func:`keep_freed_memory` has taken effect in this process (a spawned child starts without it)."""
    return _kept
