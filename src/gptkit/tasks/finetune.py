"""Task fine-tuning: `finetune(task, train)` trains a head (or LoRA adapters) for one task with the one loop.

Each task is a `tasks.Recipe`: how its files are read and encoded into rows, and how predictions become the
metrics of the field. Everything else (epochs over shuffled examples, padding, the loss weighted by its
number of targets, LoRA and partial training, checkpoints that `transformers` and `peft` load) is shared.
The tasks: classify (sequence classification), tag (token classification, CoNLL), qa (extractive, SQuAD),
choice (multiple choice, SWAG) and instruct (prompt -> completion or chat, loss on the answers only).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gptkit.errors import ConfigError, DataError
from gptkit.models import lora
from gptkit.models.config import IGNORE_INDEX, GPTConfig
from gptkit.models.gpt import GPT, with_dropout
from gptkit.models.pooling import right_pad
from gptkit.tasks.bundle import TASK_FILE, load
from gptkit.tasks.config import TaskConfig
from gptkit.tasks.heads import TaskModel, load_task_model, save_task_model
from gptkit.tasks.recipes import Recipe, Row
from gptkit.tasks.registry import TASK_TYPES, TaskSpec
from gptkit.training.best import LOSSES, PERPLEXITY
from gptkit.training.config import TrainConfig
from gptkit.training.data import tokenizer_fingerprint
from gptkit.training.distributed import DistInfo
from gptkit.training.evaluate import eval_mode
from gptkit.training.events import OnEvent, ShouldStop, TrainResult
from gptkit.training.loop import Batch, Objective, TrainingError, fit

LENGTH_GROUP = 50  # global batches per length-sorted group (transformers' group_by_length megabatch)


# -- sampling and batching ------------------------------------------------------------------------


class EpochSampler:
    """Example indices in a fresh seeded shuffle each epoch; a draw continues into the next epoch.

    With `lengths` and `group` > 1, each epoch's shuffle is cut into groups of `group` examples and each group
    is sorted longest first (transformers' group_by_length "megabatches"): consecutive draws then hold
    examples of similar length, so padded batches waste little, while the order stays random across groups.
    """

    def __init__(self, n: int, seed: int, *, lengths: Sequence[int] | None = None, group: int = 0) -> None:
        self.n = n
        self.lengths = None if lengths is None else torch.tensor(lengths)
        self.group = group
        self.generator = torch.Generator().manual_seed(seed)
        self.order = self._shuffle()
        self.position = 0

    def _shuffle(self) -> Tensor:
        order = torch.randperm(self.n, generator=self.generator)
        if self.lengths is None or self.group <= 1:
            return order
        chunks = [chunk[self.lengths[chunk].argsort(descending=True, stable=True)] for chunk in order.split(self.group)]
        return torch.cat(chunks)

    def draw(self, k: int) -> Tensor:
        taken = []
        while k > 0:
            if self.position == self.n:
                self.order, self.position = self._shuffle(), 0
            part = self.order[self.position : self.position + k]
            taken.append(part)
            self.position += len(part)
            k -= len(part)
        return torch.cat(taken)

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]


def collate(rows: Sequence[Row], pad_id: int) -> Batch:
    """Rows -> tensors: ids right-padded with pad_id plus an attention mask, token labels padded with -100.

    Multiple choice rows hold K sequences each: their ids become (N, K, T).
    """
    ids = [r["input_ids"] for r in rows]
    nested = isinstance(ids[0][0], list)
    flat = [s for choices in ids for s in choices] if nested else ids
    input_ids = right_pad(flat, pad_id)
    mask = right_pad([[1] * len(s) for s in flat], 0)
    if nested:
        input_ids, mask = (t.view(len(rows), len(ids[0]), -1) for t in (input_ids, mask))
    batch: Batch = {"input_ids": input_ids, "attention_mask": mask}
    for key in rows[0].keys() - {"input_ids"}:
        values = [r[key] for r in rows]
        if key == "labels" and isinstance(values[0], list) and not isinstance(values[0][0], float):
            batch[key] = right_pad(values, IGNORE_INDEX)  # token labels
        else:
            batch[key] = torch.tensor(values)
    return batch


@dataclass
class FinetuneResult:
    train: TrainResult
    metrics: dict[str, float]
    run_dir: Path
    skipped_rows: int = 0  # bad rows skipped while reading the files (TaskConfig.on_error == "skip")


# -- model setup ----------------------------------------------------------------------------------


def _tokenizer_for(family: str | None) -> Any:
    from gptkit.text.tokenizer import Tokenizer

    return Tokenizer.from_pretrained("openai-gpt" if family == "openai-gpt" else "gpt2")


def base_model(train: TrainConfig, max_length: int) -> tuple[GPT, Any]:
    """The GPT to fine-tune and its tokenizer: a checkpoint (pretrained) or a fresh preset (scratch)."""
    if train.init_from == "pretrained":
        bundle = load(train.model, lm=True)
        model, tokenizer = bundle.model, bundle.tokenizer or _tokenizer_for(bundle.model.config.family)
    else:
        config = GPTConfig.from_name(train.model, **train.model_overrides)
        tokenizer = _tokenizer_for(config.family)
        config = config.replace(vocab_size=max(config.vocab_size, tokenizer.vocab_size))
        torch.manual_seed(train.seed)
        model = GPT(config)
    if max_length > model.config.n_positions:
        raise ConfigError(
            f"max_length {max_length} exceeds {train.model}'s context of "
            f"{model.config.n_positions} tokens; pass --max-length {model.config.n_positions} or less"
        )
    if train.dropout is not None:
        model = with_dropout(model, train.dropout)
    return model, tokenizer


def file_fingerprint(*paths: str | None, settings: dict[str, Any]) -> str:
    """sha256 of `settings` and the files' bytes (the run's data: its files and tokenizer, never its options)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in paths:
        if path is not None:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


