"""The continuous-batching engine: one thread per model decodes every request in flight as one batch.

The thread owns a `DecodeState` of `max_batch_size` rows over a KV cache of the model's whole context.
Between two decode steps it takes new work: requests waiting for rows are prefilled into the rows that
finished (a request with n choices takes n rows at once), cancelled ones leave, and calls such as scoring
and embeddings (`call`) run on the model. Each request has its own sampling parameters, stop strings, seed
and sink, so a greedy or seeded request gives the same tokens alone as among any others.

Nothing here knows HTTP: `submit` takes token ids and `SamplingParams` and reports to a sink on the engine
thread; `stream` (blocking), `asubmit` (asyncio, several prompts, submitted at once) and `astream` wrap it, and
cancel the request when their consumer stops listening.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gptkit.errors import ConfigError, ContextLengthError, GptkitError
from gptkit.generation.decode import TokenEvent
from gptkit.generation.sampling import SamplingParams
from gptkit.generation.state import DecodeState, Request
from gptkit.models.gpt import GPT

__all__ = ["Done", "Engine", "EngineClosedError", "Events", "Failed", "Generation", "Observer", "QueueFullError"]

log = logging.getLogger("gptkit.server")
T = TypeVar("T")


class QueueFullError(GptkitError):
    """More requests are waiting for a row than the engine's max_queue allows; retry later."""


class EngineClosedError(GptkitError):
    """The engine is shutting down or its loop has stopped: it takes no new work."""


@dataclass(frozen=True)
class Done:
    """The last item a sink receives for a request whose every choice finished."""


@dataclass(frozen=True)
class Failed:
    """The last item a sink receives for a request the engine could not finish."""

    error: BaseException


Item = TokenEvent | Done | Failed
Sink = Callable[[Item], None]


class Observer(Protocol):
    """What the engine reports for metrics; every method is called on the engine thread and must be quick."""

    def on_queue(self, waiting: int) -> None: ...
    def on_step(self, running: int, capacity: int) -> None: ...
    def on_first_token(self, seconds: float) -> None: ...
    def on_token_gap(self, seconds: float) -> None: ...
    def on_finish(self, prompt_tokens: int, completion_tokens: int) -> None: ...


class _NoObserver:
    def on_queue(self, waiting: int) -> None: ...
    def on_step(self, running: int, capacity: int) -> None: ...
    def on_first_token(self, seconds: float) -> None: ...
    def on_token_gap(self, seconds: float) -> None: ...
    def on_finish(self, prompt_tokens: int, completion_tokens: int) -> None: ...


