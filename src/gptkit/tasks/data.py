"""Labelled task data: what every task reader shares, and classification; readers report each bad row as file:line.

Readers return a set (source, examples, skipped). on_error="fail" raises DataError at the first bad row;
"skip" drops it and lists it in `skipped` (BadRows: print their count, or each one). A problem with the
whole file (unreadable, a missing column, no example at all) always raises DataError. `collect`, `reject`,
`check_on_error`, `unpack` and `require_eos` are the helpers every reader and encoder is built on.

- Classification (`read_labelled`): CSV/TSV with a header, or JSONL. task "single": one label per text;
  "multi": a JSON list of labels, or a string of labels separated by `label_delimiter` (default ","), where
  an explicit [] means none of the labels; "regression": a finite number. `LabelMap` numbers the labels of a
  training set (or the tags of a tagging set); passed to the reader of an eval/predict file, a label it
  lacks is a bad row.
- Token tagging (CoNLL) lives in gptkit.tasks.tagging, multiple choice (SWAG) in gptkit.tasks.choice, instruction tuning
  (prompt/completion and chat JSONL) in gptkit.text.chat_template; all are built on the helpers here.

Encoders (no torch) return ids and labels aligned position by position (-100 = no loss; a model shifts them
itself as Hugging Face models do) and count the sequences they truncated to max_length. Padding is left to
the batch collator; `pack` (gptkit.text.chat_template) instead concatenates examples into full blocks.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from gptkit.errors import ConfigError, DataError
from gptkit.models.config import IGNORE_INDEX
from gptkit.training.corpus import BadRow, MissingColumnsError, OnError, iter_records

if TYPE_CHECKING:
    from gptkit.text.tokenizer import Tokenizer

__all__ = [
    "IGNORE_INDEX",
    "ClassFeatures",
    "LabelMap",
    "LabelledExample",
    "LabelledSet",
    "TaskSet",
    "TokenFeatures",
    "encode_labelled",
    "read_labelled",
]

Task = Literal["single", "multi", "regression"]
Label = str | list[str] | float | None


# --- examples, sets and features ----------------------------------------------------------------


@dataclass(frozen=True)
class LabelledExample:
    text: str
    text_pair: str | None
    label: Label  # single: str, multi: list of str, regression: float, None when read without labels
    line: int


E = TypeVar("E")
S = TypeVar("S", bound="TaskSet[Any]")


@dataclass
class TaskSet(Generic[E]):
    """What a reader read: its examples, and the bad rows it skipped (on_error="skip")."""

    source: str
    examples: list[E] = field(default_factory=list)
    skipped: list[BadRow] = field(default_factory=list)
    task: str = ""

    def __len__(self) -> int:
        return len(self.examples)


@dataclass
class LabelledSet(TaskSet[LabelledExample]):
    task: str = "single"  # or "multi", "regression"


@dataclass
class TokenFeatures:
    """Per sequence: ids and equally long labels; word_ids (tagging) give the word of each token."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    word_ids: list[list[int | None]] | None = None
    truncated: int = 0  # sequences cut to max_length
    dropped: int = 0  # sequences left without any label by the cut, and not returned


@dataclass
class ClassFeatures:
    input_ids: list[list[int]]
    labels: list[int | list[float] | float | None]  # class id, multi-hot row, or target
    truncated: int = 0


