"""Test helpers: write a gptkit model in OpenAI's original layouts, and build seeded random gptkit models.

The name/order/layout tables here are written out independently of gptkit.models.openai_release on purpose,
so that a mistake in the reader's table is not mirrored by the writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT

# (gptkit key in block i, OpenAI name in block i), in GPT-1's storage order: openai/finetune-transformer-lm
# creates a block's variables as attention, ln_1, MLP, ln_2.
_LAYER = [
    ("attn.c_attn.weight", "attn/c_attn/w"),
    ("attn.c_attn.bias", "attn/c_attn/b"),
    ("attn.c_proj.weight", "attn/c_proj/w"),
    ("attn.c_proj.bias", "attn/c_proj/b"),
    ("ln_1.weight", "ln_1/g"),
    ("ln_1.bias", "ln_1/b"),
    ("mlp.c_fc.weight", "mlp/c_fc/w"),
    ("mlp.c_fc.bias", "mlp/c_fc/b"),
    ("mlp.c_proj.weight", "mlp/c_proj/w"),
    ("mlp.c_proj.bias", "mlp/c_proj/b"),
    ("ln_2.weight", "ln_2/g"),
    ("ln_2.bias", "ln_2/b"),
]


def random_gpt(family: str, *, seed: int = 0, **shape: int) -> GPT:
    """A seeded random gptkit GPT (eval mode, fp32). Matrices are scaled up (std ~0.1) so attention is far
    from uniform, and every LayerNorm and bias is perturbed so a swapped gain/bias or a dropped bias shows."""
    overrides: dict[str, int | None] = dict(shape)
    if family == "gpt2" and shape.get("vocab_size", 50257) <= 50256:
        overrides.update(bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_name(family, **overrides)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
            else:
                param.mul_(5.0)
    return model


def _openai_array(key: str, tensor: torch.Tensor) -> np.ndarray:
    """A gptkit tensor in OpenAI's layout: Linear weights [out, in] become 1x1 convs [1, in, out]."""
    array = tensor.detach().numpy()
    return array.T[None].copy() if key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else array


def gpt2_tf_variables(model: GPT) -> dict[str, np.ndarray]:
    """The variables of OpenAI's GPT-2 TensorFlow checkpoint for `model`."""
    state = model.state_dict()
    out = {
        "model/wte": state["transformer.wte.weight"].numpy(),
        "model/wpe": state["transformer.wpe.weight"].numpy(),
        "model/ln_f/g": state["transformer.ln_f.weight"].numpy(),
        "model/ln_f/b": state["transformer.ln_f.bias"].numpy(),
    }
    for i in range(model.config.n_layer):
        for key, name in _LAYER:
            out[f"model/h{i}/{name}"] = _openai_array(key, state[f"transformer.h.{i}.{key}"])
    return out


def write_gpt2_tf(
    folder: Path, model: GPT, *, variables: dict[str, np.ndarray] | None = None, prefix: str = "model.ckpt"
) -> Path:
    """OpenAI's GPT-2 release folder: a real TF V2 checkpoint (written by the SaveV2 op) + hparams.json +
    the `checkpoint` state file. `variables` replaces the model's variables (to write broken files)."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    variables = gpt2_tf_variables(model) if variables is None else variables
    names = sorted(variables)
    tf.raw_ops.SaveV2(
        prefix=str(folder / prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[variables[n] for n in names],
    )
    (folder / "checkpoint").write_text(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    c = model.config
    hparams = dict(n_vocab=c.vocab_size, n_ctx=c.n_positions, n_embd=c.n_embd, n_head=c.n_head, n_layer=c.n_layer)
    (folder / "hparams.json").write_text(json.dumps(hparams, indent=2))
    return folder


def gpt1_arrays(model: GPT) -> list[np.ndarray]:
    """GPT-1's parameter list for `model`, in the release's order: positions, tokens, then per layer."""
    state = model.state_dict()
    arrays = [state["transformer.wpe.weight"].numpy(), state["transformer.wte.weight"].numpy()]
    for i in range(model.config.n_layer):
        arrays += [_openai_array(key, state[f"transformer.h.{i}.{key}"]) for key, _ in _LAYER]
    return arrays


def write_gpt1_shards(folder: Path, model: GPT, *, n_shards: int = 10) -> Path:
    """GPT-1's release folder: params_shapes.json + params_0.npy ... (one flat float32 vector, split)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = gpt1_arrays(model)
    (folder / "params_shapes.json").write_text(json.dumps([list(a.shape) for a in arrays]))
    flat = np.concatenate([a.ravel() for a in arrays]).astype(np.float32)
    for n, shard in enumerate(np.array_split(flat, n_shards)):
        np.save(folder / f"params_{n}.npy", shard, allow_pickle=False)
    return folder