# -- the run --------------------------------------------------------------------------------------


def _read_sets(task: TaskConfig, recipe: Recipe, seed: int) -> tuple[list[Any], list[Any], Any, int]:
    """Training and evaluation examples, the label vocabulary, and the number of bad rows skipped."""
    train_examples, skipped = recipe.read(task, task.train_file, None)
    labels = recipe.labels(task, train_examples)
    if task.eval_file is not None:
        eval_examples, more = recipe.read(task, task.eval_file, labels)
        return train_examples, eval_examples, labels, skipped + more
    if len(train_examples) < 2:
        raise DataError(f"{task.train_file}: {len(train_examples)} example; give at least 2, or an --eval file")
    order = torch.randperm(len(train_examples), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[: max(1, len(order) // 10)])  # no eval file: a seeded 10% of the examples is held out
    return (
        [x for i, x in enumerate(train_examples) if i not in held],
        [x for i, x in enumerate(train_examples) if i in held],
        labels,
        skipped,
    )


def _build_model(
    task: TaskConfig,
    train: TrainConfig,
    recipe: Recipe,
    labels: Any,
    vocab_size: int,
    device: torch.device,
    resume_from: Path | None,
) -> nn.Module:
    """The model to train: a heads.TaskModel, or the GPT itself for instruct; with an embedding for each of the
    run tokenizer's `vocab_size` tokens (a task's added tokens get new ones)."""
    from gptkit.models.gpt import load_model, resize_token_embeddings

    fields = recipe.head(task, labels)
    spec = None if fields is None else TaskSpec(task.task, **fields)
    if resume_from is not None:
        model = load_model(resume_from) if spec is None else load_task_model(resume_from)
        if isinstance(model, TaskModel):
            model.aux_lm_weight = task.aux_lm_weight
        if train.lora is not None:
            lora.load_adapter(model, resume_from)
    else:
        gpt, _ = base_model(train, task.max_length)
        torch.manual_seed(train.seed)  # the new head's initialisation (and dropout) repeat (fit's RNG scope)
        if vocab_size > gpt.config.vocab_size:
            resize_token_embeddings(gpt, vocab_size)
        model = gpt if spec is None else TaskModel(gpt, spec, aux_lm_weight=task.aux_lm_weight)
        if train.lora is not None:
            lora.apply_lora(model, train.lora)
    lora.mark_trainable(model, train.trainable_mode)
    return model.to(device).train()


def _size(ids: list[Any]) -> int:
    """Tokens of a row's input: its length, or its longest candidate's (multiple choice)."""
    return max(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)


def _tokens(ids: list[Any]) -> int:
    """Real tokens a row puts through the model: its length, or all its candidates' (multiple choice)."""
    return sum(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)


def predict_outputs(
    model: nn.Module,
    rows: Sequence[Row],
    targets: Sequence[int],
    pad_id: int,
    fields: Sequence[str],
    batch_size: int,
    autocast: Any,
) -> tuple[float, dict[str, list[Tensor]]]:
    """Mean loss over the rows' targets and, per row, the output fields asked for (on the CPU)."""
    device = next(model.parameters()).device
    # in order of length, so that batches hold similar lengths and little padding; outputs in row order
    order = sorted(range(len(rows)), key=lambda i: _size(rows[i]["input_ids"]))
    total, outputs = 0.0, {name: [torch.empty(0)] * len(rows) for name in fields}
    with torch.inference_mode(), eval_mode(model):
        for first in range(0, len(order), batch_size):
            picked = order[first : first + batch_size]
            batch = {k: v.to(device) for k, v in collate([rows[i] for i in picked], pad_id).items()}
            with autocast:
                out = model(**batch)
            if out.loss is not None:
                total += out.loss.float().item() * sum(targets[i] for i in picked)
            for name in fields:
                for i, value in zip(picked, getattr(out, name).float().cpu().unbind(0), strict=True):
                    outputs[name][i] = value
    return total / max(sum(targets), 1), outputs


def run_tokenizer(train: TrainConfig) -> Any:
    """The tokenizer the run uses: the resumed checkpoint's, the pretrained model's, or its family's."""
    from gptkit.models.checkpoint import load_tokenizer, read_config, resolve
    from gptkit.text.tokenizer import Tokenizer
    from gptkit.training.checkpoints import latest_training_checkpoint

    if train.init_from == "resume":
        latest = latest_training_checkpoint(Path(train.out_dir))
        if latest is None:
            raise TrainingError(f"{train.out_dir}: nothing to resume (no checkpoints/step-* with a trainer state)")
        return Tokenizer.from_pretrained(latest)
    if train.init_from == "pretrained":
        source = resolve(train.model)
        return load_tokenizer(source) or _tokenizer_for(read_config(source.path).family)
    return _tokenizer_for(GPTConfig.from_name(train.model).family)


TASK_RESUMABLE = frozenset({"train_file", "eval_file", "epochs", "on_error"})  # the files are fingerprinted


def saved_task(run_dir: Path) -> dict[str, Any]:
    """The TaskConfig fields a fine-tuning run recorded in its task.json."""
    path = run_dir / TASK_FILE
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["task"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the run's task settings ({exc}); is this a `gptkit finetune` run?"
        ) from exc


def check_task_resume(task: TaskConfig, run_dir: Path) -> None:
    """Refuse a resume whose task settings differ from the run's (other than its files and length), naming both."""
    if not (run_dir / TASK_FILE).is_file():
        return
    saved = saved_task(run_dir)
    clash = [
        f"--{k.replace('_', '-')} {getattr(task, k)!r} (the run has {v!r})"
        for k, v in saved.items()
        if k not in TASK_RESUMABLE and hasattr(task, k) and getattr(task, k) != v
    ]
    if clash:
        raise ConfigError(
            f"{run_dir}: a resumed run keeps its task settings, but " + ", ".join(clash) + " differ; drop them to "
            "continue the run, or start a new one (another --out-dir, or --overwrite)"
        )


def finetune(
    task: TaskConfig,
    train: TrainConfig,
    *,
    on_event: OnEvent | None = None,
    should_stop: ShouldStop | None = None,
    dist: DistInfo | None = None,
) -> FinetuneResult:
    """Fine-tune train.model on task.train_file for task.task with the one training loop; return the figures.

    The run directory (train.out_dir) ends up holding the model as the matching `transformers` class (plus a
    peft adapter when train.lora is set), task.json, the tokenizer, metrics.jsonl and curves.png. With
    task.epochs set, train.max_steps becomes the steps of that many passes over the training rows (on every
    process of `dist`). The data comes from `task` alone (train.data is for language modelling). `on_event`,
    `should_stop` and `dist` are `loop.fit`'s; bad rows skipped are counted in the result.
    """
    recipe = TASK_TYPES[task.task].recipe
    if train.fsdp:
        raise ConfigError("FSDP is for pre-training large models; fine-tune with DDP (drop --fsdp)")
    if train.trainable == "head" and task.task == "instruct":
        raise ConfigError(
            "--trainable head: instruction tuning trains the language model, which has no "
            "separate head; use --lora-r N, --trainable last:N or all"
        )
    if train.init_from == "resume":
        check_task_resume(task, Path(train.out_dir))
    train_examples, eval_examples, labels, skipped = _read_sets(task, recipe, train.seed)
    tokenizer = run_tokenizer(train)
    if recipe.tokenizer is not None:
        tokenizer = recipe.tokenizer(tokenizer)
    pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    train_set = recipe.encode(task, train_examples, tokenizer, labels)
    eval_set = recipe.encode(task, eval_examples, tokenizer, labels)
    rows, targets = train_set.rows, torch.tensor(train_set.targets)
    tokens = torch.tensor([_tokens(r["input_ids"]) for r in rows])
    info = dist if dist is not None else DistInfo.from_env()
    per_step = train.batch_size * train.grad_accum * info.world_size  # examples per step
    if task.epochs is not None:
        train = train.replace(max_steps=max(1, math.ceil(task.epochs * len(rows) / per_step)))
    language_model = recipe.head(task, labels) is None  # instruct
    last: dict[str, float] = {}

    def build(config: TrainConfig, device: torch.device, resume_from: Path | None) -> Objective:
        model = _build_model(task, config, recipe, labels, tokenizer.vocab_size, device, resume_from)

        def loss(module: nn.Module, batch: Batch) -> tuple[Tensor, int]:
            n = int(batch.pop("_targets").sum())
            return module(**batch).loss, n

        def evaluate(module: nn.Module, autocast: Any) -> dict[str, float]:
            val_loss, outputs = predict_outputs(
                model, eval_set.rows, eval_set.targets, pad_id, recipe.outputs, config.batch_size, autocast
            )
            result = {"val_loss": val_loss, **recipe.score(outputs, eval_set, labels)}
            if language_model:
                result["val_perplexity"] = math.exp(min(val_loss, 50))
            last.clear()
            last.update(result)
            return result

        sampler = EpochSampler(
            len(rows),
            config.seed,
            lengths=[_size(r["input_ids"]) for r in rows],
            group=LENGTH_GROUP * per_step if task.group_by_length else 0,
        )

        def collate_items(items: Tensor) -> Batch:
            batch = collate([rows[i] for i in items.tolist()], pad_id)
            batch["_targets"] = targets[items]
            return batch

        return Objective(
            model=model,
            tokenizer=tokenizer,
            sampler=sampler,
            collate=collate_items,
            count=lambda items: int(targets[items].sum()),
            loss=loss,
            evaluate=evaluate,
            save=lambda module, state, directory: _save(model, tokenizer, task, config, recipe, labels, directory),
            fingerprint=file_fingerprint(
                task.train_file, task.eval_file, settings={"tokenizer": tokenizer_fingerprint(tokenizer)}
            ),
            data=task.train_file,
            tokens=lambda items: int(tokens[items].sum()),
            unit=recipe.unit,
            metrics={**LOSSES, **recipe.metrics(task), **(PERPLEXITY if language_model else {})},
        )

    result = fit(train, build, on_event=on_event, should_stop=should_stop, dist=info)
    return FinetuneResult(result, dict(last), Path(train.out_dir), skipped)


def _save(
    model: nn.Module, tokenizer: Any, task: TaskConfig, train: TrainConfig, recipe: Recipe, labels: Any, directory: Path
) -> None:
    """A checkpoint directory: the model (as transformers' class for its task), tokenizer, adapter, task.json."""
    from gptkit.io import atomic_write_text
    from gptkit.models.gpt import save_model

    with lora.without_adapters(model):
        if isinstance(model, TaskModel):
            save_task_model(model, directory, tokenizer=tokenizer)
        else:
            save_model(model, directory, tokenizer=tokenizer)
    if task.task == "instruct":
        from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, save_chat_template

        save_chat_template(directory, task.chat_template or DEFAULT_CHAT_TEMPLATE)
    if train.lora is not None:
        kind = TASK_TYPES[task.task]
        lora.save_adapter(
            model,
            directory,
            config=train.lora,
            base_model_name_or_path=train.model,
            task_type=kind.peft_task_type,
            modules_to_save=(kind.head_name,) if kind.head is not None else (),
        )
    description = {
        "task": asdict(task),
        "labels": None if labels is None else list(labels.labels),
        "lora": train.lora is not None,
        "base_model": train.model,
    }
    atomic_write_text(directory / TASK_FILE, json.dumps(description, indent=2) + "\n")
