"""On a CUDA device (marked `gpu`; skipped without one): the same numbers as on the CPU, the cache and the training
loop there too. And everywhere: benchmarks/gpu.sh's CPU smoke path runs, so the script a GPU session runs cannot rot.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from gptkit.generation.generate import generate
from gptkit.generation.sampling import SamplingParams
from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("gpt2-tiny", initializer_range=0.2)).eval()


@pytest.mark.gpu
@cuda
def test_logits_on_the_gpu_equal_the_cpus() -> None:
    model = tiny_model()
    ids = torch.randint(0, 50257, (3, 40), generator=torch.Generator().manual_seed(1))
    want = model(ids).logits
    got = model.cuda()(ids.cuda()).logits.cpu()
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    half = model.to(torch.bfloat16)(ids.cuda()).logits.float().cpu()
    assert (half.argmax(-1) == want.argmax(-1)).float().mean() > 0.95


@pytest.mark.gpu
@cuda
def test_greedy_decoding_on_the_gpu_equals_the_cpu_and_the_cache_equals_none() -> None:
    model = tiny_model()
    prompts = [[464, 1893, 286], [15496, 11, 314, 1101, 257]]
    params = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True)
    want = [g.token_ids for g in generate(model, prompts, params)]
    on_gpu = model.cuda()
    assert [g.token_ids for g in generate(on_gpu, prompts, params)] == want
    assert [greedy_without_cache(on_gpu, p, 24) for p in prompts] == want


def greedy_without_cache(model: GPT, ids: list[int], tokens: int) -> list[int]:
    """The whole sequence through the model for every new token: no KV cache."""
    x = torch.tensor([ids], device=next(model.parameters()).device)
    for _ in range(tokens):
        x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return x[0, len(ids) :].tolist()


@pytest.mark.gpu
@cuda
def test_training_steps_on_the_gpu_lower_the_loss(tmp_path: Path) -> None:
    from gptkit.training.config import TrainConfig
    from gptkit.training.data import PrepareConfig, prepare
    from gptkit.training.events import StepEvent
    from gptkit.training.train import train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    prepare(PrepareConfig(inputs=(str(corpus),), out_dir=str(tmp_path / "data"), tokenizer="gpt2"), progress=False)
    losses: list[float] = []
    config = TrainConfig(
        data=str(tmp_path / "data"),
        out_dir=str(tmp_path / "run"),
        model="gpt2-tiny",
        block_size=32,
        batch_size=8,
        max_steps=30,
        lr=3e-3,
        dtype="bfloat16",
        device="cuda",
        eval_interval=0,
        log_interval=1,
        sample_tokens=0,
        progress=False,
    )
    train(config, on_event=lambda e: losses.append(e.loss) if isinstance(e, StepEvent) else None)
    assert len(losses) == 30 and losses[-1] < losses[0] - 1.0


def test_the_gpu_script_runs_its_cpu_smoke_path(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(["bash", "benchmarks/gpu.sh", "--smoke"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert report["smoke"] is True and report["device"] == "cpu"
    training, decoding = report["training"], report["decoding"]
    assert training["timed_steps"] == 2 and training["tokens_per_second"] > 0 and training["mfu_vs_measured_matmul"] > 0
    assert decoding["dtype"] == "float32" and decoding["greedy_agreement"] == 1.0  # same weights, same greedy tokens
    assert set(report["met"]) == {"training_mfu", "decode_vs_transformers"}
