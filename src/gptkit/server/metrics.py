"""Prometheus metrics of a server: each engine reports through an `Observer` labelled with its model's name.

Every app has its own CollectorRegistry, so two apps in one process (tests, several servers) never share counts.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# latencies of a small model on a CPU up to a large one under load
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's metrics; `observer(name)` is what the engine of model `name` reports to."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels, registry = ["model"], self.registry
        self.requests = Counter("gptkit_requests", "Requests whose every choice finished", labels, registry=registry)
        self.prompt_tokens = Counter("gptkit_prompt_tokens", "Prompt tokens prefilled", labels, registry=registry)
        self.generation_tokens = Counter("gptkit_generation_tokens", "Tokens generated", labels, registry=registry)
        self.queue = Gauge("gptkit_queue_depth", "Requests waiting for rows", labels, registry=registry)
        self.running = Gauge("gptkit_running_sequences", "Rows decoding in the last step", labels, registry=registry)
        self.occupancy = Gauge(
            "gptkit_batch_occupancy", "Share of the batch's rows decoding in the last step", labels, registry=registry
        )
        self.first_token = Histogram(
            "gptkit_time_to_first_token_seconds",
            "From submission to a request's first token",
            labels,
            registry=registry,
            buckets=_SECONDS,
        )
        self.token_gap = Histogram(
            "gptkit_inter_token_latency_seconds",
            "Between two tokens of one choice",
            labels,
            registry=registry,
            buckets=_SECONDS,
        )

    def observer(self, model: str) -> ModelObserver:
        return ModelObserver(self, model)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class ModelObserver:
    """gptkit.server.engine.Observer for one model: called on its engine's thread, each call a few increments."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        m = metrics
        self._requests, self._prompt = m.requests.labels(model), m.prompt_tokens.labels(model)
        self._generated, self._queue = m.generation_tokens.labels(model), m.queue.labels(model)
        self._running, self._occupancy = m.running.labels(model), m.occupancy.labels(model)
        self._first, self._gap = m.first_token.labels(model), m.token_gap.labels(model)

    def on_queue(self, waiting: int) -> None:
        self._queue.set(waiting)

    def on_step(self, running: int, capacity: int) -> None:
        self._running.set(running)
        self._occupancy.set(running / capacity)

    def on_first_token(self, seconds: float) -> None:
        self._first.observe(seconds)

    def on_token_gap(self, seconds: float) -> None:
        self._gap.observe(seconds)

    def on_finish(self, prompt_tokens: int, completion_tokens: int) -> None:
        self._requests.inc()
        self._prompt.inc(prompt_tokens)
        self._generated.inc(completion_tokens)
