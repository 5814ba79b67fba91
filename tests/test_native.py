"""gptkit's CPU decoding kernels (gptkit/models/native.py, native.c) against float64 products and attention of
the same values, and models decoding through them against the same models on torch's kernels.

Without a C compiler the kernel is not built and these tests skip, unless GPTKIT_REQUIRE_NATIVE is set (CI sets
it): then they fail."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gptkit
from gptkit import GPT, GPTConfig
from gptkit.generation.generate import generate
from gptkit.generation.sampling import SamplingParams
from gptkit.models import kernels, native
from gptkit.models.quantize import dequantize_model, quantize_model, quantize_weight

pytestmark = pytest.mark.usefixtures("native_kernels")  # conftest: skips without a C compiler


def operands(dtype: torch.dtype, lead: tuple[int, ...], n_in: int, n_out: int, seed: int = 0):
    """x (*lead, n_in), weight (n_out, n_in) of `dtype` (int8 with float32 scales), bias (n_out,) and the
    float64 product of exactly those values."""
    gen = torch.Generator().manual_seed(seed)
    io = torch.float32 if dtype == torch.int8 else dtype
    x = torch.randn(*lead, n_in, generator=gen).to(io)
    w = torch.randn(n_out, n_in, generator=gen) * 0.05
    bias = torch.randn(n_out, generator=gen).to(io)
    scale = None
    if dtype == torch.int8:
        weight, scale = quantize_weight(w)
        exact_w = weight.double() * scale.double()[:, None]
    else:
        weight = w.to(dtype)
        exact_w = weight.double()
    expected = x.double() @ exact_w.t() + bias.double()
    return x, weight, bias, scale, expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize(
    "lead, n_in, n_out",
    [((1,), 768, 2304), ((3,), 40, 70), ((2, 4), 3072, 96), ((1, 1), 1, 5), ((5,), 33, 300)],
)
def test_products_equal_float64_products_of_the_same_values(dtype, lead, n_in, n_out) -> None:
    """Widths that are not multiples of the vector steps (40, 33, 1) take the scalar tail; the first shape is
    large enough to run on several threads."""
    x, weight, bias, scale, expected = operands(dtype, lead, n_in, n_out)
    assert native.applies(x, weight)
    ours = native.gemv(x, weight, bias, scale)
    assert ours.shape == (*lead, n_out) and ours.dtype == x.dtype
    if dtype == torch.bfloat16:  # one float32 sum rounded once to bfloat16: at most one step from the exact value
        step = expected.abs().clamp_min(1e-30) * 2.0**-8
        assert ((ours.double() - expected).abs() <= step).all()
    else:  # a float32 sum over n_in terms
        bound = 1e-6 * (n_in**0.5) * (x.double().abs() @ weight.double().abs().t()).max() + 1e-6
        assert (ours.double() - expected).abs().max() < bound


def test_without_bias_and_from_a_strided_input() -> None:
    x, weight, _, _, _ = operands(torch.float32, (4,), 64, 48)
    strided = torch.randn(64, 4).t()  # (4, 64), not contiguous
    torch.testing.assert_close(native.gemv(strided, weight), F.linear(strided, weight), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(native.gemv(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_products_the_kernel_does_not_take() -> None:
    x, weight, _, _, _ = operands(torch.float32, (native.MAX_ROWS + 1,), 64, 48)
    assert not native.applies(x, weight)  # more rows: torch's matrix kernels
    assert native.applies(x[: native.MAX_ROWS], weight)
    assert not native.applies(x[:2], weight.t().contiguous().t())  # a transposed weight
    assert not native.applies(x[:2].double(), weight.double())
    assert not native.applies(x[:2].half(), weight.half())
    assert not native.applies(x[:2].bfloat16(), weight)  # x and weight of different float dtypes
    assert not native.applies(x[:2, :32], weight)  # widths that do not match
    assert not native.applies(x[:0], weight)


def test_bfloat16_takes_more_rows_where_torch_has_no_bfloat16_instructions() -> None:
    weight = torch.randn(48, 64, dtype=torch.bfloat16)
    rows = torch.randn(native.MAX_ROWS_SLOW_BF16, 64, dtype=torch.bfloat16)
    slow = not kernels.cpu_has_fast(torch.bfloat16)
    assert kernels.native_applies(rows, weight, None) == slow
    assert not kernels.native_applies(torch.cat([rows, rows[:1]]), weight, None)
    assert not kernels.native_applies(rows.float(), weight.float(), None)  # float32: MAX_ROWS
    assert kernels.native_applies(rows[: native.MAX_ROWS].float(), weight.float(), None)


def test_linear_sends_products_without_gradients_to_the_kernel_and_keeps_gradients(monkeypatch) -> None:
    layer = kernels.Linear(64, 48)
    x = torch.randn(2, 64, requires_grad=True)
    calls = []
    original = native.gemv
    monkeypatch.setattr(native, "gemv", lambda *args, **kw: calls.append(args[0].shape) or original(*args, **kw))
    y = layer(x)  # gradients wanted: torch's kernels
    y.sum().backward()
    assert calls == [] and x.grad is not None and layer.weight.grad is not None
    with torch.no_grad():
        ours = layer(x)
        with kernels.use_native(False):
            theirs = layer(x)
    assert calls == [(2, 64)]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        layer(x)
    assert len(calls) == 1  # autocast decides the dtypes: torch's kernels


def reference_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(hs)) v in float64, masked slots at -inf."""
    scores = (q.double() @ k.double().transpose(-2, -1)) * q.shape[-1] ** -0.5
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "B, H, S, D, shared_mask", [(1, 12, 144, 64, True), (3, 4, 37, 24, False), (2, 2, 1, 8, False)]
)
def test_attention_over_a_cache_prefix_equals_float64_attention(dtype, B, H, S, D, shared_mask) -> None:
    gen = torch.Generator().manual_seed(S)
    cache = torch.randn(2, B, H, S + 11, D, generator=gen).to(dtype)
    k, v = cache[0, :, :, :S], cache[1, :, :, :S]  # prefix views of a longer cache, as decoding reads them
    q = torch.randn(B, 1, H, D, generator=gen).to(dtype).transpose(1, 2)  # (B, H, 1, D), strided
    mask = torch.rand(1 if shared_mask else B, 1, 1, S, generator=gen) < 0.7
    mask[..., 0] = True  # every row sees a slot
    assert native.attention_applies(q, k, v, mask)
    ours = native.attend(q, k, v, mask)
    assert ours.shape == (B, H, 1, D) and ours.dtype == dtype
    expected = reference_attention(q, k, v, mask)
    if dtype == torch.bfloat16:
        assert ((ours.double() - expected).abs() <= expected.abs() * 2.0**-8 + 1e-6).all()
    else:
        torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-6)
    with kernels.use_native(False):  # what torch's kernels give for the same call
        theirs = kernels.attention(q, k, v, mask, 0.0)
    torch.testing.assert_close(kernels.attention(q, k, v, mask, 0.0), theirs, **TOLERANCE[dtype])


TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=1e-2)}


def test_a_row_that_sees_no_slot_gets_nan_as_torchs_softmax_does() -> None:
    q, k, v = torch.randn(2, 2, 1, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1] = False
    ours = native.attend(q, k, v, mask)
    assert torch.isnan(ours[1]).all() and not torch.isnan(ours[0]).any()
    assert torch.isnan(reference_attention(q, k, v, mask)[1]).all()


def test_attention_the_kernel_does_not_take() -> None:
    q, k, v = torch.randn(1, 2, 1, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    mask = torch.ones(1, 1, 1, 5, dtype=torch.bool)
    assert native.attention_applies(q, k, v, mask)
    assert not native.attention_applies(q, k, v, None)  # plain causal attention over the same tokens
    assert not native.attention_applies(torch.randn(1, 2, 3, 8), k, v, torch.ones(1, 1, 3, 5, dtype=torch.bool))
    assert not native.attention_applies(q.half(), k.half(), v.half(), mask)
    assert not native.attention_applies(q, k.bfloat16(), v, mask)
    assert not native.attention_applies(q, k, v, mask.float())
    assert not native.attention_applies(q, k.transpose(2, 3).contiguous().transpose(2, 3), v, mask)
    with torch.enable_grad():
        assert not kernels.native_attention_applies(q.requires_grad_(), k, v, mask)


def small_gpt(seed: int) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig.from_name("gpt2-tiny", vocab_size=300, initializer_range=0.2, n_embd=96, n_head=4)
    return GPT(config).eval()


GREEDY = SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True, logprobs=0)
PROMPTS = [[5, 17, 99, 3], [42, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9]]


def decode_both_ways(model: GPT) -> tuple[list, list]:
    ours = generate(model, PROMPTS, GREEDY)
    with kernels.use_native(False):
        theirs = generate(model, PROMPTS, GREEDY)
    return ours, theirs


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_decoding_equals_torchs_kernels(seed: int) -> None:
    ours, theirs = decode_both_ways(small_gpt(seed))
    assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_bfloat16_decoding_follows_torchs_kernels() -> None:
    """Both sum in float32 and round each product once; the orders differ, so a bfloat16 rounding may land on
    the neighbouring value and, rarely, a near tie may break the other way: compare the first tokens and the
    log-probabilities while the sequences agree."""
    ours, theirs = decode_both_ways(small_gpt(0).to(torch.bfloat16))
    for a, b in zip(ours, theirs, strict=True):
        pairs = enumerate(zip(a.token_ids, b.token_ids, strict=True))
        same = next((i for i, (s, t) in pairs if s != t), len(a.token_ids))
        assert same >= 5
        assert a.logprobs[:same] == pytest.approx(b.logprobs[:same], abs=0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_int8_decoding_computes_the_dequantized_weights_in_float32(seed: int) -> None:
    """Through the kernel an int8 model computes x @ (q * scale)^T + bias in float32, activations unrounded:
    the dequantized float32 model's greedy tokens and log-probabilities. One prompt of at most MAX_ROWS tokens
    at a time, so that its prefill goes through the kernel too (longer prefills take torch's packed kernel,
    which rounds activations to bfloat16: tests/test_quantize.py)."""
    model = quantize_model(small_gpt(seed))
    reference = dequantize_model(model)
    for prompt in PROMPTS:
        prompt = prompt[: native.MAX_ROWS]
        (ours,) = generate(model, [prompt], GREEDY)
        (theirs,) = generate(reference, [prompt], GREEDY)
        assert ours.token_ids == theirs.token_ids
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)


def test_the_kernel_is_built_once_into_the_cache_folder(tmp_path: Path) -> None:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    assert compiler is not None
    first = native.build(compiler, tmp_path)
    assert first is not None and first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert native.build(compiler, tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind


def test_a_compiler_that_fails_leaves_no_library(tmp_path: Path) -> None:
    failing = shutil.which("false")
    assert failing is not None
    assert native.build(failing, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_the_library_api_loads_models_that_decode_through_the_kernel(tmp_path: Path) -> None:
    small_gpt(3).save_pretrained(tmp_path / "m")
    model = gptkit.load(tmp_path / "m", lm=True).model
    ours, theirs = decode_both_ways(model)
    assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]
