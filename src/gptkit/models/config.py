"""`GPTConfig`: the one typed description of a GPT-1 or GPT-2 shaped model, with named presets; `LoRAConfig`
for its adapters (no torch here, so training and CLI configs can hold them)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gptkit.errors import ConfigError

Activation = Literal["gelu_new", "gelu", "relu"]

CONFIG_FILE = "config.json"
IGNORE_INDEX = -100  # the label of a position without loss (torch's cross_entropy default), for every loss


@dataclass(frozen=True)
class GPTConfig:
    """Shape and behaviour of a GPT. The two OpenAI releases differ only in fields, not classes:

    * GPT-2 (`pre_norm=True, final_norm=True`): LayerNorm before attention and MLP, one more at the end.
    * GPT-1 (`pre_norm=False, final_norm=False`): LayerNorm after each residual addition, none at the end.
    """

    vocab_size: int = 50257
    n_positions: int = 1024  # context length (nanoGPT's block_size)
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation: Activation = "gelu_new"  # GPT-1 and GPT-2 both use the tanh approximation
    pre_norm: bool = True
    final_norm: bool = True
    layer_norm_epsilon: float = 1e-5
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    bias: bool = True
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"GPTConfig.{key} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_head in {_divisors(self.n_embd)}"
            )
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ConfigError(f"GPTConfig.n_inner must be a positive integer or None, got {self.n_inner!r}")
        if self.activation not in ("gelu_new", "gelu", "relu"):
            raise ConfigError(
                f"GPTConfig.activation must be one of 'gelu_new', 'gelu', 'relu', got {self.activation!r}"
            )
        for key in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"GPTConfig.{key} must be in [0, 1), got {value!r}")
        if self.layer_norm_epsilon <= 0:
            raise ConfigError(f"GPTConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        for key in ("bos_token_id", "eos_token_id"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"GPTConfig.{key} ({value}) must lie in [0, vocab_size={self.vocab_size}) or be None")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def family(self) -> Literal["gpt2", "openai-gpt"] | None:
        """The Hugging Face model_type this shape can be saved as, or None if neither fits."""
        if self.pre_norm and self.final_norm:
            return "gpt2"
        if not self.pre_norm and not self.final_norm:
            return "openai-gpt"
        return None

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPTConfig:
        """A preset by name (see `GPTConfig.presets()`), with fields overridden by keyword."""
        key = _PRESET_ALIASES.get(name, name)
        if key not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        fields = {**PRESETS[key], "name": key}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown GPTConfig field(s) {sorted(unknown)} in overrides for {name!r}")
        fields.update(overrides)
        for key in ("bos_token_id", "eos_token_id"):  # the preset's ids belong to the preset's vocabulary
            if key not in overrides and fields.get(key) is not None and fields[key] >= fields["vocab_size"]:
                fields[key] = None
        return cls(**fields)

    @staticmethod
    def presets() -> list[str]:
        return sorted(PRESETS)

    def replace(self, **changes: Any) -> GPTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown GPTConfig field(s) {unknown}; known fields: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:  # wrong value types that __post_init__ cannot name
            raise ConfigError(f"{source}: {exc}") from exc

    def to_json(self, path: str | os.PathLike[str]) -> None:
        from gptkit.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> GPTConfig:
        from gptkit.io import read_json

        path = Path(path)
        data = read_json(path, ConfigError, missing="no such config file")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of GPTConfig fields")
        return cls.from_dict(data, source=str(path))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]


_GPT2 = dict(
    vocab_size=50257,
    n_positions=1024,
    activation="gelu_new",
    pre_norm=True,
    final_norm=True,
    bos_token_id=50256,
    eos_token_id=50256,
)
_GPT1 = dict(
    vocab_size=40478,
    n_positions=512,
    n_embd=768,
    n_layer=12,
    n_head=12,
    activation="gelu_new",
    pre_norm=False,
    final_norm=False,
    bos_token_id=None,
    eos_token_id=None,
)

PRESETS: dict[str, dict[str, Any]] = {
    "openai-gpt": _GPT1,
    "gpt2": {**_GPT2, "n_embd": 768, "n_layer": 12, "n_head": 12},
    "gpt2-medium": {**_GPT2, "n_embd": 1024, "n_layer": 24, "n_head": 16},
    "gpt2-large": {**_GPT2, "n_embd": 1280, "n_layer": 36, "n_head": 20},
    "gpt2-xl": {**_GPT2, "n_embd": 1600, "n_layer": 48, "n_head": 25},
    # Small shapes for tests, demos and CPU training.
    "gpt2-tiny": {**_GPT2, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128},
    "gpt2-mini": {**_GPT2, "n_embd": 384, "n_layer": 6, "n_head": 6, "n_positions": 256},
    "openai-gpt-tiny": {**_GPT1, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128},
}

# Hugging Face hub names of the OpenAI releases map onto the same presets.
_PRESET_ALIASES = {
    "openai-community/openai-gpt": "openai-gpt",
    "openai-community/gpt2": "gpt2",
    "openai-community/gpt2-medium": "gpt2-medium",
    "openai-community/gpt2-large": "gpt2-large",
    "openai-community/gpt2-xl": "gpt2-xl",
}


@dataclass(frozen=True)
class LoRAConfig:
    """Which Linear layers get adapters, and their rank and scale (peft's defaults).

    targets: module names matched as peft's `target_modules` list does: a module whose path equals a target
        or ends with "." + target, so "c_proj" matches both attention and MLP projections of GPT-2 and
        "attn.c_proj" only the attention one.
    rslora: scale by alpha / sqrt(r) instead of alpha / r (peft's `use_rslora`).
    """

    r: int = 8
    alpha: float = 8
    dropout: float = 0.0
    targets: tuple[str, ...] = ("c_attn",)
    rslora: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"LoRAConfig.r must be a positive integer, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ConfigError(f"LoRAConfig.alpha must be a positive number, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ConfigError(
                f"LoRAConfig.targets must be a non-empty list of module names such as ('c_attn', 'c_proj'), "
                f"got {self.targets!r}"
            )
        object.__setattr__(self, "targets", targets)  # accept a list (from JSON/YAML), store a tuple

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)
