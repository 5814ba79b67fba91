"""A progress bar drawn from a run's events: what `gptkit train`, `gptkit finetune` and the quick start show."""

from __future__ import annotations

from typing import Any

from gptkit.training.events import DoneEvent, EarlyStopEvent, EvalEvent, Event, StartEvent, StepEvent
from gptkit.training.runlog import format_metrics


class ProgressBar:
    """An `on_event` listener: a tqdm bar on stderr (loss, learning rate, targets/s), a line per evaluation and
    one for an early stop."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, event: Event) -> None:
        from tqdm.auto import tqdm

        if isinstance(event, StartEvent):
            self.bar = tqdm(total=event.max_steps, initial=event.step, dynamic_ncols=True, unit="step")
        elif isinstance(event, StepEvent):
            # the figures first: update() draws the bar, so they show with the step they belong to
            self.bar.set_postfix(
                loss=f"{event.loss:.4f}", lr=f"{event.lr:.2e}", tok_s=f"{event.tokens_per_second:,.0f}", refresh=False
            )
            self.bar.update(1)
        elif isinstance(event, EvalEvent):
            if event.sample is not None:
                self.bar.write(f"step {event.step}: val loss {event.metrics['val_loss']:.4f}\n{event.sample}\n")
            else:
                self.bar.write(f"step {event.step}: {format_metrics(event.metrics)}")
        elif isinstance(event, EarlyStopEvent):
            self.bar.write(f"step {event.step}: {early_stop_line(event)}")
        elif isinstance(event, DoneEvent):
            self.bar.close()


def early_stop_line(event: EarlyStopEvent) -> str:
    """`stopped early: f1 did not improve on 0.8125 (step 40) in 3 evaluations`."""
    if event.best is None:
        return f"stopped early: {event.metric} was not a number in {event.patience} evaluations"
    return (
        f"stopped early: {event.metric} did not improve on {event.best:.4f} (step {event.best_step}) "
        f"in {event.patience} evaluations"
    )
