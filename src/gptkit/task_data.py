"""Labelled task data: readers that report every bad row as file:line, encoders to plain lists of ids (no torch).

Readers return a set (source, examples, skipped). on_error="fail" raises DataError at the first bad row;
"skip" drops it and lists it in `skipped` (BadRows: print their count, or each one). A problem with the
whole file (unreadable, a missing column, no example at all) always raises DataError.

- Classification (`read_labelled`): CSV/TSV with a header, or JSONL. task "single": one label per text;
  "multi": a JSON list of labels, or a string of labels separated by `label_delimiter` (default ","), where
  an explicit [] means none of the labels; "regression": a finite number. `LabelMap` numbers the labels of a
  training set; passed to the reader of an eval/predict file, a label it lacks is a bad row.
- Token tagging (`read_conll`): CoNLL columns separated by whitespace, blank lines between sentences,
  -DOCSTART- lines skipped, tags O / B-X / I-X (IOB1 or IOB2). A bad line drops its whole sentence.
- Multiple choice (`read_choice`): SWAG objects (sent1, sent2, ending0..N, label) or generic ones
  ({"context" and/or "question", "choices": [...], "label"}), as a .jsonl file or a .json file holding an
  array or concatenated objects (as swag_sample.json); each example knows the line its object starts on.
- Instruction tuning (prompt/completion and chat JSONL) lives in gptkit.chat, built on the helpers here;
  its readers and encoders can also be imported from this module.

Encoders return ids and labels aligned position by position (-100 = no loss; a model shifts them itself
as Hugging Face models do) and count the sequences they truncated to max_length. Padding is left to the
batch collator; `pack` (gptkit.chat) instead concatenates examples into full blocks.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from gptkit.corpus import BadRow, MissingColumnsError, OnError, iter_records
from gptkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from gptkit.tokenizer import Tokenizer

__all__ = ["IGNORE_INDEX", "ChoiceExample", "ChoiceFeatures", "ChoiceSet", "ClassFeatures", "LabelMap",
           "LabelledExample", "LabelledSet", "Sentence", "TaggedSet", "TaskSet", "TokenFeatures", "encode_choice",
           "encode_labelled", "encode_tagging", "read_choice", "read_conll", "read_labelled", "words_from_tokens"]

IGNORE_INDEX = -100  # label of a position without loss (torch's cross_entropy default ignore_index)
Task = Literal["single", "multi", "regression"]
Label = str | list[str] | float | None
_TAG = re.compile(r"O|[BI]-\S+")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


# --- examples, sets and features ----------------------------------------------------------------


@dataclass(frozen=True)
class LabelledExample:
    text: str
    text_pair: str | None
    label: Label  # single: str, multi: list of str, regression: float, None when read without labels
    line: int


@dataclass(frozen=True)
class Sentence:
    tokens: list[str]
    tags: list[str]  # empty when read with tag_column=None
    line: int  # of its first token


@dataclass(frozen=True)
class ChoiceExample:
    context: str  # SWAG: sent1 + " " + sent2
    endings: list[str]
    label: int | None
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
class TaggedSet(TaskSet[Sentence]):
    task: str = "tagging"


@dataclass
class ChoiceSet(TaskSet[ChoiceExample]):
    task: str = "choice"


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


@dataclass
class ChoiceFeatures:
    input_ids: list[list[list[int]]]  # example -> choice -> ids (each ending in eos)
    labels: list[int | None]
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
    def from_data(cls, data: LabelledSet | TaggedSet) -> LabelMap:
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
        raise DataError(f"{bad} (fix the row, or pass on_error='skip' to skip bad rows)")
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
        raise DataError(f"{source}: no {what} in this file" + (f" ({len(result.skipped)} bad rows skipped, "
                        f"the first: {result.skipped[0]})" if result.skipped else " (is it empty?)"))
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
        raise ConfigError(f"{task} ends each sequence with the eos token, and this tokenizer has none "
                          f"(GPT-1's vocabulary has no eos); use a GPT-2 tokenizer or one trained with <|endoftext|>")
    return tokenizer.eos_token_id


# --- classification ---------------------------------------------------------------------------------


def read_labelled(path: str | os.PathLike[str], *, text_column: str = "text", label_column: str | None = "label",
                  text_pair_column: str | None = None, task: Task = "single", fmt: str = "auto",
                  on_error: OnError = "fail", label_map: LabelMap | None = None,
                  label_delimiter: str = ",") -> LabelledSet:
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
                yield line, _labelled(row, line, text_column, text_pair_column, label_column, task, label_map,
                                      label_delimiter)
        except MissingColumnsError as e:
            raise DataError(f"{e.source}: no column {', '.join(map(repr, e.missing))} (columns present: "
                            f"{', '.join(e.header)}); pass the right text_column/label_column (--text-column, "
                            f"--label-column)") from None

    return collect(LabelledSet(str(path), task=task), examples(), on_error, "labelled examples")


def _labelled(row: dict[str, Any], line: int, text_column: str, pair_column: str | None, label_column: str | None,
              task: Task, label_map: LabelMap | None, delimiter: str) -> LabelledExample | str:
    texts = [row[c] for c in (text_column, pair_column) if c is not None]
    for column, text in zip([text_column, pair_column], texts, strict=False):
        if not isinstance(text, str) or not text.strip():
            return f"{column!r} is {'empty' if isinstance(text, str) else type(text).__name__}; expected text"
    label = None if label_column is None else _parse_label(raw := row[label_column], task, delimiter)
    if label_column is not None and label is None:
        return {"single": f"missing or empty label in {label_column!r}",
                "multi": f"missing or empty label in {label_column!r} ({raw!r}); give a JSON list or labels "
                         f"separated by {delimiter!r}",
                "regression": f"label {raw!r} in {label_column!r} is not a finite number"}[task]
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


def encode_labelled(tokenizer: Tokenizer, data: LabelledSet, label_map: LabelMap | None, *, max_length: int,
                    separator: str = "\n") -> ClassFeatures:
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


# --- token tagging ----------------------------------------------------------------------------------


def read_conll(path: str | os.PathLike[str], *, token_column: int = 0, tag_column: int | None = -1,
               on_error: OnError = "fail", label_map: LabelMap | None = None) -> TaggedSet:
    """Sentences of a CoNLL file (see the module docstring); tag_column=None reads tokens only (to predict)."""
    check_on_error(on_error)
    source, result = str(path), TaggedSet(str(path))
    needed = max(c + 1 if c >= 0 else -c for c in (token_column, tag_column) if c is not None)
    tokens: list[str] = []
    tags: list[str] = []
    first, bad = 0, False

    def flush() -> None:
        nonlocal tokens, tags, bad
        if tokens and not bad:
            result.examples.append(Sentence(tokens, tags, first))
        tokens, tags, bad = [], [], False

    for line, fields in _split_lines(Path(path)):
        if not fields or fields[0] == "-DOCSTART-":
            flush()
            continue
        if bad:
            continue
        if (reason := _conll_problem(fields, token_column, tag_column, needed, label_map)) is not None:
            reject(BadRow(source, line, reason), on_error, result.skipped)
            bad = True  # the rest of the sentence is dropped with it
            continue
        first = first if tokens else line
        tokens.append(fields[token_column])
        if tag_column is not None:
            tags.append(fields[tag_column])
    flush()
    if not result.examples:
        raise DataError(f"{source}: no sentences in this file ({len(result.skipped)} bad rows skipped)")
    return result


def _conll_problem(fields: list[str], token_column: int, tag_column: int | None, needed: int,
                   label_map: LabelMap | None) -> str | None:
    if len(fields) < needed:
        return (f"the line has {len(fields)} column(s); token column {token_column} and tag column {tag_column} "
                f"need {needed} (columns are separated by spaces or tabs)")
    tag = "O" if tag_column is None else fields[tag_column]
    if not _TAG.fullmatch(tag):
        return f"tag {tag!r} is not O, B-<type> or I-<type> (IOB1/IOB2)"
    return label_map.unseen(tag) if label_map is not None and tag_column is not None and tag not in label_map else None


def _split_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    try:
        with open(path, encoding="utf-8") as fh:
            yield from ((line, text.split()) for line, text in enumerate(fh, 1))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason}); convert it to UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read input {path}: {e.strerror or e}") from None


def encode_tagging(tokenizer: Tokenizer, sentences: TaggedSet | Sequence[Sentence], label_map: LabelMap | None,
                   *, max_length: int) -> TokenFeatures:
    """Ids of each sentence's words joined by single spaces, labelled on each word's FIRST token (-100 elsewhere).

    Tokenized once, with offsets: a token belongs to the word holding its first non-space character
    (GPT-2 tokens carry the space before a word). word_ids give each token's word (for words_from_tokens);
    a sentence longer than max_length tokens is cut, and its last words get no token (counted as truncated).
    """
    source, examples = unpack(sentences)
    out = TokenFeatures([], [], word_ids := [])
    for sentence in examples:
        if label_map is not None and (unseen := [t for t in sentence.tags if t not in label_map]):
            raise DataError(f"{source}:{sentence.line}: {label_map.unseen(unseen[0])}; read the file with "
                            f"label_map= to skip such sentences")
        text = " ".join(sentence.tokens)
        starts = [0]
        for word in sentence.tokens[:-1]:
            starts.append(starts[-1] + len(word) + 1)
        enc = tokenizer.encode_with_offsets(text, disallowed_special=())
        words: list[int | None] = []
        labels: list[int] = []
        for a, b in enc.offsets:
            lead = len(text[a:b]) - len(text[a:b].lstrip(" "))
            word = bisect.bisect_right(starts, a + lead) - 1 if b > a else None
            first = word is not None and (not words or words[-1] != word)
            words.append(word)
            if first and sentence.tags and label_map is not None:
                labels.append(label_map.encode(sentence.tags[word]))  # type: ignore[index]
            else:
                labels.append(IGNORE_INDEX)
        out.truncated += len(enc.ids) > max_length
        out.input_ids.append(list(enc.ids[:max_length]))
        out.labels.append(labels[:max_length])
        word_ids.append(words[:max_length])
    return out


def words_from_tokens(word_ids: Sequence[int | None], token_preds: Sequence[Any], n_words: int | None = None
                      ) -> list[Any]:
    """Per word, the prediction at its first token (None for words cut off by truncation)."""
    n = n_words if n_words is not None else max((w for w in word_ids if w is not None), default=-1) + 1
    preds: list[Any] = [None] * n
    seen: set[int] = set()
    for w, pred in zip(word_ids, token_preds, strict=False):
        if w is not None and w not in seen and w < n:
            seen.add(w)
            preds[w] = pred
    return preds


# --- multiple choice --------------------------------------------------------------------------------


def read_choice(path: str | os.PathLike[str], *, on_error: OnError = "fail", require_label: bool = True
                ) -> ChoiceSet:
    """Multiple-choice examples of a SWAG-style or generic JSON/JSONL file (see the module docstring)."""
    def examples() -> Iterator[tuple[int, ChoiceExample | str] | BadRow]:
        for item in _json_objects(Path(path)):
            yield item if isinstance(item, BadRow) else (item[0], _choice(item[1], item[0], require_label))

    return collect(ChoiceSet(str(path)), examples(), on_error, "multiple-choice examples")


def _json_objects(path: Path) -> Iterator[tuple[int, Any] | BadRow]:
    """(line, value) of a .jsonl file's lines, or of a JSON array's items / concatenated JSON values."""
    if path.suffix.lower() == ".jsonl":
        yield from iter_records(path, "jsonl")
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason}); convert it to UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read input {path}: {e.strerror or e}") from None
    newlines = [m.start() for m in re.finditer("\n", text)]
    decoder = json.JSONDecoder()
    pos = _JSON_SPACE.match(text, 0).end()  # type: ignore[union-attr]
    array = text.startswith("[", pos)
    pos = _JSON_SPACE.match(text, pos + array).end()  # type: ignore[union-attr]
    try:
        while pos < len(text) and not (array and text[pos] == "]"):
            value, end = decoder.raw_decode(text, pos)
            yield bisect.bisect_left(newlines, pos) + 1, value
            pos = _JSON_SPACE.match(text, end).end()  # type: ignore[union-attr]
            if array and text.startswith(",", pos):
                pos = _JSON_SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
            elif array and not text.startswith("]", pos):
                raise json.JSONDecodeError("expected ',' or ']' after an array item", text, pos)
    except json.JSONDecodeError as e:  # the rest cannot be resynchronised: a whole-file error
        raise DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); fix the file (a .json file holds "
                        f"an array or concatenated objects, a .jsonl file one object per line)") from None


def _choice(obj: Any, line: int, require_label: bool) -> ChoiceExample | str:
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if "ending0" in obj:  # SWAG
        endings = [obj[f"ending{k}"] for k in range(len(obj)) if f"ending{k}" in obj]
        parts = [obj.get("sent1"), obj.get("sent2", "")]
    elif "choices" in obj:
        endings = obj["choices"]
        parts = [obj.get("context", ""), obj.get("question", "")]
    else:
        return f"expected SWAG fields (sent1, sent2, ending0, ending1, ...) or 'context'/'question' and " \
               f"'choices'; the object has {', '.join(list(obj)[:10])}"
    if not all(isinstance(p, str) for p in parts):
        return "the context fields (sent1/sent2 or context/question) must be strings"
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) and e.strip()
                                                                     for e in endings):
        return "expected at least 2 non-empty string choices (ending0, ending1, ... or 'choices')"
    label = obj.get("label")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)
    valid = isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(endings)
    if not valid and (label is not None or require_label):
        return f"label {label!r} is not the index of one of the {len(endings)} choices"
    context = " ".join(p.strip() for p in parts if p.strip())
    return ChoiceExample(context, [e.strip() for e in endings], label, line)


def encode_choice(tokenizer: Tokenizer, examples: ChoiceSet | Sequence[ChoiceExample], *, max_length: int
                  ) -> ChoiceFeatures:
    """Per example, one sequence per choice: context + " " + ending + eos (the eos is the token scored).

    The context and " " + ending are encoded separately (so every choice shares the context's ids); if a
    sequence is too long its context is cut from the left, then the ending from the right (eos kept).
    """
    eos = require_eos(tokenizer, "multiple choice")
    _, items = unpack(examples)
    out = ChoiceFeatures([], [])
    for ex in items:
        context = tokenizer.encode(ex.context, disallowed_special=())
        cut = False
        rows = []
        for ending in ex.endings:
            tail = tokenizer.encode(" " + ending if ex.context else ending, disallowed_special=()) + [eos]
            room = max_length - len(tail)
            if room < 0:
                tail, room = tail[:max_length - 1] + [eos], 0
            cut = cut or room < len(context)
            rows.append(context[len(context) - min(room, len(context)):] + tail)
        out.truncated += cut
        out.input_ids.append(rows)
        out.labels.append(ex.label)
    return out
