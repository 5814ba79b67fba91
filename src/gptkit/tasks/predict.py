"""Using a fine-tuned model: score a labelled file, predict on an unlabelled one, save it with LoRA merged.

A fine-tuning run directory holds the model (a transformers task class, or a GPT for instruct), the
tokenizer, task.json (the TaskConfig and label names) and, for LoRA runs, a peft adapter; `gptkit.load(run)`
loads it as a ModelBundle. `gptkit eval --labelled FILE` and `gptkit predict` are these functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from gptkit.errors import DataError
from gptkit.models import lora
from gptkit.tasks.bundle import TASK_FILE, ModelBundle, require_run
from gptkit.tasks.config import TaskConfig
from gptkit.tasks.finetune import predict_outputs
from gptkit.tasks.heads import TaskModel, save_task_model


def save_merged(bundle: ModelBundle, directory: str | os.PathLike[str]) -> Path:
    """Write the run with its LoRA adapter folded into the weights: a plain transformers/gptkit directory."""
    import shutil

    from gptkit.models.gpt import save_model

    if any(isinstance(m, lora.LoRALinear) for m in bundle.model.modules()):
        lora.merge_lora(bundle.model)
    out = Path(directory)
    if isinstance(bundle.model, TaskModel):
        save_task_model(bundle.model, out, tokenizer=bundle.tokenizer)
    else:
        save_model(bundle.model, out, tokenizer=bundle.tokenizer)
    for name in (TASK_FILE, "tokenizer_config.json", "chat_template.jinja"):  # task description, chat template
        if (bundle.path / name).is_file():
            shutil.copyfile(bundle.path / name, out / name)
    return out


def evaluate_file(bundle: ModelBundle, path: str | os.PathLike[str], *, batch_size: int = 16) -> dict[str, float]:
    """The task's metrics (and loss) on a labelled file in the training format, and its number of examples."""
    task, labels = require_run(bundle)
    recipe = bundle.kind.recipe
    examples, _ = recipe.read(task, str(path), labels)
    encoded = recipe.encode(task, examples, bundle.tokenizer, labels)
    loss, outputs = predict_outputs(
        bundle.model, encoded.rows, encoded.targets, bundle.pad_id, recipe.outputs, batch_size, nullcontext()
    )
    return {"loss": loss, **recipe.score(outputs, encoded, labels), "examples": len(examples)}


Inputs = str | os.PathLike[str] | Sequence[str | Sequence[str] | dict[str, Any]]


def predict(
    bundle: ModelBundle,
    inputs: Inputs,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    fmt: str | None = None,
) -> Iterator[dict[str, Any]]:
    """One JSON-ready prediction per example of an unlabelled (or labelled: labels are ignored) file or list.

    inputs: a file path, or the examples themselves: the rows of the task's JSONL format (dicts), or for
    classify a text, for tag a sentence (a string split at whitespace, or a list of words) and for instruct a
    prompt. A list's records number its items from 1 in their "line" field, as a file's lines are numbered.
    fmt: a file's format (TaskConfig.format's values; None: the one the run was trained with). Tagging also
    reads "lines" (a whitespace-split sentence per line) and "jsonl" ({"tokens": [...]} per line).
    """
    if isinstance(inputs, (str, os.PathLike)):
        yield from _predict_file(bundle, inputs, batch_size, max_new_tokens, fmt)
        return
    task, _ = require_run(bundle)
    # The rows go through the task's own JSONL reader, so a list is checked exactly as a file is.
    with tempfile.TemporaryDirectory(prefix="gptkit-predict-") as folder:
        path = Path(folder) / "inputs.jsonl"
        path.write_text("".join(json.dumps(_as_record(task, item, i)) + "\n" for i, item in enumerate(inputs)))
        try:
            yield from _predict_file(bundle, path, batch_size, max_new_tokens, "jsonl")
        except DataError as exc:
            raise DataError(str(exc).replace(f"{path}:", "inputs item ").replace(str(path), "inputs")) from None


def _as_record(task: TaskConfig, item: Any, index: int) -> dict[str, Any]:
    """An in-memory example as the task's JSONL row."""
    if isinstance(item, dict):
        return item
    if task.task == "tag" and isinstance(item, Sequence) and all(isinstance(w, str) for w in item):
        return {"tokens": item.split() if isinstance(item, str) else list(item)}
    if isinstance(item, str) and task.task in ("classify", "instruct"):
        return {task.text_column: item} if task.task == "classify" else {"prompt": item}
    rows = {
        "classify": f'a text or {{"{task.text_column}": ...}}',
        "tag": 'a sentence, a list of words or {"tokens": [...]}',
        "qa": 'a dict {"id", "question", "context"}',
        "choice": 'a dict {"sent1", "sent2", "ending0", ...} or {"context", "choices"}',
        "instruct": 'a prompt, {"prompt": ...} or {"messages": [...]}',
    }
    what = type(item).__name__
    raise DataError(f"inputs item {index + 1}: {what} is not an input of {task.task}; give {rows[task.task]}")


def _predict_file(
    bundle: ModelBundle, path: str | os.PathLike[str], batch_size: int, max_new_tokens: int, fmt: str | None
) -> Iterator[dict[str, Any]]:
    task, labels = require_run(bundle)
    if fmt is not None:
        task = dataclasses.replace(task, format=fmt)  # type: ignore[arg-type]  # the readers refuse others
    recipe = bundle.kind.recipe
    if recipe.predictions is None or recipe.read_inputs is None:  # a language model: completions
        yield from _complete(bundle, path, max_new_tokens)
        return
    encoded = recipe.encode(task, recipe.read_inputs(task, str(path)), bundle.tokenizer, labels)
    rows = [{"input_ids": row["input_ids"]} for row in encoded.rows]
    _, outputs = predict_outputs(
        bundle.model, rows, [1] * len(rows), bundle.pad_id, recipe.outputs, batch_size, nullcontext()
    )
    yield from recipe.predictions(outputs, encoded, labels, task)


def _complete(bundle: ModelBundle, path: str | os.PathLike[str], max_new_tokens: int) -> Iterator[dict[str, Any]]:
    """Instruct models: each prompt (or chat) rendered as in training, then greedy generation to eos."""
    from gptkit.generation.generate import generate
    from gptkit.generation.sampling import SamplingParams
    from gptkit.text.chat_template import render_chat
    from gptkit.training.corpus import BadRow, iter_records

    template = bundle.chat_template
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    for item in iter_records(path, "jsonl"):
        if isinstance(item, BadRow):
            raise DataError(str(item))
        line, record = item
        if "messages" in record:
            prompt = render_chat(
                record["messages"], template, add_generation_prompt=True, eos_token=bundle.tokenizer.eos_token
            )
        elif isinstance(record.get("prompt"), str):
            prompt = record["prompt"]
        else:
            raise DataError(f'{path}:{line}: expected a "prompt" string or a "messages" list')
        text = generate(bundle.model, prompt, params, tokenizer=bundle.tokenizer)[0].text
        yield {**record, "completion": text, "line": line}


def write_jsonl(records: Iterator[dict[str, Any]], out: Any) -> int:
    n = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        n += 1
    return n
