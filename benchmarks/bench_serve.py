"""Serving throughput and latency: `gptkit serve` against `transformers serve`, through the openai SDK.

One random GPT-2 124M (seeded) is saved once with `save_pretrained`, beside gptkit's GPT-2 tokenizer
(`Tokenizer.save_pretrained`, which `transformers.AutoTokenizer` loads), and every server loads that folder.
Servers, each in its own process, one after another in the same run:

* transformers-cb: `transformers serve FOLDER --continuous-batching` (paged attention, one batch for all requests)
* transformers:    `transformers serve FOLDER` (one `model.generate` at a time)
* gptkit-b32:      `gptkit serve --model FOLDER --max-batch-size 32` (continuous batching)
* gptkit-b1:       `gptkit serve --model FOLDER --max-batch-size 1` (gptkit's own one-request-at-a-time figure)

Each server is started, probed with one request, warmed up with one round of concurrent requests, then
`--clients` AsyncOpenAI clients send `--requests` streamed /v1/completions requests of `--tokens` tokens,
each client sending its next request as soon as the last one ends. Greedy decoding; the end-of-text token
does not stop a completion where the server lets a request say so, and the tokens are counted either way
(the `usage` of the last chunk, else the chunks that carried text), so a short completion lowers the figure
instead of inflating it. Prompts are lines of the Shakespeare text gptkit ships (5-15 tokens), the same
sequence for every server.

Per server: requests/s and output tokens/s over the timed run's wall time; time to first token (TTFT: from
sending a request to its first chunk with text) and inter-token latency (ITL: the gaps between a request's
chunks with text; a server that sends several tokens in one write shows gaps near 0) at p50/p99; time per
output token (TPOT: a request's (last - first chunk) / (tokens - 1)); peak RSS of the server's processes,
sampled every 50 ms during the timed run, and the kernel's peak (VmHWM, load included); CPU seconds of the
server and of this client process, whose SSE parsing shares the machine's cores with the server.

`--rss-requests N` adds a phase on gptkit-b32 (`--rss-server`): RSS after its warm-up and timed run, then
after N more requests (target: within 5%).

    python benchmarks/bench_serve.py                         # all four servers, 32 clients x 64 tokens
    python benchmarks/bench_serve.py --skip-peer --rss-requests 2000
    python benchmarks/bench_serve.py --model-size tiny --clients 4 --requests 8 --tokens 16   # quick check

Prints one JSON object to stdout (progress and server logs' tails go to stderr). Targets are printed, not
asserted: gptkit-b32 output tokens/s >= 2x transformers' best mode and >= 3x gptkit-b1; p99 TTFT <= 1 s at
`--clients` clients; RSS flat within 5%. On a shared machine, distrust runs whose load average exceeds the
core count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import RunStart, cpu_seconds, wait_for_idle

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
HOST = "127.0.0.1"
SEED = 0
SIZES = {"gpt2": {}, "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 128}}  # GPT2Config overrides
SERVED_NAME = "gpt2-bench"  # gptkit's --served-model-name; transformers answers to the folder's path
PROBE_TOKENS = 4
WARMUP_TOKENS = 16
TARGETS = {"vs_transformers_best_min": 2.0, "vs_sequential_min": 3.0, "ttft_p99_max_s": 1.0, "rss_change_max": 0.05}
MIB = 2**20
# transformers serve refuses fields it does not know (422), so EOS is switched off through its own
# `generation_config` field: a negative eos_token_id is dropped by continuous batching's request setup and
# matches no token in `generate` (which warns that generation "will not stop until the maximum length").
# Leaving eos_token_id unset would not do: generate fills unset values from the model's generation_config.
TRANSFORMERS_NO_EOS = {"extra_body": {"generation_config": json.dumps({"do_sample": False, "eos_token_id": -1})}}
# gptkit serve: `ignore_eos` as vLLM spells it, if the server takes it; otherwise plain greedy.
GPTKIT_OPTIONS = ({"temperature": 0, "extra_body": {"ignore_eos": True}}, {"temperature": 0})


def log(message: str) -> None:
    print(f"[bench_serve] {message}", file=sys.stderr, flush=True)


# -- the servers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    argv: tuple[str, ...]  # without --port, which is chosen at launch
    model: str  # the `model` field of each request
    options: tuple[dict[str, Any], ...]  # request settings, tried in order; the first one accepted is used
    sequential: bool  # serves one request at a time: one pass over the weights per token


def server_specs(model_dir: Path, clients: int, hf_extra: tuple[str, ...] = ()) -> dict[str, Server]:
    py = sys.executable
    hf = (py, "-m", "transformers.cli.transformers", "serve", str(model_dir), "--host", HOST, "--device", "cpu")
    hf = (*hf, "--dtype", "float32", *hf_extra)

    def gptkit(batch: int, dtype: str = "float32") -> tuple[str, ...]:
        return (
            *(py, "-m", "gptkit", "serve", "--model", str(model_dir), "--host", HOST),
            *("--max-batch-size", str(batch), "--max-queue", str(2 * clients)),
            *("--dtype", dtype, "--served-model-name", SERVED_NAME),
        )

    specs = [
        Server("transformers-cb", (*hf, "--continuous-batching"), str(model_dir), (TRANSFORMERS_NO_EOS,), False),
        Server("transformers", hf, str(model_dir), (TRANSFORMERS_NO_EOS,), True),
        Server("gptkit-b32", gptkit(32), SERVED_NAME, GPTKIT_OPTIONS, False),
        Server("gptkit-b1", gptkit(1), SERVED_NAME, GPTKIT_OPTIONS, True),
        Server("gptkit-b32-bf16", gptkit(32, "bfloat16"), SERVED_NAME, GPTKIT_OPTIONS, False),
        Server("gptkit-b32-int8", gptkit(32, "int8"), SERVED_NAME, GPTKIT_OPTIONS, False),
    ]
    return {s.name: s for s in specs}


def server_env(hf_cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    # The model is a local folder, so nothing needs the Hub; these make sure nothing tries (the CLI's
    # version check included) and that no user cache is read or written.
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_UPDATE_CHECK="1", HF_HUB_CACHE=str(hf_cache))
    return env


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Running:
    """One server process (in its own session, so that stopping it reaches any children it starts)."""

    def __init__(self, spec: Server, workdir: Path, env: dict[str, str], start_timeout: float) -> None:
        self.spec = spec
        self.port = free_port()
        self.log_path = workdir / f"{spec.name}.log"
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(
                [*spec.argv, "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        self.base_url = f"http://{HOST}:{self.port}/v1"
        started = time.perf_counter()
        try:
            self._wait_healthy(start_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - started

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"exited with status {self.proc.returncode}: {log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise ServerFailed(f"/health not 200 within {timeout:.0f} s: {log_tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# -- /proc readings ---------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/PID/task/TID/children)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            try:
                pids.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
        i += 1
    return pids


def status_bytes(pid: int, key: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in bytes; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    return sum(status_bytes(p, "VmRSS") for p in process_tree(pid))


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process tree (children that already exited are not counted)."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """The peak RSS of a process tree, sampled on a thread while the client runs."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the client -------------------------------------------------------------------------------------


