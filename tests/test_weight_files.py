"""gptkit.models.weight_files: tensors read into place equal torch's own transposes and casts; loads hold
the weights once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import gptkit.models.weight_files as wf
from gptkit import CheckpointError
from gptkit.models.weight_files import StoredWeights

from conftest import hf_model

TENSORS = {
    "matrix": torch.randn(5, 7, generator=torch.Generator().manual_seed(0)),
    "wide": torch.randn(3, 40, generator=torch.Generator().manual_seed(1)),
    "vector": torch.randn(11, generator=torch.Generator().manual_seed(2)),
    "scalar": torch.tensor(3.25),
    "cube": torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3)),
    "half": torch.randn(4, 6, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16),
    "odd": torch.randn(3, 5, generator=torch.Generator().manual_seed(5)).to(torch.float16),
    "ids": torch.arange(12, dtype=torch.int64).view(3, 4),
    "mask": torch.tensor([True, False, True]),
    "empty": torch.empty(0, 4),
}


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    save_file(TENSORS, str(path))
    return path


@pytest.mark.parametrize("buffer_bytes", [wf._BUFFER_BYTES, 24, 3])  # one pass; a few rows; a row at a time
@pytest.mark.parametrize("dtype", [None, torch.float32, torch.bfloat16, torch.float16])
def test_read_equals_torch_transpose_and_cast(stored, monkeypatch, buffer_bytes: int, dtype) -> None:
    monkeypatch.setattr(wf, "_BUFFER_BYTES", buffer_bytes)
    weights = StoredWeights.open([stored], dtype)
    assert weights.shapes == {k: tuple(v.shape) for k, v in TENSORS.items()}
    layout = {k: (k, False) for k in TENSORS} | {f"{k}.t": (k, True) for k in ("matrix", "wide", "half", "odd", "ids")}
    out = weights.read(layout)
    for name, (key, transposed) in layout.items():
        source = TENSORS[key].t().contiguous() if transposed else TENSORS[key]
        want = source.to(dtype) if dtype is not None and source.is_floating_point() else source
        assert out[name].dtype == want.dtype and out[name].is_contiguous(), name
        assert torch.equal(out[name], want), name


def test_select_renames_without_reading(stored) -> None:
    weights = StoredWeights.open([stored]).select({"m": "matrix", "v": "vector"})
    assert list(weights) == ["m", "v"] and "matrix" not in weights and weights.stored_dtype("v") == torch.float32
    assert torch.equal(weights.read(["m"])["m"], TENSORS["matrix"])


def test_damaged_files_are_named(stored, tmp_path: Path) -> None:
    data = stored.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors: tensor .* does not fit its data offsets"):
        StoredWeights.open([truncated])
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["matrix"]["dtype"] = "F8_E4M3"
    odd = json.dumps(header).encode()
    unknown = tmp_path / "unknown.safetensors"
    unknown.write_bytes(len(odd).to_bytes(8, "little") + odd + data[8 + length :])
    with pytest.raises(CheckpointError, match=r"tensor 'matrix' has an unsupported or malformed entry"):
        StoredWeights.open([unknown])


LOAD_AND_MEASURE = """
import json, sys, torch
from gptkit.models.gpt import load_model
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
torch.ones(4, 64) @ torch.ones(64, 64)
start = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
model = load_model(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"peak": status("VmHWM") - start, "weights": weights, "dynamo": "torch._dynamo" in sys.modules}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_loading_holds_the_weights_once(tmp_path: Path, dtype: str) -> None:
    # ~64 MiB of fp32 weights, most of them Linear weights that are stored transposed
    hf_model("gpt2", dict(n_embd=512, n_layer=5, n_head=8, vocab_size=2000, n_positions=64)).save_pretrained(tmp_path)
    run = subprocess.run([sys.executable, "-c", LOAD_AND_MEASURE, str(tmp_path), dtype], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    # the weights once, the 16 MiB buffer, and a little for the allocator and Python objects
    assert result["peak"] <= 1.05 * result["weights"] + 24 * 2**20, result
    assert not result["dynamo"]  # the empty model's initialisers are skipped: no torch._dynamo import (seconds)
