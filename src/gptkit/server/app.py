"""`create_app`: the OpenAI-compatible HTTP API (FastAPI) over running engines. It holds no tensors.

Routes validate (gptkit.server.protocol), hand the request to gptkit.server.handlers and send the answer: one
JSON object, raced against the client going away (which cancels the generation), or server-sent events
`data: {chunk}` ... `data: [DONE]` (a client that leaves closes the stream, which cancels the generation).
Every error is OpenAI's `{"error": {"message", "type", "param", "code"}}`; a 500 is a bug, logged with the
request id every response carries in `x-request-id`.

Models are a `ModelPool`: the base models given, and, with a `FineTuningConfig`, the fine-tuned models of its data
directory, loaded on first use. With one the app also has the Files and fine-tuning jobs endpoints
(gptkit.server.fine_tuning) and owns the job workers' Supervisor: started at startup, stopped at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptkit.errors import DataError
from gptkit.server import fine_tuning, handlers
from gptkit.server.engine import Engine, EngineClosedError, QueueFullError
from gptkit.server.fine_tuning import FineTuning, FineTuningConfig, ModelDeleted, about_model
from gptkit.server.fine_tuning import routes as fine_tuning_routes
from gptkit.server.metrics import Metrics
from gptkit.server.pool import ModelPool
from gptkit.server.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    TokenizeRequest,
    about,
)
from gptkit.server.responses import (
    ChatCompletion,
    Completion,
    CreateEmbeddingResponse,
    ErrorResponse,
    Model,
    ModelList,
    Tokenized,
)
from gptkit.server.served import ServedModel, load_served
from gptkit.server.store import NotFoundError, RequestError

log = logging.getLogger("gptkit.server")
MAX_BODY_BYTES = 8 << 20
RETRY_AFTER_SECONDS = 1
_ERROR = {"model": ErrorResponse, "description": "OpenAI's error object"}
_ERRORS: dict[int | str, dict[str, Any]] = {status: _ERROR for status in (400, 401, 404, 413, 429, 503)}
UPLOAD_OVERHEAD = 1 << 20  # multipart framing and form fields an upload may add to a file at the size limit
PLAYGROUND = Path(__file__).with_name("playground")  # the web page at /: static files, no build step
# the page may load only its own files and talk only to this server: no CDN, no inline code
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def create_app(
    models: Mapping[str, ServedModel | Engine],
    *,
    api_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    fine_tuning: FineTuningConfig | None = None,
    playground: bool = True,
) -> FastAPI:
    """The API over `models` (served name -> model; a bare Engine is served without a chat template).

    Engines are started and closed by the caller (those of fine-tuned models by the app); each engine's observer
    is set to the app's metrics. api_keys: accepted Bearer keys for /v1 (none: no key needed). cors_origins:
    allowed browser origins. fine_tuning: the Files and fine-tuning jobs API and serving of fine-tuned models.
    playground: the web page at / (gptkit.server.playground), which uses only this API.
    """
    served = {name: m if isinstance(m, ServedModel) else ServedModel(m) for name, m in models.items()}
    metrics = Metrics()
    for name, model in served.items():
        model.engine.observer = metrics.observer(name)
    service = FineTuning(fine_tuning) if fine_tuning is not None else None
    pool = ModelPool(
        served,
        registry=service.registry if service is not None else None,
        load=fine_tuning.load if fine_tuning is not None else load_served,
        max_loaded=fine_tuning.max_loaded_models if fine_tuning is not None else 1,
        on_load=lambda name, model: setattr(model.engine, "observer", metrics.observer(name)),
    )
    app = FastAPI(
        title="gptkit",
        summary="OpenAI-compatible API over GPT-1/GPT-2 models",
        version="1",
        lifespan=functools.partial(_lifespan, pool=pool, service=service),
    )
    app.state.models, app.state.metrics, app.state.pool, app.state.fine_tuning = served, metrics, pool, service

    async def lookup(name: str) -> ServedModel:
        if (model := pool.cached(name)) is not None:
            return model
        with about_model():
            return await run_in_threadpool(pool.get, name)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS)
    async def list_models() -> ModelList:
        return ModelList(data=await run_in_threadpool(pool.cards))

    @app.get("/v1/models/{model:path}", response_model=Model, responses=_ERRORS)
    async def retrieve_model(model: str) -> Model:
        with about_model():
            return await run_in_threadpool(pool.card, model)

    @app.delete("/v1/models/{model:path}", response_model=ModelDeleted, responses=_ERRORS | {403: _ERROR})
    async def delete_model(model: str) -> Any:
        if model in served:
            message = f"{model!r} is a base model of this server; only fine-tuned models (ft:...) can be deleted"
            raise APIError(403, message, param="model", code="model_not_deletable")
        with about_model():
            return await run_in_threadpool(pool.delete, model)

    @app.post("/v1/completions", response_model=Completion, responses=_ERRORS)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await answer(request, body.stream, handlers.completion(await lookup(body.model), body.model, body))

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=_ERRORS)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await answer(request, body.stream, handlers.chat(await lookup(body.model), body.model, body))

    @app.post("/v1/embeddings", response_model=CreateEmbeddingResponse, responses=_ERRORS)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await until_disconnected(request, handlers.embeddings(await lookup(body.model), body.model, body))

    @app.post("/v1/tokenize", response_model=Tokenized, responses=_ERRORS)
    async def tokenize(body: TokenizeRequest) -> Tokenized:
        """gptkit's own: how the model's tokenizer splits a prompt (the playground's Tokenize page)."""
        served_model = await lookup(body.model)
        with about("prompt"):
            return await run_in_threadpool(handlers.tokenize, served_model, body.model, body)

    if service is not None:
        app.include_router(fine_tuning_routes(service, pool))

    @app.get("/health")
    async def health() -> Response:
        dead = [name for name, m in pool.engines().items() if not m.engine.healthy]
        if dead:
            return JSONResponse({"status": "unhealthy", "engines_stopped": dead}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type=metrics.content_type)

    if playground:
        policy = {"content-security-policy": PAGE_POLICY, "cache-control": "no-cache"}

        @app.get("/", include_in_schema=False)
        async def page() -> Response:
            return FileResponse(PLAYGROUND / "index.html", headers=policy)

        app.mount("/playground", StaticFiles(directory=PLAYGROUND), name="playground")

    app.add_exception_handler(APIError, _on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _on_http_error)  # type: ignore[arg-type]
    for kind in (QueueFullError, EngineClosedError, NotFoundError, RequestError, DataError):
        app.add_exception_handler(kind, _on_api_error)  # type: ignore[arg-type]
    uploads = {} if fine_tuning is None else {"/v1/files": fine_tuning.max_file_bytes + UPLOAD_OVERHEAD}
    app.add_middleware(Gate, api_keys=tuple(api_keys), max_body_bytes=max_body_bytes, uploads=uploads)
    if cors_origins:  # outermost: a browser's preflight is answered before the key is asked for
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"])
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI, *, pool: ModelPool, service: FineTuning | None) -> AsyncIterator[None]:
    """The job workers run while the app does; fine-tuned models are unloaded, and the store closed, when it stops."""
    supervisor = service.config.supervisor if service is not None else None
    if supervisor is not None:
        await run_in_threadpool(supervisor.start)
    try:
        yield
    finally:
        if supervisor is not None:
            await run_in_threadpool(supervisor.stop)
        await run_in_threadpool(pool.close)
        if service is not None:
            service.store.close()


