"""Training throughput on CPU, gptkit against Hugging Face transformers, GPT-2 124M; prints one JSON object.

Both engines train GPT-2 124M (GPT2Config() defaults: dropout 0.1, tied head, 1024 positions) on
batches of 4 x 256 tokens with AdamW (lr 6e-4 constant, betas 0.9/0.95, weight decay 0.1), gradients
clipped to norm 1.0, all cores. The data is a seeded, generated text (a bigram chain over made-up words,
so the loss has something to learn) tokenized by `gptkit.training.data.prepare` with the GPT-2 tokenizer; both
engines draw the same windows from it with gptkit's WindowSampler.

* gptkit runs its real training code: `gptkit.training.train.train(TrainConfig(...))` with log_interval=1; the
  per-step `elapsed` of its StepEvents gives the time of the steps after the warm-up.
* transformers runs the loop people write by hand: `GPT2LMHeadModel(GPT2Config())` in train mode with
  its default attention implementation, `model(input_ids=x, labels=x).loss.backward()`, clip,
  `torch.optim.AdamW(model.parameters(), ...)` with torch's defaults, `zero_grad()`.

Each (engine, dtype) runs in its own subprocess so that its peak RSS (sampled right after its last timed
step, before gptkit's end-of-run evaluation and checkpoint) is its own. Cases: fp32 for both, bf16
autocast for both; ratios are against transformers fp32. Targets: gptkit fp32 >= 1.1x, gptkit bf16 >=
1.8x, and (with --loss-check) gptkit bf16's loss after 30 steps within 2% of gptkit fp32's.

    python benchmarks/bench_train.py [--steps 10] [--warmup 3] [--loss-check] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import MIB, cpu_seconds, load_average, machine_info, proc_status, source_state, wait_for_idle

BATCH, BLOCK = 4, 256
LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 6e-4, (0.9, 0.95), 0.1, 1.0
SEED = 1337
LOSS_CHECK_STEPS = 30
TARGETS = {"gptkit_fp32_vs_hf_fp32_min": 1.1, "gptkit_bf16_vs_hf_fp32_min": 1.8, "bf16_loss_gap_max": 0.02}
CASES = (("gptkit", "float32"), ("transformers", "float32"), ("gptkit", "bfloat16"), ("transformers", "bfloat16"))


def log(message: str) -> None:
    print(f"[bench_train] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return proc_status("VmHWM") / MIB


# -- data -----------------------------------------------------------------------------------------


def generated_text(n_chars: int, seed: int) -> str:
    """Made-up words chained by a sparse random bigram table: token statistics a model can learn."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(2000)]
    successors = rng.integers(0, len(words), size=(len(words), 8))  # each word has 8 likely followers
    out, size, word = [], 0, 0
    while size < n_chars:
        sentence = []
        for _ in range(int(rng.integers(5, 16))):
            word = int(successors[word, rng.integers(0, 8)]) if rng.random() < 0.9 else int(rng.integers(0, 2000))
            sentence.append(words[word])
        line = " ".join(sentence).capitalize() + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)


def make_data(root: Path, n_chars: int) -> Path:
    from gptkit.training.data import PrepareConfig, prepare

    text_file = root / "corpus.txt"
    text_file.write_text(generated_text(n_chars, SEED), encoding="utf-8")
    info = prepare(
        PrepareConfig(inputs=(str(text_file),), out_dir=str(root / "data"), tokenizer="gpt2"), progress=False
    )
    log(f"data: {info.train_tokens:,} train / {info.val_tokens:,} val tokens (gpt2 BPE)")
    return root / "data"


# -- workers (one per subprocess) -----------------------------------------------------------------


