"""nanoGPT's CPU recipe for Shakespeare characters, trained by nanoGPT and by gptkit in the same run; prints JSON.

Recipe (nanoGPT README, CPU): n_layer 4, n_head 4, n_embd 128, block 64, batch 12, 2000 iterations, lr 1e-3
decaying to 1e-4 (cosine), warmup 100, beta2 0.99, dropout 0, 90/10 split, evaluation every 250 steps on 20
batches of each split. nanoGPT runs from the unmodified copy in ../shared/peers/nanoGPT (its own train.py, as
its README gives the command for a laptop: fp32, no compile); gptkit runs `gptkit.training.train.train` with the
same recipe, from the same text. gptkit's model keeps GPT-2's biases (nanoGPT's recipe drops them) so its run
directory loads in transformers.

Each run is a whole process, timed from start to exit by this script (imports, model, training, evaluations,
checkpoints); per-step times come from each engine's own step timing (nanoGPT's `iter N: ... time` lines,
gptkit's StepEvents). The engines alternate: round 1 runs nanoGPT then gptkit, round 2 the other way round,
and so on, so that other load on a shared machine falls on both alike. Ratios are gptkit / nanoGPT per round;
the report gives their median. Without ../shared (or with --no-peer) gptkit runs alone.

    python benchmarks/bench_shakespeare.py [--rounds 2] [--dtype float32|bfloat16] [--compile] [--no-peer]
    python benchmarks/bench_shakespeare.py --max-iters 50      # quick check that both engines run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from machine import SHARED, load_average, machine_info, source_state

NANOGPT = SHARED / "peers" / "nanoGPT"
RECIPE_STEPS = 2000
# issue 15: gptkit's time <= 0.8x nanoGPT's in fp32 and <= 0.6x with bf16 autocast; judged on full-length runs only
TIME_RATIO_MAX = {"float32": 0.8, "bfloat16": 0.6}
VAL_LOSS_MAX = 1.90
NANOGPT_STEP = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms")
NANOGPT_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def log(message: str) -> None:
    print(f"[bench_shakespeare] {message}", file=sys.stderr, flush=True)


def schedule(steps: int) -> dict[str, int]:
    """The recipe's step counts for a run of `steps`: evaluation every 250 steps where that divides the run
    (else once, at its end), warmup 100 steps (at most half the run), decay over the run."""
    return {"steps": steps, "eval_interval": 250 if steps % 250 == 0 else steps, "warmup": min(100, steps // 2)}


# -- gptkit: a worker process of this script --------------------------------------------------------


def gptkit_worker(args: argparse.Namespace) -> None:
    import torch

    from gptkit.training.config import TrainConfig
    from gptkit.training.events import StepEvent
    from gptkit.training.quickstart import RECIPE
    from gptkit.training.train import train

    plan = schedule(args.steps)
    elapsed: list[float] = []

    def on_event(event: Any) -> None:
        if isinstance(event, StepEvent):
            elapsed.append(event.elapsed)

    recipe = {
        **RECIPE,
        "max_steps": plan["steps"],
        "decay_steps": plan["steps"],
        "warmup_steps": plan["warmup"],
        "eval_interval": plan["eval_interval"],
        "sample_tokens": 0,
    }
    config = TrainConfig(
        data=args.data, out_dir=args.out, progress=False, dtype=args.dtype, compile=args.compile, **recipe
    )
    result = train(config, on_event=on_event)
    report = {
        "val_loss": result.val_loss,
        "steps": result.step,
        "step_seconds": [b - a for a, b in pairwise([0.0, *elapsed])],
        "threads": torch.get_num_threads(),
    }
    Path(args.result).write_text(json.dumps(report), encoding="utf-8")


# -- the parent: prepare both, alternate the engines --------------------------------------------------


def prepare_gptkit(text: Path, root: Path) -> tuple[Path, float]:
    from gptkit.training.data import PrepareConfig, prepare

    start = time.perf_counter()
    config = PrepareConfig(inputs=(str(text),), out_dir=str(root / "gptkit-data"), tokenizer="char", val_fraction=0.1)
    prepare(config, progress=False)
    return root / "gptkit-data", time.perf_counter() - start


def prepare_nanogpt(text: Path, root: Path) -> tuple[Path, float]:
    """A copy of nanoGPT with the text as its input.txt, prepared by its own prepare.py (no download)."""
    start = time.perf_counter()
    copy = root / "nanoGPT"
    shutil.copytree(NANOGPT, copy)
    data = copy / "data" / "shakespeare_char"
    shutil.copyfile(text, data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, stdout=sys.stderr, check=True)
    return copy, time.perf_counter() - start


def run_process(name: str, cmd: list[str], cwd: Path | None, env: dict[str, str]) -> tuple[str, float]:
    """Run one engine's whole process; its stdout (the parent reads it) and the wall seconds start to exit."""
    load = os.getloadavg()[0]
    log(f"{name}: starting (load {load:.2f})")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout)
        raise SystemExit(f"{name} failed (exit {proc.returncode})")
    log(f"{name}: {seconds:.1f} s")
    return proc.stdout, seconds