class Generation:
    """A submitted request: `n` choices of one prompt. TokenEvents it reports carry index = sample = the choice."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, n: int, sink: Sink, wake: Callable[[], None]):
        self.prompt_ids, self.params, self.n, self.sink = prompt_ids, params, n, sink
        self.submitted = time.perf_counter()
        self.cancelled = False
        self._wake = wake
        # owned by the engine thread:
        self.uids: list[int] = []  # the DecodeState request index of each choice
        self.rows: list[int] = []  # the row each choice took
        self.finished: set[int] = set()  # choices done
        self.generated = 0
        self.first_token: float | None = None
        self.last_token: dict[int, float] = {}

    def cancel(self) -> None:
        """Stop decoding this request; its rows are freed before the next step. Safe from any thread."""
        if not self.cancelled:
            self.cancelled = True
            self._wake()


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future[Any]


_STOP = object()


class Events:
    """The TokenEvents of the prompts `Engine.asubmit` submitted, for asyncio: index = prompt * n + choice,
    prompt_index = the prompt, sample = the choice. Ends when every choice finished; raises a failure."""

    def __init__(self, n: int) -> None:
        self.generations: list[Generation] = []
        self._n = n
        self._done = 0
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[tuple[int, Item]] = asyncio.Queue()

    def sink(self, prompt: int) -> Sink:
        """The sink of prompt `prompt`'s generation: items cross from the engine thread to the event loop."""

        def sink(item: Item) -> None:
            self._loop.call_soon_threadsafe(self._items.put_nowait, (prompt, item))

        return sink

    def cancel(self) -> None:
        for generation in self.generations:
            generation.cancel()

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> TokenEvent:
        while self._done < len(self.generations):
            prompt, item = await self._items.get()
            if isinstance(item, Failed):
                self.cancel()
                raise item.error
            if isinstance(item, Done):
                self._done += 1
                continue
            return dataclasses.replace(item, index=prompt * self._n + item.sample, prompt_index=prompt)
        raise StopAsyncIteration

    async def __aenter__(self) -> Events:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class Engine:
    """Continuous batching over one model. `start()` it, `submit`/`stream`/`astream`/`call`, then `close()`."""

    def __init__(
        self,
        model: GPT,
        tokenizer: Any = None,
        *,
        max_batch_size: int = 16,
        max_queue: int = 256,
        observer: Observer | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1:  # a request waits in the queue until the loop gives it rows
            raise ConfigError(f"max_batch_size and max_queue must be >= 1, got {max_batch_size}, {max_queue}")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.observer: Observer = observer or _NoObserver()
        self.state = DecodeState(model, max_batch_size, tokenizer=tokenizer)
        self.error: BaseException | None = None  # what stopped the loop, when something did
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._waiting: deque[Generation] = deque()  # owned by the engine thread
        self._running: dict[int, tuple[Generation, int]] = {}  # request uid -> (generation, choice)
        self._pending = 0  # submitted and not yet given rows, counted across threads
        self._lock = threading.Lock()
        self._uid = 0
        self._closing = False
        # The loop runs in the context the engine was made in: switches such as kernels.use_native(False), set by
        # `gptkit serve` from GPTKIT_NATIVE=0, hold in its thread too (a new thread starts from an empty context).
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name="gptkit-engine", daemon=True)

    # -- the caller's side ----------------------------------------------------------------------------

    @property
    def n_positions(self) -> int:
        return self.model.config.n_positions

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def healthy(self) -> bool:
        """True while the loop runs (or has not started) and no error has stopped it."""
        return self.error is None and (self._thread.is_alive() or not self._started)

    @property
    def _started(self) -> bool:
        return self._thread.ident is not None

    @property
    def waiting(self) -> int:
        """Requests submitted and not yet decoding."""
        return self._pending

    def start(self) -> Engine:
        self._thread.start()
        return self

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Take no new work; let running requests finish (drain) or fail them, fail waiting ones; stop the loop."""
        with self._lock:  # every request submitted before this is in the inbox ahead of the stop
            self._closing = True
            self._inbox.put((_STOP, drain))
        if self._started:
            self._thread.join(timeout)

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams, sink: Sink, *, n: int = 1) -> Generation:
        """Queue `n` choices of one prompt; `sink` gets their TokenEvents, then Done or Failed, on the engine
        thread. Raises at once for what can never run: a bad n or token id, a prompt that does not fit."""
        ids = self.check_prompt(prompt_ids, params.max_new_tokens, truncate=params.truncate)
        if not 1 <= n <= self.max_batch_size:
            raise ConfigError(f"n must be between 1 and the engine's max_batch_size {self.max_batch_size}, got {n}")
        if params.num_beams > 1:
            raise ConfigError("the engine samples or decodes greedily; beam search (num_beams > 1) is not served")
        generation = Generation(ids, params, n, sink, self._wake)
        with self._lock:
            if self._closing or not self.healthy:
                raise EngineClosedError("the engine is shutting down or has stopped; it takes no new requests")
            if self._pending >= self.max_queue:
                raise QueueFullError(f"{self._pending} requests are already waiting (max_queue {self.max_queue})")
            self._pending += 1
            self._inbox.put(generation)
        return generation

    def check_prompt(self, prompt_ids: Sequence[int], max_new_tokens: int, *, truncate: bool = False) -> list[int]:
        """The prompt as a list of ids, or a clear error: empty, an id outside the vocabulary, too long."""
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError("prompt must hold at least one token (GPT-2 users often start with <|endoftext|>)")
        if bad := [t for t in ids if not 0 <= t < self.vocab_size]:
            raise ValueError(f"prompt holds token id {bad[0]}, outside the vocabulary [0, {self.vocab_size})")
        if len(ids) > self.n_positions or (not truncate and len(ids) + max_new_tokens > self.n_positions):
            raise ContextLengthError(
                f"this model's maximum context length is {self.n_positions} tokens, but {len(ids) + max_new_tokens} "
                f"were requested ({len(ids)} in the prompt, {max_new_tokens} for the completion); shorten the "
                "prompt or ask for fewer new tokens"
            )
        return ids

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn()` on the engine thread between two decode steps (scoring, embeddings: anything that uses
        the model); its result or exception arrives in the returned future."""
        future: Future[T] = Future()
        with self._lock:
            if self._closing or not self.healthy:
                future.set_exception(EngineClosedError("the engine is shutting down or has stopped"))
            else:
                self._inbox.put(_Call(fn, future))
        return future

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams, *, n: int = 1) -> Iterator[TokenEvent]:
        """Blocking: yield the request's TokenEvents as they come; closing the iterator cancels the request."""
        items: queue.SimpleQueue[Item] = queue.SimpleQueue()
        generation = self.submit(prompt_ids, params, items.put, n=n)
        try:
            while not isinstance(item := items.get(), Done):
                if isinstance(item, Failed):
                    raise item.error
                yield item
        finally:
            generation.cancel()

    def asubmit(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *, n: int = 1) -> Events:
        """asyncio, eager: submit `n` choices of each prompt now, raising at once as `submit` does (nothing is left
        running then), and return their events. Iterate them inside `async with` (or call `cancel()`) so that a
        consumer that stops cancels the requests. Eager so that an HTTP server can refuse before it answers."""
        events = Events(n)
        try:
            for p, ids in enumerate(prompts):
                events.generations.append(self.submit(ids, params, events.sink(p), n=n))
        except BaseException:
            events.cancel()
            raise
        return events

    async def astream(
        self, prompt_ids: Sequence[int], params: SamplingParams, *, n: int = 1
    ) -> AsyncIterator[TokenEvent]:
        """asyncio: yield the request's TokenEvents; a consumer that stops (closed, cancelled) cancels it."""
        async with self.asubmit([prompt_ids], params, n=n) as events:
            async for event in events:
                yield event

    def _wake(self) -> None:
        self._inbox.put(None)

    # -- the engine thread ----------------------------------------------------------------------------

    def _loop(self) -> None:
        stopping, drain = False, True
        try:
            while True:
                idle = not self.state.running and not self._waiting
                if stopping and idle:
                    return
                calls, stop = self._take_inbox(block=idle)
                if stop is not None:
                    stopping, drain = True, stop
                    self._fail_waiting(EngineClosedError("the server is shutting down"))
                self._drop_cancelled()
                for call in calls:  # after cancelled rows left, so a call sees the rows as they now are
                    self._run_call(call)
                if stopping and not drain:
                    self._fail_running(EngineClosedError("the server is shutting down"))
                self._admit()
                if self.state.running:
                    self._step()
                else:  # idle: the batch gauges read empty, not the last step's
                    self.observer.on_step(0, self.max_batch_size)
        except BaseException as exc:  # the loop is dead: every request gets the error, /health says so
            with self._lock:  # a submit either sees the error or is in the inbox failed below
                self.error = exc
            log.exception("the engine loop stopped")
            self._fail_waiting(exc)
            self._fail_running(exc)

    def _step(self) -> None:
        """One decode step for every running row. A step that raises fails the requests in it (their rows are
        released and the state is clean again), and the engine goes on serving the next ones."""
        try:
            events = self.state.step()
        except Exception as exc:
            log.exception("a decode step failed; its %d requests get the error", len(self._running))
            self._fail_running(exc)
            return
        self._deliver(events)

    def _take_inbox(self, *, block: bool) -> tuple[list[_Call], bool | None]:
        """Move new work out of the inbox (waiting for some when idle): the calls to run, and the drain flag
        when asked to stop."""
        calls: list[_Call] = []
        stop: bool | None = None
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return calls, stop
            block = False
            if isinstance(item, Generation):
                self._waiting.append(item)
            elif isinstance(item, _Call):
                calls.append(item)
            elif isinstance(item, tuple) and item[0] is _STOP:
                stop = item[1]

    @staticmethod
    def _run_call(call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.fn())
        except BaseException as exc:
            call.future.set_exception(exc)

    def _admit(self) -> None:
        """Prefill waiting requests, oldest first, into the free rows (all of a request's choices or none)."""
        free = len(self.state.free_rows)
        batch: list[tuple[Generation, list[Request]]] = []
        while self._waiting and self._waiting[0].n <= free:
            generation = self._waiting.popleft()
            requests = []
            for k in range(generation.n):
                self._uid += 1
                requests.append(Request(generation.prompt_ids, generation.params, self._uid, 0, k))
                generation.uids.append(self._uid)
            batch.append((generation, requests))
            free -= generation.n
        if batch:
            rows = self.state.add([r for _, requests in batch for r in requests])
            for generation, requests in batch:
                generation.rows, rows = rows[: len(requests)], rows[len(requests) :]
                for k, request in enumerate(requests):
                    self._running[request.index] = (generation, k)
            with self._lock:
                self._pending -= len(batch)
        self.observer.on_queue(len(self._waiting))

    def _deliver(self, events: list[TokenEvent]) -> None:
        now = time.perf_counter()
        self.observer.on_step(len(events), self.max_batch_size)
        for event in events:
            generation, k = self._running[event.index]
            if generation.first_token is None:
                generation.first_token = now
                self.observer.on_first_token(now - generation.submitted)
            elif k in generation.last_token:
                self.observer.on_token_gap(now - generation.last_token[k])
            generation.last_token[k] = now
            generation.generated += 1
            self._send(generation, dataclasses.replace(event, index=k, prompt_index=0, sample=k))
            if event.finish_reason is not None:
                del self._running[event.index]
                generation.finished.add(k)
                if len(generation.finished) == generation.n:
                    self.observer.on_finish(len(generation.prompt_ids) * generation.n, generation.generated)
                    self._send(generation, Done())

    def _send(self, generation: Generation, item: Item) -> None:
        """Give the sink an item; a sink that fails (its consumer is gone) cancels its request, never the loop."""
        if generation.cancelled:
            return
        try:
            generation.sink(item)
        except Exception:
            log.warning("a request's sink failed; cancelling the request", exc_info=True)
            generation.cancelled = True

    def _drop_cancelled(self) -> None:
        if any(g.cancelled for g in self._waiting):
            kept = [g for g in self._waiting if not g.cancelled]
            with self._lock:
                self._pending -= len(self._waiting) - len(kept)
            self._waiting = deque(kept)
        for uid, (generation, k) in list(self._running.items()):
            if generation.cancelled:
                self._release(uid, generation, k)

    def _release(self, uid: int, generation: Generation, k: int) -> None:
        row = generation.rows[k]
        held = self.state.rows[row]
        if held is not None and held.request.index == uid:
            self.state.release(row)
        del self._running[uid]

    def _fail_waiting(self, error: BaseException) -> None:
        with self._lock:
            self._pending -= len(self._waiting)
        while self._waiting:
            self._send(self._waiting.popleft(), Failed(error))
        while True:  # work still in the inbox
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Generation):
                with self._lock:
                    self._pending -= 1
                self._send(item, Failed(error))
            elif isinstance(item, _Call):
                item.future.set_exception(error)

    def _fail_running(self, error: BaseException) -> None:
        failed: dict[int, Generation] = {}
        for uid, (generation, k) in list(self._running.items()):
            self._release(uid, generation, k)
            failed[id(generation)] = generation
        for generation in failed.values():
            self._send(generation, Failed(error))
