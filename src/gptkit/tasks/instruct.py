"""Instruction-tuning data: prompt/completion and chat JSONL, and their encoding with completion-only labels.

Formats (OpenAI's): the legacy {"prompt": ..., "completion": ...} JSONL, where an empty completion is a
bad row, and the chat {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]} JSONL,
where a chat needs an assistant message and an assistant message may carry "weight": 0 (not trained).
Bad rows are reported as file:line (and message index), per on_error, as in gptkit.tasks.data.
Chats are rendered with a chat template (gptkit.text.chat_template).

`encode_instruct` encodes each piece of `chat_segments` on its own and concatenates the ids, so the boundary
between untrained and trained tokens is exactly the boundary between pieces (no BPE merge can cross it):
labels are -100 on the prompt/system/user pieces and equal the ids on the answers, eos included. A
prompt/completion example is the two pieces (prompt, untrained) and (completion + eos, trained); as in
OpenAI's legacy guidance the prompt should end with a separator and the completion start with a space.
Sequences are padded by the collator (the default) or concatenated into full blocks by `pack`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptkit.errors import ConfigError, DataError
from gptkit.tasks.data import IGNORE_INDEX, TaskSet, TokenFeatures, collect, require_eos, unpack
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, ROLES, chat_segments
from gptkit.training.corpus import BadRow, OnError, iter_records

if TYPE_CHECKING:
    from gptkit.text.tokenizer import Tokenizer

__all__ = [
    "ChatExample",
    "InstructSet",
    "PromptCompletion",
    "encode_instruct",
    "pack",
    "read_chat",
    "read_instruct",
    "read_prompt_completion",
]


# --- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptCompletion:
    prompt: str
    completion: str
    line: int
    source: str = ""  # the file it was read from, for messages once it has left its InstructSet


@dataclass(frozen=True)
class ChatExample:
    messages: list[dict[str, Any]]  # {"role", "content"[, "weight"]}, validated
    line: int
    source: str = ""


@dataclass
class InstructSet(TaskSet[PromptCompletion | ChatExample]):
    task: str = "instruct"


def read_prompt_completion(path: str | os.PathLike[str], *, on_error: OnError = "fail") -> InstructSet:
    """{"prompt", "completion"} JSONL; an empty completion (or a non-string field) is a bad row."""

    def examples() -> Iterator[tuple[int, PromptCompletion | str] | BadRow]:
        for item in iter_records(path, "jsonl", columns=("prompt", "completion")):
            if isinstance(item, BadRow):
                yield item
                continue
            line, row = item
            prompt, completion = row["prompt"], row["completion"]
            if not isinstance(prompt, str) or not isinstance(completion, str):
                yield line, "'prompt' and 'completion' must be strings"
            elif not completion.strip():
                yield line, "empty completion; there is nothing to learn from this row"
            else:
                yield line, PromptCompletion(prompt, completion, line, str(path))

    return collect(InstructSet(str(path)), examples(), on_error, "prompt/completion examples")


def read_chat(path: str | os.PathLike[str], *, on_error: OnError = "fail") -> InstructSet:
    """{"messages": [...]} JSONL (see the module docstring); a bad row names its line and message index."""

    def examples() -> Iterator[tuple[int, ChatExample | str] | BadRow]:
        for item in iter_records(path, "jsonl", columns=("messages",)):
            yield item if isinstance(item, BadRow) else (item[0], _chat(item[1]["messages"], item[0], str(path)))

    return collect(InstructSet(str(path)), examples(), on_error, "chats")


def read_instruct(path: str | os.PathLike[str], *, on_error: OnError = "fail") -> InstructSet:
    """Chat or prompt/completion JSONL, by the keys of the file's first record ("messages": chat)."""
    try:
        with open(path, "rb") as fh:
            record = json.loads(next((line for line in fh if line.strip()), b"{}"))
    except (OSError, ValueError):
        record = None  # the reader reports what is wrong, naming the file or the line
    reader = read_chat if isinstance(record, dict) and "messages" in record else read_prompt_completion
    return reader(path, on_error=on_error)


