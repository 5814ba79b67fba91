"""Multiple-choice data: SWAG-style and generic JSON/JSONL reading with file:line errors, and encoding (no torch).

`read_choice` reads SWAG objects (sent1, sent2, ending0..N, label) or generic ones ({"context" and/or
"question", "choices": [...], "label"}), as a .jsonl file or a .json file holding an array or concatenated
objects (as swag_sample.json); each example knows the line its object starts on. on_error="fail" raises
DataError at the first bad object; "skip" drops it and lists it in `skipped`. A file that is not valid JSON,
or holds no example at all, always raises DataError. `encode_choice` makes one sequence per choice, ending
in the token that a multiple-choice head scores: the eos token, or for GPT-1, whose vocabulary has none, the
extract token of its paper's input transformation (`with_choice_tokens` adds the paper's tokens).
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.errors import ConfigError, DataError
from gptkit.tasks.data import TaskSet, collect, unpack
from gptkit.training.corpus import BadRow, OnError, iter_records

if TYPE_CHECKING:
    from gptkit.text.tokenizer import Tokenizer

__all__ = [
    "CHOICE_TOKENS",
    "ChoiceExample",
    "ChoiceFeatures",
    "ChoiceSet",
    "encode_choice",
    "read_choice",
    "with_choice_tokens",
]

# GPT-1's paper: each choice is start + context + delimiter + answer + extract, the extract token's state scored.
# The names are those of transformers' OpenAIGPTDoubleHeadsModel examples (run_openai_gpt.py).
CHOICE_TOKENS = ("_start_", "_delimiter_", "_classify_")

_JSON_SPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class ChoiceExample:
    context: str  # SWAG: sent1 + " " + sent2
    endings: list[str]
    label: int | None
    line: int


@dataclass
class ChoiceSet(TaskSet[ChoiceExample]):
    task: str = "choice"


@dataclass
class ChoiceFeatures:
    input_ids: list[list[list[int]]]  # example -> choice -> ids (each ending in eos)
    labels: list[int | None]
    truncated: int = 0


def read_choice(path: str | os.PathLike[str], *, on_error: OnError = "fail", require_label: bool = True) -> ChoiceSet:
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
        raise DataError(
            f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); fix the file (a .json file holds "
            f"an array or concatenated objects, a .jsonl file one object per line)"
        ) from None


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
        return (
            f"expected SWAG fields (sent1, sent2, ending0, ending1, ...) or 'context'/'question' and "
            f"'choices'; the object has {', '.join(list(obj)[:10])}"
        )
    if not all(isinstance(p, str) for p in parts):
        return "the context fields (sent1/sent2 or context/question) must be strings"
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) and e.strip() for e in endings):
        return "expected at least 2 non-empty string choices (ending0, ending1, ... or 'choices')"
    label = obj.get("label")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)
    valid = isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(endings)
    if not valid and (label is not None or require_label):
        return f"label {label!r} is not the index of one of the {len(endings)} choices"
    context = " ".join(p.strip() for p in parts if p.strip())
    return ChoiceExample(context, [e.strip() for e in endings], label, line)


def with_choice_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer a multiple-choice run uses: `tokenizer` where it has an eos token to end each choice with,
    else (GPT-1) a copy with GPT-1's start, delimiter and extract tokens added (CHOICE_TOKENS); the model then
    needs an embedding for each (gptkit.models.gpt.resize_token_embeddings)."""
    if tokenizer.eos_token_id is not None:
        return tokenizer
    return tokenizer.with_special_tokens(CHOICE_TOKENS)


def encode_choice(
    tokenizer: Tokenizer, examples: ChoiceSet | Sequence[ChoiceExample], *, max_length: int
) -> ChoiceFeatures:
    """Per example, one sequence per choice, ending in the token a multiple-choice head scores.

    A tokenizer with GPT-1's CHOICE_TOKENS gets the paper's form, start + context + delimiter + ending +
    extract; any other ends context + " " + ending with its eos. The context and the ending are encoded
    separately (so every choice shares the context's ids); if a sequence is too long its context is cut from
    the left, then the ending from the right (the start and the scored token kept).
    """
    specials = tokenizer.special_tokens
    if all(t in specials for t in CHOICE_TOKENS):
        start, delimiter, last = (specials[t] for t in CHOICE_TOKENS)
        head, between = [start], [delimiter]
    else:
        if tokenizer.eos_token_id is None:
            raise ConfigError(
                "multiple choice ends each choice with the eos token or GPT-1's extract token, and this tokenizer "
                "has neither; pass it through gptkit.tasks.choice.with_choice_tokens first"
            )
        last, head, between = tokenizer.eos_token_id, [], []
    budget = max_length - len(head)
    _, items = unpack(examples)
    out = ChoiceFeatures([], [])
    for ex in items:
        context = tokenizer.encode(ex.context, disallowed_special=())
        cut = False
        rows = []
        for ending in ex.endings:
            spaced = " " + ending if ex.context and not between else ending
            tail = between + tokenizer.encode(spaced, disallowed_special=()) + [last]
            cut = cut or len(context) + len(tail) > budget
            tail = tail[: budget - 1] + [last] if len(tail) > budget else tail
            room = budget - len(tail)
            rows.append(head + context[len(context) - min(room, len(context)) :] + tail)
        out.truncated += cut
        out.input_ids.append(rows)
        out.labels.append(ex.label)
    return out