@dataclass
class Record:
    prompt: int
    start: float
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk that carried text
    text: str = ""
    tokens: int = 0
    by_usage: bool = False
    end: float = 0.0
    error: str | None = None
    status: int | None = None  # the HTTP status of a refused request


async def one_request(client: Any, spec: Server, prompt_index: int, prompt: str, tokens: int, options: dict) -> Record:
    record = Record(prompt_index, time.perf_counter())
    parts: list[str] = []
    try:
        stream = await client.completions.create(
            model=spec.model,
            prompt=prompt,
            max_tokens=tokens,
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.usage is not None:
                record.tokens, record.by_usage = chunk.usage.completion_tokens, True
            text = "".join(c.text or "" for c in chunk.choices)
            if text:
                record.chunk_times.append(now)
                parts.append(text)
    except Exception as e:  # a failed request is a result to report, not a crash
        record.error = f"{type(e).__name__}: {e}"
        record.status = getattr(e, "status_code", None)
    record.end = time.perf_counter()
    record.text = "".join(parts)
    if not record.by_usage:
        record.tokens = len(record.chunk_times)
    return record


async def drive(
    spec: Server,
    base_url: str,
    prompts: list[str],
    requests: int,
    clients: int,
    tokens: int,
    options: dict,
    on_done: Callable[[int], None] | None = None,
) -> tuple[list[Record], float]:
    """`clients` concurrent clients send `requests` requests in all, each its next as soon as one ends."""
    import httpx2  # the openai package's HTTP client since openai 3
    from openai import AsyncOpenAI

    limits = httpx2.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    client = AsyncOpenAI(
        base_url=base_url,
        api_key="bench",
        max_retries=0,
        timeout=httpx2.Timeout(1800.0),
        http_client=httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(1800.0)),
    )
    pending = iter(range(requests))
    records: list[Record] = []

    async def user() -> None:
        for i in pending:  # one iterator shared by all clients: each request is sent once
            k = i % len(prompts)
            records.append(await one_request(client, spec, k, prompts[k], tokens, options))
            if on_done is not None:
                on_done(len(records))

    start = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(clients)))
    wall = time.perf_counter() - start
    await client.close()
    return records, wall


