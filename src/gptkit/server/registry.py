"""The fine-tuned models a server serves: from a model id to the folder `gptkit.tasks.bundle.load` loads.

A succeeded job's model (`ft:BASE:ORG:SUFFIX:ID`) is its run directory, whose root holds the final model (with
its LoRA adapter, merged on loading, and task.json); a checkpoint's (`...:ckpt-step-N`, or its `ftckpt_` id)
is its checkpoint directory, while the run keeps it. Base models are the server's own configuration, not
this registry's, and cannot be deleted.

A model whose row exists but whose folder was removed or damaged outside the API is still listed (and can be
deleted), but cannot be served: loading it raises ModelUnavailableError, naming the model, the folder and what is
wrong, which the HTTP layer reports as a 503 that retrying will not fix.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptkit.errors import GptkitError
from gptkit.server.store import JobCheckpoint, JobRow, NotFoundError, RequestError, Store

__all__ = ["FineTunedModel", "ModelRegistry", "ModelUnavailableError"]


class ModelUnavailableError(GptkitError):
    """A fine-tuned model that exists, but whose folder is gone or does not load (deleted or damaged by hand)."""

    def __init__(self, model_id: str, folder: Path, reason: str) -> None:
        super().__init__(
            f"the fine-tuned model {model_id!r} cannot be loaded from its folder {folder}: {reason}; restore the "
            f"folder, or delete the model (DELETE /v1/models/{model_id})"
        )
        self.model_id, self.folder = model_id, folder


@dataclass(frozen=True)
class FineTunedModel:
    id: str  # the model id clients use
    created: int
    owned_by: str
    path: Path  # the folder to load
    job_id: str
    step: int | None = None  # a checkpoint's step; None for a job's final model

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": self.owned_by}

    def folder(self) -> Path:
        """The folder to load; ModelUnavailableError when it is not there."""
        if not self.path.is_dir():
            raise ModelUnavailableError(self.id, self.path, "the folder does not exist (deleted outside the API?)")
        return self.path


class ModelRegistry:
    """Fine-tuned models by id: `get` (NotFoundError for an unknown or deleted one), `list`, `delete`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def is_fine_tuned(model_id: str) -> bool:
        return model_id.startswith(("ft:", "ftckpt_"))

    def get(self, model_id: str) -> FineTunedModel:
        """The model with this id (its folder need not exist); NotFoundError when there is none or it was deleted."""
        model = self._find(model_id)
        if model is None:
            raise NotFoundError(f"the model {model_id!r} does not exist")
        return model

    def path(self, model_id: str) -> Path:
        """The folder to give `gptkit.tasks.bundle.load` for this model id; ModelUnavailableError when it is gone."""
        return self.get(model_id).folder()

    def _find(self, model_id: str) -> FineTunedModel | None:
        job = self.store.find(JobRow, fine_tuned_model=model_id, model_deleted=False)
        if job is not None and job.status == "succeeded":
            return self._model(job)
        checkpoint = self.store.find(JobCheckpoint, fine_tuned_model_checkpoint=model_id)
        checkpoint = checkpoint or (
            self.store.find(JobCheckpoint, id=model_id) if model_id.startswith("ftckpt_") else None
        )
        if checkpoint is None:
            return None
        owner = self.store.get(JobRow, checkpoint.job_id).organization_id
        path = self.store.data_dir / checkpoint.path
        name = checkpoint.fine_tuned_model_checkpoint
        return FineTunedModel(name, checkpoint.created_at, owner, path, checkpoint.job_id, checkpoint.step)

    def _model(self, job: JobRow) -> FineTunedModel:
        path = self.store.data_dir / job.run_dir
        return FineTunedModel(
            str(job.fine_tuned_model), job.finished_at or job.created_at, job.organization_id, path, job.id
        )

    def list(self, *, checkpoints: bool = False) -> list[FineTunedModel]:
        """Succeeded jobs' models, newest first (and, with `checkpoints`, every checkpoint kept after each)."""
        models = []
        for job in self.store.all(JobRow, newest_first=True, status="succeeded", model_deleted=False):
            models.append(self._model(job))
            if checkpoints:
                rows = self.store.all(JobCheckpoint, newest_first=True, job_id=job.id)
                models += [m for row in rows if (m := self._find(row.fine_tuned_model_checkpoint)) is not None]
        return models

    def delete(self, model_id: str) -> dict[str, Any]:
        """Delete a fine-tuned model (a job's: its whole run, checkpoints included; a checkpoint's: that
        checkpoint) and return OpenAI's deletion object. Base models cannot be deleted (RequestError)."""
        if not self.is_fine_tuned(model_id):
            raise RequestError(f"{model_id!r} is a base model; only fine-tuned models (ft:...) can be deleted", "model")
        model = self._find(model_id)
        if model is None:
            raise NotFoundError(f"the model {model_id!r} does not exist")
        with self.store.transaction():  # the rows first: a crash before the files go leaves only stray files
            if model.step is None:
                for row in self.store.all(JobCheckpoint, job_id=model.job_id):
                    self.store.delete(JobCheckpoint, row.id)
                self.store.update(JobRow, model.job_id, model_deleted=True)
                self.store.add_event(model.job_id, f"Fine-tuned model deleted: {model.id}")
            else:
                checkpoint = self.store.find(JobCheckpoint, fine_tuned_model_checkpoint=model.id)
                if checkpoint is not None:
                    self.store.delete(JobCheckpoint, checkpoint.id)
        shutil.rmtree(model.path, ignore_errors=True)
        return {"id": model.id, "object": "model", "deleted": True}
