"""One attempt at a fine-tuning job, in the worker: the row becomes `finetune`'s TaskConfig and TrainConfig, the
run's events become job events and checkpoint rows, and how the run ends becomes the job's status.

The run directory is DATA_DIR/jobs/<id>. An attempt that finds a training checkpoint there (the job was paused,
or its worker stopped or died) continues it with init_from="resume", which repeats the uninterrupted run
exactly; otherwise it starts from the base model. Settings left "auto" are resolved at the first start, from
the data's size and the device, and written to the row, so that every later attempt runs with the same ones.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from gptkit.errors import CheckpointError, ConfigError, DataError
from gptkit.models.checkpoint import read_config, resolve
from gptkit.models.config import LoRAConfig
from gptkit.server.files import RESULTS_PURPOSE, Files, check_fine_tune_file
from gptkit.server.jobs import fine_tuned_model_name
from gptkit.server.store import FileRow, JobCheckpoint, JobEvent, JobRow, NotFoundError, Store, new_id, now
from gptkit.tasks.config import TaskConfig
from gptkit.tasks.finetune import finetune
from gptkit.training.checkpoints import TRAINER_STATE, latest_training_checkpoint, mirror_model_files
from gptkit.training.config import TrainConfig
from gptkit.training.events import CheckpointEvent, DoneEvent, EvalEvent, Event, StartEvent, StepEvent
from gptkit.training.loop import DivergedError, TrainingError

__all__ = [
    "BASE_LR",
    "JobRun",
    "MissingFileError",
    "WorkerLostError",
    "auto_settings",
    "job_error",
    "step_metrics_csv",
    "training_configs",
]

log = logging.getLogger("gptkit.server.jobs")

BASE_LR = TrainConfig.lr  # gptkit's default learning rate; a job's is this times learning_rate_multiplier
AUTO_LORA = LoRAConfig(r=8, alpha=16.0, targets=("c_attn", "c_proj"))  # lora "auto" on a CPU
KEEP_CHECKPOINTS = 3  # OpenAI keeps the checkpoints of a job's last three epochs
MAX_INTERVAL = 1000  # steps between checkpoints (and evaluations) at most, also within an epoch
METRICS_EVERY = 1.0  # seconds between commits of step metrics (a commit's fsync costs milliseconds; a GPU step too)
MAX_ATTEMPTS = 10  # starts of one job; one whose worker keeps dying under it (out of memory) fails instead
CSV_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


class WorkerLostError(TrainingError):
    """The job's workers died under it MAX_ATTEMPTS times (killed for memory, say); it is not tried again."""


