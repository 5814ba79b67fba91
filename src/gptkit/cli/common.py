"""Helpers shared by the subcommand modules: dtype choices, device resolution, dataclass flags, model loading.

Nothing here imports torch at module level: `gptkit --help` and `import gptkit` stay light.
"""

from __future__ import annotations

import argparse
from typing import Any

from gptkit.errors import GptkitError

DTYPES = ("float32", "bfloat16", "float16")


def _device(name: str) -> str:
    """`auto` -> cuda when available, else cpu; any other name is passed through."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_for_inference(args: argparse.Namespace) -> Any:
    """The language model's ModelBundle from --model/--tokenizer/--device/--dtype; an error if it has no tokenizer."""
    import torch

    from gptkit.tasks.bundle import load

    bundle = load(
        args.model, device=_device(args.device), dtype=getattr(torch, args.dtype), tokenizer=args.tokenizer, lm=True
    )
    if bundle.tokenizer is None:
        raise GptkitError(f"{args.model} has no tokenizer files; name one with --tokenizer (e.g. gpt2)")
    return bundle


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, helps: dict[str, str], skip: set[str]) -> None:
    """One --flag per dataclass field; default None so that only flags the user gives override a --config."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f"{helps.get(f.name, f.name.replace('_', ' '))} (default: {default!r})"
        args = typing.get_args(hint)
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(flag, choices=args, default=None, help=text)
        else:
            kind = next((a for a in args if a in (int, float, str)), hint if hint in (int, float, str) else str)
            parser.add_argument(flag, type=kind, default=None, help=text)
