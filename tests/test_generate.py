"""Generation against transformers' generate (same weights => same tokens) and its own invariants."""

from __future__ import annotations

import pytest
import torch

from gptkit import GPT, ContextLengthError, GPTConfig, TokenIdError
from gptkit.generation.generate import generate, score_tokens, stream
from gptkit.generation.sampling import SamplingParams
from gptkit.models.gpt import load_model

from conftest import hf_model

transformers = pytest.importorskip("transformers")

SIZES = {
    "gpt2-a": ("gpt2", dict(n_embd=48, n_layer=5, n_head=3, vocab_size=1001, n_positions=128)),
    "gpt2-b": ("gpt2", dict(n_embd=96, n_layer=2, n_head=4, vocab_size=512, n_positions=96)),
    "gpt1-a": ("openai-gpt", dict(n_embd=48, n_layer=5, n_head=3, vocab_size=1001, n_positions=128)),
    "gpt1-b": ("openai-gpt", dict(n_embd=96, n_layer=2, n_head=4, vocab_size=512, n_positions=96)),
}
PROMPTS = [[5, 17, 99, 3], [42, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
GREEDY = SamplingParams(temperature=0, max_new_tokens=64, ignore_eos=True)


@pytest.fixture(scope="module", params=sorted(SIZES))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    family, dims = SIZES[request.param]
    reference = hf_model(family, dims)
    path = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(path)
    return reference, load_model(path)


def _hf_new_tokens(reference, prompt: list[int], **kwargs) -> list[list[int]]:
    out = reference.generate(
        torch.tensor([prompt]), max_new_tokens=64, min_new_tokens=0, pad_token_id=0, eos_token_id=None, **kwargs
    )
    return [row[len(prompt) :].tolist() for row in out]


@pytest.mark.parametrize(
    "theirs, ours",
    [
        (dict(do_sample=False), {}),
        (dict(do_sample=False, repetition_penalty=1.3), dict(repetition_penalty=1.3)),
        (dict(do_sample=False, no_repeat_ngram_size=2), dict(no_repeat_ngram_size=2)),
        (dict(do_sample=False, num_beams=4), dict(num_beams=4)),
        (
            dict(do_sample=False, num_beams=3, length_penalty=0.5, num_return_sequences=2, early_stopping=True),
            dict(num_beams=3, length_penalty=0.5, num_return_sequences=2, early_stopping=True),
        ),
    ],
    ids=["greedy", "repetition-penalty", "no-repeat-ngram", "beam-4", "beam-3-lp-0.5-n2"],
)
def test_tokens_equal_transformers_generate(pair, theirs: dict, ours: dict) -> None:
    reference, model = pair
    for prompt in PROMPTS:
        expected = _hf_new_tokens(reference, prompt, **theirs)
        got = [c.token_ids for c in generate(model, prompt, GREEDY.replace(**ours))]
        assert got == expected, f"prompt {prompt}"


def test_beam_search_with_eos_equals_transformers(pair) -> None:
    reference, model = pair
    prompt = PROMPTS[0]
    greedy = generate(model, prompt, GREEDY.replace(max_new_tokens=12))[0].token_ids
    eos = greedy[5]  # a token the model does produce, so beams really finish early
    out = reference.generate(
        torch.tensor([prompt]),
        max_new_tokens=20,
        do_sample=False,
        num_beams=4,
        num_return_sequences=4,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    expected = [row[len(prompt) :].tolist() for row in out]
    got = [
        c.token_ids
        for c in generate(
            model,
            prompt,
            SamplingParams(
                temperature=0, max_new_tokens=20, num_beams=4, num_return_sequences=4, stop_token_ids=(eos,)
            ),
        )
    ]
    assert [g + [eos] * (len(e) - len(g)) for g, e in zip(got, expected, strict=True)] == expected


def test_top_k_one_sampling_equals_greedy(pair) -> None:
    _, model = pair
    greedy = [c.token_ids for c in generate(model, PROMPTS, GREEDY)]
    sampled = [c.token_ids for c in generate(model, PROMPTS, GREEDY.replace(temperature=0.7, top_k=1, seed=5))]
    assert sampled == greedy


def _tiny_model(preset: str = "gpt2-tiny") -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name(preset, vocab_size=300, initializer_range=0.2)).eval()
    return model


@pytest.mark.parametrize("preset", ["gpt2-tiny", "openai-gpt-tiny"])
def test_cached_decode_equals_full_recomputation(preset: str) -> None:
    model = _tiny_model(preset)
    prompt = [3, 1, 4, 1, 5]
    got = generate(model, prompt, GREEDY.replace(max_new_tokens=30, logprobs=0))[0]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(30):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert got.token_ids == ids[len(prompt) :]
    scored = score_tokens(model, ids)
    assert got.logprobs == pytest.approx([lp for lp, _ in scored[len(prompt) :]], abs=1e-5)


def test_batched_equals_one_at_a_time_and_stream_equals_generate() -> None:
    model = _tiny_model()
    for params in (
        GREEDY.replace(max_new_tokens=24),
        SamplingParams(max_new_tokens=24, seed=11, top_p=0.9, ignore_eos=True, num_return_sequences=2),
    ):
        batched = generate(model, PROMPTS, params)
        alone = [c for p in PROMPTS for c in generate(model, p, params)]
        assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
        streamed: dict[int, list[int]] = {}
        for event in stream(model, PROMPTS, params):
            streamed.setdefault(event.index, []).append(event.token_id)
        assert [streamed[i] for i in sorted(streamed)] == [c.token_ids for c in batched]


def test_seeds_reproduce_and_differ() -> None:
    model = _tiny_model()
    params = SamplingParams(max_new_tokens=20, seed=1, ignore_eos=True)
    first = generate(model, PROMPTS[0], params)[0].token_ids
    assert generate(model, PROMPTS[0], params)[0].token_ids == first
    assert generate(model, PROMPTS[0], params.replace(seed=2))[0].token_ids != first
    two = generate(model, PROMPTS[0], params.replace(num_return_sequences=2))
    assert two[0].token_ids == first and two[1].token_ids != first


def test_rows_stop_independently_on_eos_and_logprobs_are_reported() -> None:
    model = _tiny_model()
    free = generate(model, PROMPTS, GREEDY.replace(max_new_tokens=10))
    eos = free[0].token_ids[3]
    params = GREEDY.replace(max_new_tokens=10, stop_token_ids=(eos,), ignore_eos=False, logprobs=3)
    out = generate(model, PROMPTS, params)
    for before, after in zip(free, out, strict=True):
        cut = before.token_ids.index(eos) + 1 if eos in before.token_ids else 10
        assert after.token_ids == before.token_ids[:cut]
        assert after.finish_reason == ("stop" if eos in before.token_ids else "length")
        assert all(
            len(top) == 3 and max(top, key=top.get) == t
            for top, t in zip(after.top_logprobs, after.token_ids, strict=True)
        )


def test_prompt_longer_than_context_errors_or_slides_the_window() -> None:
    model = _tiny_model()  # context 128
    long_prompt = list(range(1, 121))
    with pytest.raises(ContextLengthError, match="exceeds the model's context of 128"):
        generate(model, long_prompt, GREEDY.replace(max_new_tokens=16))
    slid = generate(model, long_prompt + [7] * 30, GREEDY.replace(max_new_tokens=40, truncate=True))[0]
    ids = long_prompt + [7] * 30  # the oracle: nanoGPT's loop, cropping to the last 128 tokens every step
    with torch.no_grad():
        for _ in range(40):
            ids.append(int(model(torch.tensor([ids[-128:]])).logits[0, -1].argmax()))
    assert slid.token_ids == ids[150:]
    batched = generate(model, [[5, 6, 7], long_prompt], GREEDY.replace(max_new_tokens=40, truncate=True))
    assert (
        batched[1].token_ids
        == generate(model, long_prompt, GREEDY.replace(max_new_tokens=40, truncate=True))[0].token_ids
    )


@pytest.mark.parametrize("params", [GREEDY, GREEDY.replace(num_beams=2)], ids=["sampling", "beam"])
def test_prompt_ids_outside_the_vocabulary_are_named(params: SamplingParams) -> None:
    model = _tiny_model()
    vocab = model.config.vocab_size
    with pytest.raises(TokenIdError, match=f"token id {vocab + 3} is out of range .* vocabulary of {vocab} tokens"):
        generate(model, [[5, 6], [1, vocab + 3, 2]], params.replace(max_new_tokens=2))


def test_beam_logprobs_equal_score_tokens(pair) -> None:
    _, model = pair
    params = GREEDY.replace(max_new_tokens=12, num_beams=3, num_return_sequences=2, logprobs=3)
    for completion in generate(model, PROMPTS[0], params):
        scored = score_tokens(model, PROMPTS[0] + completion.token_ids, top_n=3)[len(PROMPTS[0]) :]
        assert completion.logprobs == pytest.approx([lp for lp, _ in scored], abs=1e-5)
        for got, (_, expected) in zip(completion.top_logprobs, scored, strict=True):
            assert list(got) == list(expected) and list(got.values()) == pytest.approx(
                list(expected.values()), abs=1e-5
            )


class _OpenAIPenalties:
    """The oracle's presence/frequency penalties, as a transformers logits processor over generated tokens."""

    def __init__(self, prompt_len: int, presence: float, frequency: float) -> None:
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros_like(scores).scatter_add_(
            1, input_ids[:, self.prompt_len :], torch.ones_like(input_ids[:, self.prompt_len :], dtype=scores.dtype)
        )
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


def test_beam_search_with_presence_and_frequency_penalties_equals_transformers(pair) -> None:
    reference, model = pair
    from transformers import LogitsProcessorList

    for prompt in PROMPTS[:2]:
        penalties = LogitsProcessorList([_OpenAIPenalties(len(prompt), 0.8, 0.6)])
        expected = _hf_new_tokens(reference, prompt, do_sample=False, num_beams=3, logits_processor=penalties)
        params = GREEDY.replace(num_beams=3, presence_penalty=0.8, frequency_penalty=0.6)
        assert [c.token_ids for c in generate(model, prompt, params)] == expected


def test_beam_search_stop_string_acts_like_the_stop_token_that_spells_it(tok) -> None:
    model = _tiny_model()
    # length_penalty 0 scores beams by their summed log-probability: beams that stop early tend to win
    params = GREEDY.replace(max_new_tokens=16, num_beams=3, num_return_sequences=3, length_penalty=0.0)
    free = generate(model, PROMPTS[0], params, tokenizer=tok)
    merges = "".join(tok.decode([i]) for i in range(256, 300))  # the tiny vocabulary's multi-byte tokens
    spelled = {t for c in free for t in c.token_ids if t < 256 and tok.decode_bytes([t])[0] < 128}  # one ASCII byte
    tried = 0
    for token in sorted(t for t in spelled if tok.decode([t]) not in merges):  # its character comes only from it
        by_id = generate(model, PROMPTS[0], params.replace(stop_token_ids=(token,), ignore_eos=False), tokenizer=tok)
        if not any(c.finish_reason == "stop" for c in by_id):
            continue  # the beams that stop on it lose to others: the stop string is not put to work
        by_string = generate(model, PROMPTS[0], params.replace(stop=(tok.decode([token]),)), tokenizer=tok)
        assert [(c.token_ids, c.text, c.finish_reason) for c in by_string] == [
            (c.token_ids, c.text, c.finish_reason) for c in by_id
        ]
        assert all(tok.decode([token]) not in c.text for c in by_string)
        tried += 1
    assert tried >= 1


def test_beam_search_slides_the_window_with_truncate() -> None:
    model = _tiny_model()  # context 128
    prompt = list(range(1, 121))
    out = generate(model, prompt, GREEDY.replace(max_new_tokens=20, num_beams=2, truncate=True, logprobs=0))[0]
    ids = prompt + out.token_ids  # the oracle: each token scored on the last 128 tokens before it
    with torch.no_grad():
        expected = [
            float(model(torch.tensor([ids[:i][-128:]])).logits[0, -1].log_softmax(-1)[ids[i]])
            for i in range(len(prompt), len(ids))
        ]
    assert len(out.token_ids) == 20 and out.logprobs == pytest.approx(expected, abs=1e-4)
