"""--best-metric and --early-stopping-patience: best/ is the checkpoint whose recorded metric is best, in that
metric's direction; a run stops after N evaluations without improvement; a resumed run chooses and stops as an
uninterrupted one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gptkit import ConfigError
from gptkit.tasks.config import TaskConfig
from gptkit.tasks.finetune import finetune
from gptkit.tasks.registry import TASK_TYPES
from gptkit.training.best import Best, improves
from gptkit.training.events import CheckpointEvent, EarlyStopEvent, StepEvent
from gptkit.training.progress import early_stop_line
from test_finetune import small_train, write_sentiment


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _figures(run: Path) -> list[dict]:
    """metrics.jsonl without its clock (throughput and elapsed seconds differ between runs)."""
    return [{k: v for k, v in r.items() if k not in ("tokens_per_second", "elapsed")} for r in _records(run)]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _checkpoint(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:07d}"


def oracle(evaluations: list[dict], metric: str, higher: bool, patience: int) -> tuple[int, int | None]:
    """From metrics.jsonl's evaluation records: the step of the first best value, and where patience runs out."""
    best, best_step, stale = None, None, 0
    for record in evaluations:
        value = record[metric]
        if best is None or (value > best if higher else value < best):
            best, best_step, stale = value, record["step"], 0
        else:
            stale += 1
        if patience and stale == patience:
            return best_step, record["step"]
    return best_step, None


def test_best_follows_its_metric_in_its_direction_and_counts_evaluations_without_improvement() -> None:
    assert improves("min", 0.5, None) and improves("min", 0.4, 0.5) and not improves("min", 0.5, 0.5)
    assert improves("max", 0.6, 0.5) and not improves("max", 0.4, 0.5) and not improves("max", math.nan, None)
    best = Best("f1", "max")
    assert [best.update(s, {"f1": v}) for s, v in ((1, 0.5), (2, 0.7), (3, 0.7), (4, 0.6))] == [
        True,
        True,
        False,
        False,
    ]
    assert (best.value, best.step, best.stale) == (0.7, 2, 2) and best.exhausted(2) and not best.exhausted(0)
    assert Best.from_state({"best": best.state()}) == best
    # a checkpoint from before best_metric kept only the lowest validation loss
    assert Best.from_state({"best_val_loss": 1.5}) == Best("val_loss", "min", 1.5)
    assert Best.from_state({"best_val_loss": math.inf}) == Best()
    with pytest.raises(ConfigError, match="did not report it"):
        best.update(5, {"accuracy": 1.0})
    line = early_stop_line(EarlyStopEvent(16, "f1", 0.8, 10, 3))  # what the progress bar writes
    assert line == "stopped early: f1 did not improve on 0.8000 (step 10) in 3 evaluations"


# f1 at each evaluation, scripted: best at step 10 (a tie at 8 and at 14 is no improvement); with patience 3 the
# evaluations at 12, 14 and 16 do not improve it, so the run stops at 16 of 40.
SCRIPT = {2: 0.5, 4: 0.7, 6: 0.6, 8: 0.7, 10: 0.8, 12: 0.75, 14: 0.8, 16: 0.79}
REAL_SCORE = TASK_TYPES["classify"].recipe.score
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16}  # small checkpoints: the runs here write many


def _scripted_run(tmp_path: Path, name: str, stop_at: int | None = None, **changes):
    """Fine-tune the sentiment task with f1 as SCRIPT says (the other scores and val_loss are real); return the
    result and the events."""
    now = {"step": 0}

    def score(outputs, encoded, labels):
        return {**REAL_SCORE(outputs, encoded, labels), "f1": SCRIPT[now["step"]]}

    events: list = []

    def listen(event) -> None:
        events.append(event)
        if isinstance(event, StepEvent):
            now["step"] = event.step  # the evaluation that follows is this step's

    train_file = write_sentiment(tmp_path / "train.tsv", 48, 0)
    task = TaskConfig(task="classify", train_file=str(train_file), max_length=16, epochs=None)
    settings = dict(max_steps=40, eval_interval=2, save_interval=7, keep_last=100, dropout=0.1, model_overrides=TINY)
    train = small_train(tmp_path, name, best_metric="f1", early_stopping_patience=3, **{**settings, **changes})
    stop = (lambda: now["step"] >= stop_at) if stop_at is not None else None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TASK_TYPES["classify"].recipe, "score", score)
        return finetune(task, train, on_event=listen, should_stop=stop), events


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, list]:
    """An uninterrupted scripted run: its folder (where resumed ones go too), result and events."""
    tmp = tmp_path_factory.mktemp("scripted")
    result, events = _scripted_run(tmp, "whole")
    return tmp, result, events


