"""gpt2-xl on a 24 GiB machine (issue 15, item 4): load it in bf16, generate with it, LoRA-fine-tune it.

One seeded random gpt2-xl-shaped `GPT2LMHeadModel` (48 layers, 1600 wide, 25 heads, GPT-2's vocabulary and 1,024
positions) is saved with `save_pretrained` in a temporary folder (float32, the 6.2 GB file of the issue, when
memory allows; `--checkpoint-dtype`). Then each engine, gptkit first, runs in a fresh process of its own:

  load      the folder in `--dtype` (bfloat16): the load call's seconds, then one pass reading every parameter
            (transformers memory-maps the file and reads the weights on first use; the pass makes both engines hold
            them); peak RSS growth through both against the model's bytes (`peak_ratio`).
  generate  greedy decoding of `--new-tokens` (32) from an 8-token prompt at batch 1, one warm-up and the best of
            `--repeats` (2): tokens/s, and the tokens, compared between the engines.
  train     with that model freed: LoRA (r 8, alpha 16, on c_attn and c_proj) for 1 warm-up step + `--steps` (5)
            of `--batch` (1) x `--block` (256) tokens of the Shakespeare text gptkit ships, AdamW (lr 2e-4 constant,
            betas 0.9/0.95, weight decay 0.1, clip 1.0), the models' own dropout (0.1): median step seconds and
            peak RSS per part: setup (loading, adapters, optimizer), steps, end. gptkit through its public API,
            `gptkit.tasks.finetune.finetune` on prompt/completion JSONL (the instruct task; each example a passage
            cut to one block, every token trained; TrainConfig.dtype is autocast, the weights stay float32), which
            loads the folder itself, and evaluates one held-out block and saves the run at the end. transformers
            with peft and a plain torch loop over the same blocks, its model loaded afresh. In `--train-dtype`
            (default: `--dtype`); on a CPU without bf16 matrix instructions (the `cpu` block says) torch multiplies
            bfloat16 matrices in a scalar loop, and one bf16 gpt2-xl step takes hours: train in float32 there.

Peak RSS is the kernel's high-water mark (VmHWM), reset (`/proc/self/clear_refs`) at the start of each phase and
reported as the process's whole resident size. Targets: every peak <= 24 GiB, and the load's peak growth <= 1.2x
the model's bytes. Prints one JSON object; progress goes to stderr. The folder and the run are deleted at the end.

    python benchmarks/bench_xl.py                          # gpt2-xl, bf16
    python benchmarks/bench_xl.py --quick --dtype float32  # a 2-layer, 64-wide model in seconds (tests use it)
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench_generate import PROMPTS, agreement, transformers_greedy
from bench_load import SHAPES as LOAD_SHAPES
from bench_load import available_bytes, fp32_bytes, make_checkpoint, timed_load
from machine import MIB, RunStart, load_average, proc_status, reset_peak

SEED = 0
GIB = 2**30
DTYPES = ("bfloat16", "float32")
SHAPES = {"gpt2-xl": LOAD_SHAPES["gpt2-xl"], "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 2}}  # GPT2Config fields
ENGINES = ("gptkit", "transformers")
LORA_R, LORA_ALPHA, LORA_TARGETS = 8, 16.0, ("c_attn", "c_proj")  # gptkit's LoRAConfig, peft's LoraConfig alike
# imported before a worker's memory baseline, so that imports are not charged to a phase
MODULES = {
    "gptkit": ("gptkit.tasks.bundle", "gptkit.generation.generate", "gptkit.tasks.finetune"),
    "transformers": ("transformers", "peft"),
}
BETAS, WEIGHT_DECAY, EPS, CLIP = (0.9, 0.95), 0.1, 1e-8, 1.0  # gptkit's TrainConfig defaults, given to the peer too
# Memory to have available before building a checkpoint, in multiples of the model's float32 bytes: the file sits in
# the page cache while gptkit's fine-tuning holds float32 weights (plus, with bf16 autocast, their bf16 casts saved for
# the backward pass) and the activations; building it, the parent holds the model once (measured: 1.05x).
NEEDED = {"float32": 2.5, "bfloat16": 1.8}
TARGETS = {"peak_rss_gib_max": 24, "load_peak_ratio_max": 1.2}


def log(message: str) -> None:
    print(f"[bench_xl] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    """What one run measures; the workers get it as JSON."""

    shape: str = "gpt2-xl"
    dtype: str = "bfloat16"  # the engines' for loading and generating
    train_dtype: str = "bfloat16"  # for fine-tuning (gptkit: TrainConfig.dtype, autocast; transformers: the weights')
    new_tokens: int = 32
    repeats: int = 2
    steps: int = 5  # timed training steps, after one warm-up step
    batch: int = 1
    block: int = 256
    lr: float = 2e-4
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)


# the smoke test's; one thread, so that its OpenMP threads never wait on a core that other processes hold
QUICK = Settings(shape="tiny", new_tokens=8, repeats=1, steps=2, block=32, threads=1)


# -- worker: one engine, its three phases, in a fresh process ------------------------------------------------


def start_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.ones(4, 64) @ torch.ones(64, 64)  # start the thread pool before the baseline


def import_engine(engine: str) -> None:
    """Import what the worker uses before the memory baseline, so that the imports are not charged to a phase."""
    modules = [importlib.import_module(name) for name in MODULES[engine]]
    if engine == "transformers":
        transformers = modules[0]
        transformers.GPT2LMHeadModel  # noqa: B018  (the lazy module import happens here)
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


def load_model(engine: str, folder: str, dtype: str) -> Any:
    """The language model as a user of the engine loads it."""
    import torch

    if engine == "gptkit":
        import gptkit

        return gptkit.load(folder, dtype=dtype, lm=True).model
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()


def greedy(engine: str, model: Any, prompt: list[int], new_tokens: int) -> list[int]:
    if engine == "gptkit":
        from gptkit.generation.generate import generate
        from gptkit.generation.sampling import SamplingParams

        params = SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True)
        return generate(model, [prompt], params)[0].token_ids
    return transformers_greedy(model, [prompt], new_tokens)[0]


def infer(engine: str, folder: str, settings: Settings) -> dict[str, Any]:
    """Load (then read every parameter once), and time greedy decoding; peaks are absolute VmHWM in bytes."""
    import torch

    model, loaded = timed_load(lambda: load_model(engine, folder, settings.dtype))
    reset_peak()
    times, tokens = [], []
    with torch.inference_mode():
        for run in range(settings.repeats + 1):  # the first is a warm-up
            start = time.perf_counter()
            tokens = greedy(engine, model, PROMPTS[0], settings.new_tokens)
            times.append(time.perf_counter() - start)
            log(f"{engine} {'warm-up' if run == 0 else 'run'}: {settings.new_tokens} tokens in {times[-1]:.2f} s")
    return {
        **loaded,
        "model_bytes": sum(p.nbytes for p in model.parameters()),  # distinct parameters: a tied head once
        "weights_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "generate_peak": proc_status("VmHWM"),
        "generate_seconds": times[1:],
        "tokens": tokens,
        "load_average": load_average()[0],
    }


class StepClock:
    """A training run's phases as seen from outside: setup (until `started`), the steps, and the end (whatever
    runs after the last step), each with its seconds and its peak RSS (VmHWM, reset between phases)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.rss_start = proc_status("VmRSS")
        self.marks = [time.perf_counter()]
        self.losses: list[float] = []
        self.peaks: dict[str, int] = {}
        reset_peak()

    def _phase(self, name: str) -> None:
        self.peaks[name] = proc_status("VmHWM")
        reset_peak()
        self.marks.append(time.perf_counter())

    def started(self) -> None:
        self._phase("setup")

    def stepped(self, loss: float) -> None:
        self.losses.append(loss)
        if len(self.losses) == self.steps:
            self._phase("steps")
        else:
            self.marks.append(time.perf_counter())
        log(f"step {len(self.losses)}: {self.marks[-1] - self.marks[-2]:.2f} s, loss {loss:.4f}")

    def finished(self) -> dict[str, Any]:
        self._phase("end")
        marks = self.marks
        return {
            "setup_seconds": marks[1] - marks[0],
            "step_seconds": [b - a for a, b in zip(marks[1:-2], marks[2:-1], strict=True)],  # the warm-up first
            "end_seconds": marks[-1] - marks[-2],
            "losses": self.losses,
            "rss_start": self.rss_start,
            "peaks": self.peaks,
            "load_average": load_average()[0],
        }


