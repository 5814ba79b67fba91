"""Task heads: small modules over the backbone's hidden states, as transformers' GPT2For* classes hold them.

Each head takes the final hidden states (..., T, C) and the attention mask of the same leading shape, and
returns a `TaskOutput` (logits, and the loss when targets are given). Its parameters carry transformers'
names under the attribute a task model registers it as (`score`, `classifier`, `qa_outputs`,
`multiple_choice_head`), so the task model's state dict is the transformers class's:

    ClassificationHead       score.weight                         GPT2ForSequenceClassification
    TokenClassificationHead  classifier.{weight,bias}             GPT2ForTokenClassification
    QuestionAnsweringHead    qa_outputs.{weight,bias}             GPT2ForQuestionAnswering
    MultipleChoiceHead       multiple_choice_head.summary.*       GPT2DoubleHeadsModel

Pooling and losses are pure functions. Padding is described by `attention_mask` alone (GPT-2 has no pad
token: pad with the eos id), so pooling never depends on which id the padding holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.models.gpt import IGNORE_INDEX
from gptkit.models.pooling import last_token

ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


class HeadSpec(Protocol):
    """What a head is built from (gptkit.tasks.heads.TaskSpec)."""

    num_labels: int
    problem_type: ProblemType | None
    dropout: float


@dataclass
class TaskOutput:
    """What a head (and a task model) returns."""

    logits: Tensor  # classify (B, L); tag (B, T, L); qa (B, T, 2); choice (B, K)
    loss: Tensor | None = None  # task loss, plus aux_lm_weight * aux_loss; only when targets are given
    start_logits: Tensor | None = None  # qa (B, T)
    end_logits: Tensor | None = None  # qa (B, T)
    aux_loss: Tensor | None = None  # the unweighted next-token LM loss, when aux_lm_weight > 0


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


# -- heads ------------------------------------------------------------------------------------------


def _linear(n_in: int, n_out: int, bias: bool, std: float, **factory: Any) -> nn.Linear:
    """nn.Linear(n_in, n_out) initialised as transformers initialises heads: N(0, std), zero bias."""
    layer = nn.Linear(n_in, n_out, bias=bias, **factory)
    nn.init.normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _adopt(module: nn.Module, layer: nn.Linear) -> None:
    """Hold a Linear's parameters as the module's own `weight` (and `bias`): transformers' names for the head."""
    module.weight = layer.weight
    module.bias = layer.bias


class ClassificationHead(nn.Module):
    """Sequence classification: the last real token's hidden state -> Linear(C, L) without bias."""

    candidates = False  # inputs are (B, T); a multiple-choice head takes (B, K, T)
    weight: nn.Parameter  # transformers' names, adopted from a Linear (see _adopt)
    bias: nn.Parameter | None

    def __init__(self, n_embd: int, spec: HeadSpec, *, std: float, **factory: Any) -> None:
        super().__init__()
        _adopt(self, _linear(n_embd, spec.num_labels, False, std, **factory))
        self.problem_type = spec.problem_type

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, *, labels: Tensor | None = None) -> TaskOutput:
        logits = F.linear(last_token(hidden, attention_mask), self.weight)  # (B, L)
        return TaskOutput(logits, None if labels is None else classification_loss(logits, labels, self.problem_type))


class TokenClassificationHead(nn.Module):
    """Token classification: dropout, then Linear(C, L) at every position."""

    candidates = False
    weight: nn.Parameter  # transformers' names, adopted from a Linear (see _adopt)
    bias: nn.Parameter | None

    def __init__(self, n_embd: int, spec: HeadSpec, *, std: float, **factory: Any) -> None:
        super().__init__()
        self.dropout = nn.Dropout(spec.dropout)
        _adopt(self, _linear(n_embd, spec.num_labels, True, std, **factory))

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, *, labels: Tensor | None = None) -> TaskOutput:
        logits = F.linear(self.dropout(hidden), self.weight, self.bias)  # (B, T, L)
        loss = None if labels is None else token_classification_loss(logits, labels, attention_mask)
        return TaskOutput(logits, loss)


class QuestionAnsweringHead(nn.Module):
    """Extractive QA: Linear(C, 2) at every position, the start and end scores of the answer span."""

    candidates = False
    weight: nn.Parameter  # transformers' names, adopted from a Linear (see _adopt)
    bias: nn.Parameter | None

    def __init__(self, n_embd: int, spec: HeadSpec, *, std: float, **factory: Any) -> None:
        super().__init__()
        _adopt(self, _linear(n_embd, 2, True, std, **factory))

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        *,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
    ) -> TaskOutput:
        logits = F.linear(hidden, self.weight, self.bias)  # (B, T, 2)
        start, end = logits.unbind(dim=-1)  # (B, T) each
        if (start_positions is None) != (end_positions is None):
            raise ValueError("qa needs both start_positions and end_positions, or neither")
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = qa_loss(start, end, start_positions, end_positions)
        return TaskOutput(logits, loss, start_logits=start, end_logits=end)


class MultipleChoiceHead(nn.Module):
    """transformers' double-heads summary as configured for GPT: each candidate's last real token ->
    dropout -> Linear(C, 1); the K scores of a question are its logits."""

    candidates = True

    def __init__(self, n_embd: int, spec: HeadSpec, *, std: float, **factory: Any) -> None:
        super().__init__()
        self.first_dropout = nn.Dropout(spec.dropout)
        self.summary = _linear(n_embd, 1, True, std, **factory)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, *, labels: Tensor | None = None) -> TaskOutput:
        """hidden (B, K, T, C), attention_mask (B, K, T)."""
        flat_mask = None if attention_mask is None else attention_mask.flatten(0, 1)
        pooled = last_token(hidden.flatten(0, 1), flat_mask)  # (B*K, C)
        logits = self.summary(self.first_dropout(pooled)).view(hidden.shape[:2])  # (B, K)
        return TaskOutput(logits, None if labels is None else choice_loss(logits, labels))
