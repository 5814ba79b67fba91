"""Hugging Face names and configs <-> gptkit's: one table of renames plus a set of transposed keys.

gptkit's parameter names are Hugging Face GPT-2's; GPT-1 ("openai-gpt") differs only in the two
embedding names. Hugging Face stores attention/MLP projections as Conv1D ([in, out]); gptkit uses
nn.Linear ([out, in]), so those weights are transposed both ways.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from gptkit.errors import CheckpointError
from gptkit.models.config import GPTConfig

# Linear weights that Hugging Face keeps as Conv1D, i.e. transposed.
_TRANSPOSED = re.compile(r"\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
# gptkit name -> Hugging Face name, per model_type (only where they differ).
_RENAMES: dict[str, dict[str, str]] = {
    "gpt2": {},
    "openai-gpt": {
        "transformer.wte.weight": "transformer.tokens_embed.weight",
        "transformer.wpe.weight": "transformer.positions_embed.weight",
    },
}
# Buffers some Hugging Face checkpoints carry that hold no weights (causal masks, position ranges).
_IGNORED = re.compile(r"(\.attn\.bias|\.attn\.masked_bias|position_ids)$")
TIED_KEY = "lm_head.weight"

# Hugging Face activation names -> gptkit's, per model_type. GPT-1's "gelu" is the tanh approximation.
_HF_ACTIVATIONS = {
    "gpt2": {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"},
    "openai-gpt": {"gelu": "gelu_new", "relu": "relu"},
}


def is_transposed(name: str) -> bool:
    return _TRANSPOSED.search(name) is not None


def hf_name(name: str, model_type: str) -> str:
    return _RENAMES[model_type].get(name, name)


def to_hf_state_dict(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """gptkit state dict -> Hugging Face `*LMHeadModel` state dict (tied LM head omitted, as HF saves it)."""
    model_type = _require_family(config)
    out = {}
    for name, tensor in state.items():
        if name == TIED_KEY and config.tie_word_embeddings:
            continue
        out[hf_name(name, model_type)] = (tensor.t() if is_transposed(name) else tensor).contiguous()
    return out


def hf_layout(
    stored: Mapping[str, tuple[int, ...]], config: GPTConfig, expected: dict[str, tuple[int, ...]], *, source: str
) -> dict[str, tuple[str, bool]]:
    """Where each of gptkit's tensors lies in a Hugging Face state dict with these shapes (name -> shape):
    gptkit name -> (Hugging Face name, stored transposed), checked against `expected` (name -> shape).

    Accepts checkpoints of the LM-head model (`transformer.` prefix) and of the bare model (no prefix,
    no LM head: the head is then the tied embedding). Every expected key must be found, every found key
    used, and every shape must match; otherwise CheckpointError names the key. A tied LM head is left out:
    it is the embedding (`tie_head`).
    """
    model_type = _require_family(config)
    prefixed = any(k.startswith("transformer.") for k in stored)
    available = {(k if prefixed or k == TIED_KEY else f"transformer.{k}"): k for k in stored}  # -> stored name
    layout: dict[str, tuple[str, bool]] = {}
    for name, shape in expected.items():
        key = hf_name(name, model_type)
        if name == TIED_KEY and config.tie_word_embeddings:
            available.pop(key, None)  # the head is the embedding; a stored copy adds nothing
            continue
        if key not in available:
            raise CheckpointError(f"{source}: missing weight {key!r} (needed for gptkit's {name!r})")
        stored_name = available.pop(key)
        transposed = is_transposed(name)
        found = tuple(reversed(stored[stored_name])) if transposed else tuple(stored[stored_name])
        if found != tuple(shape):
            raise CheckpointError(
                f"{source}: weight {key!r} has shape {found}, but the config "
                f"expects {tuple(shape)} for {name!r}; is config.json the one these weights were saved with?"
            )
        layout[name] = (stored_name, transposed)
    unexpected = sorted(k for k in available if not _IGNORED.search(k))
    if unexpected:
        more = f" (and {len(unexpected) - 5} more)" if len(unexpected) > 5 else ""
        raise CheckpointError(
            f"{source}: unexpected weight(s) {unexpected[:5]}{more}; the checkpoint does not match a "
            f"{model_type} model with this config"
        )
    return layout


def tie_head(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """`state` with the LM head set to the token embedding, when the config ties them."""
    if config.tie_word_embeddings:
        state[TIED_KEY] = state["transformer.wte.weight"]
    return state


def config_from_hf(hf: dict[str, Any], *, source: str) -> GPTConfig:
    """A Hugging Face `config.json` (model_type gpt2 or openai-gpt) -> GPTConfig."""
    model_type = hf.get("model_type")
    if model_type not in _HF_ACTIVATIONS:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not supported; gptkit loads 'gpt2' and 'openai-gpt'"
        )
    for flag, ok in (("scale_attn_by_inverse_layer_idx", False), ("scale_attn_weights", True)):
        if hf.get(flag, ok) != ok:
            raise CheckpointError(f"{source}: {flag}={hf[flag]!r} is not supported (gptkit requires {ok!r})")
    act_key = "activation_function" if model_type == "gpt2" else "afn"
    act_name = hf.get(act_key, "gelu_new" if model_type == "gpt2" else "gelu")
    if act_name not in _HF_ACTIVATIONS[model_type]:
        raise CheckpointError(f"{source}: {act_key}={act_name!r} is not supported by gptkit")
    shared = dict(
        vocab_size=hf.get("vocab_size"),
        n_positions=hf.get("n_positions"),
        n_embd=hf.get("n_embd"),
        n_layer=hf.get("n_layer"),
        n_head=hf.get("n_head"),
        activation=_HF_ACTIVATIONS[model_type][act_name],
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        embd_pdrop=hf.get("embd_pdrop", 0.1),
        attn_pdrop=hf.get("attn_pdrop", 0.1),
        resid_pdrop=hf.get("resid_pdrop", 0.1),
        initializer_range=hf.get("initializer_range", 0.02),
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
    )
    missing = sorted(k for k, v in shared.items() if v is None)
    if missing:
        raise CheckpointError(f"{source}: config.json lacks required field(s) {missing}")
    if model_type == "gpt2":
        family: dict[str, Any] = dict(
            pre_norm=True,
            final_norm=True,
            n_inner=hf.get("n_inner"),
            bos_token_id=_token_id(hf.get("bos_token_id"), hf["vocab_size"]),
            eos_token_id=_token_id(hf.get("eos_token_id"), hf["vocab_size"]),
        )
    else:
        family = dict(pre_norm=False, final_norm=False, bos_token_id=None, eos_token_id=None)
    try:
        return GPTConfig(**shared, **family, name=str(hf.get("_name_or_path") or model_type))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


def _token_id(value: Any, vocab_size: int) -> int | None:
    # transformers keeps GPT-2's 50256 even for tiny random vocabularies; such an id means nothing.
    return value if isinstance(value, int) and 0 <= value < vocab_size else None


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """GPTConfig -> the `config.json` fields Hugging Face reads for this model_type."""
    model_type = _require_family(config)
    act = {v: k for k, v in reversed(list(_HF_ACTIVATIONS[model_type].items()))}.get(config.activation)
    if act is None or not config.bias:
        raise CheckpointError(
            f"a {model_type} model with activation={config.activation!r}, bias={config.bias} "
            "has no Hugging Face equivalent"
        )
    common = dict(
        model_type=model_type,
        vocab_size=config.vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        layer_norm_epsilon=config.layer_norm_epsilon,
        embd_pdrop=config.embd_pdrop,
        attn_pdrop=config.attn_pdrop,
        resid_pdrop=config.resid_pdrop,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    if model_type == "gpt2":
        return dict(
            common,
            architectures=["GPT2LMHeadModel"],
            n_ctx=config.n_positions,
            n_inner=config.n_inner,
            activation_function=act,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            scale_attn_weights=True,
        )
    return dict(common, architectures=["OpenAIGPTLMHeadModel"], afn=act)


def _require_family(config: GPTConfig) -> str:
    family = config.family
    if family is None:
        raise CheckpointError(
            f"pre_norm={config.pre_norm} with final_norm={config.final_norm} matches neither GPT-2 nor GPT-1, "
            "so it has no Hugging Face model_type"
        )
    return family
