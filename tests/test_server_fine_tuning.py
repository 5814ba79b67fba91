"""The Files and fine-tuning jobs endpoints through the official `openai` SDK, in-process (no job worker runs here:
jobs stay queued unless a test moves them), and fine-tuned models served from the registry: loaded on first use,
unloaded least recently used first and when deleted. The whole loop with a real worker is in test_server_e2e.py."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gptkit.server.app import create_app
from gptkit.server.fine_tuning import FineTuningConfig
from gptkit.server.jobs import JobRequest, fine_tuned_model_name
from gptkit.server.store import JobRow, now
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, save_chat_template
from server_helpers import KEY, openai, raw, run

pytest_plugins = ["server_fixtures"]

TRAIN = [{"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}"} for a, b in ((1, 2), (3, 4), (5, 1))]
AUTH = {"authorization": f"Bearer {KEY}"}
MAX_FILE_BYTES = 4096


def jsonl(rows: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


@pytest.fixture
def api(tiny: Any, tmp_path: Path) -> Any:
    """The app over `tiny` with a data directory (no job worker), one fine-tuned model loaded at a time."""
    config = FineTuningConfig(tmp_path / "data", max_file_bytes=MAX_FILE_BYTES, max_loaded_models=1)
    app = create_app({"tiny": tiny}, api_keys=[KEY], fine_tuning=config)
    yield app
    app.state.pool.close(timeout=30)
    app.state.fine_tuning.store.close()


async def upload(client: Any, data: bytes = jsonl(TRAIN), name: str = "train.jsonl") -> Any:
    return await client.files.create(file=(name, data), purpose="fine-tune")


def status_of(app: Any, method: str, path: str, **kwargs: Any) -> Any:
    return asyncio.run(raw(app, method, path, **kwargs))


# -- files ------------------------------------------------------------------------------------------


def test_files_upload_list_retrieve_content_and_delete(api) -> None:
    async def go(client: Any) -> None:
        first = await upload(client)
        second = await upload(client, name="more.jsonl")
        assert (first.object, first.purpose, first.status) == ("file", "fine-tune", "processed")
        assert first.bytes == len(jsonl(TRAIN))
        assert first.filename == "train.jsonl" and first.id.startswith("file-")
        assert [f.id async for f in client.files.list(purpose="fine-tune", limit=1)] == [second.id, first.id]
        assert [f.id for f in (await client.files.list(order="asc")).data] == [first.id, second.id]
        assert (await client.files.list(purpose="batch")).data == []
        assert (await client.files.retrieve(first.id)).filename == "train.jsonl"
        assert (await client.files.content(first.id)).content == jsonl(TRAIN)
        deleted = await client.files.delete(first.id)
        assert (deleted.id, deleted.deleted) == (first.id, True)
        with pytest.raises(openai.NotFoundError, match=f"no file with id '{first.id}'"):
            await client.files.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            await client.files.content(first.id)

    run(api, go)


@pytest.mark.parametrize(
    "data, says",
    [
        (jsonl([TRAIN[0], "{not json"]), "bad.jsonl:2: "),
        (jsonl([TRAIN[0], {"question": "a", "answer": "b"}]), "bad.jsonl:2: "),
        (jsonl([TRAIN[0], {"prompt": "a", "completion": ""}]), "bad.jsonl:2: empty completion"),
        (b"\n  \n", "bad.jsonl: the file is empty"),
        (jsonl([TRAIN[0]] * 100), f"bad.jsonl: more than the {MAX_FILE_BYTES} bytes a file may hold"),
    ],
    ids=["not-json", "wrong-keys", "empty-completion", "empty-file", "too-large"],
)
def test_malformed_uploads_are_400s_naming_the_file_and_line(api, data, says) -> None:
    async def go(client: Any) -> None:
        with pytest.raises(openai.BadRequestError) as info:
            await upload(client, data, "bad.jsonl")
        assert info.value.body["message"].startswith(says) and info.value.body["param"] == "file"
        assert (await client.files.list()).data == []  # nothing was stored

    run(api, go)


def test_uploads_without_a_file_or_purpose_or_far_too_large_are_refused(api) -> None:
    missing = status_of(api, "POST", "/v1/files", headers=AUTH, data={"purpose": "fine-tune"})
    assert (missing.status_code, missing.json()["error"]["param"]) == (400, "file")
    files = {"file": ("t.jsonl", jsonl(TRAIN))}
    purpose = status_of(api, "POST", "/v1/files", headers=AUTH, files=files, data={"purpose": "fun"})
    assert (purpose.status_code, purpose.json()["error"]["param"]) == (400, "purpose")
    huge = status_of(api, "POST", "/v1/files", headers=AUTH, files={"file": ("t", b"x" * (2 << 20))}, data={})
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "request_too_large")


def test_file_ids_of_another_data_directory_are_not_reachable(api, tiny, tmp_path) -> None:
    other = create_app({"tiny": tiny}, fine_tuning=FineTuningConfig(tmp_path / "other"))
    theirs = run(other, upload)

    async def go(client: Any) -> None:
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(theirs.id)
        with pytest.raises(openai.BadRequestError, match="no file with id") as info:
            await client.fine_tuning.jobs.create(model="tiny", training_file=theirs.id)
        assert info.value.body["param"] == "training_file"
        for bad in ("../other/gptkit.db", "..%2F..%2Fetc%2Fpasswd"):  # ids are looked up, never made into paths
            with pytest.raises(openai.NotFoundError):
                await client.files.content(bad)

    run(api, go)
    other.state.fine_tuning.store.close()


# -- jobs -------------------------------------------------------------------------------------------


def test_jobs_create_list_retrieve_events_and_checkpoints(api) -> None:
    async def go(client: Any) -> None:
        train = await upload(client)
        hyperparameters = {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 0.5}
        first = await client.fine_tuning.jobs.create(
            model="tiny",
            training_file=train.id,
            method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            suffix="sums",
            seed=3,
            metadata={"team": "a"},
            extra_body={"lora": {"r": 4, "alpha": 8.0}, "max_length": 64},
        )
        assert (first.object, first.status, first.model, first.seed) == ("fine_tuning.job", "queued", "tiny", 3)
        assert first.hyperparameters.model_dump() == hyperparameters
        assert first.method.supervised.hyperparameters.n_epochs == 2 and first.user_provided_suffix == "sums"
        second = await client.fine_tuning.jobs.create(model="tiny", training_file=train.id, hyperparameters={})
        third = await client.fine_tuning.jobs.create(model="tiny", training_file=train.id, metadata={"team": "b"})
        assert second.hyperparameters.n_epochs == "auto"
        walked = [j.id async for j in client.fine_tuning.jobs.list(limit=1)]  # one page per job, newest first
        assert walked == [third.id, second.id, first.id]
        assert [j.id for j in (await client.fine_tuning.jobs.list(metadata={"team": "a"})).data] == [first.id]
        assert (await client.fine_tuning.jobs.retrieve(first.id)).training_file == train.id
        events = [e async for e in client.fine_tuning.jobs.list_events(first.id, limit=2)]
        assert [e.message for e in events][::-1] == [
            f"Created fine-tuning job: {first.id}",
            f"Validating training file: {train.id}",
            "Files validated, moving job to queued state",
        ]
        assert (await client.fine_tuning.jobs.checkpoints.list(first.id)).data == []
        with pytest.raises(openai.NotFoundError):
            await client.fine_tuning.jobs.retrieve("ftjob-nope")
        with pytest.raises(openai.NotFoundError):
            await client.fine_tuning.jobs.list_events("ftjob-nope")

    run(api, go)


@pytest.mark.parametrize(
    "args, status, param",
    [
        (dict(model="gpt-4o-mini"), 404, "model"),
        (dict(model="ft:tiny:gptkit::nope"), 404, "model"),
        (dict(training_file="file-missing"), 400, "training_file"),
        (dict(hyperparameters={"n_epochs": 0}), 400, "n_epochs"),
        (dict(method={"type": "dpo"}), 400, "method"),
        (dict(suffix="no spaces"), 400, "suffix"),
        (dict(seed=-1), 400, "seed"),
        (dict(integrations=[{"type": "wandb", "wandb": {"project": "p"}}]), 400, "integrations"),
        (dict(extra_body={"lora": {"r": 0}}), 400, "lora"),
    ],
)
def test_bad_job_requests_are_refused_naming_the_field(api, args, status, param) -> None:
    async def go(client: Any) -> None:
        train = await upload(client)
        with pytest.raises(openai.APIStatusError) as info:
            await client.fine_tuning.jobs.create(**{"model": "tiny", "training_file": train.id, **args})
        assert (info.value.status_code, info.value.body["param"]) == (status, param)
        if status == 404:
            assert info.value.body["code"] == "model_not_found"

    run(api, go)


def test_a_job_on_a_deleted_file_is_refused(api) -> None:
    async def go(client: Any) -> None:
        train = await upload(client)
        await client.files.delete(train.id)
        with pytest.raises(openai.BadRequestError, match="upload it first") as info:
            await client.fine_tuning.jobs.create(model="tiny", training_file=train.id)
        assert info.value.body["param"] == "training_file"

    run(api, go)


def test_cancel_pause_resume_transitions_and_409s_that_say_not_to_retry(api) -> None:
    async def go(client: Any) -> str:
        train = await upload(client)
        jobs = client.fine_tuning.jobs
        job = await jobs.create(model="tiny", training_file=train.id)
        assert (await jobs.pause(job.id)).status == "paused"
        assert (await jobs.pause(job.id)).status == "paused"  # asking twice is no error
        assert (await jobs.resume(job.id)).status == "queued"
        with pytest.raises(openai.ConflictError, match="only a paused job can be resumed"):
            await jobs.resume(job.id)
        cancelled = await jobs.cancel(job.id)
        assert (cancelled.status, cancelled.finished_at is not None) == ("cancelled", True)
        for action in (jobs.cancel, jobs.pause, jobs.resume):
            with pytest.raises(openai.ConflictError):
                await action(job.id)
        messages = [e.message async for e in jobs.list_events(job.id)]
        assert messages[0] == "Fine-tuning job cancelled" and messages[2] == "Fine-tuning job paused"
        return job.id

    job_id = run(api, go)
    again = status_of(api, "POST", f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=AUTH)
    assert (again.status_code, again.headers["x-should-retry"]) == (409, "false")
    assert again.json()["error"]["message"] == f"job {job_id} has already cancelled; it cannot be cancelled"


def test_every_route_asks_for_the_key(api) -> None:
    paths = api.openapi()["paths"]
    routes = [(method.upper(), path) for path in paths if path.startswith("/v1") for method in paths[path]]
    assert len(routes) == 20  # models 3, completions, chat, embeddings, tokenize, files 5, jobs 8
    for method, path in routes:
        url = path.replace("{model}", "ft:x").replace("{file_id}", "file-x").replace("{job_id}", "ftjob-x")
        for headers in ({}, {"authorization": "Bearer wrong"}):
            answer = status_of(api, method, url, headers=headers)
            assert (answer.status_code, answer.json()["error"]["code"]) == (401, "invalid_api_key"), (method, url)


# -- fine-tuned models ------------------------------------------------------------------------------


def succeeded_job(app: Any, tiny_dir: Path, suffix: str) -> str:
    """A job marked succeeded whose run directory is a copy of `tiny_dir` with gptkit's chat template: its model."""
    service = app.state.fine_tuning
    train = service.files.create(jsonl(TRAIN), "t.jsonl", "fine-tune")
    job = service.jobs.create(JobRequest(model="tiny", training_file=train.id, suffix=suffix))
    shutil.copytree(tiny_dir, service.store.data_dir / job.run_dir)
    save_chat_template(service.store.data_dir / job.run_dir, DEFAULT_CHAT_TEMPLATE)
    name = fine_tuned_model_name(job)
    service.store.update(JobRow, job.id, status="succeeded", fine_tuned_model=name, finished_at=now())
    return name


