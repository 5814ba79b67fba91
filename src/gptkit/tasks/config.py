"""`TaskConfig`: what a fine-tuning run learns from (no torch, so the CLI builds it cheaply)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gptkit.errors import ConfigError

DEFAULT_MAX_LENGTH = 256  # tokens per example when not given (the CLI takes a shorter model context instead)


@dataclass(frozen=True)
class TaskConfig:
    """What `gptkit finetune TASK` learns from: the task, its files and how their examples are read.

    The training settings (model, optimizer, LoRA, checkpoints) are a TrainConfig beside it; fine-tuning reads
    its examples from `train_file` and `eval_file` here, never from TrainConfig.data (language modelling's).
    """

    task: Literal["classify", "tag", "qa", "choice", "instruct"]
    train_file: str
    eval_file: str | None = None
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "conll", "lines"] = "auto"  # lines: tag, to predict
    text_column: str = "text"  # classify: the text; a second text goes in text_pair_column
    text_pair_column: str | None = None
    label_column: str = "label"
    problem_type: Literal["single", "multi", "regression"] = "single"  # classify
    token_column: int = 0  # tag: CoNLL columns
    tag_column: int = -1
    max_length: int = DEFAULT_MAX_LENGTH  # tokens per example (longer ones are truncated; QA contexts are windowed)
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
