"""Optimizer and learning-rate schedule: AdamW with weight-decay groups, warmup then decay."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Schedule = Literal["cosine", "linear", "constant"]


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, decay_steps: int, schedule: Schedule) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then decay to min_lr at decay_steps.

    The warmup is nanoGPT's (lr * (step + 1) / (warmup + 1)), so step 0 does not waste a zero update.
    """
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if schedule == "constant" or step >= decay_steps:
        return lr if schedule == "constant" else min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 -> 1
    if schedule == "linear":
        return lr + (min_lr - lr) * progress
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def param_groups(model: nn.Module, weight_decay: float, *, decay_embeddings: bool = True) -> list[dict]:
    """Decay matrices (and embeddings unless told not to); never biases or LayerNorm gains.

    Trainable parameters only: frozen ones (LoRA, head-only training) never reach the optimizer.
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))  # a tied LM head is the embedding: count it once
        is_embedding = id(param) in embedding_params
        if param.dim() >= 2 and (decay_embeddings or not is_embedding):
            decay.append(param)
        else:
            no_decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    decay_embeddings: bool,
    device_type: str,
) -> torch.optim.AdamW:
    """AdamW over `param_groups`, fused where this torch build and device support it."""
    groups = param_groups(model, weight_decay, decay_embeddings=decay_embeddings)
    fused = device_type in ("cuda", "cpu")
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
    except (RuntimeError, TypeError):  # older builds: fused only on CUDA
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)
