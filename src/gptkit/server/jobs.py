"""Fine-tuning jobs as OpenAI's API has them: create, retrieve, list, cancel, pause, resume, events, checkpoints.

A job is a row first. `Jobs` checks requests and writes rows and requests (a cancel or pause asked of a
running job); it never trains. The worker (worker.py), a process apart from the HTTP server, claims queued
jobs and runs them (runner.py), and acts on requests at the next step. Statuses:

    validating_files -> queued -> running -> succeeded | failed | cancelled
    queued | running -> paused (running: at a step, with a checkpoint) -> queued (resume) -> running ...

gptkit adds two settings to OpenAI's: `lora` (LoRAConfig fields, None for all weights, or "auto": LoRA on a
CPU, all weights on a GPU) and `max_length` (tokens per example; None: the model's context).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from gptkit.errors import ConfigError
from gptkit.models.config import LoRAConfig
from gptkit.server.store import (
    FINISHED,
    ConflictError,
    FileRow,
    JobCheckpoint,
    JobEvent,
    JobRow,
    NotFoundError,
    Page,
    RequestError,
    Store,
    new_id,
    now,
)

__all__ = ["DEFAULT_ORGANIZATION", "JobRequest", "Jobs", "fine_tuned_model_name"]

DEFAULT_ORGANIZATION = "gptkit"
JOBS_DIR = "jobs"
# name: (smallest, largest, type); "auto" is always allowed. OpenAI's ranges.
HYPERPARAMETERS: dict[str, tuple[float, float, type]] = {
    "n_epochs": (1, 50, int),
    "batch_size": (1, 256, int),
    "learning_rate_multiplier": (1e-6, 100.0, float),
}
SUFFIX = re.compile(r"[A-Za-z0-9_.-]{0,64}")
MAX_METADATA = 16


@dataclass(frozen=True)
class JobRequest:
    """OpenAI's create-job parameters, plus what the server resolved and gptkit's own settings."""

    model: str  # the model id the client named
    training_file: str
    model_source: str | None = None  # what the worker loads for `model` (a folder or hub name); None: `model`
    validation_file: str | None = None
    hyperparameters: Mapping[str, Any] | None = None  # the deprecated top-level form of method's
    method: Mapping[str, Any] | None = None  # {"type": "supervised", "supervised": {"hyperparameters": {...}}}
    suffix: str | None = None
    seed: int | None = None  # None: one is drawn
    metadata: Mapping[str, str] | None = None
    lora: Mapping[str, Any] | LoRAConfig | Literal["auto"] | None = "auto"
    max_length: int | None = None


def fine_tuned_model_name(job: JobRow) -> str:
    """OpenAI's `ft:BASE:ORG:SUFFIX:ID` (a job fine-tuning a fine-tuned model names the first base)."""
    base = job.model.split(":")[1] if job.model.startswith("ft:") else job.model
    return f"ft:{base}:{job.organization_id}:{job.suffix or ''}:{job.id[-8:]}"


