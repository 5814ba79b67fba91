"""Beam search for one prompt, following transformers' `_beam_search` step for step (same scores, same ties).

It reuses gptkit.generation.decode's pieces (left padding, prefill, decode_step over the static KV cache, the
logit processors) and returns `Completion`s; `generate.stream()` calls it when num_beams > 1.
"""

from __future__ import annotations

from typing import Any

import torch

from gptkit.generation.decode import (
    Completion,
    TextStream,
    decode_step,
    model_device_dtype,
    prefill,
    score_tokens,
    stop_token_ids,
)
from gptkit.generation.sampling import RowParams, SamplingParams, process
from gptkit.models.gpt import GPT, KVCache

_LOW = -1.0e9  # transformers' stand-in for "impossible" beam scores


@torch.inference_mode()
def beam_search(
    model: GPT, prompt: list[int], params: SamplingParams, *, prompt_index: int = 0, tokenizer: Any = None
) -> list[Completion]:
    """Beam search for one prompt, following transformers' `_beam_search` (same scores, same ties)."""
    device, dtype = model_device_dtype(model)
    K, V, L = params.num_beams, model.config.vocab_size, params.max_new_tokens
    stop_ids = sorted(stop_token_ids(model, params))
    keep = max(2, 1 + len(stop_ids)) * K
    top_k_mask = torch.arange(keep, device=device) < K
    P = len(prompt)
    row_params = RowParams.of([params] * K, V, device)
    counts = torch.zeros(K, V, dtype=torch.int32, device=device)
    cache = KVCache(model.config, K, P + L, dtype=dtype, device=device)

    running = torch.zeros(K, L, dtype=torch.long, device=device)  # generated tokens per running beam
    running_scores = torch.full((K,), _LOW, device=device)
    running_scores[0] = 0.0
    finished = torch.zeros(K, L, dtype=torch.long, device=device)
    finished_scores = torch.full((K,), _LOW, device=device)
    finished_len = torch.zeros(K, dtype=torch.long, device=device)
    is_finished = torch.zeros(K, dtype=torch.bool, device=device)
    improvable = True
    stop_tensor = torch.tensor(stop_ids, dtype=torch.long, device=device)

    logits = prefill(model, cache, range(K), [prompt] * K)
    for cur in range(L):
        log_probs = logits.float().log_softmax(dim=-1)
        seqs = [prompt + running[b, :cur].tolist() for b in range(K)]
        seen = torch.zeros(K, V, dtype=torch.bool, device=device)
        for b, seq in enumerate(seqs):
            seen[b, seq] = True
        log_probs = process(log_probs, row_params, seqs, seen, counts)
        scores = (log_probs + running_scores[:, None]).reshape(-1)  # (K*V,)
        top_scores, top_index = torch.topk(scores, keep)
        origin, tokens = top_index // V, top_index % V
        candidates = running[origin].clone()
        candidates[:, cur] = tokens
        hits = torch.isin(tokens, stop_tensor) | (cur + 1 == L)

        # the best K candidates that did not finish keep running
        alive_scores = top_scores + hits.float() * _LOW
        next_index = torch.topk(alive_scores, K).indices
        running, running_scores = candidates[next_index], alive_scores[next_index]
        beam_origin = origin[next_index]

        # finished candidates among the top K enter the finished set if they beat its members
        just_finished = hits & top_k_mask
        penalised = top_scores / ((cur + 1) ** params.length_penalty)
        if bool(is_finished.all()) and params.early_stopping is True:
            penalised = penalised + _LOW
        if not improvable:
            penalised = penalised + _LOW
        penalised = penalised + (~just_finished).float() * _LOW
        merged_scores = torch.cat([finished_scores, penalised])
        best = torch.topk(merged_scores, K).indices
        finished = torch.cat([finished, candidates])[best]
        finished_scores = merged_scores[best]
        finished_len = torch.cat([finished_len, torch.full((keep,), cur + 1, device=device)])[best]
        is_finished = torch.cat([is_finished, just_finished])[best]

        # transformers' early-stop heuristic, then its three stopping conditions
        hypothetical = L if params.early_stopping == "never" and params.length_penalty > 0 else cur + 1
        best_running = running_scores[0] / (hypothetical**params.length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(), torch.full_like(finished_scores, _LOW))
        improvable = improvable and bool((best_running > worst_finished).any())
        open_beam = not (bool(is_finished.all()) and params.early_stopping is True)
        if not (improvable and open_beam and not bool(hits.all())):
            break
        cache.reorder(beam_origin)
        logits = decode_step(model, running[:, cur], torch.full((K,), P + cur, device=device), cache)

    return [
        _beam_completion(
            model,
            prompt,
            finished[b, : finished_len[b]].tolist(),
            float(finished_scores[b]),
            params,
            prompt_index,
            b,
            tokenizer,
            stop_ids,
        )
        for b in range(params.num_return_sequences)
    ]


def _beam_completion(
    model: GPT,
    prompt: list[int],
    tokens: list[int],
    score: float,
    params: SamplingParams,
    prompt_index: int,
    sample: int,
    tokenizer: Any,
    stop_ids: list[int],
) -> Completion:
    ended_on_stop = bool(tokens) and tokens[-1] in stop_ids
    text_stream = TextStream(tokenizer, params.stop)
    text = "".join(text_stream.push(t) for t in (tokens[:-1] if ended_on_stop else tokens)) + text_stream.flush()
    scored = score_tokens(model, prompt + tokens, top_n=params.logprobs)[len(prompt) :]
    return Completion(
        index=prompt_index * params.num_return_sequences + sample,
        prompt_index=prompt_index,
        sample=sample,
        prompt_ids=prompt,
        token_ids=tokens,
        text=text,
        logprobs=[lp for lp, _ in scored],
        top_logprobs=[top for _, top in scored if top is not None],
        finish_reason="stop" if ended_on_stop or text_stream.stopped else "length",
        score=score,
    )
