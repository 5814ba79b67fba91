"""Which checkpoint is best, and when a run stops early.

A run's evaluations report metrics (validation loss, and a task's accuracy, F1, exact match, ...), each with the
direction in which it gets better. `Best` follows one of them (TrainConfig.best_metric): its best value and
step, the checkpoint best/ holds, and how many evaluations in a row have not improved on it, which ends the
run once it reaches TrainConfig.early_stopping_patience. Its state goes into every checkpoint, so a resumed run
chooses and stops exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from gptkit.errors import ConfigError

Goal = Literal["min", "max"]  # lower or higher is better
LOSSES: dict[str, Goal] = {"val_loss": "min"}  # what every run's evaluation reports
PERPLEXITY: dict[str, Goal] = {"val_perplexity": "min"}  # and a language model's (pre-training, instruction tuning)


def goal_of(metric: str, metrics: Mapping[str, Goal]) -> Goal:
    """The direction of `metric` among the metrics a run reports, or a ConfigError naming the flag and them."""
    if metric not in metrics:
        raise ConfigError(
            f"--best-metric {metric}: this run's evaluations do not report it; they report {', '.join(metrics)}"
        )
    return metrics[metric]


def improves(goal: Goal, value: float, best: float | None) -> bool:
    """Whether `value` is strictly better than `best` (None: nothing yet); NaN never is."""
    if math.isnan(value):
        return False
    return best is None or (value < best if goal == "min" else value > best)


@dataclass
class Best:
    """The best value of one metric so far, where it was, and the evaluations since (see the module's doc)."""

    metric: str = "val_loss"
    goal: Goal = "min"
    value: float | None = None
    step: int | None = None
    stale: int = 0  # evaluations in a row that did not improve on `value`

    def update(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Take one evaluation's metrics into account; True when it is the new best."""
        value = metrics.get(self.metric)
        if value is None:  # the metric was known at the start (goal_of), so the evaluation broke its promise
            raise ConfigError(f"--best-metric {self.metric}: the evaluation at step {step} did not report it")
        better = improves(self.goal, float(value), self.value)
        if better:
            self.value, self.step, self.stale = float(value), step, 0
        else:
            self.stale += 1
        return better

    def exhausted(self, patience: int) -> bool:
        """Whether `patience` evaluations in a row went without improvement (0: never, early stopping is off)."""
        return patience > 0 and self.stale >= patience

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Best:
        """A checkpoint's Best; checkpoints older than it kept only `best_val_loss` (the lowest validation loss)."""
        if "best" in state:
            return cls(**state["best"])
        value = state.get("best_val_loss", math.inf)
        return cls(value=value if math.isfinite(value) else None)
