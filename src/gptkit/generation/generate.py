"""Generation: prefill + decode over a static KV cache, as a generator of tokens.

`stream()` yields one `TokenEvent` per new token per sequence; `generate()` collects it into
`Completion`s. Both drive a `DecodeState` (gptkit.generation.state): prompts of different lengths share
a batch, each row at its own cache position seeing exactly what it would see alone; a seeded row has
its own random generator, and every row stops on its own. Beam search (gptkit.generation.beam) runs
when num_beams > 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from gptkit.generation.beam import beam_search
from gptkit.generation.decode import (
    Completion,
    Prompt,
    TextStream,
    TokenEvent,
    encode_prompts,
    fit_to_context,
    score_tokens,
)
from gptkit.generation.sampling import SamplingParams
from gptkit.generation.state import DecodeState, Request, run
from gptkit.models.gpt import GPT

__all__ = ["Completion", "TextStream", "TokenEvent", "generate", "score_tokens", "stream"]


# -- sampling and greedy decoding ------------------------------------------------------------------


@torch.inference_mode()
def stream(
    model: GPT,
    prompts: Prompt | Sequence[Prompt],
    params: SamplingParams | None = None,
    *,
    tokenizer: Any = None,
    allow_special: bool = False,
) -> Iterator[TokenEvent]:
    """Yield new tokens as they are produced, for one prompt or a batch (text needs a tokenizer).

    Sequences are numbered prompt-major: prompt p's sample s is index p * num_return_sequences + s.
    Beam search yields each finished beam's tokens at the end.
    """
    params = params or SamplingParams()
    encoded = [
        fit_to_context(ids, params.max_new_tokens, model.config.n_positions, params.truncate)
        for ids in encode_prompts(prompts, tokenizer, allow_special=allow_special)
    ]
    if params.num_beams > 1:
        for p, ids in enumerate(encoded):
            for completion in beam_search(model, ids, params, prompt_index=p, tokenizer=tokenizer):
                yield from _events_of(completion)
        return
    n = params.num_return_sequences
    requests = [Request(ids, params, p * n + k, p, k) for p, ids in enumerate(encoded) for k in range(n)]
    max_len = min(max(len(ids) for ids in encoded) + params.max_new_tokens, model.config.n_positions)
    yield from run(DecodeState(model, len(requests), max_len, tokenizer=tokenizer), requests)


def generate(
    model: GPT,
    prompts: Prompt | Sequence[Prompt],
    params: SamplingParams | None = None,
    *,
    tokenizer: Any = None,
    allow_special: bool = False,
) -> list[Completion]:
    """`stream()` collected: one Completion per prompt and sample, in prompt-major order."""
    params = params or SamplingParams()
    encoded = encode_prompts(prompts, tokenizer, allow_special=allow_special)
    completions: dict[int, Completion] = {}
    for event in stream(model, encoded, params, tokenizer=tokenizer):
        c = completions.setdefault(
            event.index, Completion(event.index, event.prompt_index, event.sample, encoded[event.prompt_index])
        )
        c.token_ids.append(event.token_id)
        c.text += event.text
        c.logprobs.append(event.logprob)
        if event.top_logprobs is not None:
            c.top_logprobs.append(event.top_logprobs)
        if event.finish_reason is not None:
            c.finish_reason = event.finish_reason
    return [completions[i] for i in sorted(completions)]


def _events_of(completion: Completion) -> Iterator[TokenEvent]:
    last = len(completion.token_ids) - 1
    for k, token in enumerate(completion.token_ids):
        yield TokenEvent(
            index=completion.index,
            prompt_index=completion.prompt_index,
            sample=completion.sample,
            token_id=token,
            text=completion.text if k == last else "",
            logprob=completion.logprobs[k],
            top_logprobs=completion.top_logprobs[k] if completion.top_logprobs else None,
            finish_reason=completion.finish_reason if k == last else None,
        )
