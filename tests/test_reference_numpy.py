"""gptkit's GPT (eval, fp32) against the picoGPT-style NumPy oracle, both architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gptkit.errors import ContextLengthError
from gptkit.models.gpt import GPT
from gptkit.models.reference_numpy import forward
from openai_layouts import random_gpt

TOLERANCE = 1e-4

# (family, shape, sequence length); the odd shape has 3 heads, 5 layers, vocab 1001, context 77.
CASES = {
    "gpt2-small": ("gpt2", dict(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=128), 37),
    "gpt2-odd": ("gpt2", dict(n_embd=48, n_layer=5, n_head=3, vocab_size=1001, n_positions=77), 77),
    "gpt2-gelu-wide": (
        "gpt2",
        dict(n_embd=32, n_layer=3, n_head=2, vocab_size=300, n_positions=40, activation="gelu", n_inner=80),
        40,
    ),
    "gpt1-small": ("openai-gpt", dict(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=128), 37),
    "gpt1-odd": ("openai-gpt", dict(n_embd=48, n_layer=5, n_head=3, vocab_size=1001, n_positions=77), 77),
    "gpt1-relu": (
        "openai-gpt",
        dict(n_embd=32, n_layer=3, n_head=8, vocab_size=300, n_positions=40, activation="relu"),
        1,
    ),
}


def numpy_params(model: GPT) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def max_abs_diff(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().double().numpy() - b).max())


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_matches_numpy_reference(case: str) -> None:
    family, shape, length = CASES[case]
    model = random_gpt(family, seed=sum(map(ord, case)), **shape)
    ids = torch.randint(0, model.config.vocab_size, (length,), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = model(ids[None], output_hidden_states=True)
    logits, hidden = forward(model.config, numpy_params(model), ids.tolist())

    assert logits.shape == (length, model.config.vocab_size)
    assert len(hidden) == len(out.hidden_states) == model.config.n_layer + 1
    diffs = [max_abs_diff(h[0], ref) for h, ref in zip(out.hidden_states, hidden, strict=True)]
    logit_diff = max_abs_diff(out.logits[0], logits)
    report = f"{case}: logits max|diff| {logit_diff:.2e}, hidden states {[f'{d:.1e}' for d in diffs]}"
    print(report)
    assert logit_diff <= TOLERANCE and max(diffs) <= TOLERANCE, report
    # The oracle is only useful if the outputs are not trivially small.
    assert np.abs(logits).max() > 0.1, report


def test_reference_is_causal() -> None:
    """Changing a later token never changes earlier logits (the mask is right)."""
    model = random_gpt("openai-gpt", n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=8)
    config, params = model.config, numpy_params(model)
    a, _ = forward(config, params, [1, 2, 3, 4])
    b, _ = forward(config, params, [1, 2, 3, 9])
    np.testing.assert_array_equal(a[:3], b[:3])
    assert not np.allclose(a[3], b[3])


def test_reference_rejects_too_long_input() -> None:
    model = random_gpt("gpt2", n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=4)
    with pytest.raises(ContextLengthError):
        forward(model.config, numpy_params(model), [0] * 5)
