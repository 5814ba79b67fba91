"""The model against transformers (same weights => same numbers) and against its own invariants."""

from __future__ import annotations

import pytest
import torch

from gptkit import GPT, ContextLengthError, GPTConfig, KVCache, TokenIdError
from gptkit.models.gpt import IGNORE_INDEX

from conftest import SHAPES, hf_model, random_ids

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["openai-gpt", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_preset_parameter_counts_equal_transformers(name: str) -> None:
    config = GPTConfig.from_name(name)
    with torch.device("meta"):
        ours = GPT(config).num_parameters()
        if name == "openai-gpt":
            theirs = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig()).num_parameters()
        else:
            hf_config = transformers.GPT2Config(n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head)
            theirs = transformers.GPT2LMHeadModel(hf_config).num_parameters()
    assert ours == theirs


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_logits_hidden_states_and_loss_equal_transformers(shape: str, tmp_path) -> None:
    family, dims = SHAPES[shape]
    reference = hf_model(family, dims)
    reference.save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path)
    ids = random_ids(dims["vocab_size"], 3, dims["n_positions"])
    labels = ids.clone()
    labels[0, :10] = IGNORE_INDEX
    with torch.no_grad():
        ref = reference(ids, labels=labels, output_hidden_states=True)
        out = model(ids, labels=labels, output_hidden_states=True)
    logit_diff = (ref.logits - out.logits).abs().max().item()
    hidden_diff = max((a - b).abs().max().item() for a, b in zip(ref.hidden_states, out.hidden_states, strict=True))
    assert len(out.hidden_states) == len(ref.hidden_states) == dims["n_layer"] + 1
    assert logit_diff <= 1e-4, f"{shape}: max |logits diff| {logit_diff:.3g}"
    assert hidden_diff <= 1e-4, f"{shape}: max |hidden diff| {hidden_diff:.3g}"
    assert abs(ref.loss.item() - out.loss.item()) <= 1e-5, f"{shape}: loss {ref.loss.item()} vs {out.loss.item()}"


@pytest.mark.parametrize("shape", ["gpt2-odd", "gpt1-odd"])
def test_left_padding_with_mask_and_positions_equals_unpadded(shape: str) -> None:
    family, dims = SHAPES[shape]
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny" if family == "gpt2" else "openai-gpt-tiny", **dims)).eval()
    lengths = [20, 13, 7]
    rows = [random_ids(dims["vocab_size"], 1, n, seed=n)[0] for n in lengths]
    T = max(lengths)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, T - len(row) :] = row
        mask[i, T - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, position_ids=positions).logits
        for i, row in enumerate(rows):
            alone = model(row[None]).logits[0]
            assert torch.allclose(batched[i, T - len(row) :], alone, atol=1e-5), f"row {i}"


@pytest.mark.parametrize("preset", ["gpt2-tiny", "openai-gpt-tiny"])
def test_kv_cache_decode_equals_full_recomputation(preset: str) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name(preset, vocab_size=300)).eval()
    ids = random_ids(300, 2, 24)
    cache = KVCache(model.config, batch_size=2, max_len=32)
    with torch.no_grad():
        full = model(ids).logits
        steps = [model(ids[:, :10], cache=cache, cache_position=torch.arange(10)).logits]
        for t in range(10, 24):
            steps.append(model(ids[:, t : t + 1], cache=cache, cache_position=torch.tensor([t])).logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("preset", ["gpt2-tiny", "openai-gpt-tiny"])
def test_kv_cache_with_per_row_positions_equals_each_row_alone(preset: str) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name(preset, vocab_size=300)).eval()
    lengths = [3, 7, 5]  # each row written from slot 0, so rows sit at different positions all along
    rows = [random_ids(300, 1, 20)[0] for _ in lengths]
    cache = KVCache(model.config, batch_size=3, max_len=24)
    ids = torch.stack(
        [torch.cat([r[:n], torch.zeros(7 - n, dtype=torch.long)]) for r, n in zip(rows, lengths, strict=True)]
    )
    with torch.no_grad():
        got = model(ids, cache=cache, cache_position=torch.arange(7).expand(3, 7)).logits  # right padding
        for b, n in enumerate(lengths):
            assert torch.allclose(got[b, :n], model(rows[b][None, :n]).logits[0], atol=1e-5), f"prefill row {b}"
        position = torch.tensor(lengths)
        for width in (1, 2, 1, 3, 1):  # decode steps and per-row chunks of several tokens
            slots = position[:, None] + torch.arange(width)  # (B, width)
            chunk = torch.stack([rows[b][slots[b]] for b in range(3)])
            got = model(chunk, cache=cache, cache_position=slots).logits
            for b in range(3):
                end = int(slots[b, -1]) + 1
                alone = model(rows[b][None, :end]).logits[0, -width:]
                assert torch.allclose(got[b], alone, atol=1e-5), f"row {b} at slot {end - 1}"
            position = position + width


