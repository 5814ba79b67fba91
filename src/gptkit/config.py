"""`GPTConfig`: the one typed description of a GPT-1 or GPT-2 shaped model, with named presets."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gptkit.errors import ConfigError

Activation = Literal["gelu_new", "gelu", "relu"]

CONFIG_FILE = "config.json"


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
                raise ConfigError(
                    f"GPTConfig.{key} ({value}) must lie in [0, vocab_size={self.vocab_size}) or be None"
                )

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
class TrainConfig:
    """Everything `gptkit train` does, in one place. Build it from flags, or from a JSON/YAML file.

    It lives here, beside GPTConfig, so that building the CLI does not import torch.
    """

    data: str  # a directory written by `gptkit prepare`
    out_dir: str = "runs/gptkit"
    init_from: Literal["scratch", "pretrained", "resume"] = "scratch"
    model: str = "gpt2-tiny"  # scratch: a GPTConfig preset; pretrained: a hub name or checkpoint folder
    model_overrides: dict[str, Any] = field(default_factory=dict)  # scratch: GPTConfig fields
    block_size: int = 256
    batch_size: int = 12  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 2000
    lr: float = 6e-4
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    decay_steps: int | None = None  # None: max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0: off
    decay_embeddings: bool = True
    dropout: float | None = None  # overrides the model's three dropout rates
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # autocast dtype; weights stay float32
    compile: bool = False
    fsdp: bool = False  # shard parameters, gradients and optimizer state across processes (torchrun)
    device: str = "auto"
    eval_interval: int = 250  # 0: only at the end
    eval_batches: int = 20
    log_interval: int = 10
    sample_tokens: int = 200  # generated at each evaluation (0: none)
    sample_prompt: str = "\n"
    save_interval: int | None = None  # None: at each evaluation
    keep_last: int = 2
    seed: int = 1337
    progress: bool = True
    trainable: str = "auto"  # all, lora, head, last:N (the last N blocks and the head); auto: lora if lora_r else all
    lora_r: int = 0  # > 0: add LoRA adapters of this rank to lora_targets (saved in peft's format)
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "c_attn"  # comma-separated module names, as peft's target_modules (c_attn,c_proj,c_fc)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|all|lora|head|last:[1-9][0-9]*", self.trainable):
            raise ConfigError(f"TrainConfig.trainable must be auto, all, lora, head or last:N, got {self.trainable!r}")
        if self.lora_r < 0 or (self.lora_r == 0 and self.trainable == "lora"):
            raise ConfigError(f"TrainConfig.lora_r must be > 0 to train LoRA adapters, got {self.lora_r!r}")
        positive = ("block_size", "batch_size", "grad_accum", "max_steps", "eval_batches", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0 or (self.min_lr is not None and self.min_lr < 0):
            raise ConfigError(f"TrainConfig.lr must be > 0 and min_lr >= 0, got {self.lr!r}, {self.min_lr!r}")
        if self.init_from not in ("scratch", "pretrained", "resume"):
            raise ConfigError(f"TrainConfig.init_from must be scratch, pretrained or resume, got {self.init_from!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"TrainConfig.schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"TrainConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def final_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    def lr_at(self, step: int) -> float:
        from gptkit.optim import lr_at

        return lr_at(step, lr=self.lr, min_lr=self.final_lr, warmup_steps=self.warmup_steps,
                     decay_steps=self.decay_steps or self.max_steps, schedule=self.schedule)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a JSON or YAML file of TrainConfig fields; keyword overrides win (the CLI's flags)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such training config file") from exc
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except ImportError as exc:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from exc
        except Exception as exc:  # json.JSONDecodeError / yaml.YAMLError both carry the position
            raise ConfigError(f"{path}: cannot parse ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of TrainConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown TrainConfig field(s) {unknown}")
        return cls(**{**data, **overrides})


@dataclass(frozen=True)
class TaskConfig:
    """What `gptkit finetune TASK` learns from: the task, its files and how their examples are read.

    The training settings (model, optimizer, LoRA, checkpoints) are a TrainConfig beside it; its `data` field
    is ignored by fine-tuning, which reads `train_file`.
    """

    task: Literal["classify", "tag", "qa", "choice", "instruct"]
    train_file: str
    eval_file: str | None = None
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "conll"] = "auto"
    text_column: str = "text"  # classify: the text; a second text goes in text_pair_column
    text_pair_column: str | None = None
    label_column: str = "label"
    problem_type: Literal["single", "multi", "regression"] = "single"  # classify
    token_column: int = 0  # tag: CoNLL columns
    tag_column: int = -1
    max_length: int = 256  # tokens per example (longer ones are truncated; QA contexts are windowed)
    stride: int = 64  # qa: tokens shared by consecutive windows of a long context
    epochs: float | None = 1.0  # None: train TrainConfig.max_steps steps instead
    aux_lm_weight: float = 0.0  # GPT-1's auxiliary language-modelling loss weight (its paper used 0.5)
    pack: bool = False  # instruct: pack examples into blocks of max_length instead of padding each
    group_by_length: bool = True  # batch examples of similar length (less padding); order random across groups
    chat_template: str | None = None  # instruct: a Jinja chat template (default: gptkit's, see chat docs)
    on_error: Literal["fail", "skip"] = "fail"  # bad rows: stop, or skip them and count

    def __post_init__(self) -> None:
        if self.task not in ("classify", "tag", "qa", "choice", "instruct"):
            raise ConfigError(f"TaskConfig.task must be classify, tag, qa, choice or instruct, got {self.task!r}")
        if self.max_length < 2:
            raise ConfigError(f"TaskConfig.max_length must be >= 2, got {self.max_length!r}")
        if self.task == "qa" and not 0 <= self.stride < self.max_length:
            raise ConfigError(f"TaskConfig.stride must be in [0, max_length), got {self.stride!r}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"TaskConfig.epochs must be > 0 (or None to use max_steps), got {self.epochs!r}")
        if self.aux_lm_weight < 0:
            raise ConfigError(f"TaskConfig.aux_lm_weight must be >= 0, got {self.aux_lm_weight!r}")