def test_best_is_the_checkpoint_of_the_best_f1_and_the_run_stops_when_it_no_longer_improves(scripted) -> None:
    _, result, events = scripted
    run = result.run_dir
    assert result.train.step == 16 and result.train.early_stopped and not result.train.stopped
    assert (result.train.best, result.train.best_step) == (0.8, 10)
    evaluations = [r for r in _records(run) if "val_loss" in r]
    assert [(r["step"], r["f1"]) for r in evaluations] == sorted(SCRIPT.items())
    assert oracle(evaluations, "f1", higher=True, patience=3) == (10, 16)
    assert _records(run)[-1] == {"step": 16, "early_stop": "f1", "best": 0.8, "best_step": 10, "patience": 3}
    [stop] = [e for e in events if isinstance(e, EarlyStopEvent)]
    assert (stop.step, stop.metric, stop.best, stop.best_step, stop.patience) == (16, "f1", 0.8, 10, 3)
    # every improving evaluation was kept (2, 4, 10), beside the save interval (7, 14) and the early stop (16)
    saved = [(e.step, e.best) for e in events if isinstance(e, CheckpointEvent)]
    assert saved == [(2, True), (4, True), (7, False), (10, True), (14, False), (16, False)]
    assert _same_weights(run / "best", _checkpoint(run, 10)) and not _same_weights(run / "best", _checkpoint(run, 16))
    assert _same_weights(run, _checkpoint(run, 16))  # the run's root is its last step


def test_a_resumed_run_keeps_the_best_and_the_patience_count(scripted) -> None:
    tmp_path, whole, _ = scripted
    # stopped at step 13: after the evaluation at 12, the first one that did not improve on step 10's
    part, _ = _scripted_run(tmp_path, "part", stop_at=13)
    assert part.train.stopped and part.train.step == 13 and not part.train.early_stopped
    resumed, events = _scripted_run(tmp_path, "part", init_from="resume")
    assert resumed.train.step == 16 and resumed.train.early_stopped and resumed.train.best_step == 10
    assert _figures(resumed.run_dir) == _figures(whole.run_dir)
    assert _same_weights(resumed.run_dir / "best", whole.run_dir / "best")
    again, events = _scripted_run(tmp_path, "part", init_from="resume")
    assert again.train.step == 16 and again.train.early_stopped  # a run that stopped early stays stopped
    assert [type(e).__name__ for e in events] == ["StartEvent", "DoneEvent"]


def test_cli_best_metric_and_early_stopping_on_real_scores_match_metrics_jsonl(tmp_path: Path, capsys) -> None:
    from gptkit.cli import main

    train_file = write_sentiment(tmp_path / "train.tsv", 64, 0)
    eval_file = write_sentiment(tmp_path / "dev.tsv", 24, 1)
    run = tmp_path / "run"
    flags = ["--model", "gpt2-tiny", "--init-from", "scratch", "--train", str(train_file), "--eval", str(eval_file)]
    flags += ["--max-length", "16", "--batch-size", "8", "--lr", "2e-3", "--warmup-steps", "5", "--seed", "3"]
    flags += ["--max-steps", "60", "--eval-interval", "2", "--keep-last", "100", "--out-dir", str(run)]
    flags += ["--no-progress", "--device", "cpu", "--best-metric", "accuracy", "--early-stopping-patience", "3"]
    assert main(["finetune", "classify", *flags]) == 0
    out = capsys.readouterr().out
    evaluations = [r for r in _records(run) if "val_loss" in r]
    best_step, stopped_at = oracle(evaluations, "accuracy", higher=True, patience=3)
    assert stopped_at is not None and stopped_at < 60  # accuracy reaches its ceiling and stays: the run stops
    assert evaluations[-1]["step"] == stopped_at and _records(run)[-1]["early_stop"] == "accuracy"
    assert f"best/ is step {best_step} (accuracy " in out and "stopped early" in out
    assert _same_weights(run / "best", _checkpoint(run, best_step))
    # the default, validation loss, chooses by its own direction: the lowest
    assert main(["finetune", "classify", *flags, "--best-metric", "val_loss", "--overwrite"]) == 0
    evaluations = [r for r in _records(run) if "val_loss" in r]
    best_step, _ = oracle(evaluations, "val_loss", higher=False, patience=3)
    assert _same_weights(run / "best", _checkpoint(run, best_step))


def test_an_unknown_best_metric_names_the_flag_and_the_metrics_the_task_reports(tmp_path: Path, capsys) -> None:
    from gptkit.cli import main

    train_file = write_sentiment(tmp_path / "train.tsv", 16, 0)
    task = TaskConfig(task="classify", train_file=str(train_file), max_length=16, epochs=None)
    expected = "--best-metric bleu: this run's evaluations do not report it; they report val_loss, accuracy, precision"
    with pytest.raises(ConfigError, match=expected):
        finetune(task, small_train(tmp_path, "run", max_steps=2, best_metric="bleu"))
    flags = ["--model", "gpt2-tiny", "--init-from", "scratch", "--train", str(train_file), "--max-length", "16"]
    assert main(["finetune", "classify", *flags, "--out-dir", str(tmp_path / "cli"), "--best-metric", "em"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptkit finetune: error: --best-metric em: ") and "accuracy, precision, recall, f1" in err
    with pytest.raises(ConfigError, match="--early-stopping-patience counts evaluations"):
        small_train(tmp_path, "x", early_stopping_patience=2, eval_interval=0)
