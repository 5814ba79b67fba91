"""Shared pieces of the server tests: a tiny random GPT-2 saved as a user's folder, served in-process, and the
official `openai` SDK pointed at the ASGI app (no socket, no network)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import fastapi  # noqa: F401  (the serve extra, in dev)
import httpx2  # the HTTP client the openai package is built on
import openai
import torch

from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT
from gptkit.text.tokenizer import Tokenizer

KEY = "sk-test-key"
SRC = Path(__file__).resolve().parents[1] / "src"
T = TypeVar("T")


def tiny_model_dir(path: Path) -> Path:
    """A seeded random GPT-2 tiny (vocabulary 50257, context 128) with GPT-2's tokenizer, written as a folder."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", initializer_range=0.2)).eval()
    model.save_pretrained(path, tokenizer=Tokenizer.from_pretrained("gpt2"))
    return path


def small_model_dir(path: Path) -> Path:
    """A seeded random GPT-2 of one narrow layer with GPT-2's tokenizer: quick to fine-tune through a real job."""
    torch.manual_seed(0)
    config = GPTConfig.from_name("gpt2-tiny", n_embd=32, n_layer=1, n_head=2, initializer_range=0.2)
    GPT(config).save_pretrained(path, tokenizer=Tokenizer.from_pretrained("gpt2"))
    return path


def job_supervisor(data_dir: Path) -> Any:
    """Job workers for `data_dir` as real processes running this checkout's gptkit, on one thread each, quick to
    notice new jobs."""
    from gptkit.server.worker import Supervisor

    pythonpath = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return Supervisor(data_dir, device="cpu", threads=1, poll=0.05, restart_delay=0.05, env=env)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` under a real uvicorn (lifespan included) in a thread, on a free loopback port: its API root URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on: uvicorn listens on this very socket
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive()


def sync_client(base_url: str, key: str = KEY) -> openai.OpenAI:
    """The synchronous SDK on loopback, whatever proxy the environment names."""
    http = httpx2.Client(trust_env=False)
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=http)


def run(app: Any, fn: Callable[[Any], Awaitable[T]], *, key: str | None = KEY) -> T:
    """`fn(client)` with an AsyncOpenAI client talking to `app` in-process, in a fresh event loop."""

    async def main() -> T:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as http:
            client = openai.AsyncOpenAI(
                base_url="http://test/v1", api_key=key or "none", http_client=http, max_retries=0
            )
            return await fn(client)

    return asyncio.run(main())


async def raw(app: Any, method: str, path: str, **kwargs: Any) -> Any:
    """One plain HTTP request to `app` (for what the SDK does not send: no key, a huge or chunked body...)."""
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as http:
        return await http.request(method, path, **kwargs)


def sse_frames(body: str) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded (the last, [DONE], as the string)."""
    frames = [block.removeprefix("data: ") for block in body.split("\n\n") if block]
    return [frame if frame == "[DONE]" else json.loads(frame) for frame in frames]


async def drive(
    app: Any,
    path: str,
    body: dict[str, Any],
    *,
    leave_after: int | None,
    on_send: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Call the ASGI app as a server would, for a client that leaves after `leave_after` body frames of the answer
    (0: at once, once the request is read; None: never); `on_send` sees each message the app sends. Returns the
    messages the app sent."""
    data = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()
    read = False

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not read:
            read = True
            if leave_after == 0:
                gone.set()
            return {"type": "http.request", "body": data, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if on_send is not None:
            await on_send(message)
        frames = sum(1 for m in sent if m["type"] == "http.response.body" and m.get("body"))
        if leave_after is not None and frames >= leave_after:
            gone.set()

    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"authorization", f"Bearer {KEY}".encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return sent


def rows_free(engine: Any, *, within: float = 30.0) -> int:
    """The engine's free rows once it has dropped what was cancelled, asked on its own thread between steps. Asked
    again until all are free or `within` seconds passed (a generous bound: a cancel is honoured on the loop's next
    turn, or, on a real server, once the server has seen the client leave)."""
    deadline = time.monotonic() + within
    while True:
        free = engine.call(lambda: len(engine.state.free_rows)).result()
        if free == engine.max_batch_size or time.monotonic() > deadline:
            return free
        time.sleep(0.01)