def run_gptkit(data_dir: str, out_dir: str, dtype: str, warmup: int, total: int) -> dict[str, Any]:
    """gptkit's own loop, `gptkit.training.train.train`; timing from its per-step metrics records."""
    from gptkit.training.config import TrainConfig
    from gptkit.training.events import StepEvent
    from gptkit.training.train import train

    records: list[dict[str, Any]] = []
    rss: dict[str, float] = {}
    cpu: dict[int, float] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, StepEvent):
            records.append({"step": event.step, "loss": event.loss, "elapsed": event.elapsed})
            log(f"gptkit {dtype} step {event.step}/{total} loss {event.loss:.4f} ({event.elapsed:.1f} s)")
            if event.step in (warmup, total):
                cpu[event.step] = cpu_seconds()
            if event.step == total:
                rss["peak"] = peak_rss_mb()  # before the end-of-run evaluation and checkpoint

    config = TrainConfig(
        data=data_dir,
        out_dir=out_dir,
        model="gpt2",
        model_overrides={"n_positions": 1024},
        block_size=BLOCK,
        batch_size=BATCH,
        max_steps=total,
        lr=LR,
        warmup_steps=0,
        schedule="constant",
        weight_decay=WEIGHT_DECAY,
        beta1=BETAS[0],
        beta2=BETAS[1],
        grad_clip=GRAD_CLIP,
        dtype=dtype,
        device="cpu",
        eval_interval=0,
        eval_batches=1,
        log_interval=1,
        sample_tokens=0,
        progress=False,
        seed=SEED,
    )
    train(config, on_event=on_event)
    by_step = {r["step"]: r for r in records}
    times = [by_step[s]["elapsed"] - (by_step[s - 1]["elapsed"] if s > 1 else 0.0) for s in range(1, total + 1)]
    seconds = by_step[total]["elapsed"] - by_step[warmup]["elapsed"]
    losses = [by_step[s]["loss"] for s in range(1, total + 1)]
    return {
        "step_seconds": times,
        "timed_seconds": seconds,
        "losses": losses,
        "timed_cpu_seconds": cpu[total] - cpu[warmup],
        "peak_rss_mb": rss["peak"],
        "path": "gptkit.training.train.train (the real loop; StepEvent elapsed per step)",
    }