def train_gptkit(paths: dict[str, str], settings: Settings) -> dict[str, Any]:
    """LoRA fine-tuning as a gptkit user runs it: `finetune` on prompt/completion JSONL, instruct task."""
    from safetensors import safe_open

    from gptkit.models.config import LoRAConfig
    from gptkit.tasks.config import TaskConfig
    from gptkit.tasks.finetune import finetune
    from gptkit.training.config import TrainConfig
    from gptkit.training.events import Event, StartEvent, StepEvent

    task = TaskConfig("instruct", paths["train"], paths["eval"], max_length=settings.block, epochs=None)
    config = TrainConfig(
        init_from="pretrained",
        model=paths["folder"],
        out_dir=paths["run"],
        batch_size=settings.batch,
        max_steps=settings.steps + 1,
        lr=settings.lr,
        warmup_steps=0,
        schedule="constant",
        dtype=settings.train_dtype,
        device="cpu",
        eval_interval=0,  # evaluate (one block) and save once, at the end
        progress=False,
        lora=LoRAConfig(r=LORA_R, alpha=LORA_ALPHA, targets=LORA_TARGETS),
        seed=SEED,
    )
    clock = StepClock(settings.steps + 1)

    def on_event(event: Event) -> None:
        if isinstance(event, StartEvent):
            clock.started()
        elif isinstance(event, StepEvent):
            clock.stepped(event.loss)

    finetune(task, config, on_event=on_event)
    result = clock.finished()
    with safe_open(Path(paths["run"]) / "model.safetensors", "pt") as saved:  # the base weights it trained
        row = saved.get_slice(next(iter(saved.keys())))[0:1]
        result["weights_dtype"] = str(row.dtype).removeprefix("torch.")
    with safe_open(Path(paths["run"]) / "adapter_model.safetensors", "pt") as adapter:
        result["trainable_parameters"] = sum(adapter.get_tensor(k).numel() for k in adapter.keys())
    return result


