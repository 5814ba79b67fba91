"""The training loop: it learns, resumes exactly, accumulates and distributes correctly, and fails cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gptkit import GPT
from gptkit.errors import ConfigError
from gptkit.models import kernels
from gptkit.training.config import TrainConfig
from gptkit.training.data import PrepareConfig, prepare
from gptkit.training.events import CheckpointEvent, DoneEvent, EvalEvent, StartEvent, StepEvent
from gptkit.training.loop import DivergedError
from gptkit.training.train import TrainingError, train


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

    def crash(event) -> None:
        if isinstance(event, StepEvent) and event.step == 25:
            raise KeyboardInterrupt  # killed after step 25; the last checkpoint is step 20

    with pytest.raises(KeyboardInterrupt):
        train(_config(char_data, broken), on_event=crash)
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
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    runs = {  # name: (launcher, batch size, grad accum, more flags): the same 8 sequences per step
        "single": ([sys.executable], "4", "2", []),
        "ddp": (torchrun, "4", "1", []),
        "fsdp": (torchrun, "4", "1", ["--fsdp"]),
    }
    for name, (launcher, batch, accum, more) in runs.items():
        out = ["--out-dir", str(tmp_path / name), "--batch-size", batch, "--grad-accum", accum, *more]
        subprocess.run([*launcher, "-m", "gptkit", "train", *common, *out], check=True, env=env, timeout=300)
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


@pytest.mark.parametrize("hardware", [True, False])
def test_bf16_warns_on_a_cpu_without_its_instructions(char_data: Path, tmp_path: Path, monkeypatch, hardware) -> None:
    monkeypatch.setattr(kernels, "cpu_has_fast", lambda dtype: hardware or dtype == torch.float32)
    config = _config(char_data, tmp_path / "run", max_steps=1, eval_interval=0, sample_tokens=0, dtype="bfloat16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config)
    slow = [str(w.message) for w in caught if "matrix instructions" in str(w.message)]
    assert len(slow) == (0 if hardware else 1)
    assert hardware or "TrainConfig.dtype='bfloat16'" in slow[0] and "dtype='float32'" in slow[0]


def test_cpu_has_fast_is_oneDNNs_check() -> None:
    assert kernels.cpu_has_fast(torch.float32)
    assert kernels.cpu_has_fast(torch.bfloat16) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert not kernels.cpu_has_fast(torch.int8)


def test_divergence_stops_with_a_clear_message_and_keeps_the_checkpoint(char_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "nan"
    train(_config(char_data, run, max_steps=10))
    with pytest.raises(DivergedError, match=r"loss became nan at step \d+.*last good checkpoint"):
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


def _events_of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def test_events_report_the_run_as_metrics_jsonl_and_the_checkpoints_do(char_data: Path, tmp_path: Path) -> None:
    run, events = tmp_path / "run", []
    result = train(_config(char_data, run), on_event=events.append)
    assert isinstance(events[0], StartEvent) and (events[0].step, events[0].max_steps) == (0, 30)
    assert isinstance(events[-1], DoneEvent) and events[-1].result is result and not result.stopped
    steps = _events_of(events, StepEvent)
    assert [(e.step, e.loss) for e in steps] == _curve(run) and [e.step for e in steps] == list(range(1, 31))
    assert [e.lr for e in steps] == [_config(char_data, run).lr_at(s) for s in range(30)]
    assert steps[-1].tokens == 30 * 8 * 32 and all(e.tokens_per_second > 0 for e in steps)
    evals = _events_of(events, EvalEvent)
    assert [(e.step, e.metrics["val_loss"]) for e in evals] == _curve(run, "val_loss")
    assert all(e.sample is not None for e in evals)
    saved = _events_of(events, CheckpointEvent)
    assert [(e.step, e.path.name) for e in saved] == [(s, f"step-{s:07d}") for s in (10, 20, 30)]
    vals = [v for _, v in _curve(run, "val_loss")]
    assert [e.best for e in saved] == [v < min(vals[:i], default=float("inf")) for i, v in enumerate(vals)]


def test_a_run_stopped_between_steps_resumes_to_the_uninterrupted_one(char_data: Path, tmp_path: Path) -> None:
    train(_config(char_data, tmp_path / "whole"))
    events: list = []
    part = tmp_path / "part"
    stopped = train(
        _config(char_data, part),
        on_event=events.append,
        should_stop=lambda: len(_events_of(events, StepEvent)) >= 13,  # asked before each step
    )
    assert stopped.stopped and stopped.step == 13 and events[-1].result is stopped
    assert [e.step for e in _events_of(events, CheckpointEvent)] == [10, 13]  # the stop leaves step 13 to resume
    resumed = train(_config(char_data, part, init_from="resume"))
    assert resumed.step == 30 and not resumed.stopped
    assert _curve(part) == _curve(tmp_path / "whole")
    assert _curve(part, "val_loss") == _curve(tmp_path / "whole", "val_loss")
    assert _curve(part, "tokens") == _curve(tmp_path / "whole", "tokens")  # counted from the run's start
    clock = [seconds for _, seconds in _curve(part, "elapsed")]
    assert len(clock) == 30 and clock == sorted(clock)  # and the clock goes on from where it stopped
    ours, theirs = GPT.from_pretrained(part).state_dict(), GPT.from_pretrained(tmp_path / "whole").state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_run_leaves_the_callers_global_state_as_it_found_it(char_data: Path, tmp_path: Path) -> None:
    """RNGs, the flush-denormal flag, matplotlib's backend and malloc's settings: set for the run, then restored;
    the oneDNN switch follows the config inside the run only."""
    import random

    import matplotlib

    from gptkit.models import kernels
    from gptkit.training.scopes import denormals_flushed
    from process_state import global_state, large_malloc_is_mmapped, onednn_in_use

    backend = dict.__getitem__(matplotlib.rcParams, "backend")
    try:
        torch.manual_seed(12345)
        random.seed(6789)
        torch.set_flush_denormal(True)  # a caller's own setting, not the default: it must survive the run
        dict.__setitem__(matplotlib.rcParams, "backend", "pdf")
        for onednn, keep in ((True, True), (False, False)):
            before, inside = global_state(), []

            def look(event, inside=inside) -> None:
                if isinstance(event, StepEvent) and event.step == 1:
                    inside.append((denormals_flushed(), large_malloc_is_mmapped(), onednn_in_use()))

            config = _config(char_data, tmp_path / f"run{onednn}", max_steps=3, eval_interval=2, sample_tokens=4)
            train(config.replace(onednn=onednn, keep_freed_memory=keep), on_event=look)
            assert (tmp_path / f"run{onednn}" / "curves.png").is_file()
            assert global_state() == before
            mmapped = None if large_malloc_is_mmapped() is None else not keep
            assert inside == [(True, mmapped, onednn and kernels.onednn_op() is not None and kernels.onednn_pays())]
        torch.set_flush_denormal(False)
        before = global_state()
        train(_config(char_data, tmp_path / "default", max_steps=2, eval_interval=0, sample_tokens=0))
        assert global_state() == before and not before["denormals_flushed"]
    finally:
        torch.set_flush_denormal(False)
        dict.__setitem__(matplotlib.rcParams, "backend", backend)


def test_the_onednn_switch_changes_products_not_the_run(char_data: Path, tmp_path: Path) -> None:
    a = train(_config(char_data, tmp_path / "on", max_steps=6, eval_interval=0, sample_tokens=0))
    b = train(_config(char_data, tmp_path / "off", max_steps=6, eval_interval=0, sample_tokens=0, onednn=False))
    assert [s for s, _ in _curve(a.run_dir)] == [s for s, _ in _curve(b.run_dir)]
    assert all(abs(x - y) < 1e-4 for (_, x), (_, y) in zip(_curve(a.run_dir), _curve(b.run_dir), strict=True))


def _saved(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def test_lora_and_trainable_choose_what_language_modelling_trains(char_data: Path, tmp_path: Path) -> None:
    """`gptkit train --lora-r` / `--trainable`: the base weights a run saves move only where they are asked to."""
    lora_settings = {"r": 4, "targets": ["c_attn", "c_fc"]}

    def run(name: str, steps: int, **changes) -> Path:
        config = _config(char_data, tmp_path / name, max_steps=steps, eval_interval=0, sample_tokens=0, **changes)
        train(config)
        return tmp_path / name

    start, trained = run("lora0", 1, lora=lora_settings), run("lora3", 4, lora=lora_settings)
    before, after = _saved(start), _saved(trained)
    assert all(torch.equal(before[k], after[k]) for k in before), "LoRA training moved base weights"
    adapters = [load_file(run / "adapter_model.safetensors") for run in (start, trained)]
    assert adapters[0].keys() == adapters[1].keys() and any(k.endswith("lora_A.weight") for k in adapters[0])
    assert not all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0]), "the adapters did not train"
    adapter = json.loads((trained / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["c_attn", "c_fc"]
    reloaded = GPT.from_pretrained(trained)  # the base model, as transformers would load it
    assert torch.equal(reloaded.transformer.h[0].attn.c_attn.weight, after["transformer.h.0.attn.c_attn.weight"].t())

    start, trained = _saved(run("last0", 1, trainable="last:1")), _saved(run("last3", 4, trainable="last:1"))
    moved = {k for k in start if not torch.equal(start[k], trained[k])}
    assert moved and all(k.startswith(("transformer.h.1.", "transformer.ln_f.")) for k in moved)
    with pytest.raises(ConfigError, match="task-head"):
        run("head", 1, trainable="head")
    with pytest.raises(ConfigError, match="drop --fsdp"):
        _config(char_data, tmp_path / "fsdp", lora=lora_settings, fsdp=True)


def test_lora_settings_nested_or_flat(tmp_path: Path) -> None:
    from gptkit import ConfigError
    from gptkit.models.lora import LoRAConfig

    path = tmp_path / "train.json"
    path.write_text(json.dumps({"data": "d", "lora": {"r": 4, "targets": ["c_attn", "c_fc"]}}))
    assert TrainConfig.from_file(path).lora == LoRAConfig(r=4, targets=("c_attn", "c_fc"))
    assert TrainConfig.from_file(path).trainable_mode == "lora"
    path.write_text(json.dumps({"data": "d", "lora_r": 2, "lora_targets": "c_attn, c_proj"}))  # the older flat keys
    assert TrainConfig.from_file(path).lora == LoRAConfig(r=2, alpha=16.0, targets=("c_attn", "c_proj"))
    path.write_text(json.dumps({"data": "d", "lora_r": 0}))
    assert TrainConfig.from_file(path).lora is None and TrainConfig.from_file(path).trainable_mode == "all"
    path.write_text(json.dumps({"data": "d", "lora_r": 2, "lora": {"r": 2}}))
    with pytest.raises(ConfigError, match="either as lora or as lora_r"):
        TrainConfig.from_file(path)
    with pytest.raises(ConfigError, match=r"TrainConfig.lora: unknown LoRAConfig field\(s\) \['rank'\]"):
        TrainConfig(lora={"rank": 2})
    with pytest.raises(ConfigError, match="trainable is lora but TrainConfig.lora is None"):
        TrainConfig(trainable="lora")
    with pytest.raises(ConfigError, match="TrainConfig.data: language modelling needs a data directory"):
        train(TrainConfig(out_dir=str(tmp_path / "nodata")))


def test_a_used_out_dir_is_refused_unless_overwrite_or_resume(char_data: Path, tmp_path: Path) -> None:
    from gptkit import ConfigError

    run = tmp_path / "run"
    short = dict(max_steps=4, eval_interval=2, sample_tokens=0)
    train(_config(char_data, run, **short))
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=f"--out-dir {run} already holds a run; pass --overwrite"):
        train(_config(char_data, run, **short, lr=1e-9))
    assert (run / "metrics.jsonl").read_text() == before  # nothing touched
    train(_config(char_data, run, overwrite=True, max_steps=2, eval_interval=1, sample_tokens=0))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 1, 2, 2]  # only the new run's records
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000001", "step-0000002"]
    with pytest.raises(ConfigError, match="write into the model the run reads"):  # even with --overwrite
        train(_config(char_data, run / "best", init_from="pretrained", model=str(run), overwrite=True))
    with pytest.raises(ConfigError, match="write into the model the run reads"):
        train(_config(char_data, run, init_from="pretrained", model=str(run), overwrite=True))
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty and holds no gptkit run"):
        train(_config(char_data, other, overwrite=True))
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="give one of them"):
        _config(char_data, run, overwrite=True, init_from="resume")


def test_resume_takes_the_runs_settings_and_refuses_other_ones(char_data: Path, tmp_path: Path, capsys) -> None:
    from gptkit import ConfigError
    from gptkit.cli import main

    run = tmp_path / "run"
    train(_config(char_data, run, max_steps=4, eval_interval=2, sample_tokens=0))
    record = (run / "train_config.json").read_text()
    with pytest.raises(ConfigError, match=r"--block-size 256 \(the run has 32\).* differ"):
        train(TrainConfig(data=str(char_data), out_dir=str(run), init_from="resume", progress=False))
    assert (run / "train_config.json").read_text() == record  # the record is kept
    resume = ["train", "--init-from", "resume", "--out-dir", str(run), "--no-progress"]
    assert main([*resume, "--block-size", "64", "--max-steps", "6"]) == 2
    assert "--block-size 64 (the run has 32)" in capsys.readouterr().err
    assert (run / "train_config.json").read_text() == record
    assert main([*resume, "--max-steps", "6"]) == 0  # no --data, no --block-size: the run's own
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["max_steps"] == 6 and saved["block_size"] == 32 and saved["init_from"] == "resume"
    assert "trained to step 6" in capsys.readouterr().out


def test_the_progress_bar_shows_each_steps_figures_with_that_step(monkeypatch) -> None:
    import tqdm.auto

    from gptkit.training.progress import ProgressBar

    class Bar:  # tqdm's contract: update() redraws with the postfix set so far; set_postfix(refresh=False) does not
        def __init__(self, **kwargs) -> None:
            self.n, self.postfix, self.drawn = kwargs.get("initial", 0), {}, []

        def set_postfix(self, refresh: bool = True, **postfix) -> None:
            self.postfix = postfix

        def update(self, n: int) -> None:
            self.n += n
            self.drawn.append((self.n, self.postfix))

        def close(self) -> None: ...

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    bar = ProgressBar()
    bar(StartEvent(Path("run"), 0, 3))
    for step, loss in ((1, 3.0), (2, 2.5), (3, 2.0)):
        bar(StepEvent(step, 3, loss, 1e-3 * step, 100 * step, 50.0, 2.0 * step))
    assert [(n, p["loss"], p["lr"]) for n, p in bar.bar.drawn] == [
        (1, "3.0000", "1.00e-03"),
        (2, "2.5000", "2.00e-03"),
        (3, "2.0000", "3.00e-03"),
    ]


def test_curves_label_the_loss_per_target_and_draw_the_validation_metrics() -> None:
    from gptkit.training.runlog import curves_figure

    records = [
        {"step": 1, "loss": 0.9, "lr": 1e-3},
        {"step": 2, "loss": 0.7, "lr": 1e-3},
        {"step": 2, "val_loss": 0.8, "accuracy": 0.5, "f1": 0.4},
        {"step": 4, "val_loss": 0.6, "accuracy": 0.75, "f1": 0.7, "sample": "text"},
    ]
    loss, metrics, _ = curves_figure(records, unit="example").axes
    assert loss.get_ylabel() == "loss (nats/example)"
    assert {line.get_label(): list(line.get_ydata()) for line in metrics.get_lines()} == {
        "accuracy": [0.5, 0.75],
        "f1": [0.4, 0.7],
    }
    assert len(curves_figure(records[:2]).axes) == 2  # no evaluation metrics: loss and learning rate only
