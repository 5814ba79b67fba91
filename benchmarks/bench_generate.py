"""Greedy generation speed and memory: gptkit against transformers and llama.cpp on GPT-2 124M (random weights).

One random `GPT2LMHeadModel` is created (seeded), saved with `save_pretrained`, and loaded by every
engine, so they run the same weights. Every prompt has 8 tokens, so batches need no padding.
Prints one JSON object to stdout; progress goes to stderr.

    python benchmarks/bench_generate.py                      # all cases, 128 new tokens, best of 3
    python benchmarks/bench_generate.py --cases fp32-b1,bf16-b1 --repeats 5
    python benchmarks/bench_generate.py --cases fp32-b1,bf16-b1,int8-b1   # int8 weights (also timed: gptkit bf16)
    python benchmarks/bench_generate.py --memory-check       # only the KV-cache memory check
    python benchmarks/bench_generate.py --quick              # smoke test: 16 new tokens, 1 run
    python benchmarks/bench_generate.py --llama-convert PATH/convert_hf_to_gguf.py   # with llama.cpp (batch 1)
    python benchmarks/bench_generate.py --torch-kernels      # also gptkit without its own CPU kernels

llama.cpp is an optional peer of the batch-1 cases (llama-cpp-python; see benchmarks/README.md for its build):
the folder is converted to GGUF by llama.cpp's own convert_hf_to_gguf.py (--llama-convert, or the
GPTKIT_LLAMA_CONVERT variable), f32 for fp32-b1, f16 for bf16-b1, q8_0 for int8-b1. Without llama_cpp or the
converter, or with --no-llamacpp, the report says why under "llamacpp" and the other engines run as before.

Each engine of a case runs in its own subprocess. Peak RSS is a per-process number, and the allocator
keeps freed pages, so engines sharing a process would be charged with each other's leftovers. Inside a
worker the kernel's peak counter (VmHWM) is reset after loading (`echo 5 > /proc/self/clear_refs`),
so "peak growth" is what generation itself adds on top of the loaded model; the load spike is
reported separately. The workers stay alive and the parent times them in turns, so that other load on
a shared machine hits every engine alike (each run's 1-minute load average is in the output).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from machine import MIB, load_average, machine_info, proc_status, reset_peak, source_state

SEED = 0
PROMPT_TOKENS = 8
# Eight fixed prompts of 8 token ids each; batch b uses the first b. Agreement uses all eight.
PROMPTS = torch.randint(0, 50256, (8, PROMPT_TOKENS), generator=torch.Generator().manual_seed(1234)).tolist()

# name -> (batch, gptkit dtype as gptkit.load takes it); transformers always runs fp32. bf16 cases also time
# transformers bf16, int8 cases gptkit bf16 (the baseline for int8), each in the same turns.
CASES = {
    "fp32-b1": (1, "float32"),
    "fp32-b8": (8, "float32"),
    "bf16-b1": (1, "bfloat16"),
    "bf16-b8": (8, "bfloat16"),
    "int8-b1": (1, "int8"),
    "int8-b8": (8, "int8"),
}
EXTRA_PEER = {"bfloat16": ("transformers", "bfloat16"), "int8": ("gptkit", "bfloat16")}  # gptkit dtype -> peer
# gptkit dtype -> the GGUF type (the converter's --outtype) llama.cpp runs beside it in batch-1 cases
LLAMACPP_TYPES = {"float32": "f32", "bfloat16": "f16", "int8": "q8_0"}
MEMORY_CHECK = "memory-check"  # gptkit fp32, batch 8, 1,024 total tokens
MEMORY_TOTAL_TOKENS = 1024
# target -> (case, which ratio, its minimum). A ratio is gptkit's tokens/s over a peer's in the same turns:
# "ratio" over transformers fp32's, "ratio_vs_<peer>" over that peer's (llamacpp: the type LLAMACPP_TYPES gives).
TARGETS = {
    "fp32-b1": ("fp32-b1", "ratio", 1.0),
    "fp32-b8": ("fp32-b8", "ratio", 1.5),
    "bf16-b1": ("bf16-b1", "ratio", 1.8),
    "int8-b1": ("int8-b1", "ratio_vs_gptkit_bf16", 1.6),
    "fp32-b1 vs llama.cpp f32": ("fp32-b1", "ratio_vs_llamacpp", 1.0),
    "bf16-b1 vs llama.cpp f16": ("bf16-b1", "ratio_vs_llamacpp", 0.8),
    "int8-b1 vs llama.cpp q8_0": ("int8-b1", "ratio_vs_llamacpp", 0.8),
}
MEMORY_TARGET = 1.2  # maximum peak / (model bytes + KV cache bytes)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- worker: one engine, one configuration, in its own process ---------------------------------------


def _weight_bytes(model: torch.nn.Module, wpe: torch.Tensor) -> int:
    """Bytes of weights one forward pass reads: every distinct parameter (a tied LM head once) and an int8
    model's scales, except the position table, of which a decode step reads one row."""
    total = sum(p.nbytes for p in model.parameters()) + sum(
        b.nbytes for name, b in model.named_buffers() if name.endswith(".scale")
    )
    return total - wpe.nbytes