def train_transformers(paths: dict[str, str], settings: Settings) -> dict[str, Any]:
    """The peer: transformers' model in `settings.train_dtype` with peft's LoRA, AdamW in a plain torch loop."""
    import peft
    import torch

    windows = torch.tensor(json.loads(Path(paths["windows"]).read_text()))
    torch.manual_seed(SEED)  # the adapters' initialisation and dropout (gptkit seeds its run with TrainConfig.seed)
    clock = StepClock(settings.steps + 1)
    model = load_model("transformers", paths["folder"], settings.train_dtype)
    lora = peft.LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        target_modules=list(LORA_TARGETS),
        lora_dropout=0.0,
        fan_in_fan_out=True,  # GPT-2's Conv1D holds (in, out)
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(model, lora).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    clock.started()
    for step in range(settings.steps + 1):
        x = windows[step * settings.batch : (step + 1) * settings.batch]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.stepped(loss.item())
    result = clock.finished()
    base = next(p for p in model.parameters() if not p.requires_grad)
    result["weights_dtype"] = str(base.dtype).removeprefix("torch.")
    result["adapter_dtype"] = str(params[0].dtype).removeprefix("torch.")
    result["trainable_parameters"] = sum(p.numel() for p in params)
    return result


def worker(engine: str, paths: dict[str, str], settings: Settings) -> dict[str, Any]:
    """One engine's phases in one process: load and generate, then (that model freed) fine-tune."""
    start_threads(settings.threads)
    import_engine(engine)
    inference = infer(engine, paths["folder"], settings)
    gc.collect()  # the inference model is gone when `infer` returns; this frees any cycles around it too
    training = (train_gptkit if engine == "gptkit" else train_transformers)(paths, settings)
    return {"infer": inference, "train": training}


