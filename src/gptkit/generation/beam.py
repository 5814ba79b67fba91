"""Beam search for one prompt, following transformers' `_beam_search` step for step (same scores, same ties).

It reuses gptkit.generation.decode's and sampling's pieces (prefill into cache rows, decode_step at per-row
slots, the logit processors over per-row parameters, TextStream) and returns `Completion`s; `generate.stream()`
calls it when num_beams > 1 and yields the beams when the search ends (a finished beam can still be displaced
by a better one until then). Beyond transformers: presence/frequency penalties, stop strings (a beam whose
text completes one finishes, like one that emits a stop id) and truncate (the window slides as in sampling).
Log-probabilities come from the search's own forward passes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gptkit.generation.decode import (
    Completion,
    TextStream,
    decode_step,
    model_device_dtype,
    prefill,
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
    K, V, L, P = params.num_beams, model.config.vocab_size, params.max_new_tokens, len(prompt)
    stop_ids = sorted(stop_token_ids(model, params))
    keep = max(2, 1 + len(stop_ids)) * K
    top_k_mask = torch.arange(keep, device=device) < K
    row_params = RowParams.of([params] * K, V, device)
    cache = KVCache(model.config, K, min(P + L, model.config.n_positions), dtype=dtype, device=device)
    n_top = params.logprobs or 0

    # per beam: generated tokens, their log-probabilities and top alternatives; reordered together
    running = _beams(K, L, n_top, device)
    running_scores = torch.full((K,), _LOW, device=device)
    running_scores[0] = 0.0
    finished = _beams(K, L, n_top, device)
    finished_scores = torch.full((K,), _LOW, device=device)
    finished_len = torch.zeros(K, dtype=torch.long, device=device)
    is_finished = torch.zeros(K, dtype=torch.bool, device=device)
    improvable = True
    stop_tensor = torch.tensor(stop_ids, dtype=torch.long, device=device)

    logits = prefill(model, cache, range(K), [prompt] * K)
    for cur in range(L):
        raw = logits.float().log_softmax(dim=-1)  # (K, V)
        seqs = [prompt + running["tokens"][b, :cur].tolist() for b in range(K)]
        seen = torch.zeros(K, V, dtype=torch.bool, device=device)
        for b, seq in enumerate(seqs):
            seen[b, seq] = True
        counts = torch.zeros(K, V, dtype=torch.int32, device=device)
        counts.scatter_add_(
            1, running["tokens"][:, :cur], torch.ones_like(running["tokens"][:, :cur], dtype=torch.int32)
        )
        log_probs = process(raw, row_params, seqs, seen, counts)
        scores = (log_probs + running_scores[:, None]).reshape(-1)  # (K*V,)
        top_scores, top_index = torch.topk(scores, keep)
        origin, tokens = top_index // V, top_index % V
        candidates = {name: values[origin].clone() for name, values in running.items()}
        candidates["tokens"][:, cur] = tokens
        candidates["logprob"][:, cur] = raw[origin, tokens]
        alternatives = raw[origin].topk(n_top)  # (keep, n_top)
        candidates["top_values"][:, cur], candidates["top_ids"][:, cur] = alternatives.values, alternatives.indices
        hits = (
            torch.isin(tokens, stop_tensor)
            | (cur + 1 == L)
            | _stop_strings(candidates["tokens"][:, : cur + 1], params, tokenizer)
        )

        # the best K candidates that did not finish keep running
        alive_scores = top_scores + hits.float() * _LOW
        next_index = torch.topk(alive_scores, K).indices
        running = {name: values[next_index] for name, values in candidates.items()}
        running_scores = alive_scores[next_index]
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
        finished = {name: torch.cat([finished[name], candidates[name]])[best] for name in finished}
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
        if P + cur < cache.max_len:  # the new token still has a cache slot
            cache.reorder(beam_origin)
            logits = decode_step(model, running["tokens"][:, cur], torch.full((K,), P + cur, device=device), cache)
        else:  # the context is full (truncate): recompute each beam over its last n_positions tokens
            windows = [(prompt + running["tokens"][b, : cur + 1].tolist())[-cache.max_len :] for b in range(K)]
            logits = prefill(model, cache, range(K), windows)

    return [
        _beam_completion(
            prompt,
            {name: values[b, : finished_len[b]] for name, values in finished.items()},
            float(finished_scores[b]),
            params,
            prompt_index,
            b,
            tokenizer,
            stop_ids,
        )
        for b in range(params.num_return_sequences)
    ]


def _beams(K: int, L: int, n_top: int, device: torch.device) -> dict[str, Tensor]:
    return {
        "tokens": torch.zeros(K, L, dtype=torch.long, device=device),
        "logprob": torch.zeros(K, L, device=device),
        "top_values": torch.zeros(K, L, n_top, device=device),
        "top_ids": torch.zeros(K, L, n_top, dtype=torch.long, device=device),
    }


def _stop_strings(tokens: Tensor, params: SamplingParams, tokenizer: Any) -> Tensor:
    """(n,) whether each candidate's generated tokens (n, T) complete one of the stop strings."""
    if not params.stop or tokenizer is None:
        return torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    return torch.tensor([_text_of(row, params, tokenizer)[1] for row in tokens.tolist()], device=tokens.device)


def _text_of(tokens: list[int], params: SamplingParams, tokenizer: Any) -> tuple[str, bool]:
    """The text a TextStream shows for these tokens, and whether a stop string cut it."""
    text_stream = TextStream(tokenizer, params.stop)
    text = "".join(text_stream.push(t) for t in tokens)
    return text + text_stream.flush(), text_stream.stopped


def _beam_completion(
    prompt: list[int],
    beam: dict[str, Tensor],
    score: float,
    params: SamplingParams,
    prompt_index: int,
    sample: int,
    tokenizer: Any,
    stop_ids: list[int],
) -> Completion:
    tokens = beam["tokens"].tolist()
    ended_on_stop = bool(tokens) and tokens[-1] in stop_ids
    text, stopped = _text_of(tokens[:-1] if ended_on_stop else tokens, params, tokenizer)
    tops = [
        dict(zip(ids, values, strict=True))
        for ids, values in zip(beam["top_ids"].tolist(), beam["top_values"].tolist(), strict=True)
    ]
    return Completion(
        index=prompt_index * params.num_return_sequences + sample,
        prompt_index=prompt_index,
        sample=sample,
        prompt_ids=prompt,
        token_ids=tokens,
        text=text,
        logprobs=beam["logprob"].tolist(),
        top_logprobs=tops if params.logprobs is not None else [],
        finish_reason="stop" if ended_on_stop or stopped else "length",
        score=score,
    )
