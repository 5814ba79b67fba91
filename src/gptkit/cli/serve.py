"""The serve subcommand: an OpenAI-compatible HTTP API over one or more models (needs the `serve` extra)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from gptkit.cli.common import INFERENCE_DTYPES, INT8_HELP, read_input, resolve_device
from gptkit.errors import GptkitError

API_KEY_ENV = "GPTKIT_API_KEY"


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """Where a server keeps files and fine-tuning jobs unless told: $XDG_DATA_HOME/gptkit, else
    ~/.local/share/gptkit (created on first use)."""
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "gptkit"


def _serve(args: argparse.Namespace) -> int:
    try:
        from gptkit.server.run import ServeConfig, serve
    except ImportError as exc:
        missing = f"{exc.name} is missing"
        raise GptkitError(f"serving needs the serve extra: pip install 'gptkit[serve]' ({missing})") from None
    keys = list(args.api_key or [])
    if not keys and os.environ.get(API_KEY_ENV):
        keys = [os.environ[API_KEY_ENV]]
    config = ServeConfig(
        models=tuple(args.model or ()),
        names=tuple(args.served_model_name or ()),
        host=args.host,
        port=args.port,
        api_keys=tuple(keys),
        device=resolve_device(args.device),
        dtype=args.dtype,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        chat_template=read_input(args.chat_template, "--chat-template") if args.chat_template else None,
        cors_origins=tuple(args.cors_origin or ()),
        data_dir=args.data_dir or str(default_data_dir(os.environ)),
        max_jobs=args.max_jobs,
        job_threads=args.job_threads,
        max_loaded_models=args.max_loaded_models,
        playground=args.playground,
    )
    serve(config)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add serve to the `gptkit` subcommands."""
    p = sub.add_parser(
        "serve",
        help="serve models over an OpenAI-compatible HTTP API (completions, chat, embeddings, fine-tuning jobs)",
        description=(
            "Serve MODELs at http://HOST:PORT/v1 with OpenAI's /v1/completions, /v1/chat/completions, "
            "/v1/embeddings and /v1/models (streaming included), plus /health and /metrics (Prometheus). "
            "Requests to one model are decoded together as they come (continuous batching). Without --model, "
            "serves the model `gptkit quickstart` trained here. With /v1/files and /v1/fine_tuning/jobs, clients "
            "fine-tune the served models (job workers run beside the server) and use the results as ft:... models. "
            "A browser pointed at http://HOST:PORT/ gets the playground: complete, chat, tokenize and fine-tune "
            "there. Needs the serve extra: pip install 'gptkit[serve]'."
        ),
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="DIR_OR_NAME",
        help="checkpoint folder or hub name to serve; repeat to serve several (default: runs/shakespeare-char)",
    )
    p.add_argument(
        "--served-model-name",
        action="append",
        metavar="NAME",
        help="the name clients send as `model`, one per --model in the same order (default: the --model value)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: all)"
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port the HTTP server listens on (default: %(default)s)")
    p.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help=f"require `Authorization: Bearer KEY` on /v1 (repeatable; default: ${API_KEY_ENV} if set, else none)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps, or auto (default: auto)")
    p.add_argument(
        "--dtype",
        choices=INFERENCE_DTYPES,
        default="float32",
        help=f"weights and compute dtype (default: float32); {INT8_HELP}",
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=16,
        help="sequences one model decodes at once; also the most choices (n, best_of) of a request (default: 16)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=256,
        help="requests that may wait for a free row before new ones get 429 Too Many Requests (default: 256)",
    )
    p.add_argument(
        "--chat-template",
        metavar="FILE",
        help="Jinja chat template for models that store none (without it, chat requests to them are refused)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="let browser pages from ORIGIN call the API, e.g. http://localhost:3000 (repeatable; default: none)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where uploaded files, fine-tuning jobs and fine-tuned models are kept "
        "(default: $XDG_DATA_HOME/gptkit or ~/.local/share/gptkit, created on first use)",
    )
    p.add_argument(
        "--max-jobs",
        type=int,
        default=1,
        help="fine-tuning jobs run at once, each in a worker process beside the server (0: none here; default: 1)",
    )
    p.add_argument(
        "--job-threads",
        type=int,
        metavar="N",
        help="CPU threads of each job worker; fewer than the cores leave the server some to answer with "
        "(default: torch's, one per core)",
    )
    p.add_argument(
        "--max-loaded-models",
        type=int,
        default=2,
        help="fine-tuned models kept loaded beside the base models; the least recently used is unloaded (default: 2)",
    )
    p.add_argument(
        "--no-playground",
        dest="playground",
        action="store_false",
        help="do not serve the playground web page at / (the API is unchanged)",
    )
    p.set_defaults(func=_serve)
