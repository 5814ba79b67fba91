"""Reporters: TensorBoard's scalars equal metrics.jsonl's records step for step (also across a crash and a resume);
W&B gets the same records under one run id; a missing package is a one-line error naming what to install."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from gptkit import ConfigError
from gptkit.training.config import TrainConfig
from gptkit.training.events import StepEvent
from gptkit.training.reporting import TENSORBOARD_DIR, WANDB_ID_FILE, split_record
from gptkit.training.train import train
from test_train import _config as train_config


def _config(data: Path, out: Path, **changes) -> TrainConfig:
    """test_train's tiny run, shorter: 12 steps, an evaluation (with a sample) every 4."""
    return train_config(data, out, **{"max_steps": 12, "eval_interval": 4, "sample_tokens": 8, **changes})


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _expected_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Each number of metrics.jsonl by its key, as (step, value) in file order, rounded to float32 as TensorBoard
    stores scalars."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for record in _records(run):
        step, numbers, _ = split_record(record)
        for key, value in numbers.items():
            scalars.setdefault(key, []).append((step, float(np.float32(value))))
    return scalars


def _tensorboard(run: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """The scalars TensorBoard shows for the run (every event file, purges applied) and its text tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags["scalars"]}, tags["tensors"]


def test_tensorboard_scalars_equal_metrics_jsonl_step_for_step(char_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    train(_config(char_data, run, report_to="tensorboard"))
    scalars, texts = _tensorboard(run)
    expected = _expected_scalars(run)
    assert scalars == expected
    assert [s for s, _ in scalars["loss"]] == list(range(1, 13)) and [s for s, _ in scalars["val_loss"]] == [4, 8, 12]
    assert set(expected) >= {"loss", "lr", "tokens", "elapsed", "tokens_per_second", "val_loss", "train_eval_loss"}
    assert texts == ["sample/text_summary"]  # the evaluations' samples, as text


def test_tensorboard_after_a_crash_and_a_resume_has_each_step_once_as_metrics_jsonl(
    char_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"

    def crash(event) -> None:
        if isinstance(event, StepEvent) and event.step == 10:
            raise KeyboardInterrupt  # killed after logging steps 9 and 10; the last checkpoint is step 8

    with pytest.raises(KeyboardInterrupt):
        train(_config(char_data, run, report_to="tensorboard"), on_event=crash)
    before, _ = _tensorboard(run)
    assert [s for s, _ in before["loss"]] == list(range(1, 11))  # steps 9 and 10 reached TensorBoard's files
    train(_config(char_data, run, report_to="tensorboard", init_from="resume"))
    scalars, _ = _tensorboard(run)
    assert scalars == _expected_scalars(run)  # 9 and 10 as redone, once each
    assert [s for s, _ in scalars["loss"]] == list(range(1, 13))
    whole = tmp_path / "whole"
    train(_config(char_data, whole, report_to="tensorboard"))
    assert _tensorboard(whole)[0]["loss"] == scalars["loss"]  # the same global steps and values as uninterrupted


class FakeWandb(types.ModuleType):
    """The part of wandb's API the reporter uses: init, util.generate_id, run.log, run.finish."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits: list[dict] = []
        self.logged: list[tuple[int, dict]] = []
        self.finished = 0
        self.util = types.SimpleNamespace(generate_id=lambda: f"id{len(self.inits)}")

    def init(self, **kwargs):
        self.inits.append(kwargs)
        wandb = self

        class Run:
            def log(self, data: dict, *, step: int) -> None:
                wandb.logged.append((step, data))

            def finish(self) -> None:
                wandb.finished += 1

        return Run()


def test_wandb_gets_every_record_under_one_run_across_a_resume(char_data: Path, tmp_path: Path, monkeypatch) -> None:
    wandb = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    run = tmp_path / "run"
    train(_config(char_data, run, report_to="wandb", max_steps=6))
    train(_config(char_data, run, report_to="wandb", max_steps=12, init_from="resume"))
    first, second = wandb.inits
    assert first["id"] == second["id"] == "id0" == (run / WANDB_ID_FILE).read_text().strip()
    assert first["resume"] == second["resume"] == "allow" and first["dir"] == str(run)
    assert first["config"]["report_to"] == "wandb" and second["config"]["max_steps"] == 12
    expected = [(r["step"], {k: v for k, v in r.items() if k != "step"}) for r in _records(run)]
    assert wandb.logged == expected and wandb.finished == 2


def test_a_missing_reporter_package_is_an_error_naming_what_to_install(
    char_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from gptkit.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"--report-to wandb needs the wandb package: pip install wandb"):
        train(_config(char_data, tmp_path / "a", report_to="wandb"))
    assert not (tmp_path / "a").exists()  # refused before the run began
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    flags = ["--data", str(char_data), "--out-dir", str(tmp_path / "b"), "--max-steps", "1", "--no-progress"]
    assert main(["train", *flags, "--report-to", "tensorboard"]) == 2
    assert "needs the tensorboard package: pip install tensorboard" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--report-to tensorbord: unknown tensorbord; give none, tensorboard, wandb"):
        TrainConfig(report_to="tensorbord")
    assert TrainConfig(report_to="tensorboard, wandb").reporters == ("tensorboard", "wandb")
    assert TrainConfig().reporters == TrainConfig(report_to="none").reporters == ()


def test_quickstart_takes_report_to(monkeypatch, tmp_path: Path) -> None:
    from gptkit.cli import main
    from gptkit.training import quickstart

    seen: list[TrainConfig] = []

    def stop(config: TrainConfig, **kwargs):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(quickstart, "train", stop)
    assert main(["quickstart", "--out-dir", str(tmp_path / "qs"), "--report-to", "tensorboard"]) == 130
    assert seen[0].report_to == "tensorboard"


def test_finetune_reports_the_tasks_metrics_to_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from gptkit.cli import main
    from test_finetune import write_sentiment

    train_file = write_sentiment(tmp_path / "train.tsv", 32, 0)
    run = tmp_path / "run"
    flags = ["--model", "gpt2-tiny", "--init-from", "scratch", "--n-layer", "1", "--n-embd", "16", "--n-head", "2"]
    flags += ["--train", str(train_file), "--max-length", "16", "--max-steps", "4", "--eval-interval", "2"]
    flags += ["--log-interval", "1", "--out-dir", str(run), "--no-progress", "--report-to", "tensorboard"]
    assert main(["finetune", "classify", *flags]) == 0
    scalars, _ = _tensorboard(run)
    assert scalars == _expected_scalars(run) and [s for s, _ in scalars["f1"]] == [2, 4]
    assert set(scalars) >= {"loss", "val_loss", "accuracy", "precision", "recall", "f1"}
