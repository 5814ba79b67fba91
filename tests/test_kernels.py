"""kernels.linear against F.linear (the oracle): values and gradients, every path it takes but gptkit's own
decoding kernel (tests/test_native.py)."""

from __future__ import annotations

import functools
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptkit.models import kernels
from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT

needs_onednn = pytest.mark.skipif(kernels.onednn_op() is None, reason="this torch build has no oneDNN linear")


DEFAULT_RULE = kernels.onednn_pays.__wrapped__  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def onednn_on_every_cpu(monkeypatch):
    """The oneDNN path is tested on every CPU, also where the default leaves it (`onednn_pays`: AVX2-only), and
    in place of the decoding kernel for products without gradients."""
    monkeypatch.setattr(kernels, "onednn_pays", lambda: True)
    with kernels.use_native(False):
        yield


def _grads(fn, x, weight, bias, grad):
    for t in (x, weight, bias):
        if t is not None:
            t.grad = None
    fn(x, weight, bias).backward(grad)
    return [t.grad.clone() if t is not None else None for t in (x, weight, bias)]


@needs_onednn
@pytest.mark.parametrize(
    "lead, n_in, n_out, has_bias",
    [((3,), 768, 3072, True), ((2, 5), 64, 1, True), ((4, 7), 16, 24, False), ((1, 1), 768, 50257, False)],
)
def test_values_and_gradients_equal_f_linear(lead, n_in, n_out, has_bias) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*lead, n_in, generator=gen, requires_grad=True)
    weight = (torch.randn(n_out, n_in, generator=gen) * 0.02).requires_grad_()
    bias = torch.randn(n_out, generator=gen, requires_grad=True) if has_bias else None
    ours, ref = kernels.linear(x, weight, bias), F.linear(x, weight, bias)
    assert ours.grad_fn is not None and "OneDNN" in type(ours.grad_fn).__name__  # the oneDNN path ran
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(ref.shape, generator=gen)
    for got, want in zip(
        _grads(kernels.linear, x, weight, bias, grad), _grads(F.linear, x, weight, bias, grad), strict=True
    ):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_strided_input_and_only_some_gradients() -> None:
    x = torch.randn(8, 32).t()  # (32, 8), not contiguous
    weight = torch.randn(5, 8, requires_grad=True)
    torch.testing.assert_close(kernels.linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)
    kernels.linear(x, weight).sum().backward()  # x needs no gradient: only the weight's is computed
    torch.testing.assert_close(weight.grad, torch.ones(32, 5).t() @ x)


def test_other_dtypes_autocast_and_the_switch_use_f_linear_exactly(monkeypatch) -> None:
    """bf16 products take F.linear where the CPU has bf16 instructions (assumed here on every CPU; without them
    they run in float32: the next test)."""
    monkeypatch.setattr(kernels, "cpu_has_fast", lambda dtype: True)
    x, weight = torch.randn(4, 16), torch.randn(8, 16)
    bf16 = kernels.linear(x.bfloat16(), weight.bfloat16())
    assert torch.equal(bf16, F.linear(x.bfloat16(), weight.bfloat16()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = kernels.linear(x, weight)
        assert auto.dtype == torch.bfloat16 and torch.equal(auto, F.linear(x, weight))
    with kernels.use_onednn(False):  # what GPTKIT_ONEDNN=0 or a build without oneDNN gives
        assert torch.equal(kernels.linear(x, weight), F.linear(x, weight))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_products_are_float32_products_rounded_once(monkeypatch, dtype) -> None:
    """Where the CPU has no bf16/fp16 instructions (forced here on every CPU), products without gradients run in
    float32 and are rounded once: what torch's own reduced-precision product computes, in another order."""
    monkeypatch.setattr(kernels, "cpu_has_fast", lambda d: d == torch.float32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 96, generator=gen).to(dtype)
    weight, bias = torch.randn(72, 96, generator=gen).to(dtype), torch.randn(72, generator=gen).to(dtype)
    ours = kernels.linear(x, weight, bias)
    exact = x.double() @ weight.double().t() + bias.double()
    assert ours.dtype == dtype
    step = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[dtype]  # half a unit in the last place
    assert ((ours.double() - exact).abs() <= exact.abs() * step + 1e-4).all()
    torch.testing.assert_close(ours, F.linear(x, weight, bias), rtol=2e-2, atol=2e-2)
    x.requires_grad_()
    with torch.enable_grad():
        assert kernels.linear(x, weight, bias).grad_fn is not None  # gradients wanted: F.linear as before


def test_linear_module_is_an_nn_linear_with_the_same_state_dict() -> None:
    torch.manual_seed(0)
    ours = kernels.Linear(16, 8)
    plain = nn.Linear(16, 8)
    plain.load_state_dict(ours.state_dict())
    assert isinstance(ours, nn.Linear) and ours.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(3, 16)
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-6, atol=1e-6)


def test_a_training_step_matches_the_f_linear_model() -> None:
    """The whole GPT's loss and gradients, oneDNN against F.linear, with a tied head and dropout off."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", vocab_size=512)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = step()
    with kernels.use_onednn(False):
        ref_loss, ref_grads = step()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@needs_onednn
@pytest.mark.parametrize("capability, pays", [("AVX512", True), ("AVX512_BF16", True), ("AVX2", False), ("SVE", False)])
def test_onednn_is_the_default_only_where_the_cpu_has_avx512(monkeypatch, capability, pays) -> None:
    from process_state import onednn_in_use

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(kernels, "onednn_pays", functools.cache(DEFAULT_RULE))
    assert kernels.onednn_pays() is pays
    assert onednn_in_use() is pays
    x, weight = torch.randn(4, 16), torch.randn(8, 16)
    torch.testing.assert_close(kernels.linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_the_onednn_switch_is_decided_per_call_and_scoped_to_the_thread() -> None:
    from process_state import onednn_in_use

    assert onednn_in_use()  # on by default
    with kernels.use_onednn(False):
        assert not onednn_in_use()
        with kernels.use_onednn(True):
            assert onednn_in_use()
        assert not onednn_in_use()
        seen: list[bool] = []
        thread = threading.Thread(target=lambda: seen.append(onednn_in_use()))
        thread.start()
        thread.join()
        assert seen == [True]  # another thread keeps its own setting
    assert onednn_in_use()


def test_keep_freed_memory_holds_only_inside_its_scopes() -> None:
    from process_state import large_malloc_is_mmapped

    if large_malloc_is_mmapped() is None:
        pytest.skip("glibc's mallinfo2 is not available here")
    assert large_malloc_is_mmapped()  # glibc's default: a 64 MB block is mmapped and unmapped on free
    with kernels.keep_freed_memory() as kept:
        assert kept and not large_malloc_is_mmapped()
        with kernels.keep_freed_memory():  # nested (or another thread's run): the outer one still holds after
            assert not large_malloc_is_mmapped()
        assert not large_malloc_is_mmapped()
    assert large_malloc_is_mmapped()
    with kernels.keep_freed_memory(False) as kept:
        assert not kept and large_malloc_is_mmapped()
