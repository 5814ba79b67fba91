"""The HTTP API through the official `openai` SDK, in-process: answers equal gptkit's own generate / score_tokens /
embed (and transformers) on the same weights; every error reaches the SDK as its error class with our message."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import threading
from typing import Any

import pytest
import torch

from gptkit.generation.decode import score_tokens
from gptkit.generation.embeddings import embed, embed_ids
from gptkit.generation.generate import generate
from gptkit.generation.params import SamplingParams
from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT
from gptkit.server.app import create_app
from gptkit.server.engine import Engine
from gptkit.server.served import ServedModel
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, render_chat
from gptkit.text.tokenizer import Tokenizer
from server_helpers import KEY, openai, raw, run

pytest_plugins = ["server_fixtures"]

PROMPT = "The quick brown fox"


def ids_of(oracle: Any, text: str) -> list[int]:
    return oracle.tokenizer.encode(text, allowed_special="all")


def expected(oracle: Any, prompt: str | list[int], **params: Any) -> list[Any]:
    ids = prompt if isinstance(prompt, list) else ids_of(oracle, prompt)
    return generate(oracle.model, [ids], SamplingParams(**params), tokenizer=oracle.tokenizer)


# -- completions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_args, params",
    [
        (dict(temperature=0, max_tokens=12), dict(temperature=0, max_new_tokens=12)),
        (
            dict(temperature=0.9, top_p=0.9, seed=7, max_tokens=10, n=2),
            dict(temperature=0.9, top_p=0.9, seed=7, max_new_tokens=10, num_return_sequences=2),
        ),
        (
            dict(
                temperature=0.7,
                seed=11,
                max_tokens=9,
                presence_penalty=0.5,
                frequency_penalty=0.3,
                logit_bias={"11": 5},
                extra_body=dict(top_k=50, repetition_penalty=1.2, min_p=0.01),
            ),
            dict(
                temperature=0.7,
                seed=11,
                max_new_tokens=9,
                presence_penalty=0.5,
                frequency_penalty=0.3,
                logit_bias={11: 5.0},
                top_k=50,
                repetition_penalty=1.2,
                min_p=0.01,
            ),
        ),
    ],
    ids=["greedy", "seeded-n2", "penalties-bias-extras"],
)
def test_completions_equal_generate_on_the_same_weights(api, oracle, request_args, params) -> None:
    async def ask(client: Any) -> Any:
        return await client.completions.create(model="tiny", prompt=PROMPT, **request_args)

    response = run(api, ask)
    want = expected(oracle, PROMPT, **params)
    assert [c.text for c in response.choices] == [c.text for c in want]
    assert [c.finish_reason for c in response.choices] == [c.finish_reason for c in want]
    assert [c.index for c in response.choices] == list(range(len(want)))
    assert response.object == "text_completion" and response.model == "tiny" and response.id.startswith("cmpl-")
    assert response.usage.prompt_tokens == len(ids_of(oracle, PROMPT))
    assert response.usage.completion_tokens == sum(len(c.token_ids) for c in want)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_prompts_as_strings_ids_and_id_lists_with_stop_strings(api, oracle) -> None:
    first, second = ids_of(oracle, "Hello"), ids_of(oracle, "One two three")

    async def ask(client: Any) -> list[Any]:
        common = dict(model="tiny", max_tokens=8, temperature=0, n=2)
        return [
            await client.completions.create(prompt=["Hello", "One two three"], **common),
            await client.completions.create(prompt=[first, second], **common),
            await client.completions.create(prompt=second, **common),
        ]

    by_text, by_ids, single = run(api, ask)
    want = [c.text for ids in (first, second) for c in expected(oracle, ids, temperature=0, max_new_tokens=8) * 2]
    assert [c.text for c in by_text.choices] == want == [c.text for c in by_ids.choices]
    assert [c.text for c in single.choices] == want[2:]
    assert by_text.usage.prompt_tokens == len(first) + len(second)

    stop = want[0][3:6]  # a stop string inside the greedy text: the text ends before it, finish_reason stop

    async def stopped(client: Any) -> Any:
        return await client.completions.create(model="tiny", prompt="Hello", max_tokens=8, temperature=0, stop=[stop])

    answer = run(api, stopped).choices[0]
    assert answer.text == want[0][: want[0].index(stop)] and answer.finish_reason == "stop"


def test_echo_and_logprobs_equal_score_tokens_and_transformers(api, oracle, tiny_dir) -> None:
    import transformers

    async def ask(client: Any) -> Any:
        return await client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3, echo=True
        )

    choice = run(api, ask).choices[0]
    prompt = ids_of(oracle, PROMPT)
    generated = expected(oracle, PROMPT, temperature=0, max_new_tokens=5)[0].token_ids
    sequence = prompt + generated
    assert choice.text == PROMPT + oracle.tokenizer.decode(generated)
    lp = choice.logprobs
    assert lp.tokens == [oracle.tokenizer.decode([t]) for t in sequence]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the first token has no context
    ours = score_tokens(oracle.model, sequence, top_n=3)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_dir).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor([sequence])).logits[0, :-1].log_softmax(-1)
    for t in range(1, len(sequence)):
        assert lp.token_logprobs[t] == pytest.approx(ours[t][0], abs=1e-4)
        assert lp.token_logprobs[t] == pytest.approx(float(theirs[t - 1, sequence[t]]), abs=1e-4)
        top = {oracle.tokenizer.decode([i]): v for i, v in ours[t][1].items()}
        assert lp.top_logprobs[t] == pytest.approx(top | {lp.tokens[t]: lp.token_logprobs[t]}, abs=1e-4)
    assert lp.text_offset[: len(prompt)] == [len(oracle.tokenizer.decode(prompt[:i])) for i in range(len(prompt))]
    assert lp.text_offset[len(prompt)] == len(PROMPT)


def test_max_tokens_zero_with_echo_scores_the_prompt(api, oracle) -> None:
    async def ask(client: Any) -> Any:
        return await client.completions.create(model="tiny", prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)

    response = run(api, ask)
    choice, prompt = response.choices[0], ids_of(oracle, PROMPT)
    assert choice.text == PROMPT and choice.finish_reason == "length"
    expected_lp = [s for s, _ in score_tokens(oracle.model, prompt)[1:]]
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(expected_lp, abs=1e-4)
    assert response.usage.completion_tokens == 0 and response.usage.prompt_tokens == len(prompt)


def test_best_of_returns_the_n_choices_with_the_highest_total_logprob(api, oracle) -> None:
    async def ask(client: Any) -> Any:
        return await client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=6, temperature=1.0, seed=5, n=2, best_of=4
        )

    response = run(api, ask)
    candidates = expected(oracle, PROMPT, max_new_tokens=6, seed=5, num_return_sequences=4, logprobs=0)
    best = sorted(candidates, key=lambda c: -sum(c.logprobs))[:2]
    assert [c.text for c in response.choices] == [c.text for c in best]
    assert response.choices[0].logprobs is None  # not asked for
    assert response.usage.completion_tokens == sum(len(c.token_ids) for c in candidates)


# -- chat -------------------------------------------------------------------------------------------


def test_chat_renders_the_template_and_equals_generate(api, oracle) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]

    async def ask(client: Any) -> Any:
        return await client.chat.completions.create(
            model="tiny", messages=messages, max_completion_tokens=7, temperature=0, logprobs=True, top_logprobs=2
        )

    response = run(api, ask)
    prompt = render_chat(messages, DEFAULT_CHAT_TEMPLATE, add_generation_prompt=True)
    want = expected(oracle, prompt, temperature=0, max_new_tokens=7, logprobs=2)[0]
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == want.text
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    content = choice.logprobs.content
    assert [c.token for c in content] == [oracle.tokenizer.decode([t]) for t in want.token_ids]
    assert [c.logprob for c in content] == pytest.approx(want.logprobs, abs=1e-4)
    assert [c.bytes for c in content] == [list(oracle.tokenizer.decode_bytes([t])) for t in want.token_ids]
    assert all(len(c.top_logprobs) == 2 for c in content)
    assert response.usage.prompt_tokens == len(ids_of(oracle, prompt))


def test_chat_needs_a_template_and_text(tiny) -> None:
    bare = create_app({"bare": tiny.engine})  # a bare Engine: no chat template

    async def ask(client: Any) -> Any:
        return await client.chat.completions.create(model="bare", messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(openai.BadRequestError, match="no chat template.*--chat-template") as caught:
        run(bare, ask, key=None)
    assert caught.value.param == "messages"


# -- embeddings -------------------------------------------------------------------------------------


def test_embeddings_equal_embed_as_floats_and_base64(api, oracle) -> None:
    texts = ["a short one", "and a somewhat longer sentence to embed"]

    async def ask(client: Any) -> list[Any]:
        return [
            await client.embeddings.create(model="tiny", input=texts),  # the SDK asks for base64 and decodes it
            await client.embeddings.create(model="tiny", input=texts, encoding_format="float"),
            await client.embeddings.create(model="tiny", input=texts, encoding_format="base64"),
            await client.embeddings.create(model="tiny", input=[[50256, 11, 12], [7]]),
            await client.embeddings.create(model="tiny", input=texts[0], dimensions=64),
        ]

    decoded, floats, encoded, from_ids, single = run(api, ask)
    want = embed(oracle.model, texts, tokenizer=oracle.tokenizer)
    for response in (decoded, floats):
        assert torch.tensor([d.embedding for d in response.data]) == pytest.approx(want, abs=1e-5)
    for d, vector in zip(encoded.data, floats.data, strict=True):
        raw_bytes = base64.b64decode(d.embedding)
        assert list(struct.unpack(f"<{len(raw_bytes) // 4}f", raw_bytes)) == vector.embedding
    assert torch.tensor([d.embedding for d in from_ids.data]) == pytest.approx(
        embed_ids(oracle.model, [[50256, 11, 12], [7]], pad_id=50256), abs=1e-5
    )
    tokens = sum(len(oracle.tokenizer.encode(t)) for t in texts)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    assert [d.index for d in floats.data] == [0, 1] and floats.model == "tiny"
    assert len(single.data) == 1 and len(single.data[0].embedding) == 64


# -- models, health, metrics ------------------------------------------------------------------------


def test_models_health_and_metrics(api) -> None:
    async def ask(client: Any) -> list[Any]:
        await client.completions.create(model="tiny", prompt="Hi", max_tokens=3, temperature=0)
        return [
            await client.models.list(),
            await client.models.retrieve("tiny"),
            await raw(api, "GET", "/health"),
            await raw(api, "GET", "/metrics"),
        ]

    listed, card, health, metrics = run(api, ask)
    assert [m.id for m in listed.data] == ["tiny"] and listed.object == "list"
    assert card.id == "tiny" and card.object == "model" and card.owned_by == "gptkit" and card.created > 0
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'gptkit_requests_total{model="tiny"} 1.0' in text
    assert 'gptkit_prompt_tokens_total{model="tiny"} 1.0' in text
    assert 'gptkit_generation_tokens_total{model="tiny"} 3.0' in text
    for name in ("queue_depth", "batch_occupancy", "time_to_first_token_seconds_count", "inter_token_latency"):
        assert f"gptkit_{name}" in text


# -- errors -----------------------------------------------------------------------------------------

TOO_LONG = "word" + " word" * 119  # 120 tokens + max_tokens 16 > the context of 128


@pytest.mark.parametrize(
    "args, param, message",
    [
        (dict(suffix="x"), "suffix", "suffix"),
        (dict(logprobs=6), "logprobs", "less than or equal to 5"),
        (dict(logit_bias={"a": 1}), "logit_bias", "token ids written as strings"),
        (dict(logit_bias={"50257": 1}), "logit_bias", r"outside the vocabulary \[0, 50257\)"),
        (dict(logit_bias={"5": 101}), "logit_bias", r"in \[-100, 100\]"),
        (dict(prompt=""), "prompt", "prompt is empty"),
        (dict(prompt=[]), "prompt", "prompt is empty"),
        (dict(prompt=[50257]), "prompt", r"token id 50257 is outside the tokenizer's vocabulary \[0, 50257\)"),
        (dict(prompt=TOO_LONG), "prompt", "maximum context length is 128 tokens, but 136"),
        (dict(stream_options={"include_usage": True}), "stream_options", "only allowed with stream"),
        (dict(n=2, best_of=1), "best_of", "must be >= n"),
        (dict(best_of=9), "best_of", "exceeds this server's --max-batch-size 8"),
        (dict(max_tokens=0), "max_tokens", "only with echo"),
        (dict(temperature=3), "temperature", "less than or equal to 2"),
        (dict(stop=["a", "b", "c", "d", "e"]), "stop", None),
    ],
)
def test_bad_completion_requests_are_400s_naming_the_field(api, args, param, message) -> None:
    async def ask(client: Any) -> Any:
        return await client.completions.create(**({"model": "tiny", "prompt": "Hi", "max_tokens": 16} | args))

    with pytest.raises(openai.BadRequestError, match=message) as caught:
        run(api, ask)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    if "context" in (message or ""):
        assert caught.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    "args, param",
    [
        (dict(response_format={"type": "json_object"}), "response_format"),
        (dict(top_logprobs=21, logprobs=True), "top_logprobs"),
        (dict(top_logprobs=2), "top_logprobs"),
        (dict(messages=[]), "messages"),
        (dict(messages=[{"role": "robot", "content": "hi"}]), "messages"),
        (
            dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "messages[0].content[0]",
        ),
        (dict(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    ],
)
def test_bad_chat_requests_are_400s_naming_the_field(api, args, param) -> None:
    async def ask(client: Any) -> Any:
        base = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        return await client.chat.completions.create(**(base | args))

    with pytest.raises(openai.BadRequestError) as caught:
        run(api, ask)
    assert caught.value.param == param and param.split(".")[0].split("[")[0] in caught.value.message


def test_keys_models_routes_and_body_size(api, tiny) -> None:
    async def completion(client: Any, model: str = "tiny") -> Any:
        return await client.completions.create(model=model, prompt="Hi", max_tokens=2)

    with pytest.raises(openai.AuthenticationError, match="incorrect API key"):
        run(api, completion, key="sk-wrong")
    missing = asyncio.run(raw(api, "POST", "/v1/completions", json={"model": "tiny", "prompt": "Hi"}))
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="model 'nope' does not exist") as caught:
        run(api, lambda client: completion(client, "nope"))
    assert caught.value.code == "model_not_found"
    route = asyncio.run(raw(api, "GET", "/v1/nope", headers={"authorization": f"Bearer {KEY}"}))
    assert route.status_code == 404 and set(route.json()["error"]) == {"message", "type", "param", "code"}
    assert asyncio.run(raw(api, "GET", "/health")).status_code == 200  # no key needed outside /v1

    small = create_app({"tiny": tiny}, max_body_bytes=1000)
    with pytest.raises(openai.APIStatusError, match="over this server's limit of 1000 bytes") as too_large:
        run(small, lambda client: client.completions.create(model="tiny", prompt="x" * 2000, max_tokens=1))
    assert too_large.value.status_code == 413

    async def chunks() -> Any:
        for _ in range(3):
            yield b'{"model": "tiny", "prompt": "' + b"x" * 600

    chunked = asyncio.run(raw(small, "POST", "/v1/completions", content=chunks()))
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"


def test_a_full_queue_is_429_and_a_closed_engine_503(oracle) -> None:
    engine = Engine(oracle.model, oracle.tokenizer, max_batch_size=2, max_queue=1).start()
    app = create_app({"held": engine})
    hold = threading.Event()
    engine.call(hold.wait)  # the engine's thread waits: whatever is submitted stays queued

    async def scenario(client: Any) -> Any:
        first = asyncio.ensure_future(client.completions.create(model="held", prompt="Hi", max_tokens=2))
        while engine.waiting < 1:
            await asyncio.sleep(0.01)
        with pytest.raises(openai.RateLimitError, match="the server is busy") as caught:
            await client.completions.create(model="held", prompt="Hi", max_tokens=2)
        hold.set()
        return caught.value, await first

    try:
        refused, served = run(app, scenario, key=None)
    finally:
        hold.set()
    assert refused.status_code == 429 and refused.code == "rate_limit_exceeded"
    assert refused.response.headers["retry-after"] == "1" and refused.response.headers["x-should-retry"] == "true"
    assert len(served.choices) == 1

    engine.close()
    with pytest.raises(openai.InternalServerError, match="shutting down") as closed:
        run(app, lambda client: client.completions.create(model="held", prompt="Hi", max_tokens=2), key=None)
    assert closed.value.status_code == 503
    health = asyncio.run(raw(app, "GET", "/health"))
    assert health.status_code == 503 and health.json()["engines_stopped"] == ["held"]


def test_logprob_values_are_finite_json(api) -> None:
    async def ask(client: Any) -> Any:
        return await client.completions.create(model="tiny", prompt="Hi", max_tokens=3, logprobs=5, seed=1)

    lp = run(api, ask).choices[0].logprobs
    assert all(math.isfinite(v) for v in lp.token_logprobs)


@pytest.mark.parametrize(
    "args, param, message",
    [
        (dict(input=""), "input", "input is empty"),
        (dict(input=TOO_LONG + " word" * 10), "input", "maximum context length is 128 tokens, but 130"),
        (dict(input=[[50257]]), "input", "token id 50257, outside the vocabulary"),
        (dict(input="x", dimensions=32), "dimensions", "this model's width 64, got 32"),
        (dict(input="x", encoding_format="int8"), "encoding_format", "'float' or 'base64'"),
    ],
)
def test_bad_embedding_requests_are_400s_naming_the_field(api, args, param, message) -> None:
    with pytest.raises(openai.BadRequestError, match=message) as caught:
        run(api, lambda client: client.embeddings.create(model="tiny", **args))
    assert caught.value.param == param


def test_a_bug_is_a_500_with_a_request_id_in_the_log(api, monkeypatch, caplog) -> None:
    from gptkit.server import handlers

    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(handlers, "completion", broken)
    with pytest.raises(openai.InternalServerError, match=r"internal server error \(request id (\w+)\)") as caught:
        run(api, lambda client: client.completions.create(model="tiny", prompt="Hi"))
    request_id = caught.value.response.headers["x-request-id"]
    assert caught.value.status_code == 500 and request_id in caught.value.message
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_cors_is_off_unless_an_origin_is_given(tiny) -> None:
    preflight = {"origin": "http://localhost:3000", "access-control-request-method": "POST"}
    closed = asyncio.run(raw(create_app({"tiny": tiny}), "OPTIONS", "/v1/completions", headers=preflight))
    opened = create_app({"tiny": tiny}, api_keys=[KEY], cors_origins=["http://localhost:3000"])
    allowed = asyncio.run(raw(opened, "OPTIONS", "/v1/completions", headers=preflight))
    assert "access-control-allow-origin" not in closed.headers
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_ids_a_padded_vocabulary_has_but_the_tokenizer_lacks_are_refused(oracle) -> None:
    """nanoGPT pads GPT-2's 50257 embeddings to 50304; ids past the tokenizer have no text, so none may be asked for
    (a generated one would stop the engine's loop: see the report of issue 11)."""
    from gptkit.models.config import GPTConfig
    from gptkit.models.gpt import GPT

    padded = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=50304)).eval()
    engine = Engine(padded, oracle.tokenizer, max_batch_size=2).start()
    try:
        app = create_app({"padded": engine})
        for args, param in [(dict(logit_bias={"50300": 100}), "logit_bias"), (dict(prompt=[50300]), "prompt")]:
            request = {"model": "padded", "prompt": "Hi"} | args
            with pytest.raises(openai.BadRequestError, match="50300") as caught:
                run(app, lambda client, request=request: client.completions.create(**request), key=None)
            assert caught.value.param == param
        assert engine.healthy
    finally:
        engine.close(drain=False)


