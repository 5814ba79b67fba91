"""The one training loop, `fit(config, build)`, shared by pre-training and every fine-tuning task.

What is trained is an `Objective`: the model, a sampler of items (token windows, example indices), how items
become a batch, the loss, the evaluation and how the model is saved. Language modelling (train.py) and the
tasks (finetune.py) only build objectives; the loop does the rest: AdamW over the trainable parameters, the
learning-rate schedule, gradient accumulation, clipping, mixed precision, DDP/FSDP, evaluation, atomic
checkpoints with keep-last-k and best (by any metric the evaluation reports, best.py), early stopping, resume,
metrics and curves. It prints nothing: it reports typed events (events.py) to `on_event` and to the reporters
TrainConfig.report_to names (reporting.py), and stops cleanly at a step boundary when `should_stop()` says so.

Losses are weighted by their number of targets (tokens, examples), so accumulated micro-batches and ranks
give the gradient of one big batch even when micro-batches hold different numbers of targets (instruction
tuning's completion tokens). Every rank draws the whole global batch from one seeded generator and takes its
rows, so N processes see exactly what one process sees with N times the accumulation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from gptkit.errors import ConfigError, GptkitError
from gptkit.io import atomic_write_text
from gptkit.models import kernels
from gptkit.training import distributed, reporting
from gptkit.training.best import LOSSES, Best, Goal, goal_of
from gptkit.training.checkpoints import (
    TRAIN_CONFIG_FILE,
    latest_training_checkpoint,
    load_trainer_state,
    remove_paths,
    save_training_checkpoint,
    stale_run_files,
)
from gptkit.training.config import TrainConfig, check_resume_changes
from gptkit.training.events import (
    CheckpointEvent,
    DoneEvent,
    EarlyStopEvent,
    EvalEvent,
    Event,
    MetricsEvent,
    OnEvent,
    ShouldStop,
    StartEvent,
    StepEvent,
    TrainResult,
)
from gptkit.training.optim import make_adamw
from gptkit.training.runlog import append_metrics, plot_curves, truncate_metrics
from gptkit.training.scopes import flushing_denormals, private_rng, rng_state, set_rng_state

PLOT_EVERY = 30.0  # seconds between redraws of curves.png (~0.4 s each on a CPU); always drawn at the end
Batch = dict[str, Tensor]


class TrainingError(GptkitError):
    """Training cannot go on (diverged, data too small, mismatched checkpoint); the last checkpoint stays."""


class DivergedError(TrainingError):
    """The loss became NaN or infinite; the last checkpoint stays."""


class Sampler(Protocol):
    """Draws the items of each step; its whole state goes into checkpoints so a resume draws the same."""

    def draw(self, n: int) -> Tensor: ...

    def state(self) -> Any: ...

    def load_state(self, state: Any) -> None: ...


@dataclass
class Objective:
    """What a run trains and how. Built by a task for `fit`; every callable is plain and small.

    loss(module, batch) returns the batch's mean loss and the number of targets it averages over; `count(items)`
    gives that number for drawn items before any forward pass (the global normaliser). `module` is what the
    loop calls: the model itself, or its DDP / compiled wrapper. `tokens(items)` is the number of real (not
    padding) input tokens the items hold, what tokens/s counts; None: every target is a token (`count`).
    """

    model: nn.Module  # on its device, in train mode; the optimizer gets its parameters that require grad
    tokenizer: Any
    sampler: Sampler
    collate: Callable[[Tensor], Batch]
    count: Callable[[Tensor], int]
    loss: Callable[[nn.Module, Batch], tuple[Tensor, int]]
    evaluate: Callable[[nn.Module, Any], dict[str, float]]  # (model, autocast) -> {"val_loss": ..., metrics}
    save: Callable[[nn.Module, dict[str, Tensor], Path], None]  # (model, full state dict, directory)
    fingerprint: str  # identifies the training data; a resume on other data is refused
    sample: Callable[[nn.Module], str] | None = None  # a generated text to look at after each evaluation
    data: str = "the training data"  # what `fingerprint` identifies, for messages
    tokens: Callable[[Tensor], int] | None = None
    unit: str = "token"  # what one target of the loss is, for the curves' label (nats per unit)
    # the figures `evaluate` reports, each with the way it gets better (TrainConfig.best_metric picks one)
    metrics: dict[str, Goal] = field(default_factory=lambda: dict(LOSSES))


Build = Callable[[TrainConfig, torch.device, "Path | None"], Objective]


def fit(
    config: TrainConfig,
    build: Build,
    *,
    on_event: OnEvent | None = None,
    should_stop: ShouldStop | None = None,
    dist: distributed.DistInfo | None = None,
) -> TrainResult:
    """Train the objective `build(config, device, resume_dir)` returns, as `config` says.

    resume_dir is the latest training checkpoint when config.init_from == "resume", else None. `on_event`
    receives the run's events (events.py) on the main process, as do the reporters of config.report_to (they
    are closed when the run ends). `should_stop()` is asked before each step; when
    it says True the run writes a checkpoint of its last completed step (unless it has one) and returns with
    `stopped` set, and `init_from="resume"` continues it exactly. `dist` is this process's place in a
    distributed run (default: what torchrun describes). Global state is the caller's: the run seeds and uses
    its own scope of torch's RNG, and restores the flush-denormal flag, malloc's settings and the oneDNN switch.
    """
    info = dist if dist is not None else distributed.DistInfo.from_env()
    device = distributed.setup(config.device, info)
    cpu = device.type == "cpu"
    try:
        with (
            private_rng(config.seed),
            flushing_denormals(cpu),
            kernels.keep_freed_memory(cpu and config.keep_freed_memory),  # no page faults on each step's tensors
            kernels.use_onednn(config.onednn),
            reporting.reporters(config) as reporters,
        ):
            return _fit(config, build, info, device, reporting.fan_out(on_event, *reporters), should_stop)
    finally:
        distributed.teardown(info)


def _fit(
    config: TrainConfig,
    build: Build,
    info: distributed.DistInfo,
    device: torch.device,
    on_event: OnEvent | None,
    should_stop: ShouldStop | None,
) -> TrainResult:
    run_dir = Path(config.out_dir)
    stale = stale_run_files(
        run_dir,
        overwrite=config.overwrite,
        resume=config.init_from == "resume",
        reads=_model_sources(config),
        inputs=(Path(config.data),) if config.data else (),
    )
    resume_from = latest_training_checkpoint(run_dir) if config.init_from == "resume" else None
    if config.init_from == "resume" and resume_from is None:
        raise TrainingError(f"{run_dir}: nothing to resume (no checkpoints/step-* with a trainer state)")
    if resume_from is not None and (run_dir / TRAIN_CONFIG_FILE).is_file():
        # model_overrides are checked against the saved model itself, by the objective
        wanted = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "model_overrides"}
        check_resume_changes(TrainConfig.from_file(run_dir / TRAIN_CONFIG_FILE), wanted, run_dir)
    distributed.barrier(info)  # every rank has looked at run_dir before the main one writes there
    if config.dtype == "float16" and device.type != "cuda":
        raise ConfigError("float16 training needs a GPU (loss scaling); use --dtype bfloat16 on CPU")
    objective = build(config, device, resume_from)
    goal = goal_of(config.best_metric, objective.metrics)
    model = objective.model
    try:
        trained = distributed.wrap(model, info, device, fsdp=config.fsdp, compile=config.compile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    optimizer = make_adamw(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        decay_embeddings=config.decay_embeddings,
        device_type=device.type,
    )
    resumed = _resume(resume_from, objective, optimizer, run_dir) if resume_from is not None else None
    step, best, tokens_before, seconds_before = resumed or (0, Best(config.best_metric, goal), 0, 0.0)
    if info.is_main:
        remove_paths(stale)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / TRAIN_CONFIG_FILE, json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        if resume_from is not None:
            truncate_metrics(run_dir, step)

    scaler = torch.amp.GradScaler("cuda", enabled=config.dtype == "float16")
    autocast = torch.autocast(device.type, dtype=getattr(torch, config.dtype), enabled=config.dtype != "float32")
    if device.type == "cpu" and not kernels.cpu_has_fast(getattr(torch, config.dtype)) and info.is_main:
        warnings.warn(
            f"TrainConfig.dtype={config.dtype!r}: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no "
            f"{config.dtype} matrix instructions, so autocast runs its products in a slow fallback, several times "
            "slower than float32; use dtype='float32' (--dtype float32) on this machine",
            stacklevel=2,
        )

    def emit(event: Event) -> None:
        if info.is_main and on_event is not None:
            on_event(event)

    def log(record: dict[str, Any]) -> None:
        if info.is_main:
            append_metrics(run_dir, record)
            emit(MetricsEvent(record))

    saver = _Checkpoints(config, objective, optimizer, info, run_dir, emit, best)
    saver.saved_step = step if resume_from is not None else -1

    emit(StartEvent(run_dir, step, config.max_steps, tokens_before))
    start, loss_value, val_loss, metrics = time.perf_counter(), math.nan, None, {}
    tokens_done, stopped = 0, False  # in this call; a resumed run's records add what came before
    # a run that stopped early stays stopped when resumed, unless it is given more patience
    while step < config.max_steps and not best.exhausted(config.early_stopping_patience):
        if should_stop is not None and distributed.any_across_ranks(should_stop(), info, device):
            if saver.saved_step != step:
                saver.save(step, best=False, final=True)
            stopped = True
            break
        lr = config.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_value, n_tokens = _optimizer_step(objective, trained, optimizer, scaler, autocast, config, info, device)
        if not math.isfinite(loss_value):
            raise DivergedError(
                f"the loss became {loss_value} at step {step + 1}; training stopped. The last good checkpoint "
                f"is in {run_dir / 'checkpoints'}; try a lower --lr, --grad-clip 1, or --dtype bfloat16"
            )
        step += 1
        tokens_done += n_tokens
        elapsed = time.perf_counter() - start
        rate = tokens_done / elapsed
        saver.totals = total_tokens, total_seconds = tokens_before + tokens_done, seconds_before + elapsed
        last = step == config.max_steps
        if step % config.log_interval == 0 or last:
            log(
                {
                    "step": step,
                    "loss": loss_value,
                    "lr": lr,
                    "tokens_per_second": rate,
                    "tokens": total_tokens,
                    "elapsed": total_seconds,
                }
            )
        emit(StepEvent(step, config.max_steps, loss_value, lr, total_tokens, rate, total_seconds))
        evaluate_now = last or (config.eval_interval > 0 and step % config.eval_interval == 0)
        improved = early_stop = False
        if evaluate_now:
            metrics = objective.evaluate(model, autocast)
            val_loss = metrics["val_loss"]
            improved = best.update(step, metrics)
            record: dict[str, Any] = {"step": step, **metrics}
            sample = None
            # a sharded model needs every rank in each forward pass, so all ranks sample under FSDP
            if config.sample_tokens > 0 and (info.is_main or config.fsdp) and objective.sample is not None:
                sample = record["sample"] = objective.sample(model)
            log(record)
            emit(EvalEvent(step, dict(metrics), sample))
            early_stop = best.exhausted(config.early_stopping_patience) and not last
            if early_stop:
                stop = EarlyStopEvent(step, best.metric, best.value, best.step, best.stale)
                log(
                    {
                        "step": step,
                        "early_stop": stop.metric,
                        "best": stop.best,
                        "best_step": stop.best_step,
                        "patience": stop.patience,
                    }
                )
                emit(stop)
        interval = config.save_interval or config.eval_interval
        # an improving evaluation is always kept: best/ is a checkpoint whatever the save interval
        if last or early_stop or improved or (interval > 0 and step % interval == 0):
            saver.save(step, best=improved, final=last or early_stop)
    seconds = time.perf_counter() - start
    result = TrainResult(
        run_dir,
        step,
        loss_value,
        val_loss,
        best.value,
        tokens_done / max(seconds, 1e-9),
        seconds,
        info.is_main,
        metrics,
        stopped,
        best.step,
        step < config.max_steps and best.exhausted(config.early_stopping_patience),
    )
    emit(DoneEvent(result))
    return result


def _model_sources(config: TrainConfig) -> tuple[Path, ...]:
    """The model directory a run reads (a pretrained checkpoint folder), which it must never write into."""
    source = Path(config.model)
    return (source,) if config.init_from == "pretrained" and source.is_dir() else ()


class _Checkpoints:
    """Writes the run's training checkpoints (every rank takes part) with the state of `best` (best.py), redraws
    curves.png at most every PLOT_EVERY seconds, and reports each checkpoint as an event."""

    def __init__(
        self,
        config: TrainConfig,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        info: distributed.DistInfo,
        run_dir: Path,
        emit: Callable[[Event], None],
        best: Best,
    ) -> None:
        self.config, self.objective, self.optimizer, self.info = config, objective, optimizer, info
        self.run_dir, self.emit, self.best = run_dir, emit, best
        self.saved_step = -1  # the step the newest checkpoint holds
        self.last_plot = -math.inf
        self.totals = (0, 0.0)  # tokens trained on and seconds spent since the run began (resumes included)

    def save(self, step: int, *, best: bool, final: bool) -> None:
        """A checkpoint of `step`, also best/ when `best` (its evaluation is the best so far)."""
        model = self.objective.model
        model_state, optimizer_state = distributed.full_state(model, self.optimizer)  # every rank takes part
        if self.info.is_main:
            state = {
                "step": step,
                "optimizer": optimizer_state,
                "sampler": self.objective.sampler.state(),
                "rng": rng_state(),
                "best": self.best.state(),
                "tokens": self.totals[0],
                "elapsed": self.totals[1],
                "data_fingerprint": self.objective.fingerprint,
                "config": dataclasses.asdict(self.config),
            }
            try:
                path = save_training_checkpoint(
                    self.run_dir,
                    step,
                    lambda d: self.objective.save(model, model_state, d),
                    state,
                    keep_last=self.config.keep_last,
                    best=best,
                )
            except OSError as exc:
                raise TrainingError(
                    f"could not write the checkpoint at step {step} ({exc}); the previous "
                    f"checkpoint in {self.run_dir / 'checkpoints'} is intact"
                ) from exc
            if final or time.perf_counter() - self.last_plot >= PLOT_EVERY:
                plot_curves(self.run_dir, unit=self.objective.unit)
                self.last_plot = time.perf_counter()
            self.emit(CheckpointEvent(step, path, best))
        self.saved_step = step
        distributed.barrier(self.info)


def _resume(
    checkpoint_dir: Path, objective: Objective, optimizer: torch.optim.Optimizer, run_dir: Path
) -> tuple[int, Best, int, float]:
    """Restore the optimizer, sampler and RNG of a training checkpoint; return its step, its Best (the best
    metric and early stopping's count), and the tokens and seconds trained until then (0 for checkpoints older
    than these records)."""
    state = load_trainer_state(checkpoint_dir)
    if state.get("data_fingerprint") != objective.fingerprint:
        raise TrainingError(
            f"{objective.data} is not the data {run_dir} was trained on (its contents or its tokenizer differ)"
        )
    distributed.load_optimizer_state(objective.model, optimizer, state["optimizer"])
    objective.sampler.load_state(state["sampler"])
    set_rng_state(state["rng"])
    return state["step"], Best.from_state(state), state.get("tokens", 0), state.get("elapsed", 0.0)


def _optimizer_step(
    objective: Objective,
    trained: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    autocast: Any,
    config: TrainConfig,
    info: distributed.DistInfo,
    device: torch.device,
) -> tuple[float, int]:
    """One optimizer step over grad_accum micro-batches on every rank; (the global mean loss, its input tokens)."""
    rows, micro, world = config.batch_size, config.grad_accum, info.world_size
    model = objective.model
    items = objective.sampler.draw(rows * micro * world)
    n_global = max(objective.count(items), 1)
    n_tokens = objective.tokens(items) if objective.tokens is not None else n_global
    total = 0.0
    for k in range(micro):
        first = (k * world + info.rank) * rows
        batch = {
            key: value.to(device, non_blocking=True)
            for key, value in objective.collate(items[first : first + rows]).items()
        }
        with distributed.gradient_sync(trained, model, enabled=k == micro - 1):
            with autocast:
                loss, n = objective.loss(trained, batch)
            # DDP averages gradients over ranks; the factor `world` makes the sum the global mean.
            weighted = loss.float() * (n / n_global)
            scaler.scale(weighted * world).backward()
        total += weighted.item()
    if config.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return distributed.mean_across_ranks(total, info, device) * world, n_tokens
