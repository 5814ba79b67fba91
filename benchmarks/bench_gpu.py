"""On a GPU: GPT-2 124M training MFU and batch-1 decoding against transformers, in one run; prints one JSON object.

Issue 15's GPU targets (measured only when a session is lent a device; `benchmarks/gpu.sh` runs this and the tests
marked `gpu`):

* training: gptkit's real loop (`gptkit.training.train.train`) on GPT-2 124M, bf16 autocast, `torch.compile`,
  SDPA attention (flash on CUDA), batches of `--batch` x 1024 tokens of a generated corpus (bench_train's). MFU is
  model FLOPs per second over the device's peak: 6 N per token for the weights plus 12 L T d for attention
  (nanoGPT's and PaLM's estimate), against both the vendor's bf16 dense peak (a table of known devices) and the
  peak this run measures with one large bf16 matrix product. Target: >= 50% of the vendor's peak.
* decoding: batch 1, greedy, `--new-tokens` tokens after a 16-token prompt, bf16 weights, the same random GPT-2
  in gptkit (`generate`) and transformers (`GPT2LMHeadModel.generate`, eager attention, its dynamic cache).
  Tokens per second, the ratio, and greedy agreement. Target: >= 5x transformers eager.

`--smoke` runs the same code on the CPU with a tiny model, a few steps and float32, so that the script cannot rot
(tests/test_gpu.py runs it in CI); its figures mean nothing.

    python benchmarks/bench_gpu.py                 # on a CUDA device
    python benchmarks/bench_gpu.py --smoke         # anywhere, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_train import make_data
from machine import ROOT, load_average, machine_info, source_state

sys.path.insert(0, str(ROOT / "src"))

SEED = 1337
PROMPT_TOKENS = 16
VENDOR_BF16_PEAK = {  # dense bf16 FLOP/s, from the vendors' data sheets (no sparsity)
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
}
TARGETS = {"training_mfu_min": 0.5, "decode_vs_transformers_min": 5.0}


def log(message: str) -> None:
    print(f"[bench_gpu] {message}", file=sys.stderr, flush=True)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def vendor_peak(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in VENDOR_BF16_PEAK.items() if key in name), None)


def measured_peak(device: str, size: int, dtype: str) -> float:
    """FLOP/s of one size x size x size matrix product, best of 5 after a warm-up."""
    import torch

    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    a @ b
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def flops_per_token(config: Any, parameters: int, block: int) -> float:
    """Training FLOPs per token: 6 N for the weights, 12 L T d for attention (nanoGPT's estimate_mfu)."""
    return 6 * parameters + 12 * config.n_layer * block * config.n_embd


# -- training -------------------------------------------------------------------------------------


def training(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from gptkit.models.config import GPTConfig
    from gptkit.models.gpt import GPT
    from gptkit.training.config import TrainConfig
    from gptkit.training.events import StepEvent
    from gptkit.training.train import train

    overrides = {"n_positions": args.block}
    config = GPTConfig.from_name(args.preset, **overrides)
    parameters = GPT(config).num_parameters()
    data = make_data(root, args.corpus_chars)
    elapsed: dict[int, float] = {}
    losses: dict[int, float] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, StepEvent):
            elapsed[event.step], losses[event.step] = event.elapsed, event.loss

    total = args.warmup + args.steps
    train(
        TrainConfig(
            data=str(data),
            out_dir=str(root / "run"),
            model=args.preset,
            model_overrides=overrides,
            block_size=args.block,
            batch_size=args.batch,
            max_steps=total,
            lr=6e-4,
            warmup_steps=0,
            schedule="constant",
            dtype=args.train_dtype,
            compile=args.compile,
            device=args.device,
            eval_interval=0,
            eval_batches=1,
            log_interval=1,
            sample_tokens=0,
            progress=False,
            seed=SEED,
        ),
        on_event=on_event,
    )
    seconds = elapsed[total] - elapsed[args.warmup]
    tokens_per_second = args.steps * args.batch * args.block / seconds
    achieved = tokens_per_second * flops_per_token(config, parameters, args.block)
    peak, measured = vendor_peak(args.device), measured_peak(args.device, args.matmul_size, args.train_dtype)
    log(f"training: {tokens_per_second:,.0f} tokens/s, {achieved / 1e12:.1f} TFLOP/s")
    return {
        "preset": args.preset,
        "parameters": parameters,
        "batch": args.batch,
        "block": args.block,
        "dtype": args.train_dtype,
        "compile": args.compile,
        "timed_steps": args.steps,
        "tokens_per_second": round(tokens_per_second, 1),
        "model_tflops_per_second": round(achieved / 1e12, 3),
        "vendor_peak_tflops": None if peak is None else peak / 1e12,
        "mfu_vs_vendor_peak": None if peak is None else round(achieved / peak, 4),
        "measured_matmul_tflops": round(measured / 1e12, 3),
        "mfu_vs_measured_matmul": round(achieved / measured, 4),
        "final_loss": round(losses[total], 4),
    }


# -- decoding -------------------------------------------------------------------------------------


def decoding(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    import torch
    import transformers

    from gptkit.generation.generate import generate
    from gptkit.generation.sampling import SamplingParams
    from gptkit.models.config import GPTConfig
    from gptkit.models.gpt import GPT, load_model

    torch.manual_seed(SEED)
    folder = root / "model"
    GPT(GPTConfig.from_name(args.preset)).save_pretrained(folder)
    dtype = getattr(torch, args.decode_dtype)
    prompt = torch.randint(0, 50257, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(SEED))
    ours = load_model(folder, dtype=dtype, device=args.device).eval()
    transformers.logging.set_verbosity_error()
    theirs = transformers.GPT2LMHeadModel.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    theirs = theirs.to(args.device).eval()
    params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens, ignore_eos=True)

    def run_ours() -> list[int]:
        return generate(ours, prompt.tolist(), params)[0].token_ids

    def run_theirs() -> list[int]:
        ids = prompt.to(args.device)
        out = theirs.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            pad_token_id=theirs.config.eos_token_id,
        )
        return out[0, PROMPT_TOKENS:].tolist()

    results: dict[str, Any] = {}
    tokens: dict[str, list[int]] = {}
    for name, run in (("gptkit", run_ours), ("transformers", run_theirs)):
        with torch.inference_mode():
            run()  # warm-up: kernels, allocator, caches
            best = float("inf")
            for _ in range(args.repeats):
                synchronize(args.device)
                start = time.perf_counter()
                tokens[name] = run()
                synchronize(args.device)
                best = min(best, time.perf_counter() - start)
        results[name] = {"tokens_per_second": round(args.new_tokens / best, 1), "seconds": round(best, 4)}
        log(f"decoding {name}: {results[name]['tokens_per_second']} tokens/s")
    same = sum(a == b for a, b in zip(tokens["gptkit"], tokens["transformers"], strict=True))
    return {
        "preset": args.preset,
        "dtype": args.decode_dtype,
        "new_tokens": args.new_tokens,
        "prompt_tokens": PROMPT_TOKENS,
        **results,
        "gptkit_vs_transformers": round(
            results["gptkit"]["tokens_per_second"] / results["transformers"]["tokens_per_second"], 3
        ),
        "greedy_agreement": round(same / args.new_tokens, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the device to measure (default cuda)")
    parser.add_argument("--smoke", action="store_true", help="CPU, a tiny model, a few steps, float32: the script runs")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps first (compilation happens here)")
    parser.add_argument("--batch", type=int, default=16, help="training sequences per step")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens each decoding run generates")
    parser.add_argument("--repeats", type=int, default=3, help="timed decoding runs per engine (best reported)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="train without torch.compile")
    args = parser.parse_args()
    args.preset, args.block, args.train_dtype, args.decode_dtype = "gpt2", 1024, "bfloat16", "bfloat16"
    args.corpus_chars, args.matmul_size = 8_000_000, 8192
    if args.smoke:  # the code paths, not the figures
        args.device, args.preset, args.block, args.compile = "cpu", "gpt2-tiny", 64, False
        args.train_dtype = args.decode_dtype = "float32"
        args.steps, args.warmup, args.batch = min(args.steps, 2), min(args.warmup, 1), min(args.batch, 2)
        args.new_tokens, args.repeats, args.corpus_chars, args.matmul_size = 8, 1, 200_000, 256
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}, but this torch ({torch.__version__}) sees no CUDA device; try --smoke")
    report: dict[str, Any] = {
        "benchmark": "GPU: GPT-2 training MFU and batch-1 decoding against transformers eager",
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "source": source_state()},
        "targets": TARGETS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["training"] = training(args, Path(tmp))
        report["decoding"] = decoding(args, Path(tmp))
    mfu = report["training"]["mfu_vs_vendor_peak"]
    report["met"] = {
        "training_mfu": None if mfu is None else mfu >= TARGETS["training_mfu_min"],
        "decode_vs_transformers": report["decoding"]["gptkit_vs_transformers"] >= TARGETS["decode_vs_transformers_min"],
    }
    report["machine"]["load_average_end"] = load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
