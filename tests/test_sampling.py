"""Logit processors on hand-made logits, and against transformers' processors on random ones."""

from __future__ import annotations

import math

import pytest
import torch

from gptkit import ConfigError
from gptkit.generation.sampling import (
    RowParams,
    SamplingParams,
    apply_logit_bias,
    apply_min_p,
    apply_presence_frequency,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    banned_ngram_tokens,
    choose,
    process,
    warp,
)

NEG = float("-inf")


def _logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


def test_top_p_keeps_the_smallest_set_reaching_p_and_at_least_one_token() -> None:
    logits = _logits_of([0.5, 0.3, 0.15, 0.05])
    kept = lambda p: torch.isfinite(apply_top_p(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.8) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8 exactly
    assert kept(0.81) == [True, True, True, False]
    assert kept(0.01) == [True, False, False, False]
    assert kept(1.0) == [True, True, True, True]


def test_top_k_keeps_ties_with_the_kth_value() -> None:
    logits = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert torch.isfinite(apply_top_k(logits, 1))[0].tolist() == [False, True, True, False]
    assert torch.isfinite(apply_top_k(logits, 3))[0].tolist() == [True, True, True, False]
    assert torch.equal(apply_top_k(logits, 0), logits)


def test_min_p_drops_tokens_below_a_fraction_of_the_top_probability() -> None:
    logits = _logits_of([0.6, 0.3, 0.1])
    assert torch.isfinite(apply_min_p(logits, 0.2))[0].tolist() == [True, True, False]  # threshold 0.12
    assert torch.isfinite(apply_min_p(logits, 0.5))[0].tolist() == [True, True, False]  # threshold 0.30 keeps 0.3
    assert torch.isfinite(apply_min_p(logits, 0.51))[0].tolist() == [True, False, False]


def test_penalties_and_bias_follow_their_definitions() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, 3.0]]
    counts = torch.tensor([[0, 2, 1, 0]])
    # OpenAI: logit - count * frequency - (count > 0) * presence
    assert apply_presence_frequency(logits, counts, 0.5, 0.25).tolist() == [[2.0, -2.0, -0.25, 3.0]]
    assert apply_logit_bias(logits, {0: -100, 3: 1.5}).tolist() == [[-98.0, -1.0, 0.5, 4.5]]


def test_no_repeat_ngram_bans_completions_of_seen_ngrams() -> None:
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 3) == [3]
    assert sorted(banned_ngram_tokens([1, 2, 1, 3, 1], 2)) == [2, 3]
    assert banned_ngram_tokens([4, 4, 4], 1) == [4, 4, 4]
    assert banned_ngram_tokens([1], 3) == []


def test_processors_equal_transformers_on_random_logits() -> None:
    generation = pytest.importorskip("transformers.generation.logits_process")
    torch.manual_seed(0)
    scores = torch.randn(4, 300) * 3
    ids = torch.randint(0, 300, (4, 12))
    seen = torch.zeros(4, 300, dtype=torch.bool).scatter_(1, ids, True)
    pairs = [
        (apply_top_k(scores, 17), generation.TopKLogitsWarper(17)(ids, scores.clone())),
        (apply_top_p(scores, 0.7), generation.TopPLogitsWarper(0.7)(ids, scores.clone())),
        (apply_min_p(scores, 0.05), generation.MinPLogitsWarper(0.05)(ids, scores.clone())),
        (
            apply_repetition_penalty(scores, seen, 1.4),
            generation.RepetitionPenaltyLogitsProcessor(1.4)(ids, scores.clone()),
        ),
    ]
    for ours, theirs in pairs:
        assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))
        assert torch.allclose(ours[torch.isfinite(ours)], theirs[torch.isfinite(theirs)])


def test_temperature_zero_is_greedy_and_params_are_validated() -> None:
    logits = torch.tensor([[0.1, 3.0, 2.9]])
    assert choose(logits, SamplingParams(temperature=0), [None]).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    assert choose(logits, SamplingParams(temperature=1.0, top_k=1), [g]).tolist() == [1]
    for bad, field in [
        (dict(top_p=0.0), "top_p"),
        (dict(temperature=-1), "temperature"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(logit_bias={1: 500}), "logit_bias"),
        (dict(num_beams=2, temperature=1.0), "beam search"),
        (dict(stop=("",)), "stop"),
    ]:
        with pytest.raises(ConfigError, match=field):
            SamplingParams(**bad)


def test_a_vanishing_temperature_or_penalty_gives_the_argmax_instead_of_nan() -> None:
    logits = torch.tensor([[40.0, 41.0, -3.0, 39.5], [2.0, -7.0, 1.0, 0.0]])  # fp32 overflows at 41 / 1e-40
    for temperature in (1e-40, 1e-300, 5e-324):
        params = RowParams.of([SamplingParams(temperature=temperature)] * 2, 4, torch.device("cpu"))
        probs = warp(logits, params).softmax(dim=-1)
        assert torch.equal(probs, torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
        assert choose(logits, SamplingParams(temperature=temperature, seed=0), [None, None]).tolist() == [1, 0]
    seen = torch.tensor([[False, True, False, False], [True, True, True, True]])
    for penalty in (1e-40, 2.2e-311):  # positive logits of seen tokens grow by 1/penalty, finitely
        penalised = apply_repetition_penalty(logits, seen, torch.tensor([[penalty], [penalty]], dtype=torch.float64))
        assert torch.isfinite(penalised).all() and penalised.argmax(-1).tolist() == [1, 0]


def test_per_row_params_give_each_row_exactly_what_its_params_give_alone() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 300) * 3
    ids = torch.randint(0, 300, (5, 12))
    seen = torch.zeros(5, 300, dtype=torch.bool).scatter_(1, ids, True)
    counts = torch.randint(0, 3, (5, 300), dtype=torch.int32)
    rows = [
        SamplingParams(),
        SamplingParams(temperature=0.7, top_p=0.7, repetition_penalty=1.3),
        SamplingParams(temperature=1.3, top_k=17, min_p=0.05, presence_penalty=0.5, frequency_penalty=-0.3),
        SamplingParams(temperature=0, top_k=3, logit_bias={4: 2.5, 9: -100}, no_repeat_ngram_size=2),
        SamplingParams(top_p=0.33, top_k=299, min_p=0.2, repetition_penalty=0.8, frequency_penalty=1.0),
    ]
    params = RowParams.of(rows, 300)
    batched = process(logits, params, ids.tolist(), seen, counts)
    for b, row in enumerate(rows):  # the oracle: the scalar processors, checked against transformers above
        alone = apply_logit_bias(logits[b : b + 1], row.logit_bias)
        alone = apply_repetition_penalty(alone, seen[b : b + 1], row.repetition_penalty)
        alone = apply_presence_frequency(alone, counts[b : b + 1], row.presence_penalty, row.frequency_penalty)
        banned = banned_ngram_tokens(ids[b].tolist(), row.no_repeat_ngram_size)
        alone[0, banned] = NEG
        assert torch.equal(batched[b : b + 1], alone), f"process row {b}"
        assert torch.equal(warp(batched, params)[b : b + 1], warp(alone, row)), f"warp row {b}"
