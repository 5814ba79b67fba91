"""The `gptkit` command: each subcommand parses its flags and calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from gptkit.errors import GptkitError

DTYPES = ("float32", "bfloat16", "float16")


def _convert(args: argparse.Namespace) -> int:
    import torch

    from gptkit.checkpoint import load_model, load_tokenizer, resolve, save_model

    source = resolve(args.source)
    model = load_model(source.path, dtype=getattr(torch, args.dtype))
    tokenizer = load_tokenizer(source)
    path = save_model(model, args.dest, tokenizer=tokenizer)
    note = "" if tokenizer is not None else " (no tokenizer files found beside the weights)"
    print(f"wrote {path} from {source.path} [{source.format}], {model.num_parameters():,} parameters{note}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from gptkit.checkpoint import describe

    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"path        {info['path']}")
    print(f"format      {info['format']}  (family: {info['family']})")
    print(f"parameters  {info['parameters']:,}")
    print(f"dtype       {info['dtype']}")
    print("config      " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))
    for name, size in info["files"].items():
        print(f"  {size:>14,}  {name}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptkit",
        description="GPT-1 and GPT-2: load OpenAI and Hugging Face checkpoints, convert and inspect them.",
        epilog="Run `gptkit COMMAND --help` for the flags of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "convert",
        help="convert any supported checkpoint into a gptkit / Hugging Face directory",
        description=(
            "Read SRC (a hub name such as gpt2 or openai-community/gpt2-xl, a Hugging Face directory, "
            "OpenAI's original GPT-2 TensorFlow folder, or GPT-1's params_*.npy folder) and write DST, "
            "a directory that gptkit and transformers.AutoModelForCausalLM both load."
        ),
    )
    p.add_argument("source", metavar="SRC", help="hub name or checkpoint folder to read")
    p.add_argument("dest", metavar="DST", help="directory to write (created if missing)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the saved weights (default: float32)")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "info",
        help="show a checkpoint's config, parameter count, dtype and files",
        description="Describe MODEL (hub name or checkpoint folder) without running it.",
    )
    p.add_argument("model", metavar="MODEL", help="hub name or checkpoint folder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except GptkitError as exc:
        print(f"gptkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gptkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
