"""Run directories: rotating training checkpoints, the run root and best/ pointing at the newest and the best.

A run directory holds the latest model at its root (so `gptkit generate --model RUN` works at any time),
`checkpoints/step-NNNNNNN/` with the full training state, and `best/` (lowest validation loss).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gptkit.errors import CheckpointError
from gptkit.io import atomic_directory
from gptkit.models.config import CONFIG_FILE

TRAINER_STATE = "trainer_state.pt"


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
        _mirror_model_files(target, dest)
    for old in sorted((run_dir / "checkpoints").glob("step-*"))[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _mirror_model_files(source: Path, dest: Path) -> None:
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
