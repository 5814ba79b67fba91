"""gptkit's own CPU kernels for decoding (`native.c`), compiled for this CPU on first use: decoding-sized
products (`gemv`) and one-query attention over the KV cache (`attend`).

A decode step multiplies a few rows by every weight matrix once, so its time is the time to stream the weights
from memory. torch 2.13's CPU kernels stream them at a fraction of the machine's bandwidth: measured on a
2-core AVX2 EPYC with GPT-2 124M's 49 decode matrices, one row (copy bandwidth ~25 GB/s), float32 MKL sgemv
13-15 GB/s, bfloat16 15-17, `_weight_int8pack_mm` 8-11; `native.c` 26, 21 and 19 GB/s. It widens bfloat16
and int8 weights to float32 in registers and accumulates in float32 (int8 activations stay float32 too,
where `_weight_int8pack_mm` needs them rounded to bfloat16).

Attention for one query per row over the cache is small work that torch's kernels spend in overheads: SDPA took
146 us a layer in float32 at 144 slots, math in bfloat16 473 us; `attend` computes it in one pass per head.

The source ships with the package and is compiled once per machine with the system's C compiler
(`$CC`, else `cc`; `-O3 -march=native -fopenmp`), into `$XDG_CACHE_HOME/gptkit/native` (`~/.cache/...`),
under a name that hashes the source, the compiler, the flags and the CPU, written atomically. The OpenMP
runtime is the one torch already loaded (same soname), and every call is told torch's thread count. Where
no compiler or no OpenMP is found, `library()` is None and `kernels.linear` keeps torch's kernels.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
MAX_ROWS = 8  # rows (batch x new tokens) up to which the kernel beats torch's: see `applies`
# ... and for bfloat16 where torch has only its generic loop (no bf16 instructions): on the AVX2 EPYC, the
# products of three GPT-2 124M blocks at 64 rows took 55 ms here against torch's 149 (and 57 through float32
# MKL); at 128 rows 128 against 309 (73 through float32 MKL)
MAX_ROWS_SLOW_BF16 = 64
_SERIAL_BELOW = 1 << 16  # values (weights, cached keys) below which one thread beats waking the others
_WEIGHT_TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}
_IO_TYPES = {torch.float32: 0, torch.bfloat16: 1}


def _cpu_identity() -> str:
    """What `-march=native` depends on: the machine and, on Linux, the CPU's model and feature flags."""
    lines = []
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            wanted = ("model name", "flags", "Features", "CPU part")
            lines = sorted({line.strip() for line in f if line.startswith(wanted)})
    return "\n".join([platform.machine(), platform.processor(), *lines])


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gptkit" / "native"


def _compile(compiler: str, target: Path) -> bool:
    """Compile SOURCE into `target` through a temporary file in the same folder, renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
    os.close(fd)
    try:
        command = [compiler, *FLAGS, str(SOURCE), "-o", temporary, "-lm"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            log.info("gptkit's CPU kernel did not compile (%s): %s", compiler, done.stderr.strip()[-2000:])
            return False
        os.replace(temporary, target)
        return True
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def build(compiler: str, folder: Path) -> Path | None:
    """The kernel compiled by `compiler` for this CPU in `folder` (compiled now unless already there); None when
    it does not compile."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, *FLAGS, _cpu_identity()]).encode())
    target = folder / f"native-{key.hexdigest()[:20]}.so"
    if target.exists() or _compile(compiler, target):
        return target
    return None


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None where it cannot be (no C compiler or OpenMP, no cache folder)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        log.info("no C compiler found ($CC or cc): decoding uses torch's kernels")
        return None
    try:
        built = build(compiler, cache_dir())
        if built is None:
            return None
        lib = ctypes.CDLL(str(built))
    except (OSError, subprocess.SubprocessError) as error:
        log.info("gptkit's CPU kernel is unavailable: %s", error)
        return None
    p, i, n = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    lib.gptkit_gemv.argtypes = [p, i, p, p, p, p, i, n, n, n, i]
    lib.gptkit_gemv.restype = i
    lib.gptkit_attend.argtypes = [p, p, p, p, p, i, *[n] * 13, ctypes.c_float, i]
    lib.gptkit_attend.restype = i
    return lib


def _threads(values: int) -> int:
    """One thread for small work (waking the others costs more), else torch's thread count."""
    return 1 if values < _SERIAL_BELOW else torch.get_num_threads()


