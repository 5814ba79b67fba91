"""The server's durable state: files, fine-tuning jobs, their events and checkpoints, in one SQLite database.

DATA_DIR/gptkit.db is in WAL mode, so the HTTP server reads while the job worker (another process) writes,
and every write is committed before its call returns: a row is the truth, and whatever a dead process left
behind is reconciled from the rows by the next one (jobs.py). The schema's version is `PRAGMA user_version`:
opening a database applies the MIGRATIONS it lacks, in order, each in its own transaction.

Rows are frozen dataclasses whose `to_openai()` is the object OpenAI's API returns, field for field. Lists
follow OpenAI's pagination: newest first, `after` the id of the last object seen, `limit`, `has_more`. Paths
in rows are relative to the data directory, so a data directory can be moved as a whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from gptkit.errors import GptkitError

__all__ = [
    "DB_FILE",
    "FileRow",
    "JobCheckpoint",
    "JobEvent",
    "JobRow",
    "NotFoundError",
    "ConflictError",
    "Page",
    "RequestError",
    "Store",
    "StoreError",
    "new_id",
    "now",
]

DB_FILE = "gptkit.db"
ACTIVE = ("validating_files", "queued", "running", "paused")  # a job's statuses before it ends
FINISHED = ("succeeded", "failed", "cancelled")
MAX_LIMIT = 10_000


class StoreError(GptkitError):
    """The database cannot be used (written by a newer gptkit, damaged, or not a gptkit database)."""


class NotFoundError(GptkitError, LookupError):
    """No file, job or model has the id asked for (the HTTP layer's 404)."""


class RequestError(GptkitError, ValueError):
    """A request the server refuses as asked (a bad parameter, or a job in a state that forbids it): a 400.

    `param` names the request's field at fault, as OpenAI's error object does, when there is one.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ConflictError(RequestError):
    """A request the object's state forbids (cancelling a finished job, resuming one that is not paused): a 409,
    which retrying cannot fix."""


_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """An object id as OpenAI makes them: a prefix and random letters and digits (`file-`, `ftjob-`, ...)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    """Unix seconds, the API's timestamps."""
    return int(time.time())


# -- rows -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRow:
    TABLE: ClassVar[str] = "files"
    WHAT: ClassVar[str] = "file"
    JSON: ClassVar[tuple[str, ...]] = ()

    id: str
    bytes: int
    created_at: int
    filename: str  # what the client called it: metadata only, never part of a path
    purpose: str
    status: str  # "processed": stored (and, for fine-tune, validated)
    path: str  # the stored bytes, relative to the data directory: files/<id>

    def to_openai(self) -> dict[str, Any]:
        fields = ("id", "bytes", "created_at", "filename", "purpose", "status")
        return {"object": "file", **{k: getattr(self, k) for k in fields}, "expires_at": None, "status_details": None}


@dataclass(frozen=True)
class JobRow:
    TABLE: ClassVar[str] = "jobs"
    WHAT: ClassVar[str] = "fine-tuning job"
    JSON: ClassVar[tuple[str, ...]] = ("hyperparameters", "metadata", "lora", "error", "result_files")

    id: str
    created_at: int
    model: str  # the model id the client named
    model_source: str  # what the worker loads for it: a checkpoint folder or a hub name (resolved by the server)
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]  # n_epochs, batch_size, learning_rate_multiplier: numbers, or "auto" until run
    method: str  # "supervised", the one method gptkit runs
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    lora: dict[str, Any] | str | None  # gptkit's LoRAConfig fields; None: all weights train; "auto" until run
    max_length: int | None  # gptkit's tokens per example; None until run: the model's context
    organization_id: str
    status: str  # validating_files, queued, running, paused, succeeded, failed, cancelled
    requested_action: str | None = None  # "cancel" or "pause", until the worker has acted on it
    error: dict[str, Any] | None = None  # {"code", "message", "param"} of a failed job
    fine_tuned_model: str | None = None  # set when the job succeeds
    trained_tokens: int | None = None
    finished_at: int | None = None
    estimated_finish: int | None = None
    result_files: list[str] = field(default_factory=list)
    run_dir: str = ""  # the run directory, relative to the data directory
    attempts: int = 0  # times a worker has started it (a resume after a pause or a dead worker counts)
    worker: str | None = None  # host:pid of the worker that last took it
    model_deleted: bool = False  # its fine-tuned model was deleted (the job stays)

    def to_openai(self) -> dict[str, Any]:
        fields = (
            "id",
            "created_at",
            "error",
            "fine_tuned_model",
            "finished_at",
            "hyperparameters",
            "model",
            "organization_id",
            "result_files",
            "seed",
            "status",
            "trained_tokens",
            "training_file",
            "validation_file",
            "estimated_finish",
            "metadata",
        )
        method = {"type": self.method, self.method: {"hyperparameters": self.hyperparameters}}
        return {
            "object": "fine_tuning.job",
            **{k: getattr(self, k) for k in fields},
            "integrations": [],
            "method": method,
            "user_provided_suffix": self.suffix,
        }


