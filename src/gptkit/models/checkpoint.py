"""Checkpoint files: find, read and write model directories. Used by training, generation, the CLI and the server.

A gptkit checkpoint *is* a Hugging Face directory (`config.json` with HF keys and `model_type`,
`model.safetensors`, tokenizer files) plus a `gptkit` block in config.json holding the exact GPTConfig.
Reading also accepts Hugging Face directories and hub names, OpenAI's original GPT-2 TensorFlow folder
and GPT-1's `params_*.npy` shards. Weights are read with safetensors or `torch.load(weights_only=True)`,
never by unpickling code.

This module knows files and names, not modules: reading returns a GPTConfig and a state dict checked
against the parameter shapes its caller expects, and `save_checkpoint` is the one writer for language
models and task models alike. `gptkit.models.gpt` builds the GPT from what is read here.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from gptkit.errors import CheckpointError, ConfigError, ModelNotFoundError
from gptkit.io import atomic_write, atomic_write_text, read_json
from gptkit.models.config import CONFIG_FILE, PRESETS, GPTConfig
from gptkit.models.hf_names import TIED_KEY, config_from_hf, config_to_hf, hf_layout, tie_head, to_hf_state_dict
from gptkit.models.weight_files import StoredWeights

Format = Literal["hf", "openai-tf", "openai-gpt1"]
WEIGHTS_FILE = "model.safetensors"
_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# What gptkit reads of a hub repo, all at its root (subfolders hold other frameworks' exports): the config,
# tokenizer files, generation config and chat template, and the weights: safetensors, or PyTorch's pickled
# .bin files (read with weights_only) where a repo has no safetensors.
_HUB_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
]
_HUB_WEIGHTS = ["*.safetensors", "model.safetensors.index.json"]
_HUB_BIN_WEIGHTS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
_HUB_IGNORE = ["*/*"]
# gptkit preset names that are OpenAI releases on the hub.
HUB_NAMES = {name: f"openai-community/{name}" for name in PRESETS if not name.endswith(("-tiny", "-mini"))}


@dataclass(frozen=True)
class Source:
    """A resolved checkpoint: a local folder and the format its files say it is in."""

    path: Path
    format: Format


def resolve(name_or_path: str | os.PathLike[str]) -> Source:
    """A local folder as it is; otherwise a hub repo id (or gptkit preset name) downloaded to the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return Source(path, detect_format(path))
    if path.exists():
        raise ModelNotFoundError(f"{path}: expected a checkpoint directory, got a file")
    return Source(download(str(name_or_path)), "hf")


def detect_format(folder: Path) -> Format:
    """The format a folder's files name: config.json (HF/gptkit), hparams.json + model.ckpt (GPT-2 TF),
    params_shapes.json (GPT-1 shards)."""
    if (folder / CONFIG_FILE).is_file():
        return "hf"
    if (folder / "hparams.json").is_file():
        return "openai-tf"
    if (folder / "params_shapes.json").is_file():
        return "openai-gpt1"
    raise CheckpointError(
        f"{folder}: not a checkpoint folder; expected config.json (Hugging Face / gptkit), "
        "hparams.json + model.ckpt.* (OpenAI GPT-2 TensorFlow) or params_shapes.json + params_*.npy (GPT-1)"
    )


def download(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
) -> Path:
    """The folder holding the files gptkit reads of a hub model (`name`: a repo id, or a preset with hub weights),
    fetched into the Hugging Face cache (`cache_dir`, default the HF cache) or `local_dir` if need be.

    This is how every hub name is loaded: offline (HF_HUB_OFFLINE=1, or no network) the cached copy is used.
    `revision` is a branch, tag or commit. Only the root's config, tokenizer, generation config, chat template
    and weights are fetched (PyTorch .bin files only when there are no safetensors). ModelNotFoundError, with a
    one-line reason, when it cannot be had (no such repo, no network and not cached, no huggingface_hub).
    """
    repo_id = HUB_NAMES.get(name, name)
    if repo_id.count("/") > 1 or repo_id.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{repo_id}: no such directory, and not a hub repo id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is not a local directory, and fetching it from the Hugging Face hub needs "
            "huggingface_hub: pip install 'gptkit[hf]'"
        ) from exc

    def fetch(patterns: list[str]) -> Path:
        got = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_dir=local_dir,
            allow_patterns=patterns,
            ignore_patterns=_HUB_IGNORE,
        )
        return Path(str(got))

    def has_weights(folder: Path, files: tuple[str, ...]) -> bool:
        return any((folder / file).is_file() for file in files)

    try:
        folder = fetch(_HUB_FILES + _HUB_WEIGHTS)
        if not has_weights(folder, _HF_WEIGHT_FILES[:2]):  # no safetensors: an older repo, with .bin files
            folder = fetch(_HUB_FILES + _HUB_BIN_WEIGHTS)
    except Exception as exc:
        raise ModelNotFoundError(_hub_error(name, repo_id, revision, exc)) from exc
    if not has_weights(folder, _HF_WEIGHT_FILES):
        raise ModelNotFoundError(f"{repo_id!r} holds no weights gptkit reads ({', '.join(_HF_WEIGHT_FILES)})")
    return folder


