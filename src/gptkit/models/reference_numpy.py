"""A picoGPT-style NumPy forward pass of GPT-1 (post-LN) and GPT-2 (pre-LN): the oracle model.py is tested
against. Plain float64 NumPy, one sequence, no cache; parameters in gptkit naming and torch layout
(Linear weights [out, in]). Deliberately no torch import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from gptkit.errors import ContextLengthError
from gptkit.models.config import GPTConfig

Params = dict[str, np.ndarray]

_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf; the reference may be slow


def gelu_new(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))  # same shape as x


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))  # same shape as x


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)  # same shape as x


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"gelu_new": gelu_new, "gelu": gelu, "relu": relu}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))  # same shape as x
    return e / e.sum(axis=-1, keepdims=True)  # same shape as x


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)  # [T, 1]
    var = x.var(axis=-1, keepdims=True)  # [T, 1], biased like torch
    y = g * (x - mean) / np.sqrt(var + eps)  # [T, C]
    return y if b is None else y + b  # [T, C]


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    y = x @ w.T  # [T, in] @ [in, out] -> [T, out]
    return y if b is None else y + b  # [T, out]


def attention(x: np.ndarray, p: Params, pre: str, n_head: int) -> np.ndarray:
    T, C = x.shape  # [T, C]
    qkv = linear(x, p[pre + "c_attn.weight"], p.get(pre + "c_attn.bias"))  # [T, 3C]
    q, k, v = np.split(qkv, 3, axis=-1)  # 3 x [T, C]
    q, k, v = (m.reshape(T, n_head, C // n_head).transpose(1, 0, 2) for m in (q, k, v))  # 3 x [nh, T, hs]
    mask = np.triu(np.full((T, T), -np.inf), k=1)  # [T, T], -inf above the diagonal
    w = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(C // n_head) + mask)  # [nh, T, T]
    y = (w @ v).transpose(1, 0, 2).reshape(T, C)  # [nh, T, hs] -> [T, nh, hs] -> [T, C]
    return linear(y, p[pre + "c_proj.weight"], p.get(pre + "c_proj.bias"))  # [T, C]


def mlp(x: np.ndarray, p: Params, pre: str, act: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    h = act(linear(x, p[pre + "c_fc.weight"], p.get(pre + "c_fc.bias")))  # [T, F]
    return linear(h, p[pre + "c_proj.weight"], p.get(pre + "c_proj.bias"))  # [T, C]


def block(x: np.ndarray, p: Params, i: int, config: GPTConfig) -> np.ndarray:
    pre, eps, act = f"transformer.h.{i}.", config.layer_norm_epsilon, ACTIVATIONS[config.activation]

    def ln(name: str, h: np.ndarray) -> np.ndarray:
        return layer_norm(h, p[pre + name + ".weight"], p.get(pre + name + ".bias"), eps)  # [T, C]

    if config.pre_norm:  # GPT-2
        x = x + attention(ln("ln_1", x), p, pre + "attn.", config.n_head)  # [T, C]
        return x + mlp(ln("ln_2", x), p, pre + "mlp.", act)  # [T, C]
    x = ln("ln_1", x + attention(x, p, pre + "attn.", config.n_head))  # [T, C], GPT-1
    return ln("ln_2", x + mlp(x, p, pre + "mlp.", act))  # [T, C]


def forward(config: GPTConfig, params: Params, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits [T, V] and hidden states (embeddings, then each block's output; the last one after ln_f
    where the model has it, as in transformers) for one sequence of token ids."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    ids = np.asarray(ids, dtype=np.int64)  # [T]
    if ids.ndim != 1:
        raise ValueError(f"ids must be one sequence (1-D), got shape {ids.shape}")
    if len(ids) > config.n_positions:
        raise ContextLengthError(f"{len(ids)} tokens exceed the model's context of {config.n_positions}")
    x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][: len(ids)]  # [T, C]
    hidden = [x]  # n_layer + 1 entries of [T, C]
    for i in range(config.n_layer):
        x = block(x, p, i, config)  # [T, C]
        hidden.append(x)
    if config.final_norm:  # GPT-2
        x = layer_norm(x, p["transformer.ln_f.weight"], p.get("transformer.ln_f.bias"), config.layer_norm_epsilon)
        hidden[-1] = x  # [T, C]
    logits = x @ p.get("lm_head.weight", p["transformer.wte.weight"]).T  # [T, C] @ [C, V] -> [T, V]
    return logits, hidden
