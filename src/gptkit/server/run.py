"""`serve`: load models, start their engines, run the API under uvicorn until stopped, close the engines.

This is `gptkit serve` as a library call: the CLI parses its flags into a `ServeConfig` and calls `serve`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gptkit.errors import ConfigError
from gptkit.models.config import CONFIG_FILE
from gptkit.server.app import MAX_BODY_BYTES
from gptkit.training.config import QUICKSTART_DIR

DRAIN_SECONDS = 60.0  # at shutdown, how long running requests may take to finish


@dataclass(frozen=True)
class ServeConfig:
    """What `gptkit serve` runs. models: hub names or folders (none: the quickstart's model); names: the name each
    is served under (default: as given); chat_template: Jinja text used by models that store none. data_dir: where
    files, fine-tuning jobs and their models live (None: no Files or fine-tuning API); max_jobs: job workers
    (0: none here); job_threads: each worker's CPU threads; max_loaded_models: fine-tuned models kept loaded;
    playground: the web page at /."""

    models: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    device: str = "cpu"
    dtype: str = "float32"
    max_batch_size: int = 16
    max_queue: int = 256
    chat_template: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    data_dir: str | None = None
    max_jobs: int = 1
    job_threads: int | None = None
    max_loaded_models: int = 2
    playground: bool = True

    def served_names(self) -> dict[str, str]:
        """served name -> model path or hub name; the quickstart's model when no model is given."""
        models = self.models or (default_model(),)
        if self.names and len(self.names) != len(models):
            raise ConfigError(
                f"--served-model-name was given {len(self.names)} times for {len(models)} --model; give one per model"
            )
        names = self.names or models
        if len(set(names)) != len(names):
            raise ConfigError(f"served model names must differ; got {', '.join(names)} (use --served-model-name)")
        return dict(zip(names, models, strict=True))


def default_model() -> str:
    """The quickstart's model, when that run exists here."""
    if (Path(QUICKSTART_DIR) / CONFIG_FILE).is_file():
        return QUICKSTART_DIR
    raise ConfigError(f"no model to serve: run `gptkit quickstart` (it writes {QUICKSTART_DIR}) or pass --model")


def serve(config: ServeConfig, *, say: Callable[[str], None] = print) -> None:
    """Serve until interrupted (Ctrl-C: uvicorn stops taking requests, then running ones drain and engines close)."""
    import uvicorn

    from gptkit.server.app import create_app
    from gptkit.server.fine_tuning import FineTuningConfig
    from gptkit.server.served import load_served
    from gptkit.server.worker import Supervisor

    if not 1 <= config.port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {config.port}")
    if config.max_batch_size < 1 or config.max_queue < 1:  # every request waits in the queue until it has rows
        sizes = f"{config.max_batch_size}, {config.max_queue}"
        raise ConfigError(f"--max-batch-size and --max-queue must be >= 1, got {sizes}")
    if config.max_jobs < 0 or config.max_loaded_models < 1 or (config.job_threads or 1) < 1:
        numbers = f"{config.max_jobs}, {config.max_loaded_models}, {config.job_threads}"
        raise ConfigError(f"--max-jobs must be >= 0, --max-loaded-models and --job-threads >= 1; got {numbers}")
    load = functools.partial(
        load_served,
        device=config.device,
        dtype=config.dtype,
        max_batch_size=config.max_batch_size,
        max_queue=config.max_queue,
        chat_template=config.chat_template,
    )
    fine_tuning = None
    if config.data_dir is not None:
        data_dir = Path(config.data_dir).expanduser()
        workers = (
            Supervisor(data_dir, max_jobs=config.max_jobs, device=config.device, threads=config.job_threads)
            if config.max_jobs
            else None
        )
        fine_tuning = FineTuningConfig(
            data_dir, load=load, max_loaded_models=config.max_loaded_models, supervisor=workers
        )
    served = {}
    try:
        for name, source in config.served_names().items():
            served[name] = load(source)
            served[name].engine.start()
            say(f"serving {served[name].describe(name)} from {source}")
        app = create_app(
            served,
            api_keys=config.api_keys,
            cors_origins=config.cors_origins,
            max_body_bytes=config.max_body_bytes,
            fine_tuning=fine_tuning,
            playground=config.playground,
        )
        if fine_tuning is not None:
            say(f"fine-tuning jobs and files in {fine_tuning.data_dir} (job workers: {config.max_jobs})")
        root = f"http://{config.host}:{config.port}"
        page = f", the playground on {root}/" if config.playground else ""
        say(f"OpenAI-compatible API on {root}/v1{page} (Ctrl-C stops)")
        with _logging_to_stderr():
            # log_config=None: uvicorn's own dictConfig would shut down every logging handler in the process
            uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_config=None)).run()
    finally:
        for model in served.values():
            model.engine.close(drain=True, timeout=DRAIN_SECONDS)


@contextlib.contextmanager
def _logging_to_stderr() -> Iterator[None]:
    """uvicorn's and gptkit's log records at INFO and above on stderr while serving; the handler leaves after."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    loggers = [logging.getLogger(name) for name in ("uvicorn", "gptkit")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
