"""Evaluation: perplexity against the transformers docs' loop run on transformers models, LAMBADA on a
model trained here until it knows the pattern, and `gptkit eval` end to end."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from gptkit import GPT, ConfigError, ContextLengthError, GPTConfig
from gptkit.cli import main as cli
from gptkit.errors import DataError
from gptkit.text.tokenizer import Tokenizer
from gptkit.training.evaluate import (
    Window,
    lambada_accuracy,
    lambada_example,
    perplexity,
    read_lambada,
    sliding_windows,
)

from conftest import hf_model, random_ids

# Context 64, so a 300-token text spans several windows; a larger init makes predictions depend on context.
SHAPE = dict(n_embd=48, n_layer=3, n_head=3, vocab_size=1001, n_positions=64, initializer_range=0.3)


def docs_perplexity(model: torch.nn.Module, encodings: torch.Tensor, max_length: int, stride: int) -> tuple[float, int]:
    """The loop of transformers' "Perplexity of fixed-length models", as printed there: the oracle."""
    seq_len = encodings.size(1)
    nll_sum = 0.0
    n_tokens = 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = model(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size  # subtract batch_size due to internal label shift
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return torch.exp(nll_sum / n_tokens).item(), n_tokens


@pytest.fixture(scope="module", params=["gpt2", "openai-gpt"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, GPT]:
    """A random transformers model and the same weights loaded by gptkit from its save_pretrained folder."""
    hf = hf_model(request.param, SHAPE)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return hf, GPT.from_pretrained(path)


@pytest.mark.parametrize("max_length, stride", [(64, 16), (64, 64), (48, 20), (None, 24)])
def test_perplexity_equals_the_transformers_docs_loop(pair, max_length: int | None, stride: int) -> None:
    hf, ours = pair
    ids = random_ids(SHAPE["vocab_size"], 1, 300)
    expected, n_tokens = docs_perplexity(hf, ids, max_length or SHAPE["n_positions"], stride)
    result = perplexity(ours, ids[0].tolist(), max_length=max_length, stride=stride)
    assert result.perplexity == pytest.approx(expected, rel=1e-5)
    assert result.nll == pytest.approx(math.log(expected), rel=1e-5)
    assert result.tokens == n_tokens
    assert result.windows == len(range(0, 300 - (max_length or 64) + stride, stride))


def test_batched_windows_give_the_same_result(pair) -> None:
    _, model = pair
    ids = random_ids(SHAPE["vocab_size"], 1, 300)[0]
    one = perplexity(model, ids, max_length=48, stride=20)
    for batch_size in (2, 5, 64):
        batched = perplexity(model, ids, max_length=48, stride=20, batch_size=batch_size)
        assert batched.tokens == one.tokens and batched.windows == one.windows
        assert batched.nll == pytest.approx(one.nll, rel=1e-6)


def test_one_window_is_the_models_mean_loss(pair) -> None:
    _, model = pair
    ids = random_ids(SHAPE["vocab_size"], 1, 40)
    result = perplexity(model, ids, stride=8)
    assert (result.windows, result.tokens) == (1, 39)
    assert result.nll == pytest.approx(model(ids, labels=ids).loss.item(), rel=1e-6)


def test_windows_and_their_token_accounting() -> None:
    assert sliding_windows(10, 4, 3) == [Window(0, 4, 4), Window(3, 7, 3), Window(6, 10, 3)]
    assert [(w.scored, w.loss_tokens) for w in sliding_windows(10, 4, 3)] == [(3, 3), (3, 2), (3, 2)]
    assert sliding_windows(9, 4, 4) == [Window(0, 4, 4), Window(4, 8, 4), Window(8, 9, 1)]
    assert sliding_windows(3, 4, 2) == [Window(0, 3, 3)]


def test_a_lone_final_token_adds_nothing_instead_of_nan(pair) -> None:
    _, model = pair
    ids = random_ids(SHAPE["vocab_size"], 1, 129)[0]
    whole = perplexity(model, ids, max_length=64, stride=64)  # the docs' loop adds 0 * nan for token 129
    head = perplexity(model, ids[:128], max_length=64, stride=64)
    assert (whole.windows, head.windows) == (3, 2) and math.isfinite(whole.nll)
    assert (whole.nll, whole.tokens) == (head.nll, head.tokens)


def test_settings_are_validated_with_clear_errors(pair) -> None:
    _, model = pair
    ids = list(range(100))
    with pytest.raises(ConfigError, match=r"stride must be an integer in \[1, max_length=32\], got 33"):
        perplexity(model, ids, max_length=32, stride=33)
    with pytest.raises(ConfigError, match=r"stride must be an integer in \[1, max_length=64\], got 0"):
        perplexity(model, ids, stride=0)
    with pytest.raises(ContextLengthError, match="max_length 65 is longer than the model's context of 64"):
        perplexity(model, ids, max_length=65, stride=8)
    with pytest.raises(ConfigError, match="max_length must be an integer >= 2"):
        perplexity(model, ids, max_length=1, stride=1)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        perplexity(model, ids, stride=8, batch_size=0)
    with pytest.raises(DataError, match="at least 2 tokens"):
        perplexity(model, [5], stride=8)


# --- LAMBADA ------------------------------------------------------------------------------------------

# Every word appears once per sentence, so each word follows from the one before ("hedgerow" is three
# GPT-2 tokens); which sentence comes next is random, so no example ends on a sentence's first word.
SENTENCES = ("the quick fox slept under a hedgerow .", "my lazy dog lay by her rug .")


def story(rng: random.Random, sentences: int) -> str:
    return " ".join(rng.choice(SENTENCES) for _ in range(sentences))


def held_out(seed: int) -> str:
    rng = random.Random(seed)
    words = story(rng, rng.randint(1, 3)).split()
    cut = rng.choice([i for i in range(3, len(words) + 1) if words[i - 2] != "."])
    return " ".join(words[:cut])


@pytest.fixture(scope="module")
def gpt2_tokenizer() -> Tokenizer:
    return Tokenizer.from_pretrained("gpt2")


def small_model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.from_name(
        "gpt2-tiny", n_embd=32, n_layer=1, n_positions=64, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0
    )
    return GPT(config)


@pytest.fixture(scope="module")
def trained(gpt2_tokenizer: Tokenizer) -> GPT:
    """A one-layer model trained for 60 steps on random sequences of SENTENCES."""
    data = torch.tensor(gpt2_tokenizer.encode(story(random.Random(0), 300)))
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        starts = torch.randint(0, len(data) - 32, (4,), generator=generator)
        x = torch.stack([data[s : s + 32] for s in starts])  # (4, 32)
        loss = model(x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_lambada_targets_are_the_last_word_as_encoded_after_a_space(gpt2_tokenizer: Tokenizer) -> None:
    for text in ["the fox slept under a hedgerow", "He said: <|endoftext|> don't", "x  y \n", "1,000 apples!"]:
        context, word = text.rsplit(None, 1)
        example = lambada_example(gpt2_tokenizer, text)
        assert example.ids[-example.targets :] == gpt2_tokenizer.encode(" " + word, disallowed_special=())
        assert example.ids[: -example.targets] == gpt2_tokenizer.encode(context, disallowed_special=())
    gpt1 = Tokenizer.from_pretrained("openai-gpt")  # no space tokens: the word's own tokens, found by offsets
    example = lambada_example(gpt1, "Don't stop believing!")
    assert example.ids[-example.targets :] == gpt1.encode("believing!")
    with pytest.raises(DataError, match="needs a context and a last word"):
        lambada_example(gpt2_tokenizer, "  lonely  ")


def test_lambada_accuracy_of_a_trained_and_an_untrained_model(trained: GPT, gpt2_tokenizer: Tokenizer) -> None:
    examples = [held_out(1000 + i) for i in range(50)]
    assert any(e.endswith("hedgerow") for e in examples) and any(e.endswith(" .") for e in examples)
    result = lambada_accuracy(trained, gpt2_tokenizer, examples)
    assert result.total == 50 and result.accuracy == result.correct / 50 > 0.9
    assert result.perplexity < 3
    assert lambada_accuracy(trained, gpt2_tokenizer, examples, batch_size=16).correct == result.correct
    untrained = lambada_accuracy(small_model(), gpt2_tokenizer, examples)
    assert untrained.accuracy < 0.1 and untrained.perplexity > 1000


def test_read_lambada_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "lambada.jsonl"
    path.write_text('{"text": "one two three"}\n\n{"text": "four five"}\n')
    assert read_lambada(path) == ["one two three", "four five"]
    path.write_text('{"text": "one two three"}\n{"text": "four five"\n')
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        read_lambada(path)
    path.write_text('{"text": "one two"}\n{"text": "one two"}\n{"txt": "four five"}\n')
    with pytest.raises(DataError, match=rf"{path}:3: expected an object like"):
        read_lambada(path)
    with pytest.raises(DataError, match="cannot read the LAMBADA file"):
        read_lambada(tmp_path / "missing.jsonl")


# --- gptkit eval --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(trained: GPT, gpt2_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trained")
    trained.save_pretrained(path, tokenizer=gpt2_tokenizer)
    return path


def test_cli_perplexity_json_equals_the_api(checkpoint: Path, trained: GPT, gpt2_tokenizer, tmp_path, capsys) -> None:
    text = story(random.Random(7), 20) + " <|endoftext|> " + story(random.Random(8), 5)
    (tmp_path / "text.txt").write_text(text)
    args = ["eval", "--model", str(checkpoint), "--text", str(tmp_path / "text.txt"), "--max-length", "48"]
    assert cli([*args, "--stride", "16", "--batch-size", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ids = gpt2_tokenizer.encode(text, disallowed_special=())  # the literal <|endoftext|> is ordinary text
    expected = perplexity(trained, ids, max_length=48, stride=16)
    assert printed["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)
    assert (printed["tokens"], printed["windows"], printed["stride"]) == (expected.tokens, expected.windows, 16)
    assert cli(args) == 0  # default stride: the window, since it is shorter than 512
    assert "perplexity of" in capsys.readouterr().out
    assert cli([*args, "--stride", "49"]) == 2
    assert "stride must be an integer in [1, max_length=48], got 49" in capsys.readouterr().err


def test_cli_lambada(checkpoint: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "lambada.jsonl"
    path.write_text("".join(json.dumps({"text": held_out(2000 + i)}) + "\n" for i in range(20)))
    assert cli(["eval", "--model", str(checkpoint), "--lambada", str(path), "--batch-size", "8", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "lambada" and printed["total"] == 20 and printed["accuracy"] > 0.9
    path.write_text('{"text": "a b"}\nnot json\n')
    assert cli(["eval", "--model", str(checkpoint), "--lambada", str(path)]) == 2
    assert f"{path}:2: not valid JSON" in capsys.readouterr().err
