"""A conversation with a model: the messages so far, rendered with the model's chat template, and each answer
streamed as it is generated. `gptkit chat` is a terminal loop around it.

Each turn renders the whole conversation (system message, then user and assistant messages) with
add_generation_prompt, so the model reads exactly what `generate(model, render_chat(...), ...)` would and
what `gptkit finetune instruct` trained it on. When the rendering and max_new_tokens no longer fit the
context, the oldest exchanges are forgotten (the system message stays).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gptkit.errors import ContextLengthError
from gptkit.generation.generate import stream
from gptkit.generation.params import SamplingParams
from gptkit.models.gpt import GPT
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, render_chat

__all__ = ["DEFAULT_STOP", "Conversation"]

# gptkit's default template writes roles as words: a model that goes on to write the user's next message stops.
DEFAULT_STOP = ("\n\nUser:",)


class Conversation:
    """A chat with `model`: `reply(text)` adds a user message and yields the answer's text as it comes.

    template: a Jinja chat template (None: gptkit's default, which also stops at DEFAULT_STOP); system: a
    system message kept at the start; params: the sampling settings of every answer.
    """

    def __init__(
        self,
        model: GPT,
        tokenizer: Any,
        *,
        template: str | None = None,
        system: str | None = None,
        params: SamplingParams | None = None,
    ) -> None:
        params = params or SamplingParams()
        if template is None:
            params = params.replace(stop=tuple(dict.fromkeys((*params.stop, *DEFAULT_STOP))))
        self.model, self.tokenizer, self.params = model, tokenizer, params
        self.template = template or DEFAULT_CHAT_TEMPLATE
        self.system = [{"role": "system", "content": system}] if system else []
        self.messages: list[dict[str, str]] = []  # user and assistant messages, oldest first

    def reset(self) -> None:
        """Forget the messages (the system message stays)."""
        self.messages.clear()

    def reply(self, content: str) -> Iterator[str]:
        """Add the user message `content` and yield the answer's text as it is generated.

        The answer joins the messages when it ends, or as far as it got if the caller stops early; a turn that
        produced no text (the prompt did not fit, say) is dropped, its error raised.
        """
        self.messages.append({"role": "user", "content": content})
        parts: list[str] = []
        finished = False
        try:
            for event in stream(self.model, [self._prompt_ids()], self.params, tokenizer=self.tokenizer):
                parts.append(event.text)
                yield event.text
            finished = True
        finally:
            if finished or any(parts):
                self.messages.append({"role": "assistant", "content": "".join(parts).strip()})
            else:
                self.messages.pop()

    def _prompt_ids(self) -> list[int]:
        """The prompt's ids, after forgetting the oldest exchanges until it leaves room for max_new_tokens (the
        messages are left as they were when even the newest message alone does not fit)."""
        room = self.model.config.n_positions - self.params.max_new_tokens
        eos = self.tokenizer.eos_token or ""
        for start in range(0, len(self.messages), 2):  # drop whole exchanges: a user message and its answer
            text = render_chat(
                [*self.system, *self.messages[start:]], self.template, add_generation_prompt=True, eos_token=eos
            )
            ids = self.tokenizer.encode(text, allowed_special="all")  # the template's eos tokens
            if len(ids) <= room or self.params.truncate:
                del self.messages[:start]
                return ids
        raise ContextLengthError(
            f"the message and the conversation's start take {len(ids)} tokens, and with max_new_tokens "
            f"{self.params.max_new_tokens} they exceed the model's context of {self.model.config.n_positions}; "
            "send a shorter message or lower max_new_tokens"
        )
