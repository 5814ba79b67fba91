"""What a training run reports while it runs (typed events for an `on_event` callback) and when it ends.

`fit` (and so `train` and `finetune`) calls `on_event` on the main process with, in order: one `StartEvent`,
then per optimizer step a `StepEvent`, an `EvalEvent` after each evaluation, an `EarlyStopEvent` when the best
metric stopped improving, a `CheckpointEvent` after each checkpoint written, and finally one `DoneEvent` holding
the `TrainResult` it returns. Each record appended to metrics.jsonl is also a `MetricsEvent`, just before the
step's or evaluation's own event. The CLI's progress bar, the server's job stream, the TensorBoard and W&B
reporters (reporting.py) and benchmarks all listen to the same events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    train_loss: float
    val_loss: float | None
    best: float | None  # the best value of TrainConfig.best_metric (validation loss by default); None: never evaluated
    tokens_per_second: float  # real (not padding) input tokens per second in this call
    seconds: float  # this call's
    is_main: bool = True  # False on the other ranks of a distributed run
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation
    stopped: bool = False  # should_stop() ended the run before max_steps (a checkpoint of `step` was left to resume)
    best_step: int | None = None  # the step whose checkpoint is best/
    early_stopped: bool = False  # early_stopping_patience evaluations in a row did not improve the best metric


@dataclass(frozen=True)
class StartEvent:
    run_dir: Path
    step: int  # the step training starts from: 0, or the resumed checkpoint's
    max_steps: int
    tokens: int = 0  # tokens trained on before this call (a resumed checkpoint's), where StepEvent.tokens starts


@dataclass(frozen=True)
class StepEvent:
    step: int  # optimizer steps completed
    max_steps: int
    loss: float  # this step's training loss (mean over its targets, all processes)
    lr: float  # the learning rate this step used
    tokens: int  # real (not padding) input tokens trained on since the run began, before a resume included
    tokens_per_second: float  # in this call
    elapsed: float  # seconds of training since the run began, before a resume included


@dataclass(frozen=True)
class EvalEvent:
    step: int
    metrics: dict[str, float]  # val_loss and the objective's metrics
    sample: str | None = None  # a generated text, when the run samples


@dataclass(frozen=True)
class MetricsEvent:
    record: dict[str, Any]  # exactly the record appended to metrics.jsonl; its "step" is the run's global step


@dataclass(frozen=True)
class EarlyStopEvent:
    step: int  # the evaluation that used up the patience; the run ends here with a checkpoint
    metric: str  # TrainConfig.best_metric
    best: float | None  # its best value, at best_step (the checkpoint in best/); None: never a number
    best_step: int | None
    patience: int  # evaluations in a row that did not improve on `best`


@dataclass(frozen=True)
class CheckpointEvent:
    step: int
    path: Path  # checkpoints/step-N: a directory `init_from="resume"` continues from
    best: bool  # also copied to best/ (the best value of TrainConfig.best_metric so far)


@dataclass(frozen=True)
class DoneEvent:
    result: TrainResult


Event = StartEvent | StepEvent | MetricsEvent | EvalEvent | EarlyStopEvent | CheckpointEvent | DoneEvent
OnEvent = Callable[[Event], None]
ShouldStop = Callable[[], bool]