def test_fine_tuned_models_are_listed_loaded_on_use_unloaded_lru_and_deleted(api, tiny_dir) -> None:
    first, second = succeeded_job(api, tiny_dir, "a"), succeeded_job(api, tiny_dir, "b")
    pool = api.state.pool

    async def ask(client: Any, model: str) -> str:
        answer = await client.completions.create(model=model, prompt="Hello", max_tokens=5, temperature=0)
        return answer.choices[0].text

    async def go(client: Any) -> None:
        listed = {m.id: m.owned_by for m in (await client.models.list()).data}
        assert listed == {"tiny": "gptkit", second: "gptkit", first: "gptkit"}
        assert (await client.models.retrieve(first)).id == first and pool.loaded == []
        base = await ask(client, "tiny")
        assert await ask(client, first) == base  # the same weights, in an engine of its own
        assert pool.loaded == [first]
        chat = await client.chat.completions.create(
            model=second, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0
        )
        assert chat.choices[0].message.role == "assistant"  # the template came with the folder
        assert pool.loaded == [second]  # one at a time here: the first was unloaded
        assert await ask(client, first) == base and pool.loaded == [first]

        deleted = await client.models.delete(first)
        assert (deleted.id, deleted.deleted) == (first, True)
        assert pool.loaded == []
        with pytest.raises(openai.NotFoundError) as info:
            await ask(client, first)
        assert info.value.body["code"] == "model_not_found"
        assert [m.id for m in (await client.models.list()).data] == ["tiny", second]
        with pytest.raises(openai.NotFoundError):
            await client.models.delete(first)
        with pytest.raises(openai.PermissionDeniedError, match="base model"):
            await client.models.delete("tiny")
        with pytest.raises(openai.NotFoundError):
            await client.models.delete("gpt-4o")
        job = await client.fine_tuning.jobs.create(model=second, training_file=(await upload(client)).id)
        assert job.model == second  # a fine-tuned model can be fine-tuned further

    run(api, go)
    assert (api.state.fine_tuning.store.data_dir / "jobs").is_dir()


