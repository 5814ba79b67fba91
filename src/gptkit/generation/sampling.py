"""`SamplingParams` and the logit processors it drives: small pure functions over (B, V) logits.

Definitions follow the places users know them from:
* repetition_penalty, no_repeat_ngram_size, top_k, top_p, min_p: Hugging Face `transformers`
  (penalty divides positive and multiplies negative logits of every token already in the sequence;
  top-k keeps ties with the k-th value; top-p always keeps at least one token).
* presence_penalty, frequency_penalty, logit_bias: the OpenAI API (over generated tokens only):
  `logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty`, `logit[j] += bias[j]`.
* temperature 0 means greedy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from gptkit.errors import ConfigError

NEG_INF = float("-inf")


@dataclass(frozen=True)
class SamplingParams:
    """Everything that controls one generation request. Immutable; build a new one with `.replace`."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    no_repeat_ngram_size: int = 0  # 0 = off
    seed: int | None = None
    stop: tuple[str, ...] = ()  # stop strings: never emitted, caught across token boundaries
    stop_token_ids: tuple[int, ...] | None = None  # None = the model's eos_token_id
    ignore_eos: bool = False
    logprobs: int | None = None  # None = none; n >= 0 = chosen token's log-prob plus the top n alternatives
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    num_return_sequences: int = 1
    truncate: bool = False  # slide the context window (drop the oldest tokens) instead of failing when full

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        object.__setattr__(self, "logit_bias", {int(k): float(v) for k, v in dict(self.logit_bias).items()})
        checks: list[tuple[str, bool, str]] = [
            ("max_new_tokens", self.max_new_tokens >= 1, "an integer >= 1"),
            ("temperature", self.temperature >= 0, ">= 0 (0 means greedy)"),
            ("top_k", self.top_k >= 0, ">= 0 (0 turns it off)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", 0 <= self.min_p <= 1, "in [0, 1]"),
            ("repetition_penalty", self.repetition_penalty > 0, "> 0 (1 turns it off)"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "in [-2, 2] as in the OpenAI API"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "in [-2, 2] as in the OpenAI API"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, ">= 0"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20, "None or in [0, 20]"),
            ("num_beams", self.num_beams >= 1, ">= 1"),
            ("num_return_sequences", self.num_return_sequences >= 1, ">= 1"),
            ("logit_bias", all(-100 <= v <= 100 for v in self.logit_bias.values()), "values in [-100, 100]"),
            ("stop", all(isinstance(s, str) and s for s in self.stop), "non-empty strings"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"SamplingParams.{name} must be {expected}, got {getattr(self, name)!r}")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ConfigError(
                f"SamplingParams.num_return_sequences ({self.num_return_sequences}) cannot exceed "
                f"num_beams ({self.num_beams}) in beam search"
            )
        if self.num_beams > 1 and self.temperature != 0:
            raise ConfigError("beam search is deterministic: set temperature=0 with num_beams > 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes: Any) -> SamplingParams:
        return dataclasses.replace(self, **changes)


# -- processors that depend on the sequence so far -------------------------------------------------


def apply_logit_bias(logits: Tensor, bias: Mapping[int, float]) -> Tensor:
    if not bias:
        return logits
    ids = torch.tensor(list(bias), device=logits.device)
    values = torch.tensor(list(bias.values()), device=logits.device, dtype=logits.dtype)
    return logits.index_add(1, ids, values.expand(logits.shape[0], -1))


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """seen: (B, V) bool, tokens present in each row's prompt or output."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(logits: Tensor, counts: Tensor, presence: float, frequency: float) -> Tensor:
    """counts: (B, V) how often each token was generated so far in each row."""
    if presence == 0 and frequency == 0:
        return logits
    counts = counts.to(logits.dtype)
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def banned_ngram_tokens(sequence: Sequence[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `sequence` (transformers' no_repeat_ngram_size)."""
    if n <= 0 or len(sequence) + 1 < n:
        return []
    prefix = tuple(sequence[len(sequence) - n + 1 :]) if n > 1 else ()
    return [sequence[i + n - 1] for i in range(len(sequence) - n + 1) if tuple(sequence[i : i + n - 1]) == prefix]


def apply_no_repeat_ngram(logits: Tensor, sequences: Sequence[Sequence[int]], n: int) -> Tensor:
    if n <= 0:
        return logits
    logits = logits.clone()
    for row, sequence in enumerate(sequences):
        banned = banned_ngram_tokens(sequence, n)
        if banned:
            logits[row, banned] = NEG_INF
    return logits


# -- warpers that reshape the distribution ----------------------------------------------------------


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    return logits if temperature in (0.0, 1.0) else logits / temperature


def apply_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep tokens whose logit is >= the k-th largest (ties with the k-th are kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def apply_top_p(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (at least one token)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= 1 - p
    remove_sorted[..., -1] = False  # the most likely token always stays
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def apply_min_p(logits: Tensor, min_p: float) -> Tensor:
    """Drop tokens whose probability is below min_p times the most likely token's."""
    if min_p <= 0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, NEG_INF)


def warp(logits: Tensor, params: SamplingParams) -> Tensor:
    """Temperature, then top-k, top-p and min-p, in transformers' order."""
    logits = apply_temperature(logits, params.temperature)
    logits = apply_top_k(logits, params.top_k)
    logits = apply_top_p(logits, params.top_p)
    return apply_min_p(logits, params.min_p)


def choose(logits: Tensor, params: SamplingParams, generators: Sequence[torch.Generator | None]) -> Tensor:
    """Next token per row (B,): argmax when greedy, else a draw from the warped distribution.

    Each row draws from its own generator, so a row's sample does not depend on its batch mates.
    """
    if params.greedy:
        return logits.argmax(dim=-1)
    probs = warp(logits.float(), params).softmax(dim=-1)
    return torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
