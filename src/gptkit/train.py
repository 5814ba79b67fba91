"""The training loop: one function, `train(TrainConfig)`, for pre-training and fine-tuning.

Batches are random windows of a prepared token stream (nanoGPT's sampler), drawn from one generator
shared by every rank so that N processes with micro-batch b see exactly the windows one process sees
with N times the gradient accumulation. Everything a resume needs (model, optimizer, sampler and RNG
states, step) is checkpointed atomically; a resumed run continues the uninterrupted one value for value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gptkit import distributed
from gptkit.checkpoint import (
    build_model,
    latest_training_checkpoint,
    load_model,
    load_pretrained,
    load_trainer_state,
    save_training_checkpoint,
)
from gptkit.config import GPTConfig, TrainConfig
from gptkit.errors import ConfigError, GptkitError
from gptkit.io import atomic_write_text
from gptkit.model import GPT
from gptkit.optim import make_adamw
from gptkit.runlog import append_metrics, plot_curves, truncate_metrics

TRAIN_CONFIG_FILE = "train_config.json"


class TrainingError(GptkitError):
    """Training cannot go on (diverged, data too small, mismatched checkpoint); the last checkpoint stays."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    train_loss: float
    val_loss: float | None
    best_val_loss: float | None
    tokens_per_second: float
    seconds: float
    is_main: bool = True  # False on the other ranks of a distributed run


class WindowSampler:
    """Random (block + 1)-token windows of a token array, from one seeded generator."""

    def __init__(self, tokens: np.ndarray, block_size: int, seed: int) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.generator = torch.Generator().manual_seed(seed)
        self.span = torch.arange(block_size + 1)

    def draw(self, n: int) -> Tensor:
        """(n, block + 1) int64 windows; x = [:, :-1], y = [:, 1:]."""
        starts = torch.randint(0, len(self.tokens) - self.block_size, (n,), generator=self.generator)
        index = (starts[:, None] + self.span).numpy()
        return torch.from_numpy(self.tokens[index].astype(np.int64))


# -- setting up -----------------------------------------------------------------------------------


def _open_data(config: TrainConfig) -> Any:
    from gptkit.data import TokenData

    data = TokenData.open(config.data)
    need = config.block_size + 1
    for split in ("train", "val"):
        n = len(getattr(data, split))
        if n <= need:
            raise TrainingError(
                f"{config.data}: the {split} split has {n} tokens, fewer than one block of {need}; "
                "use more text, a smaller --block-size" + (", or a larger --val-fraction" if split == "val" else "")
            )
    return data


def _build_model(config: TrainConfig, data: Any, device: torch.device) -> tuple[GPT, Any]:
    """The model to train and the tokenizer it is saved with, checked against the data."""
    if config.init_from == "scratch":
        overrides = {"vocab_size": data.vocab_size, "n_positions": config.block_size,
                     "eos_token_id": data.eos_token_id, "bos_token_id": data.eos_token_id,
                     **config.model_overrides}
        model_config = GPTConfig.from_name(config.model, **overrides)
        torch.manual_seed(config.seed)
        model, tokenizer = GPT(model_config), data.tokenizer
    else:
        model, tokenizer = load_pretrained(config.model)
        if tokenizer is not None:
            from gptkit.data import tokenizer_fingerprint

            if tokenizer_fingerprint(tokenizer) != data.fingerprint:
                raise TrainingError(
                    f"{config.data} was tokenized with another tokenizer than {config.model}'s; "
                    f"run `gptkit prepare ... --tokenizer {config.model}` to match the model"
                )
        tokenizer = tokenizer or data.tokenizer
        if model.config.vocab_size < data.vocab_size:
            raise TrainingError(
                f"{config.model} has {model.config.vocab_size} embeddings but {config.data} uses "
                f"{data.vocab_size} token ids"
            )
    if config.block_size > model.config.n_positions:
        raise TrainingError(
            f"block_size {config.block_size} exceeds the model's context of {model.config.n_positions}"
        )
    if config.dropout is not None:
        model = _with_dropout(model, config.dropout)
    return model.to(device).train(), tokenizer


