"""pspnet.heap.keep_freed_memory: freed tensors stay in the process's heap for the next allocation.

Checked with glibc's own accounting (``mallinfo2``) in a fresh interpreter each time, since the setting is for the
whole process: a 64 MiB tensor gets a mapping of its own (``hblkhd`` grows by its size) and gives it back on free
without the setting; with it, the tensor comes from the heap (``arena``) and its bytes stay there, free for reuse
(``fordblks``), after it is freed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from pspnet import cli, heap

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

PROBE = textwrap.dedent(
    """
    import ctypes, json, sys
    import torch
    from pspnet.heap import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    before = libc.mallinfo2()
    x = torch.empty(64 * 2**20, dtype=torch.uint8)
    x.fill_(1)
    during = libc.mallinfo2()
    del x
    after = libc.mallinfo2()
    print(json.dumps({
        "applied": applied,
        "mapped_during": during.hblkhd - before.hblkhd,
        "mapped_after": after.hblkhd - before.hblkhd,
        "heap_free_after": after.fordblks,
    }))
    """
)

SIZE = 64 * 2**20


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_without_it_a_big_tensor_is_mapped_and_returned():
    # the behaviour keep_freed_memory changes: shows the probe can tell the two apart
    result = _probe("default")
    assert result["mapped_during"] >= SIZE
    assert result["mapped_after"] == 0


def test_with_it_a_big_tensor_comes_from_the_heap_and_stays_there():
    result = _probe("keep")
    assert result["applied"] is True
    assert result["mapped_during"] == 0
    assert result["heap_free_after"] >= SIZE


def test_every_command_keeps_freed_memory(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(True) or True)
    assert cli.main(["info", "--model", "pspnet18", "--classes", "3", "--size", "64", "64"]) == 0
    assert calls == [True]
    assert "pspnet18" in capsys.readouterr().out


def test_the_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv(heap.ENVIRONMENT_VARIABLE, "0")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "keep"], capture_output=True, text=True, check=True, env=dict(os.environ)
    )
    result = json.loads(done.stdout)
    assert result["applied"] is False
    assert result["mapped_during"] >= SIZE  # glibc's defaults: the tensor had a mapping of its own


@pytest.mark.parametrize("entry", ["load_model", "Segmenter"])
def test_the_python_entry_points_keep_freed_memory(monkeypatch, tmp_path, entry):
    from pspnet import runs, segmenter
    from pspnet.models.pspnet import PSPNet
    from pspnet.weights.model_file import save_model

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(entry) or True)
    model = PSPNet(num_classes=2, depth=18, head_channels=8, aux=False)
    if entry == "load_model":
        path = tmp_path / "m.safetensors"
        save_model(model, path)
        runs.load_model(path)
    else:
        segmenter.Segmenter(model)
    assert calls == [entry]
