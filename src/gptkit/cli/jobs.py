"""`gptkit jobs`: fine-tuning jobs on a running `gptkit serve`, through the official `openai` SDK (imported lazily).

create uploads the data then creates the job; list, get, follow, cancel, pause and resume act on jobs by id. Any
OpenAI-compatible server with the fine-tuning API answers them (`--base-url`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import time
from collections.abc import Iterator
from typing import Any

from gptkit.cli.serve import API_KEY_ENV
from gptkit.errors import GptkitError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
ENDED = ("succeeded", "failed", "cancelled", "paused")  # where `follow` stops (a paused job waits for a resume)


def client(args: argparse.Namespace) -> Any:
    """The SDK's client for --base-url and --api-key (or $GPTKIT_API_KEY)."""
    try:
        import openai
    except ImportError:
        raise GptkitError("gptkit jobs needs the openai package: pip install 'gptkit[serve]'") from None
    key = args.api_key or os.environ.get(API_KEY_ENV) or "none"
    return openai.OpenAI(base_url=args.base_url, api_key=key, max_retries=2)


@contextlib.contextmanager
def talking_to(base_url: str) -> Iterator[None]:
    """The SDK's errors as one line: what the server said, or that it cannot be reached."""
    import openai

    try:
        yield
    except openai.APIConnectionError:
        raise GptkitError(f"cannot reach {base_url}: is `gptkit serve` running there? (see --base-url)") from None
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        raise GptkitError(f"the server answered {exc.status_code}: {body.get('message') or exc.message}") from None


def _run(args: argparse.Namespace) -> int:
    with talking_to(args.base_url):
        return int(args.action(client(args), args) or 0)


# -- the commands -----------------------------------------------------------------------------------


def create(api: Any, args: argparse.Namespace) -> int:
    uploads = {"training_file": args.train, "validation_file": args.validation}
    ids = {}
    for param, path in uploads.items():
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    ids[param] = api.files.create(file=(os.path.basename(path), fh), purpose="fine-tune").id
            except OSError as exc:
                raise GptkitError(f"cannot read {path}: {exc.strerror}") from None
            print(f"uploaded {path} as {ids[param]}")
    given = {"n_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate_multiplier": args.lr_multiplier}
    hyperparameters = {k: v for k, v in given.items() if v is not None}
    job = api.fine_tuning.jobs.create(
        model=args.model,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        suffix=args.suffix,
        seed=args.seed,
        **ids,
    )
    print(f"created {job.id} ({job.status}): fine-tuning {job.model}; follow it with `gptkit jobs follow {job.id}`")
    return follow(api, argparse.Namespace(job=job.id, interval=args.interval)) if args.follow else 0


def list_jobs(api: Any, args: argparse.Namespace) -> int:
    jobs = api.fine_tuning.jobs.list(limit=args.limit).data
    for job in jobs:
        print(f"{job.id}  {job.status:<16} {_when(job.created_at)}  {job.model}  {job.fine_tuned_model or '-'}")
    if not jobs:
        print("no fine-tuning jobs")
    return 0


def get(api: Any, args: argparse.Namespace) -> int:
    print(api.fine_tuning.jobs.retrieve(args.job).model_dump_json(indent=2, exclude_unset=True))
    return 0


def control(api: Any, args: argparse.Namespace) -> int:
    job = getattr(api.fine_tuning.jobs, args.command_name)(args.job)
    asked = " (asked; the job stops after its current step)" if job.status == "running" else ""
    print(f"{job.id}: {job.status}{asked}")
    return 0


