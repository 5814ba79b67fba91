"""Run directories: rotating training checkpoints, the run root and best/ pointing at the newest and the best.

A run directory holds the latest model at its root (so `gptkit generate --model RUN` works at any time),
`checkpoints/step-NNNNNNN/` with the full training state, and `best/` (the best value of
TrainConfig.best_metric: the lowest validation loss by default; see best.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gptkit.errors import CheckpointError, ConfigError
from gptkit.io import atomic_directory
from gptkit.models.config import CONFIG_FILE
from gptkit.training.config import RUN_CONFIG_FILE as TRAIN_CONFIG_FILE

TRAINER_STATE = "trainer_state.pt"
RUN_MARKERS = (TRAIN_CONFIG_FILE, "checkpoints")  # what makes a directory a run that --overwrite may clear


def stale_run_files(
    run_dir: Path, *, overwrite: bool, resume: bool, reads: tuple[Path, ...] = (), inputs: tuple[Path, ...] = ()
) -> list[Path]:
    """Check that a run may write into run_dir; return the old run's entries to remove first (with overwrite).

    A run never writes into a model it reads (`reads`, or the directory holding one), not even with
    overwrite. A resume continues the run there; otherwise the directory must be new or empty, or hold an
    earlier gptkit run and `overwrite` be set. `inputs` inside run_dir (quickstart's data/) are neither
    counted nor removed. Nothing is written or removed here.
    """
    here = run_dir.resolve()
    for source in reads:
        there = source.resolve()
        if here == there or here in there.parents or there in here.parents:
            raise ConfigError(
                f"--out-dir {run_dir} would write into the model the run reads ({source}); choose another --out-dir"
            )
    if resume or not run_dir.is_dir():
        return []
    kept = {p.resolve() for p in inputs}
    entries = sorted(p for p in run_dir.iterdir() if p.resolve() not in kept)
    if not entries:
        return []
    if not any((run_dir / name).exists() for name in RUN_MARKERS):
        raise ConfigError(
            f"--out-dir {run_dir} is not empty and holds no gptkit run ({entries[0].name}, ...); "
            "choose a new or empty --out-dir"
        )
    if not overwrite:
        raise ConfigError(
            f"--out-dir {run_dir} already holds a run; pass --overwrite to start afresh (its checkpoints, best/, "
            "metrics.jsonl and curves.png are removed) or --init-from resume to continue it"
        )
    return entries


def remove_paths(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def save_training_checkpoint(
    run_dir: Path, step: int, write_model: Callable[[Path], None], state: dict[str, Any], *, keep_last: int, best: bool
) -> Path:
    """Write checkpoints/step-N (the model files `write_model(directory)` writes + the trainer state) atomically,
    then point the run root and best/ at it.

    A crash or a full disk mid-write leaves every earlier checkpoint intact. The root and best/ share the
    checkpoint's files by hard link where the filesystem allows, so they cost no extra space.
    """
    target = run_dir / "checkpoints" / f"step-{step:07d}"
    with atomic_directory(target) as staging:
        write_model(staging)
        torch.save(state, staging / TRAINER_STATE)
    for dest in [run_dir] + ([run_dir / "best"] if best else []):
        mirror_model_files(target, dest)
    for old in sorted((run_dir / "checkpoints").glob("step-*"))[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def mirror_model_files(source: Path, dest: Path) -> None:
    """Point dest's model files at a checkpoint's (hard links, else copies), each file replaced atomically."""
    dest.mkdir(parents=True, exist_ok=True)
    # weights and tokenizer first, config.json last: a reader never sees a new config with old weights
    files = sorted(
        (p for p in source.iterdir() if p.is_file() and p.name != TRAINER_STATE), key=lambda p: p.name == CONFIG_FILE
    )
    for file in files:
        tmp = dest / f".{file.name}.link"
        tmp.unlink(missing_ok=True)
        try:
            os.link(file, tmp)
        except OSError:
            shutil.copyfile(file, tmp)
        os.replace(tmp, dest / file.name)


def latest_training_checkpoint(run_dir: Path) -> Path | None:
    done = [p for p in sorted((run_dir / "checkpoints").glob("step-*")) if (p / TRAINER_STATE).is_file()]
    return done[-1] if done else None


def load_trainer_state(checkpoint_dir: Path) -> dict[str, Any]:
    path = checkpoint_dir / TRAINER_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing; {checkpoint_dir} is not a training checkpoint") from exc
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read trainer state ({type(exc).__name__}: {exc})") from exc
