"""Task models: the GPT's backbone with one task head, saved and loaded as transformers' task classes.

A TaskModel holds the GPT's `transformer` (the GPTModel, a real submodule, shared with the GPT it was built
from) and its task's head module (gptkit.models.heads) under the name transformers gives it, plus the tied
`lm_head` where the transformers class has one; its state dict is that class's, in gptkit's layout:

    classify  score                         GPT2ForSequenceClassification, OpenAIGPTForSequenceClassification
    tag       classifier (dropout before)   GPT2ForTokenClassification
    qa        qa_outputs                    GPT2ForQuestionAnswering
    choice    multiple_choice_head.summary  GPT2DoubleHeadsModel, OpenAIGPTDoubleHeadsModel (+ the tied lm_head)

What differs between tasks lives in their gptkit.tasks.registry entries.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gptkit.errors import CheckpointError, ConfigError
from gptkit.io import read_json
from gptkit.models.checkpoint import native_layout, read_config, read_hf_weights, save_checkpoint
from gptkit.models.config import CONFIG_FILE, GPTConfig
from gptkit.models.gpt import GPT, build_model, lm_loss, parameter_shapes
from gptkit.models.heads import TaskOutput, lm_targets
from gptkit.models.hf_names import TIED_KEY, hf_layout, hf_name, tie_head
from gptkit.models.kernels import linear
from gptkit.models.weight_files import StoredWeights
from gptkit.tasks.registry import TaskSpec, TaskType, spec_from_hf


class TaskModel(nn.Module):
    """The backbone of `gpt` with the head of `spec`'s task.

    aux_lm_weight: GPT-1's auxiliary objective (0.5 in the paper): when > 0 and a task loss is computed,
        add weight * next-token LM loss over the real tokens, through the GPT's (tied) LM head.
    """

    def __init__(self, gpt: GPT, spec: TaskSpec | str, *, aux_lm_weight: float = 0.0) -> None:
        super().__init__()
        spec = TaskSpec(spec) if isinstance(spec, str) else spec
        self.spec = spec
        self.aux_lm_weight = aux_lm_weight
        self.transformer = gpt.transformer
        kind, ref = spec.kind, gpt.transformer.wte.weight
        head = kind.head(gpt.config.n_embd, spec, std=gpt.config.initializer_range, device=ref.device, dtype=ref.dtype)
        self.add_module(kind.head_name, head)
        if kind.lm_head:
            self.lm_head = gpt.lm_head  # part of GPT*DoubleHeadsModel's checkpoint (tied to wte)

    @property
    def config(self) -> GPTConfig:
        return self.transformer.config

    @property
    def head(self) -> nn.Module:
        return getattr(self, self.spec.kind.head_name)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **targets: Tensor) -> TaskOutput:
        """input_ids (B, T), or (B, K, T) for choice (K candidates each); attention_mask the same shape.

        targets, by task: labels (classify (B,) class ids or (B, L) floats; tag (B, T) with IGNORE_INDEX;
        choice (B,)); start_positions and end_positions (qa (B,) token positions of the answer span).
        """
        head, shape = self.head, input_ids.shape
        if (input_ids.dim() == 3) != head.candidates:
            raise ValueError(
                f"input_ids of shape {tuple(shape)}: the {self.spec.task} task takes "
                + ("(batch, candidates, time)" if head.candidates else "(batch, time)")
            )
        flat_ids = input_ids.reshape(-1, shape[-1])  # (N, T)
        flat_mask = None if attention_mask is None else attention_mask.reshape(-1, shape[-1])
        hidden = self.transformer(flat_ids, attention_mask=flat_mask).last_hidden_state  # (N, T, C)
        out = head(hidden.view(*shape, -1), attention_mask, **targets)
        if out.loss is not None and self.aux_lm_weight > 0:
            out.aux_loss = lm_loss(self._lm_logits(hidden), lm_targets(flat_ids, flat_mask))
            out.loss = out.loss + self.aux_lm_weight * out.aux_loss
        return out

    def _lm_logits(self, hidden: Tensor) -> Tensor:
        if "lm_head" in self._modules:
            return self.lm_head(hidden)
        if not self.config.tie_word_embeddings:
            raise ConfigError(
                "aux_lm_weight > 0 needs an LM head saved with the task model: use a GPT with "
                "tie_word_embeddings=True (the head is then wte) or the choice task"
            )
        return linear(hidden, self.transformer.wte.weight, None)  # the tied LM head


# -- checkpoints ------------------------------------------------------------------------------------


def save_task_model(
    model: TaskModel,
    directory: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    id2label: Mapping[int, str] | Sequence[str] | None = None,
    pad_token_id: int | None = None,
) -> Path:
    """Write a directory that `load_task_model` and the matching transformers class both load.

    pad_token_id (written to config.json; transformers' sequence classification pools at the last token
    that is not pad_token_id) defaults to the tokenizer's eos id, else the config's. Where transformers has
    no class for the task and family (GPT-1 tagging or QA), weights keep gptkit's names and config.json says so.
    """
    spec, config = model.spec, model.config
    if id2label is not None:
        names = [id2label[i] for i in range(len(id2label))] if isinstance(id2label, Mapping) else list(id2label)
        spec = dataclasses.replace(spec, labels=tuple(str(n) for n in names))
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id if tokenizer is not None else config.eos_token_id
    hf_class = spec.kind.hf_classes.get(config.family or "")

    def task_fields() -> dict[str, Any]:
        if hf_class is None:
            raise CheckpointError(f"transformers has no {config.family or 'custom'} class for the {spec.task} task")
        return dict(architectures=[hf_class], pad_token_id=pad_token_id, **spec.kind.hf_fields(spec))

    return save_checkpoint(
        directory,
        model.state_dict(),
        config,
        tokenizer=tokenizer,
        task_fields=task_fields,
        block={"task": spec.to_dict()},
    )


def load_task_model(
    directory: str | os.PathLike[str], *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> TaskModel:
    """A TaskModel (eval mode) from `save_task_model`'s directory or a transformers `save_pretrained` one."""
    folder = Path(directory)
    config_path = folder / CONFIG_FILE
    data = read_json(config_path, CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    config = read_config(folder)
    block = data.get("gptkit") if isinstance(data.get("gptkit"), dict) else {}
    if "task" in block:
        try:
            spec = TaskSpec.from_dict(block["task"], source=f"{config_path} (gptkit.task)")
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from exc
    else:
        spec = spec_from_hf(data, str(config_path))
    state, weights_path = read_hf_weights(folder, dtype=dtype or torch.float32)  # the model's dtype, head included
    prefix = spec.kind.head_name + "."
    head_state = state.read({k.removeprefix(prefix): (k, False) for k in state if k.startswith(prefix)})
    body = state.select(k for k in state if not k.startswith(prefix))
    gpt_state = _backbone_state(body, config, spec.kind, block.get("weights", "hf"), str(weights_path))
    model = TaskModel(build_model(config, gpt_state, device=device, dtype=dtype), spec)
    expected = {k: tuple(v.shape) for k, v in model.head.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in head_state.items()}
    if found != expected:
        raise CheckpointError(
            f"{weights_path}: head weights {found} under {prefix!r} do not match the {spec.task} head of "
            f"config.json, which needs {expected}"
        )
    model.head.load_state_dict(head_state)
    return model.eval()


def _backbone_state(
    state: StoredWeights, config: GPTConfig, kind: TaskType, naming: str, source: str
) -> dict[str, Tensor]:
    """The GPT's state dict from a task checkpoint's non-head tensors (HF or gptkit names), each read once."""
    expected = parameter_shapes(config)
    names = {k: k for k in state}  # name in the GPT's state dict -> name in the file
    embedding = "transformer.wte.weight" if naming == "gptkit" else hf_name("transformer.wte.weight", config.family)
    if config.tie_word_embeddings and embedding not in names and TIED_KEY in names:
        names[embedding] = names.pop(TIED_KEY)  # OpenAIGPTDoubleHeadsModel saves the tied pair as lm_head
    state = state.select(names)
    untied_unused = not kind.lm_head and not config.tie_word_embeddings
    if untied_unused:  # transformers' classes other than double-heads have no LM head: the GPT's stays unused
        expected.pop(TIED_KEY)
    if naming == "gptkit":
        layout = native_layout(state, expected, config, source)
    else:
        layout = hf_layout(state.shapes, config, expected, source=source)
    out = tie_head(state.read(layout), config)
    if untied_unused:
        out[TIED_KEY] = torch.zeros(config.vocab_size, config.n_embd, dtype=out["transformer.wte.weight"].dtype)
    return out