def _hub_error(name: str, repo_id: str, revision: str | None, exc: Exception) -> str:
    """One line saying why a hub model could not be had, and what to do."""
    from huggingface_hub.utils import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return (
            f"{repo_id!r} is gated on the Hugging Face hub: accept its terms at https://huggingface.co/{repo_id} "
            "and log in (hf auth login, or HF_TOKEN)"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{repo_id!r}: no such model on the Hugging Face hub (a private one needs hf auth login, or HF_TOKEN); "
            f"presets with hub weights: {', '.join(sorted(HUB_NAMES))}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id!r} has no revision {revision!r} (a branch, tag or commit) on the Hugging Face hub"
    if isinstance(exc, LocalEntryNotFoundError):
        return (
            f"{repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached (no network, or "
            f"HF_HUB_OFFLINE=1); run `gptkit download {name}` once online, or pass a checkpoint directory"
        )
    reason = (str(exc).strip().splitlines() or [""])[0]
    return (
        f"{repo_id!r} is neither a local directory nor available from the Hugging Face hub "
        f"({type(exc).__name__}: {reason}); check the name, or pass a checkpoint directory"
    )


# -- reading --------------------------------------------------------------------------------------


def read_config(folder: Path) -> GPTConfig:
    """The GPTConfig of a Hugging Face / gptkit folder (the exact gptkit block when present)."""
    return _read_config(folder)[0]


def _read_config(folder: Path) -> tuple[GPTConfig, str]:
    """The config and the weight naming of a folder: "hf", or "gptkit" for shapes HF cannot express."""
    path = folder / CONFIG_FILE
    data = _read_json(path)
    if "gptkit" not in data:
        return config_from_hf(data, source=str(path)), "hf"
    try:
        block = data["gptkit"]
        config = GPTConfig.from_dict(block["config"], source=f"{path} (gptkit.models.config)")
        return config, block.get("weights", "hf")
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: malformed 'gptkit' block ({exc!r})") from exc
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc


def read_hf_weights(folder: Path, *, dtype: torch.dtype | None = None) -> tuple[StoredWeights, Path]:
    """The tensors of a Hugging Face folder (single file or sharded), to be read (floating-point ones in
    `dtype` when given), and the file that lists them."""
    for name in _HF_WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return StoredWeights.open([path], dtype), path
        weight_map = _read_json(path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{path}: no 'weight_map' object")
        return StoredWeights.open([folder / shard for shard in sorted(set(weight_map.values()))], dtype), path
    raise CheckpointError(f"{folder}: no weights found; expected one of {', '.join(_HF_WEIGHT_FILES)}")


Shapes = Callable[[GPTConfig], dict[str, tuple[int, ...]]]


def read_checkpoint(
    source: Source, shapes: Shapes, *, n_head: int | None = None, dtype: torch.dtype | None = None
) -> tuple[GPTConfig, dict[str, Tensor]]:
    """Config and gptkit-named state dict of any supported source; `shapes(config)` is what the model expects.

    n_head: GPT-1's original shards do not record the head count; give it when it is not 12.
    dtype: for Hugging Face / gptkit folders, each floating-point tensor is read straight into this dtype
    (None: as stored); OpenAI's original releases are read as stored.
    """
    if n_head is not None and source.format != "openai-gpt1":
        raise ConfigError(f"{source.path}: n_head is read from the checkpoint's config; pass it only for GPT-1 shards")
    if source.format == "openai-tf":
        from gptkit.models.openai_release import read_openai_tf

        return read_openai_tf(source.path)
    if source.format == "openai-gpt1":
        from gptkit.models.openai_release import read_gpt1_shards

        return read_gpt1_shards(source.path, n_head=n_head or 12)
    config, naming = _read_config(source.path)
    hf_state, weights_path = read_hf_weights(source.path, dtype=dtype)
    expected = shapes(config)
    # A task model (GPT2ForSequenceClassification, ...) loads as its GPT: the weights of modules the GPT does
    # not have (the task head) are left out. A bare GPT2Model checkpoint has no prefixes and no head.
    if any(k.startswith("transformer.") for k in hf_state):
        modules = {k.split(".", 1)[0] for k in expected}  # transformer, lm_head
        hf_state = hf_state.select(k for k in hf_state if k.split(".", 1)[0] in modules)
    if naming == "gptkit":  # a shape transformers cannot express was saved under gptkit's own names
        layout = native_layout(hf_state, expected, config, weights_path)
    else:
        layout = hf_layout(hf_state.shapes, config, expected, source=str(weights_path))
    return config, tie_head(hf_state.read(layout), config)


def native_layout(
    state: StoredWeights, expected: dict[str, tuple[int, ...]], config: GPTConfig, path: Path | str
) -> dict[str, tuple[str, bool]]:
    """The layout of weights saved under gptkit's own names, checked against `expected` (a tied head is
    the embedding: not stored, and ignored if it is)."""
    found = set(state) - ({TIED_KEY} if config.tie_word_embeddings else set())  # a tied head is the embedding
    wanted = set(expected) - ({TIED_KEY} if config.tie_word_embeddings else set())
    missing, unexpected = sorted(wanted - found), sorted(found - wanted)
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing weights {missing[:5]}, unexpected weights {unexpected[:5]}")
    shapes = state.shapes
    layout = {key: (key, False) for key in state if key in found}  # in the files' order
    for key in layout:
        if shapes[key] != expected[key]:
            raise CheckpointError(f"{path}: {key!r} has shape {shapes[key]}, expected {expected[key]}")
    return layout


# -- writing --------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike[str],
    state: dict[str, Tensor],
    config: GPTConfig,
    *,
    tokenizer: Any = None,
    task_fields: Callable[[], dict[str, Any]] | None = None,
    block: dict[str, Any] | None = None,
) -> Path:
    """Write a state dict (gptkit names) as a directory gptkit and `transformers` both load.

    task_fields: the transformers config fields of a task model (architectures, labels, ...); it raises
        CheckpointError where transformers has no class for it. block: more of config.json's "gptkit" block.
    Where transformers cannot express the shape or the task, weights keep gptkit's names and the gptkit
    block says so. Each file is written atomically, config.json last: an interrupted save never leaves a
    folder that loads a mix of old and new weights silently.
    """
    from safetensors.torch import save_file

    from gptkit import __version__

    path = Path(path)
    state = {k: v.detach().to("cpu") for k, v in state.items()}
    dtype = next(iter(state.values())).dtype
    meta: dict[str, Any] = {"version": __version__, "weights": "hf", "config": config.to_dict(), **(block or {})}
    try:
        hf_config: dict[str, Any] = config_to_hf(config)
        if task_fields is not None:
            hf_config.update(task_fields())
        tensors = to_hf_state_dict(state, config)
    except CheckpointError as exc:  # a shape or task transformers cannot express: keep gptkit's names
        hf_config = {}
        meta["weights"] = "gptkit"
        if task_fields is not None:
            meta["note"] = f"{exc}: weights keep gptkit's names; load with gptkit.tasks.heads.load_task_model"
        tensors = {k: v.contiguous() for k, v in state.items() if not (k == TIED_KEY and config.tie_word_embeddings)}
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    hf_config.update(dtype=str(dtype).removeprefix("torch."), gptkit=meta)
    atomic_write_text(path / CONFIG_FILE, json.dumps(hf_config, indent=2) + "\n")  # last: marks the save done
    return path


# -- inspection -----------------------------------------------------------------------------------


def describe_source(source: Source, shapes: Shapes) -> dict[str, Any]:
    """Config, parameter count (from the model's `shapes(config)`), dtype and files of a checkpoint."""
    if source.format == "hf":
        config = read_config(source.path)
        weights = read_hf_weights(source.path)[0]
        dtypes = sorted({str(weights.stored_dtype(k)).removeprefix("torch.") for k in weights})
    else:
        config, state = read_checkpoint(source, shapes)
        dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    n_params = sum(
        math.prod(s) for k, s in shapes(config).items() if not (k == TIED_KEY and config.tie_word_embeddings)
    )
    files = {p.name: p.stat().st_size for p in sorted(source.path.iterdir()) if p.is_file()}
    return {
        "path": str(source.path),
        "format": source.format,
        "family": config.family,
        "parameters": n_params,
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "config": config.to_dict(),
        "files": files,
    }


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path, CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "encoder.json", "encoder_bpe_40000.json")


def load_tokenizer(source: Source) -> Any:
    """The tokenizer stored beside a checkpoint's weights, or None when the folder has none."""
    if not any((source.path / name).is_file() for name in _TOKENIZER_FILES):
        return None
    from gptkit.text.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(source.path)
