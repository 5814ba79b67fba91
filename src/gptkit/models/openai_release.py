"""Readers for OpenAI's original releases: GPT-2's TensorFlow checkpoint folder and GPT-1's `params_*.npy`.

Both return `(GPTConfig, state_dict)` with gptkit names and layout (`lm_head.weight` included, the same
tensor as `transformer.wte.weight`). OpenAI stores linear weights as 1x1 convolutions `[1, in, out]`;
gptkit (torch) stores `[out, in]`, so every `.../w` is squeezed and transposed. Every variable must be
used and every shape must match, or loading fails naming the variable and the file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptkit.errors import CheckpointError, ConfigError
from gptkit.io import read_json
from gptkit.models.config import GPTConfig

__all__: list[str] = [
    "BLOCK_TABLE",
    "block_shapes",
    "find_tf_checkpoint",
    "gpt1_config_from_shapes",
    "gpt1_order",
    "gpt2_config_from_hparams",
    "gpt2_order",
    "gpt2_variable_shapes",
    "read_gpt1_shards",
    "read_openai_tf",
    "to_gptkit_tensor",
]

TF_HPARAMS = "hparams.json"
TF_CHECKPOINT_STATE = "checkpoint"
TF_DEFAULT_PREFIX = "model.ckpt"
GPT1_SHAPES = "params_shapes.json"
GPT1_SHARD = "params_{}.npy"

# One block, in OpenAI's names and in GPT-1's storage order (the order the variables were created in
# openai/finetune-transformer-lm's `block`): attention, ln_1, MLP, ln_2.
BLOCK_TABLE: tuple[tuple[str, str], ...] = (
    ("attn/c_attn/w", "attn.c_attn.weight"),
    ("attn/c_attn/b", "attn.c_attn.bias"),
    ("attn/c_proj/w", "attn.c_proj.weight"),
    ("attn/c_proj/b", "attn.c_proj.bias"),
    ("ln_1/g", "ln_1.weight"),
    ("ln_1/b", "ln_1.bias"),
    ("mlp/c_fc/w", "mlp.c_fc.weight"),
    ("mlp/c_fc/b", "mlp.c_fc.bias"),
    ("mlp/c_proj/w", "mlp.c_proj.weight"),
    ("mlp/c_proj/b", "mlp.c_proj.bias"),
    ("ln_2/g", "ln_2.weight"),
    ("ln_2/b", "ln_2.bias"),
)

Shape = tuple[int, ...]


def block_shapes(n_embd: int, mlp_width: int) -> dict[str, Shape]:
    """OpenAI's shape of each variable of one block, keyed by its name in `BLOCK_TABLE`."""
    C, F = n_embd, mlp_width
    return {
        "attn/c_attn/w": (1, C, 3 * C),
        "attn/c_attn/b": (3 * C,),
        "attn/c_proj/w": (1, C, C),
        "attn/c_proj/b": (C,),
        "ln_1/g": (C,),
        "ln_1/b": (C,),
        "mlp/c_fc/w": (1, C, F),
        "mlp/c_fc/b": (F,),
        "mlp/c_proj/w": (1, F, C),
        "mlp/c_proj/b": (C,),
        "ln_2/g": (C,),
        "ln_2/b": (C,),
    }


def to_gptkit_tensor(openai_name: str, array: np.ndarray) -> torch.Tensor:
    """One OpenAI array in gptkit layout: `.../w` [1, in, out] becomes [out, in]; the rest keeps its shape."""
    if openai_name.endswith("/w"):
        array = array[0].T  # (out, in)
    return torch.from_numpy(np.ascontiguousarray(array))


# -- GPT-2: the TensorFlow release ----------------------------------------------------------------


