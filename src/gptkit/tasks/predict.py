"""Using a fine-tuned model: load a run directory, score a labelled file, predict on an unlabelled one.

A fine-tuning run directory holds the model (a transformers task class, or a GPT for instruct), the
tokenizer, task.json (the TaskConfig and label names) and, for LoRA runs, a peft adapter. `gptkit eval
--labelled FILE` and `gptkit predict` are these functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptkit.errors import CheckpointError
from gptkit.io import read_json
from gptkit.models import lora
from gptkit.tasks.config import TaskConfig
from gptkit.tasks.finetune import TASK_FILE, _predict_outputs
from gptkit.tasks.recipes import RECIPES, Recipe


@dataclass
class Finetuned:
    """A fine-tuned model ready to use (eval mode), with what it was trained on."""

    model: nn.Module  # heads.TaskModel, or the GPT itself for instruct
    tokenizer: Any
    task: TaskConfig
    labels: Any  # task_data.LabelMap, or None (qa, choice, instruct, regression)
    directory: Path

    @property
    def recipe(self) -> Recipe:
        return RECIPES[self.task.task]

    @property
    def pad_id(self) -> int:
        return self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0


def load_finetuned(
    directory: str | os.PathLike[str], *, device: torch.device | str | None = None, merge: bool = False
) -> Finetuned:
    """Load a run directory written by `finetune` (its root, best/ or a checkpoint). merge: fold LoRA in."""
    from gptkit.models.gpt import load_model
    from gptkit.tasks.data import LabelMap
    from gptkit.tasks.heads import load_task_model
    from gptkit.text.tokenizer import Tokenizer

    folder = Path(directory)
    description = read_json(
        folder / TASK_FILE, CheckpointError, missing="is missing: this is not a `gptkit finetune` directory"
    )
    task = TaskConfig(**description["task"])
    labels = LabelMap(tuple(description["labels"])) if description.get("labels") else None
    model = load_model(folder) if task.task == "instruct" else load_task_model(folder)
    if (folder / lora.ADAPTER_CONFIG_FILE).is_file():
        lora.load_adapter(model, folder)
        if merge:
            lora.merge_lora(model)
    return Finetuned(model.to(device).eval(), Tokenizer.from_pretrained(folder), task, labels, folder)


def save_merged(finetuned: Finetuned, directory: str | os.PathLike[str]) -> Path:
    """Write the run with its LoRA adapter folded into the weights: a plain transformers/gptkit directory."""
    import shutil

    from gptkit.models.gpt import save_model
    from gptkit.tasks.heads import TaskModel, save_task_model

    if any(isinstance(m, lora.LoRALinear) for m in finetuned.model.modules()):
        lora.merge_lora(finetuned.model)
    out = Path(directory)
    if isinstance(finetuned.model, TaskModel):
        save_task_model(finetuned.model, out, tokenizer=finetuned.tokenizer)
    else:
        save_model(finetuned.model, out, tokenizer=finetuned.tokenizer)
    for name in (TASK_FILE, "tokenizer_config.json", "chat_template.jinja"):  # task description, chat template
        if (finetuned.directory / name).is_file():
            shutil.copyfile(finetuned.directory / name, out / name)
    return out


def evaluate_file(finetuned: Finetuned, path: str | os.PathLike[str], *, batch_size: int = 16) -> dict[str, float]:
    """The task's metrics (and loss) on a labelled file in the training format."""
    task, recipe = finetuned.task, finetuned.recipe
    examples, _ = recipe.read(task, str(path), finetuned.labels)
    encoded = recipe.encode(task, examples, finetuned.tokenizer, finetuned.labels)
    loss, outputs = _predict_outputs(
        finetuned.model, encoded.rows, encoded.targets, finetuned.pad_id, recipe.outputs, batch_size, nullcontext()
    )
    return {"loss": loss, **recipe.score(outputs, encoded, finetuned.labels), "examples": float(len(examples))}