def run_transformers(data_dir: str, dtype: str, warmup: int, total: int) -> dict[str, Any]:
    """The hand-written loop most people use with transformers; same windows as gptkit's sampler."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gptkit.training.data import TokenData
    from gptkit.training.train import WindowSampler

    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(GPT2Config()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    sampler = WindowSampler(TokenData.open(data_dir).train, BLOCK, SEED)
    autocast = torch.autocast("cpu", dtype=getattr(torch, dtype), enabled=dtype != "float32")
    times, losses, cpu = [], [], {}
    for step in range(1, total + 1):
        t0 = time.perf_counter()
        if step == warmup + 1:
            cpu["start"] = cpu_seconds()
        x = sampler.draw(BATCH)[:, :-1]  # (B, T): gptkit trains on the same inputs
        with autocast:
            out = model(input_ids=x, labels=x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
        times.append(time.perf_counter() - t0)
        log(f"transformers {dtype} step {step}/{total} loss {losses[-1]:.4f} ({times[-1]:.2f} s)")
    rss, cpu["end"] = peak_rss_mb(), cpu_seconds()
    optimizer_kind = (
        "fused"
        if optimizer.defaults.get("fused")
        else ("foreach" if optimizer.defaults.get("foreach") else "torch default (single-tensor for-loop on CPU)")
    )
    return {
        "step_seconds": times,
        "timed_seconds": sum(times[warmup:]),
        "losses": losses,
        "timed_cpu_seconds": cpu["end"] - cpu["start"],
        "peak_rss_mb": rss,
        "path": "hand-written loop",
        "attn_implementation": model.config._attn_implementation,
        "optimizer": optimizer_kind,
    }


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if args.worker == "gptkit":
        result = run_gptkit(args.data, args.run_dir, args.dtype, args.warmup, args.total)
    else:
        result = run_transformers(args.data, args.dtype, args.warmup, args.total)
    result["threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")


# -- the parent: one subprocess per case ----------------------------------------------------------


def run_case(
    engine: str, dtype: str, data_dir: Path, root: Path, warmup: int, total: int, idle_wait: float
) -> dict[str, Any]:
    result_file = root / f"{engine}-{dtype}.json"
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        engine,
        "--dtype",
        dtype,
        "--data",
        str(data_dir),
        "--run-dir",
        str(root / f"run-{engine}-{dtype}"),
        "--warmup",
        str(warmup),
        "--total",
        str(total),
        "--result",
        str(result_file),
    ]
    waited = wait_for_idle(idle_wait)
    log(f"{engine} {dtype}: {warmup} warm-up + {total - warmup} timed steps (waited {waited:.0f} s for idle CPUs)")
    load_before = load_average()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=sys.stderr, check=False)  # the child's chatter stays off our stdout
    if proc.returncode != 0:
        raise SystemExit(f"{engine} {dtype} failed (exit {proc.returncode})")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    timed = total - warmup
    tokens_per_second = timed * BATCH * BLOCK / result["timed_seconds"]
    median_step = statistics.median(result["step_seconds"][warmup:])
    # Below ~0.9 the machine was shared while timing: other processes took CPU from this one.
    cpu_share = result["timed_cpu_seconds"] / (result["timed_seconds"] * result["threads"])
    return {
        "engine": engine,
        "dtype": dtype,
        "timed_steps": timed,
        "warmup_steps": warmup,
        "tokens_per_second": round(tokens_per_second, 1),
        "seconds_per_step": round(result["timed_seconds"] / timed, 3),
        "tokens_per_second_median_step": round(BATCH * BLOCK / median_step, 1),
        "cpu_share_while_timed": round(cpu_share, 3),
        "load_average_before": round(load_before, 2),
        "waited_for_idle_seconds": round(waited, 1),
        "step_seconds": [round(s, 3) for s in result["step_seconds"]],
        "final_loss": round(result["losses"][-1], 4),
        "peak_rss_mb": round(result["peak_rss_mb"]),
        "subprocess_wall_seconds": round(time.perf_counter() - t0, 1),
        **{k: result[k] for k in ("path", "attn_implementation", "optimizer", "threads") if k in result},
        "_losses": result["losses"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--quick", action="store_true", help="2 timed steps after 1 warm-up (smoke test)")
    parser.add_argument(
        "--loss-check",
        action="store_true",
        help=f"run gptkit's cases for {LOSS_CHECK_STEPS} steps and compare the bf16 and fp32 losses",
    )
    parser.add_argument("--data-chars", type=int, default=1_000_000, help="size of the generated corpus")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=60.0,
        help="before each case, wait up to this many seconds for idle CPUs (0: don't)",
    )
    # internal: one (engine, dtype) measurement in this process
    parser.add_argument("--worker", choices=["gptkit", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.steps, args.warmup = 2, 1
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")

    import torch
    import transformers

    t_start, machine = time.perf_counter(), machine_info()
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        root = Path(tmp)
        data_dir = make_data(root, args.data_chars)
        results = {}
        for engine, dtype in CASES:
            total = args.warmup + args.steps
            if args.loss_check and engine == "gptkit":  # the 30-step run doubles as the timed one
                total = max(total, LOSS_CHECK_STEPS)
            results[engine, dtype] = run_case(engine, dtype, data_dir, root, args.warmup, total, args.idle_wait)

    base = results["transformers", "float32"]["tokens_per_second"]
    ratios = {
        f"{e}_{'fp32' if d == 'float32' else 'bf16'}_vs_hf_fp32": round(r["tokens_per_second"] / base, 3)
        for (e, d), r in results.items()
    }
    base_median = results["transformers", "float32"]["tokens_per_second_median_step"]
    ratios_median = {
        k: round(results[e, d]["tokens_per_second_median_step"] / base_median, 3)
        for k, (e, d) in zip(ratios, results, strict=True)
    }
    report: dict[str, Any] = {
        "benchmark": "training throughput, GPT-2 124M, CPU",
        "setup": {
            "batch": BATCH,
            "block": BLOCK,
            "tokens_per_step": BATCH * BLOCK,
            "lr": LR,
            "betas": BETAS,
            "weight_decay": WEIGHT_DECAY,
            "grad_clip": GRAD_CLIP,
            "dropout": 0.1,
            "seed": SEED,
            "data": f"generated bigram text, {args.data_chars:,} chars, gpt2 BPE",
            "gptkit_path": "gptkit.training.train.train(TrainConfig) - the real loop, not a replica",
        },
        "cases": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results.values()],
        "ratios": ratios,
        "ratios_from_median_step": ratios_median,  # less sensitive to other processes on a shared machine
        "targets": TARGETS,
    }
    meets = {
        "gptkit_fp32": ratios["gptkit_fp32_vs_hf_fp32"] >= TARGETS["gptkit_fp32_vs_hf_fp32_min"],
        "gptkit_bf16": ratios["gptkit_bf16_vs_hf_fp32"] >= TARGETS["gptkit_bf16_vs_hf_fp32_min"],
    }
    if args.loss_check:
        fp32 = results["gptkit", "float32"]["_losses"][LOSS_CHECK_STEPS - 1]
        bf16 = results["gptkit", "bfloat16"]["_losses"][LOSS_CHECK_STEPS - 1]
        gap = abs(bf16 - fp32) / fp32
        report["loss_check"] = {
            "steps": LOSS_CHECK_STEPS,
            "gptkit_fp32_loss": round(fp32, 4),
            "gptkit_bf16_loss": round(bf16, 4),
            "relative_gap": round(gap, 5),
            "first_loss": round(results["gptkit", "float32"]["_losses"][0], 4),
        }
        meets["bf16_loss_gap"] = gap <= TARGETS["bf16_loss_gap_max"]
    report["meets_targets"] = meets
    shared = [f"{r['engine']} {r['dtype']}" for r in results.values() if r["cpu_share_while_timed"] < 0.9]
    if shared:
        report["warning"] = (
            f"other processes took CPU while timing {', '.join(shared)} "
            "(cpu_share_while_timed < 0.9): those figures are low; prefer "
            "ratios_from_median_step or rerun on an idle machine"
        )
    import gptkit

    report["versions"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "gptkit_from": str(Path(gptkit.__file__).parent),
        "source": source_state(),
    }
    report["machine"] = {**machine, "load_average_end": load_average()}
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
