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


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        handle = sys.stdin if args.prompt_file == "-" else open(args.prompt_file, encoding="utf-8")
        with handle:
            prompts += [line.rstrip("\n").replace("\\n", "\n") for line in handle if line.strip()]
    elif not prompts and not sys.stdin.isatty():
        prompts = [sys.stdin.read()]
    return prompts or ["<|endoftext|>"]


def _sampling_params(args: argparse.Namespace):
    from gptkit.sampling import SamplingParams

    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        num_return_sequences=args.num_return_sequences,
        stop=tuple(args.stop),
        seed=args.seed,
        logprobs=args.logprobs if args.json else None,
        ignore_eos=args.ignore_eos,
        truncate=args.truncate,
    )


def _generate(args: argparse.Namespace) -> int:
    import torch

    from gptkit.checkpoint import load_pretrained
    from gptkit.generate import stream

    params = _sampling_params(args)
    prompts = _read_prompts(args)
    model, tokenizer = load_pretrained(
        args.model, device=_device(args.device), dtype=getattr(torch, args.dtype), tokenizer=args.tokenizer
    )
    if tokenizer is None:
        raise GptkitError(f"{args.model} has no tokenizer files; name one with --tokenizer (e.g. gpt2)")
    n = params.num_return_sequences
    live = not args.json and len(prompts) * n == 1
    results: dict[int, dict] = {}
    if live:
        print(prompts[0], end="", flush=True)
    for event in stream(model, prompts, params, tokenizer=tokenizer, allow_special=True):
        if live:
            print(event.text, end="", flush=True)
            continue
        r = results.setdefault(event.index, dict(prompt=prompts[event.prompt_index], prompt_index=event.prompt_index,
                                                 sample=event.sample, text="", token_ids=[], logprobs=[]))
        r["text"] += event.text
        r["token_ids"].append(event.token_id)
        r["logprobs"].append(event.logprob)
        if event.top_logprobs is not None:
            r.setdefault("top_logprobs", []).append(
                [{"token_id": k, "token": tokenizer.decode([k]), "logprob": v} for k, v in event.top_logprobs.items()]
            )
        if event.finish_reason is not None:
            r["finish_reason"] = event.finish_reason
            if args.json:
                print(json.dumps(r, ensure_ascii=False), flush=True)
            else:
                print(f"=== prompt {r['prompt_index']} sample {r['sample']} ({event.finish_reason}) ===")
                print(r["prompt"] + r["text"], flush=True)
    if live:
        print()
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from gptkit.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(args.tokenizer)
    text = " ".join(args.text) if args.text else sys.stdin.read()
    encoding = tokenizer.encode_with_offsets(text, allowed_special="all" if args.allow_special else frozenset())
    if args.json:
        print(json.dumps({"ids": encoding.ids, "offsets": encoding.offsets}))
        return 0
    print(f"{len(encoding.ids)} tokens ({tokenizer.kind}, vocabulary {tokenizer.vocab_size:,})")
    for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
        print(f"{token_id:>8}  {text[start:end]!r}")
    return 0


_TRAIN_HELP = {
    "data": "data directory written by `gptkit prepare`",
    "out_dir": "run directory: checkpoints, metrics.jsonl, curves.png, the final model",
    "init_from": "scratch (a preset), pretrained (fine-tune a checkpoint/hub model), or resume (out-dir)",
    "model": "scratch: GPTConfig preset (gpt2-tiny, gpt2, ...); pretrained: hub name or folder",
    "block_size": "tokens per training sequence",
    "batch_size": "sequences per micro-batch per process",
    "grad_accum": "micro-batches per optimizer step",
    "lr": "peak learning rate",
    "min_lr": "final learning rate (default lr/10)",
    "schedule": "decay after warmup: cosine, linear or constant",
    "decay_steps": "step at which the decay reaches min-lr (default max-steps)",
    "grad_clip": "clip the global gradient norm (0 = off)",
    "decay_embeddings": "apply weight decay to the embeddings too",
    "dropout": "override the model's dropout rates",
    "dtype": "autocast dtype (float16 needs a GPU)",
    "compile": "torch.compile the model",
    "fsdp": "shard the model across torchrun processes (FSDP2) instead of replicating it (DDP)",
    "device": "cpu, cuda, or auto",
    "eval_interval": "evaluate (val loss, sample) every N steps (0 = at the end)",
    "eval_batches": "batches per split per evaluation",
    "sample_tokens": "tokens generated at each evaluation (0 = none)",
    "save_interval": "checkpoint every N steps (default: at each evaluation)",
    "keep_last": "checkpoints kept besides best/",
}
_MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "n_inner", "activation", "bias")


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


def _train_config(args: argparse.Namespace):
    import dataclasses

    from gptkit.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    shape = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k, None) is not None}
    if shape:
        given["model_overrides"] = shape
    if args.config:
        return TrainConfig.from_file(args.config, **given)
    if "data" not in given:
        raise GptkitError("--data is required (or a --config file that names it)")
    return TrainConfig(**given)


