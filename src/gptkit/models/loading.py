"""Loading a language model for use: the GPT with its tokenizer (and a LoRA adapter merged in), from any source.

`gptkit.load` (gptkit.tasks.bundle) is the loader for users: one `ModelBundle` for language models, task
models and fine-tuning runs alike, built from the pieces here. `load_pretrained` is the language-model loader
of the floors below tasks (training), which cannot import it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptkit.errors import CheckpointError, ConfigError
from gptkit.io import read_json
from gptkit.models import checkpoint, lora
from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT, load_model, parameter_shapes, save_model
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
    apply_adapter(model, source.path, task_types=(None, "CAUSAL_LM"), merge=True)
    return model, tokenizer_for(source, tokenizer, model.config.vocab_size)


def apply_adapter(model: nn.Module, folder: Path, *, task_types: tuple[str | None, ...] | None, merge: bool) -> bool:
    """Load the peft LoRA adapter stored in `folder` onto `model` (merged in when `merge`), if there is one of
    one of `task_types` (None: any); return whether one was."""
    adapter = folder / lora.ADAPTER_CONFIG_FILE
    if not adapter.is_file():
        return False
    if task_types is not None and read_json(adapter, CheckpointError).get("task_type") not in task_types:
        return False
    lora.load_adapter(model, folder)
    if merge:
        lora.merge_lora(model)
    return True


def tokenizer_for(
    source: checkpoint.Source, tokenizer: str | os.PathLike[str] | None, vocab_size: int
) -> Tokenizer | None:
    """`tokenizer` (a name or folder) if given, else the one stored with the checkpoint (None: none stored);
    CheckpointError if it has more tokens than the model has embeddings."""
    tok = Tokenizer.from_pretrained(tokenizer) if tokenizer is not None else checkpoint.load_tokenizer(source)
    if tok is not None and tok.vocab_size > vocab_size:
        raise CheckpointError(f"tokenizer has {tok.vocab_size} tokens but the model only {vocab_size} embeddings")
    return tok


def new_model(config: GPTConfig, tokenizer: Tokenizer, path: str | os.PathLike[str], *, seed: int = 0) -> GPT:
    """A randomly initialised GPT of `config`, seeded, saved with `tokenizer` to `path` (a new or empty folder).

    The model's end-of-text id is the tokenizer's (none for GPT-1's vocabulary), so generation stops where the
    tokenizer says. The global RNG is left as it was. ConfigError if the tokenizer has more tokens than the
    config has embeddings; CheckpointError if `path` already holds files (a random model never replaces one).
    """
    if tokenizer.vocab_size > config.vocab_size:
        raise ConfigError(
            f"the {tokenizer.kind} tokenizer has {tokenizer.vocab_size:,} tokens but vocab_size is "
            f"{config.vocab_size:,}; set vocab_size >= {tokenizer.vocab_size} (--vocab-size)"
        )
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not an empty folder; choose a new path")
    eos = tokenizer.eos_token_id
    config = config.replace(bos_token_id=eos, eos_token_id=eos)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(config).eval()
    save_model(model, out, tokenizer=tokenizer)
    return model


def describe(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """What `gptkit info` prints: config, parameter count, dtype and files of a checkpoint."""
    return checkpoint.describe_source(checkpoint.resolve(name_or_path), parameter_shapes)
