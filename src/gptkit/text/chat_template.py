"""Chat templates: Jinja strings that turn a conversation into the text a model reads.

GPT-2's vocabulary has no chat tokens, so the default template writes roles as words, separates messages
by a blank line and ends every assistant message with the eos token:

    System: You are terse.

    User: 2+2?

    Assistant: 4<|endoftext|>

With add_generation_prompt=True the rendering ends in "Assistant:", and the model writes " 4<|endoftext|>".
Templates are rendered the way `transformers` renders chat templates (a sandboxed environment with
trim_blocks, lstrip_blocks, loopcontrols and raise_exception, given `messages`, `add_generation_prompt` and
`eos_token`), and are stored under "chat_template" in tokenizer_config.json, so
`AutoTokenizer.apply_chat_template` renders the same text as `render_chat`.

`chat_segments` cuts a rendered chat into (text, trained) pieces by rendering every prefix of the
conversation: what message i adds to the rendering of messages[:i] is its piece; for an assistant message
the generation prompt part is not trained and the rest (the answer and its eos) is. A template must
therefore render a prefix of a conversation as a prefix of its rendering; chat_segments checks that.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gptkit.errors import ConfigError
from gptkit.io import atomic_write_text, read_json

__all__ = ["DEFAULT_CHAT_TEMPLATE", "ROLES", "chat_segments", "load_chat_template", "render_chat", "save_chat_template"]

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


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    template: str = DEFAULT_CHAT_TEMPLATE,
    add_generation_prompt: bool = False,
    *,
    eos_token: str = "<|endoftext|>",
) -> str:
    """The text of a conversation ([{"role": ..., "content": ...}, ...]) under a Jinja chat template."""
    import jinja2

    try:
        return _compile(template).render(
            messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, eos_token=eos_token
        )
    except jinja2.exceptions.TemplateError as e:
        raise ConfigError(f"the chat template failed on these messages: {e}") from None


def chat_segments(
    messages: Sequence[Mapping[str, Any]], template: str = DEFAULT_CHAT_TEMPLATE, *, eos_token: str = "<|endoftext|>"
) -> list[tuple[str, bool]]:
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
            pieces.append((prompt[len(done) :], False))
            done = prompt
        after = _extend(done, render(i + 1), i)
        trained = message["role"] == "assistant" and message.get("weight", 1) != 0
        pieces.append((after[len(done) :], trained))
        done = after
    return [(text, trained) for text, trained in pieces if text]


def _extend(before: str, after: str, index: int) -> str:
    if not after.startswith(before):
        raise ConfigError(
            f"the chat template renders messages[:{index + 1}] (or its generation prompt) as text "
            f"that does not start with the rendering of the messages before it, so the trained "
            f"tokens cannot be located; write the template so each message only appends text"
        )
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
        named = (
            {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            if isinstance(template, list)
            else {}
        )
        if not isinstance(named.get("default"), str):
            raise ConfigError(f"{path}: chat_template must be a string or a list with a 'default' template")
        template = named["default"]
    return template
