"""The training loop: it learns, resumes exactly, accumulates and distributes correctly, and fails cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptkit import GPT
from gptkit.training.config import TrainConfig
from gptkit.training.data import PrepareConfig, prepare
from gptkit.training.train import TrainingError, train

TEXT = (
    "".join(
        f"{w} the {c} sat on the {m}.\n"
        for w in ("and", "then", "so", "but")
        for c in ("cat", "dog", "bird")
        for m in ("mat", "rug", "log", "hat")
    )
    * 12
)


@pytest.fixture(scope="module")
def char_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chardata")
    (root / "corpus.txt").write_text(TEXT)
    prepare(
        PrepareConfig(inputs=(str(root / "corpus.txt"),), out_dir=str(root / "data"), tokenizer="char"), progress=False
    )
    return root / "data"


def _config(data: Path, out: Path, **changes) -> TrainConfig:
    base = dict(
        data=str(data),
        out_dir=str(out),
        model="gpt2-tiny",
        model_overrides={"n_layer": 2, "n_head": 2, "n_embd": 32},
        block_size=32,
        batch_size=8,
        max_steps=30,
        lr=3e-3,
        warmup_steps=5,
        eval_interval=10,
        eval_batches=2,
        log_interval=1,
        sample_tokens=20,
        progress=False,
        seed=7,
        dropout=0.1,
    )
    return TrainConfig(**{**base, **changes})


def _curve(run: Path, key: str = "loss") -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in records if key in r]


def test_a_run_learns_and_leaves_a_loadable_run_directory(char_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(_config(char_data, run, max_steps=60, eval_interval=20))
    losses = [loss for _, loss in _curve(run)]
    assert losses[-1] < 0.6 * losses[0], losses
    assert result.val_loss is not None and result.val_loss < 2.0
    assert (run / "curves.png").stat().st_size > 1000 and (run / "best" / "model.safetensors").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000040", "step-0000060"]
    model = GPT.from_pretrained(run)
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoModelForCausalLM.from_pretrained(run).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-5)
    assert "sample" in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) or any(
        "sample" in json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
    )


def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(char_data: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    train(_config(char_data, whole))
    broken = tmp_path / "broken"

    def crash(record: dict) -> None:
        if record.get("step") == 25 and "loss" in record:
            raise KeyboardInterrupt  # killed after step 25; the last checkpoint is step 20

    with pytest.raises(KeyboardInterrupt):
        train(_config(char_data, broken), on_log=crash)
    train(_config(char_data, broken, init_from="resume"))
    assert _curve(broken) == _curve(whole)
    assert _curve(broken, "val_loss") == _curve(whole, "val_loss")


def test_gradient_accumulation_equals_the_larger_batch(char_data: Path, tmp_path: Path) -> None:
    one = train(_config(char_data, tmp_path / "one", batch_size=8, grad_accum=1, max_steps=8, dropout=0.0))
    two = train(_config(char_data, tmp_path / "two", batch_size=4, grad_accum=2, max_steps=8, dropout=0.0))
    a, b = _curve(one.run_dir), _curve(two.run_dir)
    assert [s for s, _ in a] == [s for s, _ in b]
    assert all(abs(x - y) < 1e-5 for (_, x), (_, y) in zip(a, b, strict=True)), (a, b)


@pytest.mark.slow
def test_two_process_ddp_and_fsdp_match_one_process_with_the_same_global_batch(char_data: Path, tmp_path: Path) -> None:
    common = [
        "--data",
        str(char_data),
        "--model",
        "gpt2-tiny",
        "--n-layer",
        "2",
        "--n-head",
        "2",
        "--n-embd",
        "32",
        "--block-size",
        "32",
        "--max-steps",
        "6",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--eval-interval",
        "0",
        "--eval-batches",
        "2",
        "--log-interval",
        "1",
        "--sample-tokens",
        "0",
        "--no-progress",
        "--dropout",
        "0",
        "--seed",
        "3",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gptkit",
            "train",
            *common,
            "--out-dir",
            str(tmp_path / "single"),
            "--batch-size",
            "4",
            "--grad-accum",
            "2",
        ],
        check=True,
        env=env,
        timeout=300,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "gptkit",
            "train",
            *common,
            "--out-dir",
            str(tmp_path / "ddp"),
            "--batch-size",
            "4",
            "--grad-accum",
            "1",
        ],
        check=True,
        env=env,
        timeout=300,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "gptkit",
            "train",
            *common,
            "--out-dir",
            str(tmp_path / "fsdp"),
            "--batch-size",
            "4",
            "--grad-accum",
            "1",
            "--fsdp",
        ],
        check=True,
        env=env,
        timeout=300,
    )
    single = _curve(tmp_path / "single")
    assert [s for s, _ in single] == list(range(1, 7))
    for name in ("ddp", "fsdp"):
        other = _curve(tmp_path / name)
        assert [s for s, _ in other] == list(range(1, 7))
        assert all(abs(x - y) < 1e-5 for (_, x), (_, y) in zip(single, other, strict=True)), (name, single, other)
    ids = torch.randint(0, 10, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the sharded run saves the same full model
        a = GPT.from_pretrained(tmp_path / "single")(ids).logits
        b = GPT.from_pretrained(tmp_path / "fsdp")(ids).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_bfloat16_autocast_tracks_float32(char_data: Path, tmp_path: Path) -> None:
    fp32 = train(_config(char_data, tmp_path / "fp32", max_steps=20, dropout=0.0, eval_interval=0))
    bf16 = train(_config(char_data, tmp_path / "bf16", max_steps=20, dropout=0.0, eval_interval=0, dtype="bfloat16"))
    assert abs(bf16.train_loss - fp32.train_loss) < 0.05 * fp32.train_loss


def test_divergence_stops_with_a_clear_message_and_keeps_the_checkpoint(char_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "nan"
    train(_config(char_data, run, max_steps=10))
    with pytest.raises(TrainingError, match=r"loss became nan at step \d+.*last good checkpoint"):
        train(_config(char_data, run, init_from="resume", max_steps=40, lr=1e9, grad_clip=0.0, warmup_steps=0))
    assert GPT.from_pretrained(run / "checkpoints" / "step-0000010").config.n_layer == 2


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(char_data: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "full"
    train(_config(char_data, run, max_steps=10))
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if str(f).endswith("trainer_state.pt"):
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingError, match="could not write the checkpoint at step 20.*previous checkpoint"):
        train(_config(char_data, run, init_from="resume", max_steps=20))
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000010"]
    train(_config(char_data, run, init_from="resume", max_steps=20))  # and it resumes from there


def test_bad_inputs_are_reported(char_data: Path, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short\n")
    prepare(PrepareConfig(inputs=(str(tiny),), out_dir=str(tmp_path / "tinydata"), tokenizer="char"), progress=False)
    with pytest.raises(TrainingError, match=r"train split has \d+ tokens, fewer than one block of 33"):
        train(_config(tmp_path / "tinydata", tmp_path / "r1"))
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(_config(char_data, tmp_path / "r2", init_from="resume"))
    train(_config(char_data, tmp_path / "r2", max_steps=2, eval_interval=0, sample_tokens=0))
    with pytest.raises(TrainingError, match="holds a model with n_layer=2 but the settings ask for n_layer=3"):
        train(_config(char_data, tmp_path / "r2", init_from="resume", model_overrides={"n_layer": 3}))
    pretrained = tmp_path / "gpt2tok"
    from gptkit import GPTConfig
    from gptkit.text.tokenizer import Tokenizer

    GPT(GPTConfig.from_name("gpt2-tiny")).save_pretrained(pretrained, tokenizer=Tokenizer.from_pretrained("gpt2"))
    with pytest.raises(TrainingError, match="tokenized with another tokenizer"):
        train(_config(char_data, tmp_path / "r3", init_from="pretrained", model=str(pretrained)))


def test_config_files_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"data": "d", "max_steps": 7, "lr": 0.01}))
    assert TrainConfig.from_file(path, lr=0.02) == TrainConfig(data="d", max_steps=7, lr=0.02)
    yaml_path = tmp_path / "train.yaml"
    yaml_path.write_text("data: d\nmax_steps: 9\nschedule: linear\n")
    pytest.importorskip("yaml")
    assert TrainConfig.from_file(yaml_path).schedule == "linear"
    path.write_text(json.dumps({"data": "d", "max_step": 7}))
    from gptkit import ConfigError

    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \['max_step'\]"):
        TrainConfig.from_file(path)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        TrainConfig(data="d", batch_size=0)