class Jobs:
    """The fine-tuning jobs API over a store (rows and requests; the worker does the training)."""

    def __init__(self, store: Store, *, organization: str = DEFAULT_ORGANIZATION) -> None:
        self.store, self.organization = store, organization

    def create(self, request: JobRequest) -> JobRow:
        """Check a request and queue its job. RequestError (a 400, naming the param) for what cannot run."""
        if not isinstance(request.model, str) or not request.model:
            raise RequestError("model must name a model to fine-tune", "model")
        for param in ("training_file", "validation_file"):
            file_id = getattr(request, param)
            if file_id is not None:
                self._check_file(file_id, param)
        suffix = request.suffix or None
        if suffix is not None and not (isinstance(suffix, str) and SUFFIX.fullmatch(suffix)):
            raise RequestError("suffix must be up to 64 letters, digits, '-', '_' or '.'", "suffix")
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise RequestError(f"seed must be an integer from 0 to 2147483647, got {seed!r}", "seed")
        job_id = new_id("ftjob-")
        job = JobRow(
            id=job_id,
            created_at=now(),
            model=request.model,
            model_source=request.model_source or request.model,
            training_file=request.training_file,
            validation_file=request.validation_file,
            hyperparameters=_hyperparameters(request.hyperparameters, request.method),
            method="supervised",
            suffix=suffix,
            seed=seed,
            metadata=_metadata(request.metadata),
            lora=_lora(request.lora),
            max_length=_max_length(request.max_length),
            organization_id=self.organization,
            status="validating_files",
            run_dir=f"{JOBS_DIR}/{job_id}",
        )
        with self.store.transaction():
            self.store.insert(job)
            self.store.add_event(job_id, f"Created fine-tuning job: {job_id}")
            for name in filter(None, (job.training_file, job.validation_file)):
                self.store.add_event(job_id, f"Validating training file: {name}")
            # uploads were checked as they came, so the files are valid as they stand
            self.store.add_event(job_id, "Files validated, moving job to queued state")
            return self.store.update(JobRow, job_id, status="queued")

    def _check_file(self, file_id: Any, param: str) -> None:
        if not isinstance(file_id, str):
            raise RequestError(f"{param} must be a file id", param)
        try:
            row = self.store.get(FileRow, file_id)
        except NotFoundError:
            raise RequestError(f"{param}: no file with id {file_id!r}; upload it first", param) from None
        if row.purpose != "fine-tune":
            raise RequestError(f"{param}: file {file_id} has purpose {row.purpose!r}; upload it as 'fine-tune'", param)
        if not (self.store.data_dir / row.path).is_file():
            raise RequestError(f"{param}: the bytes of file {file_id} are missing from the server", param)

    def retrieve(self, job_id: str) -> JobRow:
        return self.store.get(JobRow, job_id)

    def list(
        self, *, after: str | None = None, limit: int = 20, metadata: Mapping[str, str] | None = None
    ) -> Page[JobRow]:
        return self.store.page(JobRow, after=after, limit=limit, metadata=metadata)

    def events(self, job_id: str, *, after: str | None = None, limit: int = 20) -> Page[JobEvent]:
        self.retrieve(job_id)
        return self.store.page(JobEvent, after=after, limit=limit, where={"job_id": job_id})

    def checkpoints(self, job_id: str, *, after: str | None = None, limit: int = 10) -> Page[JobCheckpoint]:
        self.retrieve(job_id)
        return self.store.page(JobCheckpoint, after=after, limit=limit, where={"job_id": job_id})

    def cancel(self, job_id: str) -> JobRow:
        """Cancel a job now, or (running) ask its worker to stop at the next step, keeping its checkpoints."""
        with self.store.transaction():
            job = self._unfinished(job_id, "cancelled")
            if job.status == "running":
                if job.requested_action == "cancel":
                    return job
                self.store.add_event(job_id, "Cancellation requested; the job stops after its current step")
                return self.store.update(JobRow, job_id, requested_action="cancel")
            self.store.add_event(job_id, "Fine-tuning job cancelled")
            return self.store.update(
                JobRow, job_id, status="cancelled", finished_at=now(), estimated_finish=None, requested_action=None
            )

    def pause(self, job_id: str) -> JobRow:
        """Pause a queued job now, or (running) ask its worker to stop at the next step with a checkpoint."""
        with self.store.transaction():
            job = self._unfinished(job_id, "paused")
            if job.status == "paused" or job.requested_action == "pause":
                return job
            if job.requested_action == "cancel":
                raise ConflictError(f"job {job_id} is being cancelled; it cannot be paused")
            if job.status == "running":
                self.store.add_event(job_id, "Pause requested; the job stops with a checkpoint after its current step")
                return self.store.update(JobRow, job_id, requested_action="pause")
            self.store.add_event(job_id, "Fine-tuning job paused")
            return self.store.update(JobRow, job_id, status="paused", estimated_finish=None)

    def resume(self, job_id: str) -> JobRow:
        """Queue a paused job to continue from its last checkpoint (or withdraw a pause not yet acted on)."""
        with self.store.transaction():
            job = self.retrieve(job_id)
            if job.status == "running" and job.requested_action == "pause":
                self.store.add_event(job_id, "Pause request withdrawn")
                return self.store.update(JobRow, job_id, requested_action=None)
            if job.status != "paused":
                raise ConflictError(f"job {job_id} is {job.status}; only a paused job can be resumed")
            self.store.add_event(job_id, "Fine-tuning job resumed; queued to continue from its last checkpoint")
            return self.store.update(JobRow, job_id, status="queued", requested_action=None)

    def _unfinished(self, job_id: str, wanted: str) -> JobRow:
        job = self.retrieve(job_id)
        if job.status in FINISHED:
            raise ConflictError(f"job {job_id} has already {job.status}; it cannot be {wanted}")
        return job


# -- checking a request's settings --------------------------------------------------------------


def _hyperparameters(top: Mapping[str, Any] | None, method: Mapping[str, Any] | None) -> dict[str, Any]:
    """The job's hyperparameters from the method (or the deprecated top-level form), each a number or "auto"."""
    given: Any = top or {}
    if method is not None:
        if not isinstance(method, Mapping) or method.get("type") != "supervised":
            kind = method.get("type") if isinstance(method, Mapping) else method
            raise RequestError(f"method.type {kind!r}: gptkit runs supervised fine-tuning only", "method")
        supervised = method.get("supervised") or {}
        inner = (supervised.get("hyperparameters") if isinstance(supervised, Mapping) else supervised) or {}
        if given and inner and given != inner:
            raise RequestError(
                "hyperparameters and method.supervised.hyperparameters differ; give them once, under method",
                "hyperparameters",
            )
        given = inner or given
    if not isinstance(given, Mapping):
        raise RequestError(f"hyperparameters must be an object, got {given!r}", "hyperparameters")
    if unknown := sorted(set(given) - set(HYPERPARAMETERS)):
        raise RequestError(f"unknown hyperparameters {unknown}; known: {', '.join(HYPERPARAMETERS)}", "hyperparameters")
    resolved: dict[str, Any] = {}
    for name, (low, high, kind) in HYPERPARAMETERS.items():
        value = given.get(name, "auto")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value != "auto" and not (number and (kind is float or float(value).is_integer()) and low <= value <= high):
            raise RequestError(f"{name} must be 'auto' or a number from {low:g} to {high:g}, got {value!r}", name)
        resolved[name] = value if value == "auto" else kind(value)
    return resolved


def _metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    ok = isinstance(metadata, Mapping) and len(metadata) <= MAX_METADATA
    if not ok or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
    ):
        raise RequestError(
            f"metadata must be at most {MAX_METADATA} string pairs (keys up to 64, values up to 512 characters)",
            "metadata",
        )
    return dict(metadata)


def _lora(lora: Mapping[str, Any] | LoRAConfig | str | None) -> dict[str, Any] | str | None:
    if lora is None or lora == "auto":
        return lora
    try:
        config = lora if isinstance(lora, LoRAConfig) else LoRAConfig(**lora)  # type: ignore[arg-type]
    except (ConfigError, TypeError) as exc:
        raise RequestError(f"lora: {exc}", "lora") from None
    return asdict(config)


def _max_length(max_length: int | None) -> int | None:
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise RequestError(f"max_length must be an integer >= 2, got {max_length!r}", "max_length")
    return max_length
