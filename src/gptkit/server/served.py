"""A model as the server offers it: its engine, its chat template, and the work that runs on the engine's thread.

Scoring (echo + logprobs) and embeddings use the model outside decoding; they go through `Engine.call`, so only
the engine's thread ever touches the model, and their results come back as plain Python numbers.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gptkit.errors import CheckpointError
from gptkit.generation.decode import score_tokens
from gptkit.generation.embeddings import embed_ids
from gptkit.models.gpt import GPT
from gptkit.server.engine import Engine
from gptkit.tasks.bundle import load


@dataclass
class ServedModel:
    """An engine plus what the API says about its model."""

    engine: Engine
    chat_template: str | None = None  # None: chat requests are refused
    created: int = field(default_factory=lambda: int(time.time()))
    owned_by: str = "gptkit"
    source: str | None = None  # the folder it was loaded from (what a fine-tuning job of it trains); None: unknown

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def vocab_size(self) -> int:
        """The ids a request may name: the model's, cut to the tokenizer's where the model's vocabulary is padded
        (ids the tokenizer cannot write as text would fail the request, or, generated, the engine's loop)."""
        return min(self.engine.vocab_size, self.tokenizer.vocab_size)

    @property
    def width(self) -> int:
        return self.engine.model.config.n_embd

    def describe(self, name: str) -> str:
        """The startup line: name, parameters, dtype, context."""
        model = self.engine.model
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return f"{name}: {model.num_parameters():,} parameters, {dtype}, context {self.engine.n_positions} tokens"

    async def score(self, ids: Sequence[int], top_n: int | None) -> list[tuple[float, dict[int, float] | None]]:
        """score_tokens on the engine's thread: each token's logprob (the first: nan) and its top_n alternatives."""
        return await self._on_engine(functools.partial(score_tokens, self.engine.model, list(ids), top_n=top_n))

    async def embed(self, ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Unit-length mean-pooled embeddings (gptkit.generation.embeddings) on the engine's thread."""
        pad_id = getattr(self.tokenizer, "eos_token_id", None) or 0

        def run() -> list[list[float]]:
            return embed_ids(self.engine.model, ids, pad_id=pad_id).tolist()

        return await self._on_engine(run)

    async def _on_engine(self, fn: Any) -> Any:
        return await asyncio.wrap_future(self.engine.call(fn))


def load_served(
    name_or_path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    max_batch_size: int = 16,
    max_queue: int = 256,
    chat_template: str | None = None,
) -> ServedModel:
    """Load a language model (hub name or folder) into a new engine, not yet started. dtype: as gptkit.load takes it
    ("int8" included); chat_template: the one used when the model stores none."""
    bundle = load(name_or_path, device=device, dtype=dtype, lm=True)
    if bundle.tokenizer is None:
        raise CheckpointError(f"{name_or_path} has no tokenizer files; the server needs them to read and write text")
    assert isinstance(bundle.model, GPT)  # lm=True: the language model, never a task model
    engine = Engine(bundle.model, bundle.tokenizer, max_batch_size=max_batch_size, max_queue=max_queue)
    created = int(bundle.path.stat().st_mtime) if bundle.path.exists() else int(time.time())
    return ServedModel(engine, bundle.chat_template or chat_template, created, source=str(bundle.path))
