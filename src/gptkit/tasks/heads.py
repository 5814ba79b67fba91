"""Task heads over the GPT: sequence classification, token tagging, extractive QA, multiple choice.

A TaskModel holds the GPT's `transformer` modules (shared, not copied) and one small head under the name
transformers gives it, so its state dict is the matching transformers class's, in gptkit's layout:

    classify  score                         GPT2ForSequenceClassification, OpenAIGPTForSequenceClassification
    tag       classifier (dropout before)   GPT2ForTokenClassification
    qa        qa_outputs                    GPT2ForQuestionAnswering
    choice    multiple_choice_head.summary  GPT2DoubleHeadsModel, OpenAIGPTDoubleHeadsModel (+ the tied lm_head)

Pooling and losses are pure functions. Padding is described by `attention_mask` alone (GPT-2 has no pad
token: pad with the eos id), so pooling never depends on which id the padding holds. gptkit.generation.embeddings
pools with the same functions (gptkit.models.pooling).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.errors import CheckpointError, ConfigError
from gptkit.io import read_json
from gptkit.models.checkpoint import HEAD_NAMES, read_config, read_hf_weights, save_checkpoint
from gptkit.models.config import CONFIG_FILE, GPTConfig
from gptkit.models.gpt import GPT, IGNORE_INDEX, build_model, lm_loss
from gptkit.models.hf_names import TIED_KEY, from_hf_state_dict, hf_name
from gptkit.models.pooling import last_token

Task = Literal["classify", "tag", "qa", "choice"]
ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]
TASKS = ("classify", "tag", "qa", "choice")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
# (task, model_type) -> the transformers class whose checkpoints a TaskModel reads and writes.
HF_CLASSES = {
    ("classify", "gpt2"): "GPT2ForSequenceClassification",
    ("tag", "gpt2"): "GPT2ForTokenClassification",
    ("qa", "gpt2"): "GPT2ForQuestionAnswering",
    ("choice", "gpt2"): "GPT2DoubleHeadsModel",
    ("classify", "openai-gpt"): "OpenAIGPTForSequenceClassification",
    ("choice", "openai-gpt"): "OpenAIGPTDoubleHeadsModel",
}
_TASK_OF_CLASS = {cls: task for (task, _), cls in HF_CLASSES.items()}
# The double-heads summary config gptkit implements: the candidate's chosen token -> dropout -> Linear(C, 1).
_SUMMARY_FIELDS = dict(
    summary_type="cls_index", summary_use_proj=True, summary_proj_to_labels=True, summary_activation=None
)


# -- losses (mirroring transformers' task classes) --------------------------------------------------


def infer_problem_type(num_labels: int, labels: Tensor) -> ProblemType:
    """transformers' rule when config.problem_type is unset: 1 label regresses, integer labels are classes."""
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(logits: Tensor, labels: Tensor, problem_type: ProblemType | None = None) -> Tensor:
    """Sequence-level loss over logits (B, L): CE, BCE-with-logits (multi-label) or MSE (regression)."""
    num_labels = logits.shape[-1]
    logits = logits.float()
    kind = problem_type or infer_problem_type(num_labels, labels)
    if kind == "regression":
        labels = labels.to(logits.dtype)
        return F.mse_loss(logits.squeeze(), labels.squeeze()) if num_labels == 1 else F.mse_loss(logits, labels)
    if kind == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def token_classification_loss(logits: Tensor, labels: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Per-token CE over logits (B, T, L); IGNORE_INDEX labels and padding positions do not count."""
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask.to(labels.device) == 0, IGNORE_INDEX)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def qa_loss(start_logits: Tensor, end_logits: Tensor, start_positions: Tensor, end_positions: Tensor) -> Tensor:
    """(CE(start) + CE(end)) / 2 over logits (B, T). As in transformers, positions outside the input are
    clamped to T and then ignored (an answer truncated away teaches nothing)."""
    ignored = start_logits.shape[1]
    start = start_positions.reshape(-1).clamp(0, ignored)
    end = end_positions.reshape(-1).clamp(0, ignored)
    start_loss = F.cross_entropy(start_logits.float(), start, ignore_index=ignored)
    end_loss = F.cross_entropy(end_logits.float(), end, ignore_index=ignored)
    return (start_loss + end_loss) / 2


def choice_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """CE over candidate scores (B, K) with the index of the right candidate (B,)."""
    return F.cross_entropy(logits.float(), labels.reshape(-1))


def lm_targets(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Next-token targets over real tokens only: a target counts when it and the token before it are real."""
    if attention_mask is None:
        return input_ids
    real = attention_mask.to(input_ids.device).bool()
    keep = real.clone()
    keep[:, 1:] &= real[:, :-1]  # with left padding, no token is predicted from a pad position
    return input_ids.masked_fill(~keep, IGNORE_INDEX)


# -- the model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """What a TaskModel predicts. Field meanings follow transformers' config fields."""

    task: Task
    num_labels: int = 2  # classify and tag; qa predicts 2 scores (start, end), choice 1 per candidate
    problem_type: ProblemType | None = None  # classify; None infers it from the labels as transformers does
    dropout: float = 0.1  # before the head for tag (classifier_dropout) and choice (summary_first_dropout)
    labels: tuple[str, ...] | None = None  # class names by label id (id2label)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) or self.num_labels < 1:
            raise ConfigError(f"num_labels must be a positive integer, got {self.num_labels!r}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type {self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.labels is not None and len(self.labels) != self.num_labels:
            raise ConfigError(f"{len(self.labels)} label names given for num_labels={self.num_labels}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["labels"] = None if self.labels is None else list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "task") -> TaskSpec:
        try:
            labels = data.get("labels")
            return cls(**{**data, "labels": None if labels is None else tuple(labels)})
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc


@dataclass
class TaskOutput:
    """What `TaskModel.forward` returns."""

    logits: Tensor  # classify (B, L); tag (B, T, L); qa (B, T, 2); choice (B, K)
    loss: Tensor | None = None  # task loss, plus aux_lm_weight * aux_loss; only when targets are given
    start_logits: Tensor | None = None  # qa (B, T)
    end_logits: Tensor | None = None  # qa (B, T)
    aux_loss: Tensor | None = None  # the unweighted next-token LM loss, when aux_lm_weight > 0


class SequenceSummary(nn.Module):
    """transformers' double-heads summary as configured for GPT: dropout, then Linear(C, 1)."""

    def __init__(self, n_embd: int, dropout: float, **factory: Any) -> None:
        super().__init__()
        self.first_dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(n_embd, 1, **factory)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.summary(self.first_dropout(pooled)).squeeze(-1)  # (N,)


class TaskModel(nn.Module):
    """A GPT with a task head. The backbone's modules are shared with `gpt`, whose forward it runs.

    aux_lm_weight: GPT-1's auxiliary objective (0.5 in the paper): when > 0 and a task loss is computed,
        add weight * next-token LM loss over the real tokens, through the GPT's (tied) LM head.
    """

    gpt: GPT  # the backbone whose forward runs; deliberately not a submodule (see __init__)

    def __init__(self, gpt: GPT, spec: TaskSpec | Task, *, aux_lm_weight: float = 0.0) -> None:
        super().__init__()
        spec = TaskSpec(spec) if isinstance(spec, str) else spec
        self.spec = spec
        self.aux_lm_weight = aux_lm_weight
        # Not a submodule: the state dict must hold only transformers' keys (`transformer.*` + the head).
        object.__setattr__(self, "gpt", gpt)
        self.transformer = gpt.transformer
        n_embd, ref = gpt.config.n_embd, gpt.transformer.wte.weight
        factory: dict[str, Any] = dict(device=ref.device, dtype=ref.dtype)
        if spec.task == "classify":
            self.score = nn.Linear(n_embd, spec.num_labels, bias=False, **factory)
        elif spec.task == "tag":
            self.dropout = nn.Dropout(spec.dropout)
            self.classifier = nn.Linear(n_embd, spec.num_labels, **factory)
        elif spec.task == "qa":
            self.qa_outputs = nn.Linear(n_embd, 2, **factory)
        else:
            self.multiple_choice_head = SequenceSummary(n_embd, spec.dropout, **factory)
            self.lm_head = gpt.lm_head  # part of GPT*DoubleHeadsModel's checkpoint (tied to wte)
        for module in getattr(self, HEAD_NAMES[spec.task]).modules():
            if isinstance(module, nn.Linear):  # transformers' init: N(0, initializer_range), zero bias
                nn.init.normal_(module.weight, std=gpt.config.initializer_range)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def head(self) -> nn.Module:
        return getattr(self, HEAD_NAMES[self.spec.task])

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
    ) -> TaskOutput:
        """input_ids (B, T), or (B, K, T) for choice (K candidates each); attention_mask the same shape.

        labels: classify (B,) class ids or (B, L) floats; tag (B, T) with IGNORE_INDEX; choice (B,).
        start_positions, end_positions: qa (B,) token positions of the answer span.
        """
        task = self.spec.task
        shape = input_ids.shape
        if (input_ids.dim() == 3) != (task == "choice"):
            raise ValueError(
                f"input_ids of shape {tuple(shape)}: the {task} task takes "
                + ("(batch, candidates, time)" if task == "choice" else "(batch, time)")
            )
        if task == "choice":
            input_ids = input_ids.reshape(-1, shape[-1])  # (B*K, T)
            attention_mask = None if attention_mask is None else attention_mask.reshape(-1, shape[-1])
        hidden = self.gpt(input_ids, attention_mask=attention_mask, return_logits=False).last_hidden_state  # (N, T, C)

        out: TaskOutput
        if task == "classify":
            logits = self.score(last_token(hidden, attention_mask))  # (B, L)
            loss = None if labels is None else classification_loss(logits, labels, self.spec.problem_type)
            out = TaskOutput(logits, loss)
        elif task == "tag":
            logits = self.classifier(self.dropout(hidden))  # (B, T, L)
            out = TaskOutput(
                logits, None if labels is None else token_classification_loss(logits, labels, attention_mask)
            )
        elif task == "qa":
            logits = self.qa_outputs(hidden)  # (B, T, 2)
            start, end = logits.unbind(dim=-1)  # (B, T) each
            if (start_positions is None) != (end_positions is None):
                raise ValueError("qa needs both start_positions and end_positions, or neither")
            loss = None if start_positions is None else qa_loss(start, end, start_positions, end_positions)
            out = TaskOutput(logits, loss, start_logits=start, end_logits=end)
        else:
            logits = self.multiple_choice_head(last_token(hidden, attention_mask)).view(shape[:-1])  # (B, K)
            out = TaskOutput(logits, None if labels is None else choice_loss(logits, labels))

        if out.loss is not None and self.aux_lm_weight > 0:
            out.aux_loss = self._aux_lm_loss(hidden, input_ids, attention_mask)
            out.loss = out.loss + self.aux_lm_weight * out.aux_loss
        return out

    def _aux_lm_loss(self, hidden: Tensor, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        config = self.gpt.config
        if not config.tie_word_embeddings and "lm_head" not in self._modules:
            raise ConfigError(
                "aux_lm_weight > 0 needs an LM head saved with the task model: use a GPT with "
                "tie_word_embeddings=True (the head is then wte) or the choice task"
            )
        return lm_loss(self.gpt.lm_logits(hidden), lm_targets(input_ids, attention_mask))


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
    spec, config = model.spec, model.gpt.config
    if id2label is not None:
        names = [id2label[i] for i in range(len(id2label))] if isinstance(id2label, Mapping) else list(id2label)
        spec = dataclasses.replace(spec, labels=tuple(str(n) for n in names))
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id if tokenizer is not None else config.eos_token_id
    hf_class = HF_CLASSES.get((spec.task, config.family))

    def task_fields() -> dict[str, Any]:
        if hf_class is None:
            raise CheckpointError(f"transformers has no {config.family or 'custom'} class for the {spec.task} task")
        return _hf_task_fields(spec, hf_class, pad_token_id)

    return save_checkpoint(
        directory,
        model.state_dict(),
        config,
        tokenizer=tokenizer,
        task_fields=task_fields,
        block={"task": spec.to_dict()},
    )


def _hf_task_fields(spec: TaskSpec, hf_class: str, pad_token_id: int | None) -> dict[str, Any]:
    fields: dict[str, Any] = dict(architectures=[hf_class], pad_token_id=pad_token_id)
    if spec.task in ("classify", "tag"):
        names = spec.labels or tuple(f"LABEL_{i}" for i in range(spec.num_labels))
        fields.update(id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)})
    if spec.task == "classify" and spec.problem_type is not None:
        fields["problem_type"] = spec.problem_type
    if spec.task == "tag":
        fields["classifier_dropout"] = spec.dropout
    if spec.task == "choice":
        fields.update(_SUMMARY_FIELDS, summary_first_dropout=spec.dropout)
    return fields


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
        spec = _spec_from_hf(data, str(config_path))
    state, weights_path = read_hf_weights(folder)
    prefix = HEAD_NAMES[spec.task] + "."
    head_state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    body = {k: v for k, v in state.items() if not k.startswith(prefix)}
    gpt_state = _backbone_state(body, config, spec.task, block.get("weights", "hf"), str(weights_path))
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
    state: dict[str, Tensor], config: GPTConfig, task: str, naming: str, source: str
) -> dict[str, Tensor]:
    """The GPT's state dict from a task checkpoint's non-head tensors (HF or gptkit names)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    state = dict(state)
    embedding = "transformer.wte.weight" if naming == "gptkit" else hf_name("transformer.wte.weight", config.family)
    if config.tie_word_embeddings and embedding not in state and TIED_KEY in state:
        state[embedding] = state.pop(TIED_KEY)  # OpenAIGPTDoubleHeadsModel saves the tied pair as lm_head
    untied_unused = task != "choice" and not config.tie_word_embeddings
    if untied_unused:  # transformers' classes other than double-heads have no LM head: the GPT's stays unused
        expected.pop(TIED_KEY)
    if naming == "gptkit":
        if config.tie_word_embeddings:
            state.pop(TIED_KEY, None)
            expected.pop(TIED_KEY)
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = [k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k]]
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"{source}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"wrongly shaped {wrong[:5]} weights for this config.json"
            )
        out = dict(state)
        if config.tie_word_embeddings:
            out[TIED_KEY] = out["transformer.wte.weight"]
    else:
        out = from_hf_state_dict(state, config, expected, source=source)
    if untied_unused:
        out[TIED_KEY] = torch.zeros(config.vocab_size, config.n_embd, dtype=out["transformer.wte.weight"].dtype)
    return out


def _spec_from_hf(data: dict[str, Any], source: str) -> TaskSpec:
    """The TaskSpec of a transformers checkpoint, from its architectures and task config fields."""
    arch = (data.get("architectures") or [None])[0]
    task = _TASK_OF_CLASS.get(arch)
    if task is None:
        raise CheckpointError(
            f"{source}: architectures {arch!r} is not a task model; expected one of {', '.join(sorted(_TASK_OF_CLASS))}"
            " (load language models with gptkit.models.checkpoint.load_model)"
        )
    if task == "choice":
        wrong = {k: data[k] for k, ok in _SUMMARY_FIELDS.items() if data.get(k, ok) != ok}
        if data.get("summary_last_dropout"):
            wrong["summary_last_dropout"] = data["summary_last_dropout"]
        if wrong:
            raise CheckpointError(
                f"{source}: multiple-choice head with {wrong} is not supported; gptkit implements "
                f"{_SUMMARY_FIELDS} and no summary_last_dropout"
            )
        return TaskSpec("choice", num_labels=1, dropout=float(data.get("summary_first_dropout", 0.1)))
    id2label = data.get("id2label") or {}
    num_labels = len(id2label) if id2label else int(data.get("num_labels", 2))
    names = tuple(str(id2label.get(str(i), f"LABEL_{i}")) for i in range(num_labels))
    labels = None if names == tuple(f"LABEL_{i}" for i in range(num_labels)) else names
    dropout = next((data[k] for k in ("classifier_dropout", "hidden_dropout") if data.get(k) is not None), 0.1)
    try:
        problem_type = data.get("problem_type") if task == "classify" else None
        return TaskSpec(task, num_labels, problem_type, float(dropout), labels)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