def read_openai_tf(folder: str | os.PathLike[str]) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """Read OpenAI's GPT-2 TensorFlow folder (`hparams.json` + `model.ckpt.*`). Needs `gptkit[tf]`."""
    folder = Path(folder)
    config = gpt2_config_from_hparams(folder / TF_HPARAMS)
    prefix = find_tf_checkpoint(folder)
    reader = _tf_reader(prefix)
    stored = dict(reader.get_variable_to_shape_map())
    expected = gpt2_variable_shapes(config)
    _check_variables(stored, expected, where=f"{prefix}.index", hparams=folder / TF_HPARAMS)

    def get(name: str) -> np.ndarray:
        try:
            return reader.get_tensor(name)
        except Exception as exc:  # tf.errors.OpError (DataLossError, OutOfRangeError, ...)
            raise CheckpointError(
                f"{prefix}.data-*: cannot read variable {name!r} ({type(exc).__name__}: {exc}); "
                "the data file is truncated or corrupt, download it again"
            ) from exc

    state = {ours: to_gptkit_tensor(theirs, get(theirs)) for ours, theirs in gpt2_order(config)}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return config, state


def gpt2_config_from_hparams(path: Path) -> GPTConfig:
    """The GPTConfig of a GPT-2 release from its `hparams.json` (n_vocab, n_ctx, n_embd, n_head, n_layer)."""
    hparams = read_json(path, CheckpointError, missing="missing; an OpenAI GPT-2 TensorFlow folder has hparams.json")
    keys = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
    if not isinstance(hparams, dict) or any(k not in hparams for k in keys):
        raise CheckpointError(f"{path}: expected a JSON object with keys {list(keys)}, got {hparams!r}")
    vocab_size = hparams["n_vocab"]
    # The preset's <|endoftext|> id (50256) does not exist in a smaller vocabulary.
    special = {} if _is_int(vocab_size) and vocab_size > 50256 else {"bos_token_id": None, "eos_token_id": None}
    return _config(
        "gpt2",
        path,
        vocab_size=vocab_size,
        n_positions=hparams["n_ctx"],
        n_embd=hparams["n_embd"],
        n_head=hparams["n_head"],
        n_layer=hparams["n_layer"],
        **special,
    )


def gpt2_order(config: GPTConfig) -> list[tuple[str, str]]:
    """(gptkit key, OpenAI variable name) of every GPT-2 parameter."""
    order = [("transformer.wte.weight", "model/wte"), ("transformer.wpe.weight", "model/wpe")]
    for i in range(config.n_layer):
        order += _block_names(i, f"model/h{i}/")
    return order + [("transformer.ln_f.weight", "model/ln_f/g"), ("transformer.ln_f.bias", "model/ln_f/b")]


def gpt2_variable_shapes(config: GPTConfig) -> dict[str, Shape]:
    """Every variable of OpenAI's GPT-2 checkpoint for `config`, with its shape."""
    shapes: dict[str, Shape] = {
        "model/wte": (config.vocab_size, config.n_embd),
        "model/wpe": (config.n_positions, config.n_embd),
        "model/ln_f/g": (config.n_embd,),
        "model/ln_f/b": (config.n_embd,),
    }
    block = block_shapes(config.n_embd, config.mlp_width)
    for i in range(config.n_layer):
        shapes.update({f"model/h{i}/{name}": shape for name, shape in block.items()})
    return shapes