# --- label vocabulary ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelMap:
    """Label strings <-> class ids. Integer labels sort numerically, others as strings."""

    labels: tuple[str, ...]

    @classmethod
    def build(cls, labels: Iterable[str]) -> LabelMap:
        distinct = set(labels)
        numeric = all(re.fullmatch(r"[+-]?\d+", s) for s in distinct)
        return cls(tuple(sorted(distinct, key=int if numeric else None)))

    @classmethod
    def from_data(cls, data: LabelledSet | TaskSet[Any]) -> LabelMap:
        """The labels of a training set (the tags of a TaggedSet); DataError when it has none."""
        if data.task == "tagging":
            found: list[str] = [t for s in data.examples for t in s.tags]
        elif data.task == "regression":
            raise ConfigError("a regression task has no label vocabulary (its single output is the number)")
        else:
            found = [x for e in data.examples for x in ([e.label] if isinstance(e.label, str) else e.label or [])]
        if not found:
            raise DataError(f"{data.source}: no labels to build the label vocabulary from")
        return cls.build(found)

    @classmethod
    def from_id2label(cls, id2label: Mapping[int | str, str]) -> LabelMap:
        """From an id2label as saved (keys may be strings, as in a Hugging Face config.json)."""
        by_id = {int(k): str(v) for k, v in id2label.items()}
        if sorted(by_id) != list(range(len(by_id))):
            raise ConfigError(f"id2label must number its labels 0..{len(by_id) - 1}, got ids {sorted(by_id)}")
        return cls(tuple(by_id[i] for i in range(len(by_id))))

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @functools.cached_property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.label2id

    def encode(self, label: str) -> int:
        if (i := self.label2id.get(label)) is None:
            raise DataError(self.unseen(label))
        return i

    def unseen(self, label: str) -> str:
        shown = list(self.labels[:20]) + (["..."] if len(self.labels) > 20 else [])
        return f"label {label!r} was not in the training labels {shown}"


# --- shared helpers ---------------------------------------------------------------------------------


def check_on_error(on_error: str) -> None:
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error={on_error!r}; expected 'fail' or 'skip'")


def reject(bad: BadRow, on_error: OnError, skipped: list[BadRow]) -> None:
    if on_error == "fail":
        raise DataError(f"{bad} (fix the row, or pass on_error='skip' / --on-error skip to skip bad rows)")
    skipped.append(bad)


def collect(result: S, items: Iterable[tuple[int, Any] | BadRow], on_error: OnError, what: str) -> S:
    """Fill an empty set with (line, example-or-reason) items (a str reason is a BadRow at that line)."""
    check_on_error(on_error)
    source = result.source
    for item in items:
        if isinstance(item, tuple) and isinstance(item[1], str):
            item = BadRow(source, item[0], item[1])
        if isinstance(item, BadRow):
            reject(item, on_error, result.skipped)
        else:
            result.examples.append(item[1])
    if not result.examples:
        raise DataError(
            f"{source}: no {what} in this file"
            + (
                f" ({len(result.skipped)} bad rows skipped, the first: {result.skipped[0]})"
                if result.skipped
                else " (is it empty?)"
            )
        )
    return result


def _label_text(value: Any) -> str | None:
    """A label as the string the label vocabulary holds (None: missing or empty)."""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def unpack(data: TaskSet[E] | Sequence[E]) -> tuple[str, list[E]]:
    """(source, examples) of a TaskSet or of a plain sequence of examples."""
    return (data.source, data.examples) if isinstance(data, TaskSet) else ("<examples>", list(data))


def require_eos(tokenizer: Tokenizer, task: str) -> int:
    if tokenizer.eos_token_id is None:
        raise ConfigError(
            f"{task} ends each sequence with the eos token, and this tokenizer has none "
            f"(GPT-1's vocabulary has no eos); use a GPT-2 tokenizer or one trained with <|endoftext|>"
        )
    return tokenizer.eos_token_id


# --- classification ---------------------------------------------------------------------------------


def read_labelled(
    path: str | os.PathLike[str],
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    text_pair_column: str | None = None,
    task: Task = "single",
    fmt: str = "auto",
    on_error: OnError = "fail",
    label_map: LabelMap | None = None,
    label_delimiter: str = ",",
) -> LabelledSet:
    """Texts and labels from CSV/TSV/JSONL (see the module docstring); label_column=None reads texts only."""
    if task not in ("single", "multi", "regression"):
        raise ConfigError(f"task={task!r}; expected 'single', 'multi' or 'regression'")
    columns = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    records = iter_records(path, fmt, columns=columns)  # type: ignore[arg-type]

    def examples() -> Iterator[tuple[int, LabelledExample | str] | BadRow]:
        try:
            for item in records:
                if isinstance(item, BadRow):
                    yield item
                    continue
                line, row = item
                yield (
                    line,
                    _labelled(row, line, text_column, text_pair_column, label_column, task, label_map, label_delimiter),
                )
        except MissingColumnsError as e:
            raise DataError(
                f"{e.source}: no column {', '.join(map(repr, e.missing))} (columns present: "
                f"{', '.join(e.header)}); pass the right text_column/label_column (--text-column, "
                f"--label-column)"
            ) from None

    return collect(LabelledSet(str(path), task=task), examples(), on_error, "labelled examples")


