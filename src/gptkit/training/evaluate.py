"""Evaluation: sliding-window perplexity (as the transformers docs compute it) and LAMBADA last-word accuracy.

`perplexity` reproduces "Perplexity of fixed-length models" from the transformers docs token for token:
windows of `max_length` tokens start every `stride` tokens; each scores only the tokens no earlier window
scored; each window's mean loss is weighted by its targets minus one (the docs' count, which allows for
the label shift). Only the positions that predict a target go through the LM head.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from gptkit.errors import ConfigError, ContextLengthError, DataError
from gptkit.models.gpt import GPT
from gptkit.models.pooling import right_pad

if TYPE_CHECKING:
    from gptkit.text.tokenizer import Tokenizer

__all__ = [
    "LambadaExample",
    "LambadaResult",
    "PerplexityResult",
    "Window",
    "lambada_accuracy",
    "lambada_example",
    "perplexity",
    "read_lambada",
    "sliding_windows",
]


@dataclass(frozen=True)
class PerplexityResult:
    nll: float  # mean negative log-likelihood per loss token, in nats
    perplexity: float  # exp(nll)
    tokens: int  # loss tokens: each window's targets minus one, as the transformers docs count them
    windows: int


@dataclass(frozen=True)
class Window:
    """ids[begin:end] is one forward pass; its last `targets` tokens are scored, the rest is context."""

    begin: int
    end: int
    targets: int

    @property
    def scored(self) -> int:
        """Targets that have a prediction: a window that is all targets cannot predict its first token."""
        return self.targets - 1 if self.targets == self.end - self.begin else self.targets

    @property
    def loss_tokens(self) -> int:
        """The docs' weight of this window's mean loss: valid labels minus one for the internal shift."""
        return self.targets - 1


def sliding_windows(n: int, max_length: int, stride: int) -> list[Window]:
    """The docs' windows over n tokens: begin = 0, stride, 2*stride, ... until one ends at n."""
    windows: list[Window] = []
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        windows.append(Window(begin, end, end - prev_end))
        prev_end = end
        if end == n:
            break
    return windows


@torch.inference_mode()
def perplexity(
    model: GPT,
    ids: Sequence[int] | Tensor,
    *,
    max_length: int | None = None,
    stride: int = 512,
    batch_size: int = 1,
    progress: bool = False,
) -> PerplexityResult:
    """Sliding-window perplexity of a token sequence, exactly as the transformers docs compute it.

    max_length: window length (default: the model's context). stride: how far each window moves;
    stride == max_length is plain disjoint chunks, a smaller one gives every scored token more context.
    batch_size: windows per forward pass (same result, faster). progress: a tqdm bar on stderr.

    As in the docs, a window's mean loss counts for its targets minus one tokens, although a window after
    the first predicts all of its targets; so small strides under-weight later windows, and with stride 1
    only the first window counts. Use stride == max_length for an unweighted per-token average.
    """
    max_length = model.config.n_positions if max_length is None else max_length
    _check_settings(model, max_length, stride, batch_size)
    x = _as_ids(ids).to(model.lm_head.weight.device)
    windows = sliding_windows(len(x), max_length, stride)
    nll_sum, tokens = 0.0, 0
    with eval_mode(model), _bar(len(windows), "windows", progress) as bar:
        for group in _same_length_groups(windows, batch_size):
            for window, nll in zip(group, _window_nll(model, x, group), strict=True):
                if window.scored:  # a lone final token: the docs' loop would add 0 * nan here
                    nll_sum += nll / window.scored * window.loss_tokens
                    tokens += window.loss_tokens
            bar.update(len(group))
    if tokens == 0:
        raise DataError(f"nothing to score: {len(x)} tokens with max_length {max_length} leave no loss tokens")
    nll = nll_sum / tokens
    return PerplexityResult(nll=nll, perplexity=math.exp(nll), tokens=tokens, windows=len(windows))


