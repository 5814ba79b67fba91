"""Language modelling: `train(TrainConfig)` pre-trains a GPT from scratch or fine-tunes one on your text.

Batches are random windows of a prepared token stream (nanoGPT's sampler). This module only builds the
objective (model, windows, next-token loss, evaluation, samples); the loop itself is gptkit.training.loop.fit, shared
with the task fine-tuning of finetune.py. A resumed run continues the uninterrupted one value for value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gptkit.errors import ConfigError
from gptkit.models import lora
from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT, build_model, load_model, save_model, with_dropout
from gptkit.models.loading import load_pretrained
from gptkit.training.best import LOSSES, PERPLEXITY
from gptkit.training.config import TrainConfig
from gptkit.training.distributed import DistInfo
from gptkit.training.evaluate import eval_mode
from gptkit.training.events import OnEvent, ShouldStop, TrainResult
from gptkit.training.loop import TRAIN_CONFIG_FILE, Objective, TrainingError, fit

__all__ = ["TRAIN_CONFIG_FILE", "TrainResult", "TrainingError", "WindowSampler", "language_modelling", "train"]


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

    def state(self) -> Tensor:
        return self.generator.get_state()

    def load_state(self, state: Tensor) -> None:
        self.generator.set_state(state)


# -- setting up -----------------------------------------------------------------------------------


def _open_data(config: TrainConfig) -> Any:
    from gptkit.training.data import TokenData

    if not config.data:
        raise ConfigError("TrainConfig.data: language modelling needs a data directory written by `gptkit prepare`")
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
        overrides = {
            "vocab_size": data.vocab_size,
            "n_positions": config.block_size,
            "eos_token_id": data.eos_token_id,
            "bos_token_id": data.eos_token_id,
            **config.model_overrides,
        }
        model_config = GPTConfig.from_name(config.model, **overrides)
        torch.manual_seed(config.seed)  # fit's own RNG scope, not the caller's
        model, tokenizer = GPT(model_config), data.tokenizer
    else:
        model, tokenizer = load_pretrained(config.model)
        if tokenizer is not None:
            from gptkit.training.data import tokenizer_fingerprint

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
        raise TrainingError(f"block_size {config.block_size} exceeds the model's context of {model.config.n_positions}")
    if config.dropout is not None:
        model = with_dropout(model, config.dropout)
    return model.to(device).train(), tokenizer


def language_modelling(config: TrainConfig, device: torch.device, resume_from: Path | None) -> Objective:
    """The objective of `gptkit train`: next-token loss on random windows of a prepared token stream."""
    data = _open_data(config)
    if resume_from is not None:
        model = load_model(resume_from, device=device).train()
        _check_resumed_settings(config, model.config, resume_from)
        from gptkit.text.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_pretrained(resume_from)
        if config.dropout is not None:
            model = with_dropout(model, config.dropout)
        if config.lora is not None:
            lora.load_adapter(model, resume_from)
    else:
        model, tokenizer = _build_model(config, data, device)
        if config.lora is not None:
            lora.apply_lora(model, config.lora)
    lora.mark_trainable(model, config.trainable_mode)
    model = model.to(device)
    sampler = WindowSampler(data.train, config.block_size, config.seed)

    def loss(module: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        windows = batch["windows"]
        logits = module(windows[:, :-1]).logits
        return F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten()), windows[:, 1:].numel()

    def save(trained: torch.nn.Module, state: dict[str, Tensor], directory: Path) -> None:
        """The model (its base weights, when it has adapters) and, with LoRA, the adapter in peft's format."""
        plain = build_model(model.config, state) if config.fsdp else model
        with lora.without_adapters(plain):
            save_model(plain, directory, tokenizer=tokenizer)
        if config.lora is not None:
            lora.save_adapter(plain, directory, config=config.lora, base_model_name_or_path=config.model)

    def sample(trained: torch.nn.Module) -> str:
        return sample_text(model, tokenizer, config) if tokenizer is not None else ""

    return Objective(
        model=model,
        tokenizer=tokenizer,
        sampler=sampler,
        collate=lambda windows: {"windows": windows},
        count=lambda windows: windows.shape[0] * config.block_size,
        loss=loss,
        evaluate=lambda trained, autocast: _evaluate(model, data, config, autocast),
        save=save,
        fingerprint=data.fingerprint,
        sample=sample,
        metrics={**LOSSES, **PERPLEXITY, "train_eval_loss": "min"},  # as _evaluate reports them
    )


def _check_resumed_settings(config: TrainConfig, model_config: GPTConfig, resume_from: Path) -> None:
    clash = {
        k: (v, getattr(model_config, k, None))
        for k, v in config.model_overrides.items()
        if getattr(model_config, k, None) != v
    }
    if clash:
        raise TrainingError(
            f"{resume_from} holds a model with "
            + ", ".join(f"{k}={old!r}" for k, (_, old) in clash.items())
            + " but the settings ask for "
            + ", ".join(f"{k}={new!r}" for k, (new, _) in clash.items())
            + "; resume with the run's own model settings, or start a new --out-dir"
        )


def train(
    config: TrainConfig,
    *,
    on_event: OnEvent | None = None,
    should_stop: ShouldStop | None = None,
    dist: DistInfo | None = None,
) -> TrainResult:
    """Pre-train or fine-tune a language model as `config` says; return the final figures.

    `on_event` receives the run's progress events; `should_stop()`, asked before each step, ends the run early
    with a checkpoint to resume from; `dist` places this process in a distributed run (see `loop.fit`).
    """
    return fit(config, language_modelling, on_event=on_event, should_stop=should_stop, dist=dist)


def _evaluate(model: GPT, data: Any, config: TrainConfig, autocast: Any) -> dict[str, float]:
    losses = estimate_loss(model, data, config, next(model.parameters()).device, autocast)
    return {
        "val_loss": losses["val"],
        "val_perplexity": math.exp(min(losses["val"], 50)),
        "train_eval_loss": losses["train"],
    }


@torch.inference_mode()
def estimate_loss(model: GPT, data: Any, config: TrainConfig, device: torch.device, autocast: Any) -> dict[str, float]:
    """Mean loss over `eval_batches` windows per split; the same windows at every evaluation."""
    out = {}
    with eval_mode(model):
        for split in ("train", "val"):
            sampler = WindowSampler(getattr(data, split), config.block_size, config.seed + 1)
            losses = []
            for _ in range(config.eval_batches):
                batch = sampler.draw(config.batch_size).to(device)
                with autocast:
                    logits = model(batch[:, :-1]).logits
                losses.append(F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten()).item())
            out[split] = sum(losses) / len(losses)
    return out


def sample_text(model: GPT, tokenizer: Any, config: TrainConfig) -> str:
    """A short continuation of `sample_prompt`, seeded, for a look at progress; RNG state untouched."""
    from gptkit.generation.generate import generate
    from gptkit.generation.sampling import SamplingParams

    params = SamplingParams(
        max_new_tokens=min(config.sample_tokens, model.config.n_positions - 1),
        seed=config.seed,
        top_k=200,
        truncate=True,
    )
    with eval_mode(model):
        text = generate(model, config.sample_prompt, params, tokenizer=tokenizer, allow_special=True)[0].text
    return config.sample_prompt + text
