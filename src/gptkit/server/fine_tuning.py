"""The Files and fine-tuning jobs endpoints: HTTP over gptkit.server.files, jobs and registry (no tensors here).

`/v1/files` (multipart upload, list, retrieve, content, delete) and `/v1/fine_tuning/jobs` (create, list, retrieve,
cancel, pause, resume, events, checkpoints), as OpenAI's API has them, field for field; gptkit's `lora` and
`max_length` are accepted as extra fields of a job. Every call into the store blocks (SQLite, the disk), so each
runs in a worker thread, never on the event loop. The library's refusals become OpenAI's error objects
(`api_error`): no such object 404, a bad parameter 400 naming it, a state that forbids the request 409, a
fine-tuned model whose folder is gone or damaged 503 (the last two with `x-should-retry: false`, so that the SDK
does not retry what retrying cannot fix).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from gptkit.errors import DataError
from gptkit.server.files import MAX_BYTES, Files
from gptkit.server.jobs import DEFAULT_ORGANIZATION, JobRequest, Jobs
from gptkit.server.pool import ModelPool
from gptkit.server.protocol import APIError, invalid
from gptkit.server.registry import ModelRegistry, ModelUnavailableError
from gptkit.server.responses import ErrorResponse
from gptkit.server.served import ServedModel, load_served
from gptkit.server.store import ConflictError, NotFoundError, RequestError, Store
from gptkit.server.worker import Supervisor

__all__ = ["FineTuning", "FineTuningConfig", "about_model", "api_error", "routes"]

_ERROR = {"model": ErrorResponse, "description": "OpenAI's error object"}
_ERRORS: dict[int | str, dict[str, Any]] = {status: _ERROR for status in (400, 401, 404, 409, 413)}
T = TypeVar("T")


@dataclass(frozen=True)
class FineTuningConfig:
    """The fine-tuning side of a server. data_dir: its store, files and runs. supervisor: the job workers, started
    and stopped with the app (None: jobs wait for workers started elsewhere). load: how a fine-tuned model's folder
    becomes a ServedModel (device, dtype, batch size); max_loaded_models: fine-tuned models kept loaded at once."""

    data_dir: Path
    organization: str = DEFAULT_ORGANIZATION
    max_file_bytes: int = MAX_BYTES
    max_loaded_models: int = 2
    load: Callable[[Path], ServedModel] = load_served
    supervisor: Supervisor | None = None


class FineTuning:
    """The library objects over one data directory."""

    def __init__(self, config: FineTuningConfig) -> None:
        self.config = config
        self.store = Store(config.data_dir)
        self.files = Files(self.store, max_bytes=config.max_file_bytes)
        self.jobs = Jobs(self.store, organization=config.organization)
        self.registry = ModelRegistry(self.store)


def api_error(exc: BaseException) -> APIError | None:
    """The store's and the uploads' refusals as OpenAI's errors; None for any other exception."""
    if isinstance(exc, NotFoundError):
        return APIError(404, str(exc))
    if isinstance(exc, ConflictError):
        return APIError(409, str(exc), param=exc.param, code="conflict", headers={"x-should-retry": "false"})
    if isinstance(exc, RequestError):
        return APIError(400, str(exc), param=exc.param)
    if isinstance(exc, DataError):  # an upload that is not what its purpose needs
        return APIError(400, str(exc), param="file")
    if isinstance(exc, ModelUnavailableError):  # not the client's fault, and not fixed by asking again
        headers = {"x-should-retry": "false"}
        return APIError(503, str(exc), param="model", code="model_unavailable", type="server_error", headers=headers)
    return None


# -- OpenAI's objects -------------------------------------------------------------------------------


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    expires_at: int | None = None
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Hyperparameters(BaseModel):
    batch_size: Literal["auto"] | int | None = None
    learning_rate_multiplier: Literal["auto"] | float | None = None
    n_epochs: Literal["auto"] | int | None = None


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised"]
    supervised: SupervisedMethod | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    method: Method | None = None
    user_provided_suffix: str | None = None


class JobEventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] | None = None
    data: dict[str, Any] | None = None


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float | None]
    step_number: int


