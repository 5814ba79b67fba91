"""Fine-tuning jobs end to end, in the worker process the Supervisor runs: a job ends with the weights of
`finetune` run directly on the same data, settings and seed (the oracle); cancel stops at a step keeping its
checkpoint; pause then resume, and a kill -9 of the worker mid-job then its restart, both end with the
uninterrupted run's weights, the job run once. In this process: a job whose file vanished, whose loss became
NaN, whose disk filled up or whose data is bad fails saying why, and a stopping worker queues its job again.

The worker is tests/job_worker.py: the real worker with hooks a job's metadata turns on (hold at a step until
the test has asked for something; kill -9 at a step), so nothing here depends on the machine's speed.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pytest
import torch

from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT
from gptkit.server.files import Files
from gptkit.server.jobs import JobRequest, Jobs
from gptkit.server.registry import ModelRegistry
from gptkit.server.runner import AUTO_LORA, BASE_LR, MAX_ATTEMPTS, JobRun, auto_settings, job_error, training_configs
from gptkit.server.store import FINISHED, FileRow, JobEvent, JobRow, Store
from gptkit.server.worker import Supervisor, Worker
from gptkit.tasks.bundle import load
from gptkit.tasks.finetune import finetune
from gptkit.text.tokenizer import Tokenizer
from gptkit.training.loop import DivergedError, TrainingError
from gptkit.training.runlog import read_metrics

HERE = Path(__file__).resolve().parent
TRAIN = [{"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}"} for a, b in ((1, 2), (3, 4), (5, 1), (2, 2))]
VALID = [{"prompt": "Q: 2+3=", "completion": " 5"}, {"prompt": "Q: 4+4=", "completion": " 8"}]
HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 2.0}  # 2 steps an epoch, 4 in all
SEED = 11
DEADLINE = 300.0  # seconds a job may take on a busy machine; polls return as soon as the store says so


def lines(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load(path, merge_lora=False).model.state_dict()


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Training here and in the worker on one thread each: the same sums in the same order (so the weights can
    be compared bit for bit), and no two processes' thread pools fighting over the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 folder with the GPT-2 tokenizer: the model jobs fine-tune."""
    path = tmp_path_factory.mktemp("base") / "tiny"
    torch.manual_seed(0)
    config = GPTConfig.from_name("gpt2-tiny", n_embd=32, n_layer=1, n_head=2, initializer_range=0.2)
    GPT(config).save_pretrained(path, tokenizer=Tokenizer.from_pretrained("gpt2"))
    return path


