"""Shared fixtures: tiny random models built by Hugging Face `transformers` (the oracle) and by gptkit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

# (family, shape) pairs the parity tests run on; the odd one has 3 heads, 5 layers, vocab 1001, context 77.
SHAPES = {
    "gpt2-odd": ("gpt2", dict(n_embd=48, n_layer=5, n_head=3, vocab_size=1001, n_positions=77)),
    "gpt2-small": ("gpt2", dict(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=128)),
    "gpt1-odd": ("openai-gpt", dict(n_embd=48, n_layer=5, n_head=3, vocab_size=1001, n_positions=77)),
    "gpt1-small": ("openai-gpt", dict(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=128)),
}


def hf_model(family: str, shape: dict, *, seed: int = 0, head: bool = True) -> torch.nn.Module:
    """A randomly initialised transformers model (eval mode) of the given family and shape."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    if family == "gpt2":
        config = transformers.GPT2Config(**shape, bos_token_id=0, eos_token_id=0)
        cls = transformers.GPT2LMHeadModel if head else transformers.GPT2Model
    else:
        config = transformers.OpenAIGPTConfig(**shape)
        cls = transformers.OpenAIGPTLMHeadModel if head else transformers.OpenAIGPTModel
    model = cls(config).eval()
    # transformers initialises LayerNorms to 1/0 and biases to 0: randomise them so they are tested.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture(params=sorted(SHAPES))
def hf_dir(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A transformers checkpoint directory written with save_pretrained, and the model that wrote it."""
    family, shape = SHAPES[request.param]
    model = hf_model(family, shape)
    path = tmp_path / request.param
    model.save_pretrained(path)
    return path, model


def random_ids(vocab_size: int, batch: int, length: int, *, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, length), generator=generator)


EOS = "<|endoftext|>"


@pytest.fixture
def native_kernels() -> None:
    """gptkit's CPU decoding kernels, built here; a skip without a C compiler, a failure where
    GPTKIT_REQUIRE_NATIVE is set (CI sets it)."""
    from gptkit.models import native

    if native.library() is None:
        if os.environ.get("GPTKIT_REQUIRE_NATIVE"):
            pytest.fail("gptkit's CPU kernel did not build (GPTKIT_REQUIRE_NATIVE is set)")
        pytest.skip("no C compiler: gptkit's CPU kernel is not built")


@pytest.fixture(scope="session")
def tok():
    """OpenAI's GPT-2 tokenizer (offline: the vocabulary ships with gptkit)."""
    from gptkit.text.tokenizer import Tokenizer

    return Tokenizer.from_pretrained("gpt2")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[object]) -> Path:
    import json

    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def randomized(gpt: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A gptkit GPT with its LayerNorms and biases moved off their 1/0 initialisation, in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in gpt.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    return gpt.eval()


# A small corpus prepared as character-level token shards, for training runs.
CHAR_TEXT = (
    "".join(
        f"{w} the {c} sat on the {m}.\n"
        for w in ("and", "then", "so", "but")
        for c in ("cat", "dog", "bird")
        for m in ("mat", "rug", "log", "hat")
    )
    * 12
)


@pytest.fixture(scope="module")
def char_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gptkit.training.data import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("chardata")
    (root / "corpus.txt").write_text(CHAR_TEXT)
    prepare(
        PrepareConfig(inputs=(str(root / "corpus.txt"),), out_dir=str(root / "data"), tokenizer="char"), progress=False
    )
    return root / "data"
