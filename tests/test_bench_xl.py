"""benchmarks/bench_xl.py's smoke path (`--quick`: a 2-layer, 64-wide model) runs end to end, so that the script
measuring gpt2-xl on a 24 GiB machine cannot rot: every phase of both engines reports, and in float32 gptkit's
greedy tokens equal transformers' on the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~25-30 s, nearly all of it four processes importing torch, transformers and peft
def test_the_xl_benchmark_runs_its_quick_path() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "benchmarks/bench_xl.py", "--quick", "--dtype", "float32"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["settings"]["shape"] == "tiny" and report["checkpoint"]["checkpoint_dtype"] == "float32"
    for engine in ("gptkit", "transformers"):
        infer, train = report[engine]["infer"], report[engine]["train"]
        assert infer["weights_dtype"] == train["weights_dtype"] == "float32"
        assert infer["load_seconds"] > 0 and infer["generate_tokens_per_s"] > 0 and infer["peak_ratio"] > 0
        assert set(infer["peak_rss_mib"]) == {"load", "generate"}
        assert len(train["step_seconds"]) == 2 and train["median_step_seconds"] > 0 and len(train["losses"]) == 3
        assert set(train["peak_rss_mib"]) == {"setup", "steps", "end"}
        assert train["trainable_parameters"] == report["transformers"]["train"]["trainable_parameters"]  # same LoRA
        assert report["met"][engine]["peak_rss"] is True
    greedy = report["greedy"]
    assert len(greedy["gptkit"]) == 8 and greedy["identical"] and greedy["agreement"] == 1.0  # same weights, fp32
    ratios = report["ratios_gptkit_over_transformers"]
    assert set(ratios["peak_rss"]) == {"load", "generate", "train"} and ratios["lora_median_step_seconds"] > 0
    assert report["machine"]["memory_bandwidth_gb_per_s"] > 0 and "load_average_start" in report["machine"]
