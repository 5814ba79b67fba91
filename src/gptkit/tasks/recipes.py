"""The five fine-tuning tasks as `Recipe`s: how each reads and encodes its files, scores predictions and
writes them as JSON records.

Reading and encoding live in data.py, tagging.py, qa.py, choice.py and instruct.py, metrics in metrics.py;
a recipe only connects them. Each recipe is one field of its task's entry in gptkit.tasks.registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gptkit.errors import ConfigError
from gptkit.tasks import choice, metrics, tagging
from gptkit.tasks import data as task_data
from gptkit.tasks import instruct as chat_data
from gptkit.tasks.config import TaskConfig
from gptkit.tasks.data import IGNORE_INDEX
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE
from gptkit.training.best import Goal

Row = dict[str, Any]


@dataclass
class Encoded:
    """Examples encoded for one task: model inputs per row, targets per row, and what scoring needs."""

    rows: list[Row]
    targets: list[int]  # per row: the loss's number of targets (1 per example, or labelled tokens)
    examples: Any  # the examples read (gold answers, words, ids)
    extra: Any = None  # per-task bookkeeping (QA windows, word ids)
    truncated: int = 0


@dataclass
class Recipe:
    """What differs between tasks; every callable is small and pure."""

    read: Callable[[TaskConfig, str, Any], tuple[list[Any], int]]  # (config, path, labels) -> (examples, skipped)
    labels: Callable[[TaskConfig, list[Any]], Any]  # the label vocabulary of the training examples (or None)
    encode: Callable[[TaskConfig, list[Any], Any, Any], Encoded]  # (config, examples, tokenizer, labels)
    head: Callable[[TaskConfig, Any], dict[str, Any] | None]  # TaskSpec fields; None for a language model
    outputs: tuple[str, ...]  # the output fields scoring needs (logits, start_logits, ...)
    score: Callable[[dict[str, list[Tensor]], Encoded, Any], dict[str, float]]
    read_inputs: Callable[[TaskConfig, str], list[Any]] | None = None  # a file to predict on (labels ignored)
    predictions: Callable[[dict[str, list[Tensor]], Encoded, Any, TaskConfig], Iterator[Row]] | None = None
    unit: str = "example"  # what one target of the loss is (the curves' nats per unit)
    tokenizer: Callable[[Any], Any] | None = None  # adds the task's own tokens to the run's tokenizer
    # the names `score` always reports for a TaskConfig, and which way each gets better (--best-metric)
    metrics: Callable[[TaskConfig], dict[str, Goal]] = lambda config: {}


_PROBLEMS = {"single": "single_label_classification", "multi": "multi_label_classification", "regression": "regression"}
_LABELLED: dict[str, Goal] = {"accuracy": "max", "precision": "max", "recall": "max", "f1": "max"}
_REGRESSION: dict[str, Goal] = {"mse": "min", "pearson": "max", "spearman": "max"}


def _rows(columns: dict[str, list[Any]]) -> list[Row]:
    keys = list(columns)
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _labelled_tokens(labels: list[int], shift: int = 0) -> int:
    return sum(1 for label in labels[shift:] if label != IGNORE_INDEX)


# -- classify -------------------------------------------------------------------------------------


def _read_classify(config: TaskConfig, path: str, labels: Any) -> tuple[list[Any], int]:
    data = task_data.read_labelled(
        path,
        text_column=config.text_column,
        label_column=config.label_column,
        text_pair_column=config.text_pair_column,
        task=config.problem_type,
        fmt=config.format,
        on_error=config.on_error,
        label_map=labels,
    )
    return data.examples, len(data.skipped)


def _labels_classify(config: TaskConfig, examples: list[Any]) -> Any:
    if config.problem_type == "regression":
        return None
    return task_data.LabelMap.from_data(task_data.LabelledSet("train", examples, task=config.problem_type))


def _encode_classify(config: TaskConfig, examples: list[Any], tokenizer: Any, labels: Any) -> Encoded:
    data = task_data.LabelledSet("examples", examples, task=config.problem_type)
    features = task_data.encode_labelled(tokenizer, data, labels, max_length=config.max_length)
    rows = _rows({"input_ids": features.input_ids, "labels": features.labels})
    return Encoded(rows, [1] * len(rows), examples, truncated=features.truncated)


def _head_classify(config: TaskConfig, labels: Any) -> dict[str, Any]:
    names = None if labels is None else tuple(labels.labels)
    return dict(
        num_labels=1 if names is None else len(names), problem_type=_PROBLEMS[config.problem_type], labels=names
    )


def _score_classify(outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any) -> dict[str, float]:
    logits = torch.stack(outputs["logits"]).float()
    gold = [row["labels"] for row in encoded.rows]
    if logits.shape[-1] == 1 and labels is None:  # regression
        return metrics.regression_scores(logits[:, 0].tolist(), gold)
    if isinstance(gold[0], list):  # multi-label: a label is on where its sigmoid passes 0.5
        return metrics.multilabel_scores((logits > 0).int().tolist(), [[int(v) for v in g] for g in gold])
    return metrics.classification_scores(logits.argmax(-1).tolist(), gold)


# -- tag ------------------------------------------------------------------------------------------


def _read_tag(config: TaskConfig, path: str, labels: Any) -> tuple[list[Any], int]:
    if config.format not in ("auto", "conll"):
        raise ConfigError(f"tagging examples are CoNLL (a word and its tag per line), not {config.format}")
    data = tagging.read_conll(
        path, token_column=config.token_column, tag_column=config.tag_column, on_error=config.on_error, label_map=labels
    )
    return data.examples, len(data.skipped)


def _labels_tag(config: TaskConfig, examples: list[Any]) -> Any:
    return task_data.LabelMap.from_data(tagging.TaggedSet("train", examples))


def _encode_tag(config: TaskConfig, examples: list[Any], tokenizer: Any, labels: Any) -> Encoded:
    features = tagging.encode_tagging(tokenizer, examples, labels, max_length=config.max_length)
    rows = _rows({"input_ids": features.input_ids, "labels": features.labels})
    return Encoded(
        rows,
        [max(_labelled_tokens(r["labels"]), 1) for r in rows],
        examples,
        extra=features.word_ids,
        truncated=features.truncated,
    )


def _score_tag(outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any) -> dict[str, float]:
    predicted, gold = [], []
    for logits, word_ids, sentence in zip(outputs["logits"], encoded.extra, encoded.examples, strict=True):
        ids = logits[: len(word_ids)].argmax(-1).tolist()
        words = tagging.words_from_tokens(word_ids, ids, len(sentence.tokens))
        predicted.append([labels.labels[i] if i is not None else "O" for i in words])
        gold.append(sentence.tags)
    scores = metrics.entity_scores(predicted, gold)
    flat = [(p, g) for ps, gs in zip(predicted, gold, strict=True) for p, g in zip(ps, gs, strict=True)]
    return {
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
        "accuracy": metrics.accuracy([p for p, _ in flat], [g for _, g in flat]),
    }


# -- qa -------------------------------------------------------------------------------------------


def _read_qa(config: TaskConfig, path: str, labels: Any) -> tuple[list[Any], int]:
    from gptkit.tasks.qa import read_squad

    skipped: list[Any] = []
    fmt = "auto" if config.format == "auto" else "jsonl" if config.format == "jsonl" else "json"
    return read_squad(path, fmt=fmt, on_error=config.on_error, skipped=skipped), len(skipped)


def _encode_qa(config: TaskConfig, examples: list[Any], tokenizer: Any, labels: Any) -> Encoded:
    from gptkit.tasks.qa import encode_qa

    features = encode_qa(tokenizer, examples, max_length=config.max_length, stride=config.stride)
    rows = [
        {"input_ids": f.input_ids, "start_positions": f.start_position, "end_positions": f.end_position}
        for f in features
    ]
    return Encoded(rows, [1] * len(rows), examples, extra=features)


def _score_qa(outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any) -> dict[str, float]:
    from gptkit.tasks.qa import best_spans

    impossible = any(ex.is_impossible for ex in encoded.examples)
    predictions = best_spans(
        encoded.extra,
        [t.tolist() for t in outputs["start_logits"]],
        [t.tolist() for t in outputs["end_logits"]],
        allow_impossible=impossible,
    )
    references = {ex.id: [text for text, _ in ex.answers] for ex in encoded.examples}
    scores = metrics.squad_scores(predictions, references)
    return {k: v for k, v in scores.items() if isinstance(v, float)}


# -- choice ---------------------------------------------------------------------------------------


def _read_choice(config: TaskConfig, path: str, labels: Any) -> tuple[list[Any], int]:
    data = choice.read_choice(path, on_error=config.on_error)
    return data.examples, len(data.skipped)


def _encode_choice(config: TaskConfig, examples: list[Any], tokenizer: Any, labels: Any) -> Encoded:
    features = choice.encode_choice(tokenizer, examples, max_length=config.max_length)
    rows = _rows({"input_ids": features.input_ids, "labels": features.labels})
    return Encoded(rows, [1] * len(rows), examples, truncated=features.truncated)


def _score_choice(outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any) -> dict[str, float]:
    predicted = [int(t.argmax()) for t in outputs["logits"]]
    return {"accuracy": metrics.accuracy(predicted, [row["labels"] for row in encoded.rows])}


# -- instruct -------------------------------------------------------------------------------------


def _read_instruct(config: TaskConfig, path: str, labels: Any) -> tuple[list[Any], int]:
    data = chat_data.read_instruct(path, on_error=config.on_error)
    return data.examples, len(data.skipped)


def _encode_instruct(config: TaskConfig, examples: list[Any], tokenizer: Any, labels: Any) -> Encoded:
    features = chat_data.encode_instruct(
        tokenizer, examples, max_length=config.max_length, template=config.chat_template or DEFAULT_CHAT_TEMPLATE
    )
    if config.pack:
        features = chat_data.pack(features, config.max_length)
    rows = _rows({"input_ids": features.input_ids, "labels": features.labels})
    # the model shifts labels: position t predicts t + 1, so the first label is never a target
    return Encoded(
        rows, [max(_labelled_tokens(r["labels"], 1), 1) for r in rows], examples, truncated=features.truncated
    )


def _score_instruct(outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any) -> dict[str, float]:
    return {}  # the completion loss (and its perplexity) is the measure


# -- predictions: unlabelled input and one JSON-ready record per example ------------------------------


def _inputs_classify(config: TaskConfig, path: str) -> list[Any]:
    return task_data.read_labelled(
        path,
        text_column=config.text_column,
        label_column=None,
        text_pair_column=config.text_pair_column,
        fmt=config.format,
        on_error=config.on_error,
    ).examples


def _predict_classify(
    outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any, config: TaskConfig
) -> Iterator[Row]:
    for ex, logits in zip(encoded.examples, outputs["logits"], strict=True):
        if labels is None:  # regression
            yield {"text": ex.text, "score": float(logits[0]), "line": ex.line}
        elif config.problem_type == "multi":
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


def _inputs_tag(config: TaskConfig, path: str) -> list[Any]:
    """CoNLL (a word per line), lines (a whitespace-split sentence per line) or JSONL ({"tokens": [...]})."""
    fmt = config.format if config.format != "auto" else "jsonl" if path.lower().endswith(".jsonl") else "conll"
    if fmt in ("lines", "jsonl"):
        return tagging.read_sentences(path, jsonl=fmt == "jsonl")
    if fmt != "conll":
        raise ConfigError(f"a tagging model reads conll, lines or jsonl (--format), not {fmt}")
    return tagging.read_conll(
        path, token_column=config.token_column, tag_column=None, on_error=config.on_error
    ).examples


def _predict_tag(outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any, config: TaskConfig) -> Iterator[Row]:
    for ex, logits, word_ids in zip(encoded.examples, outputs["logits"], encoded.extra, strict=True):
        ids = tagging.words_from_tokens(word_ids, logits[: len(word_ids)].argmax(-1).tolist(), len(ex.tokens))
        yield {"tokens": ex.tokens, "tags": [labels.labels[j] if j is not None else "O" for j in ids], "line": ex.line}


def _inputs_qa(config: TaskConfig, path: str) -> list[Any]:
    from gptkit.tasks.qa import read_squad

    return read_squad(path, on_error=config.on_error)


def _predict_qa(outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any, config: TaskConfig) -> Iterator[Row]:
    from gptkit.tasks.qa import best_spans

    answers = best_spans(
        encoded.extra,
        [t.tolist() for t in outputs["start_logits"]],
        [t.tolist() for t in outputs["end_logits"]],
        allow_impossible=True,
    )
    for ex in encoded.examples:
        yield {"id": ex.id, "question": ex.question, "answer": answers.get(ex.id, "")}


def _inputs_choice(config: TaskConfig, path: str) -> list[Any]:
    return choice.read_choice(path, on_error=config.on_error, require_label=False).examples


def _predict_choice(
    outputs: dict[str, list[Tensor]], encoded: Encoded, labels: Any, config: TaskConfig
) -> Iterator[Row]:
    for ex, logits in zip(encoded.examples, outputs["logits"], strict=True):
        yield {
            "context": ex.context,
            "label": int(logits.argmax()),
            "scores": logits.softmax(-1).tolist(),
            "line": ex.line,
        }


def _no_labels(config: TaskConfig, examples: list[Any]) -> None:
    return None


CLASSIFY = Recipe(
    _read_classify,
    _labels_classify,
    _encode_classify,
    _head_classify,
    ("logits",),
    _score_classify,
    _inputs_classify,
    _predict_classify,
    metrics=lambda config: _REGRESSION if config.problem_type == "regression" else _LABELLED,
)
TAG = Recipe(
    _read_tag,
    _labels_tag,
    _encode_tag,
    lambda config, labels: dict(num_labels=len(labels), labels=tuple(labels.labels)),
    ("logits",),
    _score_tag,
    _inputs_tag,
    _predict_tag,
    unit="labelled token",
    metrics=lambda config: _LABELLED,
)
QA = Recipe(
    _read_qa,
    _no_labels,
    _encode_qa,
    lambda config, labels: {},
    ("start_logits", "end_logits"),
    _score_qa,
    _inputs_qa,
    _predict_qa,
    unit="window",
    metrics=lambda config: {"exact_match": "max", "f1": "max"},
)
CHOICE = Recipe(
    _read_choice,
    _no_labels,
    _encode_choice,
    lambda config, labels: {},
    ("logits",),
    _score_choice,
    _inputs_choice,
    _predict_choice,
    tokenizer=choice.with_choice_tokens,  # GPT-1 has no eos to score: its paper's start/delimiter/extract tokens
    metrics=lambda config: {"accuracy": "max"},
)
# instruct trains the language model itself (no head); its predictions are generated completions
INSTRUCT = Recipe(
    _read_instruct, _no_labels, _encode_instruct, lambda config, labels: None, (), _score_instruct, unit="answer token"
)
