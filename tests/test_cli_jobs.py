"""`gptkit jobs` against a real server on a loopback port without a job worker: jobs stay queued unless the test
moves them through the store, so `follow` sees exactly the events the test writes. One-line errors throughout."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gptkit.cli import main
from gptkit.server.app import create_app
from gptkit.server.fine_tuning import FineTuningConfig
from gptkit.server.store import JobRow, now
from server_helpers import KEY, serving

pytest_plugins = ["server_fixtures"]

TRAIN = [{"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}"} for a, b in ((1, 2), (3, 4), (5, 1))]


@pytest.fixture(scope="module")
def server(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(the app, its URL), keys required, no job worker."""
    data = tmp_path_factory.mktemp("data")
    app = create_app({"tiny": tiny}, api_keys=[KEY], fine_tuning=FineTuningConfig(data))
    with serving(app) as url:
        yield app, url


@pytest.fixture
def jobs(server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`gptkit jobs ARGS...` against the server, the key from the environment."""
    monkeypatch.setenv("GPTKIT_API_KEY", KEY)
    return lambda *args: main(["jobs", *args, "--base-url", server[1]])


def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TRAIN), encoding="utf-8")
    return path


def created(jobs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    assert jobs("create", "--model", "tiny", "--train", str(data_file(tmp_path)), *flags) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    return last.split()[1]


def test_create_uploads_then_creates_and_list_get_control_the_job(server, jobs, tmp_path, capsys) -> None:
    store = server[0].state.fine_tuning.store
    train = data_file(tmp_path)
    flags = ["--epochs", "2", "--batch-size", "1", "--lr-multiplier", "0.5", "--suffix", "s", "--seed", "3"]
    assert jobs("create", "--model", "tiny", "--train", str(train), "--validation", str(train), *flags) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"uploaded {train} as file-") and out[1].startswith(f"uploaded {train} as file-")
    job_id = out[2].split()[1]
    assert out[2] == f"created {job_id} (queued): fine-tuning tiny; follow it with `gptkit jobs follow {job_id}`"
    job = store.get(JobRow, job_id)
    assert job.hyperparameters == {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 0.5}
    assert (job.suffix, job.seed, job.validation_file is not None) == ("s", 3, True)

    assert jobs("list", "--limit", "5") == 0
    assert f"{job_id}  queued" in capsys.readouterr().out
    assert jobs("get", job_id) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["status"], shown["user_provided_suffix"]) == (job_id, "queued", "s")
    for action, status in (("pause", "paused"), ("resume", "queued"), ("cancel", "cancelled")):
        assert jobs(action, job_id) == 0
        assert capsys.readouterr().out == f"{job_id}: {status}\n"
    assert jobs("cancel", job_id) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"gptkit jobs: error: the server answered 409: job {job_id} has already cancelled; it cannot be cancelled"
    )


def test_follow_prints_events_and_a_progress_bar_until_the_job_ends(server, jobs, tmp_path, capsys) -> None:
    store = server[0].state.fine_tuning.store
    job_id = created(jobs, tmp_path, capsys)
    result: list[int] = []
    follower = threading.Thread(target=lambda: result.append(jobs("follow", job_id, "--interval", "0.02")))
    follower.start()
    time.sleep(0.2)  # the follower has polled at least once; what comes now arrives while it follows
    store.update(JobRow, job_id, status="running")
    store.add_event(job_id, "Fine-tuning job started")
    for step in (1, 2, 3):
        data = {"step": step, "train_loss": 2.0 / step, "total_steps": 3}
        store.add_event(job_id, f"Step {step}/3", type="metrics", data=data)
    with store.transaction():
        store.add_event(job_id, "The job has successfully completed")
        store.update(JobRow, job_id, status="succeeded", fine_tuned_model="ft:tiny:gptkit::x", finished_at=now())
    follower.join(60)
    assert result == [0]
    captured = capsys.readouterr()
    messages = [line.split("] ", 1)[1] for line in captured.out.splitlines() if line.startswith("[")]
    assert messages == [
        f"Created fine-tuning job: {job_id}",
        f"Validating training file: {store.get(JobRow, job_id).training_file}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
        "The job has successfully completed",
    ]  # each once, in order; the steps went to the bar
    assert captured.out.splitlines()[-1] == f"{job_id} succeeded: use the model ft:tiny:gptkit::x"
    assert "3/3" in captured.err and "loss=0.6667" in captured.err

    failed = created(jobs, tmp_path, capsys)
    error = {"code": "training_diverged", "message": "the loss became nan at step 1", "param": None}
    store.update(JobRow, failed, status="failed", error=error, finished_at=now())
    assert jobs("follow", failed) == 1
    assert capsys.readouterr().out.splitlines()[-1] == f"{failed} failed: the loss became nan at step 1"


def test_errors_are_one_line(server, jobs, tmp_path, monkeypatch, capsys) -> None:
    for args, says in [
        (["get", "ftjob-nope"], "the server answered 404: no fine-tuning job with id 'ftjob-nope'"),
        (["create", "--model", "tiny", "--train", "nope.jsonl"], "cannot read nope.jsonl: No such file or directory"),
        (["create", "--model", "gpt-9", "--train", str(data_file(tmp_path))], "404: model 'gpt-9' does not exist"),
        (["list", "--api-key", "wrong"], "the server answered 401: incorrect API key"),
    ]:
        assert jobs(*args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("gptkit jobs: error: ") and says in err and err.count("\n") == 0, err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # nobody listens there
    assert main(["jobs", "list", "--base-url", closed]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gptkit jobs: error: cannot reach {closed}: is `gptkit serve` running there? (see --base-url)"
    )


def subparsers(parser: Any) -> dict[str, Any]:
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_every_jobs_flag_has_a_help_line() -> None:
    from gptkit.cli import _build_parser

    actions = subparsers(subparsers(_build_parser())["jobs"])
    assert set(actions) == {"create", "list", "get", "follow", "cancel", "pause", "resume"}
    for name, parser in actions.items():
        for flag in (a for a in parser._actions if a.dest != "help"):
            assert flag.help and len(flag.help) > 20, (name, flag.dest)
