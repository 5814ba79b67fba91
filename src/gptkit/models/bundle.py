"""Loading a model for use: the GPT with its tokenizer (and a LoRA adapter merged in), from any source."""

from __future__ import annotations

import os
from typing import Any

import torch

from gptkit.errors import CheckpointError
from gptkit.io import read_json
from gptkit.models import checkpoint, lora
from gptkit.models.gpt import GPT, load_model, parameter_shapes
from gptkit.text.tokenizer import Tokenizer


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
) -> tuple[GPT, Any]:
    """Model and tokenizer of a checkpoint in one call; `tokenizer` overrides the one stored with it."""
    source = checkpoint.resolve(name_or_path)
    model = load_model(source.path, device=device, dtype=dtype)
    adapter = source.path / "adapter_config.json"
    if adapter.is_file() and read_json(adapter, CheckpointError).get("task_type") in (None, "CAUSAL_LM"):
        # a LoRA-tuned language model (gptkit finetune instruct --lora-r): merged in
        lora.load_adapter(model, source.path)
        lora.merge_lora(model)
    tok = Tokenizer.from_pretrained(tokenizer) if tokenizer is not None else checkpoint.load_tokenizer(source)
    if tok is not None and tok.vocab_size > model.config.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size} embeddings"
        )
    return model, tok


def describe(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """What `gptkit info` prints: config, parameter count, dtype and files of a checkpoint."""
    return checkpoint.describe_source(checkpoint.resolve(name_or_path), parameter_shapes)