def follow(api: Any, args: argparse.Namespace) -> int:
    """Print a job's events as they come, steps as a progress bar, until it ends (or is paused); 0 when it
    succeeded or is paused, 1 when it failed or was cancelled."""
    from tqdm import tqdm

    seen: set[str] = set()
    bar: Any = None
    while True:
        job = api.fine_tuning.jobs.retrieve(args.job)  # before the events: an ended job's last events are there
        new = []
        for event in api.fine_tuning.jobs.list_events(args.job, limit=100):  # newest first, page after page
            if event.id in seen:
                break
            new.append(event)
        for event in reversed(new):
            seen.add(event.id)
            data = event.data if isinstance(event.data, dict) else {}
            if event.type == "metrics" and "step" in data:
                if bar is None:
                    bar = tqdm(total=data.get("total_steps"), unit="step", desc=args.job, dynamic_ncols=True)
                bar.n = data["step"]
                bar.set_postfix(loss=f"{data['train_loss']:.4f}", refresh=False)
                bar.refresh()
            else:
                tqdm.write(f"[{_when(event.created_at)}] {event.message}")
        if job.status in ENDED:
            break
        time.sleep(args.interval)
    if bar is not None:
        bar.close()
    print(_ending(job))
    return 0 if job.status in ("succeeded", "paused") else 1


def _ending(job: Any) -> str:
    if job.status == "succeeded":
        return f"{job.id} succeeded: use the model {job.fine_tuned_model}"
    if job.status == "failed":
        return f"{job.id} failed: {job.error.message if job.error else 'no reason given'}"
    if job.status == "paused":
        return f"{job.id} is paused: continue it with `gptkit jobs resume {job.id}`"
    return f"{job.id} was cancelled"


def _when(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


# -- flags ------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    """Add jobs to the `gptkit` subcommands."""
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"the server's API root, where `gptkit serve` listens (default: {DEFAULT_BASE_URL})",
    )
    server.add_argument("--api-key", help=f"the key the server asks for (default: ${API_KEY_ENV} if set, else none)")
    p = sub.add_parser(
        "jobs",
        help="fine-tuning jobs on a running `gptkit serve`: create, list, get, follow, cancel, pause, resume",
        description="Fine-tune the models a `gptkit serve` serves, through its OpenAI-compatible fine-tuning API "
        "(the official openai package is the client; pip install 'gptkit[serve]').",
    )
    jobs = p.add_subparsers(
        dest="jobs_command", metavar="ACTION", required=True, help="what to do with fine-tuning jobs (see below)"
    )

    c = jobs.add_parser("create", parents=[server], help="upload the data, then create a fine-tuning job")
    c.add_argument("--model", required=True, help="a model the server serves, or a fine-tuned one (ft:...)")
    c.add_argument(
        "--train", required=True, metavar="FILE", help='JSONL of {"prompt", "completion"} or {"messages": [...]}'
    )
    c.add_argument("--validation", metavar="FILE", help="JSONL like --train, to report validation loss on")
    c.add_argument("--epochs", type=int, help="passes over the training data (default: the server's auto)")
    c.add_argument("--batch-size", type=int, help="examples per step (default: the server's auto)")
    c.add_argument(
        "--lr-multiplier",
        type=float,
        help="the learning rate as a multiple of gptkit's 6e-4 (default: the server's auto)",
    )
    c.add_argument("--suffix", help="up to 64 letters, digits, - _ . added to the model's name ft:MODEL:ORG:SUFFIX:ID")
    c.add_argument("--seed", type=int, help="the run's seed; the same seed and data give the same model")
    c.add_argument("--follow", action="store_true", help="then follow the job as `gptkit jobs follow` does")
    c.add_argument("--interval", type=float, default=2.0, help="with --follow: seconds between polls (default: 2)")
    c.set_defaults(action=create)

    ls = jobs.add_parser("list", parents=[server], help="the latest jobs, newest first")
    ls.add_argument("--limit", type=int, default=20, help="how many jobs to show (default: 20)")
    ls.set_defaults(action=list_jobs)

    for name, action, text in [
        ("get", get, "a job as JSON"),
        ("follow", follow, "print a job's events, its steps as a progress bar, until it ends"),
        ("cancel", control, "cancel a job (a running one stops after its current step, keeping its checkpoints)"),
        ("pause", control, "pause a job (a running one stops with a checkpoint after its current step)"),
        ("resume", control, "queue a paused job to continue from its last checkpoint"),
    ]:
        one = jobs.add_parser(name, parents=[server], help=text)
        one.add_argument("job", metavar="ID", help="the job's id, ftjob-...")
        if name == "follow":
            one.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default: 2)")
        one.set_defaults(action=action, command_name=name)
    p.set_defaults(func=_run)