# -- parent ------------------------------------------------------------------------------------------


def run_worker(engine: str, paths: dict[str, str], settings: Settings) -> dict[str, Any]:
    job = {"engine": engine, "paths": paths, "settings": asdict(settings)}
    log(f"== {engine}")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} worker failed (exit {proc.returncode}); see its stderr above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_data(folder: Path, settings: Settings) -> dict[str, str]:
    """Passages of the Shakespeare text gptkit ships, each at least one block long: prompt/completion JSONL for
    gptkit (an empty prompt: every token of the block is trained) and, for the peer, the same blocks as token ids."""
    from gptkit.text.tokenizer import Tokenizer
    from gptkit.training.quickstart import shakespeare_path

    text = shakespeare_path().read_text(encoding="utf-8")
    chars = 8 * settings.block  # about twice a block of GPT-2 tokens
    passages = [text[i * chars : (i + 1) * chars] for i in range((settings.steps + 1) * settings.batch + 1)]
    tokenizer = Tokenizer.from_pretrained("gpt2")
    windows = [tokenizer.encode(p)[: settings.block] for p in passages]
    if min(map(len, windows)) < settings.block:
        raise SystemExit(f"a passage of {chars} characters has fewer than {settings.block} tokens")
    paths = {name: str(folder / f"{name}.jsonl") for name in ("train", "eval")}
    for name, part in (("train", passages[:-1]), ("eval", passages[-1:])):
        lines = [json.dumps({"prompt": "", "completion": p}) for p in part]
        Path(paths[name]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths["windows"] = str(folder / "windows.json")
    Path(paths["windows"]).write_text(json.dumps(windows[:-1]))
    return paths


def cpu_support() -> dict[str, Any]:
    """What torch's CPU kernels can use here. Without bf16 matrix instructions (gptkit's `cpu_has_fast`: oneDNN's own
    check), torch multiplies bfloat16 matrices in a scalar loop: ~7x slower than float32 in a forward product, ~100x
    in the layout of a backward one."""
    import torch

    from gptkit.models.kernels import cpu_has_fast

    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "fast_bf16": cpu_has_fast(torch.bfloat16)}


def choose_checkpoint_dtype(requested: str, fields: dict[str, Any]) -> tuple[str | None, str]:
    """float32 if memory allows (auto), else bfloat16; None when neither fits. With the reason, in words."""
    available = available_bytes()
    for dtype in ["float32", "bfloat16"] if requested == "auto" else [requested]:
        needed = NEEDED[dtype] * fp32_bytes(fields)
        if available >= needed:
            return dtype, f"{available / GIB:.1f} GiB available, {needed / GIB:.1f} GiB wanted for a {dtype} checkpoint"
    return None, f"{available / GIB:.1f} GiB available, {needed / GIB:.1f} GiB wanted for a {dtype} checkpoint"


def mib(n: float) -> float:
    return round(n / MIB, 1)


def summarize_infer(r: dict[str, Any], settings: Settings) -> dict[str, Any]:
    growth = r["ready_peak"] - r["rss_start"]
    best = min(r["generate_seconds"])
    return {
        "weights_dtype": r["weights_dtype"],
        "model_mib": mib(r["model_bytes"]),
        "load_seconds": round(r["load_seconds"], 2),
        "ready_seconds": round(r["ready_seconds"], 2),
        "load_peak_growth_mib": mib(r["load_peak"] - r["rss_start"]),
        "peak_growth_mib": mib(growth),  # through the load and the pass over the parameters
        "peak_ratio": round(growth / r["model_bytes"], 3),
        "resident_growth_mib": mib(r["resident"] - r["rss_start"]),
        "rss_start_mib": mib(r["rss_start"]),  # the worker after its imports, before the load
        "generate_tokens_per_s": round(settings.new_tokens / best, 2),
        "generate_runs_s": [round(t, 3) for t in r["generate_seconds"]],
        "peak_rss_mib": {"load": mib(r["ready_peak"]), "generate": mib(r["generate_peak"])},
        "load_average_1min": r["load_average"],
    }