def _chat(messages: Any, line: int, source: str) -> ChatExample | str:
    if not isinstance(messages, list) or not messages:
        return '\'messages\' must be a non-empty list of {"role", "content"} objects'
    kept = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"message {i}: expected an object with 'role' and 'content', got {type(m).__name__}"
        role, content, weight = m.get("role"), m.get("content"), m.get("weight", 1)
        if role not in ROLES:
            return f"message {i}: role {role!r} is not one of {', '.join(ROLES)}"
        if not isinstance(content, str):
            return f"message {i}: 'content' must be a string, got {type(content).__name__}"
        if role == "assistant" and not content.strip():
            return f"message {i}: empty assistant content"
        if weight not in (0, 1) or isinstance(weight, bool) or (role != "assistant" and "weight" in m):
            return f"message {i}: 'weight' must be 0 or 1, and only on assistant messages"
        kept.append({"role": role, "content": content} | ({"weight": weight} if "weight" in m else {}))
    answers = [m for m in kept if m["role"] == "assistant"]
    if not answers:
        return "no assistant message; a chat needs at least one to learn from"
    if all(m.get("weight", 1) == 0 for m in answers):
        return "every assistant message has weight 0, so nothing would be trained"
    return ChatExample(kept, line, source)


# --- encoding ---------------------------------------------------------------------------------------


def encode_instruct(
    tokenizer: Tokenizer,
    examples: InstructSet | Sequence[PromptCompletion | ChatExample],
    *,
    max_length: int,
    template: str = DEFAULT_CHAT_TEMPLATE,
) -> TokenFeatures:
    """input_ids and labels (-100 except on trained answers and their eos) per example, cut to max_length.

    A sequence cut so that no trained token is left is dropped (counted in `dropped`).
    """
    require_eos(tokenizer, "instruction tuning")
    eos: str = tokenizer.eos_token  # type: ignore[assignment]
    source, items = unpack(examples)
    out = TokenFeatures([], [])
    for ex in items:
        if isinstance(ex, PromptCompletion):
            texts = [ex.prompt, ex.completion]
            pieces = [(ex.prompt, False), (ex.completion + eos, True)]
        else:
            texts = [m["content"] for m in ex.messages]
            pieces = chat_segments(ex.messages, template, eos_token=eos)
        if found := [t for t in tokenizer.special_tokens for text in texts if t in text]:
            raise DataError(
                f"{ex.source or source}:{ex.line}: the text contains the special token {found[0]!r}, which would "
                f"become a real special token; remove it from the data"
            )
        ids: list[int] = []
        labels: list[int] = []
        for text, trained in pieces:
            piece = tokenizer.encode(text, allowed_special={eos})
            ids += piece
            labels += piece if trained else [IGNORE_INDEX] * len(piece)
        if len(ids) > max_length:
            out.truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
            if all(x == IGNORE_INDEX for x in labels):
                out.dropped += 1
                continue
        out.input_ids.append(ids)
        out.labels.append(labels)
    return out


def pack(features: TokenFeatures, block_size: int) -> TokenFeatures:
    """Examples concatenated and cut into blocks of exactly block_size tokens, labels alongside.

    As in packed language-model training, attention crosses the boundaries between examples inside a
    block (each example ends in eos, which marks them). The tokens left over after the last full block,
    and blocks without any trained token (their loss would be 0/0), are dropped (counted in `dropped`).
    """
    if block_size < 1:
        raise ConfigError(f"block_size={block_size}; expected a positive number of tokens")
    ids = [i for row in features.input_ids for i in row]
    labels = [x for row in features.labels for x in row]
    out = TokenFeatures([], [], truncated=features.truncated, dropped=features.dropped)
    for start in range(0, len(ids) - block_size + 1, block_size):
        if all(x == IGNORE_INDEX for x in labels[start : start + block_size]):
            out.dropped += 1
            continue
        out.input_ids.append(ids[start : start + block_size])
        out.labels.append(labels[start : start + block_size])
    if not out.input_ids:
        raise DataError(
            f"packing {len(ids)} tokens into blocks of {block_size} left no block with a trained token; "
            f"use a smaller block_size or more data"
        )
    return out
