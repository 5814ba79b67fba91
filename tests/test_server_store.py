"""The server's durable state without a worker: the schema and its migrations, rows and OpenAI's object shapes,
pagination, atomic file storage, upload checks naming the bad line, job requests and their state changes,
claims that take over only a dead worker's job, and the fine-tuned model registry."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from gptkit.errors import DataError
from gptkit.server.files import Files
from gptkit.server.jobs import JobRequest, Jobs, fine_tuned_model_name
from gptkit.server.registry import ModelRegistry
from gptkit.server.store import (
    MIGRATIONS,
    FileRow,
    JobCheckpoint,
    JobEvent,
    JobRow,
    NotFoundError,
    RequestError,
    Store,
    StoreError,
)
from gptkit.server.worker import JobLocks

PAIRS = [{"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}"} for a in range(3) for b in range(3)]
CHAT = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 3


def lines(rows: list[object]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "data") as opened:
        yield opened


@pytest.fixture
def uploaded(store: Store) -> FileRow:
    return Files(store).create(lines(PAIRS), "train.jsonl", "fine-tune")


# -- the schema -----------------------------------------------------------------------------------


def test_an_empty_database_migrates_to_the_latest_schema_once(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "gptkit.db").write_bytes(b"")  # an empty file is an empty database
    for data_dir in (tmp_path / "new", tmp_path / "empty"):
        with Store(data_dir) as store:
            assert store.version == len(MIGRATIONS)
            assert store._query("PRAGMA journal_mode")[0][0] == "wal"
        with Store(data_dir) as store:  # opening again changes nothing
            assert store.version == len(MIGRATIONS)
    tables = {r[0] for r in sqlite3.connect(tmp_path / "new" / "gptkit.db").execute("SELECT name FROM sqlite_master")}
    assert {"files", "jobs", "job_events", "job_checkpoints"} <= tables


def test_a_new_migration_applies_in_order_and_keeps_rows_and_a_newer_database_is_refused(tmp_path: Path):
    with Store(tmp_path) as store:
        row = Files(store).create(b"hello", "a.txt", "user_data")
    later = (*MIGRATIONS, ("ALTER TABLE files ADD COLUMN note TEXT", "UPDATE files SET note = 'kept'"))
    with Store(tmp_path, migrations=later) as store:
        assert store.version == len(MIGRATIONS) + 1
        assert store.get(FileRow, row.id) == row
        assert store._query("SELECT note FROM files")[0][0] == "kept"
    with pytest.raises(StoreError, match="newer than this gptkit"):
        Store(tmp_path)


# -- rows and pages -------------------------------------------------------------------------------


def test_rows_round_trip_and_match_openai_objects(store: Store, uploaded: FileRow):
    types = pytest.importorskip("openai.types")
    fine_tuning = pytest.importorskip("openai.types.fine_tuning")
    checkpoints = pytest.importorskip("openai.types.fine_tuning.jobs")
    assert store.get(FileRow, uploaded.id) == uploaded
    assert types.FileObject.model_validate(uploaded.to_openai()).id == uploaded.id
    job = Jobs(store).create(
        JobRequest(
            model="gpt2",
            training_file=uploaded.id,
            hyperparameters={"n_epochs": 2},
            suffix="mine",
            metadata={"team": "a"},
            lora={"r": 4},
        )
    )
    assert store.get(JobRow, job.id) == job
    assert job.lora == {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["c_attn"], "rslora": False}
    shown = fine_tuning.FineTuningJob.model_validate(job.to_openai())
    assert shown.hyperparameters.n_epochs == 2 and shown.hyperparameters.batch_size == "auto"
    assert shown.method.supervised.hyperparameters.n_epochs == 2 and shown.user_provided_suffix == "mine"
    assert fine_tuned_model_name(job) == f"ft:gpt2:gptkit:mine:{job.id[-8:]}"
    event = store.add_event(job.id, "Step 1/2: training loss=1.0", type="metrics", data={"step": 1})
    assert fine_tuning.FineTuningJobEvent.model_validate(event.to_openai()).data == {"step": 1}
    checkpoint = store.insert(JobCheckpoint("ftckpt_x", job.id, 1, 1, {"step": 1}, "ft:x:ckpt-step-1", "jobs/x"))
    assert store.get(JobCheckpoint, "ftckpt_x") == checkpoint
    assert checkpoints.FineTuningJobCheckpoint.model_validate(checkpoint.to_openai()).step_number == 1
    with pytest.raises(NotFoundError, match="no fine-tuning job with id 'ftjob-nope'"):
        store.get(JobRow, "ftjob-nope")


def test_lists_page_as_openai_does(store: Store):
    files = Files(store)
    made = [files.create(f"{i}".encode(), f"{i}.txt", "user_data" if i % 2 else "batch") for i in range(25)]
    newest = [r.id for r in reversed(made)]
    first = files.list(limit=10)
    assert [r.id for r in first.data] == newest[:10] and first.has_more
    second = files.list(after=first.data[-1].id, limit=10)
    third = files.list(after=second.data[-1].id, limit=10)
    assert [r.id for r in second.data + third.data] == newest[10:] and second.has_more and not third.has_more
    assert third.to_openai()["last_id"] == made[0].id and third.to_openai()["object"] == "list"
    assert [r.id for r in files.list(order="asc", limit=3).data] == [r.id for r in made[:3]]
    assert (
        all(r.purpose == "batch" for r in files.list(purpose="batch").data)
        and len(files.list(purpose="batch").data) == 13
    )
    assert files.list(after=made[0].id).data == [] and not files.list(after=made[0].id).has_more
    for bad in ({"limit": 0}, {"limit": 10_001}, {"limit": True}, {"after": "file-gone"}, {"order": "up"}):
        with pytest.raises(RequestError) as info:
            files.list(**bad)
        assert info.value.param == next(iter(bad))


# -- files ----------------------------------------------------------------------------------------


def test_files_are_stored_atomically_under_their_id_and_deleted(store: Store):
    files = Files(store)
    row = files.create(io.BytesIO(lines(PAIRS)), "../../etc/passwd", "fine-tune")  # a stream, and a hostile name
    assert row.path == f"files/{row.id}" and row.filename == "../../etc/passwd" and row.bytes == len(lines(PAIRS))
    assert files.content(row.id) == lines(PAIRS)
    with pytest.raises(DataError):
        files.create(b"not json\n", "bad.jsonl", "fine-tune")
    assert sorted(p.name for p in files.root.iterdir()) == [row.id]  # the refused upload left nothing
    assert [r.id for r in files.list().data] == [row.id]
    (files.root / "file-stray").write_bytes(b"x")  # as a crash mid-upload would leave it
    (files.root / ".file-x.1.tmp").write_bytes(b"x")
    assert files.remove_strays() == []  # it may be an upload in flight
    assert files.remove_strays(older_than=0) == [".file-x.1.tmp", "file-stray"]
    assert files.delete(row.id) == row
    assert list(files.root.iterdir()) == [] and files.list().data == []
    with pytest.raises(NotFoundError):
        files.retrieve(row.id)
    with pytest.raises(RequestError) as info:
        files.create(b"x", "a.jsonl", "fine-tune-results")  # only jobs make results
    assert info.value.param == "purpose"


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "train.jsonl: the file is empty"),
        (b"\n  \n", "train.jsonl: the file is empty"),
        (lines(PAIRS[:2]) + b'{"prompt": "x", \n', "train.jsonl:3: not valid JSON"),
        (lines(PAIRS[:1]) + b"[1, 2]\n", "train.jsonl:2: expected a JSON object, got list"),
        (lines(PAIRS[:3]) + lines([{"prompt": "a", "answer": "b"}]), "train.jsonl:4: missing field 'completion'"),
        (lines([*PAIRS[:1], {"prompt": "a", "completion": "  "}]), "train.jsonl:2: empty completion"),
        (lines([*CHAT[:1], {"messages": [{"role": "user", "content": "x"}]}]), "train.jsonl:2: no assistant message"),
        (lines(CHAT[:1]) + lines(PAIRS[:1]), "train.jsonl:2: missing field 'messages'"),
        (b"nope\n" * 3, "train.jsonl: no prompt/completion examples in this file (3 bad rows skipped, the first: "),
        (lines(PAIRS) * 200, "train.jsonl: more than the 4096 bytes"),
    ],
)
def test_fine_tune_uploads_are_refused_naming_the_first_bad_line(store: Store, content: bytes, expected: str):
    files = Files(store, max_bytes=4096)
    with pytest.raises(DataError) as info:
        files.create(io.BytesIO(content), "train.jsonl", "fine-tune")
    assert str(info.value).startswith(expected)
    assert str(store.data_dir) not in str(info.value)  # the client's name, never the server's path
    assert files.list().data == [] and list(files.root.iterdir()) == []
    assert files.create(content[:4096], "notes.txt", "user_data").bytes == len(content[:4096])  # other purposes: as is


def test_two_bad_lines_are_counted(store: Store):
    with pytest.raises(DataError, match=r"^t.jsonl:2: not valid JSON .*\(2 more bad lines\)$"):
        Files(store).create(lines(PAIRS[:1]) + b"{\n{\n" + lines(CHAT[:1]), "t.jsonl", "fine-tune")
    with pytest.raises(DataError, match=r"\(1 more bad line\)$"):
        Files(store).create(lines(PAIRS[:1]) + b"{\n{\n", "t.jsonl", "fine-tune")


# -- jobs as rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"training_file": "file-nope"}, "training_file"),
        ({"validation_file": "file-nope"}, "validation_file"),
        ({"model": ""}, "model"),
        ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
        ({"hyperparameters": {"n_epochs": 2.5}}, "n_epochs"),
        ({"hyperparameters": {"batch_size": "many"}}, "batch_size"),
        ({"hyperparameters": {"learning_rate_multiplier": -1}}, "learning_rate_multiplier"),
        ({"hyperparameters": {"epochs": 3}}, "hyperparameters"),
        ({"method": {"type": "dpo"}}, "method"),
        ({"method": {"type": "supervised", "supervised": [1]}}, "hyperparameters"),
        ({"hyperparameters": [1]}, "hyperparameters"),
        (
            {
                "hyperparameters": {"n_epochs": 2},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
            },
            "hyperparameters",
        ),
        ({"suffix": "a:b"}, "suffix"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"seed": -1}, "seed"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"lora": {"r": 0}}, "lora"),
        ({"lora": {"rank": 4}}, "lora"),
        ({"max_length": 1}, "max_length"),
    ],
)
def test_a_job_request_is_refused_naming_its_bad_param(store: Store, uploaded: FileRow, changes: dict, param: str):
    request = {"model": "gpt2", "training_file": uploaded.id, **changes}
    with pytest.raises(RequestError) as info:
        Jobs(store).create(JobRequest(**request))
    assert info.value.param == param
    assert store.all(JobRow) == []


def test_a_results_file_cannot_train(store: Store):
    results = store.insert(Files(store).stage(b"step\n", "step_metrics.csv", "fine-tune-results"))
    with pytest.raises(RequestError, match="purpose 'fine-tune-results'"):
        Jobs(store).create(JobRequest(model="gpt2", training_file=results.id))


def test_cancel_pause_and_resume_change_rows_or_ask_the_worker(store: Store, uploaded: FileRow):
    jobs = Jobs(store)
    job = jobs.create(JobRequest(model="gpt2", training_file=uploaded.id, seed=5))
    assert (job.status, job.seed, job.hyperparameters["n_epochs"], job.lora) == ("queued", 5, "auto", "auto")
    assert [e.message for e in reversed(jobs.events(job.id).data)] == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {uploaded.id}",
        "Files validated, moving job to queued state",
    ]
    assert jobs.pause(job.id).status == "paused" and jobs.pause(job.id).status == "paused"
    assert jobs.resume(job.id).status == "queued"
    with pytest.raises(RequestError, match="only a paused job can be resumed"):
        jobs.resume(job.id)
    claimed, taken_over = store.claim("w1", lambda job_id: True)
    assert (claimed.id, claimed.status, claimed.attempts, claimed.worker, taken_over) == (
        job.id,
        "running",
        1,
        "w1",
        False,
    )
    asked = jobs.pause(job.id)
    assert (asked.status, asked.requested_action) == ("running", "pause")
    assert jobs.resume(job.id).requested_action is None  # withdrawn before the worker acted
    assert jobs.cancel(job.id).requested_action == "cancel"
    with pytest.raises(RequestError, match="being cancelled"):
        jobs.pause(job.id)
    other = jobs.create(JobRequest(model="gpt2", training_file=uploaded.id))
    cancelled = jobs.cancel(other.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(RequestError, match="has already cancelled"):
        jobs.cancel(other.id)
    assert [j.id for j in jobs.list(limit=1).data] == [other.id] and jobs.list(limit=1).has_more
    tagged = jobs.create(JobRequest(model="gpt2", training_file=uploaded.id, metadata={"team": "a", "k": "v"}))
    assert [j.id for j in jobs.list(metadata={"team": "a"}).data] == [tagged.id]
    assert jobs.list(metadata={"team": "b"}).data == [] and jobs.list(metadata={"k": "v", "team": "a"}).data


def test_a_claim_takes_over_only_a_job_whose_worker_is_gone(store: Store, uploaded: FileRow):
    jobs = Jobs(store)
    first, second = (jobs.create(JobRequest(model="gpt2", training_file=uploaded.id)) for _ in range(2))
    alive, other = JobLocks(store.data_dir), JobLocks(store.data_dir)  # two workers' locks
    assert store.claim("alive", alive.try_lock)[0].id == first.id  # the oldest queued job first
    assert store.claim("other", other.try_lock)[0].id == second.id
    assert store.claim("third", JobLocks(store.data_dir).try_lock) is None  # both held: nothing to take
    alive.release(first.id)  # as the kernel does when a worker dies
    job, taken_over = store.claim("third", JobLocks(store.data_dir).try_lock)
    assert (job.id, taken_over, job.attempts, job.worker) == (first.id, True, 2, "third")


# -- the model registry ---------------------------------------------------------------------------


def test_the_registry_serves_succeeded_jobs_and_their_checkpoints_and_deletes_them(store: Store, uploaded: FileRow):
    job = Jobs(store).create(JobRequest(model="gpt2", training_file=uploaded.id, suffix="s"))
    name = fine_tuned_model_name(job)
    run = store.data_dir / job.run_dir
    (run / "checkpoints" / "step-0000002").mkdir(parents=True)
    checkpoint = store.insert(
        JobCheckpoint(
            "ftckpt_a", job.id, 1, 2, {"step": 2}, f"{name}:ckpt-step-2", f"{job.run_dir}/checkpoints/step-0000002"
        )
    )
    registry = ModelRegistry(store)
    with pytest.raises(NotFoundError):
        registry.get(name)  # not succeeded yet
    assert registry.path(checkpoint.fine_tuned_model_checkpoint) == store.data_dir / checkpoint.path
    assert registry.path("ftckpt_a") == store.data_dir / checkpoint.path
    store.update(JobRow, job.id, status="succeeded", fine_tuned_model=name, finished_at=7)
    assert registry.path(name) == run
    assert [m.to_openai() for m in registry.list()] == [
        {"id": name, "object": "model", "created": 7, "owned_by": "gptkit"}
    ]
    assert [m.id for m in registry.list(checkpoints=True)] == [name, f"{name}:ckpt-step-2"]
    with pytest.raises(RequestError, match="base model"):
        registry.delete("gpt2")
    with pytest.raises(NotFoundError):
        registry.delete("ft:gpt2:gptkit:s:nothing")
    assert registry.delete(f"{name}:ckpt-step-2") == {"id": f"{name}:ckpt-step-2", "object": "model", "deleted": True}
    assert not (store.data_dir / checkpoint.path).exists() and run.is_dir()
    assert registry.delete(name)["deleted"] and not run.exists()
    assert registry.list() == [] and store.get(JobRow, job.id).model_deleted
    with pytest.raises(NotFoundError):
        registry.get(name)
    assert store.all(JobEvent, job_id=job.id)[-1].message == f"Fine-tuned model deleted: {name}"