class MissingFileError(DataError):
    """A job's training or validation file is gone (deleted, or its bytes removed)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# -- settings -------------------------------------------------------------------------------------


def auto_settings(job: JobRow, examples: int, device: torch.device) -> dict[str, Any]:
    """The row's "auto" settings made definite, for `store.update` (OpenAI's published defaults where it has them):

    n_epochs 3, raised so that at least 100 examples are trained on (at most 25 epochs) and lowered so that at
    most 25,000 are (at least 1); batch_size 0.2% of the examples, from 1 to 256; learning_rate_multiplier 1
    with LoRA and 0.1 when all weights train (gptkit's 6e-4 suits adapters); lora: AUTO_LORA on a CPU, all
    weights on a GPU; max_length: the model's context.
    """
    lora = job.lora
    if lora == "auto":
        lora = asdict(AUTO_LORA) if device.type == "cpu" else None
    epochs = 3
    if examples * epochs < 100:
        epochs = min(25, math.ceil(100 / examples))
    elif examples * epochs > 25_000:
        epochs = max(1, 25_000 // examples)
    auto = {
        "n_epochs": epochs,
        "batch_size": min(256, max(1, math.ceil(0.002 * examples))),
        "learning_rate_multiplier": 1.0 if lora is not None else 0.1,
    }
    hyperparameters = {k: auto[k] if v == "auto" else v for k, v in job.hyperparameters.items()}
    max_length = job.max_length or read_config(resolve(job.model_source).path).n_positions
    return {"hyperparameters": hyperparameters, "lora": lora, "max_length": max_length}


def training_configs(
    job: JobRow, train_file: Path, validation_file: Path | None, run_dir: Path, *, examples: int, device: str = "auto"
) -> tuple[TaskConfig, TrainConfig]:
    """What `finetune` runs for a job whose settings are resolved: instruction tuning on its files, n_epochs
    passes in batches of batch_size at BASE_LR x learning_rate_multiplier (gptkit's cosine schedule, warmup a
    tenth of the steps up to 100), an evaluation and a checkpoint at each epoch's end (and at least every
    MAX_INTERVAL steps), the last KEEP_CHECKPOINTS kept. Resumes when run_dir holds a training checkpoint."""
    hp = job.hyperparameters
    # without a validation file finetune holds out a tenth of the training examples
    rows = examples if validation_file is not None else examples - max(1, examples // 10)
    per_epoch = max(1, math.ceil(rows / hp["batch_size"]))
    interval = min(per_epoch, MAX_INTERVAL)
    task = TaskConfig(
        task="instruct",
        train_file=str(train_file),
        eval_file=None if validation_file is None else str(validation_file),
        epochs=hp["n_epochs"],
        max_length=job.max_length,  # type: ignore[arg-type]
    )
    resume = latest_training_checkpoint(run_dir) is not None
    train = TrainConfig(
        out_dir=str(run_dir),
        init_from="resume" if resume else "pretrained",
        overwrite=not resume,  # an attempt that died before its first checkpoint left only files to clear
        model=job.model_source,
        batch_size=hp["batch_size"],
        lr=BASE_LR * hp["learning_rate_multiplier"],
        warmup_steps=min(100, per_epoch * hp["n_epochs"] // 10),
        eval_interval=interval,
        save_interval=interval,
        keep_last=KEEP_CHECKPOINTS,
        log_interval=1,
        sample_tokens=0,
        progress=False,
        seed=job.seed,
        device=device,
        lora=job.lora,  # type: ignore[arg-type]
    )
    return task, train


# -- how a job ends -------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def job_error(
    exc: BaseException, names: Mapping[str, str] | None = None, validation_file: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object {code, message, param} for what ended a job; `names` maps server paths in messages
    to what the client knows (file ids), and bad data is the validation file's when its id is in the message."""
    message = str(exc)
    for path, name in (names or {}).items():
        message = message.replace(path, name)
    param: str | None = None
    if any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        or (isinstance(e, sqlite3.OperationalError) and "disk is full" in str(e))
        for e in _chain(exc)
    ):
        code, message = "disk_full", f"the server's disk is full: {message}"
    elif isinstance(exc, DivergedError):
        code = "training_diverged"
    elif isinstance(exc, WorkerLostError):
        code = "worker_lost"
    elif isinstance(exc, MissingFileError):
        code, param = "file_not_found", exc.param
    elif isinstance(exc, DataError):
        param = "validation_file" if validation_file and validation_file in message else "training_file"
        code = f"invalid_{param}"
    elif isinstance(exc, CheckpointError):
        code, param = "invalid_model", "model"
    elif isinstance(exc, (ConfigError, TrainingError)):
        code = "invalid_job"
    else:
        code, message = "internal_error", f"{type(exc).__name__}: {message}"
    return {"code": code, "message": message, "param": param}


def step_metrics_csv(events: Sequence[JobEvent]) -> bytes:
    """OpenAI's results file from a job's metrics events (a step run twice, after an interruption: its last)."""
    steps = {e.data["step"]: e.data for e in events if e.type == "metrics" and e.data}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for step in sorted(steps):
        data = {**steps[step], "train_accuracy": steps[step].get("train_mean_token_accuracy")}
        writer.writerow(["" if data.get(c) is None else data[c] for c in CSV_COLUMNS])
    return out.getvalue().encode()


def trained_tokens(events: Sequence[JobEvent]) -> int:
    """Tokens trained on (prompts and completions, no padding), each step counted once."""
    return sum({e.data["step"]: e.data.get("tokens", 0) for e in events if e.type == "metrics" and e.data}.values())


# -- one attempt ----------------------------------------------------------------------------------