def _gptkit_runner(model_dir: str, dtype: str, new_tokens: int, native: bool = True) -> tuple[Any, Any, int]:
    """gptkit as it runs by default; with native=False on torch's kernels only (`kernels.use_native(False)`)."""
    import gptkit
    from gptkit.generation.generate import generate
    from gptkit.generation.sampling import SamplingParams
    from gptkit.models.config import GPTConfig
    from gptkit.models.kernels import use_native

    model = gptkit.load(model_dir, dtype=dtype, lm=True).model
    assert model.config == GPTConfig.from_name("gpt2"), model.config
    params = SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True)

    def run(m: Any, prompts: list[list[int]]) -> list[list[int]]:
        with use_native(native):
            return [c.token_ids for c in generate(m, prompts, params)]

    return model, run, _weight_bytes(model, model.transformer.wpe.weight)


def _gptkit_torch_runner(model_dir: str, dtype: str, new_tokens: int) -> tuple[Any, Any, int]:
    return _gptkit_runner(model_dir, dtype, new_tokens, native=False)


def _transformers_runner(model_dir: str, dtype: str, new_tokens: int) -> tuple[Any, Any, int]:
    import transformers

    transformers.logging.set_verbosity_error()
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()

    def run(m: Any, prompts: list[list[int]]) -> list[list[int]]:
        return transformers_greedy(m, prompts, new_tokens)

    return model, run, _weight_bytes(model, model.transformer.wpe.weight)


def transformers_greedy(model: Any, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """transformers' `generate`, greedy, exactly `new_tokens` new tokens per prompt (EOS does not stop it)."""
    # Equal-length prompts: no padding. Mixed lengths would need left padding + this mask.
    ids = torch.tensor(prompts)
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=model.config.eos_token_id,
        use_cache=True,
    )
    return out[:, ids.shape[1] :].tolist()


def gguf_path(model_dir: str, gguf_type: str) -> Path:
    """Where the parent writes the model converted to GGUF of that type: beside the `save_pretrained` folder
    (a file inside it could be taken for a checkpoint by the other engines)."""
    return Path(model_dir).parent / f"model-{gguf_type}.gguf"


def _llamacpp_runner(model_dir: str, dtype: str, new_tokens: int) -> tuple[Any, Any, int]:
    """llama.cpp through llama-cpp-python on the GGUF file of type `dtype` (f32, f16, q8_0): one prompt at a
    time (a `Llama` holds one sequence), each continued greedily for exactly `new_tokens` tokens."""
    import llama_cpp

    threads = torch.get_num_threads()  # the job's thread count: the worker set torch's to it
    model = llama_cpp.Llama(
        model_path=str(gguf_path(model_dir, dtype)),
        n_threads=threads,
        n_threads_batch=threads,  # the prompt's pass (its default is every CPU)
        n_ctx=PROMPT_TOKENS + new_tokens,
        logits_all=False,
        use_mmap=False,  # read into memory the process owns, as gptkit does: resident once loaded
        verbose=False,
    )
    assert model.n_vocab() == 50257 and model.n_embd() == 768, (model.n_vocab(), model.n_embd())

    def run(m: Any, prompts: list[list[int]]) -> list[list[int]]:
        rows = []
        for prompt in prompts:
            # Without the reset, generate() would find this prompt in its cache and not read it again.
            m.reset()
            # Token ids in, token ids out; temperature 0 is llama.cpp's greedy sampler. generate() does not stop
            # at EOS: it yields until it is no longer asked, and is not asked for a pass after the last token.
            rows.append(list(itertools.islice(m.generate(prompt, temp=0.0), new_tokens)))
        return rows

    # Every tensor once (a tied head's token_embd is the head), less the position table, as _weight_bytes
    # counts; the converter keeps position_embd in float32 whatever its --outtype.
    position_table = llama_cpp.llama_model_n_ctx_train(model.model) * model.n_embd() * 4
    return model, run, llama_cpp.llama_model_size(model.model) - position_table


