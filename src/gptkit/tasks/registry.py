"""The task registry: one `TaskType` entry per task holds everything that differs between tasks.

An entry names the task's recipe (reading, encoding, scoring, prediction records), its head module and the
attribute transformers holds it under, the transformers class of each model family, whether that class keeps
the LM head, peft's task type, and how the task's fields go in and out of a transformers config.json.
Adding a task is one more entry here. `TaskSpec` is what a task model predicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from gptkit.errors import CheckpointError, ConfigError
from gptkit.models.heads import (
    PROBLEM_TYPES,
    ClassificationHead,
    MultipleChoiceHead,
    ProblemType,
    QuestionAnsweringHead,
    TokenClassificationHead,
)
from gptkit.tasks import recipes
from gptkit.tasks.recipes import Recipe


@dataclass(frozen=True)
class TaskSpec:
    """What a TaskModel predicts. Field meanings follow transformers' config fields."""

    task: str  # a key of TASK_TYPES whose entry has a head
    num_labels: int = 2  # classify and tag; qa predicts 2 scores (start, end), choice 1 per candidate
    problem_type: ProblemType | None = None  # classify; None infers it from the labels as transformers does
    dropout: float = 0.1  # before the head for tag (classifier_dropout) and choice (summary_first_dropout)
    labels: tuple[str, ...] | None = None  # class names by label id (id2label)

    def __post_init__(self) -> None:
        heads = [name for name, kind in TASK_TYPES.items() if kind.head is not None]
        if self.task not in heads:
            raise ConfigError(f"unknown task {self.task!r}; expected one of {', '.join(heads)}")
        if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) or self.num_labels < 1:
            raise ConfigError(f"num_labels must be a positive integer, got {self.num_labels!r}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type {self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.labels is not None and len(self.labels) != self.num_labels:
            raise ConfigError(f"{len(self.labels)} label names given for num_labels={self.num_labels}")

    @property
    def kind(self) -> TaskType:
        return TASK_TYPES[self.task]

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


def _no_fields(spec: TaskSpec) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class TaskType:
    """One task: its recipe and, for task models, its head and how transformers and peft name it."""

    name: str
    recipe: Recipe
    head: type[nn.Module] | None = None  # built as head(n_embd, spec, std=..., device=..., dtype=...); None: an LM
    head_name: str = ""  # the attribute transformers' class holds the head under (its weights' prefix)
    hf_classes: Mapping[str, str] = field(default_factory=dict)  # model family -> transformers class
    lm_head: bool = False  # the transformers class keeps the (tied) LM head beside the task head
    peft_task_type: str | None = None  # peft's task_type for saved adapters
    hf_fields: Callable[[TaskSpec], dict[str, Any]] = _no_fields  # the task's transformers config.json fields
    spec_fields: Callable[[dict[str, Any], str], dict[str, Any]] | None = None  # config.json -> TaskSpec fields


# -- the task fields of a transformers config.json --------------------------------------------------

# The double-heads summary config gptkit implements: the candidate's chosen token -> dropout -> Linear(C, 1).
_SUMMARY_FIELDS = dict(
    summary_type="cls_index", summary_use_proj=True, summary_proj_to_labels=True, summary_activation=None
)


def _label_fields(spec: TaskSpec) -> dict[str, Any]:
    names = spec.labels or tuple(f"LABEL_{i}" for i in range(spec.num_labels))
    return dict(id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)})


def _classify_fields(spec: TaskSpec) -> dict[str, Any]:
    fields = _label_fields(spec)
    if spec.problem_type is not None:
        fields["problem_type"] = spec.problem_type
    return fields


def _labelled_spec(data: dict[str, Any], source: str, *, problem_type: bool = False) -> dict[str, Any]:
    id2label = data.get("id2label") or {}
    num_labels = len(id2label) if id2label else int(data.get("num_labels", 2))
    names = tuple(str(id2label.get(str(i), f"LABEL_{i}")) for i in range(num_labels))
    labels = None if names == tuple(f"LABEL_{i}" for i in range(num_labels)) else names
    dropout = next((data[k] for k in ("classifier_dropout", "hidden_dropout") if data.get(k) is not None), 0.1)
    kind = data.get("problem_type") if problem_type else None
    return dict(num_labels=num_labels, problem_type=kind, dropout=float(dropout), labels=labels)


def _choice_spec(data: dict[str, Any], source: str) -> dict[str, Any]:
    wrong = {k: data[k] for k, ok in _SUMMARY_FIELDS.items() if data.get(k, ok) != ok}
    if data.get("summary_last_dropout"):
        wrong["summary_last_dropout"] = data["summary_last_dropout"]
    if wrong:
        raise CheckpointError(
            f"{source}: multiple-choice head with {wrong} is not supported; gptkit implements "
            f"{_SUMMARY_FIELDS} and no summary_last_dropout"
        )
    return dict(num_labels=1, dropout=float(data.get("summary_first_dropout", 0.1)))


TASK_TYPES: dict[str, TaskType] = {
    kind.name: kind
    for kind in (
        TaskType(
            "classify",
            recipes.CLASSIFY,
            ClassificationHead,
            "score",
            {"gpt2": "GPT2ForSequenceClassification", "openai-gpt": "OpenAIGPTForSequenceClassification"},
            peft_task_type="SEQ_CLS",
            hf_fields=_classify_fields,
            spec_fields=lambda data, source: _labelled_spec(data, source, problem_type=True),
        ),
        TaskType(
            "tag",
            recipes.TAG,
            TokenClassificationHead,
            "classifier",
            {"gpt2": "GPT2ForTokenClassification"},
            peft_task_type="TOKEN_CLS",
            hf_fields=lambda spec: {**_label_fields(spec), "classifier_dropout": spec.dropout},
            spec_fields=_labelled_spec,
        ),
        TaskType(
            "qa",
            recipes.QA,
            QuestionAnsweringHead,
            "qa_outputs",
            {"gpt2": "GPT2ForQuestionAnswering"},
            peft_task_type="QUESTION_ANS",
            spec_fields=_labelled_spec,
        ),
        TaskType(
            "choice",
            recipes.CHOICE,
            MultipleChoiceHead,
            "multiple_choice_head",
            {"gpt2": "GPT2DoubleHeadsModel", "openai-gpt": "OpenAIGPTDoubleHeadsModel"},
            lm_head=True,
            hf_fields=lambda spec: {**_SUMMARY_FIELDS, "summary_first_dropout": spec.dropout},
            spec_fields=_choice_spec,
        ),
        TaskType("instruct", recipes.INSTRUCT, peft_task_type="CAUSAL_LM"),
    )
}


def task_of_hf_class(name: str | None) -> TaskType | None:
    """The task whose transformers class (of any family) is `name`, if any."""
    return next((kind for kind in TASK_TYPES.values() if name in kind.hf_classes.values()), None)


def spec_from_hf(data: dict[str, Any], source: str) -> TaskSpec:
    """The TaskSpec of a transformers checkpoint, from its architectures and task config fields."""
    arch = (data.get("architectures") or [None])[0]
    kind = task_of_hf_class(arch)
    if kind is None or kind.spec_fields is None:
        known = sorted(c for k in TASK_TYPES.values() for c in k.hf_classes.values())
        raise CheckpointError(
            f"{source}: architectures {arch!r} is not a task model; expected one of {', '.join(known)}"
            " (load language models with gptkit.models.checkpoint.load_model)"
        )
    try:
        return TaskSpec(kind.name, **kind.spec_fields(data, source))
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
