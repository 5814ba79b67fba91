"""The `gptkit` command: each subcommand parses its flags and calls one library function.

Each module here owns a group of subcommands and adds them with `register(sub)`; a new group is a new
module named in the import and the loop in `_build_parser`. Command functions import torch and the
library lazily, so that `gptkit --help` and `import gptkit` stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from gptkit.cli import data, jobs, models, serve, tasks, training
from gptkit.errors import GptkitError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptkit",
        description=(
            "GPT-1 and GPT-2 in one small toolkit: OpenAI's tokenizers, OpenAI and Hugging Face checkpoints, "
            "generation."
        ),
        epilog=(
            "Run `gptkit COMMAND --help` for the flags of one command. Environment: GPTKIT_NATIVE=0 leaves decoding's "
            "matrix products to torch instead of gptkit's own CPU kernel (compiled with $CC or cc on first use); "
            "GPTKIT_ONEDNN=0 sends fp32 CPU matrix products to MKL instead of oneDNN; GPTKIT_MALLOPT=0 lets glibc "
            "unmap freed memory while training."
        ),
    )
    parser.add_argument("--version", action="version", version=f"gptkit {version()}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # this order is the order of the subcommands in `gptkit --help`
    for module in (models, training, tasks, serve, jobs, data):
        module.register(sub)
    return parser


def version() -> str:
    """The installed distribution's version; gptkit.__version__ when run from a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("gptkit")
    except PackageNotFoundError:
        from gptkit import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run `gptkit ARGV...`; return the exit status (2 on a gptkit error, 130 on Ctrl-C)."""
    args = _build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return _with_environment(func, args)
    except GptkitError as exc:
        print(f"gptkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable or unreadable path; a broken pipe (`| head`) is not worth a message
        if isinstance(exc, BrokenPipeError):
            return 1
        print(f"gptkit {args.command}: error: {_os_error(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gptkit {args.command}: interrupted", file=sys.stderr)
        return 130


# The flag (and argparse's name for it) of each subcommand's output; an OSError on a path there names the flag.
_OUTPUTS = {
    "new": ("OUT", "out"),
    "convert": ("DST", "dest"),
    "download": ("--local-dir", "local_dir"),
    "prepare": ("--out", "out"),
    "quickstart": ("--out-dir", "out_dir"),
    "train": ("--out-dir", "out_dir"),
    "finetune": ("--out-dir", "out_dir"),
    "predict": ("--out", "out"),
    "embed": ("--out", "out"),
    "merge-lora": ("OUT", "out"),
    "serve": ("--data-dir", "data_dir"),
    "data": ("--fix", "fix"),
}


def _os_error(exc: OSError, args: argparse.Namespace) -> str:
    """One line for an OSError: the output flag and its path when the failure is there (not the temporary file
    written beside it), else the file and the reason."""
    reason = exc.strerror or str(exc)
    flag, attr = _OUTPUTS.get(args.command, ("", ""))
    dest = getattr(args, attr, None) if attr else None
    if exc.filename is None:
        return f"{reason}" + (f" (writing {flag} {dest})" if dest else "")
    failed = os.path.abspath(os.fsdecode(exc.filename))
    if dest:
        target = os.path.abspath(dest)
        temp_sibling = os.path.dirname(failed) == os.path.dirname(target) and os.path.basename(failed).startswith(
            f".{os.path.basename(target)}."
        )
        inside = os.path.commonpath([failed, target]) in (failed, target)  # the path, a folder above it or below it
        if temp_sibling or inside:
            return f"cannot write {flag} {dest}: {reason}; choose a path you can write to"
    return f"{os.fsdecode(exc.filename)}: {reason}"


def _with_environment(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run `func(args)` with GPTKIT_ONEDNN=0 and GPTKIT_NATIVE=0 honoured (the library reads no switches from the
    environment: the CLI does)."""
    from gptkit.models.kernels import use_native, use_onednn

    with use_onednn(os.environ.get("GPTKIT_ONEDNN") != "0"), use_native(os.environ.get("GPTKIT_NATIVE") != "0"):
        return func(args)


__all__ = ["main"]