def summarize_train(r: dict[str, Any], settings: Settings) -> dict[str, Any]:
    median = statistics.median(r["step_seconds"][1:])
    out = {
        "weights_dtype": r["weights_dtype"],
        "trainable_parameters": r["trainable_parameters"],
        "setup_seconds": round(r["setup_seconds"], 2),
        "median_step_seconds": round(median, 3),
        "warmup_step_seconds": round(r["step_seconds"][0], 3),
        "step_seconds": [round(t, 3) for t in r["step_seconds"][1:]],
        "tokens_per_s": round(settings.batch * settings.block / median, 1),
        "end_seconds": round(r["end_seconds"], 2),
        "losses": [round(x, 4) for x in r["losses"]],
        "rss_start_mib": mib(r["rss_start"]),  # after the inference model was freed: what it left behind shows here
        "peak_rss_mib": {phase: mib(peak) for phase, peak in r["peaks"].items()},
        "load_average_1min": r["load_average"],
    }
    return out | ({"adapter_dtype": r["adapter_dtype"]} if "adapter_dtype" in r else {})


def ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 3)


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """gptkit / transformers for each figure; peaks per phase (train: its highest phase)."""
    peak = {
        "load": ours["infer"]["peak_rss_mib"]["load"] / theirs["infer"]["peak_rss_mib"]["load"],
        "generate": ours["infer"]["peak_rss_mib"]["generate"] / theirs["infer"]["peak_rss_mib"]["generate"],
        "train": max(ours["train"]["peak_rss_mib"].values()) / max(theirs["train"]["peak_rss_mib"].values()),
    }
    return {
        "load_seconds": ratio(ours["infer"]["load_seconds"], theirs["infer"]["load_seconds"]),
        "ready_seconds": ratio(ours["infer"]["ready_seconds"], theirs["infer"]["ready_seconds"]),
        "load_peak_growth": ratio(ours["infer"]["peak_growth_mib"], theirs["infer"]["peak_growth_mib"]),
        "generate_tokens_per_s": ratio(
            ours["infer"]["generate_tokens_per_s"], theirs["infer"]["generate_tokens_per_s"]
        ),
        "lora_median_step_seconds": ratio(ours["train"]["median_step_seconds"], theirs["train"]["median_step_seconds"]),
        "peak_rss": {phase: round(value, 3) for phase, value in peak.items()},
    }


