"""Instruction tuning: prompt/completion and chat JSONL, a plain-text chat template, and their encoding.

Formats (OpenAI's): the legacy {"prompt": ..., "completion": ...} JSONL, where an empty completion is a
bad row, and the chat {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]} JSONL,
where a chat needs an assistant message and an assistant message may carry "weight": 0 (not trained).
Bad rows are reported as file:line (and message index), per on_error, as in gptkit.task_data.

GPT-2's vocabulary has no chat tokens, so the default template writes roles as words, separates messages
by a blank line and ends every assistant message with the eos token:

    System: You are terse.

    User: 2+2?

    Assistant: 4<|endoftext|>

With add_generation_prompt=True the rendering ends in "Assistant:", and the model writes " 4<|endoftext|>".
Templates are Jinja strings rendered the way `transformers` renders chat templates (a sandboxed
environment with trim_blocks, lstrip_blocks, loopcontrols and raise_exception, given `messages`,
`add_generation_prompt` and `eos_token`), and are stored under "chat_template" in tokenizer_config.json,
so `AutoTokenizer.apply_chat_template` renders the same text as `render_chat`.

`chat_segments` cuts a rendered chat into (text, trained) pieces by rendering every prefix of the
conversation: what message i adds to the rendering of messages[:i] is its piece; for an assistant message
the generation prompt part is not trained and the rest (the answer and its eos) is. A template must
therefore render a prefix of a conversation as a prefix of its rendering; chat_segments checks that.

`encode_instruct` encodes each piece on its own and concatenates the ids, so the boundary between
untrained and trained tokens is exactly the boundary between pieces (no BPE merge can cross it): labels
are -100 on the prompt/system/user pieces and equal the ids on the answers, eos included. A prompt/completion
example is the two pieces (prompt, untrained) and (completion + eos, trained); as in OpenAI's legacy
guidance the prompt should end with a separator and the completion start with a space. Sequences are
padded by the collator (the default) or concatenated into full blocks by `pack`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.corpus import BadRow, OnError, iter_records
from gptkit.errors import ConfigError, DataError
from gptkit.io import atomic_write_text, read_json
from gptkit.task_data import IGNORE_INDEX, TaskSet, TokenFeatures, collect, require_eos, unpack

if TYPE_CHECKING:
    from gptkit.tokenizer import Tokenizer

__all__ = ["DEFAULT_CHAT_TEMPLATE", "ROLES", "ChatExample", "InstructSet", "PromptCompletion", "chat_segments",
           "encode_instruct", "load_chat_template", "pack", "read_chat", "read_prompt_completion", "render_chat",
           "save_chat_template"]

ROLES = ("system", "user", "assistant")
# One line of Jinja, so no newline in it depends on trim_blocks/lstrip_blocks; '\n\n' is a Jinja escape.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{% if message['role'] == 'system' %}{{ 'System: ' + message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('unknown role ' + message['role'] + '; use system, user or assistant') }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{% if messages %}{{ '\\n\\n' }}{% endif %}{{ 'Assistant:' }}{% endif %}"
)
TOKENIZER_CONFIG = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"  # where transformers' own save_pretrained puts the template (it wins)


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    # jinja2 comes with torch; imported here so `import gptkit` stays light
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ConfigError(f"the chat template is not valid Jinja (line {e.lineno}: {e.message})") from None


def render_chat(messages: Sequence[Mapping[str, Any]], template: str = DEFAULT_CHAT_TEMPLATE,
                add_generation_prompt: bool = False, *, eos_token: str = "<|endoftext|>") -> str:
    """The text of a conversation ([{"role": ..., "content": ...}, ...]) under a Jinja chat template."""
    import jinja2

    try:
        return _compile(template).render(messages=[dict(m) for m in messages],
                                         add_generation_prompt=add_generation_prompt, eos_token=eos_token)
    except jinja2.exceptions.TemplateError as e:
        raise ConfigError(f"the chat template failed on these messages: {e}") from None


def chat_segments(messages: Sequence[Mapping[str, Any]], template: str = DEFAULT_CHAT_TEMPLATE, *,
                  eos_token: str = "<|endoftext|>") -> list[tuple[str, bool]]:
    """The rendered chat as (text, trained) pieces in order: trained = an assistant answer (weight not 0).

    The pieces concatenate to render_chat(messages); see the module docstring for how they are cut.
    """
    def render(upto: int, prompt: bool = False) -> str:
        return render_chat(messages[:upto], template, prompt, eos_token=eos_token)

    pieces: list[tuple[str, bool]] = []
    done = render(0)
    if done:
        pieces.append((done, False))
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = _extend(done, render(i, prompt=True), i)
            pieces.append((prompt[len(done):], False))
            done = prompt
        after = _extend(done, render(i + 1), i)
        trained = message["role"] == "assistant" and message.get("weight", 1) != 0
        pieces.append((after[len(done):], trained))
        done = after
    return [(text, trained) for text, trained in pieces if text]


def _extend(before: str, after: str, index: int) -> str:
    if not after.startswith(before):
        raise ConfigError(f"the chat template renders messages[:{index + 1}] (or its generation prompt) as text "
                          f"that does not start with the rendering of the messages before it, so the trained "
                          f"tokens cannot be located; write the template so each message only appends text")
    return after


def save_chat_template(directory: str | os.PathLike[str], template: str = DEFAULT_CHAT_TEMPLATE) -> Path:
    """Store `template` under "chat_template" in directory/tokenizer_config.json, keeping its other keys.

    A chat_template.jinja already there (written by transformers) is rewritten too, since it takes precedence.
    """
    _compile(template)  # refuse to store a template that does not parse
    if (jinja_file := Path(directory) / TEMPLATE_FILE).exists():
        atomic_write_text(jinja_file, template)
    path = Path(directory) / TOKENIZER_CONFIG
    config = read_json(path, ConfigError) if path.exists() else {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object; fix or remove the file")
    config["chat_template"] = template
    atomic_write_text(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return path


def load_chat_template(directory: str | os.PathLike[str]) -> str | None:
    """The chat template stored in a tokenizer directory (None if it has none).

    As transformers: chat_template.jinja if present, else "chat_template" in tokenizer_config.json.
    """
    if (jinja_file := Path(directory) / TEMPLATE_FILE).exists():
        try:
            return jinja_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{jinja_file}: cannot read ({e})") from None
    path = Path(directory) / TOKENIZER_CONFIG
    if not path.exists():
        return None
    config = read_json(path, ConfigError)
    template = config.get("chat_template") if isinstance(config, dict) else None
    if template is not None and not isinstance(template, str):
        # transformers also allows a list of named templates; gptkit uses the one named "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)} \
            if isinstance(template, list) else {}
        if not isinstance(named.get("default"), str):
            raise ConfigError(f"{path}: chat_template must be a string or a list with a 'default' template")
        template = named["default"]
    return template


# --- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptCompletion:
    prompt: str
    completion: str
    line: int


@dataclass(frozen=True)
class ChatExample:
    messages: list[dict[str, Any]]  # {"role", "content"[, "weight"]}, validated
    line: int


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
                yield line, PromptCompletion(prompt, completion, line)

    return collect(InstructSet(str(path)), examples(), on_error, "prompt/completion examples")


def read_chat(path: str | os.PathLike[str], *, on_error: OnError = "fail") -> InstructSet:
    """{"messages": [...]} JSONL (see the module docstring); a bad row names its line and message index."""
    def examples() -> Iterator[tuple[int, ChatExample | str] | BadRow]:
        for item in iter_records(path, "jsonl", columns=("messages",)):
            yield item if isinstance(item, BadRow) else (item[0], _chat(item[1]["messages"], item[0]))

    return collect(InstructSet(str(path)), examples(), on_error, "chats")


def _chat(messages: Any, line: int) -> ChatExample | str:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {\"role\", \"content\"} objects"
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
    return ChatExample(kept, line)


# --- encoding ---------------------------------------------------------------------------------------


def encode_instruct(tokenizer: Tokenizer, examples: InstructSet | Sequence[PromptCompletion | ChatExample], *,
                    max_length: int, template: str = DEFAULT_CHAT_TEMPLATE) -> TokenFeatures:
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
            raise DataError(f"{source}:{ex.line}: the text contains the special token {found[0]!r}, which would "
                            f"become a real special token; remove it from the data")
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
        if all(x == IGNORE_INDEX for x in labels[start:start + block_size]):
            out.dropped += 1
            continue
        out.input_ids.append(ids[start:start + block_size])
        out.labels.append(labels[start:start + block_size])
    if not out.input_ids:
        raise DataError(f"packing {len(ids)} tokens into blocks of {block_size} left no block with a trained token; "
                        f"use a smaller block_size or more data")
    return out