# -- answering --------------------------------------------------------------------------------------


async def answer(request: Request, stream: bool | None, accepted: Awaitable[handlers.Reply]) -> Response:
    reply = await accepted
    if stream:  # the body cancels the generation when it stops; the background task also when it never started
        headers = {"cache-control": "no-cache"}
        return StreamingResponse(
            _events(reply), media_type="text/event-stream", headers=headers, background=BackgroundTask(reply.cancel)
        )
    try:
        return await until_disconnected(request, reply.collect())
    finally:
        reply.cancel()


async def until_disconnected(request: Request, work: Awaitable[BaseModel]) -> Response:
    """`work`'s result as JSON, unless the client goes away first: then `work` is cancelled (and with it the
    generation)."""
    # `request.is_disconnected()` awaited rather than polled: once the body is read, the next message an ASGI
    # server gives the app is the disconnect
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return Response(task.result().model_dump_json(), media_type="application/json")
    return Response(status_code=499)  # nobody reads it: the client has left


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _events(reply: handlers.Reply) -> AsyncIterator[bytes]:
    """The SSE body. An error after the first frame cannot change the status, so it travels as a frame."""
    try:
        async for frame in reply.frames():
            yield f"data: {frame}\n\n".encode()
        yield b"data: [DONE]\n\n"
    except Exception as exc:
        yield f"data: {json.dumps(api_error(exc, uuid.uuid4().hex).body())}\n\n".encode()
    finally:
        reply.cancel()