class ListOf(BaseModel, Generic[T]):
    """One page of a list: `after` the last id seen pages on while has_more."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class ModelDeleted(BaseModel):
    id: str
    object: str = "model"
    deleted: bool


class JobCreateRequest(BaseModel):
    """OpenAI's create-job parameters (openai.types.fine_tuning.job_create_params), plus gptkit's lora (LoRAConfig
    fields, null for all weights, or "auto": LoRA on a CPU, all weights on a GPU) and max_length (tokens per
    example)."""

    model_config = ConfigDict(allow_inf_nan=False)

    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None
    lora: dict[str, Any] | Literal["auto"] | None = "auto"
    max_length: int | None = None


# -- routes -----------------------------------------------------------------------------------------


def routes(service: FineTuning, pool: ModelPool) -> APIRouter:
    """The Files and fine-tuning jobs endpoints over `service`; a job's `model` is one of `pool`'s base models or a
    fine-tuned one of its registry."""
    router = APIRouter(prefix="/v1", responses=_ERRORS)
    files, jobs = service.files, service.jobs

    @router.post("/files", response_model=FileObject)
    async def upload_file(file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> Any:
        try:
            row = await run_in_threadpool(files.create, file.file, file.filename or "", purpose)
        finally:
            await file.close()
        return row.to_openai()

    @router.get("/files", response_model=ListOf[FileObject])
    async def list_files(
        purpose: str | None = None,
        limit: int = 10_000,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
    ) -> Any:
        page = await run_in_threadpool(files.list, after=after, limit=limit, order=order, purpose=purpose)
        return page.to_openai()

    @router.get("/files/{file_id}", response_model=FileObject)
    async def retrieve_file(file_id: str) -> Any:
        return (await run_in_threadpool(files.retrieve, file_id)).to_openai()

    @router.get("/files/{file_id}/content", response_class=FileResponse)
    async def file_content(file_id: str) -> FileResponse:
        path = await run_in_threadpool(files.path, file_id)
        return FileResponse(path, media_type="application/octet-stream")

    @router.delete("/files/{file_id}", response_model=FileDeleted)
    async def delete_file(file_id: str) -> Any:
        row = await run_in_threadpool(files.delete, file_id)
        return {"id": row.id, "deleted": True}

    @router.post("/fine_tuning/jobs", response_model=FineTuningJob)
    async def create_job(body: JobCreateRequest) -> Any:
        if body.integrations:
            raise invalid("integrations", "integrations (Weights and Biases) are not supported; leave them out")
        source = await run_in_threadpool(model_source, pool, body.model)
        request = JobRequest(
            model=body.model,
            training_file=body.training_file,
            model_source=source,
            validation_file=body.validation_file,
            hyperparameters=body.hyperparameters,
            method=body.method,
            suffix=body.suffix,
            seed=body.seed,
            metadata=body.metadata,
            lora=body.lora,
            max_length=body.max_length,
        )
        return (await run_in_threadpool(jobs.create, request)).to_openai()

    @router.get("/fine_tuning/jobs", response_model=ListOf[FineTuningJob])
    async def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> Any:
        # OpenAI's metadata filter: metadata[key]=value
        wanted = {k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k[-1] == "]"}
        return (await run_in_threadpool(jobs.list, after=after, limit=limit, metadata=wanted)).to_openai()

    @router.get("/fine_tuning/jobs/{job_id}", response_model=FineTuningJob)
    async def retrieve_job(job_id: str) -> Any:
        return (await run_in_threadpool(jobs.retrieve, job_id)).to_openai()

    def control(action: Callable[[str], Any]) -> Callable[[str], Any]:
        async def endpoint(job_id: str) -> Any:
            return (await run_in_threadpool(action, job_id)).to_openai()

        return endpoint

    for name, action in (("cancel", jobs.cancel), ("pause", jobs.pause), ("resume", jobs.resume)):
        router.add_api_route(
            f"/fine_tuning/jobs/{{job_id}}/{name}",
            control(action),
            methods=["POST"],
            response_model=FineTuningJob,
            name=f"{name}_job",
            summary=f"{name.capitalize()} a fine-tuning job",
        )

    @router.get("/fine_tuning/jobs/{job_id}/events", response_model=ListOf[JobEventObject])
    async def list_events(job_id: str, after: str | None = None, limit: int = 20) -> Any:
        return (await run_in_threadpool(jobs.events, job_id, after=after, limit=limit)).to_openai()

    @router.get("/fine_tuning/jobs/{job_id}/checkpoints", response_model=ListOf[CheckpointObject])
    async def list_checkpoints(job_id: str, after: str | None = None, limit: int = 10) -> Any:
        return (await run_in_threadpool(jobs.checkpoints, job_id, after=after, limit=limit)).to_openai()

    return router


def model_source(pool: ModelPool, model: str) -> str:
    """What a job fine-tuning `model` trains: a base model's folder or a fine-tuned model's (blocks)."""
    with about_model():
        folder = pool.folder(model)
    if folder is None:
        raise RequestError(f"model {model!r} was not loaded from a folder, so it cannot be fine-tuned", "model")
    return folder


@contextmanager
def about_model() -> Iterator[None]:
    """A model that does not exist as OpenAI reports it: 404, param model, code model_not_found."""
    try:
        yield
    except NotFoundError as exc:
        raise APIError(404, str(exc), param="model", code="model_not_found") from None
