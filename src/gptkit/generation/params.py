"""`SamplingParams`: everything that controls one generation request, in one frozen dataclass.

A plain dataclass without torch, so the CLI can build its generation flags from it while `gptkit --help`
stays light. The logit pipeline it drives is in gptkit.generation.sampling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gptkit.errors import ConfigError


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
