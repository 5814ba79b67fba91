"""Fine-tuning through the jobs API: its overhead over `finetune` run directly, and completions while a job trains.

One seeded random GPT-2-shaped model (GPT-2's vocabulary and tokenizer, `--size`) and one JSONL of generated
prompt/completion pairs are written to a temporary folder; nothing is downloaded. One real `gptkit serve --model
FOLDER --data-dir D --max-jobs 1 --job-threads T` runs as a subprocess (its job worker a process of its own, as
always), with its defaults otherwise (the worker looks for work every second).

(a) Overhead. The same training run two ways, `--rounds` times each, alternating which goes first (direct first):
* api: `files.create` of the JSONL, then `fine_tuning.jobs.create` (hyperparameters all "auto", a fixed seed),
  then `jobs.retrieve` every `--poll` seconds; timed from create to the first retrieve that says succeeded. Also
  reported: the job's own figure (its "started" event to its finished_at, whole seconds) and its trained tokens.
  Before the first, one short job warms the worker up (it imports torch and the training code, and fills their
  caches, on its first job; that job's time is reported apart), so each timed job is one a running server sees.
* direct: `gptkit.tasks.finetune.finetune` in a fresh process with T torch threads, on the job's settings with
  its "auto" ones resolved as the worker resolves them on a CPU (`runner.auto_settings`, `runner.training_configs`);
  it runs the same short warm-up first, untimed; timed is the `finetune` call (loading, steps, evaluations,
  checkpoints).
Both runs must end with the same number of steps and the same last training loss (same seed, same threads: the
same sums); `same_run` says so. Target: api wall time <= 1.10 x direct (medians).

(b) Latency. TTFT (time to the first streamed chunk with text) of `--latency-requests` streamed greedy completions
of `--latency-tokens` tokens on the base model from `--latency-clients` (4) concurrent clients: idle, then while a
job trains (from its first step on; the job is cancelled afterwards). Target: p99 while training <= 2 x idle.

    python benchmarks/bench_jobs.py            # ~4 minutes on 2 cores: jobs of ~60 s (2,700 steps of batch 1)
    python benchmarks/bench_jobs.py --quick    # a smoke test: the tiny model, jobs of ~5 s, fewer requests

Prints one JSON object to stdout (progress on stderr). Targets are printed, not asserted. On a shared machine,
distrust runs whose load average exceeds the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_serve import HOST, Running, Server, ServerFailed, drive, server_env, summarize
from machine import RunStart, load_average, wait_for_idle

SEED = 0
MODEL_NAME = "base"  # the base model's served name, the `model` of every request and job
SIZES = {  # GPTConfig overrides of the gpt2-tiny preset (GPT-2's vocabulary, 128 positions)
    "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 64},
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 256},
}
TARGETS = {"api_vs_direct_max": 1.10, "ttft_p99_training_vs_idle_max": 2.0}
GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}
WARMUP_EXAMPLES = 20  # the worker's first job: a few steps, to import and load what every job needs
WARMUP_HYPERPARAMETERS = {"n_epochs": 1, "batch_size": WARMUP_EXAMPLES}
FINISHED = ("succeeded", "failed", "cancelled")


def log(message: str) -> None:
    print(f"[bench_jobs] {message}", file=sys.stderr, flush=True)


# -- the inputs -------------------------------------------------------------------------------------


def make_model(folder: Path, size: str) -> None:
    """A seeded random GPT-2-shaped model with GPT-2's tokenizer, as `gptkit serve --model` and `finetune` load it."""
    import torch

    from gptkit.models.config import GPTConfig
    from gptkit.models.gpt import GPT
    from gptkit.text.tokenizer import Tokenizer

    torch.manual_seed(SEED)
    model = GPT(GPTConfig.from_name("gpt2-tiny", **SIZES[size])).eval()
    model.save_pretrained(folder, tokenizer=Tokenizer.from_pretrained("gpt2"))


def make_data(path: Path, examples: int) -> Path:
    """OpenAI's {"prompt", "completion"} JSONL of `examples` seeded sums."""
    rng = random.Random(SEED)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(examples):
            a, b = rng.randrange(100), rng.randrange(100)
            f.write(json.dumps({"prompt": f"What is {a} plus {b}? Answer:", "completion": f" {a + b}."}) + "\n")
    return path


# -- (a) direct: finetune in a process of its own ---------------------------------------------------


