"""Extractive question answering for a decoder-only GPT: SQuAD files -> windowed features -> answer strings.

A GPT has no [CLS] token, so a feature is question + separator + a window of context tokens + eos, and its
*last* token stands where BERT's [CLS] does: in a causal model only the last token has seen the whole
window, so "no answer here" (an unanswerable question, or a window without the answer) is start = end =
the last index. Contexts longer than a window are split into windows that overlap by `stride` tokens
(transformers' doc_stride). The context is tokenized once, with character offsets, and windows are cut
from those ids, so every context token maps back to an exact character span; answers are read back
from the context by those offsets, never by decoding ids.

This module needs no torch: ids are lists of ints, and logits anything indexable (a tensor row works).
"""

from __future__ import annotations

import bisect
import heapq
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gptkit.errors import ConfigError, DataError
from gptkit.training.corpus import BadRow, iter_records

if TYPE_CHECKING:
    from gptkit.text.tokenizer import Encoding, Tokenizer

__all__ = ["QAExample", "QAFeature", "best_spans", "encode_qa", "iter_squad", "read_squad"]

SquadFormat = Literal["auto", "json", "jsonl"]


@dataclass(frozen=True)
class QAExample:
    """One question about one context; `answers` are (text, char start) pairs, empty when unanswerable.

    line_or_index: the line of a JSONL file, or the question's 0-based position in a JSON file.
    """

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]
    line_or_index: int

    @property
    def is_impossible(self) -> bool:
        return not self.answers


@dataclass(frozen=True)
class QAFeature:
    """One window of one example, ready for the model.

    context_offsets[i] is the (start, end) character span of token i in the context, None for question,
    separator and eos tokens. start_position/end_position index the answer's first and last token in
    input_ids; both are the last index (the null answer) when this window does not hold the answer.
    `context` is the example's context (the same string object, not a copy), which best_spans reads from.
    """

    input_ids: list[int]
    example_id: str
    context_offsets: list[tuple[int, int] | None]
    start_position: int
    end_position: int
    context: str = field(repr=False)

    @property
    def null_index(self) -> int:
        return len(self.input_ids) - 1


# --- reading SQuAD files ------------------------------------------------------------------------


class _Bad(Exception):
    """Why one question is unusable; becomes a BadRow."""