def test_requests_that_arrive_together_load_a_model_once(tiny, tiny_dir, tmp_path) -> None:
    from gptkit.server.served import load_served

    loads: list[Path] = []
    config = FineTuningConfig(tmp_path / "data", load=lambda path: loads.append(path) or load_served(path))
    app = create_app({"tiny": tiny}, fine_tuning=config)
    name = succeeded_job(app, tiny_dir, "once")

    async def go(client: Any) -> list[str]:
        asks = [client.completions.create(model=name, prompt=p, max_tokens=3, temperature=0) for p in "abcd"]
        return [a.model for a in await asyncio.gather(*asks)]

    assert run(app, go, key=None) == [name] * 4
    assert len(loads) == 1 and app.state.pool.loaded == [name]
    app.state.pool.cached(name).engine.close(drain=False, timeout=30)  # its engine stops: loaded again when asked
    assert run(app, go, key=None) == [name] * 4 and len(loads) == 2
    app.state.pool.close(timeout=30)
    app.state.fine_tuning.store.close()


def test_a_fine_tuned_model_whose_folder_is_gone_or_damaged_is_a_503_naming_it(api, tiny_dir) -> None:
    """A folder deleted or truncated by hand is OpenAI's error object naming the model, the folder and the fault,
    not a bare 500; the pool stays usable: other models answer, and the model loads once its folder is back."""
    gone, damaged, good = (succeeded_job(api, tiny_dir, suffix) for suffix in ("gone", "damaged", "good"))
    registry, pool = api.state.fine_tuning.registry, api.state.pool
    shutil.rmtree(registry.get(gone).path)
    weights = registry.get(damaged).path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    async def ask(client: Any, model: str, stream: bool = False) -> Any:
        return await client.completions.create(model=model, prompt="Hi", max_tokens=3, temperature=0, stream=stream)

    async def go(client: Any) -> None:
        for model, fault, stream in ((gone, "does not exist", False), (damaged, "model.safetensors", True)):
            with pytest.raises(openai.InternalServerError) as info:
                await ask(client, model, stream)
            error, folder = info.value.body, registry.get(model).path
            assert (info.value.status_code, error["code"], error["param"]) == (503, "model_unavailable", "model")
            assert model in error["message"] and str(folder) in error["message"] and fault in error["message"]
            assert info.value.response.headers["x-should-retry"] == "false"  # a retry cannot mend a folder
        assert pool.loaded == []
        assert (await ask(client, "tiny")).choices[0].text == (await ask(client, good)).choices[0].text
        assert {m.id for m in (await client.models.list()).data} == {"tiny", gone, damaged, good}
        shutil.copy(tiny_dir / "model.safetensors", weights)  # mended: it loads
        assert (await ask(client, damaged)).model == damaged and pool.loaded == [damaged]
        assert (await client.models.delete(gone)).deleted

    run(api, go)