def probe(spec: Server, base_url: str, prompt: str) -> tuple[dict[str, Any], list[str]]:
    """The first of the server's request settings that it accepts (a 4xx moves on to the next)."""
    refused = []
    for options in spec.options:
        [record], _ = asyncio.run(drive(spec, base_url, [prompt], 1, 1, PROBE_TOKENS, options))
        if record.error is None:
            return options, refused
        refused.append(f"{json.dumps(options)} -> {record.error}")
        if record.status is None or not 400 <= record.status < 500:  # not a refusal of the settings
            break
    raise ServerFailed("no request was answered: " + " | ".join(refused))


# -- figures ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


def summarize(records: list[Record], wall: float, tokens: int) -> dict[str, Any]:
    ok = [r for r in records if r.error is None]
    out_tokens = sum(r.tokens for r in ok)
    ttft = [r.chunk_times[0] - r.start for r in ok if r.chunk_times]
    itl = [b - a for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]
    tpot = [(r.chunk_times[-1] - r.chunk_times[0]) / (r.tokens - 1) for r in ok if r.chunk_times and r.tokens > 1]
    errors = sorted({r.error for r in records if r.error is not None})
    return {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "errors": errors[:3],
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(ok) / wall, 3),
        "output_tokens": out_tokens,
        "output_tokens_per_s": round(out_tokens / wall, 2),
        "tokens_per_request_min": min((r.tokens for r in ok), default=0),
        "requests_short_of_max_tokens": sum(r.tokens < tokens for r in ok),
        "tokens_counted_by": "usage" if ok and all(r.by_usage for r in ok) else "text chunks",
        "ttft_ms": {
            "p50": ms(percentile(ttft, 0.5)),
            "p99": ms(percentile(ttft, 0.99)),
            "max": ms(max(ttft, default=None)),
        },
        "itl_ms": {"p50": ms(percentile(itl, 0.5)), "p99": ms(percentile(itl, 0.99))},
        "tpot_ms": {"p50": ms(percentile(tpot, 0.5)), "p99": ms(percentile(tpot, 0.99))},
    }


def texts_by_prompt(records: list[Record]) -> dict[int, str]:
    out: dict[int, str] = {}
    for r in records:
        if r.error is None:
            out.setdefault(r.prompt, r.text)
    return out


# -- one server, start to stop -----------------------------------------------------------------------


def settled_rss(pid: int, seconds: float = 1.0) -> int:
    """RSS once in-flight work has drained (the allocator may return memory a moment later)."""
    time.sleep(seconds)
    return tree_rss(pid)


