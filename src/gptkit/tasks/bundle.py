"""`load`: one `ModelBundle` for any model gptkit uses, so that no caller re-reads a template or a task file.

A bundle holds the model (a GPT, or a TaskModel where the directory holds a task model), its tokenizer and
chat template, the task it predicts, and for a fine-tuning run (a directory with task.json) what it was
trained on and its label names. The CLI, prediction, evaluation, fine-tuning and the server load through it.
It sits on the tasks floor because a task model is built from the task registry; the server and the CLI
above import it, and the training floor below loads language models with gptkit.models.loading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptkit.errors import CheckpointError, ConfigError
from gptkit.io import read_json
from gptkit.models import checkpoint
from gptkit.models.config import CONFIG_FILE
from gptkit.models.gpt import load_model
from gptkit.models.loading import apply_adapter, tokenizer_for
from gptkit.models.quantize import parse_dtype, quantize_model
from gptkit.tasks.config import TaskConfig
from gptkit.tasks.data import LabelMap
from gptkit.tasks.heads import TaskModel, load_task_model
from gptkit.tasks.registry import TASK_TYPES, TaskSpec, TaskType, task_of_hf_class
from gptkit.text.chat_template import load_chat_template
from gptkit.text.tokenizer import Tokenizer

TASK_FILE = "task.json"  # beside a fine-tuned model: the TaskConfig and label names it was trained with


@dataclass
class ModelBundle:
    """A model ready to use (eval mode) and everything stored with it."""

    model: nn.Module  # a GPT, or a heads.TaskModel
    tokenizer: Tokenizer | None  # None where the checkpoint has no tokenizer files and none was named
    path: Path  # the folder it was loaded from (a hub name resolves to its cache folder)
    chat_template: str | None = None  # stored with the model (None: none; gptkit's default applies)
    task: TaskConfig | None = None  # a fine-tuning run's task.json: what it was trained on
    labels: LabelMap | None = None  # a fine-tuning run's label names (classify, tag)

    @property
    def spec(self) -> TaskSpec | None:
        """What a task model predicts; None for a language model."""
        return self.model.spec if isinstance(self.model, TaskModel) else None

    @property
    def kind(self) -> TaskType | None:
        """The registry entry of the run's task (instruct included), or of the task model's."""
        name = self.task.task if self.task is not None else self.spec.task if self.spec is not None else None
        return None if name is None else TASK_TYPES[name]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_id(self) -> int:
        """The id batches are padded with (the eos id, as GPT-2 has no pad token; masked out anyway)."""
        eos = None if self.tokenizer is None else self.tokenizer.eos_token_id
        return eos if eos is not None else 0


def load(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    lm: bool = False,
    merge_lora: bool = True,
) -> ModelBundle:
    """Load a hub name, checkpoint folder, transformers task-model folder or `gptkit finetune` run directory.

    dtype: a torch dtype or its name (float32, the default; bfloat16; float16), or "int8": a language model
        loaded in float32, adapters merged, then quantized to int8 weights (gptkit.models.quantize).
    tokenizer: a tokenizer name or folder instead of the one stored with the model.
    lm: the language model alone, even where the folder holds a task model (its head is left out; only a
        language model's LoRA adapter applies).
    merge_lora: fold a stored LoRA adapter into the weights (else it stays applied as adapters).
    """
    float_dtype, int8 = parse_dtype(dtype)
    source = checkpoint.resolve(name_or_path)
    folder = source.path
    task, labels = (None, None) if lm else read_task_file(folder)
    if not lm and source.format == "hf" and holds_task_model(folder):
        if int8:
            raise ConfigError(f"{folder} holds a task model; int8 is for language models (load it with lm=True)")
        model: nn.Module = load_task_model(folder, device=device, dtype=float_dtype)
        apply_adapter(model, folder, task_types=None, merge=merge_lora)
    else:
        model = load_model(folder, device=device, dtype=float_dtype)
        apply_adapter(model, folder, task_types=(None, "CAUSAL_LM"), merge=merge_lora)
        if int8:
            quantize_model(model)
    tok = tokenizer_for(source, tokenizer, model.config.vocab_size)
    chat_template = load_chat_template(folder) if source.format == "hf" else None
    return ModelBundle(model.eval(), tok, folder, chat_template, task, labels)


def read_task_file(folder: Path) -> tuple[TaskConfig | None, LabelMap | None]:
    """The TaskConfig and label names of a fine-tuning run's task.json; (None, None) where there is none."""
    path = folder / TASK_FILE
    if not path.is_file():
        return None, None
    description = read_json(path, CheckpointError)
    try:
        task = TaskConfig(**description["task"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a `gptkit finetune` task description ({exc})") from exc
    return task, LabelMap(tuple(description["labels"])) if description.get("labels") else None


def holds_task_model(folder: Path) -> bool:
    """Whether a folder's config.json describes a task model (gptkit's task block or a transformers task class)."""
    data = read_json(folder / CONFIG_FILE, CheckpointError)
    if not isinstance(data, dict):
        return False
    block = data.get("gptkit")
    if isinstance(block, dict) and "task" in block:
        return True
    return task_of_hf_class((data.get("architectures") or [None])[0]) is not None


def require_run(bundle: ModelBundle) -> tuple[TaskConfig, Any]:
    """The bundle's TaskConfig and labels; CheckpointError if it was not loaded from a fine-tuning run."""
    if bundle.task is None:
        raise CheckpointError(f"{bundle.path / TASK_FILE}: file is missing: this is not a `gptkit finetune` directory")
    return bundle.task, bundle.labels
