"""Reporters: listeners that send a run's metrics.jsonl records on to TensorBoard or Weights & Biases.

TrainConfig.report_to names them; `fit` opens them for the run (`reporters`) and calls them with the run's
events like any other `on_event` listener. They mirror `MetricsEvent`s, which carry exactly the records
metrics.jsonl gets: each number becomes a scalar named as its key at the record's step (the run's global step),
each text (an evaluation's sample) a text. A resumed run goes on from its checkpoint's step: TensorBoard purges
what a crashed run had logged after that step (metrics.jsonl forgets those records too), and W&B continues
the same run (its id is kept in the run directory); W&B keeps the first values of steps a crash made the run
redo, as it never rewrites a run's history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from gptkit.errors import ConfigError
from gptkit.io import atomic_write_text
from gptkit.training.config import TrainConfig
from gptkit.training.events import CheckpointEvent, DoneEvent, Event, MetricsEvent, OnEvent, StartEvent

TENSORBOARD_DIR = "tensorboard"  # in the run directory: `tensorboard --logdir RUN/tensorboard`
WANDB_ID_FILE = "wandb_run_id"  # in the run directory: the W&B run a resume continues


class Reporter(Protocol):
    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


def split_record(record: dict[str, Any]) -> tuple[int, dict[str, float], dict[str, str]]:
    """A metrics.jsonl record as (its step, its numbers, its texts); flags and nested values are neither."""
    numbers = {
        k: float(v) for k, v in record.items() if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }
    texts = {k: v for k, v in record.items() if isinstance(v, str)}
    return record["step"], numbers, texts


class TensorBoardReporter:
    """Writes the records as TensorBoard scalars and texts in RUN/tensorboard (torch.utils.tensorboard)."""

    def __init__(self, config: TrainConfig) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                "--report-to tensorboard needs the tensorboard package: pip install tensorboard "
                "(or pip install 'gptkit[tensorboard]')"
            ) from exc
        self.writer_class: Any = SummaryWriter
        self.writer: Any = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            # what an interrupted run logged after the checkpoint this run starts from is hidden (purged)
            self.writer = self.writer_class(str(event.run_dir / TENSORBOARD_DIR), purge_step=event.step + 1)
        elif isinstance(event, MetricsEvent) and self.writer is not None:
            step, numbers, texts = split_record(event.record)
            for key, value in numbers.items():
                self.writer.add_scalar(key, value, step)
            for key, text in texts.items():
                self.writer.add_text(key, text, step)
        elif isinstance(event, CheckpointEvent) and self.writer is not None:
            self.writer.flush()  # on disk up to the checkpoint: a resume from it has every step it keeps
        elif isinstance(event, DoneEvent):
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbReporter:
    """Logs the records to a Weights & Biases run (settings from wandb's own environment: WANDB_PROJECT, ...)."""

    def __init__(self, config: TrainConfig) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError("--report-to wandb needs the wandb package: pip install wandb") from exc
        self.wandb, self.config = wandb, config
        self.run: Any = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            id_file = event.run_dir / WANDB_ID_FILE
            resumed = event.step > 0 and id_file.is_file()
            run_id = id_file.read_text(encoding="utf-8").strip() if resumed else self.wandb.util.generate_id()
            atomic_write_text(id_file, run_id + "\n")
            self.run = self.wandb.init(
                id=run_id,
                resume="allow",
                dir=str(event.run_dir),
                name=event.run_dir.resolve().name,
                config=dataclasses.asdict(self.config),
            )
        elif isinstance(event, MetricsEvent) and self.run is not None:
            step, numbers, texts = split_record(event.record)
            self.run.log({**numbers, **texts}, step=step)
        elif isinstance(event, DoneEvent):
            self.close()

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


_KINDS: dict[str, type[TensorBoardReporter] | type[WandbReporter]] = {  # config.REPORTERS's names
    "tensorboard": TensorBoardReporter,
    "wandb": WandbReporter,
}


@contextmanager
def reporters(config: TrainConfig) -> Iterator[list[Reporter]]:
    """The reporters config.report_to names (a ConfigError now if one's package is missing), closed when the
    run ends, also when it fails."""
    opened: list[Reporter] = []
    try:
        for name in config.reporters:
            opened.append(_KINDS[name](config))
        yield opened
    finally:
        for reporter in opened:
            reporter.close()


def fan_out(*listeners: OnEvent | None) -> OnEvent | None:
    """One `on_event` that calls each of `listeners` (None: absent) in order; None when there are none."""
    present = [listener for listener in listeners if listener is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def call(event: Event) -> None:
        for listener in present:
            listener(event)

    return call
