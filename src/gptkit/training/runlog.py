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


def plot_curves(run_dir: Path) -> Path | None:
    """Draw train/validation loss and learning rate against step into curves.png (None without matplotlib).

    With matplotlib's object API and its Agg canvas: no pyplot, no backend switch, nothing global touched.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    lrs = [(r["step"], r["lr"]) for r in records if "lr" in r]
    fig = Figure(figsize=(8, 6))
    FigureCanvasAgg(fig)
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    if train:
        ax_loss.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        ax_loss.plot(*zip(*val, strict=True), label="validation", marker="o", linewidth=1.5)
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.grid(alpha=0.3)
    if train or val:  # a run stopped before its first step has no curve to name
        ax_loss.legend()
    ax_loss.set_title(run_dir.resolve().name)
    if lrs:
        ax_lr.plot(*zip(*lrs, strict=True), color="tab:green", linewidth=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / CURVES_FILE
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return path
