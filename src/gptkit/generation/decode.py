"""Decoding primitives shared by sampling and beam search: tokens in and text out (incrementally), prefill
into rows of the static KV cache and one decode step at per-row positions, scoring.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from gptkit.errors import ContextLengthError, TokenizerError
from gptkit.generation.sampling import SamplingParams
from gptkit.models.gpt import GPT, KVCache
from gptkit.text.tokenizer_files import BYTE_LEVEL_KINDS

FinishReason = Literal["stop", "length"]
Prompt = str | Sequence[int]


@dataclass
class TokenEvent:
    """One new token of sequence `index` (prompt `prompt_index`, sample `sample`)."""

    index: int
    prompt_index: int
    sample: int
    token_id: int
    text: str  # newly visible text: whole UTF-8 characters, stop strings held back and never shown
    logprob: float  # log-probability of token_id under the model's (unprocessed) distribution
    top_logprobs: dict[int, float] | None
    finish_reason: FinishReason | None  # set on the last event of a sequence


@dataclass
class Completion:
    index: int
    prompt_index: int
    sample: int
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    score: float | None = None  # beam search: the length-penalised beam score


class TextStream:
    """Turns a growing list of token ids into text deltas that are safe to show, decoding only the new bytes.

    Text is released only up to a whole UTF-8 character (byte-level BPE splits characters across
    tokens), and any tail that could still become a stop string is held back until it cannot.
    """

    CONTEXT = 3  # tokens decoded before a new one by tokenizers whose text is not a concatenation of tokens'

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.pending = ""  # decoded text not shown yet: a possible start of a stop string
        self.stopped = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._byte_level = tokenizer is not None and getattr(tokenizer, "kind", None) in BYTE_LEVEL_KINDS

    def _new_bytes(self) -> bytes:
        """The bytes the last token adds to the decoded sequence."""
        if self.tokenizer is None:
            return b""
        if self._byte_level:
            return self.tokenizer.decode_bytes(self.ids[-1:])
        # e.g. GPT-1's BPE joins words with a space only once the next token comes: decode a short window
        window = self.ids[-self.CONTEXT - 1 :]
        before, after = self.tokenizer.decode_bytes(window[:-1]), self.tokenizer.decode_bytes(window)
        return after[len(before) :] if after.startswith(before) else b""

    def push(self, token_id: int) -> str:
        """Add a token; return the newly visible text. Sets `stopped` when a stop string completes."""
        self.ids.append(token_id)
        self.pending += self._utf8.decode(self._new_bytes())
        cut = min((i for s in self.stop if (i := self.pending.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._release(cut)
        return self._release(len(self.pending) - _held_back(self.pending, self.stop))

    def flush(self) -> str:
        """At the end of a sequence: release whatever was held back (not past a stop)."""
        if self.stopped:
            return ""
        self.pending += self._utf8.decode(b"", final=True)
        return self._release(len(self.pending))

    def _release(self, n: int) -> str:
        delta, self.pending = self.pending[:n], self.pending[n:]
        return delta


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


# -- inputs -----------------------------------------------------------------------------------------


def encode_prompts(
    prompts: Prompt | Sequence[Prompt], tokenizer: Any, *, allow_special: bool = False
) -> list[list[int]]:
    """Normalise one prompt or many (text or token ids) into lists of ids."""
    one = isinstance(prompts, str) or (isinstance(prompts, Sequence) and bool(prompts) and isinstance(prompts[0], int))
    many: Sequence[Prompt] = [prompts] if one else prompts  # type: ignore[list-item,assignment]
    out = []
    for i, prompt in enumerate(many):
        if isinstance(prompt, str):
            if tokenizer is None:
                raise TokenizerError("text prompts need a tokenizer; pass tokenizer=... or token ids")
            out.append(tokenizer.encode(prompt, allowed_special="all" if allow_special else frozenset()))
            if prompt and not out[-1]:  # GPT-1's BPE keeps no whitespace: "  " is no tokens at all
                raise TokenizerError(
                    f"prompt {i} ({prompt[:20]!r}) encodes to no tokens with the {getattr(tokenizer, 'kind', 'given')} "
                    "tokenizer, which drops whitespace; give a prompt with some text"
                )
        else:
            out.append([int(t) for t in prompt])
    if not out or any(len(ids) == 0 for ids in out):
        raise ValueError("every prompt needs at least one token (GPT-2 users often start with <|endoftext|>)")
    return out


def fit_to_context(ids: list[int], max_new_tokens: int, n_positions: int, truncate: bool) -> list[int]:
    """The prompt as the model will first see it.

    Without truncate, prompt + new tokens must fit the context. With truncate, the model conditions on a
    sliding window of the last n_positions tokens (nanoGPT's cropping), so only the prompt is cut here.
    """
    if truncate:
        return ids[max(0, len(ids) - n_positions) :]
    if len(ids) + max_new_tokens <= n_positions:
        return ids
    raise ContextLengthError(
        f"prompt of {len(ids)} tokens + max_new_tokens {max_new_tokens} exceeds the model's context of "
        f"{n_positions}; shorten the prompt, lower max_new_tokens (--max-new-tokens), or pass truncate=True "
        "(--truncate) to slide the context window (older tokens are dropped)"
    )


def stop_token_ids(model: GPT, params: SamplingParams) -> frozenset[int]:
    """The token ids that end a sequence: params.stop_token_ids, else the model's eos (none with ignore_eos)."""
    if params.ignore_eos:
        return frozenset()
    if params.stop_token_ids is not None:
        return frozenset(params.stop_token_ids)
    eos = model.config.eos_token_id
    return frozenset() if eos is None else frozenset({eos})


def model_device_dtype(model: GPT) -> tuple[torch.device, torch.dtype]:
    """Where the model runs and the dtype of its activations (and KV cache): the position table's, which
    int8 models keep in float32."""
    weight = model.transformer.wpe.weight
    return weight.device, weight.dtype


# -- the model over the cache ----------------------------------------------------------------------


def prefill(model: GPT, cache: KVCache, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> Tensor:
    """Run prompts through the model into cache rows `rows`, each from slot 0; return their last logits (n, V).

    The distinct prompts go through as one right-padded batch into a scratch cache, copied into the rows
    after (n samples of one prompt are computed once): each row's queries see only its own earlier slots,
    and the padding's slots are overwritten as it decodes.
    """
    device, dtype = model_device_dtype(model)
    distinct = list(dict.fromkeys(tuple(p) for p in prompts))
    which = {prompt: i for i, prompt in enumerate(distinct)}
    source = torch.tensor([which[tuple(p)] for p in prompts], device=device)  # (n,) each row's distinct prompt
    lengths = torch.tensor([len(p) for p in distinct], device=device)
    u, T = len(distinct), int(lengths.max())
    ids = torch.zeros(u, T, dtype=torch.long, device=device)
    for i, prompt in enumerate(distinct):
        ids[i, : len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
    scratch = KVCache(model.config, u, T, dtype=dtype, device=device)
    out = model(ids, cache=scratch, cache_position=torch.arange(T, device=device), return_logits=False)
    cache.copy_rows(torch.tensor(list(rows), device=device), scratch, source)
    last = out.last_hidden_state[torch.arange(u, device=device), lengths - 1]  # (u, C)
    return model.lm_logits(last)[source]  # (n, V)


def decode_step(model: GPT, tokens: Tensor, slots: Tensor, cache: KVCache) -> Tensor:
    """One new token per row (B,), written at each row's own cache slot (B,); return the next logits (B, V)."""
    return model(tokens[:, None], cache=cache, cache_position=slots[:, None]).logits[:, -1]


def top_logprobs(logprobs: Tensor, n: int | None) -> dict[int, float] | None:
    if n is None:
        return None
    if n == 0:
        return {}
    values, ids = logprobs.topk(n)
    return dict(zip(ids.tolist(), values.tolist(), strict=True))


# -- scoring (echo) --------------------------------------------------------------------------------


@torch.inference_mode()
def score_tokens(
    model: GPT, ids: Sequence[int], *, top_n: int | None = None
) -> list[tuple[float, dict[int, float] | None]]:
    """Log-probability of each token given the ones before it (the first gets nan), plus top-n alternatives.

    This is what perplexity and the API's `echo` + `logprobs` are built on. The text must fit the context.
    """
    ids = list(ids)
    if len(ids) > model.config.n_positions:
        raise ContextLengthError(
            f"text of {len(ids)} tokens is longer than the context of {model.config.n_positions}; "
            "score it in windows (see perplexity with a stride)"
        )
    device, _ = model_device_dtype(model)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    logprobs = model(x).logits[0, :-1].float().log_softmax(dim=-1)  # (T-1, V)
    chosen = logprobs.gather(1, x[0, 1:, None])[:, 0].tolist()
    first: tuple[float, dict[int, float] | None] = (float("nan"), {} if top_n is not None else None)
    return [first] + [(chosen[t], top_logprobs(logprobs[t], top_n)) for t in range(len(ids) - 1)]