def run_server(spec: Server, args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    waited = wait_for_idle(args.idle_wait)
    load_before = os.getloadavg()[0]
    log(f"== {spec.name} (waited {waited:.0f} s for idle CPUs, load {load_before:.2f}): {' '.join(spec.argv)}")
    server = Running(spec, ctx["workdir"], ctx["env"], args.start_timeout)
    try:
        pid = server.proc.pid
        rss_loaded = tree_rss(pid)
        log(f"{spec.name}: healthy after {server.start_seconds:.1f} s, RSS {rss_loaded / MIB:.0f} MiB")
        prompts = ctx["prompts"]
        options, refused = probe(spec, server.base_url, prompts[0])
        for line in refused:
            log(f"{spec.name}: settings refused: {line}")
        warmup = args.warmup if args.warmup is not None else args.clients
        if warmup:
            records, wall = asyncio.run(
                drive(spec, server.base_url, prompts, warmup, args.clients, min(WARMUP_TOKENS, args.tokens), options)
            )
            failed = sum(r.error is not None for r in records)
            log(f"{spec.name}: warm-up {warmup} requests in {wall:.1f} s ({failed} failed)")
        cpu0, own0 = tree_cpu_seconds(pid), cpu_seconds()
        with RssSampler(pid) as sampler:
            records, wall = asyncio.run(
                drive(spec, server.base_url, prompts, args.requests, args.clients, args.tokens, options)
            )
        cpu1, own1 = tree_cpu_seconds(pid), cpu_seconds()
        result = summarize(records, wall, args.tokens)
        result.update(
            sequential=spec.sequential,
            request_settings=options,
            settings_refused=refused,
            start_s=round(server.start_seconds, 1),
            rss_loaded_mib=round(rss_loaded / MIB, 1),
            rss_peak_mib=round(sampler.peak / MIB, 1),
            server_cpu_s=round(cpu1 - cpu0, 1),
            # Of all the machine's cores over the run: well below 1 with a busy server means other processes
            # (this client included, client_cpu_s) took the CPU, so distrust the figures.
            server_cpu_share=round((cpu1 - cpu0) / wall / (os.cpu_count() or 1), 3),
            client_cpu_s=round(own1 - own0, 1),
            load_avg_1min_before=round(load_before, 2),
            load_avg_1min_after=round(os.getloadavg()[0], 2),
            waited_for_idle_s=round(waited, 1),
        )
        if spec.sequential:  # one request at a time: every token is one pass over the weights
            result["weight_gb_per_s"] = round(ctx["weight_bytes"] * result["output_tokens_per_s"] / 1e9, 2)
        log(
            f"{spec.name}: {result['output_tokens_per_s']} tok/s, {result['requests_per_s']} req/s, "
            f"TTFT p50/p99 {result['ttft_ms']['p50']}/{result['ttft_ms']['p99']} ms, "
            f"ITL p50/p99 {result['itl_ms']['p50']}/{result['itl_ms']['p99']} ms, peak RSS {result['rss_peak_mib']} MiB"
        )
        if spec.name == args.rss_server and args.rss_requests > 0:
            result["rss_check"] = rss_check(spec, server, args, options, prompts)
        result["vm_hwm_mib"] = round(status_bytes(pid, "VmHWM") / MIB, 1)  # the main process's peak, load included
        result["_texts"] = texts_by_prompt(records)
        return result
    finally:
        server.stop()
        if args.keep_logs:
            log(f"{spec.name}: log at {server.log_path}")


def rss_check(spec: Server, server: Running, args: argparse.Namespace, options: dict, prompts: list[str]) -> dict:
    """RSS after warm-up (and the timed run), then after `--rss-requests` more requests."""
    pid = server.proc.pid
    before = settled_rss(pid)
    marks = {round(args.rss_requests * k / 8) for k in range(1, 9)}
    series: list[tuple[int, float]] = []

    def on_done(done: int) -> None:
        if done in marks:
            series.append((done, round(tree_rss(pid) / MIB, 1)))

    log(f"{spec.name}: RSS check, {args.rss_requests} requests from {before / MIB:.1f} MiB")
    with RssSampler(pid, interval=0.25) as sampler:
        records, wall = asyncio.run(
            drive(spec, server.base_url, prompts, args.rss_requests, args.clients, args.tokens, options, on_done)
        )
    after = settled_rss(pid)
    change = after / before - 1
    log(f"{spec.name}: RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB ({100 * change:+.1f}%) in {wall:.0f} s")
    return {
        "requests": args.rss_requests,
        "failed": sum(r.error is not None for r in records),
        "wall_s": round(wall, 1),
        "rss_after_warmup_mib": round(before / MIB, 1),
        "rss_after_requests_mib": round(after / MIB, 1),
        "rss_peak_mib": round(sampler.peak / MIB, 1),
        "change": round(change, 4),
        "rss_mib_by_requests_done": series,
    }


# -- setup ------------------------------------------------------------------------------------------


def make_model(folder: Path, size: str) -> None:
    """The random GPT-2 every server loads, with gptkit's GPT-2 tokenizer and chat template (reused if present)."""
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        log(f"reusing the model in {folder}")
        return
    import torch
    import transformers

    from gptkit.text.chat_template import save_chat_template
    from gptkit.text.tokenizer import Tokenizer

    log(f"creating GPT-2 ({size}) with random weights in {folder}")
    torch.manual_seed(SEED)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**SIZES[size])).eval().save_pretrained(folder)
    Tokenizer.from_pretrained("gpt2").save_pretrained(folder)
    # gptkit's default GPT-2 chat template, so that /v1/chat/completions works on every server (GPT-2 has
    # none of its own; transformers serve answers chat requests on a folder without one with a 500).
    save_chat_template(folder)
    transformers.AutoTokenizer.from_pretrained(folder)  # fails here, not in a server, if transformers cannot load it