RUNNERS = {
    "gptkit": _gptkit_runner,
    "gptkit_torch": _gptkit_torch_runner,
    "transformers": _transformers_runner,
    "llamacpp": _llamacpp_runner,
}


def _reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def worker(job: dict[str, Any]) -> None:
    """Load one engine, then obey the parent line by line: `run` (time one generation) or `report`
    (peak memory, the last tokens and, with a `reference` engine, the tokens of both for agreement; then exit)."""
    torch.set_num_threads(job["threads"])
    torch.nn.functional.linear(torch.ones(4, 64), torch.ones(64, 64))  # start the thread pool before the baseline
    rss_start = proc_status("VmRSS")
    model, run, weight_bytes = RUNNERS[job["engine"]](job["model_dir"], job["dtype"], job["new_tokens"])
    load_peak = proc_status("VmHWM")
    # Weights may be views of the memory-mapped checkpoint, paged in on first use; touch them all so
    # those page faults count as the model's memory, not as memory that generation adds. (llama.cpp
    # has read its whole file by now: use_mmap=False.)
    if isinstance(model, torch.nn.Module):
        with torch.inference_mode():
            for p in model.parameters():
                p.sum()
    rss_loaded = proc_status("VmRSS")
    reset_peak()
    _reply({"rss_start": rss_start, "rss_loaded": rss_loaded, "load_peak": load_peak, "weight_bytes": weight_bytes})
    prompts = PROMPTS[: job["batch"]]
    tokens: list[list[int]] = []
    with torch.inference_mode():
        for line in sys.stdin:
            if line.strip() == "run":
                start = time.perf_counter()
                tokens = run(model, prompts)
                _reply({"seconds": time.perf_counter() - start, "load_avg": load_average()[0]})
                continue
            report: dict[str, Any] = {"run_peak": proc_status("VmHWM"), "tokens": tokens}
            if job["reference"]:  # after the memory reading: this loads a second (fp32) model
                make_reference = RUNNERS[job["reference"]]
                reference, ref_run, _ = make_reference(job["model_dir"], "float32", job["new_tokens"])
                chunks = [PROMPTS[i : i + job["batch"]] for i in range(0, len(PROMPTS), job["batch"])]
                ours = [row for chunk in chunks for row in run(model, chunk)]
                theirs = [row for chunk in chunks for row in ref_run(reference, chunk)]
                report["agreement_tokens"] = (ours, theirs)
            _reply(report)
            return


# -- parent: build the weights, run the workers, compare ---------------------------------------------


