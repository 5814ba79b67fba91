"""Decoding primitives shared by sampling and beam search: tokens in and text out, left-padded batches,
prefill and one decode step over the static KV cache, the sequence-dependent logit processors, scoring.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from gptkit.errors import ContextLengthError, TokenizerError
from gptkit.generation.sampling import (
    SamplingParams,
    apply_logit_bias,
    apply_no_repeat_ngram,
    apply_presence_frequency,
    apply_repetition_penalty,
)
from gptkit.models.gpt import GPT, KVCache

FinishReason = Literal["stop", "length"]
Prompt = str | Sequence[int]


@dataclass
class TokenEvent:
    """One new token of sequence `index` (prompt `prompt_index`, sample `sample`)."""

    index: int
    prompt_index: int
    sample: int
    token_id: int
    text: str  # newly visible text: whole UTF-8 characters, stop strings held back and never shown
    logprob: float  # log-probability of token_id under the model's (unprocessed) distribution
    top_logprobs: dict[int, float] | None
    finish_reason: FinishReason | None  # set on the last event of a sequence


@dataclass
class Completion:
    index: int
    prompt_index: int
    sample: int
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    score: float | None = None  # beam search: the length-penalised beam score


class TextStream:
    """Turns a growing list of token ids into text deltas that are safe to show.

    Text is released only up to a whole UTF-8 character (byte-level BPE splits characters across
    tokens), and any tail that could still become a stop string is held back until it cannot.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.shown = ""
        self.stopped = False

    def _decoded(self, final: bool) -> str:
        if self.tokenizer is None:
            return ""
        raw = self.tokenizer.decode_bytes(self.ids)
        return codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=final)

    def push(self, token_id: int) -> str:
        """Add a token; return the newly visible text. Sets `stopped` when a stop string completes."""
        self.ids.append(token_id)
        text = self._decoded(final=False)
        cut = min((i for s in self.stop if (i := text.find(s, len(self.shown))) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._release(text[:cut])
        return self._release(text[: len(text) - _held_back(text, self.stop)])

    def flush(self) -> str:
        """At the end of a sequence: release whatever was held back (not past a stop)."""
        return "" if self.stopped else self._release(self._decoded(final=True))

    def _release(self, visible: str) -> str:
        if not visible.startswith(self.shown):  # a decoder that rewrote earlier text: show nothing new now
            return ""
        delta, self.shown = visible[len(self.shown) :], visible
        return delta


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


# -- inputs -----------------------------------------------------------------------------------------


def encode_prompts(
    prompts: Prompt | Sequence[Prompt], tokenizer: Any, *, allow_special: bool = False
) -> list[list[int]]:
    """Normalise one prompt or many (text or token ids) into lists of ids."""
    if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)):
        prompts = [prompts]  # type: ignore[list-item]
    out = []
    for prompt in prompts:  # type: ignore[union-attr]
        if isinstance(prompt, str):
            if tokenizer is None:
                raise TokenizerError("text prompts need a tokenizer; pass tokenizer=... or token ids")
            out.append(tokenizer.encode(prompt, allowed_special="all" if allow_special else frozenset()))
        else:
            out.append([int(t) for t in prompt])
    if not out or any(len(ids) == 0 for ids in out):
        raise ValueError("every prompt needs at least one token (GPT-2 users often start with <|endoftext|>)")
    return out


def fit_to_context(ids: list[int], max_new_tokens: int, n_positions: int, truncate: bool) -> list[int]:
    """The prompt as the model will first see it.

    Without truncate, prompt + new tokens must fit the context. With truncate, the model conditions on a
    sliding window of the last n_positions tokens (nanoGPT's cropping), so only the prompt is cut here.
    """
    if truncate:
        return ids[max(0, len(ids) - n_positions) :]
    if len(ids) + max_new_tokens <= n_positions:
        return ids
    raise ContextLengthError(
        f"prompt of {len(ids)} tokens + max_new_tokens {max_new_tokens} exceeds the model's context of "
        f"{n_positions}; shorten the prompt, lower max_new_tokens, or pass truncate=True to slide the context "
        "window (older tokens are dropped)"
    )