def find_tf_checkpoint(folder: Path) -> Path:
    """The checkpoint prefix in `folder`: the one the `checkpoint` file names, else `model.ckpt`, else the
    only `*.index` there. The `checkpoint` file may hold an absolute path from the machine that wrote it;
    only its file name is trusted then."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a directory; expected OpenAI's GPT-2 TensorFlow folder")
    candidates = []
    state_file = folder / TF_CHECKPOINT_STATE
    if state_file.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', state_file.read_text(errors="replace"), re.M)
        if match:
            named = Path(match.group(1))
            candidates += [named if named.is_absolute() else folder / named, folder / named.name]
    candidates.append(folder / TF_DEFAULT_PREFIX)
    for prefix in candidates:
        if _index_file(prefix).is_file():
            return prefix
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) == 1:
        return indexes[0].with_suffix("")
    found = f"several checkpoints {[p.name for p in indexes]}" if indexes else "no *.index file"
    raise CheckpointError(
        f"{folder}: cannot find the TensorFlow checkpoint ({found}); expected {TF_DEFAULT_PREFIX}.index "
        f"and {TF_DEFAULT_PREFIX}.data-00000-of-00001, or a '{TF_CHECKPOINT_STATE}' file naming the prefix"
    )


def _index_file(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def _tf_reader(prefix: Path) -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise CheckpointError(
            f"{prefix}: reading OpenAI's TensorFlow checkpoint needs TensorFlow: pip install 'gptkit[tf]'"
        ) from exc
    try:
        return tf.train.load_checkpoint(str(prefix))
    except Exception as exc:  # tf.errors.OpError
        raise CheckpointError(f"{prefix}: not a readable TensorFlow checkpoint ({type(exc).__name__}: {exc})") from exc


def _check_variables(
    stored: dict[str, Sequence[int]], expected: dict[str, Shape], *, where: str, hparams: Path
) -> None:
    """Every expected variable present with its shape, and nothing else."""
    for name, shape in expected.items():
        if name not in stored:
            raise CheckpointError(f"{where}: variable {name!r} is missing (expected shape {list(shape)})")
        if tuple(stored[name]) != shape:
            raise CheckpointError(
                f"{where}: variable {name!r} has shape {list(stored[name])}, expected {list(shape)} from {hparams}"
            )
    unused = sorted(set(stored) - set(expected))
    if unused:
        raise CheckpointError(
            f"{where}: variable(s) {unused[:5]}{f' and {len(unused) - 5} more' if len(unused) > 5 else ''} "
            f"are not part of a GPT-2 with the shape in {hparams}"
        )


# -- GPT-1: params_shapes.json + params_N.npy ------------------------------------------------------


def read_gpt1_shards(folder: str | os.PathLike[str], *, n_head: int = 12) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """Read GPT-1's original release: `params_shapes.json` and the flat float32 shards `params_0.npy` ...

    The shards are one concatenation of all parameters; it is split at the cumulative sizes of the
    shapes. The file does not record the number of heads, hence `n_head` (12 in the release).
    """
    folder = Path(folder)
    shapes_file = folder / GPT1_SHAPES
    shapes = _read_shapes(shapes_file)
    config = gpt1_config_from_shapes(shapes, n_head=n_head, source=shapes_file)
    flat = _read_shards(folder, total=sum(math.prod(s) for s in shapes), shapes_file=shapes_file)
    offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
    arrays = [flat[offsets[k] : offsets[k + 1]].reshape(s) for k, s in enumerate(shapes)]

    state = {ours: to_gptkit_tensor(theirs, a) for (ours, theirs), a in zip(gpt1_order(config), arrays, strict=True)}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return config, state


def gpt1_order(config: GPTConfig) -> list[tuple[str, str]]:
    """(gptkit key, OpenAI name) of every GPT-1 parameter in storage order: positions, tokens, blocks."""
    order = [("transformer.wpe.weight", "wpe"), ("transformer.wte.weight", "wte")]
    for i in range(config.n_layer):
        order += _block_names(i, f"h{i}/")
    return order


def gpt1_config_from_shapes(
    shapes: Sequence[Shape], *, n_head: int = 12, source: str | os.PathLike[str] = GPT1_SHAPES
) -> GPTConfig:
    """The GPTConfig that GPT-1's shape list describes; an inconsistent list fails naming `source` and entry."""
    n_blocks, rest = divmod(len(shapes) - 2, len(BLOCK_TABLE))
    if len(shapes) < 2 + len(BLOCK_TABLE) or rest:
        raise CheckpointError(f"{source}: {len(shapes)} shapes; expected 2 embeddings + {len(BLOCK_TABLE)} per layer")
    n_positions, n_embd = _matrix(shapes, 0, source)
    vocab_size, n_embd_tokens = _matrix(shapes, 1, source)
    if n_embd_tokens != n_embd:
        raise CheckpointError(
            f"{source}: entry 0 (positions) {list(shapes[0])} and entry 1 (tokens) {list(shapes[1])} "
            "disagree on the embedding width"
        )
    c_fc = shapes[2 + [name for name, _ in BLOCK_TABLE].index("mlp/c_fc/w")]  # layer 0's, [1, C, F]
    mlp_width = c_fc[-1] if len(c_fc) == 3 else -1  # a malformed one fails the check below
    block = block_shapes(n_embd, mlp_width)
    for k, shape in enumerate(shapes[2:], start=2):
        layer, name = divmod(k - 2, len(BLOCK_TABLE))
        expected = block[BLOCK_TABLE[name][0]]
        if tuple(shape) != expected:
            raise CheckpointError(
                f"{source}: entry {k} (layer {layer} {BLOCK_TABLE[name][0]}) has shape {list(shape)}, "
                f"expected {list(expected)}"
            )
    return _config(
        "openai-gpt",
        source,
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_blocks,
        n_head=n_head,
        n_inner=None if mlp_width == 4 * n_embd else mlp_width,
    )