def direct_worker(args: argparse.Namespace) -> None:
    """The child process: the worker's warm-up job, untimed (the worker has run one before each timed job), then
    the timed run; each with its settings resolved as the worker resolves them; writes the figures."""
    import torch

    from gptkit.tasks.finetune import finetune
    from gptkit.training.events import Event, StepEvent

    torch.set_num_threads(args.threads)
    root = Path(args.run_dir)
    root.mkdir(parents=True)
    warmup = make_data(root / "warmup.jsonl", WARMUP_EXAMPLES)
    finetune(*job_configs(Path(args.model_dir), warmup, root / "warmup", WARMUP_HYPERPARAMETERS)[:2])
    task, config, resolved = job_configs(Path(args.model_dir), Path(args.train_file), root / "timed")
    last: list[StepEvent] = []

    def on_event(event: Event) -> None:
        if isinstance(event, StepEvent):
            last[:] = [event]

    start = time.perf_counter()
    result = finetune(task, config, on_event=on_event)
    seconds = time.perf_counter() - start
    figures = {
        "seconds": round(seconds, 2),
        "finetune_reported_s": round(result.train.seconds, 2),
        "steps": result.train.step,
        "last_train_loss": last[0].loss if last else None,
        "hyperparameters": resolved["hyperparameters"],
        "threads": torch.get_num_threads(),
        "resolved": resolved,  # hyperparameters, lora, max_length
    }
    Path(args.result).write_text(json.dumps(figures), encoding="utf-8")


def job_configs(
    model_dir: Path, train_file: Path, run_dir: Path, hyperparameters: dict[str, Any] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """`finetune`'s TaskConfig and TrainConfig for a job on this data, made as the server makes the job and the
    worker resolves its "auto" settings on a CPU; and those resolved settings."""
    from dataclasses import replace

    import torch

    from gptkit.server.files import Files
    from gptkit.server.jobs import JobRequest, Jobs
    from gptkit.server.runner import auto_settings, training_configs
    from gptkit.server.store import Store

    with Store(run_dir / "store") as store:
        data = train_file.read_bytes()
        uploaded = Files(store).create(data, train_file.name, "fine-tune")
        request = JobRequest(
            model=MODEL_NAME,
            model_source=str(model_dir),
            training_file=uploaded.id,
            seed=SEED,
            hyperparameters=hyperparameters,
        )
        job = Jobs(store).create(request)
        examples = data.count(b"\n")
        resolved = auto_settings(job, examples, torch.device("cpu"))
        job = replace(job, **resolved)
        task, train = training_configs(
            job, store.data_dir / uploaded.path, None, run_dir / "run", examples=examples, device="cpu"
        )
    return task, train, resolved


def run_direct(model_dir: Path, train_file: Path, root: Path, threads: int, env: dict[str, str]) -> dict[str, Any]:
    result = root / "result.json"
    cmd = [sys.executable, os.path.abspath(__file__), "--direct-worker", "--model-dir", str(model_dir)]
    cmd += ["--train-file", str(train_file), "--run-dir", str(root), "--result", str(result)]
    cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, stdout=sys.stderr, env=env, check=False)  # the child's chatter stays off stdout
    if proc.returncode != 0:
        raise SystemExit(f"the direct finetune run failed (exit {proc.returncode})")
    return json.loads(result.read_text(encoding="utf-8"))


# -- (a) api: the same run as a job ---------------------------------------------------------------


def upload(client: Any, path: Path) -> str:
    """files.create of a JSONL for fine-tuning: its file id."""
    return client.files.create(file=(path.name, path.read_bytes()), purpose="fine-tune").id


def run_job(client: Any, file_id: str, poll: float, hyperparameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a job and poll it until it ends: the wall time from create to the retrieve that saw it end, and the
    job's own figures."""
    jobs = client.fine_tuning.jobs
    method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters or {}}}
    start = time.perf_counter()
    job = jobs.create(model=MODEL_NAME, training_file=file_id, seed=SEED, method=method)
    while job.status not in FINISHED:
        time.sleep(poll)
        job = jobs.retrieve(job.id)
    wall = time.perf_counter() - start
    if job.status != "succeeded":
        raise SystemExit(f"job {job.id} {job.status}: {job.error}")
    events = list(jobs.list_events(job.id, limit=1000))  # the SDK pages through them all
    started = min(e.created_at for e in events if e.message == "Fine-tuning job started")
    steps = [e.data for e in events if e.type == "metrics" and e.data]
    last = max(steps, key=lambda d: d["step"]) if steps else {}
    return {
        "seconds": round(wall, 2),
        "job_reported_s": job.finished_at - started,  # whole seconds: the API's timestamps
        "created_to_finished_s": job.finished_at - job.created_at,
        "steps": last.get("step"),
        "last_train_loss": last.get("train_loss"),
        "trained_tokens": job.trained_tokens,
        "hyperparameters": job.hyperparameters.model_dump(),
        "id": job.id,
    }


