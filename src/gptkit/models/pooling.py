"""Right-padded batches, and pooling hidden states (B, T, C) into one vector per row (B, C), with padding
described by `attention_mask` alone.

Sequence classification and multiple choice pool the last real token (as transformers does); embeddings pool
the mean or the last token. Neither depends on the id the padding holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["last_token", "mean_pool", "right_pad"]


def right_pad(sequences: Sequence[Sequence[int]], value: int, *, device: torch.device | str | None = None) -> Tensor:
    """(N, longest) int64, right-padded with `value` (one tensor built from one list: no per-row copies).

    The attention mask of a batch is `right_pad([[1] * len(s) for s in sequences], 0)`."""
    longest = max(len(s) for s in sequences)
    return torch.tensor([[*s, *([value] * (longest - len(s)))] for s in sequences], dtype=torch.long, device=device)


def last_token(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Hidden state (B, T, C) -> (B, C) at each row's last position whose mask is 1 (right or left padding)."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (positions * attention_mask.to(hidden.device, torch.long)).argmax(-1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Hidden state (B, T, C) -> (B, C): the mean over positions whose mask is 1."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