@dataclass(frozen=True)
class JobEvent:
    TABLE: ClassVar[str] = "job_events"
    WHAT: ClassVar[str] = "event"
    JSON: ClassVar[tuple[str, ...]] = ("data",)

    id: str
    job_id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None

    def to_openai(self) -> dict[str, Any]:
        fields = ("id", "created_at", "level", "message", "type", "data")
        return {"object": "fine_tuning.job.event", **{k: getattr(self, k) for k in fields}}


@dataclass(frozen=True)
class JobCheckpoint:
    TABLE: ClassVar[str] = "job_checkpoints"
    WHAT: ClassVar[str] = "checkpoint"
    JSON: ClassVar[tuple[str, ...]] = ("metrics",)

    id: str
    job_id: str
    created_at: int
    step: int
    metrics: dict[str, Any]  # step, train_loss, valid_loss, ... (OpenAI's names)
    fine_tuned_model_checkpoint: str  # the model id it is served as: <fine-tuned model>:ckpt-step-N
    path: str  # the checkpoint directory, relative to the data directory

    def to_openai(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job.checkpoint",
            "id": self.id,
            "created_at": self.created_at,
            "fine_tuned_model_checkpoint": self.fine_tuned_model_checkpoint,
            "fine_tuning_job_id": self.job_id,
            "metrics": self.metrics,
            "step_number": self.step,
        }


Row = FileRow | JobRow | JobEvent | JobCheckpoint
R = TypeVar("R", FileRow, JobRow, JobEvent, JobCheckpoint)


@dataclass(frozen=True)
class Page(Generic[R]):
    """One page of a list, newest first (or oldest first when asked); has_more: later pages hold more."""

    data: list[R]
    has_more: bool

    def to_openai(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [row.to_openai() for row in self.data],
            "first_id": self.data[0].id if self.data else None,
            "last_id": self.data[-1].id if self.data else None,
            "has_more": self.has_more,
        }


# -- the schema -----------------------------------------------------------------------------------

