"""LoRA: low-rank adapters on a GPT's (or a task model's) nn.Linear layers, saved in peft's format.

`LoRALinear` keeps the wrapped layer's `weight` and `bias` under their own names (torchtune's habit), so a
model with LoRA applied still loads base checkpoints unchanged; the adapter adds `lora_A.weight` (r, in)
and `lora_B.weight` (out, r) beside them. Module paths equal Hugging Face's (`transformer.h.0.attn.c_attn`
for GPT-2 and GPT-1 alike), so an adapter written here is peft's `base_model.model.<path>.lora_A.weight`
and `PeftModel.from_pretrained` loads it onto the transformers model, and back. peft wraps GPT-2's Conv1D
([in, out]) with `fan_in_fan_out=True` yet keeps its lora_A/lora_B as nn.Linear of the same shapes as
ours, so adapter weights need no transposing.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gptkit.errors import CheckpointError, ConfigError
from gptkit.io import atomic_write, atomic_write_text, read_json
from gptkit.models.config import LoRAConfig  # defined beside GPTConfig (no torch); also importable here
from gptkit.models.kernels import Linear, linear

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft's PeftModel -> LoraModel -> the wrapped model
_LORA_KEY = re.compile(r"\.lora_[AB]\.weight$")


class LoRALinear(nn.Module):
    """`base(x) + lora_B(lora_A(dropout(x))) * scaling`, holding base's own weight and bias Parameters."""

    def __init__(self, base: nn.Linear, config: LoRAConfig) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r = config.r
        self.scaling = config.scaling
        self.weight = base.weight  # the same Parameters: state dict keys and optimizer groups stay valid
        self.bias = base.bias
        kwargs: dict[str, Any] = dict(bias=False, device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(self.in_features, config.r, **kwargs)
        self.lora_B = nn.Linear(config.r, self.out_features, **kwargs)
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        # As peft (and the LoRA paper's code): A like nn.Linear's default init, B zero, so training starts at base.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function: W + scaling * B @ A (the bias is shared)."""
        with torch.no_grad():
            delta = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling  # (out, in)
            weight = (self.weight.float() + delta).to(self.weight.dtype)
        with torch.device("meta"):
            plain = Linear(self.in_features, self.out_features, bias=self.bias is not None)
        plain.weight = nn.Parameter(weight, requires_grad=self.weight.requires_grad)
        plain.bias = self.bias
        return plain

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, scaling={self.scaling}"


# -- applying and merging --------------------------------------------------------------------------


def _matches(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _target_modules(model: nn.Module, targets: Sequence[str]) -> dict[str, nn.Linear]:
    """The Linear modules `targets` select, by path; ConfigError when none, or a non-Linear, matches."""
    found: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        if not name or not _matches(name, targets):
            continue
        if isinstance(module, LoRALinear):
            raise ConfigError(f"{name} already has a LoRA adapter; call merge_lora(model) before applying another")
        if not isinstance(module, nn.Linear):
            raise ConfigError(
                f"LoRA target {name!r} is a {type(module).__name__}, not an nn.Linear; name Linear layers in targets"
            )
        found[name] = module
    if not found:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(
            f"LoRA targets {list(targets)} match no module of this {type(model).__name__}; "
            f"its nn.Linear layers are named {linears}"
        )
    shared = _shared_parameters(model)
    for name, module in found.items():
        if id(module.weight) in shared:
            raise ConfigError(
                f"LoRA target {name!r} shares its weight with another module (a tied LM head?); merging would "
                "untie it. Leave it out of targets"
            )
    return found


def _shared_parameters(model: nn.Module) -> set[int]:
    """ids of Parameters registered under more than one name (a tied LM head)."""
    seen: set[int] = set()
    shared: set[int] = set()
    for _, param in model.named_parameters(remove_duplicate=False):
        (shared if id(param) in seen else seen).add(id(param))
    return shared


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where the submodule at path `name` (e.g. "transformer.h.0.attn.c_attn") is."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap each nn.Linear that `config.targets` selects in a LoRALinear, in place; return their paths."""
    found = _target_modules(model, config.targets)
    for name, module in found.items():
        replace_module(model, name, LoRALinear(module, config))
    return list(found)


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every adapter into its base weight, in place (LoRALinear -> nn.Linear); return their paths.

    Afterwards the model has its original structure and state dict keys again, so a GPT saves with save_model.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in names:
        module = model.get_submodule(name)
        assert isinstance(module, LoRALinear)
        replace_module(model, name, module.merged())
    return names


@contextmanager
def without_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """The model with each LoRALinear swapped for a plain Linear over the same base weight and bias (to save
    the base model beside its adapter); the adapters are put back on exit."""
    swapped = {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    for name, module in swapped.items():
        plain = Linear(module.weight.shape[1], module.weight.shape[0], bias=module.bias is not None, device="meta")
        plain.weight, plain.bias = module.weight, module.bias
        replace_module(model, name, plain)
    try:
        yield model
    finally:
        for name, module in swapped.items():
            replace_module(model, name, module)


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter weights only (`<path>.lora_A.weight`, `<path>.lora_B.weight`), detached."""
    return {k: v.detach() for k, v in model.state_dict().items() if _LORA_KEY.search(k)}


# -- which parameters train ------------------------------------------------------------------------


def _is_head(name: str) -> bool:
    """A task head's parameter: anything outside the backbone and the LM head."""
    return not name.startswith("transformer.") and name != "lm_head.weight"


def _selector(which: str, names: list[str]) -> Callable[[str], bool]:
    if which == "all":
        return lambda n: True
    if which == "lora":
        if not any(_LORA_KEY.search(n) for n in names):
            raise ConfigError("mark_trainable(which='lora'): the model has no LoRA adapters; call apply_lora first")
        return lambda n: _LORA_KEY.search(n) is not None or _is_head(n)
    if which == "head":
        if not any(_is_head(n) for n in names):
            raise ConfigError(
                "mark_trainable(which='head'): the model has no task-head parameters (every parameter is under "
                "'transformer.' or is the LM head); use 'all', 'lora' or 'last:N' to fine-tune a language model"
            )
        return _is_head
    match = re.fullmatch(r"last:(\d+)", which)
    if match is None:
        raise ConfigError(f"mark_trainable: which={which!r} is not one of 'all', 'lora', 'head', 'last:N' (N >= 1)")
    blocks = {int(m.group(1)) for n in names if (m := re.match(r"transformer\.h\.(\d+)\.", n))}
    n_layer, n = len(blocks), int(match.group(1))
    if not 1 <= n <= n_layer:
        raise ConfigError(f"mark_trainable: which={which!r} asks for {n} blocks; the model has {n_layer}")
    first = n_layer - n

    def last(name: str) -> bool:
        block = re.match(r"transformer\.h\.(\d+)\.", name)
        return (
            (block is not None and int(block.group(1)) >= first)
            or name.startswith("transformer.ln_f.")
            or _is_head(name)
        )

    return last


def mark_trainable(model: nn.Module, which: str) -> tuple[int, int]:
    """Set requires_grad by `which`; return (trainable, total) counts of distinct parameters.

    which: "all"; "lora" (adapters and task-head parameters); "head" (task-head parameters only);
        "last:N" (the last N blocks, the final LayerNorm and the task head). Task-head parameters are those
        whose names start neither with "transformer." nor are "lm_head.weight".
    A tied LM head is the token embedding's Parameter and counts once, under `transformer.wte.weight`.
    """
    params = dict(model.named_parameters())  # distinct Parameters, each under its first name
    keep = _selector(which, list(params))
    for name, param in params.items():
        param.requires_grad_(bool(keep(name)))
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in params.values())


# -- peft's adapter format --------------------------------------------------------------------------


def save_adapter(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    config: LoRAConfig,
    base_model_name_or_path: str | None,
    task_type: str | None = "CAUSAL_LM",
    modules_to_save: Sequence[str] | None = None,
) -> Path:
    """Write the adapter as peft does (adapter_config.json + adapter_model.safetensors), each file atomically.

    modules_to_save: modules stored whole beside the adapters (a task head such as "score"), as peft's
        `modules_to_save`; None means peft's default for task_type (the head names of SEQ_CLS, TOKEN_CLS
        and QUESTION_ANS models; none for CAUSAL_LM).
    """
    from safetensors.torch import save_file

    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not layers:
        raise ConfigError("save_adapter: the model has no LoRA adapters; call apply_lora first")
    bad = sorted(n for n, m in layers.items() if m.r != config.r or not _matches(n, config.targets))
    if bad:
        raise ConfigError(f"save_adapter: LoRA layers {bad[:5]} do not match config (r={config.r}, {config.targets})")
    if modules_to_save is None:
        modules_to_save = _TASK_HEADS.get(task_type or "", ())
    tensors = {PEFT_PREFIX + k: v.to("cpu").contiguous() for k, v in lora_state_dict(model).items()}
    for name, module in _modules_to_save(model, modules_to_save).items():
        tensors.update(
            {f"{PEFT_PREFIX}{name}.{k}": v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
        )
    conv1d = any(n.startswith("transformer.h.") for n in layers)  # HF's GPT-1/GPT-2 blocks use Conv1D
    adapter_config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": sorted(config.targets),
        "fan_in_fan_out": conv1d,
        "bias": "none",
        "use_rslora": config.rslora,
        "use_dora": False,
        "lora_bias": False,
        "modules_to_save": list(modules_to_save) or None,
        "init_lora_weights": True,
        "inference_mode": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / ADAPTER_WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    atomic_write_text(directory / ADAPTER_CONFIG_FILE, json.dumps(adapter_config, indent=2) + "\n")
    return directory


# The heads peft's PeftModelFor<Task> adds to modules_to_save; only those the model has are stored.
_CLASSIFIERS = ("classifier", "score")
_TASK_HEADS = {"SEQ_CLS": _CLASSIFIERS, "TOKEN_CLS": _CLASSIFIERS, "QUESTION_ANS": ("qa_outputs",)}


def _modules_to_save(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Modules matched by peft's `modules_to_save` names (path equal or ending in "." + name)."""
    return {n: m for n, m in model.named_modules() if n and _matches(n, names)}


# Options of peft's LoraConfig that change the computation; anything but these values is refused.
_UNSUPPORTED = {
    "bias": ("none", None),
    "use_dora": (False, None),
    "lora_bias": (False, None),
    "layers_to_transform": (None, []),
    "layers_pattern": (None, [], ""),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "exclude_modules": (None, [], ""),
    "target_parameters": (None, []),
    "trainable_token_indices": (None,),
    "layer_replication": (None,),
}


def read_adapter_config(directory: str | os.PathLike[str], model: nn.Module) -> tuple[LoRAConfig, list[str]]:
    """The LoRAConfig of a peft LoRA adapter directory (targets resolved against `model`) and its modules_to_save."""
    path = Path(directory) / ADAPTER_CONFIG_FILE
    raw = read_json(path, CheckpointError, missing="file is missing; is this a peft adapter directory?")
    if not isinstance(raw, dict) or raw.get("peft_type") != "LORA":
        found = raw.get("peft_type") if isinstance(raw, dict) else raw
        raise CheckpointError(f"{path}: peft_type is {found!r}; gptkit loads only LoRA adapters ('LORA')")
    for key, allowed in _UNSUPPORTED.items():
        if raw.get(key, allowed[0]) not in allowed:
            raise CheckpointError(f"{path}: {key}={raw[key]!r} is not supported by gptkit's LoRA (use {allowed[0]!r})")
    targets = raw.get("target_modules")
    if isinstance(targets, str):  # peft matches a string as a regex over whole module paths
        try:
            targets = sorted(n for n, _ in model.named_modules() if n and re.fullmatch(targets, n))
        except re.error as exc:
            raise CheckpointError(f"{path}: target_modules {raw['target_modules']!r} is not a valid regex") from exc
        if not targets:
            raise CheckpointError(f"{path}: target_modules regex {raw['target_modules']!r} matches no module")
    saved = raw.get("modules_to_save") or []
    if not isinstance(saved, list) or not all(isinstance(s, str) for s in saved):
        raise CheckpointError(f"{path}: modules_to_save must be a list of module names, got {saved!r}")
    try:
        config = LoRAConfig(
            r=raw.get("r", 8),
            alpha=raw.get("lora_alpha", 8),
            dropout=raw.get("lora_dropout", 0.0),
            targets=tuple(targets) if isinstance(targets, (list, tuple)) else targets,  # type: ignore[arg-type]
            rslora=bool(raw.get("use_rslora", False)),
        )
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return config, saved


def _read_adapter_weights(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: adapter weights are missing (expected {ADAPTER_WEIGHTS_FILE})")
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read adapter weights ({type(exc).__name__}: {exc})") from exc


def load_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> LoRAConfig:
    """Apply the LoRA adapter saved in `directory` (peft's format) to `model` and load its weights.

    Every stored key must be used, every expected key present and every shape match, else CheckpointError
    names the key and file; all of it is checked before the model is changed.
    """
    config, saved = read_adapter_config(directory, model)
    weights_path = Path(directory) / ADAPTER_WEIGHTS_FILE
    stored = _read_adapter_weights(weights_path)
    try:
        linears = _target_modules(model, config.targets)
    except ConfigError as exc:
        raise CheckpointError(f"{Path(directory) / ADAPTER_CONFIG_FILE}: {exc}") from exc
    expected: dict[str, tuple[int, ...]] = {}
    for name, target in linears.items():
        expected[f"{name}.lora_A.weight"] = (config.r, target.in_features)
        expected[f"{name}.lora_B.weight"] = (target.out_features, config.r)
    heads = _modules_to_save(model, saved)
    for name, module in heads.items():
        expected.update({f"{name}.{k}": tuple(v.shape) for k, v in module.state_dict().items()})
    state = _checked_adapter_state(stored, expected, weights_path)

    apply_lora(model, config)
    targets = model.state_dict(keep_vars=True)  # Parameters and buffers, by name
    with torch.no_grad():
        for key, tensor in state.items():
            targets[key].copy_(tensor)
    return config


def _checked_adapter_state(
    stored: dict[str, Tensor], expected: dict[str, tuple[int, ...]], path: Path
) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for key, tensor in stored.items():
        name = key.removeprefix(PEFT_PREFIX)
        if name not in expected:
            raise CheckpointError(
                f"{path}: unexpected adapter weight {key!r}; this model has no such LoRA layer or saved module "
                "(was the adapter trained on another architecture or with other target_modules?)"
            )
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(
                f"{path}: adapter weight {key!r} has shape {tuple(tensor.shape)}, expected {expected[name]}; "
                "does adapter_config.json's r match these weights, and the base model this adapter's?"
            )
        state[name] = tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{path}: missing adapter weight(s) {[PEFT_PREFIX + k for k in missing[:5]]}")
    return state