def predict(
    finetuned: Finetuned, path: str | os.PathLike[str], *, batch_size: int = 16, max_new_tokens: int = 128
) -> Iterator[dict[str, Any]]:
    """One JSON-ready prediction per example of an unlabelled (or labelled: labels are ignored) file."""
    from gptkit.tasks import choice, tagging
    from gptkit.tasks import data as task_data

    task, tok = finetuned.task, finetuned.tokenizer
    if task.task == "instruct":
        yield from _complete(finetuned, path, max_new_tokens)
        return
    if task.task == "classify":
        examples = task_data.read_labelled(
            path,
            text_column=task.text_column,
            label_column=None,
            text_pair_column=task.text_pair_column,
            fmt=task.format,
            on_error=task.on_error,
        ).examples
        rows = task_data.encode_labelled(
            tok, task_data.LabelledSet("input", examples), None, max_length=task.max_length
        ).input_ids
    elif task.task == "tag":
        examples = tagging.read_conll(
            path, token_column=task.token_column, tag_column=None, on_error=task.on_error
        ).examples
        features = tagging.encode_tagging(tok, examples, None, max_length=task.max_length)
        rows = features.input_ids
    elif task.task == "qa":
        from gptkit.tasks.qa import encode_qa, read_squad

        examples = read_squad(path, on_error=task.on_error)
        features = encode_qa(tok, examples, max_length=task.max_length, stride=task.stride)
        rows = [f.input_ids for f in features]
    else:
        examples = choice.read_choice(path, on_error=task.on_error, require_label=False).examples
        rows = choice.encode_choice(tok, examples, max_length=task.max_length).input_ids
    _, outputs = _predict_outputs(
        finetuned.model,
        [{"input_ids": r} for r in rows],
        [1] * len(rows),
        finetuned.pad_id,
        finetuned.recipe.outputs,
        batch_size,
        nullcontext(),
    )
    yield from _shape(finetuned, examples, outputs, features if task.task in ("tag", "qa") else None)


def _shape(
    finetuned: Finetuned, examples: list[Any], outputs: dict[str, list[Any]], features: Any
) -> Iterator[dict[str, Any]]:
    task, labels = finetuned.task.task, finetuned.labels
    if task == "qa":
        from gptkit.tasks.qa import best_spans

        answers = best_spans(
            features,
            [t.tolist() for t in outputs["start_logits"]],
            [t.tolist() for t in outputs["end_logits"]],
            allow_impossible=True,
        )
        for ex in examples:
            yield {"id": ex.id, "question": ex.question, "answer": answers.get(ex.id, "")}
        return
    for i, (ex, logits) in enumerate(zip(examples, outputs["logits"], strict=True)):
        if task == "tag":
            from gptkit.tasks.tagging import words_from_tokens

            word_ids = features.word_ids[i]
            ids = words_from_tokens(word_ids, logits[: len(word_ids)].argmax(-1).tolist(), len(ex.tokens))
            yield {
                "tokens": ex.tokens,
                "tags": [labels.labels[j] if j is not None else "O" for j in ids],
                "line": ex.line,
            }
        elif task == "choice":
            yield {
                "context": ex.context,
                "label": int(logits.argmax()),
                "scores": logits.softmax(-1).tolist(),
                "line": ex.line,
            }
        elif labels is None:  # regression
            yield {"text": ex.text, "score": float(logits[0]), "line": ex.line}
        elif finetuned.task.problem_type == "multi":
            yield {
                "text": ex.text,
                "labels": [labels.labels[j] for j, v in enumerate(logits.tolist()) if v > 0],
                "scores": logits.sigmoid().tolist(),
                "line": ex.line,
            }
        else:
            probs = logits.softmax(-1)
            yield {
                "text": ex.text,
                "label": labels.labels[int(probs.argmax())],
                "scores": dict(zip(labels.labels, probs.tolist(), strict=True)),
                "line": ex.line,
            }


def _complete(finetuned: Finetuned, path: str | os.PathLike[str], max_new_tokens: int) -> Iterator[dict[str, Any]]:
    """Instruct models: each prompt (or chat) rendered as in training, then greedy generation to eos."""
    from gptkit.errors import DataError
    from gptkit.generation.generate import generate
    from gptkit.generation.sampling import SamplingParams
    from gptkit.text.chat_template import load_chat_template, render_chat
    from gptkit.training.corpus import BadRow, iter_records

    template = load_chat_template(finetuned.directory)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    for item in iter_records(path, "jsonl"):
        if isinstance(item, BadRow):
            raise DataError(str(item))
        line, record = item
        if "messages" in record:
            prompt = render_chat(
                record["messages"], template, add_generation_prompt=True, eos_token=finetuned.tokenizer.eos_token
            )
        elif isinstance(record.get("prompt"), str):
            prompt = record["prompt"]
        else:
            raise DataError(f'{path}:{line}: expected a "prompt" string or a "messages" list')
        text = generate(finetuned.model, prompt, params, tokenizer=finetuned.tokenizer)[0].text
        yield {**record, "completion": text, "line": line}


def write_jsonl(records: Iterator[dict[str, Any]], out: Any) -> int:
    n = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        n += 1
    return n
