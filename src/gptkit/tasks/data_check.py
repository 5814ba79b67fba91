"""`check_instruct_data`: what OpenAI's `openai tools fine_tunes.prepare_data` told about fine-tuning data, for the
JSONL that gptkit's instruction tuning and the fine-tuning API read ({"prompt", "completion"} or {"messages"}).

It counts the examples and their tokens as training encodes them (tasks.instruct.encode_instruct: prompt,
completion and <|endoftext|>, or the chat rendered with its template) against the model's context, and finds what
makes examples useless or harmful: lines that cannot be read, empty fields, duplicates, examples longer than the
context; for prompt/completion data also prompts without a common separator at their end (the model cannot tell
where a prompt stops), completions without a leading space (GPT-2's tokens start with one) or without a common
ending to stop at. Each finding says how to fix it, and `DataReport.fixed` is the data with every fix applied.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptkit.errors import DataError
from gptkit.io import atomic_write_text
from gptkit.models.checkpoint import read_config
from gptkit.models.config import GPTConfig
from gptkit.tasks.instruct import ChatExample, PromptCompletion, encode_instruct, read_instruct
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, load_chat_template
from gptkit.text.tokenizer import Tokenizer

__all__ = ["DataReport", "Finding", "check_instruct_data", "model_limits", "write_jsonl"]

SEPARATORS = ("\n\n###\n\n", " ->", "\n\n===\n\n", "\n\n&&&\n\n")  # OpenAI's suggestions, the first unused wins
STOPS = ("\n", " END", "###")
_SHOWN = 3  # lines named in a message


@dataclass(frozen=True)
class Finding:
    """One kind of problem: what is wrong (naming up to a few lines) and what the fix does."""

    kind: str  # unreadable, empty, duplicate, too_long, no_separator, no_leading_space, no_stop
    lines: tuple[int, ...]  # where (unreadable: the lines; the others: the examples' lines)
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.message}; fix: {self.fix}"


@dataclass
class DataReport:
    path: str
    format: str  # "prompt/completion" or "chat"
    lines: int  # non-blank lines
    examples: int  # usable examples
    lengths: list[int]  # tokens of each usable example, as training encodes it
    context: int
    findings: list[Finding] = field(default_factory=list)
    fixed: list[dict[str, Any]] = field(default_factory=list)  # the records with every fix applied

    def summary(self) -> list[str]:
        """Counts and token lengths, one line each."""
        lines = [f"{self.path}: {self.examples} {self.format} examples in {self.lines} lines"]
        if self.lengths:
            median = statistics.median(self.lengths)
            lines.append(
                f"tokens per example: min {min(self.lengths)}, median {median:g}, max {max(self.lengths)} "
                f"(context {self.context}); {sum(self.lengths)} in all"
            )
        if self.examples < 100:
            lines.append(f"{self.examples} examples is few: fine-tuning usually wants at least 100")
        return lines


def model_limits(name_or_dir: str | os.PathLike[str]) -> tuple[Tokenizer, int, str]:
    """The tokenizer, context and chat template data for a model is checked with, without loading its weights: a
    checkpoint folder's own, or those of a model gptkit names ("gpt2", "gpt2-medium", "openai-gpt", ...)."""
    folder = Path(name_or_dir).expanduser()
    if folder.is_dir():
        template = load_chat_template(folder) or DEFAULT_CHAT_TEMPLATE
        return Tokenizer.from_pretrained(folder), model_context(folder), template
    name = str(name_or_dir).removeprefix("openai-community/")
    return Tokenizer.from_pretrained(name), model_context(name), DEFAULT_CHAT_TEMPLATE


