"""The continuous-batching engine: every request decodes as it would alone, whatever joins or leaves beside it."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from gptkit import GPT, ContextLengthError, GPTConfig
from gptkit.errors import ConfigError
from gptkit.generation.decode import TokenEvent
from gptkit.generation.generate import generate
from gptkit.generation.sampling import SamplingParams
from gptkit.models import kernels, native
from gptkit.server.engine import Done, Engine, EngineClosedError, Failed, QueueFullError

BASE = SamplingParams(max_new_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("gpt2-tiny", initializer_range=0.2)).eval()


def _choices(events: list[TokenEvent]) -> dict[int, list[TokenEvent]]:
    out: dict[int, list[TokenEvent]] = {}
    for event in events:
        out.setdefault(event.index, []).append(event)
    return out


def _cases(tok) -> list[tuple[list[int], SamplingParams, int]]:
    """Prompts of different lengths, each with its own settings and number of choices."""
    prompts = [tok.encode(t) for t in ("Hello", "The elf queen said to the king", "A", "Once upon a time, in a land")]
    settings = [
        (BASE.replace(temperature=0), 1),
        (BASE.replace(temperature=0.8, top_p=0.9, seed=7), 3),
        (BASE.replace(temperature=1.2, top_k=30, seed=8, presence_penalty=1.0, max_new_tokens=5), 2),
        (BASE.replace(temperature=0, repetition_penalty=1.3, logprobs=2, max_new_tokens=20), 1),
        (BASE.replace(temperature=0.9, seed=9, stop=(" the",), logit_bias={13: 4.0}), 2),
        (BASE.replace(temperature=0, max_new_tokens=1), 1),
    ]
    return [(prompts[i % len(prompts)], params, n) for i, (params, n) in enumerate(settings * 2)]


def _assert_alone(model: GPT, tok, ids: list[int], params: SamplingParams, n: int, events: list[TokenEvent]) -> None:
    alone = generate(model, [ids], params.replace(num_return_sequences=n), tokenizer=tok)
    got = _choices(events)
    assert sorted(got) == list(range(n))
    for k, completion in enumerate(alone):
        assert [e.token_id for e in got[k]] == completion.token_ids
        assert "".join(e.text for e in got[k]) == completion.text
        assert [e.finish_reason for e in got[k]][-1] == completion.finish_reason
        assert sum(e.finish_reason is not None for e in got[k]) == 1
        if params.logprobs is not None:
            assert [e.logprob for e in got[k]] == pytest.approx(completion.logprobs, abs=1e-5)


def test_concurrent_requests_of_mixed_lengths_and_settings_each_equal_their_solo_run(model, tok) -> None:
    cases = _cases(tok)

    async def collect(engine: Engine, ids: list[int], params: SamplingParams, n: int) -> list[TokenEvent]:
        return [event async for event in engine.astream(ids, params, n=n)]

    async def main(engine: Engine) -> list[list[TokenEvent]]:
        return await asyncio.gather(*(collect(engine, *case) for case in cases))

    # four rows for 32 choices: requests wait, join as others leave, and share the batch at different offsets
    with Engine(model, tok, max_batch_size=4) as engine:
        results = asyncio.run(main(engine))
        assert engine.call(lambda: len(engine.state.free_rows)).result() == 4
    for (ids, params, n), events in zip(cases, results, strict=True):
        _assert_alone(model, tok, ids, params, n, events)


def test_blocking_stream_and_calls_between_steps(model, tok) -> None:
    ids, params = tok.encode("Hello there"), BASE.replace(temperature=0)
    with Engine(model, tok, max_batch_size=2) as engine:
        events = list(engine.stream(ids, params))
        assert engine.call(lambda: threading.current_thread().name).result() == "gptkit-engine"
        with pytest.raises(ZeroDivisionError):
            engine.call(lambda: 1 / 0).result()
        assert engine.healthy  # a failing call fails its future, not the loop
    _assert_alone(model, tok, ids, params, 1, events)


@pytest.mark.parametrize("native_on", [True, False])
def test_the_engine_thread_keeps_the_kernel_switches_of_its_maker(
    model, tok, monkeypatch, native_kernels, native_on: bool
) -> None:
    """`gptkit serve` turns gptkit's CPU kernels off (GPTKIT_NATIVE=0) around the engines it makes; their
    thread must see that switch."""
    calls = []
    original = native.gemv
    monkeypatch.setattr(native, "gemv", lambda *a, **k: calls.append(1) or original(*a, **k))
    with kernels.use_native(native_on):
        engine = Engine(model, tok, max_batch_size=2)
    with engine:
        events = list(engine.stream(tok.encode("Hello there"), BASE.replace(temperature=0)))
    assert events and bool(calls) == native_on


def test_a_cancelled_request_frees_its_rows_and_the_engine_keeps_serving(model, tok) -> None:
    ids = tok.encode("Hello")
    long = BASE.replace(temperature=0, max_new_tokens=120)
    with Engine(model, tok, max_batch_size=3) as engine:
        stream = engine.stream(ids, long, n=3)
        next(stream)  # decoding in all three rows
        stream.close()  # the consumer goes away: the request is cancelled
        assert engine.call(lambda: len(engine.state.free_rows)).result() == 3
        after = list(engine.stream(ids, BASE.replace(temperature=0)))
    _assert_alone(model, tok, ids, BASE.replace(temperature=0), 1, after)


def test_what_can_never_run_is_refused_at_submit(model, tok) -> None:
    engine = Engine(model, tok, max_batch_size=2, max_queue=1)  # not started: nothing leaves the queue

    def sink(item: object) -> None: ...

    context = model.config.n_positions
    with pytest.raises(ContextLengthError, match=f"maximum context length is {context}.*{context - 4} in the prompt"):
        engine.submit([1] * (context - 4), BASE, sink)
    with pytest.raises(ValueError, match=f"token id {model.config.vocab_size}, outside the vocabulary"):
        engine.submit([1, model.config.vocab_size], BASE, sink)
    with pytest.raises(ValueError, match="at least one token"):
        engine.submit([], BASE, sink)
    with pytest.raises(ConfigError, match="n must be between 1 and the engine's max_batch_size 2"):
        engine.submit([1], BASE, sink, n=3)
    engine.submit([1], BASE, sink)
    with pytest.raises(QueueFullError, match="1 requests are already waiting"):
        engine.submit([1], BASE, sink)


def test_close_lets_running_requests_finish_and_refuses_new_ones(model, tok) -> None:
    engine = Engine(model, tok, max_batch_size=1).start()
    ids, params = tok.encode("Hello"), BASE.replace(temperature=0, max_new_tokens=40)
    items: list[object] = []
    started = threading.Event()

    def sink(item: object) -> None:
        items.append(item)
        started.set()

    engine.submit(ids, params, sink)
    started.wait(30)
    engine.close(drain=True, timeout=60)
    assert isinstance(items[-1], Done)
    _assert_alone(model, tok, ids, params, 1, [e for e in items if isinstance(e, TokenEvent)])
    with pytest.raises(EngineClosedError):
        engine.submit(ids, params, sink)


def test_a_failing_step_fails_its_requests_and_the_engine_keeps_serving(model, tok, monkeypatch) -> None:
    engine = Engine(model, tok, max_batch_size=2)
    step = engine.state.step
    calls = []

    def fails_once() -> list[TokenEvent]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("probability tensor contains nan")
        return step()

    monkeypatch.setattr(engine.state, "step", fails_once)
    engine.start()
    try:
        with pytest.raises(RuntimeError, match="contains nan"):
            list(engine.stream([1, 2], BASE))
        assert engine.healthy
        assert engine.call(lambda: len(engine.state.free_rows)).result() == 2  # its rows were released
        after = list(engine.stream([1, 2], BASE.replace(temperature=0)))
    finally:
        engine.close(timeout=30)
    _assert_alone(model, tok, [1, 2], BASE.replace(temperature=0), 1, after)


def test_a_dead_loop_fails_every_request_and_reports_unhealthy(model, tok, monkeypatch) -> None:
    engine = Engine(model, tok, max_batch_size=2)

    def broken_admit() -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(engine, "_admit", broken_admit)
    failed = threading.Event()
    items: list[object] = []

    def sink(item: object) -> None:
        items.append(item)
        failed.set()

    engine.submit([1, 2], BASE, sink)
    engine.start()
    assert failed.wait(30)
    assert isinstance(items[-1], Failed) and "out of memory" in str(items[-1].error)
    engine.close(timeout=30)
    assert not engine.healthy
    with pytest.raises(EngineClosedError):
        engine.submit([1, 2], BASE, sink)


def test_the_observer_sees_tokens_queue_and_latencies(model, tok) -> None:
    seen: dict[str, list] = {"queue": [], "step": [], "first": [], "gap": [], "finish": []}

    class Recorder:
        def on_queue(self, waiting: int) -> None:
            seen["queue"].append(waiting)

        def on_step(self, running: int, capacity: int) -> None:
            seen["step"].append((running, capacity))

        def on_first_token(self, seconds: float) -> None:
            seen["first"].append(seconds)

        def on_token_gap(self, seconds: float) -> None:
            seen["gap"].append(seconds)

        def on_finish(self, prompt_tokens: int, completion_tokens: int) -> None:
            seen["finish"].append((prompt_tokens, completion_tokens))

    with Engine(model, tok, max_batch_size=4, observer=Recorder()) as engine:
        list(engine.stream([1, 2, 3], BASE.replace(max_new_tokens=6), n=2))
    assert seen["finish"] == [(6, 12)]
    assert len(seen["first"]) == 1 and len(seen["gap"]) == 10
    assert all(capacity == 4 and running <= 2 for running, capacity in seen["step"])
    assert seen["step"][-1] == (0, 4)  # idle again: the occupancy gauge does not keep the last step's figure
