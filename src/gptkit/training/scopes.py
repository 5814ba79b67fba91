"""Process-wide settings a training run changes, each set for the run's scope and restored afterwards.

The random number generators (torch's CPU and CUDA ones, Python's `random`) and the CPU's flush-denormal flag
belong to the caller: `fit` runs inside `private_rng` and `flushing_denormals`, so a call leaves them as it
found them. (glibc's malloc settings and the oneDNN switch are scoped in gptkit.models.kernels.)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """The global generators' states, for a training checkpoint."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def private_rng(seed: int) -> Iterator[None]:
    """Inside: torch's global generators seeded with `seed` (weight initialisation, dropout); on leaving, they
    and Python's `random` are back in the caller's state."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    python = random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(python)


def denormals_flushed() -> bool:
    """Whether this thread's CPU flushes subnormal floats to zero (torch can set the flag, not read it: probe)."""
    return torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0


@contextmanager
def flushing_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush subnormal floats to zero inside (this thread; x86 and ARM CPUs), then restore the previous flag.

    Tiny gradients and Adam moments become subnormal, which x86 CPUs process ~100x slower: measured 6x slower
    steps on the Shakespeare recipe. Flushing them to zero changes nothing visible.
    """
    before = denormals_flushed()
    if not enabled or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