@dataclass
class Service:
    """A data directory as the server would hold it: its store, the APIs over it, and the job workers."""

    store: Store
    base: Path
    supervisor: Supervisor | None = None

    def __post_init__(self) -> None:
        self.files, self.jobs, self.registry = Files(self.store), Jobs(self.store), ModelRegistry(self.store)
        self.train = self.files.create(lines(TRAIN), "train.jsonl", "fine-tune")
        self.valid = self.files.create(lines(VALID), "valid.jsonl", "fine-tune")

    def submit(self, **metadata: str) -> JobRow:
        request = JobRequest(
            model="tiny",
            model_source=str(self.base),
            training_file=self.train.id,
            validation_file=self.valid.id,
            hyperparameters=HYPERPARAMETERS,
            seed=SEED,
            suffix="t",
            metadata=metadata or None,
        )
        return self.jobs.create(request)

    def events(self, job_id: str, type: str | None = None) -> list[JobEvent]:
        found = self.store.all(JobEvent, job_id=job_id)
        return [e for e in found if type is None or e.type == type]

    def steps(self, job_id: str) -> list[int]:
        return [e.data["step"] for e in self.events(job_id, "metrics")]

    def wait(self, job_id: str, done: Callable[[JobRow], bool], what: str) -> JobRow:
        deadline = time.monotonic() + DEADLINE
        while not done(job := self.jobs.retrieve(job_id)):
            if time.monotonic() > deadline:
                log = (self.store.data_dir / "worker.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"{job_id} never {what}: {job}\n{[e.message for e in self.events(job_id)]}\n{log}")
            time.sleep(0.05)
        return job

    def finished(self, job_id: str) -> JobRow:
        return self.wait(job_id, lambda j: j.status in FINISHED, "finished")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, base: Path) -> Iterator[Service]:
    store = Store(tmp_path_factory.mktemp("server"))
    paths = [str(HERE.parent / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    supervisor = Supervisor(
        store.data_dir,
        device="cpu",
        threads=1,
        poll=0.05,
        restart_delay=0.05,
        command=[sys.executable, str(HERE / "job_worker.py")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
    )
    with supervisor:
        yield Service(store, base, supervisor)
    store.close()


@pytest.fixture(scope="module")
def oracle(service: Service) -> tuple[dict[str, torch.Tensor], list[float], int]:
    """finetune run directly in this process, on the configs of the service's job request with its "auto"
    settings resolved as the worker resolves them on a CPU (in a store no worker watches): its weights, losses
    per step, and targets trained on."""
    store = Store(service.store.data_dir.parent / "oracle-store")
    job = Service(store, service.base).submit()
    job = replace(job, **auto_settings(job, len(TRAIN), torch.device("cpu")))
    train_file, validation_file = (
        store.data_dir / store.get(FileRow, f).path for f in (job.training_file, job.validation_file)
    )
    run = store.data_dir / "run"
    finetune(*training_configs(job, train_file, validation_file, run, examples=len(TRAIN), device="cpu"))
    store.close()
    steps = [r for r in read_metrics(run) if "loss" in r]
    return weights(run), [r["loss"] for r in steps], steps[-1]["tokens"]


# -- in the worker --------------------------------------------------------------------------------


def test_a_job_in_the_worker_equals_finetune_run_directly(service: Service, request: pytest.FixtureRequest):
    job = service.submit()
    oracle = request.getfixturevalue("oracle")  # computed here while the worker trains
    done = service.finished(job.id)
    assert done.status == "succeeded", done.error
    lora = json.loads(json.dumps(asdict(AUTO_LORA)))
    assert (done.hyperparameters, done.lora, done.max_length) == (HYPERPARAMETERS, lora, 128)
    _, train = training_configs(done, Path("t"), Path("v"), Path("r"), examples=len(TRAIN))
    assert (train.lr, train.batch_size, train.seed, train.trainable_mode) == (BASE_LR * 2.0, 2, SEED, "lora")
    model = service.registry.get(done.fine_tuned_model)
    assert (
        done.fine_tuned_model == f"ft:tiny:gptkit:t:{job.id[-8:]}"
        and model.path == service.store.data_dir / done.run_dir
    )
    assert_same_weights(weights(model.path), oracle[0])
    assert load(model.path).task.task == "instruct"
    messages = [e.message for e in service.events(job.id)]
    assert messages[:5] == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {service.train.id}",
        f"Validating training file: {service.valid.id}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    assert messages[-3:] == [
        "Checkpoint created at step 4",
        f"New fine-tuned model created: {done.fine_tuned_model}",
        "The job has successfully completed",
    ]
    metrics = [e.data for e in service.events(job.id, "metrics")]
    assert [m["train_loss"] for m in metrics] == oracle[1] and [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert ["valid_loss" in m for m in metrics] == [False, True, False, True]
    assert done.trained_tokens == oracle[2]
    checkpoints = service.jobs.checkpoints(job.id).data
    assert [(c.step, c.fine_tuned_model_checkpoint) for c in checkpoints] == [
        (4, f"{done.fine_tuned_model}:ckpt-step-4"),
        (2, f"{done.fine_tuned_model}:ckpt-step-2"),
    ]
    assert checkpoints[1].metrics["train_loss"] == oracle[1][1] and checkpoints[1].metrics["valid_loss"] is not None
    assert load(service.registry.path(checkpoints[1].fine_tuned_model_checkpoint)).model is not None
    results = service.files.retrieve(done.result_files[0])
    assert (results.filename, results.purpose) == ("step_metrics.csv", "fine-tune-results")
    rows = service.files.content(results.id).decode().splitlines()
    assert rows[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert [float(r.split(",")[1]) for r in rows[1:]] == oracle[1] and rows[2].split(",")[3] != ""
    assert done.fine_tuned_model in [m.id for m in service.registry.list()]


def test_cancel_stops_the_job_at_the_next_step_and_keeps_its_checkpoint(service: Service):
    job = service.submit(hold_at_step="1")
    service.wait(job.id, lambda j: service.steps(j.id) == [1], "reached step 1")
    assert service.jobs.cancel(job.id).requested_action == "cancel"
    done = service.finished(job.id)
    assert (done.status, done.fine_tuned_model, done.requested_action, done.result_files) == (
        "cancelled",
        None,
        None,
        [],
    )
    assert service.steps(job.id) == [1]
    [checkpoint] = service.jobs.checkpoints(job.id).data
    assert checkpoint.step == 1 and (service.store.data_dir / checkpoint.path).is_dir()
    assert service.events(job.id)[-1].message == "Fine-tuning job cancelled at step 1; its checkpoints are kept"


def test_pause_then_resume_equals_the_uninterrupted_run(service: Service, oracle):
    job = service.submit(hold_at_step="1")
    service.wait(job.id, lambda j: service.steps(j.id) == [1], "reached step 1")
    service.jobs.pause(job.id)
    paused = service.wait(job.id, lambda j: j.status == "paused", "paused")
    assert [c.step for c in service.jobs.checkpoints(job.id).data] == [1]
    assert service.jobs.resume(job.id).status == "queued"
    done = service.finished(job.id)
    assert (paused.attempts, done.status, done.attempts) == (1, "succeeded", 2)
    assert_same_weights(weights(service.registry.path(done.fine_tuned_model)), oracle[0])
    assert service.steps(job.id) == [1, 2, 3, 4]
    messages = [e.message for e in service.events(job.id)]
    assert "Fine-tuning job paused at step 1, with a checkpoint to resume from" in messages
    assert "Fine-tuning job continues from its checkpoint of step 1" in messages


def test_a_worker_killed_mid_job_is_restarted_and_finishes_the_job_once(service: Service, oracle):
    restarts = service.supervisor.restarts
    job = service.submit(kill_at_step="4")  # after step 4 was recorded, before its checkpoint
    done = service.finished(job.id)
    assert (done.status, done.attempts) == ("succeeded", 2), done.error
    assert service.supervisor.restarts == restarts + 1
    assert_same_weights(weights(service.registry.path(done.fine_tuned_model)), oracle[0])
    assert service.steps(job.id) == [1, 2, 3, 4, 3, 4]  # steps 3 and 4 ran before the kill and again from step 2
    assert done.trained_tokens == oracle[2]  # each step counted once
    messages = [e.message for e in service.events(job.id)]
    assert messages.count("The job has successfully completed") == 1
    assert messages.count("Fine-tuning job started") == 1
    [warning] = [e for e in service.events(job.id) if e.level == "warn"]
    assert (
        warning.message == "The worker running this job stopped (attempt 1); continuing from its checkpoint of step 2"
    )
    assert len(service.files.content(done.result_files[0]).decode().splitlines()) == 5


# -- in this process ------------------------------------------------------------------------------


def run_here(service: Service) -> JobRow:
    """Claim the service's next job and run it in this process (its store has no worker)."""
    job, taken_over = service.store.claim("test", lambda job_id: True)
    return JobRun(service.store, job, taken_over=taken_over, device="cpu", stop=lambda: False).run()


@pytest.fixture
def here(tmp_path: Path, base: Path) -> Iterator[Service]:
    with Store(tmp_path / "data") as store:
        yield Service(store, base)


def test_a_job_whose_file_vanished_fails_naming_it(here: Service):
    job = here.submit()
    here.files.delete(here.train.id)
    failed = run_here(here)
    assert (failed.status, failed.error["code"], failed.error["param"]) == ("failed", "file_not_found", "training_file")
    assert failed.error["message"].startswith(f"the training file {here.train.id} is gone")
    assert here.events(job.id)[-1].level == "error" and failed.finished_at is not None


def test_bad_data_found_while_training_fails_the_job_naming_the_file_id_and_line(here: Service):
    bad = here.files.create(lines([*TRAIN, {"prompt": "a<|endoftext|>", "completion": " b"}]), "t.jsonl", "fine-tune")
    here.train = bad
    here.submit()
    failed = run_here(here)
    assert (failed.error["code"], failed.error["param"]) == ("invalid_training_file", "training_file")
    assert failed.error["message"].startswith(f"{bad.id}:5: the text contains the special token '<|endoftext|>'")


def test_a_nan_loss_fails_the_job(here: Service, tmp_path: Path):
    broken = load(here.base).model
    with torch.no_grad():
        broken.transformer.ln_f.weight.fill_(float("nan"))
    broken.save_pretrained(tmp_path / "nan", tokenizer=Tokenizer.from_pretrained("gpt2"))
    here.base = tmp_path / "nan"
    here.submit()
    failed = run_here(here)
    assert (failed.status, failed.error["code"]) == ("failed", "training_diverged")
    assert failed.error["message"].startswith("the loss became nan at step 1")


def test_a_full_disk_fails_the_job(here: Service, monkeypatch: pytest.MonkeyPatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("gptkit.training.loop.save_training_checkpoint", full)
    here.submit()
    job, _ = here.store.claim("test", lambda job_id: True)
    failed = JobRun(here.store, job, device="cpu", stop=lambda: True).run()  # its first checkpoint: at step 0
    assert (failed.status, failed.error["code"]) == ("failed", "disk_full")
    assert failed.error["message"].startswith("the server's disk is full: could not write the checkpoint at step 0")


def test_a_stopping_worker_queues_its_job_to_continue_from_a_checkpoint(here: Service):
    job = here.submit()
    claimed, _ = here.store.claim("test", lambda job_id: True)
    queued = JobRun(here.store, claimed, device="cpu", stop=lambda: True).run()
    assert (queued.status, queued.attempts) == ("queued", 1)
    assert [c.step for c in here.jobs.checkpoints(job.id).data] == [0]
    assert here.events(job.id)[-1].message == "The worker is stopping; the job is queued to continue from step 0"


def test_a_job_asked_to_cancel_whose_worker_died_is_cancelled_not_run(here: Service):
    job = here.submit()
    here.store.claim("dead", lambda job_id: True)
    here.jobs.cancel(job.id)  # asked of the worker, which then died
    cancelled = run_here(here)  # the next worker takes it over
    assert (cancelled.status, cancelled.attempts) == ("cancelled", 2)
    assert [e.message for e in here.events(job.id)][-2:] == [
        "The worker running this job stopped (attempt 1)",
        "Fine-tuning job cancelled at step 0; its checkpoints are kept",
    ]


def test_a_job_whose_worker_keeps_dying_fails(here: Service):
    job = here.submit()
    here.store.update(JobRow, job.id, status="running", attempts=MAX_ATTEMPTS)
    failed = run_here(here)  # taken over once more: one too many
    assert (failed.status, failed.attempts, failed.error["code"]) == ("failed", MAX_ATTEMPTS + 1, "worker_lost")


def test_a_worker_whose_parent_died_stops(tmp_path: Path):
    orphan = Worker(tmp_path, parent_pid=os.getppid() + 12345)
    assert orphan.stopping and not Worker(tmp_path, parent_pid=os.getppid()).stopping


def test_job_errors_name_their_cause():
    full = TrainingError("could not write the checkpoint")
    full.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert job_error(full)["code"] == "disk_full"
    assert job_error(DivergedError("the loss became nan"))["code"] == "training_diverged"
    assert job_error(ValueError("boom")) == {"code": "internal_error", "message": "ValueError: boom", "param": None}
    from gptkit.errors import CheckpointError, DataError

    assert job_error(CheckpointError("gone"))["param"] == "model"
    named = job_error(DataError("/srv/files/file-v:3: bad"), {"/srv/files/file-v": "file-v"}, "file-v")
    assert named == {"code": "invalid_validation_file", "message": "file-v:3: bad", "param": "validation_file"}
