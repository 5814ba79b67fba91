"""`gptkit quickstart`: the built-in default. A character-level GPT trained on Shakespeare in minutes on a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gptkit.training.config import QUICKSTART_DIR, TrainConfig
from gptkit.training.train import TrainResult, train

# nanoGPT's CPU recipe for Shakespeare characters (4 layers, 4 heads, 128 wide, context 64, batch 12,
# lr 1e-3 -> 1e-4 over 2000 steps, warmup 100, beta2 0.99, no dropout).
RECIPE = dict(
    init_from="scratch",
    model="gpt2-tiny",
    model_overrides={"n_layer": 4, "n_head": 4, "n_embd": 128},
    block_size=64,
    batch_size=12,
    max_steps=2000,
    lr=1e-3,
    min_lr=1e-4,
    warmup_steps=100,
    beta2=0.99,
    dropout=0.0,
    eval_interval=250,
    eval_batches=20,
    sample_tokens=200,
)


@dataclass(frozen=True)
class QuickstartResult:
    run_dir: Path
    train: TrainResult
    samples: list[str]


def quick_dtype() -> str:
    """bfloat16 autocast where the CPU multiplies bf16 natively (AVX512-BF16 or AMX): the same validation loss
    as float32 on this recipe (1.8858 vs 1.8856) in 45 s instead of 78 s (benchmarks/bench_shakespeare.py);
    elsewhere bf16 is emulated and slower, so float32."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "float32"
    return "bfloat16" if " avx512_bf16" in flags or " amx_bf16" in flags else "float32"


def shakespeare_path() -> Path:
    return Path(str(resources.files("gptkit") / "assets" / "tinyshakespeare.txt"))


def quickstart(
    out_dir: str | Path = QUICKSTART_DIR,
    *,
    max_steps: int | None = None,
    progress: bool = True,
    n_samples: int = 2,
    overwrite: bool = False,
    report_to: str = "none",
) -> QuickstartResult:
    """Prepare the shipped corpus (character-level, 90/10 split), train the recipe, save, and sample.

    An out_dir that holds an earlier run is refused before anything is prepared, unless `overwrite` (start
    afresh, as `TrainConfig.overwrite`); out_dir/data is the run's input and is rebuilt either way. `report_to`
    is `TrainConfig.report_to` (tensorboard, wandb).
    """
    from gptkit.generation.generate import generate
    from gptkit.generation.sampling import SamplingParams
    from gptkit.training.checkpoints import stale_run_files
    from gptkit.training.data import PrepareConfig, prepare

    run_dir = Path(out_dir)
    data_dir = run_dir / "data"
    stale_run_files(run_dir, overwrite=overwrite, resume=False, inputs=(data_dir,))  # refuse before preparing
    prepare(
        PrepareConfig(inputs=(str(shakespeare_path()),), out_dir=str(data_dir), tokenizer="char", val_fraction=0.1),
        progress=progress,
    )
    overrides = (
        {}
        if max_steps is None
        else {"max_steps": max_steps, "decay_steps": max_steps, "eval_interval": max(1, max_steps // 4)}
    )
    config = TrainConfig(
        data=str(data_dir),
        out_dir=str(run_dir),
        overwrite=overwrite,
        progress=progress,
        report_to=report_to,
        dtype=quick_dtype(),
        **{**RECIPE, **overrides},
    )
    from gptkit.training.progress import ProgressBar

    result = train(config, on_event=ProgressBar() if progress else None)
    from gptkit.models.loading import load_pretrained

    model, tokenizer = load_pretrained(run_dir)
    params = SamplingParams(
        max_new_tokens=300, temperature=0.8, top_k=200, seed=1337, truncate=True, num_return_sequences=n_samples
    )
    samples = [c.text for c in generate(model, "\n", params, tokenizer=tokenizer)]
    return QuickstartResult(run_dir, result, samples)