def overhead(client: Any, ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """(a): a warm-up job, then `--rounds` of direct and api runs, alternating which goes first."""
    warmup = upload(client, make_data(ctx["tmp"] / "warmup.jsonl", WARMUP_EXAMPLES))
    cold = run_job(client, warmup, args.poll, WARMUP_HYPERPARAMETERS)
    log(f"warm-up job (the worker's first): {cold['seconds']} s")
    train = upload(client, ctx["train_file"])
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "api": []}
    resolved = None  # the settings the direct runs resolved
    for round_ in range(args.rounds):
        for case in ("direct", "api") if round_ % 2 == 0 else ("api", "direct"):
            waited = wait_for_idle(args.idle_wait)
            load = load_average()[0]
            if case == "direct":
                root = ctx["tmp"] / f"direct-{round_}"
                figures = run_direct(ctx["model_dir"], ctx["train_file"], root, args.threads, ctx["env"])
                resolved = figures.pop("resolved")
            else:
                figures = run_job(client, train, args.poll)
            runs[case].append({**figures, "load_average_before": load, "waited_for_idle_s": round(waited, 1)})
            log(f"round {round_ + 1}, {case}: {figures['seconds']} s, {figures['steps']} steps")
    same = {
        (r["steps"], r["last_train_loss"], json.dumps(r["hyperparameters"], sort_keys=True))
        for rs in runs.values()
        for r in rs
    }
    median = {case: statistics.median(r["seconds"] for r in rs) for case, rs in runs.items()}
    return {
        "resolved_settings": resolved,
        "direct": {"median_s": median["direct"], "runs": runs["direct"]},
        "api": {"median_s": median["api"], "runs": runs["api"]},
        "worker_first_job": {"examples": WARMUP_EXAMPLES, "seconds": cold["seconds"]},
        "same_run": len(same) == 1,
        "api_vs_direct": round(median["api"] / median["direct"], 3),
        "api_extra_s": round(median["api"] - median["direct"], 2),
    }


# -- (b) completions while a job trains ---------------------------------------------------------------


def ttft(spec: Server, base_url: str, args: argparse.Namespace, prompts: list[str]) -> dict[str, Any]:
    requests, clients, tokens = args.latency_requests, args.latency_clients, args.latency_tokens
    records, wall = asyncio.run(drive(spec, base_url, prompts, requests, clients, tokens, GREEDY))
    return summarize(records, wall, args.latency_tokens)