class Worker:
    """One engine in its own process, driven one command at a time over its stdin and stdout."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.tag = f"[{job['engine']} {job['dtype']} b{job['batch']}]"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._ask(None)
        self.times: list[float] = []
        self.load_avgs: list[float] = []

    def _ask(self, command: str | None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.tag} worker exited with status {self.proc.wait()}; see its stderr above")
        return json.loads(line)

    def run(self, timed: bool) -> None:
        reply = self._ask("run")
        if timed:
            self.times.append(reply["seconds"])
            self.load_avgs.append(reply["load_avg"])
        log(f"{self.tag} {'run' if timed else 'warm-up'}: {reply['seconds']:.2f} s")

    def finish(self) -> dict[str, Any]:
        result = {**self.job, **self.info, **self._ask("report"), "times": self.times, "load_avgs": self.load_avgs}
        self.proc.wait()
        return result


def time_interleaved(workers: list[Worker], repeats: int, warmup: bool) -> list[dict[str, Any]]:
    """Warm up each engine, then time them in turns (order alternating), so that load from other
    processes on the machine falls on all engines alike rather than on whichever ran during it."""
    if warmup:
        for w in workers:
            w.run(timed=False)
    for i in range(repeats):
        for w in workers if i % 2 == 0 else workers[::-1]:
            w.run(timed=True)
    return [w.finish() for w in workers]


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    best = min(r["times"])
    return {
        "dtype": r["dtype"],
        "tokens_per_s": round(r["batch"] * r["new_tokens"] / best, 2),
        "seconds": round(best, 3),
        "runs_s": [round(t, 3) for t in r["times"]],
        "ms_per_step": round(1000 * best / r["new_tokens"], 2),
        # One pass over the weights per new token: the prefill pass yields the first, each decode step one more.
        "weight_gb_per_s": round(r["weight_bytes"] * r["new_tokens"] / best / 1e9, 2),
        "model_rss_mib": round((r["rss_loaded"] - r["rss_start"]) / MIB, 1),
        "peak_rss_growth_mib": round((r["run_peak"] - r["rss_loaded"]) / MIB, 1),
        "load_peak_growth_mib": round((r["load_peak"] - r["rss_start"]) / MIB, 1),
        # This run's own threads add ~1 per busy core; more than the thread count means competing processes.
        "load_avg_1min": [round(x, 2) for x in r["load_avgs"]],
    }


def agreement(ours: list[list[int]], reference: list[list[int]]) -> dict[str, float]:
    """Fraction of positions where the tokens are equal, and the mean matching prefix (after the first
    difference the two continue from different contexts, so later positions agree only by chance)."""
    equal = sum(a == b for x, y in zip(ours, reference, strict=True) for a, b in zip(x, y, strict=True))
    total = sum(len(x) for x in reference)
    prefix = [
        next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), len(x))
        for x, y in zip(ours, reference, strict=True)
    ]
    return {"agreement": round(equal / total, 4), "prefix_agreement": round(sum(prefix) / total, 4)}


def run_case(name: str, base: dict[str, Any], llamacpp: bool) -> dict[str, Any]:
    """Time the case's engines in turns. `reference` is the engine whose fp32 tokens a worker also generates
    over all eight prompts, beside its own, for agreement: gptkit's own fp32 for gptkit bf16 and int8,
    transformers fp32 for llama.cpp."""
    batch, dtype = CASES[name]
    log(f"== {name}")
    own_reference = None if dtype == "float32" else "gptkit"
    jobs = {
        "gptkit": {**base, "engine": "gptkit", "dtype": dtype, "batch": batch, "reference": own_reference},
        "transformers": {**base, "engine": "transformers", "dtype": "float32", "batch": batch, "reference": None},
    }
    if dtype in EXTRA_PEER:  # not a target's peer for bf16, but it tells how much of the gain is the dtype itself
        engine, peer_dtype = EXTRA_PEER[dtype]
        jobs[f"{engine}_bf16"] = {**base, "engine": engine, "dtype": peer_dtype, "batch": batch, "reference": None}
    if base["torch_kernels"]:  # how much of gptkit's speed its own CPU kernels give, in the same turns
        jobs["gptkit_torch"] = {**base, "engine": "gptkit_torch", "dtype": dtype, "batch": batch, "reference": None}
    if llamacpp and batch == 1:
        gguf_type = LLAMACPP_TYPES[dtype]
        jobs["llamacpp"] = {**base, "engine": "llamacpp", "dtype": gguf_type, "batch": 1, "reference": "transformers"}
    timed = time_interleaved([Worker(job) for job in jobs.values()], base["repeats"], warmup=True)
    results = dict(zip(jobs, timed, strict=True))
    ours = results["gptkit"]
    out: dict[str, Any] = {"batch": batch, **{engine: summarize(r) for engine, r in results.items()}}
    for engine, r in results.items():  # = gptkit tokens/s / the peer's tokens/s
        if engine != "gptkit":
            key = "ratio" if engine == "transformers" else f"ratio_vs_{engine}"
            out[key] = round(min(r["times"]) / min(ours["times"]), 3)
    if dtype == "float32":
        out["identical"] = ours["tokens"] == results["transformers"]["tokens"]
    else:  # with gptkit fp32 over the eight prompts; random weights: no statement about quality
        out.update(agreement(*ours["agreement_tokens"]))
    if "llamacpp" in results:  # with transformers fp32 over the eight prompts
        out["llamacpp"].update(agreement(*results["llamacpp"]["agreement_tokens"]))
    return out


def memory_check(base: dict[str, Any], quick: bool) -> dict[str, Any]:
    from gptkit.models.config import GPTConfig

    config = GPTConfig.from_name("gpt2")
    batch = 8
    new_tokens = base["new_tokens"] if quick else MEMORY_TOTAL_TOKENS - PROMPT_TOKENS
    log(f"== {MEMORY_CHECK} (batch {batch}, {PROMPT_TOKENS} + {new_tokens} tokens)")
    job = {**base, "engine": "gptkit", "dtype": "float32", "batch": batch, "new_tokens": new_tokens, "reference": None}
    [r] = time_interleaved([Worker(job)], repeats=1, warmup=False)
    kv_bytes = 2 * config.n_layer * batch * config.n_head * (PROMPT_TOKENS + new_tokens) * config.head_dim * 4
    model_bytes = r["weight_bytes"] + config.n_positions * config.n_embd * 4  # all of it is resident
    # Everything the process holds above the bare runtime (imports, thread pool) while generating.
    peak = r["run_peak"] - r["rss_start"]
    return {
        "batch": batch,
        "total_tokens": PROMPT_TOKENS + new_tokens,
        "model_mib": round(model_bytes / MIB, 1),
        "kv_cache_mib": round(kv_bytes / MIB, 1),
        "peak_mib": round(peak / MIB, 1),
        "ratio": round(peak / (model_bytes + kv_bytes), 3),
        "gptkit": summarize(r),
    }


def llamacpp_peer(no_llamacpp: bool, converter: str | None) -> dict[str, Any]:
    """The report's `llamacpp` block: what runs as the batch-1 peer, or why nothing does (`skipped`)."""
    if no_llamacpp:
        return {"skipped": "--no-llamacpp"}
    try:
        import llama_cpp
    except ModuleNotFoundError as e:
        if e.name != "llama_cpp":
            raise  # installed but broken: say so rather than skip
        return {"skipped": "llama_cpp not installed"}
    if not converter:
        return {"skipped": "no converter: pass --llama-convert or set GPTKIT_LLAMA_CONVERT (convert_hf_to_gguf.py)"}
    if not os.path.isfile(converter):
        return {"skipped": f"converter {converter} not found"}
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "converter": os.path.abspath(converter),
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),  # the SIMD it was built with
    }