def test_bad_inputs_raise_clear_errors() -> None:
    model = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=100)).eval()
    with pytest.raises(ContextLengthError, match="129 tokens is longer than the model's context of 128"):
        model(torch.zeros(1, 129, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(batch, time\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ContextLengthError, match="exceeds the model's context"):
        KVCache(model.config, batch_size=1, max_len=200)


@pytest.mark.parametrize("bad", [100, 5000, -1])
def test_token_ids_outside_the_vocabulary_are_named(bad: int) -> None:
    model = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=100)).eval()
    ids = torch.tensor([[3, 99, bad, 7]])
    with pytest.raises(TokenIdError, match=rf"token id {bad} is out of range .* vocabulary of 100 tokens") as error:
        model(ids)
    assert isinstance(error.value, IndexError)  # what torch's embedding raised before, for callers catching it
    cache = KVCache(model.config, batch_size=1)
    with pytest.raises(TokenIdError, match=rf"token id {bad} "):  # a decode step over the cache too
        model(ids[:, 2:3], cache=cache, cache_position=torch.tensor([0]))
    assert model(ids[:, :2]).logits.shape == (1, 2, 100)  # ids 0..99 are fine


def test_gpt2_initialisation_scales_residual_projections() -> None:
    torch.manual_seed(0)
    config = GPTConfig.from_name("gpt2-tiny", n_embd=256, n_layer=8, n_head=4)
    model = GPT(config)
    block = model.transformer.h[0]
    assert abs(block.attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(block.mlp.c_proj.weight.std().item() - 0.02 / 4) < 0.0005  # 1/sqrt(2 * 8) = 1/4
    assert model.lm_head.weight is model.transformer.wte.weight


def test_fast_inference_paths_equal_the_plain_ones() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=300)).eval()
    hidden = torch.randn(8, 1, 64)
    with torch.no_grad():
        assert torch.allclose(model.lm_logits(hidden), model.lm_head(hidden), atol=1e-5)
    bf16 = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=300)).eval().to(torch.bfloat16)
    ids = random_ids(300, 2, 12)
    cache = KVCache(bf16.config, batch_size=2, max_len=16, dtype=torch.bfloat16)
    mask = torch.ones(2, 16, dtype=torch.long)
    with torch.no_grad():  # one-query decode in bf16 takes the plain-matmul attention; compare with SDPA
        full = bf16(ids, attention_mask=mask[:, :12]).logits[:, -1].float()
        bf16(ids[:, :11], attention_mask=mask, cache=cache, cache_position=torch.arange(11))
        step = bf16(ids[:, 11:], attention_mask=mask, cache=cache, cache_position=torch.tensor([11])).logits[:, -1]
    assert (step.float() - full).abs().max().item() < 0.05


@pytest.mark.parametrize("tied", [True, False])
def test_resized_embeddings_keep_every_old_tokens_logits(tied: bool) -> None:
    from gptkit.models.gpt import resize_token_embeddings

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("openai-gpt-tiny", vocab_size=100, tie_word_embeddings=tied)).eval()
    ids = random_ids(100, 2, 9)
    with torch.no_grad():
        before = model(ids).logits
        resize_token_embeddings(model, 103)
        after = model(ids).logits
        assert after.shape == (2, 9, 103)
        torch.testing.assert_close(after[..., :100], before, rtol=0, atol=1e-6)
        assert model.config.vocab_size == 103 and (model.lm_head.weight is model.transformer.wte.weight) == tied
        assert model(torch.tensor([[100, 101, 102]])).logits.isfinite().all()  # the new ids have embeddings
