"""What int8 weights do to a trained model: held-out perplexity and greedy agreement, int8 against float32.

Random weights say nothing about quality, so this trains a model first, on the Shakespeare text that ships with
gptkit: by default `gptkit quickstart`'s recipe (characters; nanoGPT's 4 layers x 4 heads x 128 wide, context 64,
2,000 steps: about two minutes on 2 CPU cores); `--tokenizer gpt2` trains the same shape on GPT-2's tokens
(context 128, GPT-2's 50,257-row tied head: the largest int8 matrix). The run is then loaded three ways with
`gptkit.load(run, dtype=...)`: float32, int8 and bfloat16 (for scale), and measured on the held-out 10%:

- perplexity over disjoint windows of 64 tokens, one per forward pass (gptkit.training.evaluate.perplexity,
  stride = window): fewer rows than the 128 from which int8 products use the dequantized weights instead of
  the packed kernel, so every product runs as in decoding. Target: int8 within 2% of float32.
- next-token agreement: where float32's most likely next token is also the int8 model's, over the windows
  (teacher-forced, so one early difference does not decide the rest).
- greedy agreement: `--prompts` prompts (a quarter of the context each, from the held-out text) continued
  greedily to the full context by each model, compared with float32's tokens (bench_generate.agreement).

    python benchmarks/bench_int8_quality.py                     # char-level, 2,000 steps
    python benchmarks/bench_int8_quality.py --steps 200         # a quick look (a weaker model)
    python benchmarks/bench_int8_quality.py --tokenizer gpt2 --steps 300

Prints one JSON object; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_generate import agreement
from machine import RunStart

TARGET = 1.02  # int8 perplexity / float32 perplexity, at most
WINDOW = 64  # tokens per scored window (at most the context)
DTYPES = ("float32", "int8", "bfloat16")
# Changes to the quickstart's recipe per tokenizer: GPT-2 tokens carry more text each, so a longer context.
RECIPES: dict[str, dict[str, Any]] = {"char": {}, "gpt2": {"block_size": 128}}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_model(work: Path, tokenizer: str, steps: int) -> tuple[Path, dict[str, Any]]:
    """Prepare the shipped text with `tokenizer` (90/10 split) and train the recipe for `steps`; the run folder."""
    from gptkit.training.config import TrainConfig
    from gptkit.training.data import PrepareConfig, prepare
    from gptkit.training.quickstart import RECIPE, quick_dtype, shakespeare_path
    from gptkit.training.train import train

    data = work / "data"
    prepare(PrepareConfig(inputs=(shakespeare_path(),), out_dir=data, tokenizer=tokenizer), progress=False)
    recipe = {**RECIPE, **RECIPES[tokenizer], "max_steps": steps, "eval_interval": 0, "sample_tokens": 0}
    recipe["warmup_steps"] = min(recipe["warmup_steps"], steps // 2)
    config = TrainConfig(data=str(data), out_dir=str(work / "run"), dtype=quick_dtype(), progress=False, **recipe)
    log(f"training {steps} steps ({tokenizer}, {config.dtype} autocast)")
    result = train(config)
    summary = {
        "steps": result.step,
        "seconds": round(result.seconds, 1),
        "val_loss": None if result.val_loss is None else round(result.val_loss, 4),
        "autocast": config.dtype,
        "recipe": {k: v for k, v in recipe.items() if k not in ("eval_interval", "sample_tokens")},
    }
    return result.run_dir, summary


@torch.inference_mode()
def top_tokens(model: Any, ids: torch.Tensor, window: int) -> torch.Tensor:
    """The model's most likely next token at every position of the disjoint `window`-token windows of ids."""
    windows = ids[: len(ids) // window * window].view(-1, window)  # (W, T)
    return torch.cat([model(window[None]).logits[0].argmax(-1) for window in windows])  # (W * T,)


def greedy_tokens(model: Any, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    from gptkit.generation.generate import generate
    from gptkit.generation.sampling import SamplingParams

    params = SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True)
    return [c.token_ids for c in generate(model, prompts, params)]


def measure(run_dir: Path, n_prompts: int) -> dict[str, Any]:
    import gptkit
    from gptkit.training.data import TokenData
    from gptkit.training.evaluate import perplexity

    val = torch.as_tensor(TokenData.open(run_dir.parent / "data").val.astype("int64"))
    models = {dtype: gptkit.load(run_dir, dtype=dtype).model for dtype in DTYPES}
    context = models["float32"].config.n_positions
    window, prompt_len = min(WINDOW, context), context // 4
    offsets = [i * (len(val) - prompt_len) // n_prompts for i in range(n_prompts)]
    prompts = [val[o : o + prompt_len].tolist() for o in offsets]
    out: dict[str, Any] = {
        "held_out_tokens": len(val),
        "context": context,
        "window": window,
        "prompt_tokens": prompt_len,
    }
    reference: dict[str, Any] = {}
    for dtype, model in models.items():  # float32 first: the reference
        start = time.perf_counter()
        result = perplexity(model, val, max_length=window, stride=window)
        top, tokens = top_tokens(model, val, window), greedy_tokens(model, prompts, context - prompt_len)
        entry: dict[str, Any] = {"perplexity": round(result.perplexity, 4), "nll": round(result.nll, 5)}
        if not reference:
            reference = {"perplexity": result.perplexity, "top": top, "tokens": tokens}
        else:
            entry["perplexity_ratio"] = round(result.perplexity / reference["perplexity"], 4)
            entry["next_token_agreement"] = round(float((top == reference["top"]).float().mean()), 4)
            entry["greedy"] = agreement(tokens, reference["tokens"])
        entry["seconds"] = round(time.perf_counter() - start, 1)
        log(f"{dtype}: {entry}")
        out[dtype] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", choices=sorted(RECIPES), default="char", help="char (the quickstart) or gpt2")
    parser.add_argument("--steps", type=int, default=2000, help="training steps (the recipe's 2,000 by default)")
    parser.add_argument("--prompts", type=int, default=16, help="held-out prompts for the greedy comparison")
    args = parser.parse_args()
    if args.steps < 1 or args.prompts < 1:
        parser.error("--steps and --prompts must be >= 1")
    start = RunStart()
    with tempfile.TemporaryDirectory(prefix="bench_int8_quality_") as work:
        run_dir, training = train_model(Path(work), args.tokenizer, args.steps)
        results = measure(run_dir, args.prompts)
    ratio = results["int8"]["perplexity_ratio"]
    report = {
        "benchmark": "int8_quality",
        "model": f"{args.tokenizer}-level GPT trained here on the shipped Shakespeare text",
        "training": training,
        "held_out": results,
        "targets": {"int8_perplexity_ratio": {"value": ratio, "max": TARGET, "met": ratio <= TARGET}},
        **start.closing("torch", "gptkit"),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
