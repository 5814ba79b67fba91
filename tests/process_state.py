"""Probes of the process-wide state a library call must leave as it found it (for the tests' before/after checks).

Each probe reads without changing anything: none of them draws from a random number generator.
"""

from __future__ import annotations

import ctypes
import random
import sys
from typing import Any

import torch

from gptkit.models import kernels
from gptkit.training.scopes import denormals_flushed

LARGE = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MB): mmapped unless freed memory is kept


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
        + ("keepcost",)
    ]


def _libc() -> Any:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


LIBC = _libc()


def large_malloc_is_mmapped() -> bool | None:
    """Whether glibc serves a 64 MB malloc with its own mmap (its default) rather than from the heap (kept
    freed memory); None where this cannot be observed."""
    if LIBC is None:
        return None
    before = LIBC.mallinfo2().hblks
    pointer = LIBC.malloc(LARGE)
    try:
        return LIBC.mallinfo2().hblks > before
    finally:
        LIBC.free(pointer)


def onednn_in_use() -> bool:
    """Whether kernels.linear takes the oneDNN path here (seen in the autograd node it records)."""
    x = torch.ones(2, 4, requires_grad=True)
    return "OneDNN" in type(kernels.linear(x, torch.ones(3, 4)).grad_fn).__name__


def global_state() -> dict[str, Any]:
    """Everything a training call could leave changed, in comparable form."""
    import matplotlib

    return {
        "torch_rng": torch.get_rng_state().numpy().tobytes(),
        "python_rng": random.getstate(),
        "denormals_flushed": denormals_flushed(),
        "matplotlib_backend": dict.__getitem__(matplotlib.rcParams, "backend"),  # raw: reading resolves nothing
        "pyplot_imported": "matplotlib.pyplot" in sys.modules,
        "large_malloc_mmapped": large_malloc_is_mmapped(),
        "onednn": onednn_in_use(),
    }