def _stop_ids(model: GPT, params: SamplingParams) -> set[int]:
    if params.ignore_eos:
        return set()
    if params.stop_token_ids is not None:
        return set(params.stop_token_ids)
    eos = model.config.eos_token_id
    return set() if eos is None else {eos}


@dataclass
class _Batch:
    ids: Tensor  # (B, T) left-padded
    mask: Tensor  # (B, T) 1 = real token
    positions: Tensor  # (B, T)


def left_pad(rows: Sequence[Sequence[int]], device: torch.device) -> _Batch:
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, T - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, T - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return _Batch(ids.to(device), mask.to(device), positions.to(device))


def _model_device_dtype(model: GPT) -> tuple[torch.device, torch.dtype]:
    weight = model.transformer.wte.weight
    return weight.device, weight.dtype


def prefill(model: GPT, batch: _Batch, cache: KVCache) -> Tensor:
    """Run the prompts through the model, filling cache slots [0, T); return last-position logits (B, V)."""
    T = batch.ids.shape[1]
    out = model(
        batch.ids,
        attention_mask=batch.mask,
        position_ids=batch.positions,
        cache=cache,
        cache_position=torch.arange(T, device=batch.ids.device),
        return_logits=False,
    )
    return model.lm_logits(out.last_hidden_state[:, -1])


def decode_step(
    model: GPT, tokens: Tensor, mask: Tensor | None, positions: Tensor, slot: Tensor, cache: KVCache
) -> Tensor:
    """One new token per row (B,) at cache slot `slot` (1,); return its logits (B, V).

    mask: (B, cache.max_len) padding mask over all slots, or None when no row is padded."""
    out = model(tokens[:, None], attention_mask=mask, position_ids=positions[:, None], cache=cache, cache_position=slot)
    return out.logits[:, -1]


def _process(
    logits: Tensor, params: SamplingParams, seqs: list[list[int]], seen: Tensor | None, counts: Tensor | None
) -> Tensor:
    """The sequence-dependent processors, in transformers' order where both define them."""
    logits = apply_logit_bias(logits, params.logit_bias)
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if counts is not None:
        logits = apply_presence_frequency(logits, counts, params.presence_penalty, params.frequency_penalty)
    return apply_no_repeat_ngram(logits, seqs, params.no_repeat_ngram_size)


def _top(logprobs: Tensor, n: int | None) -> dict[int, float] | None:
    if n is None:
        return None
    if n == 0:
        return {}
    values, ids = logprobs.topk(n)
    return dict(zip(ids.tolist(), values.tolist(), strict=True))


def _generator(params: SamplingParams, sample: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:  # one stream per (seed, sample): a prompt draws the same in a batch as alone
        generator.manual_seed(params.seed * 1_000_003 + sample)
    return generator


# -- scoring (echo) --------------------------------------------------------------------------------


@torch.inference_mode()
def score_tokens(
    model: GPT, ids: Sequence[int], *, top_n: int | None = None
) -> list[tuple[float, dict[int, float] | None]]:
    """Log-probability of each token given the ones before it (the first gets nan), plus top-n alternatives.

    This is what perplexity and the API's `echo` + `logprobs` are built on. The text must fit the context.
    """
    ids = list(ids)
    if len(ids) > model.config.n_positions:
        raise ContextLengthError(
            f"text of {len(ids)} tokens is longer than the context of {model.config.n_positions}; "
            "score it in windows (see perplexity with a stride)"
        )
    device, _ = _model_device_dtype(model)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    logprobs = model(x).logits[0, :-1].float().log_softmax(dim=-1)  # (T-1, V)
    chosen = logprobs.gather(1, x[0, 1:, None])[:, 0].tolist()
    first: tuple[float, dict[int, float] | None] = (float("nan"), {} if top_n is not None else None)
    return [first] + [(chosen[t], _top(logprobs[t], top_n)) for t in range(len(ids) - 1)]