@pytest.mark.parametrize("kind", ["gpt2", "openai-gpt", "char"])
def test_tokenize_splits_as_the_models_tokenizer_and_counts_as_completions(kind) -> None:
    text = "Héllo, wörld! 😀 naïve <|endoftext|> end" if kind != "char" else "to be, or not to be"
    tokenizer = (
        Tokenizer.char_level("abcdefghijklmnopqrstuvwxyz ,.!", special_tokens=["<|endoftext|>"])
        if kind == "char"
        else Tokenizer.from_pretrained(kind)
    )
    torch.manual_seed(0)
    config = GPTConfig.from_name("gpt2-tiny", vocab_size=len(tokenizer), n_positions=64)
    served = ServedModel(Engine(GPT(config).eval(), tokenizer, max_batch_size=1))  # never started: no decoding
    body = run(
        create_app({"m": served}), lambda c: c.post("/tokenize", body={"model": "m", "prompt": text}, cast_to=object)
    )
    ids = tokenizer.encode(text, allowed_special="all")
    assert [t["id"] for t in body["tokens"]] == ids and body["count"] == len(ids) and body["max_model_len"] == 64
    if kind != "openai-gpt":  # GPT-1's decoder puts the spaces between words, which no single token holds
        assert b"".join(bytes(t["bytes"]) for t in body["tokens"]) == tokenizer.decode_bytes(ids)
    texts = [t["text"] for t in body["tokens"]]
    assert all(t == tokenizer.decode([i]) or t.startswith("bytes:") for t, i in zip(texts, ids, strict=True))
    with pytest.raises(openai.NotFoundError):
        run(
            create_app({"m": served}), lambda c: c.post("/tokenize", body={"model": "x", "prompt": "a"}, cast_to=object)
        )