def weight_bytes(folder: Path) -> int:
    """Bytes of weights one decode step reads: every tensor but the position table (one row of it is read)."""
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            for key in f.keys():
                if key.endswith("wpe.weight"):
                    continue
                s = f.get_slice(key)
                total += math.prod(s.get_shape()) * {"F32": 4, "BF16": 2, "F16": 2}.get(s.get_dtype(), 4)
    return total


def make_prompts(count: int = 64) -> list[str]:
    """Short lines of the Shakespeare text gptkit ships: the same prompts, in the same order, for every server."""
    text = (SRC / "gptkit" / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if 24 <= len(line.strip()) <= 60 and ":" not in line]
    step = max(1, len(lines) // count)
    return lines[::step][:count]


def agreement(results: dict[str, dict[str, Any]], reference: str) -> dict[str, float]:
    """Per server, the fraction of prompts whose greedy completion text equals the reference server's."""
    ref = results.get(reference, {}).get("_texts")
    if not ref:
        return {}
    out = {}
    for name, r in results.items():
        texts = r.get("_texts")
        if texts is None or name == reference:
            continue
        common = [i for i in texts if i in ref]
        if common:
            out[name] = round(sum(texts[i] == ref[i] for i in common) / len(common), 3)
    return out


def compare(results: dict[str, dict[str, Any]], clients: int) -> tuple[dict[str, Any], dict[str, Any]]:
    def tps(name: str) -> float | None:
        r = results.get(name)
        return r["output_tokens_per_s"] if r and "skipped" not in r and not r["failed"] else None

    ours, seq = tps("gptkit-b32"), tps("gptkit-b1")
    peers = {n: tps(n) for n in ("transformers-cb", "transformers") if tps(n)}
    best = max(peers, key=lambda n: peers[n]) if peers else None
    ratios: dict[str, Any] = {
        "transformers_best_mode": best,
        "gptkit_vs_transformers_best": round(ours / peers[best], 3) if ours and best else None,
        "gptkit_batched_vs_sequential": round(ours / seq, 3) if ours and seq else None,
        "transformers_cb_vs_plain": (
            round(peers["transformers-cb"] / peers["transformers"], 3) if len(peers) == 2 else None
        ),
        f"ttft_p99_ms_at_{clients}_clients": {n: r["ttft_ms"]["p99"] for n, r in results.items() if "skipped" not in r},
        **{
            f"{name}_vs_transformers_best": round(tps(name) / peers[best], 3)  # type: ignore[operator]
            for name in ("gptkit-b32-bf16", "gptkit-b32-int8")
            if tps(name) and best
        },
    }
    ttft = results.get("gptkit-b32", {}).get("ttft_ms", {}).get("p99")

    def target(value: float | None, bound: float, at_least: bool) -> dict[str, Any]:
        met = None if value is None else (value >= bound if at_least else value <= bound)
        return {"value": value, "min" if at_least else "max": bound, "met": met}

    targets = {
        "gptkit_vs_transformers_best": target(
            ratios["gptkit_vs_transformers_best"], TARGETS["vs_transformers_best_min"], True
        ),
        "gptkit_batched_vs_sequential": target(
            ratios["gptkit_batched_vs_sequential"], TARGETS["vs_sequential_min"], True
        ),
        "gptkit_ttft_p99_s": target(None if ttft is None else ttft / 1000, TARGETS["ttft_p99_max_s"], False),
    }
    rss = results.get("gptkit-b32", {}).get("rss_check")
    if rss:
        targets["gptkit_rss_change"] = target(abs(rss["change"]), TARGETS["rss_change_max"], False)
    return ratios, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens of each completion")
    parser.add_argument("--requests", type=int, help="timed requests per server (default: 2 x clients)")
    parser.add_argument("--warmup", type=int, help="warm-up requests per server, 16 tokens each (default: clients)")
    parser.add_argument(
        "--servers",
        default="all",
        help="comma-separated: transformers-cb, transformers, gptkit-b32, gptkit-b1, gptkit-b32-bf16, gptkit-b32-int8",
    )
    parser.add_argument("--skip-peer", action="store_true", help="leave out the transformers servers")
    parser.add_argument("--model-size", choices=sorted(SIZES), default="gpt2", help="gpt2 (124M) or tiny (quick check)")
    parser.add_argument("--model-dir", type=Path, help="keep the model folder here (reused when it exists)")
    parser.add_argument("--rss-requests", type=int, default=0, help="RSS check: this many requests after the timed run")
    parser.add_argument("--rss-server", default="gptkit-b32", help="the server the RSS check runs on")
    parser.add_argument(
        "--idle-wait", type=float, default=30.0, help="before each server, wait up to this long for idle CPUs"
    )
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds for a server to answer /health")
    parser.add_argument(
        "--transformers-args",
        default="",
        help="more options for both transformers servers, e.g. '--cb-num-blocks 64' (on CPU continuous batching "
        "sizes its KV cache to 60%% of the machine's RAM)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (printed paths)")
    args = parser.parse_args()
    if args.requests is None:
        args.requests = 2 * args.clients
    if min(args.clients, args.tokens, args.requests) < 1 or args.rss_requests < 0:
        parser.error("--clients, --tokens and --requests must be >= 1, --rss-requests >= 0")

    with tempfile.TemporaryDirectory(prefix="bench_serve-") as tmp:
        workdir = Path(tmp) if not args.keep_logs else Path(tempfile.mkdtemp(prefix="bench_serve-logs-"))
        model_dir = (args.model_dir or Path(tmp) / "model").resolve()
        specs = server_specs(model_dir, args.clients, tuple(shlex.split(args.transformers_args)))
        names = list(specs) if args.servers == "all" else [n.strip() for n in args.servers.split(",") if n.strip()]
        if unknown := [n for n in names if n not in specs]:
            parser.error(f"unknown server(s) {unknown}; known: {', '.join(specs)}")
        if args.skip_peer:
            names = [n for n in names if not n.startswith("transformers")]
        start = RunStart()
        make_model(model_dir, args.model_size)
        hf_cache = Path(tmp) / "hf-cache"
        hf_cache.mkdir()
        ctx = {
            "workdir": workdir,
            "env": server_env(hf_cache),
            "prompts": make_prompts(),
            "weight_bytes": weight_bytes(model_dir),
        }
        results: dict[str, dict[str, Any]] = {}
        for name in names:
            try:
                results[name] = run_server(specs[name], args, ctx)
            except ServerFailed as e:
                log(f"{name}: skipped, {e}")
                results[name] = {"skipped": str(e)}

    ratios, targets = compare(results, args.clients)
    same_text = agreement(results, "transformers")
    for r in results.values():
        r.pop("_texts", None)
    report = {
        "benchmark": "serve",
        "model": f"gpt2 {args.model_size}, random weights (seed {SEED}), float32, CPU",
        "settings": {
            "clients": args.clients,
            "tokens": args.tokens,
            "requests": args.requests,
            "warmup_requests": args.warmup if args.warmup is not None else args.clients,
            "warmup_tokens": min(WARMUP_TOKENS, args.tokens),
            "prompts": f"{len(ctx['prompts'])} Shakespeare lines, 5-15 tokens",
            "greedy": True,
            "api": "POST /v1/completions, stream=True, stream_options.include_usage, AsyncOpenAI",
        },
        "servers": results,
        "ratios": ratios,
        "greedy_text_same_as_transformers": same_text,
        "targets": targets,
        **start.closing("torch", "transformers", "openai", "gptkit"),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
