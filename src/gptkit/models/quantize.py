"""Int8 weight-only decoding: a GPT whose Linear weights are int8 with one float32 scale per output channel.

`quantize_model` swaps, in place, every Linear layer of the blocks (attention c_attn/c_proj, MLP c_fc/c_proj)
for an `Int8Linear`, and the token embedding for an `Int8Embedding` whose int8 table and scales the LM head
shares when it is tied (GPT-2): one int8 copy serves the lookup and the head. LayerNorms, biases and the
position table stay float32, and so do the activations between the products. Weight `w` of output channel n
becomes `q = round(w / s)` in [-127, 127] with `s = max|w_n| / 127` (symmetric, no zero point); the model
then computes with the dequantized weights `q * s` (`dequantize_model` builds that float32 GPT: the oracle).

Decoding-sized products (up to `native.MAX_ROWS` rows) go to gptkit's own CPU kernel (`native.gemv`, where the
system's C compiler built it): float32 activations, int8 weights widened to float32 in registers, one float32 sum
per output, then the scale and bias: x @ (q * s)^T + b to float32 rounding, at 1.25-1.7x the speed of what
follows (measured on an AVX2 EPYC). Other products, or all of them without that kernel, take the path below.

The product is `torch.ops.aten._weight_int8pack_mm` (int8 weights [N, K] x activations [M, K]), the kernel
PyTorch's own int8 weight-only path lowers to on CPU. In torch 2.13 it is vectorized (AVX-512) only for
bfloat16 activations: its float32 path is a scalar loop, 10x slower, which makes int8 slower than float32.
So the activations are rounded to bfloat16 on their way in, the kernel accumulates in float32 and rounds its
result to bfloat16, and the float32 scale (and bias) is applied after, in float32. Measured on the 2-core
AMD EPYC this project runs on, one thread, GPT-2 124M's decode weights (48 block matrices and the head,
batch 1): this kernel 8.3 ms, oneDNN bf16 16.1 ms, oneDNN fp32 20.8 ms, the float32 int8pack path 81 ms;
fbgemm's dynamic quantization (`torch.ao` dynamic Linear, which also rounds activations to 8 bits per
tensor: not weight-only) 4.3 ms; the same product as a torch.compile'd (inductor) float32 reduction 5.8 ms,
after 16 s of compiling for GPT-2's five shapes. torchao 0.18 adds no CPU kernel (its eager weight-only
linear dequantizes the whole weight per call). The kernel reads K in aligned steps of 16 (a K of 40
crashed it), so other widths, other devices and other activation dtypes take the exact fallback: the
dequantized weight through `kernels.linear`, which saves memory but not time. So do products of 128 rows
or more, where that is faster (`_PACKED_MAX_ROWS`): a long prompt is prefilled with the dequantized weights
in float32, and decoded, a few rows per step, with the roundings above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.errors import ConfigError
from gptkit.models import native
from gptkit.models.gpt import GPT, build_model
from gptkit.models.kernels import linear, native_applies, trim_freed_memory
from gptkit.models.lora import LoRALinear, replace_module

INT8 = "int8"
FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = (*FLOAT_DTYPES, INT8)  # what --dtype takes where models are loaded for inference
QMAX = 127  # symmetric: -127..127, so that q and -q are both representable
_QUANTIZE_ROWS = 2048
# From this many rows (a long prompt's prefill, scoring a text) the dequantized weight through oneDNN beats the
# packed kernel, which is compute-bound there: GPT-2 124M's blocks on one thread, 128 rows 157 against 167 ms,
# 256 rows 283 against 356, 512 rows 582 against 732; 64 rows 88 against 86, 16 rows 40 against 24.
_PACKED_MAX_ROWS = 128
_PACKED_K_STEP = 16  # _weight_int8pack_mm's AVX-512 loop reads 16 activations (32 bytes, aligned) at a time


def parse_dtype(dtype: torch.dtype | str | None) -> tuple[torch.dtype | None, bool]:
    """A dtype or its name -> (the float dtype to load the weights in, whether to quantize them to int8 after).

    None keeps the loader's default (float32). Unknown names raise ConfigError naming --dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype, False
    if dtype == INT8:
        return torch.float32, True
    if dtype in FLOAT_DTYPES:
        return FLOAT_DTYPES[dtype], False
    raise ConfigError(f"--dtype {dtype!r} is not a dtype gptkit loads models in; use one of {', '.join(DTYPE_NAMES)}")


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric int8: weight (N, K) float -> (q (N, K) int8, scale (N,) float32) with
    weight ~ q * scale[:, None]. A row of zeros gets scale 1 (any scale represents it exactly). Works through
    the rows a block at a time, so its float32 temporaries stay small beside a 50,257-row LM head."""
    q = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scale = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    for start in range(0, weight.shape[0], _QUANTIZE_ROWS):
        w = weight[start : start + _QUANTIZE_ROWS].detach().float()  # (n, K)
        amax = w.abs().amax(dim=1)  # (n,)
        s = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))  # (n,)
        q[start : start + _QUANTIZE_ROWS] = torch.round(w / s[:, None]).clamp_(-QMAX, QMAX)  # (n, K), cast to int8
        scale[start : start + _QUANTIZE_ROWS] = s
    return q, scale


def dequantize_weight(q: Tensor, scale: Tensor) -> Tensor:
    """The float32 weights an int8 layer computes with: q (N, K) * scale (N,) per row."""
    return q.float() * scale[:, None]  # (N, K)


def _packed_applies(x: Tensor, weight: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and 0 < x.numel() < _PACKED_MAX_ROWS * x.shape[-1]
        and weight.shape[1] % _PACKED_K_STEP == 0
        and weight.is_contiguous()
        and weight.data_ptr() % 16 == 0  # its rows are read with aligned 16-byte loads
    )


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights (N, K) and float32 per-output-channel scales; float32 in and out.

    `weight` is int8 (a frozen Parameter, so parameter counts and devices read as for nn.Linear), `scale` a
    buffer, `bias` as nn.Linear's."""

    scale: Tensor  # buffers, registered in __init__
    unit: Tensor

    def __init__(self, weight: nn.Parameter, scale: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.weight = weight
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)
        # The kernel multiplies by its own (bfloat16) scales; ones leave the float32 scale to be applied after.
        self.register_buffer("unit", torch.ones_like(scale, dtype=torch.bfloat16), persistent=False)

    @classmethod
    def from_float(cls, layer: nn.Linear) -> Int8Linear:
        q, scale = quantize_weight(layer.weight)
        return cls(nn.Parameter(q, requires_grad=False), scale, layer.bias)

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        if native_applies(x, self.weight, self.bias):  # float32 activations, no rounding
            return native.gemv(x, self.weight, self.bias, self.scale)
        if not _packed_applies(x, self.weight):
            return linear(x, dequantize_weight(self.weight, self.scale).to(x.dtype), self.bias)
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16, memory_format=torch.contiguous_format)  # (M, K), fresh
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.unit)  # (M, N) bf16 of a float32 sum
        y = y * self.scale if self.bias is None else torch.addcmul(self.bias, y, self.scale)  # (M, N) float32
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class Int8Embedding(nn.Module):
    """A token embedding with an int8 table (V, C) and a float32 scale per row: row v is q[v] * scale[v]."""

    scale: Tensor  # a buffer, registered in __init__

    def __init__(self, weight: nn.Parameter, scale: Tensor) -> None:
        super().__init__()
        self.weight = weight
        self.register_buffer("scale", scale)

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight).float() * self.scale[ids].unsqueeze(-1)  # (..., C)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