# -- errors -----------------------------------------------------------------------------------------


def api_error(exc: BaseException, request_id: str) -> APIError:
    """Any exception as OpenAI's error: what a client caused as its 4xx, anything else a logged 500."""
    if isinstance(exc, APIError):
        return exc
    if (refusal := fine_tuning.api_error(exc)) is not None:
        return refusal
    if isinstance(exc, QueueFullError):
        headers = {"retry-after": str(RETRY_AFTER_SECONDS), "x-should-retry": "true"}
        message = f"the server is busy: {exc}"
        return APIError(429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=headers)
    if isinstance(exc, EngineClosedError):
        return APIError(503, str(exc), type="server_error", code="engine_closed")
    log.error("request %s failed", request_id, exc_info=exc)
    return APIError(500, f"internal server error (request id {request_id}); see the server's log", type="server_error")


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    return _error_response(api_error(exc, _request_id(request.scope)))


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 as OpenAI's 400, naming the first field that is wrong."""
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [part for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = loc[0] if loc and isinstance(loc[0], str) else None  # the top-level field, as OpenAI names it
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    where = ".".join(str(part) for part in loc)
    message = f"{where}: {first.get('msg')}{more}" if param else f"the body is not valid: {first.get('msg')}{more}"
    return _error_response(APIError(400, message, param=param))


async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 404:
        return _error_response(APIError(404, f"no route {request.method} {request.url.path}; the API is under /v1"))
    code = "request_too_large" if exc.status_code == 413 else None
    return _error_response(APIError(exc.status_code, str(exc.detail), code=code))


def _request_id(scope: Mapping[str, Any]) -> str:
    return scope.get("state", {}).get("request_id") or uuid.uuid4().hex


# -- the door: request ids, API keys, body size, and 500s -------------------------------------------


class Gate:
    """Pure ASGI middleware (so that streams and disconnects pass untouched): gives each request an id, asks /v1
    for a Bearer key, refuses bodies over max_body_bytes (by content-length, and while reading; `uploads` sets a
    larger limit for the paths it names), and answers an exception nobody handled with a 500 carrying the request
    id."""

    def __init__(
        self, app: ASGIApp, *, api_keys: tuple[str, ...], max_body_bytes: int, uploads: Mapping[str, int] | None = None
    ) -> None:
        self.app, self.keys, self.limit = app, [k.encode() for k in api_keys], max_body_bytes
        self.uploads = dict(uploads or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        headers = dict(scope.get("headers", []))
        limit = self.uploads.get(scope["path"], self.limit)
        if refusal := self._refusal(scope["path"], headers, limit):
            return await _error_response(refusal)(scope, receive, send_with_id)
        try:
            await self.app(scope, self._counted(receive, limit), send_with_id)
        except ClientDisconnect:  # nobody to answer
            return
        except Exception as exc:
            if started:  # the status has gone out; all that is left is to log it
                log.error("request %s failed after its response started", request_id, exc_info=exc)
                return
            await _error_response(api_error(exc, request_id))(scope, receive, send_with_id)

    def _refusal(self, path: str, headers: dict[bytes, bytes], limit: int) -> APIError | None:
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return _too_large(limit)
        if self.keys and path.startswith("/v1"):
            scheme, _, key = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not key:
                return _unauthorized("no API key given; send the header Authorization: Bearer YOUR_KEY")
            if not any(hmac.compare_digest(key.strip(), k) for k in self.keys):
                return _unauthorized("incorrect API key")
        return None

    def _counted(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, _too_large(limit).message)
            return message

        return counted


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is over this server's limit of {limit} bytes", code="request_too_large")


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, type="invalid_request_error", code="invalid_api_key")
