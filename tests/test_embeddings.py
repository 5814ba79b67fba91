"""Embeddings (gptkit.generation.embeddings): batched vectors equal those of each text alone; normalisation; errors.

Oracle: the same model run on one text at a time (no padding), and torch's normalize.
"""

from __future__ import annotations

import pytest
import torch

from gptkit import GPT, ConfigError, DataError, GPTConfig
from gptkit.generation.embeddings import embed

from conftest import randomized


@pytest.fixture(scope="module")
def tokenizer():
    from gptkit.text.tokenizer import Tokenizer

    return Tokenizer.char_level("abcdefghijklmnopqrstuvwxyz .,", special_tokens=["<|endoftext|>"])


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_embed_batched_equals_one_text_at_a_time(pooling: str, tokenizer) -> None:
    torch.manual_seed(0)
    gpt = randomized(GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=tokenizer.vocab_size))).train()
    texts = ["a cat.", "the quick brown fox jumps", "z", "hello, world", "dogs bark at night, loudly"]
    batched = embed(gpt, texts, tokenizer=tokenizer, pooling=pooling, batch_size=2)
    single = torch.cat([embed(gpt, [t], tokenizer=tokenizer, pooling=pooling) for t in texts])
    assert batched.shape == (5, 64) and gpt.training  # mode restored
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(5))
    raw = embed(gpt, texts, tokenizer=tokenizer, pooling=pooling, normalize=False)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), batched, rtol=1e-5, atol=1e-5)
    truncated = embed(gpt, texts[1:2], tokenizer=tokenizer, pooling=pooling, max_length=4)
    torch.testing.assert_close(truncated, embed(gpt, ["the "], tokenizer=tokenizer, pooling=pooling))


def test_embed_rejects_empty_text(tokenizer) -> None:
    gpt = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=tokenizer.vocab_size))
    with pytest.raises(DataError, match="text 1 encodes to no tokens"):
        embed(gpt, ["abc", ""], tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="pooling"):
        embed(gpt, ["abc"], tokenizer=tokenizer, pooling="max")  # type: ignore[arg-type]


def test_embed_takes_the_model_the_texts_then_keywords_as_generate_does(tokenizer) -> None:
    gpt = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=tokenizer.vocab_size))
    assert embed(gpt, ["abc"], tokenizer=tokenizer).shape == (1, 64)
    with pytest.raises(TypeError):  # the old order, (model, tokenizer, texts), fails loudly rather than guessing
        embed(gpt, tokenizer, ["abc"])  # type: ignore[misc]
