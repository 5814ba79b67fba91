"""The logit processors `SamplingParams` drives: small pure functions over (B, V) logits.

(`SamplingParams` itself lives in gptkit.generation.params, torch-free, and is importable from here.)

Definitions follow the places users know them from:
* repetition_penalty, no_repeat_ngram_size, top_k, top_p, min_p: Hugging Face `transformers`
  (penalty divides positive and multiplies negative logits of every token already in the sequence;
  top-k keeps ties with the k-th value; top-p always keeps at least one token).
* presence_penalty, frequency_penalty, logit_bias: the OpenAI API (over generated tokens only):
  `logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty`, `logit[j] += bias[j]`.
* temperature 0 means greedy.

Every parameter is a Python number for all rows or a per-row column from `RowParams` (rows in one batch
with different params get exactly what each gets alone). Per-row values are kept in float64, as Python
floats are, and rounded to the logits' dtype where used, as Python scalars are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gptkit.generation.params import SamplingParams

NEG_INF = float("-inf")
MIN_DIVISOR = 1e-30  # the smallest a temperature or repetition penalty divides by: logits stay finite in fp32


# -- per-row parameters -----------------------------------------------------------------------------

IDLE = SamplingParams(temperature=0)  # what an unused row of a batch carries: greedy, nothing to draw


@dataclass
class RowParams:
    """The logit pipeline's parameters of a batch, one row per sequence, as tensors (float64, see above)."""

    rows: list[SamplingParams]
    temperature: Tensor  # (B, 1), 0 = greedy
    top_k: Tensor  # (B,) long, 0 = off
    top_p: Tensor  # (B, 1)
    min_p: Tensor  # (B, 1)
    repetition_penalty: Tensor  # (B, 1)
    presence_penalty: Tensor  # (B, 1)
    frequency_penalty: Tensor  # (B, 1)
    logit_bias: Tensor  # (B, V)

    @classmethod
    def of(cls, rows: Sequence[SamplingParams], vocab_size: int, device: torch.device | str | None = None) -> RowParams:
        B = len(rows)
        column = lambda: torch.zeros(B, 1, dtype=torch.float64, device=device)  # noqa: E731
        out = cls(
            rows=list(rows),
            temperature=column(),
            top_k=torch.zeros(B, dtype=torch.long, device=device),
            top_p=column(),
            min_p=column(),
            repetition_penalty=column(),
            presence_penalty=column(),
            frequency_penalty=column(),
            logit_bias=torch.zeros(B, vocab_size, dtype=torch.float64, device=device),
        )
        for row, params in enumerate(rows):
            out.set(row, params)
        return out

    def set(self, row: int, params: SamplingParams) -> None:
        """Give row `row` the parameters `params` (a batch's rows change as sequences come and go)."""
        self.rows[row] = params
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            getattr(self, name)[row] = getattr(params, name)
        self.top_k[row] = params.top_k
        self.logit_bias[row] = 0.0
        if params.logit_bias:
            self.logit_bias[row, list(params.logit_bias)] = torch.tensor(
                list(params.logit_bias.values()), dtype=torch.float64, device=self.logit_bias.device
            )

    def uses(self, name: str, off: Any) -> bool:
        """Whether any row sets `name` to something other than `off` (processors no row uses are skipped)."""
        return any(getattr(p, name) != off for p in self.rows)


Param = float | Tensor  # one value for every row, or a per-row column (B, 1)


def _rounded(value: Param, like: Tensor) -> Param:
    return value.to(like.dtype) if isinstance(value, Tensor) else value


def _divisor(value: Param, like: Tensor) -> Param:
    """A positive temperature or penalty to divide `like` by, at least MIN_DIVISOR: a logit over a smaller one (or
    over one that rounds to 0 in fp32) overflows to inf, whose softmax is nan; the distribution there is already
    its argmax."""
    if isinstance(value, Tensor):
        return value.clamp(min=MIN_DIVISOR).to(like.dtype)
    return max(value, MIN_DIVISOR)


# -- processors that depend on the sequence so far -------------------------------------------------