def applies(x: Tensor, weight: Tensor, max_rows: int = MAX_ROWS) -> bool:
    """Whether `gemv(x, weight, ...)` computes this product: a CPU product of at most `max_rows` rows, with float32
    or bfloat16 weights of x's dtype or int8 weights and float32 x, contiguous weights, and the kernel built.
    Gradients and autocast are the caller's to exclude. (Called for every product: cheap checks first.)"""
    if not (x.is_cpu and weight.is_cpu and weight.dim() == 2 and weight.is_contiguous()):
        return False
    width = weight.shape[1]
    if x.shape[-1] != width or not 0 < x.numel() <= max_rows * width:
        return False
    dtype = weight.dtype
    typed = x.dtype == torch.float32 if dtype == torch.int8 else x.dtype == dtype and dtype in _IO_TYPES
    return typed and library() is not None


def gemv(x: Tensor, weight: Tensor, bias: Tensor | None = None, scale: Tensor | None = None) -> Tensor:
    """x (..., K) @ weight (N, K)^T (* scale (N,), float32) (+ bias (N,)), in x's dtype: see `applies`.

    Each output is one float32 sum over K (then scaled, then biased), rounded once to x's dtype."""
    lib = library()
    assert lib is not None, "check native.applies first"
    n, k = weight.shape
    rows = x.reshape(-1, k).contiguous()  # (M, K)
    out = torch.empty((rows.shape[0], n), dtype=x.dtype)  # (M, N)
    if bias is not None:  # held in variables: the kernel reads them after these lines
        bias = bias.to(x.dtype).contiguous()
    if scale is not None:
        scale = scale.float().contiguous()
    status = lib.gptkit_gemv(
        weight.data_ptr(),
        _WEIGHT_TYPES[weight.dtype],
        None if scale is None else scale.data_ptr(),
        rows.data_ptr(),
        None if bias is None else bias.data_ptr(),
        out.data_ptr(),
        _IO_TYPES[x.dtype],
        rows.shape[0],
        n,
        k,
        _threads(weight.numel()),
    )
    if status != 0:
        raise MemoryError(f"gptkit's CPU kernel could not allocate {rows.numel() * 4} bytes for its input")
    return out.view(*x.shape[:-1], n)


def attention_applies(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> bool:
    """Whether `attend(q, k, v, mask)` computes this attention: CPU, one query per row (q (B, nh, 1, hs)), keys and
    values (B, nh, S, hs) of q's dtype (float32 or bfloat16) with contiguous last dimensions, a bool mask
    (B|1, 1, 1, S), and the kernel built. Gradients and dropout are the caller's to exclude."""
    if q.device.type != "cpu" or q.dim() != 4 or q.shape[2] != 1 or mask is None or q.dtype not in _IO_TYPES:
        return False
    B, H, _, D = q.shape
    if k.dtype != q.dtype or v.dtype != q.dtype or k.shape != v.shape or k.shape[:2] != (B, H) or k.shape[3] != D:
        return False
    if q.stride(3) != 1 or k.stride(3) != 1 or v.stride(3) != 1 or mask.dtype != torch.bool:
        return False
    return mask.shape in ((B, 1, 1, k.shape[2]), (1, 1, 1, k.shape[2])) and library() is not None


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(hs), slots where mask is False left out) v, in float32, rounded once to q's dtype:
    q (B, nh, 1, hs), k and v (B, nh, S, hs), mask (B|1, 1, 1, S) -> (B, nh, 1, hs). See `attention_applies`."""
    lib = library()
    assert lib is not None, "check native.attention_applies first"
    B, H, _, D = q.shape
    seen = mask.reshape(mask.shape[0], -1).contiguous()  # (B|1, S)
    out = torch.empty(B, H, 1, D, dtype=q.dtype)
    status = lib.gptkit_attend(
        q.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        seen.data_ptr(),
        out.data_ptr(),
        _IO_TYPES[q.dtype],
        B,
        H,
        k.shape[2],
        D,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        seen.stride(0) if seen.shape[0] > 1 else 0,
        D**-0.5,
        _threads(k.numel()),
    )
    if status != 0:
        raise MemoryError(f"gptkit's attention kernel could not allocate its workspace for {B * H} heads")
    return out