# Each migration is the statements that take the schema from version i to i + 1; never edit one that has
# shipped, append another. `seq` orders rows by insertion (created_at has one-second steps).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE files (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, bytes INTEGER NOT NULL,
            created_at INTEGER NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL, status TEXT NOT NULL,
            path TEXT NOT NULL)""",
        "CREATE INDEX files_purpose ON files (purpose, seq)",
        """CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
            model TEXT NOT NULL, model_source TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT,
            hyperparameters TEXT NOT NULL, method TEXT NOT NULL, suffix TEXT, seed INTEGER NOT NULL, metadata TEXT,
            lora TEXT, max_length INTEGER, organization_id TEXT NOT NULL, status TEXT NOT NULL,
            requested_action TEXT, error TEXT, fine_tuned_model TEXT UNIQUE, trained_tokens INTEGER,
            finished_at INTEGER, estimated_finish INTEGER, result_files TEXT NOT NULL, run_dir TEXT NOT NULL,
            attempts INTEGER NOT NULL, worker TEXT, model_deleted INTEGER NOT NULL)""",
        "CREATE INDEX jobs_status ON jobs (status, seq)",
        """CREATE TABLE job_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL REFERENCES jobs (id), created_at INTEGER NOT NULL, level TEXT NOT NULL,
            message TEXT NOT NULL, type TEXT NOT NULL, data TEXT)""",
        "CREATE INDEX job_events_job ON job_events (job_id, seq)",
        """CREATE TABLE job_checkpoints (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL REFERENCES jobs (id), created_at INTEGER NOT NULL, step INTEGER NOT NULL,
            metrics TEXT NOT NULL, fine_tuned_model_checkpoint TEXT NOT NULL UNIQUE, path TEXT NOT NULL)""",
        "CREATE INDEX job_checkpoints_job ON job_checkpoints (job_id, seq)",
    ),
)


def _encode(row: Row) -> dict[str, Any]:
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    return {k: json.dumps(v) if k in row.JSON else v for k, v in values.items()}


def _decode(cls: type[R], record: sqlite3.Row) -> R:
    values = {f.name: record[f.name] for f in dataclasses.fields(cls)}
    for name in cls.JSON:
        values[name] = json.loads(values[name]) if values[name] is not None else None
    if cls is JobRow:
        values["model_deleted"] = bool(values["model_deleted"])
    return cls(**values)


class Store:
    """The database of one data directory; safe to share between threads (one connection behind a lock).

    Every method commits before it returns; `transaction()` groups several into one commit.
    """

    def __init__(self, data_dir: str | Path, *, migrations: tuple[tuple[str, ...], ...] = MIGRATIONS) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILE
        self._lock = threading.RLock()
        self._depth = 0  # transactions open on this connection (nested ones join the outermost)
        try:
            # autocommit mode (isolation_level None): transactions are the explicit BEGIN IMMEDIATE below
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(migrations)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open the server's database ({exc})") from exc

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, migrations: tuple[tuple[str, ...], ...]) -> None:
        with self.transaction():  # one writer migrates; another process waits, then finds nothing to do
            if self.version > len(migrations):
                raise StoreError(
                    f"{self.path}: the database has schema version {self.version}, newer than this gptkit's "
                    f"{len(migrations)}; upgrade gptkit, or use another --data-dir"
                )
        for version in range(len(migrations)):
            with self.transaction():
                if self.version == version:
                    for statement in migrations[version]:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {version + 1}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE: other writers wait); nested calls join the outer one."""
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    def _query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- rows of any table --------------------------------------------------------------------------

    def insert(self, row: R) -> R:
        values = _encode(row)
        with self.transaction():
            self._db.execute(
                f"INSERT INTO {row.TABLE} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )
        return row

    def find(self, cls: type[R], **where: Any) -> R | None:
        """The newest row whose columns equal `where`, or None."""
        found = self.all(cls, newest_first=True, limit=1, **where)
        return found[0] if found else None

    def get(self, cls: type[R], row_id: str) -> R:
        found = self.find(cls, id=row_id)
        if found is None:
            raise NotFoundError(f"no {cls.WHAT} with id {row_id!r}")
        return found

    def all(self, cls: type[R], *, newest_first: bool = False, limit: int | None = None, **where: Any) -> list[R]:
        """The rows whose columns equal `where` (a value None matches NULL), oldest first unless asked."""
        clauses = [f"{k} IS ?" for k in where]
        sql = f"SELECT * FROM {cls.TABLE}" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'}" + ("" if limit is None else f" LIMIT {int(limit)}")
        return [_decode(cls, r) for r in self._query(sql, list(where.values()))]

    def page(
        self,
        cls: type[R],
        *,
        after: str | None = None,
        limit: int = 20,
        order: Literal["desc", "asc"] = "desc",
        where: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Page[R]:
        """OpenAI's list semantics: rows after the one with id `after` in `order` (newest first by default),
        at most `limit`, and whether more follow. Only rows whose columns equal `where`; `metadata` keeps jobs
        whose metadata holds those pairs."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise RequestError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}", "limit")
        if order not in ("desc", "asc"):
            raise RequestError(f"order must be 'desc' or 'asc', got {order!r}", "order")
        where = where or {}
        clauses = [f"{k} IS ?" for k in where]
        params: list[Any] = list(where.values())
        for key, value in (metadata or {}).items():
            clauses.append("json_extract(metadata, ?) IS ?")
            params += ["$." + json.dumps(key), value]
        with self._lock:
            if after is not None:
                cursor = self._query(f"SELECT seq FROM {cls.TABLE} WHERE id = ?", [after])
                if not cursor:
                    raise RequestError(f"after: no {cls.WHAT} with id {after!r} to list after", "after")
                clauses.append("seq < ?" if order == "desc" else "seq > ?")
                params.append(cursor[0]["seq"])
            sql = f"SELECT * FROM {cls.TABLE}" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            rows = self._query(sql + f" ORDER BY seq {order.upper()} LIMIT ?", [*params, limit + 1])
        return Page([_decode(cls, r) for r in rows[:limit]], len(rows) > limit)

    def update(self, cls: type[R], row_id: str, **changes: Any) -> R:
        """Set columns of one row; returns the row as it now is."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(cls)} | ({"id"} & set(changes))
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} of a {cls.__name__}")
        values: dict[str, Any] = {k: json.dumps(v) if k in cls.JSON else v for k, v in changes.items()}
        with self.transaction():
            if values:
                self._db.execute(
                    f"UPDATE {cls.TABLE} SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                    [*values.values(), row_id],
                )
            return self.get(cls, row_id)

    def delete(self, cls: type[R], row_id: str) -> None:
        with self.transaction():
            self._db.execute(f"DELETE FROM {cls.TABLE} WHERE id = ?", [row_id])

    # -- jobs -----------------------------------------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: Literal["info", "warn", "error"] = "info",
        type: Literal["message", "metrics"] = "message",
        data: dict[str, Any] | None = None,
    ) -> JobEvent:
        return self.insert(JobEvent(new_id("ftevent-"), job_id, now(), level, message, type, data))

    def claim(self, owner: str, try_lock: Callable[[str], bool]) -> tuple[JobRow, bool] | None:
        """Take the next job to run, in one write transaction, and mark it running for `owner`.

        First a `running` job whose worker is gone, then the oldest `queued` one. A worker holds a job's lock
        from before its claim commits until after its last write; `try_lock(job_id)` takes that lock without
        waiting (keeping it when it gets it) and says whether it did, so a running job whose lock it gets was
        left by a dead worker. Returns the job and whether it was taken over from a dead worker; None: no work.
        """
        with self.transaction():
            for status in ("running", "queued"):
                for job in self.all(JobRow, status=status):
                    if try_lock(job.id):
                        claimed = self.update(JobRow, job.id, status="running", attempts=job.attempts + 1, worker=owner)
                        return claimed, status == "running"
        return None