def judge(engines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's memory targets, per engine: every phase's peak, and the load's growth over the model's bytes."""
    met = {}
    for name, result in engines.items():
        peaks = [*result["infer"]["peak_rss_mib"].values(), *result["train"]["peak_rss_mib"].values()]
        met[name] = {
            "highest_peak_rss_gib": round(max(peaks) / 1024, 2),
            "peak_rss": max(peaks) * MIB <= TARGETS["peak_rss_gib_max"] * GIB,
            "load_peak_ratio": result["infer"]["peak_ratio"] <= TARGETS["load_peak_ratio_max"],
        }
    return met


def run(settings: Settings, checkpoint_dtype: str, reason: str) -> dict[str, Any]:
    fields = SHAPES[settings.shape]
    with tempfile.TemporaryDirectory(prefix="bench_xl-") as tmp:
        folder = Path(tmp) / "model"
        log(f"building a random {settings.shape} checkpoint in {checkpoint_dtype} ({reason})")
        start = time.perf_counter()
        file_bytes = make_checkpoint(folder, fields, checkpoint_dtype)
        checkpoint = {
            "shape": settings.shape,
            "config": fields,
            "checkpoint_dtype": checkpoint_dtype,
            "why": reason,
            "file_mib": mib(file_bytes),
            "build_seconds": round(time.perf_counter() - start, 1),
            "parent_rss_mib": mib(proc_status("VmRSS")),
        }
        paths = {"folder": str(folder), "run": str(Path(tmp) / "run"), **write_data(Path(tmp), settings)}
        raw = {engine: run_worker(engine, paths, settings) for engine in ENGINES}
    engines = {
        engine: {
            "infer": summarize_infer(raw[engine]["infer"], settings),
            "train": summarize_train(raw[engine]["train"], settings),
        }
        for engine in ENGINES
    }
    ours, theirs = raw["gptkit"]["infer"]["tokens"], raw["transformers"]["infer"]["tokens"]
    return {
        "checkpoint": checkpoint,
        **engines,
        "greedy": {"gptkit": ours, "transformers": theirs, **agreement([ours], [theirs]), "identical": ours == theirs},
        "ratios_gptkit_over_transformers": compare(engines["gptkit"], engines["transformers"]),
        "targets": TARGETS,
        "met": judge(engines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Settings()
    parser.add_argument("--dtype", choices=DTYPES, help=f"the engines' for loading and generating ({default.dtype})")
    parser.add_argument("--train-dtype", choices=DTYPES, help="for fine-tuning (default: --dtype)")
    parser.add_argument("--checkpoint-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the saved file's (auto: float32 if memory allows, else bfloat16)")  # fmt: skip
    parser.add_argument("--steps", type=int, help=f"timed LoRA steps, after one warm-up step ({default.steps})")
    parser.add_argument("--batch", type=int, help=f"sequences per training step ({default.batch})")
    parser.add_argument("--block", type=int, help=f"tokens per training sequence ({default.block})")
    parser.add_argument("--new-tokens", type=int, help=f"greedy tokens per generation ({default.new_tokens})")
    parser.add_argument("--repeats", type=int, help=f"timed generations, after a warm-up ({default.repeats})")
    parser.add_argument("--threads", type=int, help=f"torch threads in every worker ({default.threads}: the CPUs)")
    parser.add_argument("--quick", action="store_true", help="smoke test: a 2-layer, 64-wide model, smaller sizes")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(worker(job["engine"], job["paths"], Settings(**job["settings"]))))
        return
    names = ("dtype", "train_dtype", "steps", "batch", "block", "new_tokens", "repeats", "threads")
    given = {k: v for k in names if (v := getattr(args, k))}
    settings = replace(QUICK if args.quick else default, **given)
    settings = replace(settings, train_dtype=args.train_dtype or settings.dtype)
    if (
        min(settings.steps, settings.batch, settings.new_tokens, settings.repeats, settings.threads) < 1
        or not 2 <= settings.block <= 1024
    ):
        parser.error("--steps, --batch, --new-tokens, --repeats and --threads must be >= 1, --block in [2, 1024]")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still deletes its temporary folder
    start = RunStart()
    checkpoint_dtype, reason = choose_checkpoint_dtype(args.checkpoint_dtype, SHAPES[settings.shape])
    report: dict[str, Any] = {
        "benchmark": "gpt2-xl lean loading: bf16 load, greedy generation and LoRA fine-tuning, gptkit vs transformers",
        "settings": {
            **asdict(settings),
            "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "targets": LORA_TARGETS},
            "optimizer": {"betas": BETAS, "eps": EPS, "weight_decay": WEIGHT_DECAY, "clip": CLIP},
        },
        "cpu": cpu_support(),
    }
    if checkpoint_dtype is None:
        report["skipped"] = reason
    else:
        report.update(run(settings, checkpoint_dtype, reason))
    report.update(start.closing("torch", "transformers", "gptkit"))
    report["env"]["peft"] = importlib.metadata.version("peft")  # not imported here: that takes seconds
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
