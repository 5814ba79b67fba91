"""CPU speed: the model's Linear layers through gptkit's decoding kernels or oneDNN, and freed memory kept for
reuse while training.

PyTorch's fp32 `F.linear` on CPU calls MKL's sgemm, and MKL takes a generic (AVX2-class) code path on
non-Intel processors: on this project's AMD EPYC machines it reaches ~185 GFLOP/s in training-sized
products and ~16 GB/s of weights in one-token decoding, where oneDNN (also bundled with PyTorch, and
what PyTorch already uses for bf16) reaches ~390 GFLOP/s and ~30 GB/s. `linear` sends fp32 CPU
products to oneDNN's linear primitive, forward and backward, and everything else (GPU, bf16/fp16,
autocast, torch.compile, a torch without oneDNN) to `F.linear`. The results are fp32 products summed
in another order: equal to F.linear's to rounding (tests check both values and gradients).
It is on by default where it pays (`onednn_pays`: CPUs with AVX-512; on AVX2-only CPUs MKL and oneDNN both run
AVX2 code and MKL was the faster); `with use_onednn(False):` turns it off for the calls made inside (this thread
or task only: the switch is a context variable, set and restored by the `with`).

Products of a few rows without gradients (decoding) go before all that to gptkit's own kernel (`native`), which
streams the weights at memory speed where torch's kernels reach a fraction of it; `with use_native(False):`
leaves them to the paths above.

`keep_freed_memory` is the other half: PyTorch's CPU tensors come straight from malloc, and glibc hands
blocks over 32 MB (an embedding's gradient, a batch of logits) back to the OS on free, so every training
step page-faults them in again (measured: 10-15% of a small-model fine-tuning step).
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.models import native

_ONEDNN_ON: ContextVar[bool] = ContextVar("gptkit_onednn", default=True)
_NATIVE_ON: ContextVar[bool] = ContextVar("gptkit_native", default=True)


@functools.cache
def onednn_op() -> Callable[..., Tensor] | None:
    """The primitive behind inductor's CPU linear lowering, looked up once; None in builds without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


@functools.cache
def cpu_has_fast(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies `dtype` matrices in hardware (oneDNN's check: AVX-512 or AVX-NE-CONVERT
    for bfloat16 and float16). Without it, torch's bf16/fp16 CPU products fall back to a slow generic loop:
    the Shakespeare recipe's training step ran 8x slower in bf16 autocast than in float32 on an AVX2 EPYC."""
    if dtype == torch.float32:
        return True
    if not torch.backends.mkldnn.is_available():
        return False
    check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    return check is not None and bool(getattr(torch.ops.mkldnn, check)())


@functools.cache
def onednn_pays() -> bool:
    """Whether oneDNN's fp32 products beat MKL's on this CPU: where it has AVX-512, which MKL leaves unused on AMD
    processors (see the module docstring). On an AVX2-only EPYC both run AVX2 code and MKL won (88 against
    69 GFLOP/s in a 1280x256x768 product; the Shakespeare training step 10% faster)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@contextmanager
def use_onednn(enabled: bool) -> Iterator[None]:
    """Send fp32 CPU products to oneDNN where it pays (True, the default) or to `F.linear` (False) inside the `with`."""
    token = _ONEDNN_ON.set(enabled)
    try:
        yield
    finally:
        _ONEDNN_ON.reset(token)


@contextmanager
def use_native(enabled: bool) -> Iterator[None]:
    """Send decoding-sized products without gradients to gptkit's own CPU kernel (`native`: True, the default, where
    it compiled) or leave them to torch's kernels (False) inside the `with` (this thread or task only)."""
    token = _NATIVE_ON.set(enabled)
    try:
        yield
    finally:
        _NATIVE_ON.reset(token)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _eager_inference(*tensors: Tensor | None) -> bool:
    """No gradient wanted from these tensors, no CPU autocast (it decides the dtypes), not being compiled."""
    return not _needs_grad(*tensors) and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()


def native_applies(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether this product goes to `native.gemv`: `use_native` on, eager inference, and a product the kernel
    computes (`native.applies`)."""
    return (
        _NATIVE_ON.get() and _eager_inference(x, weight, bias) and native.applies(x, weight, _native_rows(weight.dtype))
    )


def _native_rows(dtype: torch.dtype) -> int:
    """Rows up to which `native.gemv` beats torch's kernels for weights of `dtype` (see native.MAX_ROWS)."""
    return native.MAX_ROWS_SLOW_BF16 if dtype == torch.bfloat16 and not cpu_has_fast(dtype) else native.MAX_ROWS


def native_attention_applies(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> bool:
    """Whether this attention goes to `native.attend`: as `native_applies`, for one-query attention over a cache."""
    return _NATIVE_ON.get() and _eager_inference(q, k, v) and native.attention_applies(q, k, v, mask)


def _product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (..., in) @ weight (out, in)^T + bias through oneDNN; operands may be strided views."""
    op = onednn_op()
    assert op is not None  # callers checked `_applies`
    return op(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _product(grad, weight.t(), None)  # (..., in) = grad @ W
        if ctx.needs_input_grad[1]:
            grad_w = _product(rows.t(), x.reshape(-1, x.shape[-1]).t(), None)  # (out, in) = grad^T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b


def _applies(x: Tensor, weight: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and _ONEDNN_ON.get()
        and onednn_op() is not None
        and onednn_pays()
        and x.dtype == weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)`: decoding-sized products without gradients through `native.gemv`, larger
    bf16/fp16 ones in float32 where the CPU lacks those instructions, other fp32 CPU products through oneDNN where
    it pays, the rest through F.linear (see the module docstring)."""
    if native_applies(x, weight, bias):
        return native.gemv(x, weight, bias)
    if _upcast_applies(x, weight, bias):
        return linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)
    if not _applies(x, weight):
        return F.linear(x, weight, bias)
    if _needs_grad(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias)
    return _product(x, weight, bias)


def _upcast_applies(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether a bfloat16/float16 CPU product of many rows is better done in float32 and rounded back: on CPUs
    without those instructions torch runs them in a generic loop (the products of three GPT-2 124M blocks at 128
    rows: 309 ms in bfloat16, 73 ms through float32, casts included, on an AVX2 EPYC; a server prefilling 32 prompts in
    bfloat16 waited seconds for its first tokens). One float32 sum per output rounded once, as torch's own."""
    return (
        x.is_cpu
        and x.dtype in (torch.bfloat16, torch.float16)
        and weight.dtype == x.dtype
        and not cpu_has_fast(x.dtype)
        and _eager_inference(x, weight, bias)
    )


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) whose product is `linear` above."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


# glibc's mallopt parameters (malloc.h) and their defaults: 128 KiB each (mmap's threshold then adapts)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
_KEEPING = {"depth": 0}  # mirrors the process-wide malloc setting: nested/concurrent scopes restore once
_KEEPING_LOCK = threading.Lock()


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...)
        return None


@contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside the `with`, glibc keeps freed large blocks in the heap for the next step instead of unmapping them.

    malloc's settings are process-wide, so the scope is too (scopes may nest or overlap across threads: the
    setting holds until the last one ends). Meant for training (the resident size then stays at its peak,
    which a training step reaches every step anyway). Yields whether it took effect (Linux with glibc only).

    On leaving, M_MMAP_THRESHOLD and M_TRIM_THRESHOLD go back to glibc's defaults (128 KiB) and the kept
    memory is trimmed. What cannot be restored: glibc offers no way to read the previous values (a process
    that set its own, or started with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, gets the defaults back),
    and setting the mmap threshold once turns off its dynamic adjustment for the rest of the process (freed
    mmapped blocks of up to 32 MB no longer raise it), which only changes where later blocks come from.
    """
    libc = _libc() if enabled else None
    if libc is None:
        yield False
        return
    with _KEEPING_LOCK:
        _KEEPING["depth"] += 1
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    try:
        yield ok
    finally:
        with _KEEPING_LOCK:
            _KEEPING["depth"] -= 1
            if _KEEPING["depth"] == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
                libc.malloc_trim(0)


def trim_freed_memory() -> bool:
    """Hand the memory freed inside the heap back to the OS (glibc's malloc_trim), as after replacing a model's
    float32 weights with smaller ones; returns whether any was (Linux with glibc only)."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
    """Causal softmax attention (B, nh, T, hs) over keys (B, nh, S, hs); mask (B|1, 1, T, S) bool or None (causal).

    One query per row over a cache without gradients or dropout: gptkit's own kernel (`native.attend`).
    Otherwise SDPA, except where plain matmuls beat torch 2.13's CPU SDPA kernels (see `_use_math_attention`).
    """
    if dropout == 0 and mask is not None and native_attention_applies(q, k, v, mask):
        return native.attend(q, k, v, mask)
    if _use_math_attention(q, k, mask):
        if q.dtype != torch.float32 and not cpu_has_fast(q.dtype):  # torch's generic bf16/fp16 loops: upcast
            return _math_attention(q.float(), k.float(), v.float(), mask, dropout).to(q.dtype)
        return _math_attention(q, k, v, mask, dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=mask is None)


def _use_math_attention(q: Tensor, k: Tensor, mask: Tensor | None) -> bool:
    """Whether plain matmul attention beats torch 2.13's CPU SDPA kernels here (measured on AVX512-BF16).

    Reduced-precision one-query decoding: ~4x faster (in float32 where the CPU has no bf16/fp16 instructions:
    2.4x faster than in bfloat16 there, 196 against 473 us a layer at 144 slots on an AVX2 EPYC).
    Training on short blocks: SDPA's CPU flash backward took 3.4 ms per layer at batch 12 x 64 tokens in bf16
    against 0.8 ms here, and stays slower up to 256 tokens in bf16 and 128 in fp32; beyond that SDPA's
    memory-saving kernel wins.
    """
    if q.device.type != "cpu":
        return False
    reduced = q.dtype != torch.float32
    if q.shape[-2] == 1:
        return reduced and mask is not None
    return torch.is_grad_enabled() and k.shape[-2] <= (256 if reduced else 128)


@functools.lru_cache(maxsize=16)
def _future(T: int, device: torch.device) -> Tensor:
    """The (T, T) causal mask's hidden part, True above the diagonal: built once per length (every layer of
    every training step asks for the same one)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def _math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
    """Softmax attention as plain matmuls with an fp32 softmax; mask None means causal over T = S."""
    scores = (q @ k.transpose(-2, -1)).float() * (q.shape[-1] ** -0.5)  # (B, nh, T, S)
    hidden = _future(q.shape[-2], q.device) if mask is None else ~mask
    weights = scores.masked_fill(hidden, float("-inf")).softmax(dim=-1)
    if dropout > 0:
        weights = F.dropout(weights, p=dropout)
    return weights.to(v.dtype) @ v  # (B, nh, T, hs)