def _train(args: argparse.Namespace) -> int:
    from gptkit.train import train

    result = train(_train_config(args))
    if not result.is_main:
        return 0
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    print(f"trained to step {result.step}: train loss {result.train_loss:.4f}{val}, "
          f"{result.tokens_per_second:,.0f} tokens/s; model in {result.run_dir}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from gptkit.quickstart import quickstart

    result = quickstart(args.out_dir, max_steps=args.max_steps)
    for i, sample in enumerate(result.samples):
        print(f"--- sample {i + 1} ---{sample}")
    print(f"\nvalidation loss {result.train.val_loss:.4f} after {result.train.step} steps "
          f"({result.train.seconds:.0f} s). Model, metrics.jsonl and curves.png are in {result.run_dir}.")
    print(f"Try: gptkit generate --model {result.run_dir} --truncate --temperature 0.8 --max-new-tokens 300 "
          '"ROMEO:"')
    return 0


def _add_dataclass_flags_lazy(parser: argparse.ArgumentParser) -> None:
    from gptkit.config import TrainConfig

    _add_dataclass_flags(parser, TrainConfig, _TRAIN_HELP, skip={"model_overrides"})


def _eval(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    import torch

    from gptkit.checkpoint import load_pretrained
    from gptkit.evaluate import lambada_accuracy, perplexity, read_lambada

    model, tokenizer = load_pretrained(
        args.model, device=_device(args.device), dtype=getattr(torch, args.dtype), tokenizer=args.tokenizer
    )
    if tokenizer is None:
        raise GptkitError(f"{args.model} has no tokenizer files; name one with --tokenizer (e.g. gpt2)")
    if args.lambada:
        task = "lambada"
        result = lambada_accuracy(
            model, tokenizer, read_lambada(args.lambada), batch_size=args.batch_size, progress=True
        )
        summary = (
            f"accuracy {result.accuracy:.4f} ({result.correct}/{result.total}), "
            f"word perplexity {result.perplexity:.3f}"
        )
        settings = {"file": args.lambada}
    else:
        task = "perplexity"
        try:
            text = Path(args.text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GptkitError(f"cannot read --text {args.text}: {exc}") from exc
        ids = tokenizer.encode(text, disallowed_special=())  # a literal <|endoftext|> is just text here
        max_length = args.max_length if args.max_length is not None else model.config.n_positions
        stride = args.stride if args.stride is not None else min(512, max_length)
        result = perplexity(
            model, ids, max_length=max_length, stride=stride, batch_size=args.batch_size, progress=True
        )
        summary = (
            f"perplexity {result.perplexity:.4f}, nll {result.nll:.4f} "
            f"({result.tokens:,} tokens, {result.windows:,} windows)"
        )
        settings = {"file": args.text, "max_length": max_length, "stride": stride}
    if args.json:
        print(json.dumps({"task": task, "model": args.model, **settings, **dataclasses.asdict(result)}))
    else:
        print(f"{task} of {args.model} on {settings['file']}: {summary}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from gptkit.data import PrepareConfig, prepare

    config = PrepareConfig(
        inputs=args.inputs, out_dir=args.out, tokenizer=args.tokenizer, format=args.format, jsonl_field=args.field,
        csv_template=args.template, text_mode=args.text_mode, val_fraction=args.val_fraction,
        on_error=args.on_error, append_eos=not args.no_eos,
    )
    print(prepare(config, progress=True).summary())
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptkit",
        description=(
            "GPT-1 and GPT-2 in one small toolkit: OpenAI's tokenizers, OpenAI and Hugging Face checkpoints, "
            "generation."
        ),
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

    p = sub.add_parser(
        "quickstart",
        help="train a small character-level GPT on Shakespeare (the built-in default, a few minutes on CPU)",
        description=(
            "Prepare the tiny Shakespeare corpus shipped with gptkit (character-level, 90/10 split), train "
            "nanoGPT's CPU recipe (4 layers, 128 wide, context 64, 2000 steps), save the run and print samples."
        ),
    )
    p.add_argument("--out-dir", default="runs/shakespeare-char", help="run directory (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=None, help="shorter run for a quick look (default: 2000)")
    p.set_defaults(func=_quickstart)

    p = sub.add_parser(
        "train",
        help="pre-train or fine-tune on data prepared with `gptkit prepare`",
        description=(
            "Train a GPT from scratch (--init-from scratch --model PRESET), fine-tune one "
            "(--init-from pretrained --model NAME_OR_DIR) or continue a run (--init-from resume). "
            "Settings come from --config FILE (JSON or YAML) and/or flags; flags win. Works under "
            "`torchrun --nproc_per_node N` (DDP: gloo on CPU, NCCL on GPU)."
        ),
    )
    p.add_argument("--config", help="JSON or YAML file of training settings")
    _add_dataclass_flags_lazy(p)
    for name in _MODEL_FLAGS:
        p.add_argument("--" + name.replace("_", "-"), default=None,
                       type={"activation": str, "bias": lambda v: v.lower() in ("1", "true", "yes")}.get(name, int),
                       help=f"scratch models: GPTConfig.{name}")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "tokenize",
        help="show how a tokenizer splits text (ids and the text of each token)",
        description="Encode TEXT (or stdin) with OpenAI's GPT-2 or GPT-1 tokenizer, or a checkpoint's.",
    )
    p.add_argument("text", nargs="*", help="text to encode (default: stdin)")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, openai-gpt, or a checkpoint folder (default: gpt2)")
    p.add_argument("--allow-special", action="store_true", help="encode <|endoftext|> as its special id")
    p.add_argument("--json", action="store_true", help="print ids and character offsets as JSON")
    p.set_defaults(func=_tokenize)

    p = sub.add_parser(
        "generate",
        help="generate text from a model (streams to the terminal)",
        description=(
            "Continue each PROMPT with MODEL. One prompt streams live; several (arguments, --prompt-file, "
            "or lines on stdin) run as one batch. Sampling flags are named as in transformers' generate; "
            "--temperature 0 is greedy decoding."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("prompt", nargs="*", help="prompt text (default: read stdin, else <|endoftext|>)")
    p.add_argument("--model", required=True, help="hub name or checkpoint folder")
    p.add_argument("--tokenizer", help="tokenizer name or folder, if not the one stored with the model")
    p.add_argument("--prompt-file", metavar="FILE", help="one prompt per line ('-' = stdin; \\n for newlines)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per sequence")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x top probability")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="transformers' penalty (1 = off)")
    p.add_argument("--presence-penalty", type=float, default=0.0, help="OpenAI presence penalty")
    p.add_argument("--frequency-penalty", type=float, default=0.0, help="OpenAI frequency penalty")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="forbid repeating n-grams (0 = off)")
    p.add_argument("--num-beams", type=int, default=1, help="beam search width (needs --temperature 0)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score / length**penalty")
    p.add_argument("--num-return-sequences", type=int, default=1, help="sequences per prompt")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); not printed")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past the end-of-text token")
    p.add_argument("--truncate", action="store_true",
                   help="slide the context window (drop the oldest tokens) when prompt + new tokens exceed it")
    p.add_argument("--json", action="store_true", help="print one JSON object per line per sequence")
    p.add_argument("--logprobs", type=int, default=None, help="with --json: top-N alternatives per token")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps, or auto")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights and compute dtype")
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "eval",
        help="perplexity of a text file, or LAMBADA last-word accuracy",
        description=(
            "Evaluate MODEL on --text FILE (sliding-window perplexity, computed exactly as the transformers "
            "docs do) or --lambada FILE.jsonl (one {\"text\": ...} per line; greedy accuracy on the last word)."
        ),
    )
    p.add_argument("--model", required=True, help="hub name or checkpoint folder")
    p.add_argument("--tokenizer", help="tokenizer name or folder, if not the one stored with the model")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--text", metavar="FILE", help="UTF-8 text file; encoded whole")
    data.add_argument("--lambada", metavar="FILE", help="LAMBADA-style JSONL file")
    p.add_argument("--max-length", type=int, help="window length in tokens (default: the model's context)")
    p.add_argument("--stride", type=int, help="tokens each window moves (default: 512, or the window if shorter)")
    p.add_argument("--batch-size", type=int, default=1, help="windows or examples per forward pass (default: 1)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps, or auto (default: auto)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights and compute dtype (default: float32)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "prepare",
        help="tokenize text/JSONL/CSV/TSV files into a training data directory",
        description=(
            "Tokenize INPUT files into DIR: train.bin and val.bin (uint16, or uint32 for vocabularies over 65,536), "
            "meta.json and the tokenizer. The last --val-fraction of each input's tokens is validation (nanoGPT's "
            "90/10 split). Documents end with <|endoftext|> where the tokenizer has one (gpt2, bpe:N); GPT-1 and "
            "char tokenizers have none, so documents are joined with no separator. A literal <|endoftext|> in "
            "the data is encoded as ordinary text. DIR is replaced atomically."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files")
    p.add_argument("--out", required=True, metavar="DIR", help="data directory to write")
    p.add_argument("--tokenizer", default="gpt2",
                   help="gpt2, openai-gpt, a tokenizer folder, char (the inputs' characters), or bpe:N "
                        "(train a byte-level BPE with vocabulary N on the inputs)")
    p.add_argument("--format", default="auto", choices=("auto", "text", "jsonl", "csv", "tsv"),
                   help="input format; auto goes by suffix (.txt .jsonl .csv .tsv)")
    p.add_argument("--field", default="text", help="JSONL: the field holding each document's text")
    p.add_argument("--template", metavar="TEMPLATE",
                   help='CSV/TSV: document text from columns, e.g. "JOKE: {Question} {Answer}" '
                        "(default: the text column)")
    p.add_argument("--text-mode", default="file", choices=("file", "lines", "blank-lines"),
                   help="text: a document is the whole file, each non-blank line, or each paragraph")
    p.add_argument("--val-fraction", type=float, default=0.1, help="tail of each input's tokens for validation")
    p.add_argument("--on-error", default="skip", choices=("skip", "fail"),
                   help="bad rows (broken JSON, missing field or column, empty text): skip and count, or stop")
    p.add_argument("--no-eos", action="store_true", help="do not end documents with the end-of-text token")
    p.set_defaults(func=_prepare)
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
