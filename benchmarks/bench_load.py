"""Loading a checkpoint: peak memory and time, gptkit against transformers on GPT-2 124M (random weights).

One random `GPT2LMHeadModel` is created (seeded) and saved with `save_pretrained`; each engine loads that
folder in its own fresh process, `--repeats` times, the engines in turns (order swapped each round). The
file is read once beforehand, so every load reads it from the page cache. Prints one JSON object.

    python benchmarks/bench_load.py [--repeats 3] [--dtype float32|bfloat16]
    python benchmarks/bench_load.py --xl          # also a gpt2-xl-shaped checkpoint (6.2 GB fp32; deleted after)

In a worker, after importing the engine (transformers' GPT-2 classes included) and starting torch's threads:
the peak RSS counter is reset (`echo 5 > /proc/self/clear_refs`), the model is loaded (`load_seconds`,
`load_peak_growth_mib`), then every parameter is read once (`ready_seconds` counts load + that pass,
`peak_growth_mib` the peak through both, `resident_growth_mib` what stays). transformers memory-maps the
file, so its load returns before the weights are read: they are paged in on first use, which the pass over
the parameters does, as the first forward pass would. gptkit reads every tensor into its own memory during
the load. `peak_ratio` = peak_growth / model bytes (distinct parameters).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import MIB, load_average, machine_info, proc_status, reset_peak, source_state

SEED = 0
ENGINES = ("gptkit", "transformers")
SHAPES = {"gpt2": {}, "gpt2-xl": {"n_embd": 1600, "n_layer": 48, "n_head": 25}}  # transformers.GPT2Config fields
TARGETS = {"gptkit_peak_ratio_max": 1.2, "time_ratio_max": 1.0}  # time: gptkit / transformers, load_seconds


def log(message: str) -> None:
    print(f"[bench_load] {message}", file=sys.stderr, flush=True)


# -- worker: one load in a fresh process -----------------------------------------------------------


def worker(engine: str, folder: str, dtype_name: str) -> dict[str, Any]:
    import torch

    dtype = getattr(torch, dtype_name)
    torch.set_num_threads(os.cpu_count() or 1)
    torch.ones(4, 64) @ torch.ones(64, 64)  # start the thread pool before the baseline
    if engine == "gptkit":
        from gptkit.models.gpt import load_model

        def load() -> torch.nn.Module:
            return load_model(folder, dtype=dtype)
    else:
        import transformers
        from transformers import GPT2LMHeadModel  # the lazy module import happens here, not in the load

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

        def load() -> torch.nn.Module:
            return GPT2LMHeadModel.from_pretrained(folder, dtype=dtype)

    model, t = timed_load(load)
    return {
        "load_seconds": t["load_seconds"],
        "ready_seconds": t["ready_seconds"],
        "load_peak_growth": t["load_peak"] - t["rss_start"],
        "peak_growth": t["ready_peak"] - t["rss_start"],
        "resident_growth": t["resident"] - t["rss_start"],
        "model_bytes": sum(p.nbytes for p in model.parameters()),  # distinct parameters: a tied head once
    }


def timed_load(load: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run `load`, then one pass reading every parameter (a memory-mapped model pages its weights in there); the
    model and the times (load_seconds, ready_seconds: through the pass) and absolute RSS figures in bytes (rss_start,
    load_peak, ready_peak: VmHWM reset at the start, resident: after the pass)."""
    import torch

    rss_start = proc_status("VmRSS")
    reset_peak()
    start = time.perf_counter()
    model = load()
    load_seconds = time.perf_counter() - start
    load_peak = proc_status("VmHWM")
    with torch.inference_mode():
        for p in model.parameters():
            p.sum()
    ready_seconds = time.perf_counter() - start
    return model, {
        "load_seconds": load_seconds,
        "ready_seconds": ready_seconds,
        "rss_start": rss_start,
        "load_peak": load_peak,
        "ready_peak": proc_status("VmHWM"),
        "resident": proc_status("VmRSS"),
    }


# -- parent ------------------------------------------------------------------------------------------