def convert_to_gguf(converter: str, model_dir: str, gguf_types: list[str]) -> None:
    """Convert the `save_pretrained` folder with llama.cpp's own converter, once per GGUF type. It reads the
    folder as a Hub checkpoint: besides the weights, GPT-2's tokenizer files (gptkit ships the vocabulary) and
    `n_ctx` in config.json, which the Hub's gpt2 config has and transformers no longer writes."""
    import gptkit

    source = Path(model_dir).parent / "gguf-source"  # the converter's input: the folder as the Hub would hold it
    source.mkdir()
    (source / "model.safetensors").symlink_to(Path(model_dir, "model.safetensors"))
    config = json.loads(Path(model_dir, "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "n_ctx": config["n_positions"]}))
    gptkit.Tokenizer.from_pretrained("gpt2").save_pretrained(source)
    for gguf_type in gguf_types:
        log(f"converting to GGUF {gguf_type} with {converter}")
        out = gguf_path(model_dir, gguf_type)
        command = [sys.executable, converter, str(source), "--outtype", gguf_type, "--outfile", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="all", help=f"comma-separated: {', '.join([*CASES, MEMORY_CHECK])}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine after a warm-up; best reported")
    parser.add_argument("--quick", action="store_true", help="smoke test: 16 new tokens, 1 timed run")
    parser.add_argument("--memory-check", action="store_true", help=f"same as --cases {MEMORY_CHECK}")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads of every engine and of the bandwidth copy (default: all CPUs; on a machine shared "
        "with a busy process, fewer keep a descheduled thread from stalling each step)",
    )
    parser.add_argument(
        "--llama-convert",
        default=os.environ.get("GPTKIT_LLAMA_CONVERT"),
        help="llama.cpp's convert_hf_to_gguf.py (in its source tree; default: $GPTKIT_LLAMA_CONVERT); with "
        "llama_cpp installed, llama.cpp runs beside the batch-1 cases",
    )
    parser.add_argument("--no-llamacpp", action="store_true", help="leave llama.cpp out even when installed")
    parser.add_argument(
        "--torch-kernels",
        action="store_true",
        help="also time gptkit on torch's kernels alone (without its own CPU kernels: kernels.use_native(False))",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    names = [*CASES, MEMORY_CHECK] if args.cases == "all" else args.cases.split(",")
    if args.memory_check:
        names = [MEMORY_CHECK]
    unknown = set(names) - {*CASES, MEMORY_CHECK}
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join([*CASES, MEMORY_CHECK])}")
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    new_tokens, repeats = (16, 1) if args.quick else (128, args.repeats)

    import transformers

    import gptkit
    from gptkit.models import native

    llamacpp = llamacpp_peer(args.no_llamacpp, args.llama_convert)
    if "skipped" in llamacpp:
        log(f"llama.cpp skipped: {llamacpp['skipped']}")
    gguf_types = list(dict.fromkeys(LLAMACPP_TYPES[CASES[n][1]] for n in names if n in CASES and CASES[n][0] == 1))
    torch.set_num_threads(args.threads)  # the bandwidth copy with the engines' threads
    machine = machine_info()  # before any worker starts: the bandwidth copy wants the CPUs to itself
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        log("creating GPT-2 124M with random weights")
        model_dir = os.path.join(tmp, "model")
        torch.manual_seed(SEED)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().save_pretrained(model_dir)
        if "skipped" not in llamacpp and gguf_types:
            convert_to_gguf(llamacpp["converter"], model_dir, gguf_types)
        base = {
            "model_dir": model_dir,
            "new_tokens": new_tokens,
            "repeats": repeats,
            "threads": args.threads,
            "torch_kernels": args.torch_kernels,
        }
        cases = {name: run_case(name, base, "skipped" not in llamacpp) for name in names if name in CASES}
        memory = memory_check(base, args.quick) if MEMORY_CHECK in names else None

    for case in cases.values():
        if case["batch"] == 1:  # a batch-1 step reads every weight once: memory bandwidth bounds it
            for engine in case.values():
                if isinstance(engine, dict) and "weight_gb_per_s" in engine:
                    fraction = engine["weight_gb_per_s"] / machine["memory_bandwidth_gb_per_s"]
                    engine["weight_bandwidth_fraction"] = round(fraction, 3)
    targets: dict[str, Any] = {}
    for name, (case, key, minimum) in TARGETS.items():
        if key in cases.get(case, {}):  # ratio_vs_llamacpp is absent when llama.cpp is skipped
            ratio = cases[case][key]
            targets[name] = {key: ratio, "min": minimum, "met": ratio >= minimum}
    if memory is not None:
        targets[MEMORY_CHECK] = {
            "ratio": memory["ratio"],
            "max": MEMORY_TARGET,
            "met": memory["ratio"] <= MEMORY_TARGET,
        }
    result = {
        "benchmark": "generate",
        "model": f"gpt2 124M, random weights (seed {SEED})",
        "settings": {"prompt_tokens": PROMPT_TOKENS, "new_tokens": new_tokens, "repeats": repeats, "greedy": True},
        "env": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gptkit": gptkit.__version__,
            "gptkit_source": source_state(),
            "gptkit_native_kernels": native.library() is not None,  # compiled here, or torch's kernels only
            "threads": args.threads,
        },
        "machine": machine,
        "llamacpp": llamacpp,
        "cases": cases,
        "memory_check": memory,
        "targets": targets,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