def _labelled(
    row: dict[str, Any],
    line: int,
    text_column: str,
    pair_column: str | None,
    label_column: str | None,
    task: Task,
    label_map: LabelMap | None,
    delimiter: str,
) -> LabelledExample | str:
    texts = [row[c] for c in (text_column, pair_column) if c is not None]
    for column, text in zip([text_column, pair_column], texts, strict=False):
        if not isinstance(text, str) or not text.strip():
            return f"{column!r} is {'empty' if isinstance(text, str) else type(text).__name__}; expected text"
    label = None if label_column is None else _parse_label(raw := row[label_column], task, delimiter)
    if label_column is not None and label is None:
        return {
            "single": f"missing or empty label in {label_column!r}",
            "multi": f"missing or empty label in {label_column!r} ({raw!r}); give a JSON list or labels "
            f"separated by {delimiter!r}",
            "regression": f"label {raw!r} in {label_column!r} is not a finite number",
        }[task]
    if label_map is not None and isinstance(label, (str, list)):
        if unseen := [x for x in ([label] if isinstance(label, str) else label) if x not in label_map]:
            return label_map.unseen(unseen[0])
    return LabelledExample(texts[0], texts[1] if len(texts) > 1 else None, label, line)


def _parse_label(raw: Any, task: Task, delimiter: str) -> Label:
    """The label of a field (None: missing, empty or not a label of this task)."""
    if task == "regression":
        try:
            value = float(raw) if isinstance(raw, (int, float, str)) and not isinstance(raw, bool) else math.nan
        except ValueError:
            value = math.nan
        return value if math.isfinite(value) else None
    if task == "single":
        return _label_text(raw)
    parts = raw if isinstance(raw, list) else raw.split(delimiter) if isinstance(raw, str) and raw.strip() else None
    names = [_label_text(p) for p in parts or []]
    return None if parts is None or None in names else list(dict.fromkeys(names))  # type: ignore[arg-type]


def encode_labelled(
    tokenizer: Tokenizer, data: LabelledSet, label_map: LabelMap | None, *, max_length: int, separator: str = "\n"
) -> ClassFeatures:
    """Ids of each text (a pair joined by `separator`) and its encoded label; a classifier pools the last token.

    Too long: the longer of a pair is cut first, from the right. Labels: a class id (single), a multi-hot
    row of floats (multi), the number (regression), None for texts read without labels.
    """
    out = ClassFeatures([], [])
    for ex in data.examples:
        first = tokenizer.encode(ex.text, disallowed_special=())
        second = [] if ex.text_pair is None else tokenizer.encode(separator + ex.text_pair, disallowed_special=())
        if len(first) + len(second) > max_length:
            out.truncated += 1
            keep_first, keep_second = _longest_first(len(first), len(second), max_length)
            first, second = first[:keep_first], second[:keep_second]
        out.input_ids.append(first + second)
        try:
            out.labels.append(_encode_label(ex.label, data.task, label_map))
        except DataError as e:
            raise DataError(f"{data.source}:{ex.line}: {e}; read the file with label_map= to skip such rows") from None
    return out


def _longest_first(a: int, b: int, n: int) -> tuple[int, int]:
    """How much of two sequences to keep in n tokens, cutting the longer first (both a + b > n)."""
    short = min(a, b)
    if 2 * short <= n:  # the shorter fits whole beside the cut longer one
        return (short, n - short) if a == short else (n - short, short)
    return (n - n // 2, n // 2) if a >= b else (n // 2, n - n // 2)


def _encode_label(label: Label, task: Task, label_map: LabelMap | None) -> int | list[float] | float | None:
    if label is None or task == "regression":
        return label  # type: ignore[return-value]
    if label_map is None:
        raise ConfigError("classification labels need a LabelMap (LabelMap.from_data(train_set))")
    if isinstance(label, list):
        row = [0.0] * len(label_map)
        for x in label:
            row[label_map.encode(x)] = 1.0
        return row
    return label_map.encode(label)  # type: ignore[arg-type]
