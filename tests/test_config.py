from __future__ import annotations

import json

import pytest

from gptkit import ConfigError, GPTConfig


def test_presets_have_the_published_shapes() -> None:
    gpt1 = GPTConfig.from_name("openai-gpt")
    assert (gpt1.n_layer, gpt1.n_embd, gpt1.n_head, gpt1.n_positions, gpt1.vocab_size) == (12, 768, 12, 512, 40478)
    assert not gpt1.pre_norm and not gpt1.final_norm and gpt1.family == "openai-gpt"
    shapes = {
        name: (c.n_layer, c.n_embd, c.n_head)
        for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
        for c in [GPTConfig.from_name(name)]
    }
    assert shapes == {
        "gpt2": (12, 768, 12),
        "gpt2-medium": (24, 1024, 16),
        "gpt2-large": (36, 1280, 20),
        "gpt2-xl": (48, 1600, 25),
    }
    gpt2 = GPTConfig.from_name("openai-community/gpt2")
    assert gpt2.pre_norm and gpt2.final_norm and gpt2.n_positions == 1024 and gpt2.vocab_size == 50257
    assert gpt2.eos_token_id == 50256 and gpt2.family == "gpt2"


def test_overrides_and_validation() -> None:
    config = GPTConfig.from_name("gpt2", n_layer=3, n_positions=64)
    assert (config.n_layer, config.n_positions, config.n_embd) == (3, 64, 768)
    with pytest.raises(ConfigError, match=r"n_embd \(100\) must be divisible by n_head \(3\)"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ConfigError, match="unknown preset 'gpt3'.*gpt2-medium"):
        GPTConfig.from_name("gpt3")
    with pytest.raises(ConfigError, match="unknown GPTConfig field"):
        GPTConfig.from_name("gpt2", n_layers=3)
    with pytest.raises(ConfigError, match="attn_pdrop"):
        GPTConfig(attn_pdrop=1.5)
    with pytest.raises(ConfigError, match="eos_token_id"):
        GPTConfig(vocab_size=10, eos_token_id=50256)
    with pytest.raises(ConfigError, match="activation"):
        GPTConfig(activation="swish")  # type: ignore[arg-type]


def test_json_round_trip_and_bad_files(tmp_path) -> None:
    config = GPTConfig.from_name("openai-gpt-tiny", resid_pdrop=0.0)
    path = tmp_path / "c.json"
    config.to_json(path)
    assert GPTConfig.from_json(path) == config
    path.write_text('{"n_embd": 64,\n "n_head": }')
    with pytest.raises(ConfigError, match=r"c\.json: not valid JSON \(line 2"):
        GPTConfig.from_json(path)
    path.write_text(json.dumps({"n_embd": 64, "heads": 4}))
    with pytest.raises(ConfigError, match=r"c\.json: unknown GPTConfig field\(s\) \['heads'\]"):
        GPTConfig.from_json(path)