def _with_dropout(model: GPT, p: float) -> GPT:
    model.config = model.config.replace(embd_pdrop=p, attn_pdrop=p, resid_pdrop=p)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if hasattr(module, "attn_pdrop"):
            module.attn_pdrop = p
    return model


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the loop -------------------------------------------------------------------------------------


def train(config: TrainConfig, *, on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train as `config` says; return the final figures. `on_log` receives every metrics record."""
    info, device = distributed.setup(config.device)
    # Tiny gradients and Adam moments become subnormal floats, which x86 CPUs process ~100x slower:
    # measured 6x slower steps on the Shakespeare recipe. Flushing them to zero changes nothing visible.
    flushing = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _train(config, info, device, on_log)
    finally:
        if flushing:
            torch.set_flush_denormal(False)
        distributed.teardown(info)


def _train(config: TrainConfig, info: distributed.DistInfo, device: torch.device,
           on_log: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    run_dir = Path(config.out_dir)
    data = _open_data(config)
    resume_from = latest_training_checkpoint(run_dir) if config.init_from == "resume" else None
    if config.init_from == "resume" and resume_from is None:
        raise TrainingError(f"{run_dir}: nothing to resume (no checkpoints/step-* with a trainer state)")
    if resume_from is not None:
        model = load_model(resume_from, device=device).train()
        clash = {k: (v, getattr(model.config, k, None)) for k, v in config.model_overrides.items()
                 if getattr(model.config, k, None) != v}
        if clash:
            raise TrainingError(
                f"{resume_from} holds a model with " + ", ".join(f"{k}={old!r}" for k, (_, old) in clash.items())
                + " but the settings ask for " + ", ".join(f"{k}={new!r}" for k, (new, _) in clash.items())
                + "; resume with the run's own model settings, or start a new --out-dir"
            )
        from gptkit.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_pretrained(resume_from)
        if config.dropout is not None:
            model = _with_dropout(model, config.dropout)
    else:
        model, tokenizer = _build_model(config, data, device)
    if config.dtype == "float16" and device.type != "cuda":
        raise ConfigError("float16 training needs a GPU (loss scaling); use --dtype bfloat16 on CPU")

    try:
        trained = distributed.wrap(model, info, device, fsdp=config.fsdp, compile=config.compile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    optimizer = make_adamw(model, lr=config.lr, weight_decay=config.weight_decay, betas=(config.beta1, config.beta2),
                           eps=config.eps, decay_embeddings=config.decay_embeddings, device_type=device.type)
    sampler = WindowSampler(data.train, config.block_size, config.seed)
    step, best_val = 0, math.inf
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        if state.get("data_fingerprint") != data.fingerprint:
            raise TrainingError(f"{config.data} is not the data {run_dir} was trained on (tokenizer differs)")
        distributed.load_optimizer_state(model, optimizer, state["optimizer"])
        sampler.generator.set_state(state["sampler"])
        _set_rng_state(state["rng"])
        step, best_val = state["step"], state["best_val_loss"]
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / TRAIN_CONFIG_FILE, json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        if resume_from is not None:
            truncate_metrics(run_dir, step)

    scaler = torch.amp.GradScaler("cuda", enabled=config.dtype == "float16")
    autocast = torch.autocast(device.type, dtype=getattr(torch, config.dtype), enabled=config.dtype != "float32")
    micro = config.grad_accum
    tokens_per_step = config.batch_size * micro * info.world_size * config.block_size

    def log(record: dict[str, Any]) -> None:
        if info.is_main:
            append_metrics(run_dir, record)
        if on_log is not None:
            on_log(record)

    def checkpoint(val_loss: float | None) -> None:
        nonlocal best_val
        is_best = val_loss is not None and val_loss < best_val
        best_val = min(best_val, val_loss) if val_loss is not None else best_val
        model_state, optimizer_state = distributed.full_state(model, optimizer)  # every rank takes part
        if info.is_main:
            state = {"step": step, "optimizer": optimizer_state, "sampler": sampler.generator.get_state(),
                     "rng": _rng_state(), "best_val_loss": best_val, "data_fingerprint": data.fingerprint,
                     "config": dataclasses.asdict(config)}
            plain = build_model(model.config, model_state) if config.fsdp else model
            try:
                save_training_checkpoint(run_dir, step, plain, tokenizer, state, keep_last=config.keep_last,
                                         best=is_best)
            except OSError as exc:
                raise TrainingError(f"could not write the checkpoint at step {step} ({exc}); the previous "
                                    f"checkpoint in {run_dir / 'checkpoints'} is intact") from exc
            plot_curves(run_dir)
        distributed.barrier(info)

    from tqdm.auto import tqdm

    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and info.is_main),
               dynamic_ncols=True, unit="step")
    start, loss_value, val_loss = time.perf_counter(), math.nan, None
    steps_done = 0
    while step < config.max_steps:
        lr = config.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        windows = sampler.draw(config.batch_size * micro * info.world_size)
        total = 0.0
        for k in range(micro):
            row = (k * info.world_size + info.rank) * config.batch_size
            batch = windows[row:row + config.batch_size].to(device, non_blocking=True)
            with distributed.gradient_sync(trained, model, enabled=k == micro - 1):
                with autocast:
                    logits = trained(batch[:, :-1]).logits
                loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
                scaler.scale(loss / micro).backward()
            total += loss.item() / micro
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        loss_value = distributed.mean_across_ranks(total, info, device)
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"the loss became {loss_value} at step {step + 1}; training stopped. The last good checkpoint "
                f"is in {run_dir / 'checkpoints'}; try a lower --lr, --grad-clip 1, or --dtype bfloat16"
            )
        step += 1
        steps_done += 1
        elapsed = time.perf_counter() - start
        tokens_per_second = steps_done * tokens_per_step / elapsed
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:,.0f}", refresh=False)
        last = step == config.max_steps
        if step % config.log_interval == 0 or last:
            log({"step": step, "loss": loss_value, "lr": lr, "tokens_per_second": tokens_per_second,
                 "tokens": step * tokens_per_step, "elapsed": elapsed})
        evaluate_now = last or (config.eval_interval > 0 and step % config.eval_interval == 0)
        if evaluate_now:
            losses = estimate_loss(model, data, config, device, autocast)
            val_loss = losses["val"]
            record = {"step": step, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50)),
                      "train_eval_loss": losses["train"]}
            # a sharded model needs every rank in each forward pass, so all ranks sample under FSDP
            if config.sample_tokens > 0 and (info.is_main or config.fsdp) and tokenizer is not None:
                record["sample"] = sample_text(model, tokenizer, config)
                if config.progress:
                    bar.write(f"step {step}: val loss {val_loss:.4f}\n{record['sample']}\n")
            log(record)
        interval = config.save_interval or config.eval_interval
        if last or (interval > 0 and step % interval == 0):
            checkpoint(val_loss if evaluate_now else None)
    bar.close()
    seconds = time.perf_counter() - start
    return TrainResult(run_dir, step, loss_value, val_loss, best_val if math.isfinite(best_val) else None,
                       steps_done * tokens_per_step / max(seconds, 1e-9), seconds, info.is_main)


@torch.inference_mode()
def estimate_loss(model: GPT, data: Any, config: TrainConfig, device: torch.device,
                  autocast: Any) -> dict[str, float]:
    """Mean loss over `eval_batches` windows per split; the same windows at every evaluation."""
    was_training = model.training
    model.eval()
    out = {}
    for split in ("train", "val"):
        sampler = WindowSampler(getattr(data, split), config.block_size, config.seed + 1)
        losses = []
        for _ in range(config.eval_batches):
            batch = sampler.draw(config.batch_size).to(device)
            with autocast:
                logits = model(batch[:, :-1]).logits
            losses.append(F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten()).item())
        out[split] = sum(losses) / len(losses)
    model.train(was_training)
    return out


def sample_text(model: GPT, tokenizer: Any, config: TrainConfig) -> str:
    """A short continuation of `sample_prompt`, seeded, for a look at progress; RNG state untouched."""
    from gptkit.generate import generate
    from gptkit.sampling import SamplingParams

    was_training = model.training
    model.eval()
    params = SamplingParams(max_new_tokens=min(config.sample_tokens, model.config.n_positions - 1), seed=config.seed,
                            top_k=200, truncate=True)
    text = generate(model, config.sample_prompt, params, tokenizer=tokenizer, allow_special=True)[0].text
    model.train(was_training)
    return config.sample_prompt + text
