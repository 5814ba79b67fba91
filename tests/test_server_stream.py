"""Streaming: OpenAI's SSE frames, a stream that concatenates to the non-streamed answer, many streams at once each
equal to its solo run, and clients that leave (their rows are freed and the server keeps serving)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from typing import Any

import pytest

from gptkit.server.app import create_app
from gptkit.server.engine import Engine
from server_helpers import KEY, drive, raw, rows_free, run, sse_frames

pytest_plugins = ["server_fixtures"]


def by_choice(chunks: list[Any]) -> dict[int, list[Any]]:
    choices: dict[int, list[Any]] = defaultdict(list)
    for chunk in chunks:
        for choice in chunk.choices:
            choices[choice.index].append(choice)
    return choices


def check_chunks(chunks: list[Any], answer: Any, include_usage: bool) -> dict[int, list[Any]]:
    """Invariants of every stream: one id, finish_reason once per choice and last, usage as asked."""
    assert len({c.id for c in chunks}) == 1 and chunks[0].created > 0
    if include_usage:
        *body, last = chunks
        assert all(c.usage is None for c in body) and last.choices == [] and last.usage == answer.usage
    choices = by_choice(chunks)
    assert sorted(choices) == [c.index for c in answer.choices]
    for pieces in choices.values():
        assert [p.finish_reason is not None for p in pieces] == [False] * (len(pieces) - 1) + [True]
    return choices


@pytest.mark.parametrize(
    "args",
    [
        dict(prompt="Once upon a time", max_tokens=10, temperature=0),
        dict(prompt="Once upon a time", max_tokens=8, seed=3, n=3, logprobs=2),
        dict(prompt=["First prompt", "A second, longer prompt"], max_tokens=6, seed=1, n=2, echo=True, logprobs=1),
        dict(prompt="Once upon a time", max_tokens=12, temperature=0, stop=[" the", "."]),
    ],
    ids=["greedy", "seeded-n3-logprobs", "two-prompts-echo", "stop"],
)
def test_a_completion_stream_concatenates_to_the_answer(api, args) -> None:
    async def ask(client: Any) -> tuple[Any, list[Any]]:
        answer = await client.completions.create(model="tiny", **args)
        stream = await client.completions.create(
            model="tiny", stream=True, stream_options={"include_usage": True}, **args
        )
        return answer, [chunk async for chunk in stream]

    answer, chunks = run(api, ask)
    assert all(c.object == "text_completion" for c in chunks)
    choices = check_chunks(chunks, answer, include_usage=True)
    for choice in answer.choices:
        pieces = choices[choice.index]
        assert "".join(p.text for p in pieces) == choice.text
        assert pieces[-1].finish_reason == choice.finish_reason
        if choice.logprobs is not None:
            for field in ("tokens", "token_logprobs", "text_offset", "top_logprobs"):
                assert sum((getattr(p.logprobs, field) for p in pieces), []) == getattr(choice.logprobs, field)


def test_a_chat_stream_opens_each_choice_with_the_role(api) -> None:
    args = dict(messages=[{"role": "user", "content": "Say something."}], max_tokens=6, seed=2, n=2)

    async def ask(client: Any) -> tuple[Any, list[Any]]:
        answer = await client.chat.completions.create(model="tiny", logprobs=True, top_logprobs=1, **args)
        stream = await client.chat.completions.create(
            model="tiny", stream=True, logprobs=True, top_logprobs=1, stream_options={"include_usage": True}, **args
        )
        return answer, [chunk async for chunk in stream]

    answer, chunks = run(api, ask)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    choices = check_chunks(chunks, answer, include_usage=True)
    for choice in answer.choices:
        first, *rest = choices[choice.index]
        assert first.delta.role == "assistant" and first.delta.content == "" and first.finish_reason is None
        assert all(p.delta.role is None for p in rest)
        assert "".join(p.delta.content for p in rest) == choice.message.content
        assert sum((p.logprobs.content for p in rest), []) == choice.logprobs.content
    assert sorted({c.choices[0].index for c in chunks if c.choices}) == [0, 1]


def test_the_wire_format_is_openai_sse(api) -> None:
    body = {"model": "tiny", "prompt": "Hi", "max_tokens": 3, "temperature": 0, "stream": True}
    headers = {"authorization": f"Bearer {KEY}"}
    plain = asyncio.run(raw(api, "POST", "/v1/completions", json=body, headers=headers))
    usage = asyncio.run(
        raw(api, "POST", "/v1/completions", json=body | {"stream_options": {"include_usage": True}}, headers=headers)
    )
    assert plain.headers["content-type"].startswith("text/event-stream")
    for response in (plain, usage):
        assert response.text.endswith("data: [DONE]\n\n") and response.text.startswith("data: {")
    frames, with_usage = sse_frames(plain.text)[:-1], sse_frames(usage.text)[:-1]
    assert all("usage" not in f for f in frames)  # usage only when asked for
    assert all("usage" in f and f["usage"] is None for f in with_usage[:-1])
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"]["completion_tokens"] == 3


def test_32_simultaneous_streams_each_equal_their_solo_run(api) -> None:
    """More requests than the engine has rows (8), of mixed lengths and settings, arriving together."""
    rng = random.Random(0)
    words = "the cat sat on a mat while seven quick foxes jumped over lazy dogs".split()
    requests = []
    for i in range(32):
        args = dict(
            prompt=" ".join(rng.choices(words, k=rng.randint(1, 20))),
            max_tokens=rng.randint(1, 16),
            n=rng.choice([1, 1, 2]),
        )
        if i % 3:
            args |= dict(temperature=rng.choice([0.7, 1.0]), seed=i, top_p=rng.choice([1.0, 0.9]))
        else:
            args |= dict(temperature=0, presence_penalty=rng.choice([0.0, 0.5]))
        if i % 5 == 0:
            args |= dict(stop=[rng.choice(words)])
        requests.append(args)

    async def together(client: Any) -> list[dict[int, str]]:
        async def one(args: dict[str, Any]) -> dict[int, str]:
            texts: dict[int, str] = defaultdict(str)
            async for chunk in await client.completions.create(model="tiny", stream=True, **args):
                for choice in chunk.choices:
                    texts[choice.index] += choice.text
            return dict(texts)

        return await asyncio.gather(*(one(args) for args in requests))

    async def alone(client: Any) -> list[dict[int, str]]:
        answers = []
        for args in requests:
            answer = await client.completions.create(model="tiny", **args)
            answers.append({c.index: c.text for c in answer.choices})
        return answers

    assert run(api, together) == run(api, alone)


def test_a_client_that_leaves_mid_stream_frees_its_rows(api, tiny) -> None:
    body = {"model": "tiny", "prompt": "Once", "max_tokens": 100, "ignore_eos": True, "stream": True, "n": 2, "seed": 0}
    sent = asyncio.run(drive(api, "/v1/completions", body, leave_after=2))
    frames = [m["body"] for m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert 2 <= len(frames) < 50 and not any(b"[DONE]" in f for f in frames)
    assert rows_free(tiny.engine) == tiny.engine.max_batch_size

    waited = asyncio.run(drive(api, "/v1/completions", body | {"stream": False}, leave_after=0))
    assert waited[0]["status"] == 499  # answered to nobody: the generation was cancelled instead of finished
    assert rows_free(tiny.engine) == tiny.engine.max_batch_size

    async def after(client: Any) -> Any:
        return await client.completions.create(model="tiny", prompt="Still", max_tokens=4, temperature=0)

    assert run(api, after).choices[0].finish_reason in ("stop", "length")


def test_an_error_after_the_stream_began_is_an_error_frame(oracle) -> None:
    engine = Engine(oracle.model, oracle.tokenizer, max_batch_size=2).start()
    app = create_app({"doomed": engine})
    body = {"model": "doomed", "prompt": "Once", "max_tokens": 100, "ignore_eos": True, "stream": True}

    async def scenario() -> list[dict[str, Any]]:
        frames = 0

        async def watch(message: dict[str, Any]) -> None:
            nonlocal frames
            frames += bool(message.get("body"))
            if frames == 2:
                engine.close(drain=False)  # the engine stops under the running request

        return await drive(app, "/v1/completions", body, leave_after=None, on_send=watch)

    sent = asyncio.run(scenario())
    frames = sse_frames(b"".join(m.get("body", b"") for m in sent).decode())
    assert sent[0]["status"] == 200 and frames[-1] != "[DONE]"
    assert frames[-1] == {
        "error": {
            "message": "the server is shutting down",
            "type": "server_error",
            "param": None,
            "code": "engine_closed",
        }
    }
    assert all("error" not in f for f in frames[:-1]) and json.dumps(frames[-1])
