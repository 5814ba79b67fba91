"""What a training run leaves for people to read: metrics.jsonl and the curves drawn from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptkit.io import atomic_write, atomic_write_text

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """On resume: forget records logged after the checkpoint we resume from (they will be redone)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))


# Evaluation records that are not metrics to draw: the losses have their own axes, a sample is text.
_NOT_METRICS = frozenset({"step", "val_loss", "val_perplexity", "train_eval_loss", "sample"})


def counted(n: int, noun: str) -> str:
    """`1 document`, `2,048 documents`: a count and its noun, plural unless the count is one."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def format_metrics(metrics: dict[str, Any]) -> str:
    """`accuracy 0.9312, examples 872`: counts as integers, other figures to four decimals."""
    return ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in metrics.items())


def plot_curves(run_dir: Path, *, unit: str = "token") -> Path | None:
    """Draw metrics.jsonl's curves (see `curves_figure`) into curves.png; None without matplotlib."""
    try:
        fig = curves_figure(read_metrics(run_dir), unit=unit, title=run_dir.resolve().name)
    except ImportError:
        return None
    path = run_dir / CURVES_FILE
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return path


def curves_figure(records: list[dict[str, Any]], *, unit: str = "token", title: str = "") -> Any:
    """A matplotlib Figure of train/validation loss (nats per `unit`, what one target of the loss is), the
    validation metrics a task reports (accuracy, F1, ...) and the learning rate, against step.

    With matplotlib's object API and its Agg canvas: no pyplot, no backend switch, nothing global touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def curve(key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]

    evaluations = [r for r in records if "val_loss" in r]
    figures = (k for r in evaluations for k, v in r.items() if isinstance(v, (int, float)) and k not in _NOT_METRICS)
    names = list(dict.fromkeys(figures))
    fig = Figure(figsize=(8, 8 if names else 6))
    FigureCanvasAgg(fig)
    if names:
        ax_loss, ax_metrics, ax_lr = fig.subplots(3, 1, sharex=True, height_ratios=(3, 2, 1))
        for name in names:
            ax_metrics.plot(*zip(*curve(name), strict=True), label=name, marker="o", linewidth=1.5)
        ax_metrics.set_ylabel("validation")
        ax_metrics.grid(alpha=0.3)
        ax_metrics.legend()
    else:
        ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    if train := curve("loss"):
        ax_loss.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val := curve("val_loss"):
        ax_loss.plot(*zip(*val, strict=True), label="validation", marker="o", linewidth=1.5)
    ax_loss.set_ylabel(f"loss (nats/{unit})")
    ax_loss.grid(alpha=0.3)
    if train or val:  # a run stopped before its first step has no curve to name
        ax_loss.legend()
    ax_loss.set_title(title)
    if lrs := curve("lr"):
        ax_lr.plot(*zip(*lrs, strict=True), color="tab:green", linewidth=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    return fig
