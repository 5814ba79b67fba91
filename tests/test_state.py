"""The decode state: rows with different params, rows joining and leaving, each row as it is alone."""

from __future__ import annotations

import pytest
import torch

from gptkit import GPT, ContextLengthError, GPTConfig
from gptkit.generation.decode import TokenEvent
from gptkit.generation.sampling import RowParams, SamplingParams, apply_top_p, choose
from gptkit.generation.state import DecodeState, Request, run

BASE = SamplingParams(max_new_tokens=16, ignore_eos=True, logprobs=2)


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=300, initializer_range=0.2)).eval()


def _by_index(events: list[TokenEvent]) -> dict[int, list[TokenEvent]]:
    out: dict[int, list[TokenEvent]] = {}
    for event in events:
        out.setdefault(event.index, []).append(event)
    return out


def _alone(model: GPT, request: Request, tokenizer) -> list[TokenEvent]:
    max_len = len(request.prompt_ids) + request.params.max_new_tokens
    return list(run(DecodeState(model, 1, max_len, tokenizer=tokenizer), [request]))


def _assert_same(got: list[TokenEvent], expected: list[TokenEvent]) -> None:
    assert [e.token_id for e in got] == [e.token_id for e in expected]
    assert [(e.text, e.finish_reason) for e in got] == [(e.text, e.finish_reason) for e in expected]
    assert [e.logprob for e in got] == pytest.approx([e.logprob for e in expected], abs=1e-5, nan_ok=True)


def _mixed_requests(model: GPT, tok) -> list[Request]:
    prompts = [[5, 17, 99, 3], [42, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [200, 201], [11, 12, 13], [64, 65, 66, 67]]
    free = _alone(model, Request(prompts[5], BASE.replace(temperature=0)), tok)
    stop = "".join(e.text for e in free)[4:6]  # a stop string the greedy row really produces
    params = [
        BASE.replace(temperature=0),
        BASE.replace(temperature=0.7, top_p=0.8, seed=3),
        BASE.replace(temperature=1.3, top_k=20, min_p=0.05, seed=4, repetition_penalty=1.5),
        BASE.replace(seed=5, presence_penalty=1.5, frequency_penalty=-0.5, logit_bias={7: 5.0, 8: -3.0}),
        BASE.replace(temperature=0, no_repeat_ngram_size=2, max_new_tokens=9, logprobs=None),
        BASE.replace(temperature=0, stop=(stop,)),
    ]
    assert stop
    return [Request(p, q, index=i, prompt_index=i) for i, (p, q) in enumerate(zip(prompts, params, strict=True))]


def test_rows_with_different_params_in_one_batch_equal_each_row_alone(tok) -> None:
    model = _model()
    requests = _mixed_requests(model, tok)
    batched = _by_index(list(run(DecodeState(model, len(requests), 32, tokenizer=tok), requests)))
    for request in requests:
        _assert_same(batched[request.index], _alone(model, request, tok))
    assert batched[5][-1].finish_reason == "stop" and len(batched[4]) == 9


def test_rows_join_and_leave_while_others_decode(tok) -> None:
    model = _model()
    requests = _mixed_requests(model, tok)
    waiting = list(requests)
    state = DecodeState(model, 2, 32, tokenizer=tok)  # six sequences through two rows
    events: list[TokenEvent] = []
    while waiting or state.running:
        take = min(len(state.free_rows), len(waiting), 1)  # at most one new prompt per step: rows at odd offsets
        state.add(waiting[:take])
        waiting = waiting[take:]
        events += state.step()
    got = _by_index(events)
    for request in requests:
        _assert_same(got[request.index], _alone(model, request, tok))


def test_unseeded_rows_draw_together_and_seeded_rows_from_their_own_generator() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 2
    params = RowParams.of([SamplingParams(top_p=0.9, seed=1), SamplingParams(temperature=0.8)] * 2, 50)
    own = [torch.Generator().manual_seed(7), None, torch.Generator().manual_seed(8), None]
    shared = torch.Generator().manual_seed(9)
    got = choose(logits, params, own, shared)
    probs = [(logits[b] / params.temperature[b].float()).softmax(-1) for b in range(4)]
    probs[0] = apply_top_p(logits[:1], 0.9).softmax(-1)[0]
    probs[2] = apply_top_p(logits[2:3], 0.9).softmax(-1)[0]
    together = torch.multinomial(torch.stack([probs[1], probs[3]]), 1, generator=torch.Generator().manual_seed(9))
    assert got[[1, 3]].tolist() == together[:, 0].tolist()
    for b, seed in ((0, 7), (2, 8)):
        assert int(got[b]) == int(torch.multinomial(probs[b], 1, generator=torch.Generator().manual_seed(seed)))


def test_a_request_that_does_not_fit_is_refused_naming_the_parameter() -> None:
    model = _model()
    state = DecodeState(model, 1, 16)
    with pytest.raises(ContextLengthError, match="max_new_tokens"):
        state.add([Request([1] * 10, SamplingParams(max_new_tokens=8))])
    with pytest.raises(ValueError, match="prompt_ids"):
        state.add([Request([], SamplingParams(max_new_tokens=2))])
    with pytest.raises(ValueError, match="requests"):
        state.add([Request([1], SamplingParams(max_new_tokens=2))] * 2)


def test_a_model_padded_past_its_tokenizer_never_generates_an_id_without_text() -> None:
    from gptkit.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.char_level("abcdefgh ")
    model = _model()  # 300 ids, as nanoGPT pads GPT-2's 50257 to 50304
    assert len(tokenizer) < model.config.vocab_size
    requests = [Request([1, 2, 3], BASE.replace(temperature=2.0, seed=s), index=s) for s in range(4)]
    events = list(run(DecodeState(model, 4, 32, tokenizer=tokenizer), requests))
    assert len(events) == 4 * BASE.max_new_tokens
    assert all(e.token_id < len(tokenizer) for e in events)
    # without a tokenizer every id is fair game, as in transformers
    free = list(run(DecodeState(model, 4, 32), requests))
    assert any(e.token_id >= len(tokenizer) for e in free)