def quantize_model(model: GPT) -> GPT:
    """Make `model` (float32, LoRA merged) an int8 weight-only model, in place; see the module docstring.

    The float32 matrices are replaced, and their memory goes back to the OS once nothing else holds them."""
    if is_quantized(model):
        raise ConfigError("the model is already int8")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ConfigError("int8 needs the LoRA adapters merged into the weights first (merge_lora)")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise ConfigError(f"int8 quantizes a float32 model; this one is {sorted(map(str, dtypes))}: load it in float32")
    for name, layer in list(model.transformer.h.named_modules(prefix="transformer.h")):
        if isinstance(layer, nn.Linear):  # attention c_attn, c_proj; MLP c_fc, c_proj
            replace_module(model, name, Int8Linear.from_float(layer))
    q, scale = quantize_weight(model.transformer.wte.weight)
    embedding = Int8Embedding(nn.Parameter(q, requires_grad=False), scale)
    if model.config.tie_word_embeddings:  # one int8 table and its scales for both
        head = Int8Linear(embedding.weight, embedding.scale, None)
    else:
        head = Int8Linear.from_float(model.lm_head)
    replace_module(model, "lm_head", head)
    replace_module(model, "transformer.wte", embedding)
    trim_freed_memory()  # measured on GPT-2 124M: resident growth after loading 498 MiB without this, 183 with
    return model.eval()


def dequantize_model(model: GPT) -> GPT:
    """A new float32 GPT holding the weights an int8 model computes with (q * scale): what it approximates up to
    the bfloat16 rounding of each int8 product's input and output."""
    state = model.state_dict()
    weights = {k: v for k, v in state.items() if not k.endswith(".scale")}
    for key in state:
        if key.endswith(".scale"):
            weight = key.removesuffix(".scale") + ".weight"
            weights[weight] = dequantize_weight(state[weight], state[key])
    return build_model(model.config, weights)