def make_checkpoint(folder: Path, fields: dict[str, Any], dtype: str = "float32") -> int:
    """A seeded random GPT-2 with these `transformers.GPT2Config` fields, saved by transformers with its weights in
    `dtype`; returns the weight file's size. Weights and biases are drawn from N(0, 0.02) and LayerNorm gains are 1
    (as transformers initialises them), so hidden states keep their scale and the logits are not all ties."""
    import torch
    import transformers

    torch.manual_seed(SEED)
    with torch.device("meta"):  # then random values written tensor by tensor: no second copy
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**fields)).to(getattr(torch, dtype))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith(".weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model.tie_weights()
    model.save_pretrained(folder)
    size = (folder / "model.safetensors").stat().st_size
    del model
    with open(folder / "model.safetensors", "rb") as f:  # into the page cache: every load reads from memory
        while f.read(64 * MIB):
            pass
    return size


def fp32_bytes(fields: dict[str, Any]) -> int:
    """A GPT-2 of these GPT2Config fields in float32, roughly (biases and LayerNorms aside)."""
    n_embd, n_layer = fields.get("n_embd", 768), fields.get("n_layer", 12)
    return 4 * (50257 * n_embd + 1024 * n_embd + n_layer * 12 * n_embd * n_embd)


def run_worker(engine: str, folder: Path, dtype: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--folder", str(folder), "--dtype", dtype]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} worker failed (exit {proc.returncode}); see its stderr above")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"{engine}: load {result['load_seconds']:.2f} s, peak +{result['peak_growth'] / MIB:.0f} MiB")
    return {**result, "load_average": load_average()[0]}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    model_bytes = runs[0]["model_bytes"]
    return {
        "load_seconds": round(median("load_seconds"), 3),
        "ready_seconds": round(median("ready_seconds"), 3),
        "load_runs_s": [round(r["load_seconds"], 3) for r in runs],
        "model_mib": round(model_bytes / MIB, 1),
        "load_peak_growth_mib": round(median("load_peak_growth") / MIB, 1),
        "peak_growth_mib": round(median("peak_growth") / MIB, 1),
        "resident_growth_mib": round(median("resident_growth") / MIB, 1),
        "peak_ratio": round(median("peak_growth") / model_bytes, 3),
        "load_average_1min": [r["load_average"] for r in runs],
    }


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def run_shape(shape: str, dtype: str, repeats: int) -> dict[str, Any]:
    needed = 2.5 * fp32_bytes(SHAPES[shape])  # the parent's copy while saving, the file in the page cache, one model
    if available_bytes() < needed:
        return {"skipped": f"{available_bytes() / 2**30:.1f} GiB of memory available, {needed / 2**30:.0f} needed"}
    with tempfile.TemporaryDirectory(prefix="bench_load-") as tmp:
        folder = Path(tmp)
        log(f"creating a random {shape} checkpoint")
        file_bytes = make_checkpoint(folder, SHAPES[shape])
        runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
        for i in range(repeats):
            for engine in ENGINES if i % 2 == 0 else ENGINES[::-1]:
                runs[engine].append(run_worker(engine, folder, dtype))
    ours, theirs = summarize(runs["gptkit"]), summarize(runs["transformers"])
    return {
        "file_mib": round(file_bytes / MIB, 1),
        "gptkit": ours,
        "transformers": theirs,
        "time_ratio": round(ours["load_seconds"] / theirs["load_seconds"], 3),
        "ready_time_ratio": round(ours["ready_seconds"] / theirs["ready_seconds"], 3),
        "met": {
            "peak": ours["peak_ratio"] <= TARGETS["gptkit_peak_ratio_max"],
            "time": ours["load_seconds"] / theirs["load_seconds"] <= TARGETS["time_ratio_max"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="loads per engine, in turns; medians reported")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the loaded model's")
    parser.add_argument("--xl", action="store_true", help="also a gpt2-xl-shaped checkpoint (needs ~16 GiB of memory)")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.dtype)))
        return
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    import torch
    import transformers

    report: dict[str, Any] = {
        "benchmark": "checkpoint loading, gptkit.models.gpt.load_model vs transformers from_pretrained",
        "settings": {"dtype": args.dtype, "repeats": args.repeats, "seed": SEED, "file": "model.safetensors, fp32"},
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "source": source_state()},
        "targets": TARGETS,
        "shapes": {},
    }
    for shape in ["gpt2", "gpt2-xl"] if args.xl else ["gpt2"]:
        report["shapes"][shape] = run_shape(shape, args.dtype, args.repeats)
    report["machine"]["load_average_end"] = load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
