"""One end-to-end run: a real uvicorn server in a thread on a free loopback port, the synchronous `openai` SDK."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from gptkit.generation.generate import generate
from gptkit.generation.params import SamplingParams
from gptkit.server.app import create_app
from server_helpers import KEY, httpx2, openai, rows_free

pytest_plugins = ["server_fixtures"]


def test_a_real_server_answers_the_sync_sdk_and_survives_a_client_leaving(tiny, oracle) -> None:
    import uvicorn

    app = create_app({"tiny": tiny}, api_keys=[KEY])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on: uvicorn listens on this very socket
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    http = httpx2.Client(trust_env=False)  # loopback only, whatever proxy the environment names
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, http_client=http)
    try:
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
    finally:
        http.close()
        server.should_exit = True
        thread.join(30)
    assert not thread.is_alive()
