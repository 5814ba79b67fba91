"""`gptkit serve`: flags, the quickstart's model as the default, the data directory of files and fine-tuning jobs,
one-line errors, startup lines, and a clean stop (uvicorn's run is replaced by a stand-in that calls the app
in-process: no port is opened, and no job worker starts)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gptkit.cli import _build_parser, main
from gptkit.server.engine import Engine
from gptkit.training.config import QUICKSTART_DIR
from server_helpers import raw, tiny_model_dir


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch) -> Path:
    """The per-user data directory of these tests: never the real one."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    return tmp_path / "data-home"


def test_every_serve_flag_has_a_help_line() -> None:
    sub = next(a for a in _build_parser()._actions if a.dest == "command")
    serve = sub.choices["serve"]
    flags = [a for a in serve._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in flags} >= {"model", "served_model_name", "host", "port", "api_key", "chat_template"}
    assert {a.dest for a in flags} >= {"data_dir", "max_jobs", "job_threads", "max_loaded_models"}
    assert all(a.help and len(a.help) > 20 for a in flags)


def test_without_a_model_or_a_quickstart_run_it_says_what_to_do(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gptkit quickstart" in err and "--model" in err


@pytest.fixture
def quickstart_run(tmp_path, monkeypatch) -> Path:
    """A working directory holding a model where `gptkit quickstart` puts its own."""
    monkeypatch.chdir(tmp_path)
    return tiny_model_dir(tmp_path / QUICKSTART_DIR)


class FakeServer:
    """Stands in for uvicorn.Server: `run` calls the app in-process, then returns or is interrupted."""

    seen: dict[str, Any] = {}
    interrupt = False

    def __init__(self, config: Any) -> None:
        self.config = config

    def run(self, sockets: Any = None) -> None:
        app = self.config.app
        auth = {"authorization": "Bearer from-env"}
        FakeServer.seen = {
            "fine_tuning": app.state.fine_tuning,
            "files": asyncio.run(raw(app, "GET", "/v1/files", headers=auth)).status_code,
            "host": self.config.host,
            "port": self.config.port,
            "engines": [m.engine for m in app.state.models.values()],
            "models": asyncio.run(raw(app, "GET", "/v1/models", headers={"authorization": "Bearer from-env"})).json(),
            "keyless": asyncio.run(raw(app, "GET", "/v1/models")).status_code,
        }
        if FakeServer.interrupt:
            raise KeyboardInterrupt


def test_serves_the_quickstart_model_and_stops_cleanly_on_ctrl_c(quickstart_run, monkeypatch, capsys) -> None:
    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    monkeypatch.setenv("GPTKIT_API_KEY", "from-env")
    closes: list[dict[str, Any]] = []
    close = Engine.close
    monkeypatch.setattr(Engine, "close", lambda self, **kw: (closes.append(kw), close(self, **kw))[1])
    monkeypatch.setattr(FakeServer, "interrupt", True)

    assert main(["serve", "--device", "cpu", "--port", "8123", "--max-batch-size", "4"]) == 130
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"serving {QUICKSTART_DIR}: 3,324,736 parameters, float32, context 128 tokens")
    assert out[-1].startswith("OpenAI-compatible API on http://127.0.0.1:8123/v1")
    seen = FakeServer.seen
    assert (seen["host"], seen["port"], seen["keyless"]) == ("127.0.0.1", 8123, 401)
    assert [m["id"] for m in seen["models"]["data"]] == [QUICKSTART_DIR]
    assert closes and all(kw.get("drain") for kw in closes)
    assert not any(engine.healthy for engine in seen["engines"])  # their loops have stopped


def test_names_templates_and_bad_flags(quickstart_run, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    monkeypatch.setattr(FakeServer, "interrupt", False)
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}", encoding="utf-8")
    args = ["serve", "--device", "cpu", "--model", str(quickstart_run), "--model", str(quickstart_run)]
    assert main([*args, "--served-model-name", "a", "--served-model-name", "b", "--chat-template", str(template)]) == 0
    assert [m["id"] for m in FakeServer.seen["models"]["data"]] == ["a", "b"]
    assert FakeServer.seen["keyless"] == 200  # no --api-key, no GPTKIT_API_KEY: open
    capsys.readouterr()

    for bad, says in [
        (["--served-model-name", "a"], "--served-model-name was given 1 times for 2 --model"),
        ([], "served model names must differ"),
        (["--served-model-name", "a", "--served-model-name", "b", "--max-queue", "0"], "--max-queue must be >= 1"),
        (["--served-model-name", "a", "--served-model-name", "b", "--chat-template", "nope.jinja"], "--chat-template"),
    ]:
        assert main([*args, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and err.count("\n") == 0, err


def test_files_and_jobs_live_in_the_data_directory(quickstart_run, tmp_path, data_home, monkeypatch, capsys) -> None:
    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    monkeypatch.setattr(FakeServer, "interrupt", False)
    assert main(["serve", "--device", "cpu"]) == 0
    service = FakeServer.seen["fine_tuning"]
    assert service.store.data_dir == data_home / "gptkit" and (data_home / "gptkit" / "gptkit.db").is_file()
    assert FakeServer.seen["files"] == 200
    supervisor = service.config.supervisor
    assert (supervisor.max_jobs, supervisor.pids, service.config.max_loaded_models) == (1, [], 2)  # not started
    assert f"fine-tuning jobs and files in {data_home / 'gptkit'} (job workers: 1)" in capsys.readouterr().out

    args = ["serve", "--device", "cpu", "--data-dir", str(tmp_path / "d"), "--max-jobs", "2", "--job-threads", "1"]
    assert main([*args, "--max-loaded-models", "3"]) == 0
    config = FakeServer.seen["fine_tuning"].config
    assert (config.data_dir, config.max_loaded_models, config.supervisor.max_jobs) == (tmp_path / "d", 3, 2)
    assert config.supervisor.argv[-2:] == ["--threads", "1"]
    assert main(["serve", "--device", "cpu", "--max-jobs", "0"]) == 0
    assert FakeServer.seen["fine_tuning"].config.supervisor is None  # jobs wait for workers elsewhere
    capsys.readouterr()

    (tmp_path / "file").write_text("not a folder")
    for bad, says in [
        (["--max-loaded-models", "0"], "--max-loaded-models and --job-threads >= 1"),
        (["--max-jobs", "-1"], "--max-jobs must be >= 0"),
        (["--data-dir", str(tmp_path / "file")], "--data-dir"),
    ]:
        assert main(["serve", "--device", "cpu", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and err.count("\n") == 0, err
