"""Conversations (gptkit.generation.chat): each answer is what `generate` gives for the rendered conversation.

Oracle: `render_chat` of the messages so far, continued by `generate` with the same settings.
"""

from __future__ import annotations

import pytest
import torch

from gptkit import GPT, ContextLengthError, GPTConfig
from gptkit.generation.chat import DEFAULT_STOP, Conversation
from gptkit.generation.generate import generate
from gptkit.generation.sampling import SamplingParams
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, render_chat

from conftest import EOS

GREEDY = SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True)
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}<assistant>"


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("gpt2-tiny", initializer_range=0.1)).eval()


def expected_answer(model: GPT, tok, messages: list[dict], template: str, params: SamplingParams) -> str:
    prompt = render_chat(messages, template, add_generation_prompt=True, eos_token=EOS)
    return generate(model, prompt, params, tokenizer=tok, allow_special=True)[0].text


@pytest.mark.parametrize("template", [None, TEMPLATE], ids=["default", "own"])
def test_each_answer_continues_the_rendered_conversation(model: GPT, tok, template: str | None) -> None:
    chat = Conversation(model, tok, template=template, system="Be brief.", params=GREEDY)
    params = GREEDY.replace(stop=DEFAULT_STOP) if template is None else GREEDY
    history = [{"role": "system", "content": "Be brief."}]
    for message in ("Hello there", "And then?"):
        history.append({"role": "user", "content": message})
        want = expected_answer(model, tok, history, template or DEFAULT_CHAT_TEMPLATE, params)
        assert "".join(chat.reply(message)) == want
        history.append({"role": "assistant", "content": want.strip()})
    assert chat.messages == history[1:]
    chat.reset()
    assert chat.messages == [] and "".join(chat.reply("Hello there")) == "".join(
        Conversation(model, tok, template=template, system="Be brief.", params=GREEDY).reply("Hello there")
    )


def test_the_oldest_exchanges_are_forgotten_when_the_context_is_full(tok) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", n_positions=48, initializer_range=0.1)).eval()
    chat = Conversation(model, tok, template=TEMPLATE, params=GREEDY)  # room for 48 - 6 prompt tokens
    message = "one two three four five six seven eight nine ten"
    for _ in range(4):
        answer = "".join(chat.reply(message))
    assert len(chat.messages) < 8 and chat.messages[0]["role"] == "user"
    kept = chat.messages[:-1]  # what the last answer was given
    prompt = render_chat(kept, TEMPLATE, add_generation_prompt=True, eos_token=EOS)
    assert len(tok.encode(prompt, allowed_special="all")) <= 48 - 6
    assert answer == expected_answer(model, tok, kept, TEMPLATE, GREEDY)
    with pytest.raises(ContextLengthError, match="send a shorter message"):
        "".join(chat.reply(message * 4))
    assert chat.messages == [*kept, {"role": "assistant", "content": answer.strip()}]  # that turn is dropped


def test_an_answer_stopped_early_is_kept_as_far_as_it_got(model: GPT, tok) -> None:
    chat = Conversation(model, tok, template=TEMPLATE, params=GREEDY)
    pieces = chat.reply("Hello")
    first = next(p for p in pieces if p)
    pieces.close()
    assert chat.messages == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": first.strip()}]