def apply_logit_bias(logits: Tensor, bias: Mapping[int, float] | Tensor) -> Tensor:
    """bias: {token: value} for every row, or per-row (B, V)."""
    if isinstance(bias, Tensor):
        return logits + bias.to(logits.dtype)
    if not bias:
        return logits
    ids = torch.tensor(list(bias), device=logits.device)
    values = torch.tensor(list(bias.values()), device=logits.device, dtype=logits.dtype)
    return logits.index_add(1, ids, values.expand(logits.shape[0], -1))


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: Param) -> Tensor:
    """seen: (B, V) bool, tokens present in each row's prompt or output."""
    if not isinstance(penalty, Tensor) and penalty == 1.0:
        return logits
    penalty = _divisor(penalty, logits)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(logits: Tensor, counts: Tensor, presence: Param, frequency: Param) -> Tensor:
    """counts: (B, V) how often each token was generated so far in each row."""
    if not isinstance(presence, Tensor) and not isinstance(frequency, Tensor) and presence == 0 and frequency == 0:
        return logits
    counts = counts.to(logits.dtype)
    presence, frequency = _rounded(presence, logits), _rounded(frequency, logits)
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def banned_ngram_tokens(sequence: Sequence[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `sequence` (transformers' no_repeat_ngram_size)."""
    if n <= 0 or len(sequence) + 1 < n:
        return []
    prefix = tuple(sequence[len(sequence) - n + 1 :]) if n > 1 else ()
    return [sequence[i + n - 1] for i in range(len(sequence) - n + 1) if tuple(sequence[i : i + n - 1]) == prefix]


def apply_no_repeat_ngram(logits: Tensor, sequences: Sequence[Sequence[int]], n: int | Sequence[int]) -> Tensor:
    """n: one n-gram size for every row, or one per row (0 = off)."""
    sizes = [n] * len(sequences) if isinstance(n, int) else list(n)
    if not any(size > 0 for size in sizes):
        return logits
    logits = logits.clone()
    for row, (sequence, size) in enumerate(zip(sequences, sizes, strict=True)):
        banned = banned_ngram_tokens(sequence, size)
        if banned:
            logits[row, banned] = NEG_INF
    return logits


def process(
    logits: Tensor, params: RowParams, sequences: Sequence[Sequence[int]], seen: Tensor, counts: Tensor
) -> Tensor:
    """The sequence-dependent processors, in transformers' order where both define them.

    sequences: each row's prompt + output; seen (B, V) bool: tokens in them; counts (B, V): generated counts.
    """
    if params.uses("logit_bias", {}):
        logits = apply_logit_bias(logits, params.logit_bias)
    if params.uses("repetition_penalty", 1.0):
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.uses("presence_penalty", 0.0) or params.uses("frequency_penalty", 0.0):
        logits = apply_presence_frequency(logits, counts, params.presence_penalty, params.frequency_penalty)
    return apply_no_repeat_ngram(logits, sequences, [p.no_repeat_ngram_size for p in params.rows])


# -- warpers that reshape the distribution ----------------------------------------------------------


def apply_temperature(logits: Tensor, temperature: Param) -> Tensor:
    """Divide by the temperature (at least MIN_DIVISOR); 0 (greedy) and 1 leave the logits alone."""
    if not isinstance(temperature, Tensor):
        return logits if temperature in (0.0, 1.0) else logits / _divisor(temperature, logits)
    return logits / _divisor(torch.where(temperature == 0, 1.0, temperature), logits)


def apply_top_k(logits: Tensor, k: int | Tensor) -> Tensor:
    """Keep tokens whose logit is >= the k-th largest (ties with the k-th are kept). k: int or per-row (B,)."""
    V = logits.shape[-1]
    if not isinstance(k, Tensor):
        if k <= 0 or k >= V:
            return logits
        k = torch.full(logits.shape[:1], k, device=logits.device)
    on = (k > 0) & (k < V)  # (B,)
    widest = int(k.masked_fill(~on, 0).max())
    if widest == 0:
        return logits
    kth = torch.topk(logits, widest, dim=-1).values.gather(-1, (k.clamp(1, widest) - 1)[:, None])  # (B, 1)
    kth = kth.masked_fill(~on[:, None], NEG_INF)
    return logits.masked_fill(logits < kth, NEG_INF)


def apply_top_p(logits: Tensor, p: Param) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (at least one token)."""
    if not isinstance(p, Tensor) and p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= _rounded(1 - p, cumulative)
    remove_sorted[..., -1] = False  # the most likely token always stays
    if isinstance(p, Tensor):
        remove_sorted &= p < 1  # rows with p = 1 keep everything
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def apply_min_p(logits: Tensor, min_p: Param) -> Tensor:
    """Drop tokens whose probability is below min_p times the most likely token's."""
    if not isinstance(min_p, Tensor) and min_p <= 0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = _rounded(min_p, probs) * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, NEG_INF)


def warp(logits: Tensor, params: SamplingParams | RowParams) -> Tensor:
    """Temperature, then top-k, top-p and min-p, in transformers' order."""
    if isinstance(params, RowParams):  # skip what no row uses
        used = lambda name, off: getattr(params, name) if params.uses(name, off) else off  # noqa: E731
        temperature, top_k, top_p, min_p = (
            used("temperature", 1.0),
            used("top_k", 0),
            used("top_p", 1.0),
            used("min_p", 0.0),
        )
    else:
        temperature, top_k, top_p, min_p = params.temperature, params.top_k, params.top_p, params.min_p
    logits = apply_temperature(logits, temperature)
    logits = apply_top_k(logits, top_k)
    logits = apply_top_p(logits, top_p)
    return apply_min_p(logits, min_p)


def choose(
    logits: Tensor,
    params: SamplingParams | RowParams,
    generators: Sequence[torch.Generator | None],
    shared: torch.Generator | None = None,
) -> Tensor:
    """Next token per row (B,): argmax for greedy rows, else a draw from the row's warped distribution.

    A row with its own generator draws from it alone, so its sample does not depend on its batch mates;
    the rows without one draw together in one multinomial from `shared` (torch's default generator if None).
    """
    if isinstance(params, SamplingParams):
        params = RowParams.of([params] * logits.shape[0], logits.shape[-1], logits.device)
    tokens = logits.argmax(dim=-1)
    sampled = [row for row, p in enumerate(params.rows) if not p.greedy]
    if not sampled:
        return tokens
    probs = warp(logits.float(), params).softmax(dim=-1)
    together = [row for row in sampled if generators[row] is None]
    if together:
        tokens[together] = torch.multinomial(probs[together], 1, generator=shared)[:, 0]
    for row in sampled:
        if generators[row] is not None:
            tokens[row] = torch.multinomial(probs[row], 1, generator=generators[row])[0]
    return tokens