class JobRun:
    """One attempt at a claimed job: `run()` trains it and leaves its row saying how it ended (it raises only
    for what stops the worker itself). `stop()` is the worker's own wish to stop (it is shutting down): the
    job then goes back to the queue with a checkpoint, to continue where it stopped."""

    def __init__(
        self, store: Store, job: JobRow, *, taken_over: bool = False, device: str = "auto", stop: Callable[[], bool]
    ) -> None:
        self.store, self.job, self.taken_over, self.device, self.stop = store, job, taken_over, device, stop
        self.run_dir = store.data_dir / job.run_dir
        self.names: dict[str, str] = {}  # server paths -> file ids, for messages
        self.pending: dict[str, Any] | None = None  # the last step's metrics, until its evaluation is known
        self.unsaved: list[dict[str, Any]] = []  # steps' metrics not yet committed
        self.saved_at = time.monotonic()
        self.losses: dict[int, float] = {}
        self.valid: dict[int, float] = {}
        self.start = (0, 0.0)  # (step, time) this attempt started from
        self.tokens = 0  # StepEvent.tokens so far (they count from the run's start, resumes included)

    def run(self) -> JobRow:
        try:
            return self._run()
        except Exception as exc:
            log.exception("job %s failed", self.job.id)
            error = job_error(exc, self.names, self.job.validation_file)
            with self.store.transaction():
                self._event(f"Fine-tuning job failed: {error['message']}", level="error")
                return self._set(status="failed", error=error, finished_at=now(), estimated_finish=None)

    def _run(self) -> JobRow:
        job = self.job
        latest = latest_training_checkpoint(self.run_dir)
        if self.taken_over:
            message = f"The worker running this job stopped (attempt {job.attempts - 1})"
            if job.requested_action is None:
                where = f"its checkpoint of step {_step(latest)}" if latest else "the start (it had no checkpoint)"
                message += f"; continuing from {where}"
            self._event(message, "warn")
            self._sync_checkpoints()
            if job.attempts > MAX_ATTEMPTS:
                raise WorkerLostError(
                    f"the job's worker stopped under it {job.attempts - 1} times (out of memory?); it is not tried "
                    "again. Its checkpoints are kept; a job with a smaller batch_size may fit"
                )
            if job.requested_action is not None:  # asked to cancel or pause before the worker died
                return self._stopped(_step(latest))
        train_file = self._file(job.training_file, "training_file")
        validation_file = self._file(job.validation_file, "validation_file") if job.validation_file else None
        examples = check_fine_tune_file(train_file, job.training_file)
        if validation_file is not None:
            check_fine_tune_file(validation_file, str(job.validation_file))
        if job.lora == "auto" or job.max_length is None or "auto" in job.hyperparameters.values():
            cuda = self.device == "auto" and torch.cuda.is_available()
            device = torch.device("cuda" if cuda else "cpu" if self.device == "auto" else self.device)
            self.job = job = self._set(**auto_settings(job, examples, device))
        task, train = training_configs(
            job, train_file, validation_file, self.run_dir, examples=examples, device=self.device
        )
        if latest is None:
            self._event("Fine-tuning job started", data={"hyperparameters": job.hyperparameters, "lora": job.lora})
        elif not self.taken_over:
            self._event(f"Fine-tuning job continues from its checkpoint of step {_step(latest)}")
        result = finetune(task, train, on_event=self.on_event, should_stop=self.should_stop)
        return self._succeeded() if not result.train.stopped else self._stopped(result.train.step)

    def _file(self, file_id: str, param: str) -> Path:
        try:
            path = self.store.data_dir / self.store.get(FileRow, file_id).path
        except NotFoundError:
            path = None
        if path is None or not path.is_file():
            raise MissingFileError(
                f"the {param.replace('_', ' ')} {file_id} is gone (deleted, or missing from the server's files); "
                "upload the data again and create a new job",
                param,
            )
        self.names[str(path)] = file_id
        return path

    # -- the run's events ---------------------------------------------------------------------------

    def should_stop(self) -> bool:
        """Asked before each step: the worker is stopping, or the job was asked to cancel or pause."""
        return self.stop() or self.store.get(JobRow, self.job.id).requested_action is not None

    def on_event(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            self.start = (event.step, time.monotonic())
            self.tokens = event.tokens  # a resumed attempt's StepEvent.tokens continue from the checkpoint's
        elif isinstance(event, StepEvent):
            self._flush()
            self.losses[event.step] = event.loss
            self.pending = {
                "step": event.step,
                "train_loss": event.loss,
                "total_steps": event.max_steps,
                "tokens": event.tokens - self.tokens,
            }
            self.tokens = event.tokens
        elif isinstance(event, EvalEvent):
            self.valid[event.step] = event.metrics["val_loss"]
            if self.pending is not None and self.pending["step"] == event.step:
                self.pending["valid_loss"] = self.pending["full_valid_loss"] = event.metrics["val_loss"]
        elif isinstance(event, CheckpointEvent):
            self._flush(force=True)  # every step up to a checkpoint is recorded before it
            name = f"{fine_tuned_model_name(self.job)}:ckpt-step-{event.step}"
            with self.store.transaction():
                self._checkpoint_row(event.path, name)
                self._event(f"Checkpoint created at step {event.step}")
                self._sync_checkpoints()
        elif isinstance(event, DoneEvent):
            self._flush(force=True)

    def _flush(self, *, force: bool = False) -> None:
        """Queue the pending step's metrics (with its validation loss when it was evaluated) and record the
        queue, in one commit, every METRICS_EVERY seconds or when forced. A step lost to a crash before its
        record is one after the last checkpoint, so it runs and is recorded again."""
        if self.pending is not None:
            self.unsaved.append(self.pending)
            self.pending = None
        if not self.unsaved or (not force and time.monotonic() - self.saved_at < METRICS_EVERY):
            return
        first, started = self.start
        last = self.unsaved[-1]
        seconds_per_step = (time.monotonic() - started) / max(1, last["step"] - first)
        with self.store.transaction():
            for data in self.unsaved:
                message = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
                if "valid_loss" in data:
                    message += f", validation loss={data['valid_loss']:.4f}"
                self._event(message, type="metrics", data=data)
            remaining = (last["total_steps"] - last["step"]) * seconds_per_step
            self._set(estimated_finish=now() + math.ceil(remaining))
        self.unsaved, self.saved_at = [], time.monotonic()

    def _checkpoint_row(self, path: Path, name: str) -> None:
        step = _step(path)
        valid = self.valid.get(step)
        metrics = {
            "step": step,
            "train_loss": self.losses.get(step),
            "valid_loss": valid,
            "full_valid_loss": valid,
            "train_mean_token_accuracy": None,
            "valid_mean_token_accuracy": None,
            "full_valid_mean_token_accuracy": None,
        }
        relative = str(path.relative_to(self.store.data_dir))
        self.store.insert(JobCheckpoint(new_id("ftckpt_"), self.job.id, now(), step, metrics, name, relative))

    def _sync_checkpoints(self) -> None:
        """Rows for the checkpoints on disk: drop those the run rotated away; add any a dead worker wrote
        without recording."""
        rows = self.store.all(JobCheckpoint, job_id=self.job.id)
        for row in rows:
            if not (self.store.data_dir / row.path / TRAINER_STATE).is_file():
                self.store.delete(JobCheckpoint, row.id)
        recorded = {row.path for row in rows}
        for path in sorted((self.run_dir / "checkpoints").glob("step-*")):
            if (path / TRAINER_STATE).is_file() and str(path.relative_to(self.store.data_dir)) not in recorded:
                self._checkpoint_row(path, f"{fine_tuned_model_name(self.job)}:ckpt-step-{_step(path)}")

    # -- the row ----------------------------------------------------------------------------------

    def _event(self, message: str, level: str = "info", **fields: Any) -> JobEvent:
        return self.store.add_event(self.job.id, message, level=level, **fields)  # type: ignore[arg-type]

    def _set(self, **changes: Any) -> JobRow:
        return self.store.update(JobRow, self.job.id, **changes)

    def _succeeded(self) -> JobRow:
        final = latest_training_checkpoint(self.run_dir)
        if final is not None:  # the run root serves the model: whole again even if a kill cut its last update
            mirror_model_files(final, self.run_dir)
        events = self.store.all(JobEvent, job_id=self.job.id, type="metrics")
        results = Files(self.store).stage(step_metrics_csv(events), "step_metrics.csv", RESULTS_PURPOSE)
        name = fine_tuned_model_name(self.job)
        with self.store.transaction():
            self.store.insert(results)
            self._event(f"New fine-tuned model created: {name}")
            self._event("The job has successfully completed")
            return self._set(
                status="succeeded",
                fine_tuned_model=name,
                trained_tokens=trained_tokens(events),
                result_files=[results.id],
                finished_at=now(),
                estimated_finish=None,
                requested_action=None,
            )

    def _stopped(self, step: int) -> JobRow:
        """The run stopped before its end: as the job was asked (cancel, pause), else back to the queue."""
        with self.store.transaction():
            action = self.store.get(JobRow, self.job.id).requested_action
            if action == "cancel":
                self._event(f"Fine-tuning job cancelled at step {step}; its checkpoints are kept")
                return self._set(status="cancelled", finished_at=now(), estimated_finish=None, requested_action=None)
            if action == "pause":
                self._event(f"Fine-tuning job paused at step {step}, with a checkpoint to resume from")
                return self._set(status="paused", estimated_finish=None, requested_action=None)
            self._event(f"The worker is stopping; the job is queued to continue from step {step}", "warn")
            return self._set(status="queued", estimated_finish=None)


def _step(path: Path | None) -> int:
    return int(path.name.split("-")[-1]) if path is not None else 0
