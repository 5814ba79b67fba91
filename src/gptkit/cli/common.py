"""Helpers shared by the subcommand modules: dtype choices, device resolution, dataclass flags, model loading.

Nothing here imports torch at module level: `gptkit --help` and `import gptkit` stay light.
"""

from __future__ import annotations

import argparse
from typing import Any

from gptkit.errors import GptkitError

DTYPES = ("float32", "bfloat16", "float16")
# Where a model is loaded to generate (generate, chat, serve): int8 weights too (gptkit.models.quantize.DTYPE_NAMES)
INFERENCE_DTYPES = (*DTYPES, "int8")
INT8_HELP = "int8: int8 weights with float32 activations, about 1.8x bfloat16's decoding speed on a CPU"

# GPTConfig's fields as flags (`gptkit new`; the shape ones for scratch models in train and finetune).
MODEL_HELP = {
    "vocab_size": "rows of the token embedding; at least the tokenizer's vocabulary",
    "n_positions": "context length in tokens (rows of the position embedding)",
    "n_embd": "width of the hidden states (a multiple of --n-head)",
    "n_layer": "number of transformer blocks",
    "n_head": "attention heads per block",
    "n_inner": "width of the MLP's hidden layer (none: 4 x n-embd)",
    "activation": "the MLP's nonlinearity (gelu_new is GPT-1's and GPT-2's tanh approximation)",
    "pre_norm": "LayerNorm before attention and MLP (GPT-2) instead of after each residual addition (GPT-1)",
    "final_norm": "a LayerNorm after the last block (GPT-2 has one, GPT-1 none)",
    "layer_norm_epsilon": "epsilon added to the variance in every LayerNorm",
    "embd_pdrop": "dropout probability on the summed embeddings while training",
    "attn_pdrop": "dropout probability on the attention weights while training",
    "resid_pdrop": "dropout probability on each block's residual branches while training",
    "bias": "Linear layers and LayerNorms have bias terms",
    "tie_word_embeddings": "the LM head shares its weight with the token embedding",
    "initializer_range": "standard deviation of the random normal initial weights",
}


def resolve_device(name: str, flag: str = "--device") -> str:
    """`auto` -> cuda when available, else cpu; any other name is checked: torch must know it and have it here."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise GptkitError(f"{flag} {name}: not a device name; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        built = "without CUDA" if torch.version.cuda is None else "with CUDA, but sees no GPU"
        raise GptkitError(f"{flag} {name}: this torch {torch.__version__} is built {built}; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise GptkitError(f"{flag} {name}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 ...)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GptkitError(f"{flag} {name}: MPS is not available here; use --device cpu")
    return name


def read_input(path: str, flag: str) -> str:
    """The text of the file `flag` names ('-' = stdin), or an error naming the flag and the file."""
    import sys

    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise GptkitError(f"cannot read {flag} {path}: {reason}") from exc


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--model and --tokenizer, as `load_for_inference` reads them."""
    parser.add_argument("--model", required=True, help="hub name or checkpoint folder")
    parser.add_argument("--tokenizer", help="tokenizer name or folder, if not the one stored with the model")


def add_device_flags(parser: argparse.ArgumentParser, dtypes: tuple[str, ...] = DTYPES) -> None:
    """--device and --dtype (one of `dtypes`), as `load_for_inference` reads them."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps, or auto (default: %(default)s)")
    note = f"; {INT8_HELP}" if "int8" in dtypes else ""
    parser.add_argument(
        "--dtype", choices=dtypes, default="float32", help=f"weights and compute dtype (default: %(default)s){note}"
    )


def load_for_inference(args: argparse.Namespace) -> Any:
    """The language model's ModelBundle from --model/--tokenizer/--device/--dtype; an error if it has no tokenizer."""
    from gptkit.tasks.bundle import load

    bundle = load(
        args.model,
        device=resolve_device(args.device),
        dtype=args.dtype,
        tokenizer=args.tokenizer,
        lm=True,
    )
    if bundle.tokenizer is None:
        raise GptkitError(f"{args.model} has no tokenizer files; name one with --tokenizer (e.g. gpt2)")
    return bundle


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, helps: dict[str, str], skip: set[str], default_note: str | None = None
) -> None:
    """One --flag per dataclass field; default None so that only flags the user gives override a --config.

    Each help line ends with the field's default, or with `default_note` where the defaults come from elsewhere.
    """
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f"{helps.get(f.name, f.name.replace('_', ' '))} ({default_note or f'default: {default!r}'})"
        args = typing.get_args(hint)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = [a for a in args if a is not type(None)] if union else [hint]  # X | None -> X
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(flag, choices=args, default=None, help=text)
        elif len(options) == 1 and typing.get_origin(options[0]) is tuple:  # tuple[X, ...]: a repeatable flag
            item = typing.get_args(options[0])[0]
            parser.add_argument(flag, action="append", type=item, default=None, help=text + "; repeatable")
        elif bool in options:  # bool | Literal[...]: true, false or one of the literals
            words = {"true": True, "false": False} | {w: w for o in options for w in typing.get_args(o)}
            parser.add_argument(flag, type=_one_of(words), default=None, help=text + f" ({', '.join(words)})")
        else:
            kind = next((a for a in args if a in (int, float, str)), hint if hint in (int, float, str) else str)
            parser.add_argument(flag, type=kind, default=None, help=text)


def _one_of(words: dict[str, Any]) -> Any:
    """An argparse `type` mapping each of `words` to its value; anything else is an error that lists them."""

    def parse(value: str) -> Any:
        if value not in words:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(words)}, got {value!r}")
        return words[value]

    return parse


def dataclass_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` that the user gave as flags (see `add_dataclass_flags`); the rest keep cls's defaults."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in fields and v is not None}
