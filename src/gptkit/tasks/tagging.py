"""Token tagging data: CoNLL reading with file:line errors, and first-sub-token labels (no torch).

`read_conll` reads CoNLL columns separated by whitespace, blank lines between sentences, -DOCSTART- lines
skipped, tags O / B-X / I-X (IOB1 or IOB2). on_error="fail" raises DataError at the first bad line; "skip"
drops the line's whole sentence and lists the line in `skipped`. A file without any sentence always raises
DataError. `encode_tagging` labels each word's first token (-100 elsewhere) and keeps each token's word
(word_ids), so `words_from_tokens` maps token predictions back to words.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.errors import DataError
from gptkit.tasks.data import IGNORE_INDEX, LabelMap, TaskSet, TokenFeatures, check_on_error, reject, unpack
from gptkit.training.corpus import BadRow, OnError

if TYPE_CHECKING:
    from gptkit.text.tokenizer import Tokenizer

__all__ = ["Sentence", "TaggedSet", "encode_tagging", "read_conll", "read_sentences", "words_from_tokens"]

_TAG = re.compile(r"O|[BI]-\S+")


@dataclass(frozen=True)
class Sentence:
    tokens: list[str]
    tags: list[str]  # empty when read with tag_column=None
    line: int  # of its first token


@dataclass
class TaggedSet(TaskSet[Sentence]):
    task: str = "tagging"


def read_conll(
    path: str | os.PathLike[str],
    *,
    token_column: int = 0,
    tag_column: int | None = -1,
    on_error: OnError = "fail",
    label_map: LabelMap | None = None,
) -> TaggedSet:
    """Sentences of a CoNLL file (see the module docstring); tag_column=None reads tokens only (to predict)."""
    check_on_error(on_error)
    source, result = str(path), TaggedSet(str(path))
    needed = max(c + 1 if c >= 0 else -c for c in (token_column, tag_column) if c is not None)
    tokens: list[str] = []
    tags: list[str] = []
    first, bad = 0, False
    widths: set[int] = set()  # to predict (tag_column None): CoNLL has the same columns on every line
    several = False  # some sentence spans several lines

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
        if tag_column is None and fields[0].startswith("{"):
            raise DataError(
                f"{source}:{line}: a JSON object, not CoNLL; JSONL input needs --format jsonl (fmt='jsonl')"
            )
        if (reason := _conll_problem(fields, token_column, tag_column, needed, label_map)) is not None:
            reject(BadRow(source, line, reason), on_error, result.skipped)
            bad = True  # the rest of the sentence is dropped with it
            continue
        first = first if tokens else line
        several = several or bool(tokens)
        widths.add(len(fields))
        tokens.append(fields[token_column])
        if tag_column is not None:
            tags.append(fields[tag_column])
    flush()
    if not result.examples:
        raise DataError(f"{source}: no sentences in this file ({len(result.skipped)} bad rows skipped)")
    if tag_column is None and (len(widths) > 1 or (not several and max(widths) > 1)):
        raise DataError(
            f"{source}: not CoNLL (one word per line with the same columns on every line, a blank line between "
            f"sentences): its lines have {sorted(widths)} columns; for one sentence per line use --format lines "
            "(fmt='lines')"
        )
    return result


def read_sentences(path: str | os.PathLike[str], *, jsonl: bool) -> list[Sentence]:
    """Sentences to tag, one per line: words split on whitespace, or with `jsonl` {"tokens": [...]} objects.
    Anything else (a JSON object in plain lines, a JSONL line without a list of words) is a DataError."""
    import json

    source, sentences = str(path), []
    for line, fields in _split_lines(Path(path), keep=True):
        text = fields[0]
        if not text.strip():
            continue
        if not jsonl:
            if text.lstrip().startswith("{"):
                raise DataError(f"{source}:{line}: a JSON object; JSONL input needs --format jsonl (fmt='jsonl')")
            sentences.append(Sentence(text.split(), [], line))
            continue
        try:
            record = json.loads(text)
        except ValueError as e:
            raise DataError(f'{source}:{line}: not valid JSON ({e}); expected {{"tokens": ["word", ...]}}') from None
        words = record.get("tokens") if isinstance(record, dict) else None
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise DataError(f'{source}:{line}: expected {{"tokens": ["word", ...]}} (a non-empty list of words)')
        sentences.append(Sentence(words, [], line))
    if not sentences:
        raise DataError(f"{source}: no sentences in this file")
    return sentences


def _conll_problem(
    fields: list[str], token_column: int, tag_column: int | None, needed: int, label_map: LabelMap | None
) -> str | None:
    if len(fields) < needed:
        return (
            f"the line has {len(fields)} column(s); token column {token_column} and tag column {tag_column} "
            f"need {needed} (columns are separated by spaces or tabs)"
        )
    tag = "O" if tag_column is None else fields[tag_column]
    if not _TAG.fullmatch(tag):
        return f"tag {tag!r} is not O, B-<type> or I-<type> (IOB1/IOB2)"
    return label_map.unseen(tag) if label_map is not None and tag_column is not None and tag not in label_map else None


def _split_lines(path: Path, *, keep: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(line number, the line's whitespace-separated fields), or with `keep` (line number, [the whole line])."""
    try:
        with open(path, encoding="utf-8") as fh:
            yield from ((line, [text] if keep else text.split()) for line, text in enumerate(fh, 1))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason}); convert it to UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read input {path}: {e.strerror or e}") from None


def encode_tagging(
    tokenizer: Tokenizer, sentences: TaggedSet | Sequence[Sentence], label_map: LabelMap | None, *, max_length: int
) -> TokenFeatures:
    """Ids of each sentence's words joined by single spaces, labelled on each word's FIRST token (-100 elsewhere).

    Tokenized once, with offsets: a token belongs to the word holding its first non-space character
    (GPT-2 tokens carry the space before a word). word_ids give each token's word (for words_from_tokens);
    a sentence longer than max_length tokens is cut, and its last words get no token (counted as truncated).
    """
    source, examples = unpack(sentences)
    out = TokenFeatures([], [], word_ids := [])
    for sentence in examples:
        if label_map is not None and (unseen := [t for t in sentence.tags if t not in label_map]):
            raise DataError(
                f"{source}:{sentence.line}: {label_map.unseen(unseen[0])}; read the file with "
                f"label_map= to skip such sentences"
            )
        # A space before the first word too (transformers' add_prefix_space): GPT-2 tokens carry the space
        # before a word, so a sentence's first word would otherwise get other ids than it has mid-sentence.
        text = " " + " ".join(sentence.tokens)
        starts = [1]
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


def words_from_tokens(
    word_ids: Sequence[int | None], token_preds: Sequence[Any], n_words: int | None = None
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