def latency(client: Any, spec: Server, base_url: str, ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """(b): TTFT idle, then while a job is between its first and last step."""
    prompts = [json.loads(line)["prompt"] for line in ctx["train_file"].read_text().splitlines()[:16]]
    asyncio.run(drive(spec, base_url, prompts, 4, 1, args.latency_tokens, GREEDY))  # warm-up
    wait_for_idle(args.idle_wait)
    idle = ttft(spec, base_url, args, prompts)
    log(f"idle: TTFT p50/p99 {idle['ttft_ms']['p50']}/{idle['ttft_ms']['p99']} ms")
    jobs = client.fine_tuning.jobs
    job = jobs.create(model=MODEL_NAME, training_file=upload(client, ctx["train_file"]), seed=SEED)
    while not any(e.type == "metrics" for e in jobs.list_events(job.id, limit=20)):  # training steps have begun
        if (job := jobs.retrieve(job.id)).status in FINISHED:
            raise SystemExit(f"job {job.id} {job.status} before its first step: {job.error}")
        time.sleep(args.poll)
    training = ttft(spec, base_url, args, prompts)
    job = jobs.retrieve(job.id)
    training["job_still_running_after"] = job.status == "running"
    if job.status not in FINISHED:
        jobs.cancel(job.id)
    log(f"training: TTFT p50/p99 {training['ttft_ms']['p50']}/{training['ttft_ms']['p99']} ms")

    def ratio(q: str) -> float | None:
        a, b = training["ttft_ms"][q], idle["ttft_ms"][q]
        return None if a is None or not b else round(a / b, 3)

    return {"idle": idle, "training": training, "ttft_p50_ratio": ratio("p50"), "ttft_p99_ratio": ratio("p99")}


# -- the run --------------------------------------------------------------------------------------


def target(value: float | None, bound: float) -> dict[str, Any]:
    return {"value": value, "max": bound, "met": None if value is None else value <= bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: the tiny model, fewer examples and requests"
    )
    parser.add_argument("--size", choices=sorted(SIZES), help="the model: small (4 x 256, default) or tiny (2 x 64)")
    parser.add_argument("--examples", type=int, help="prompt/completion pairs in the JSONL (default 1000, quick 100)")
    parser.add_argument("--latency-clients", type=int, default=4, help="concurrent clients of the TTFT phases")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="torch threads of the job worker and of the direct run (default: half the cores, the rest serve)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="direct and api runs each, alternating which is first")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between the client's jobs.retrieve calls")
    parser.add_argument(
        "--latency-requests", type=int, help="streamed completions per TTFT phase (default 100, quick 20)"
    )
    parser.add_argument("--latency-tokens", type=int, default=8, help="max_tokens of each of those completions")
    parser.add_argument("--skip", choices=["overhead", "latency"], help="leave out one of the two measurements")
    parser.add_argument(
        "--idle-wait",
        type=float,
        help="before each timed case, wait up to this long for idle CPUs (default 15, quick 0)",
    )
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds for the server to answer /health")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server and worker logs)")
    for hidden in ("--model-dir", "--train-file", "--run-dir", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--direct-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct_worker:
        return direct_worker(args)
    args.size = args.size or ("tiny" if args.quick else "small")
    args.examples = args.examples or (100 if args.quick else 1000)
    args.latency_requests = args.latency_requests or (20 if args.quick else 100)
    args.idle_wait = args.idle_wait if args.idle_wait is not None else (0.0 if args.quick else 15.0)
    if (
        min(args.examples, args.threads, args.rounds, args.latency_requests, args.latency_tokens, args.latency_clients)
        < 1
    ):
        parser.error("--examples, --threads, --rounds, --latency-requests and --latency-tokens must be >= 1")

    import openai

    from gptkit.server.worker import Supervisor

    start = RunStart()
    tmp = Path(tempfile.mkdtemp(prefix="bench_jobs-"))
    model_dir, data_dir = tmp / "model", tmp / "data"
    make_model(model_dir, args.size)
    ctx = {"tmp": tmp, "model_dir": model_dir, "train_file": make_data(tmp / "train.jsonl", args.examples)}
    (tmp / "hf-cache").mkdir()
    ctx["env"] = server_env(tmp / "hf-cache")
    argv = (sys.executable, "-m", "gptkit", "serve", "--model", str(model_dir), "--served-model-name", MODEL_NAME)
    argv += ("--host", HOST, "--data-dir", str(data_dir), "--max-jobs", "1", "--job-threads", str(args.threads))
    spec = Server("gptkit", argv, MODEL_NAME, (GREEDY,), False)
    report: dict[str, Any] = {}
    log(f"serving {args.size} with {args.examples} examples; logs in {tmp}")
    try:
        server = Running(spec, tmp, ctx["env"], args.start_timeout)
    except ServerFailed as e:
        raise SystemExit(f"gptkit serve did not start: {e}") from None
    try:
        key = os.environ.get("GPTKIT_API_KEY", "bench")
        client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        if args.skip != "overhead":
            report["overhead"] = overhead(client, ctx, args)
        if args.skip != "latency":
            report["latency"] = latency(client, spec, server.base_url, ctx, args)
        client.close()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    api_ratio = report.get("overhead", {}).get("api_vs_direct")
    ttft_ratio = report.get("latency", {}).get("ttft_p99_ratio")
    out = {
        "benchmark": "jobs",
        "model": f"GPT-2-shaped {args.size} ({SIZES[args.size]}, vocabulary 50257, 128 positions), random weights "
        f"(seed {SEED}), float32, CPU",
        "settings": {
            "examples": args.examples,
            "data": "generated JSONL: prompt 'What is A plus B? Answer:', completion ' A+B.'",
            "hyperparameters": "auto (resolved by the worker; the direct run resolves them the same way)",
            "threads": args.threads,
            "rounds": args.rounds,
            "client_poll_s": args.poll,
            "worker_poll_s": inspect.signature(Supervisor).parameters["poll"].default,  # gptkit serve's
            "latency_requests": args.latency_requests,
            "latency_clients": args.latency_clients,
            "latency_tokens": args.latency_tokens,
            "server": " ".join(argv[1:]).replace(str(tmp), "TMP"),
        },
        **report,
        "targets": {
            "api_vs_direct": target(api_ratio, TARGETS["api_vs_direct_max"]),
            "ttft_p99_training_vs_idle": target(ttft_ratio, TARGETS["ttft_p99_training_vs_idle_max"]),
        },
        **start.closing("torch", "openai", "gptkit"),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
