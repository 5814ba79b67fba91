"""End to end on a real uvicorn server in a thread, on a free loopback port, through the synchronous `openai` SDK:
completions and chat; and the whole fine-tuning loop with the job worker as a real process (upload, create, list
page by page, events, checkpoints, the results file, then completions and chat with the ft: model, whose answers
equal those of `finetune` run directly on the same data, settings and seed)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from gptkit.generation.generate import generate
from gptkit.generation.params import SamplingParams
from gptkit.server.app import create_app
from gptkit.server.files import Files
from gptkit.server.fine_tuning import FineTuningConfig
from gptkit.server.jobs import JobRequest, Jobs
from gptkit.server.runner import auto_settings, training_configs
from gptkit.server.served import load_served
from gptkit.server.store import Store
from gptkit.tasks.bundle import load
from gptkit.tasks.finetune import finetune
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, render_chat
from server_helpers import KEY, job_supervisor, openai, rows_free, serving, small_model_dir, sync_client

pytest_plugins = ["server_fixtures"]

SRC = Path(__file__).resolve().parents[1] / "src"


def test_a_real_server_answers_the_sync_sdk_and_survives_a_client_leaving(tiny, oracle) -> None:
    with serving(create_app({"tiny": tiny}, api_keys=[KEY])) as url:
        client = sync_client(url)
        answer = client.completions.create(model="tiny", prompt="Hello world", max_tokens=8, temperature=0)
        ids = oracle.tokenizer.encode("Hello world")
        want = generate(
            oracle.model, [ids], SamplingParams(temperature=0, max_new_tokens=8), tokenizer=oracle.tokenizer
        )
        assert answer.choices[0].text == want[0].text

        chunks: list[Any] = list(
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0, stream=True
            )
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks].count(None) == len(chunks) - 1

        leaving = client.completions.create(
            model="tiny", prompt="Once", max_tokens=100, stream=True, extra_body={"ignore_eos": True}
        )
        next(iter(leaving))
        leaving.close()  # the connection closes mid-stream
        assert rows_free(tiny.engine) == tiny.engine.max_batch_size
        assert [m.id for m in client.models.list()] == ["tiny"]
        with pytest.raises(openai.AuthenticationError):
            client.with_options(api_key="wrong").models.list()
        client.close()


# -- fine-tuning ------------------------------------------------------------------------------------

TRAIN = [{"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}"} for a, b in ((1, 2), (3, 4), (5, 1), (2, 2), (4, 3))]
HYPERPARAMETERS = {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 30.0}  # far enough to change answers
SEED = 5
DEADLINE = 300.0  # seconds the job may take on a busy machine


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def greedy(bundle: Any, prompts: list[str], tokens: int = 4) -> list[str]:
    params = SamplingParams(temperature=0, max_new_tokens=tokens)
    ids = [bundle.tokenizer.encode(p, allowed_special="all") for p in prompts]
    return [g.text for g in generate(bundle.model, ids, params, tokenizer=bundle.tokenizer)]


def finetuned_directly(base: Path, data_dir: Path) -> Path:
    """`finetune` in this process on the job's data and settings (its "auto" ones resolved as the worker resolves
    them on a CPU): the run directory."""
    with Store(data_dir) as store:
        train = Files(store).create(jsonl(TRAIN), "train.jsonl", "fine-tune")
        request = JobRequest(
            model="tiny", model_source=str(base), training_file=train.id, hyperparameters=HYPERPARAMETERS, seed=SEED
        )
        job = Jobs(store).create(request)
        job = replace(job, **auto_settings(job, len(TRAIN), torch.device("cpu")))
        run = data_dir / "run"
        finetune(*training_configs(job, store.data_dir / train.path, None, run, examples=len(TRAIN), device="cpu"))
    return run


@pytest.fixture
def one_thread():
    """Training here and in the worker on one thread each: the same sums in the same order, weights equal bit for
    bit (and no two thread pools fighting over the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_fine_tuning_loop_through_the_sdk_with_a_real_worker(tmp_path: Path, one_thread, capsys) -> None:
    from gptkit.cli import main

    base = small_model_dir(tmp_path / "tiny")
    served = load_served(base, chat_template=DEFAULT_CHAT_TEMPLATE)
    served.engine.start()
    supervisor = job_supervisor(tmp_path / "data")
    app = create_app(
        {"tiny": served}, api_keys=[KEY], fine_tuning=FineTuningConfig(tmp_path / "data", supervisor=supervisor)
    )
    prompts = [row["prompt"] for row in TRAIN]
    with serving(app) as url:  # the app's lifespan starts the worker, and stops it at the end
        client = sync_client(url)
        jobs = client.fine_tuning.jobs
        train = client.files.create(file=("train.jsonl", jsonl(TRAIN)), purpose="fine-tune")
        method = {"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS}}
        job = jobs.create(model="tiny", training_file=train.id, method=method, seed=SEED, suffix="sums")
        other = jobs.create(model="tiny", training_file=train.id, hyperparameters={"n_epochs": 50})
        assert jobs.cancel(other.id).status in ("cancelled", "running")  # queued behind the first: cancelled at once
        assert [j.id for j in jobs.list(limit=1)] == [other.id, job.id]  # the SDK walks the pages

        oracle = load(finetuned_directly(base, tmp_path / "direct"))  # while the worker trains
        deadline = time.monotonic() + DEADLINE
        while (done := jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, [e.message for e in jobs.list_events(job.id)]
            time.sleep(0.1)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:tiny:gptkit:sums:{job.id[-8:]}"

        events = [e for e in jobs.list_events(job.id, limit=2)][::-1]  # page by page, oldest first here
        assert events[0].message == f"Created fine-tuning job: {job.id}"
        assert events[-1].message == "The job has successfully completed"
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 6
        checkpoints = jobs.checkpoints.list(job.id).data
        assert checkpoints[0].step_number == steps[-1]
        assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{steps[-1]}"
        results = client.files.content(done.result_files[0]).text.splitlines()
        assert results[0].startswith("step,train_loss") and len(results) == len(steps) + 1

        def ask(model: str) -> list[str]:
            answers = client.completions.create(model=model, prompt=prompts, max_tokens=4, temperature=0)
            return [c.text for c in sorted(answers.choices, key=lambda c: c.index)]

        tuned = ask(done.fine_tuned_model)
        assert tuned == greedy(oracle, prompts)
        assert tuned != ask("tiny")
        assert ask(checkpoints[0].fine_tuned_model_checkpoint) == tuned  # the last checkpoint is the final model

        messages = [{"role": "user", "content": "Q: 1+2="}]
        chat = client.chat.completions.create(
            model=done.fine_tuned_model, messages=messages, max_tokens=4, temperature=0
        )
        text = render_chat(messages, oracle.chat_template, add_generation_prompt=True, eos_token="<|endoftext|>")
        assert chat.choices[0].message.content == greedy(oracle, [text])[0]

        assert main(["jobs", "follow", job.id, "--base-url", url, "--api-key", KEY]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].endswith(f"Created fine-tuning job: {job.id}")
        assert out[-1] == f"{job.id} succeeded: use the model {done.fine_tuned_model}"
        assert jobs.retrieve(other.id).status == "cancelled"
        client.close()
    assert supervisor.pids == []
    served.engine.close(drain=False, timeout=30)