def _field(obj: Any, name: str, kind: type | tuple[type, ...], qid: str | None = None) -> Any:
    if not isinstance(obj, dict):
        raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
    if name not in obj:
        about = f"question {qid!r}: " if qid else ""
        raise _Bad(f"{about}missing field {name!r} (fields: {', '.join(list(obj)[:10])})")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        about = f"question {qid!r}: " if qid else ""
        raise _Bad(f"{about}field {name!r} is {type(value).__name__} {value!r:.40}, expected {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _answer_pairs(answers: Any, qid: str) -> list[tuple[Any, Any]]:
    """(text, start) pairs of the flat form {"text": [...], "answer_start": [...]} or a list of answer objects."""
    if isinstance(answers, dict):
        texts = _field(answers, "text", list, qid)
        starts = _field(answers, "answer_start", list, qid)
        if len(texts) != len(starts):
            raise _Bad(f"question {qid!r}: answers has {len(texts)} texts but {len(starts)} answer_starts")
        return list(zip(texts, starts, strict=True))
    if isinstance(answers, list):
        return [(_field(a, "text", str, qid), _field(a, "answer_start", int, qid)) for a in answers]
    raise _Bad(
        f"question {qid!r}: answers is {type(answers).__name__}; expected "
        f'{{"text": [...], "answer_start": [...]}} or a list of {{"text", "answer_start"}} objects'
    )


def _checked_answers(pairs: list[tuple[Any, Any]], context: str, qid: str) -> list[tuple[str, int]]:
    for k, (text, start) in enumerate(pairs):
        if not isinstance(text, str) or not text:
            raise _Bad(f"question {qid!r}: answer {k} text is {text!r}; expected a non-empty string")
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise _Bad(f"question {qid!r}: answer {k} answer_start is {start!r}; expected a character offset >= 0")
        held = context[start : start + len(text)]
        if held != text:
            found, at = [], context.find(text)
            while at >= 0 and len(found) < 3:
                found.append(at)
                at = context.find(text, at + 1)
            hint = f"{text!r} occurs at {', '.join(map(str, found))}" if found else "the text is not in the context"
            raise _Bad(
                f"question {qid!r}: answer {k} {text!r} does not match the context at answer_start "
                f"{start}: the context holds {held!r} there ({hint}); fix answer_start or the text"
            )
    return [(text, start) for text, start in pairs]


def _example(obj: Any, context: str | None, impossible: bool, position: int) -> QAExample:
    """A QAExample from a question object (flat: it holds the context too; nested: `context` is given)."""
    raw_id = _field(obj, "id", (str, int))
    qid = str(raw_id)
    question = _field(obj, "question", str, qid)
    if context is None:
        context = _field(obj, "context", str, qid)
    if not context:
        raise _Bad(f"question {qid!r}: the context is empty")
    # v2.0's unanswerable questions may carry plausible_answers; they are not answers, so they are dropped.
    pairs = [] if impossible else _answer_pairs(_field(obj, "answers", (dict, list), qid), qid)
    return QAExample(qid, question, context, _checked_answers(pairs, context, qid), position)


def _json_questions(path: Path) -> Iterator[tuple[str, Any, str | None, bool]]:
    """(where, question object, context or None, is_impossible) of a nested or flat SQuAD JSON file."""
    try:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        hint = "JSONL files need the suffix .jsonl or fmt='jsonl' / --format jsonl"
        raise DataError(f"{path}: not valid JSON ({e}); {hint}") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f'{path}: expected a JSON object with a "data" list (SQuAD format)')
    for a, entry in enumerate(document["data"]):
        if not (isinstance(entry, dict) and "paragraphs" in entry):  # the flat form: one question per entry
            yield f"data[{a}]", entry, None, False
            continue
        for p, paragraph in enumerate(entry["paragraphs"] if isinstance(entry["paragraphs"], list) else [None]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                yield where, None, None, False  # reported as a bad question below
                continue
            for q, qa in enumerate(paragraph.get("qas") or []):
                impossible = isinstance(qa, dict) and qa.get("is_impossible") is True
                yield f"{where}.qas[{q}]", qa, paragraph["context"], impossible


def iter_squad(path: str | os.PathLike[str], fmt: SquadFormat = "auto") -> Iterator[QAExample | BadRow]:
    """Every question of a SQuAD file, in order, or a BadRow saying why it is unusable.

    Formats: the official nested JSON (v1.1, and v2.0 with is_impossible), the flat JSON
    {"data": [{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}]} (empty lists:
    unanswerable), and JSONL of such flat objects. fmt "auto" reads .jsonl files as JSONL, others as JSON.
    Every answer must be found in its context at its answer_start. Repeated ids are bad questions.
    """
    path = Path(path)
    if fmt not in ("auto", "json", "jsonl"):
        raise ConfigError(f"fmt={fmt!r}; expected 'auto', 'json' or 'jsonl'")
    jsonl = fmt == "jsonl" or (fmt == "auto" and path.suffix.lower() == ".jsonl")
    seen: dict[str, str] = {}
    if jsonl:
        items: Iterable[tuple[str, Any, str | None, bool, int]] = (
            (f"line {r.line}", r, None, False, r.line)
            if isinstance(r, BadRow)
            else (f"line {r[0]}", r[1], None, False, r[0])
            for r in iter_records(path, "jsonl")
        )
    else:
        items = ((*q, i) for i, q in enumerate(_json_questions(path)))
    for where, obj, context, impossible, position in items:
        line = position if jsonl else None
        try:
            if isinstance(obj, BadRow):
                raise _Bad(obj.reason)
            if obj is None:
                raise _Bad('expected a paragraph object with a "context" string and "qas"')
            example = _example(obj, context, impossible, position)
            if example.id in seen:
                raise _Bad(
                    f"question {example.id!r}: the id is repeated (first at {seen[example.id]}); ids must be unique"
                )
        except _Bad as bad:
            yield BadRow(str(path), line, str(bad), where=where)
            continue
        seen[example.id] = where
        yield example


def read_squad(
    path: str | os.PathLike[str],
    *,
    fmt: SquadFormat = "auto",
    on_error: Literal["fail", "skip"] = "fail",
    skipped: list[BadRow] | None = None,
) -> list[QAExample]:
    """The questions of a SQuAD file (see iter_squad). A bad question raises DataError with on_error="fail";
    with "skip" it is left out and, if a `skipped` list is given, appended to it (so callers can count them).
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error={on_error!r}; expected 'fail' or 'skip'")
    examples = []
    for item in iter_squad(path, fmt):
        if isinstance(item, QAExample):
            examples.append(item)
        elif on_error == "fail":
            raise DataError(f"{item} (pass on_error='skip' / --on-error skip to skip bad questions)")
        elif skipped is not None:
            skipped.append(item)
    if not examples:
        raise DataError(f"{path}: no usable questions in this file")
    return examples


# --- features -----------------------------------------------------------------------------------


def _answer_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """First and last token overlapping the characters [start, end) (offsets are non-decreasing)."""
    first = bisect.bisect_right([b for _, b in offsets], start)  # first token ending after `start`
    last = bisect.bisect_left([a for a, _ in offsets], end) - 1  # last token beginning before `end`
    return (first, last) if first <= last else None


def _window_starts(n: int, size: int, stride: int) -> list[int]:
    """Starts of windows of `size` tokens over n tokens, consecutive windows sharing `stride` tokens."""
    starts = [0]
    while starts[-1] + size < n:
        starts.append(starts[-1] + size - stride)
    return starts


def encode_qa(
    tokenizer: Tokenizer,
    examples: Sequence[QAExample],
    *,
    max_length: int = 384,
    stride: int = 128,
    question_first: bool = True,
    separator: str = "\n",
) -> list[QAFeature]:
    """Features of examples: question + separator + context window + eos (or window + separator + question + eos
    with question_first=False), at most max_length ids, windows overlapping by `stride` context tokens.

    Training targets use the first answer. Text is encoded as plain text (a special-token string in the data
    is not a special token). A question too long to leave more than `stride` context tokens per window is a
    DataError. The last index is the null answer, so it must not be a context token: a feature ends in eos,
    or for a tokenizer without one (GPT-1's) in the separator (question_first) or the question.
    """
    if stride < 0 or max_length < 2:
        raise ConfigError(f"need stride >= 0 and max_length >= 2, got stride={stride}, max_length={max_length}")
    plain = {"disallowed_special": ()}
    sep = tokenizer.encode(separator, **plain) if separator else []
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    if question_first and not (eos or sep):
        raise ConfigError(
            f"this tokenizer has no eos token, so a feature must end in the separator, but "
            f"separator={separator!r} encodes to no tokens; pass a visible one, e.g. ' | '"
        )
    end = eos if eos or not question_first else sep
    questions = tokenizer.encode_batch([e.question for e in examples], **plain)
    contexts: dict[str, Encoding] = {}  # SQuAD asks several questions per context: tokenize each once
    features = []
    for example, question in zip(examples, questions, strict=True):
        if (encoding := contexts.get(example.context)) is None:
            encoding = contexts[example.context] = tokenizer.encode_with_offsets(example.context, **plain)
        size = max_length - len(question) - len(sep) - len(end)
        if size <= stride:
            raise DataError(
                f"question {example.id!r} has {len(question)} tokens, leaving {max(size, 0)} of "
                f"max_length={max_length} for the context, which must be more than stride={stride}; "
                f"raise max_length or lower stride"
            )
        answer = None
        if example.answers:
            text, start = example.answers[0]
            answer = _answer_tokens(encoding.offsets, start, start + len(text))
        for begin in _window_starts(len(encoding.ids), size, stride):
            window = encoding.ids[begin : begin + size]
            head, tail = (question + sep, end) if question_first else ([], sep + question + end)
            ids = head + window + tail
            offsets: list[tuple[int, int] | None] = [None] * len(ids)
            offsets[len(head) : len(head) + len(window)] = encoding.offsets[begin : begin + size]
            s = e = len(ids) - 1
            if answer is not None and begin <= answer[0] and answer[1] < begin + len(window):
                s, e = answer[0] - begin + len(head), answer[1] - begin + len(head)
            features.append(QAFeature(ids, example.id, offsets, s, e, example.context))
    return features


# --- predictions --------------------------------------------------------------------------------


def _floats(values: Any, n: int, index: int) -> list[float]:
    values = values.tolist() if hasattr(values, "tolist") else list(values)  # tensors and arrays, torch-free
    if len(values) < n:
        raise DataError(f"feature {index}: {len(values)} logits for {n} input ids; pass one logit per position")
    return values


def _best_in_feature(
    feature: QAFeature, start: list[float], end: list[float], max_tokens: int, n_best: int
) -> tuple[float, int, int] | None:
    """(score, first token, last token) of the best context span: both ends within n_best of their logits."""
    context = [i for i, o in enumerate(feature.context_offsets) if o is not None]
    best = None
    for pool in (n_best, len(context)):  # the full search only if the top n_best pair into no span
        starts = heapq.nlargest(pool, context, key=start.__getitem__)
        ends = heapq.nlargest(pool, context, key=end.__getitem__)
        for i in starts:
            for j in ends:
                if i <= j < i + max_tokens and (best is None or start[i] + end[j] > best[0]):
                    best = (start[i] + end[j], i, j)
        if best is not None:
            break
    return best


def best_spans(
    features: Sequence[QAFeature],
    start_logits: Sequence[Any],
    end_logits: Sequence[Any],
    *,
    allow_impossible: bool,
    max_answer_tokens: int = 30,
    n_best: int = 20,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """The predicted answer text of each example, by the highest start + end logit over all its windows.

    A span starts at or before it ends, lies in the context, spans at most max_answer_tokens tokens, and has
    both ends among the n_best highest logits of their window (transformers' and BERT's search). Its text is
    the context between the spans' character offsets, without surrounding whitespace (a GPT-2 token owns its
    leading space). With allow_impossible (SQuAD v2.0), the answer is "" when the null score (start and end
    logit at the last index, the lowest over the example's windows, as BERT) exceeds the best span's score by
    more than null_threshold. Logits past a feature's length (padding) are ignored.
    """
    if max_answer_tokens < 1 or n_best < 1:
        raise ConfigError(f"need max_answer_tokens >= 1 and n_best >= 1, got {max_answer_tokens} and {n_best}")
    best: dict[str, tuple[float, int, int]] = {}  # example -> (score, first char, end char) of its best span
    null: dict[str, float] = {}
    contexts: dict[str, str] = {}  # every example, in order
    for index, (feature, start, end) in enumerate(zip(features, start_logits, end_logits, strict=True)):
        n = len(feature.input_ids)
        start, end = _floats(start, n, index), _floats(end, n, index)
        key = feature.example_id
        contexts[key] = feature.context
        null[key] = min(null.get(key, float("inf")), start[n - 1] + end[n - 1])
        found = _best_in_feature(feature, start, end, max_answer_tokens, n_best)
        if found is not None and (key not in best or found[0] > best[key][0]):
            first, last = feature.context_offsets[found[1]], feature.context_offsets[found[2]]
            assert first is not None and last is not None  # _best_in_feature picks context tokens only
            best[key] = (found[0], first[0], last[1])
    answers = {}
    for key, context in contexts.items():
        span = best.get(key)
        if span is None or (allow_impossible and null[key] - span[0] > null_threshold):
            answers[key] = ""
        else:
            answers[key] = context[span[1] : span[2]].strip()
    return answers