def run_nanogpt(copy: Path, out: Path, steps: int, env: dict[str, str]) -> dict[str, Any]:
    plan = schedule(steps)
    cmd = [
        sys.executable,
        "train.py",
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",  # every iteration's time; printing a line costs nothing next to a step
        "--block_size=64",
        "--batch_size=12",
        "--n_layer=4",
        "--n_head=4",
        "--n_embd=128",
        f"--max_iters={plan['steps']}",
        f"--lr_decay_iters={plan['steps']}",
        f"--warmup_iters={plan['warmup']}",
        f"--eval_interval={plan['eval_interval']}",
        "--dropout=0.0",
        f"--out_dir={out}",
    ]
    stdout, seconds = run_process("nanoGPT", cmd, copy, env)
    steps_ms = {int(m[1]): float(m[2]) for m in map(NANOGPT_STEP.match, stdout.splitlines()) if m}
    evals = [(int(m[1]), float(m[3])) for m in map(NANOGPT_EVAL.match, stdout.splitlines()) if m]
    if not evals or evals[-1][0] != plan["steps"]:
        raise SystemExit(f"nanoGPT printed no evaluation at step {plan['steps']}; its output:\n{stdout[-2000:]}")
    # nanoGPT's iteration i is step i + 1, timed as gptkit's steps 2..N are (each holds the evaluation
    # before it, if any). Its loop trains one iteration past the final evaluation; the wall time includes it.
    step_seconds = [steps_ms[i] / 1000 for i in sorted(steps_ms) if 0 < i < plan["steps"]]
    return summary(seconds, evals[-1][1], step_seconds, load_average()[0])