def _check_settings(model: GPT, max_length: int, stride: int, batch_size: int) -> None:
    context = model.config.n_positions
    if not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length must be an integer >= 2 (a window needs a token to predict), got {max_length!r}")
    if max_length > context:
        raise ContextLengthError(
            f"max_length {max_length} is longer than the model's context of {context} tokens; "
            f"use max_length <= {context} (the default is the context)"
        )
    if not isinstance(stride, int) or not 1 <= stride <= max_length:
        raise ConfigError(
            f"stride must be an integer in [1, max_length={max_length}], got {stride!r}; "
            "stride == max_length scores disjoint chunks, a smaller stride gives each token more context"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def _as_ids(ids: Sequence[int] | Tensor) -> Tensor:
    x = torch.as_tensor(ids, dtype=torch.long)
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1:
        raise DataError(f"expected one sequence of token ids (n,) or (1, n), got shape {tuple(x.shape)}")
    if len(x) < 2:
        raise DataError(f"perplexity needs at least 2 tokens (one to predict from), got {len(x)}")
    return x


def _same_length_groups(windows: list[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive windows of one length, at most batch_size at a time (only the last can be shorter)."""
    group: list[Window] = []
    for window in windows:
        if group and (len(group) == batch_size or window.end - window.begin != group[0].end - group[0].begin):
            yield group
            group = []
        group.append(window)
    if group:
        yield group


def _window_nll(model: GPT, x: Tensor, group: list[Window]) -> list[float]:
    """Summed NLL of each window's scored tokens; the windows share one length."""
    batch = torch.stack([x[w.begin : w.end] for w in group])  # (B, L)
    L = batch.shape[1]
    k = max(w.scored for w in group)  # predicting positions L-1-k .. L-2 cover every window's targets
    if k == 0:
        return [0.0] * len(group)
    hidden = model(batch, return_logits=False).last_hidden_state[:, L - 1 - k : L - 1]  # (B, k, C)
    logits = model.lm_logits(hidden).float()  # (B, k, V)
    nll = F.cross_entropy(logits.transpose(1, 2), batch[:, L - k :], reduction="none")  # (B, k)
    scored = torch.tensor([w.scored for w in group], device=nll.device)
    keep = torch.arange(k, device=nll.device)[None, :] >= (k - scored)[:, None]  # (B, k) each row's own targets
    return torch.where(keep, nll, 0.0).double().sum(dim=1).tolist()


# --- LAMBADA ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LambadaResult:
    accuracy: float  # correct / total
    correct: int  # examples whose every target token is the greedy (argmax) prediction
    total: int
    perplexity: float  # exp(mean over examples of -log p(target word | context)), lm-evaluation-harness' way


@dataclass(frozen=True)
class LambadaExample:
    """Token ids of `context + " " + word`, of which the last `targets` are the word."""

    ids: list[int]
    targets: int


def lambada_example(tokenizer: Tokenizer, text: str) -> LambadaExample:
    """Split off the last whitespace-separated word and tokenize the text with it as target.

    The whole text is encoded once and the word's tokens are found by character offsets, so tokenizers
    that do not split cleanly at the space are handled too; for GPT-2's byte-level BPE the targets equal
    encode(" " + word).
    """
    parts = text.rsplit(None, 1)
    if len(parts) != 2 or not parts[0].strip():
        raise DataError(f"a LAMBADA example needs a context and a last word, got {text[:60]!r}")
    context, word = parts
    encoding = tokenizer.encode_with_offsets(f"{context} {word}", disallowed_special=())
    n_context = sum(1 for _, end in encoding.offsets if end <= len(context))
    if n_context == 0 or n_context == len(encoding.ids):
        raise DataError(f"{text[:60]!r}: the context or the last word encodes to no tokens")
    return LambadaExample(encoding.ids, len(encoding.ids) - n_context)


@torch.inference_mode()
def lambada_accuracy(
    model: GPT,
    tokenizer: Tokenizer,
    examples: Iterable[str],
    *,
    batch_size: int = 1,
    progress: bool = False,
) -> LambadaResult:
    """LAMBADA: does greedy decoding from the true prefix predict every token of each text's last word?

    Contexts longer than the model's context keep their last tokens. Batches are right-padded: with
    causal attention, padding after a sequence cannot change its logits.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    items = [_fit(lambada_example(tokenizer, text), model.config.n_positions) for text in examples]
    if not items:
        raise DataError("no LAMBADA examples to evaluate")
    device = model.lm_head.weight.device
    correct, nll_sum = 0, 0.0
    with eval_mode(model), _bar(len(items), "examples", progress) as bar:
        for start in range(0, len(items), batch_size):
            group = items[start : start + batch_size]
            batch = right_pad([e.ids for e in group], 0, device=device)  # (B, T)
            hidden = model(batch, return_logits=False).last_hidden_state  # (B, T, C)
            for row, example in enumerate(group):
                n = len(example.ids)
                logits = model.lm_logits(hidden[row, n - 1 - example.targets : n - 1]).float()  # (targets, V)
                targets = batch[row, n - example.targets : n]
                nll_sum += F.cross_entropy(logits, targets, reduction="sum").item()
                correct += bool((logits.argmax(dim=-1) == targets).all())
            bar.update(len(group))
    total = len(items)
    return LambadaResult(accuracy=correct / total, correct=correct, total=total, perplexity=math.exp(nll_sum / total))


def _fit(example: LambadaExample, context: int) -> LambadaExample:
    if len(example.ids) <= context:
        return example
    if example.targets >= context:
        raise ContextLengthError(f"a LAMBADA target of {example.targets} tokens does not fit the context of {context}")
    return LambadaExample(example.ids[-context:], example.targets)


def read_lambada(path: str | os.PathLike[str]) -> list[str]:
    """The texts of a LAMBADA-style JSONL file (one {"text": ...} per line; blank lines are skipped)."""
    texts: list[str] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str) or len(text.split()) < 2:
                    raise DataError(
                        f'{path}:{lineno}: expected an object like {{"text": "context ... last-word"}} '
                        "with at least two words"
                    )
                texts.append(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the LAMBADA file: {exc}") from exc
    return texts


# --- helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off while evaluating; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _bar(total: int, unit: str, enabled: bool) -> Iterator:
    from tqdm import tqdm

    with tqdm(total=total, unit=unit[:-1], desc=f"scoring {unit}", disable=not enabled, leave=False) as bar:
        yield bar