def model_context(name_or_dir: str | os.PathLike[str]) -> int:
    """A model's context in tokens, read from its folder's config or its gptkit name, without loading weights."""
    folder = Path(name_or_dir).expanduser()
    if folder.is_dir():
        return read_config(folder).n_positions
    return GPTConfig.from_name(str(name_or_dir).removeprefix("openai-community/")).n_positions


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """Records as JSONL, written atomically (a reader never sees half a file)."""
    atomic_write_text(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def check_instruct_data(
    path: str | os.PathLike[str], tokenizer: Any, *, context: int, template: str = DEFAULT_CHAT_TEMPLATE
) -> DataReport:
    """Read and check instruction data (see the module docstring). tokenizer and context: the model's; template:
    the chat template chats are rendered with. DataError when no line at all can be used."""
    data = read_instruct(path, on_error="skip")
    examples: list[PromptCompletion | ChatExample] = []
    unreadable = {bad.line or 0: bad.reason for bad in data.skipped}
    lengths: dict[int, int] = {}
    for ex in data.examples:
        try:
            features = encode_instruct(tokenizer, [ex], max_length=1 << 30, template=template)
        except DataError as exc:  # a special token in the text: the message is "file:line: reason"
            unreadable[ex.line] = str(exc).split(": ", 1)[-1]
            continue
        examples.append(ex)
        lengths[ex.line] = len(features.input_ids[0])
    chat = bool(examples) and isinstance(examples[0], ChatExample)
    findings: list[Finding] = []
    dropped: set[int] = set()

    def find(kind: str, lines: list[int], message: str, fix: str, *, drop: bool = False) -> None:
        if lines:
            findings.append(Finding(kind, tuple(lines), message, fix))
            dropped.update(lines if drop else ())

    bad = sorted(unreadable)
    reasons = "; ".join(f"line {n}: {unreadable[n]}" for n in bad[:_SHOWN])
    find("unreadable", bad, f"{_count(bad, 'line')} cannot be used ({reasons})", "drop them", drop=True)
    empty = [ex.line for ex in examples if _has_empty_field(ex)]
    field_name = "message" if chat else "prompt"
    find("empty", empty, f"{_examples(empty)} with an empty {field_name}", "drop them", drop=True)
    seen: set[str] = set()
    duplicates = []
    for ex in examples:
        key = json.dumps(_record(ex), sort_keys=True)
        duplicates += [ex.line] if key in seen else []
        seen.add(key)
    find("duplicate", duplicates, f"{_examples(duplicates)} repeating an earlier one", "keep the first", drop=True)
    long = [line for line, n in lengths.items() if n > context]
    find(
        "too_long",
        long,
        f"{_examples(long)} longer than the model's context of {context} tokens (the longest has "
        f"{max(lengths.values(), default=0)}); training would cut off their ends",
        "drop them",
        drop=True,
    )
    kept = [ex for ex in examples if ex.line not in dropped]
    records = [_record(ex) for ex in kept]
    if not chat and records:
        findings += _fix_prompt_completion(records, [ex.line for ex in kept])
    return DataReport(
        path=str(path),
        format="chat" if chat else "prompt/completion",
        lines=len(unreadable) + len(examples),
        examples=len(kept),
        lengths=[lengths[ex.line] for ex in kept],
        context=context,
        findings=findings,
        fixed=records,
    )


def _fix_prompt_completion(records: list[dict[str, Any]], lines: list[int]) -> list[Finding]:
    """The separator, leading space and stop sequence of prompt/completion records, each fixed in place."""
    texts = [r["prompt"] for r in records] + [r["completion"] for r in records]
    findings = _ending(
        records,
        "prompt",
        SEPARATORS,
        texts,
        Finding(
            "no_separator",
            tuple(lines),
            "the prompts do not end with a common separator, so the model cannot tell where a prompt stops and "
            "its completion starts",
            "end every prompt with {ending} (and end prompts with it when using the model)",
        ),
    )
    spaceless = [line for line, r in zip(lines, records, strict=True) if not r["completion"][:1].isspace()]
    if spaceless:
        message = (
            f"{_examples(spaceless)} with a completion that does not start with a space (GPT-2's words are "
            "tokens with their space)"
        )
        findings.append(Finding("no_leading_space", tuple(spaceless), message, "start each with a space"))
        for record in records:
            record["completion"] = (" " * (not record["completion"][:1].isspace())) + record["completion"]
    return findings + _ending(
        records,
        "completion",
        STOPS,
        [r["completion"] for r in records],
        Finding(
            "no_stop",
            tuple(lines),
            "the completions do not end with a common stop sequence to cut generations at (a model served by "
            "gptkit stops at the <|endoftext|> that training adds; other servers may not)",
            "end every completion with {ending} and pass it as stop when generating",
        ),
    )


def _ending(
    records: list[dict[str, Any]], key: str, options: tuple[str, ...], texts: list[str], finding: Finding
) -> list[Finding]:
    """Where the records' `key` values end differently: the first of `options` that no text holds is appended to
    each, and `finding` (its fix naming that ending) is returned."""
    if _common_suffix([r[key] for r in records]):
        return []
    ending = next((o for o in options if not any(o in t for t in texts)), options[-1])
    for record in records:
        record[key] += ending
    return [Finding(finding.kind, finding.lines, finding.message, finding.fix.format(ending=repr(ending)))]


def _record(ex: PromptCompletion | ChatExample) -> dict[str, Any]:
    if isinstance(ex, PromptCompletion):
        return {"prompt": ex.prompt, "completion": ex.completion}
    return {"messages": [dict(m) for m in ex.messages]}


def _has_empty_field(ex: PromptCompletion | ChatExample) -> bool:
    if isinstance(ex, PromptCompletion):
        return not ex.prompt.strip()
    return any(not m["content"].strip() for m in ex.messages)


def _common_suffix(texts: list[str]) -> str:
    return os.path.commonprefix([t[::-1] for t in texts])[::-1]


def _count(items: list[int], what: str) -> str:
    return f"{len(items)} {what}{'s' * (len(items) != 1)}"


def _examples(lines: list[int]) -> str:
    """ "3 examples (lines 4, 9, 12)", naming the first few lines."""
    more = ", ..." if len(lines) > _SHOWN else ""
    return f"{_count(lines, 'example')} (line{'s' * (len(lines) > 1)} {', '.join(map(str, lines[:_SHOWN]))}{more})"