def run_gptkit(args: argparse.Namespace, data: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    result = out.with_suffix(".json")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--data", str(data), "--out", str(out)]
    cmd += ["--result", str(result), "--max-iters", str(args.steps), "--dtype", args.dtype]
    cmd += ["--compile"] if args.compile else []
    _, seconds = run_process("gptkit", cmd, None, env)
    run = json.loads(result.read_text(encoding="utf-8"))
    return {**summary(seconds, run["val_loss"], run["step_seconds"][1:], load_average()[0]), "threads": run["threads"]}


def summary(wall: float, val_loss: float, step_seconds: list[float], load: float) -> dict[str, Any]:
    return {
        "wall_seconds": round(wall, 2),
        "val_loss": round(val_loss, 4),
        "median_step_ms": round(1000 * statistics.median(step_seconds), 3),
        "steps_timed": len(step_seconds),
        "load_average_after": load,
    }


def engine_totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "val_loss": [r["val_loss"] for r in runs],
        "wall_seconds": [r["wall_seconds"] for r in runs],
        "median_wall_seconds": round(statistics.median(r["wall_seconds"] for r in runs), 2),
        "median_step_ms": round(statistics.median(r["median_step_ms"] for r in runs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="runs per engine, the order swapped each round")
    parser.add_argument("--max-iters", "--max-steps", dest="steps", type=int, default=RECIPE_STEPS)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="gptkit's autocast")
    parser.add_argument("--compile", action="store_true", help="gptkit with torch.compile")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP_NUM_THREADS for both")
    parser.add_argument("--no-peer", action="store_true", help="run gptkit alone")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--data", "--out", "--result"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        gptkit_worker(args)
        return
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --max-iters must be >= 1")

    import torch

    from gptkit.training.quickstart import shakespeare_path

    text = shakespeare_path()
    peer_note = None
    if args.no_peer:
        peer_note = "--no-peer"
    elif not (NANOGPT / "train.py").is_file():
        peer_note = f"{NANOGPT} is absent: nanoGPT not run"
    report: dict[str, Any] = {
        "benchmark": "shakespeare-char, nanoGPT CPU recipe, nanoGPT and gptkit in the same run",
        "recipe": {**schedule(args.steps), "full_length": args.steps == RECIPE_STEPS},
        "text_sha256": hashlib.sha256(text.read_bytes()).hexdigest(),
        "gptkit_dtype": args.dtype,
        "nanogpt_dtype": "float32 (nanoGPT trains on CPU without autocast)",
        "compile": args.compile,
        "threads": args.threads,
        "machine": machine_info(),
        "source": source_state(),
        "torch": torch.__version__,
    }
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="bench_shakespeare-") as tmp:
        root = Path(tmp)
        data, prepare_seconds = prepare_gptkit(text, root)
        report["prepare_seconds"] = {"gptkit": round(prepare_seconds, 2)}
        if peer_note is None:
            copy, seconds = prepare_nanogpt(text, root)
            report["prepare_seconds"]["nanogpt"] = round(seconds, 2)
        rounds = []
        for i in range(args.rounds):
            order = ["gptkit"] if peer_note else (["nanogpt", "gptkit"] if i % 2 == 0 else ["gptkit", "nanogpt"])
            log(f"round {i + 1}/{args.rounds}: {' then '.join(order)}")
            runs: dict[str, Any] = {}
            for engine in order:
                if engine == "gptkit":
                    runs[engine] = run_gptkit(args, data, root / f"gptkit-{i}", env)
                else:
                    runs[engine] = run_nanogpt(copy, root / f"nanogpt-{i}", args.steps, env)
            if peer_note is None:
                runs["time_ratio"] = round(runs["gptkit"]["wall_seconds"] / runs["nanogpt"]["wall_seconds"], 3)
                runs["step_time_ratio"] = round(runs["gptkit"]["median_step_ms"] / runs["nanogpt"]["median_step_ms"], 3)
            rounds.append({"order": order, **runs})

    report["rounds"] = rounds
    report["gptkit"] = engine_totals([r["gptkit"] for r in rounds])
    if peer_note is not None:
        report["nanogpt"] = {"skipped": peer_note}
    else:
        report["nanogpt"] = engine_totals([r["nanogpt"] for r in rounds])
        report["time_ratio_vs_nanogpt"] = round(statistics.median(r["time_ratio"] for r in rounds), 3)
        report["step_time_ratio_vs_nanogpt"] = round(statistics.median(r["step_time_ratio"] for r in rounds), 3)
    targets = {"val_loss_max": VAL_LOSS_MAX, "time_ratio_max": TIME_RATIO_MAX[args.dtype]}
    report["targets"] = targets
    if peer_note is None and args.steps == RECIPE_STEPS:
        report["meets_targets"] = {
            "val_loss": max(report["gptkit"]["val_loss"]) <= targets["val_loss_max"],
            "time_ratio": report["time_ratio_vs_nanogpt"] <= targets["time_ratio_max"],
        }
    else:
        report["meets_targets"] = None  # a shortened run, or no peer: nothing to judge
    report["load_average_end"] = load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
