"""Text embeddings from a GPT: final hidden states pooled over each text's tokens (mean or last token).

Pooling is gptkit.models.pooling's mean_pool / last_token over `attention_mask`, so a text's vector does not depend on
the batch it is computed in or on the id its padding holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gptkit.errors import ConfigError, DataError
from gptkit.models.gpt import GPT
from gptkit.models.pooling import last_token, mean_pool, right_pad

__all__ = ["embed", "embed_ids"]

_POOLING = {"mean": mean_pool, "last": last_token}


def embed(
    model: GPT,
    texts: Sequence[str],
    *,
    tokenizer: Any,
    pooling: Literal["mean", "last"] = "mean",
    batch_size: int = 32,
    normalize: bool = True,
    max_length: int | None = None,
) -> Tensor:
    """One vector per text (N, C), float32 on the CPU: final hidden states pooled over each text's tokens.

    Texts are encoded (special-token strings as plain text), cut to max_length tokens (default and at most
    the context), and run in right-padded batches of similar length; each vector equals the one computed
    for its text alone. normalize: unit L2 norm, for cosine similarity by dot product. The arguments follow
    generate's convention: model, inputs, then keywords (tokenizer=...).
    """
    if isinstance(texts, str):
        raise TypeError("embed takes a sequence of texts; wrap a single text as [text]")
    if max_length is not None and max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    limit = min(max_length or model.config.n_positions, model.config.n_positions)
    ids = [seq[:limit] for seq in tokenizer.encode_batch(list(texts), disallowed_special=())]
    if empty := [i for i, seq in enumerate(ids) if not seq]:
        raise DataError(f"text {empty[0]} encodes to no tokens and has no embedding; drop empty texts first")
    pad_id = tokenizer.eos_token_id or 0  # any id: padding is masked out of attention and pooling
    return embed_ids(model, ids, pooling=pooling, batch_size=batch_size, normalize=normalize, pad_id=pad_id)


def embed_ids(
    model: GPT,
    ids: Sequence[Sequence[int]],
    *,
    pooling: Literal["mean", "last"] = "mean",
    batch_size: int = 32,
    normalize: bool = True,
    pad_id: int = 0,
) -> Tensor:
    """`embed` of sequences already encoded: each must hold 1 to n_positions ids of the vocabulary (pad_id: any id,
    masked out)."""
    if pooling not in _POOLING:
        raise ConfigError(f"pooling must be one of {', '.join(_POOLING)}, got {pooling!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n_positions, vocab_size = model.config.n_positions, model.config.vocab_size
    for i, seq in enumerate(ids):
        if not 0 < len(seq) <= n_positions or not all(0 <= t < vocab_size for t in seq):
            raise DataError(f"sequence {i} must hold 1 to {n_positions} ids in [0, {vocab_size}), got {len(seq)} ids")
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
    device = model.transformer.wte.weight.device
    out = torch.empty(len(ids), model.config.n_embd)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = right_pad([list(ids[i]) for i in rows], pad_id, device=device)
                mask = right_pad([[1] * len(ids[i]) for i in rows], 0, device=device)
                hidden = model(batch, attention_mask=mask, return_logits=False).last_hidden_state  # (b, T, C)
                out[rows] = _POOLING[pooling](hidden, mask).float().cpu()
    finally:
        model.train(was_training)
    return F.normalize(out, dim=-1) if normalize else out