def _read_shapes(path: Path) -> list[Shape]:
    data = read_json(path, CheckpointError, missing="missing; GPT-1's release folder has params_shapes.json")
    if not isinstance(data, list) or not all(
        isinstance(s, list) and s and all(_is_int(d) and d > 0 for d in s) for s in data
    ):
        raise CheckpointError(f"{path}: expected a list of shapes (lists of positive integers)")
    return [tuple(s) for s in data]


def _read_shards(folder: Path, *, total: int, shapes_file: Path) -> np.ndarray:
    """params_0.npy, params_1.npy, ... (as many as exist from 0), concatenated: (total,) float32."""
    paths: list[Path] = []
    while (folder / GPT1_SHARD.format(len(paths))).is_file():
        paths.append(folder / GPT1_SHARD.format(len(paths)))
    if not paths:
        raise CheckpointError(f"{folder / GPT1_SHARD.format(0)}: missing; GPT-1's weights are params_0.npy ...")
    stray = sorted(
        p for p in folder.glob("params_*.npy") if re.fullmatch(r"params_\d+\.npy", p.name) and p not in paths
    )
    if stray:
        raise CheckpointError(
            f"{folder / GPT1_SHARD.format(len(paths))}: missing, but {stray[0].name} exists; a shard is missing"
        )
    shards = [_load_shard(path) for path in paths]
    found = sum(s.size for s in shards)
    if found != total:
        raise CheckpointError(
            f"{folder}: shards {paths[0].name}..{paths[-1].name} hold {found} values but {shapes_file} "
            f"describes {total}; a shard is missing or truncated"
        )
    return np.concatenate(shards)


def _load_shard(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable .npy file ({exc}); it may be truncated") from exc
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
        raise CheckpointError(f"{path}: expected a flat float array, got shape {array.shape} {array.dtype}")
    return array


def _matrix(shapes: Sequence[Shape], k: int, source: str | os.PathLike[str]) -> tuple[int, int]:
    if len(shapes[k]) != 2:
        raise CheckpointError(f"{source}: entry {k} should be an embedding [rows, n_embd], got {list(shapes[k])}")
    return shapes[k][0], shapes[k][1]


# -- shared ----------------------------------------------------------------------------------------


def _block_names(layer: int, openai_prefix: str) -> list[tuple[str, str]]:
    """(gptkit key, OpenAI name) for each variable of block `layer`, in `BLOCK_TABLE` order."""
    return [(f"transformer.h.{layer}.{ours}", openai_prefix + theirs) for theirs, ours in BLOCK_TABLE]


def _config(preset: str, source: str | os.PathLike[str], **fields: Any) -> GPTConfig:
    try:
        return GPTConfig.from_name(preset, **fields)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source}: does not describe a valid model: {exc}") from exc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
