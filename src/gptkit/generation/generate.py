"""Generation: prefill + decode over a static KV cache, as a generator of tokens.

`stream()` yields one `TokenEvent` per new token per sequence; `generate()` collects it into
`Completion`s. Prompts of different lengths share a batch through left padding (attention mask and
position ids set so each row sees exactly what it would see alone); each row has its own random
generator and stops on its own. Beam search (gptkit.generation.beam) runs when num_beams > 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from gptkit.generation.beam import beam_search
from gptkit.generation.decode import (
    Completion,
    FinishReason,
    Prompt,
    TextStream,
    TokenEvent,
    _generator,
    _model_device_dtype,
    _process,
    _stop_ids,
    _top,
    decode_step,
    encode_prompts,
    fit_to_context,
    left_pad,
    prefill,
    score_tokens,
)
from gptkit.generation.sampling import SamplingParams, choose
from gptkit.models.gpt import GPT, KVCache

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
    yield from _sample(model, encoded, params, tokenizer)


def _sample(model: GPT, encoded: list[list[int]], params: SamplingParams, tokenizer: Any) -> Iterator[TokenEvent]:
    device, dtype = _model_device_dtype(model)
    n = params.num_return_sequences
    rows = [ids for ids in encoded for _ in range(n)]
    B, V = len(rows), model.config.vocab_size
    batch = left_pad(rows, device)
    T = batch.ids.shape[1]
    window = model.config.n_positions
    cache = KVCache(model.config, B, min(T + params.max_new_tokens, window), dtype=dtype, device=device)
    generators = [_generator(params, i % n, device) for i in range(B)]
    streams = [TextStream(tokenizer, params.stop) for _ in range(B)]
    stop_ids = _stop_ids(model, params)
    seqs = [list(r) for r in rows]
    seen = counts = None
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(B, V, dtype=torch.bool, device=device)
        seen.scatter_(1, batch.ids, batch.mask.bool())
    if params.presence_penalty or params.frequency_penalty:
        counts = torch.zeros(B, V, dtype=torch.int32, device=device)
    done = [False] * B
    # One mask over every cache slot, fixed for the whole loop: slots not yet written are causally masked.
    mask = torch.cat([batch.mask, batch.mask.new_ones(B, params.max_new_tokens)], dim=1)
    positions = batch.positions[:, -1]
    logits = prefill(model, batch, cache)
    for step in range(params.max_new_tokens):
        logits = logits.float()
        tokens = choose(_process(logits, params, seqs, seen, counts), params, generators)
        logprobs = logits.log_softmax(dim=-1) if params.logprobs is not None else None
        chosen = tokens.tolist()
        for i, token in enumerate(chosen):
            if done[i]:
                continue
            seqs[i].append(token)
            hit_eos = token in stop_ids
            text = "" if hit_eos else streams[i].push(token)
            finish: FinishReason | None = "stop" if hit_eos or streams[i].stopped else None
            if finish is None and step == params.max_new_tokens - 1:
                finish = "length"
            if finish == "length" or (hit_eos and not streams[i].stopped):
                text += streams[i].flush()
            done[i] = finish is not None
            row_logprobs = logprobs[i] if logprobs is not None else None
            yield TokenEvent(
                index=i,
                prompt_index=i // n,
                sample=i % n,
                token_id=token,
                text=text,
                logprob=float(row_logprobs[token]) if row_logprobs is not None else float("nan"),
                top_logprobs=_top(row_logprobs, params.logprobs) if row_logprobs is not None else None,
                finish_reason=finish,
            )
        if all(done):
            return
        if seen is not None:
            seen[torch.arange(B, device=device), tokens] = True
        if counts is not None:
            counts[torch.arange(B, device=device), tokens] += 1
        if T + step < cache.max_len:  # the new token still has a cache slot
            positions = positions + 1
            slot = torch.tensor([T + step], device=device)
            logits = decode_step(model, tokens, mask[:, : cache.max_len], positions, slot, cache)
        else:  # the context is full: recompute over the last `window` tokens, as nanoGPT crops
            generated = torch.tensor([seq[len(row) :] for seq, row in zip(seqs, rows, strict=True)], device=device)
            sequence = torch.cat([batch.ids, generated], dim=1)[:, -window:]  # (B, window)
            logits = _window_logits(model, sequence, mask[:, : T + step + 1][:, -window:])


def _window_logits(model: GPT, ids: Tensor, mask: Tensor) -> Tensor:
    """Last-position logits (B, V) of a full forward pass over a window that may hold left padding."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(ids, attention_mask=mask, position_ids=positions, return_logits=False)
    return model.lm_logits(out.last_hidden_state[:, -1])


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
