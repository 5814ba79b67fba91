"""`gptkit data check`: what is wrong with fine-tuning data, and the data with the suggested fixes (--fix OUT)."""

from __future__ import annotations

import argparse


def _check(args: argparse.Namespace) -> int:
    from gptkit.tasks.data_check import check_instruct_data, model_limits, write_jsonl

    tokenizer, context, template = model_limits(args.model)
    report = check_instruct_data(args.file, tokenizer, context=context, template=template)
    for line in report.summary():
        print(line)
    for finding in report.findings:
        print(f"- {finding}")
    if not report.findings:
        print("no problems found")
        return 0
    if args.fix is None:
        print("write the data with these fixes applied with --fix OUT")
        return 1
    write_jsonl(args.fix, report.fixed)
    print(f"wrote {len(report.fixed)} examples with the fixes applied to {args.fix}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add data to the `gptkit` subcommands."""
    p = sub.add_parser("data", help="check fine-tuning data before training on it")
    actions = p.add_subparsers(
        dest="data_command", metavar="ACTION", required=True, help="what to do with the data file (see below)"
    )
    c = actions.add_parser(
        "check",
        help="count and measure fine-tuning data, find what would hurt training, and optionally fix it",
        description='Check JSONL fine-tuning data ({"prompt", "completion"} or {"messages": [...]}) as '
        "OpenAI's prepare_data did: examples and their tokens against the model's context, lines that cannot be "
        "used, empty fields, duplicates, examples too long, prompts without a common separator at their end, "
        "completions without a leading space or a common ending. Exits 1 when it finds problems and --fix is not "
        "given.",
    )
    c.add_argument("file", metavar="FILE", help="the JSONL file to check")
    c.add_argument(
        "--model",
        default="gpt2",
        help="whose tokenizer, context and chat template to measure with: a checkpoint folder, or gpt2, "
        "gpt2-medium, ..., openai-gpt (default: gpt2)",
    )
    c.add_argument(
        "--fix",
        metavar="OUT",
        help="write the data with every suggested fix applied to OUT (JSONL, written atomically)",
    )
    c.set_defaults(func=_check)
