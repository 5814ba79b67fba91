"""A progress bar drawn from a run's events: what `gptkit train`, `gptkit finetune` and the quick start show."""

from __future__ import annotations

from typing import Any

from gptkit.training.events import DoneEvent, EvalEvent, Event, StartEvent, StepEvent


class ProgressBar:
    """An `on_event` listener: a tqdm bar on stderr (loss, learning rate, targets/s) and a line per evaluation."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, event: Event) -> None:
        from tqdm.auto import tqdm

        if isinstance(event, StartEvent):
            self.bar = tqdm(total=event.max_steps, initial=event.step, dynamic_ncols=True, unit="step")
        elif isinstance(event, StepEvent):
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{event.loss:.4f}", lr=f"{event.lr:.2e}", tok_s=f"{event.tokens_per_second:,.0f}", refresh=False
            )
        elif isinstance(event, EvalEvent):
            if event.sample is not None:
                self.bar.write(f"step {event.step}: val loss {event.metrics['val_loss']:.4f}\n{event.sample}\n")
            else:
                self.bar.write(f"step {event.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in event.metrics.items()))
        elif isinstance(event, DoneEvent):
            self.bar.close()
