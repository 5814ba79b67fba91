"""CPU speed: the model's Linear layers through oneDNN, and freed memory kept for reuse while training.

PyTorch's fp32 `F.linear` on CPU calls MKL's sgemm, and MKL takes a generic (AVX2-class) code path on
non-Intel processors: on this project's AMD EPYC machines it reaches ~185 GFLOP/s in training-sized
products and ~16 GB/s of weights in one-token decoding, where oneDNN (also bundled with PyTorch, and
what PyTorch already uses for bf16) reaches ~390 GFLOP/s and ~30 GB/s. `linear` sends fp32 CPU
products to oneDNN's linear primitive, forward and backward, and everything else (GPU, bf16/fp16,
autocast, torch.compile, a torch without oneDNN) to `F.linear`. The results are fp32 products summed
in another order: equal to F.linear's to rounding (tests check both values and gradients).
Set `GPTKIT_ONEDNN=0` to turn it off.

`keep_freed_memory` is the other half: PyTorch's CPU tensors come straight from malloc, and glibc hands
blocks over 32 MB (an embedding's gradient, a batch of logits) back to the OS on free, so every training
step page-faults them in again (measured: 10-15% of a small-model fine-tuning step).
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _onednn_op():  # the primitive behind inductor's CPU linear lowering; absent from builds without oneDNN
    if os.environ.get("GPTKIT_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_OP = _onednn_op()


def _product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (..., in) @ weight (out, in)^T + bias through oneDNN; operands may be strided views."""
    return _OP(x, weight, bias, "none", [], "")


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
        _OP is not None
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN for fp32 on CPU (see the module docstring)."""
    if not _applies(x, weight):
        return F.linear(x, weight, bias)
    needs_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and needs_grad:
        return _OneDNNLinear.apply(x, weight, bias)
    return _product(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) whose product is `linear` above."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks in the heap for the next step instead of unmapping them.

    Process-wide and meant for training processes (the resident size then stays at its peak, which a
    training step reaches every step anyway). Linux with glibc only; returns whether it took effect.
    `GPTKIT_MALLOPT=0` turns it off.
    """
    if sys.platform != "linux" or os.environ.get("GPTKIT_MALLOPT", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...)
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
