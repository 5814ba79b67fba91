"""Subcommands that build data or train and score models: quickstart, prepare, train, eval."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

from gptkit.cli.common import (
    MODEL_HELP,
    add_dataclass_flags,
    add_device_flags,
    add_model_flags,
    load_for_inference,
    resolve_device,
)
from gptkit.errors import GptkitError
from gptkit.training.config import (  # no torch: fast `gptkit --help`
    FLAT_LORA_KEYS,
    QUICKSTART_DIR,
    TrainConfig,
    fold_lora_keys,
    read_config_file,
)
from gptkit.training.events import TrainResult
from gptkit.training.runlog import format_metrics

TRAIN_HELP = {
    "data": "data directory written by `gptkit prepare`",
    "out_dir": "run directory: checkpoints, metrics.jsonl, curves.png, the final model",
    "overwrite": "out-dir holds an earlier run: remove its files and start afresh (without it: refused)",
    "init_from": "scratch (a preset), pretrained (fine-tune a checkpoint/hub model), or resume (out-dir)",
    "model": "scratch: GPTConfig preset (gpt2-tiny, gpt2, ...); pretrained: hub name or folder",
    "block_size": "tokens per training sequence",
    "batch_size": "sequences per micro-batch per process",
    "grad_accum": "micro-batches per optimizer step",
    "max_steps": "how many optimizer steps the run takes",
    "warmup_steps": "optimizer steps of linear learning-rate warmup from 0 to --lr",
    "weight_decay": "AdamW's decoupled weight decay on matrices and embeddings (never biases or LayerNorms)",
    "beta1": "AdamW's decay rate of the running mean of gradients",
    "beta2": "AdamW's decay rate of the running mean of squared gradients",
    "eps": "AdamW's term added to the denominator for numerical stability",
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
    "log_interval": "write loss, learning rate and throughput to metrics.jsonl every N steps",
    "sample_prompt": "text the samples generated at each evaluation start from",
    "seed": "seed of the initial weights, the data order and dropout (a resumed run continues its own)",
    "sample_tokens": "tokens generated at each evaluation (0 = none)",
    "save_interval": "checkpoint every N steps (default: at each evaluation)",
    "keep_last": "checkpoints kept besides best/",
    "best_metric": "evaluation metric whose best checkpoint becomes best/: val_loss (lower is better) or one the "
    "run reports, e.g. accuracy, f1, exact_match (higher is better)",
    "early_stopping_patience": "stop when this many evaluations in a row did not improve --best-metric (0 = never)",
    "report_to": "also send metrics.jsonl's records to tensorboard (RUN/tensorboard), wandb, both "
    "(tensorboard,wandb) or none",
    "progress": "show a progress bar and a line per evaluation",
    "onednn": "CPU: fp32 Linear layers through oneDNN instead of MKL on CPUs with AVX-512, where it is faster "
    "(environment default: GPTKIT_ONEDNN=0 = off)",
    "keep_freed_memory": "CPU: glibc keeps freed large blocks for the next step (environment default: "
    "GPTKIT_MALLOPT=0 = off)",
    "trainable": "which parameters train: all, lora, head, last:N (blocks + head); auto = lora if --lora-r else all",
}
LORA_HELP = {
    "lora_r": "rank of LoRA adapters (0 = no LoRA); saved in peft's format beside the model",
    "lora_alpha": "LoRA scale numerator (scale = alpha / r) (default: 16.0)",
    "lora_dropout": "dropout probability on each LoRA adapter's input while training (default: 0.0)",
    "lora_targets": "comma-separated module names for adapters, e.g. c_attn,c_proj,c_fc (default: c_attn)",
}
MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "n_inner", "activation", "bias")
ENV_DEFAULTS = {"onednn": "GPTKIT_ONEDNN", "keep_freed_memory": "GPTKIT_MALLOPT"}  # "0" turns the setting off


def parse_bool(value: str) -> bool:
    """A flag's yes/no value: 1, true or yes (any case) is True; 0, false or no is False; anything else an error."""
    word = value.lower()
    if word not in ("1", "true", "yes", "0", "false", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false (also yes/no, 1/0), got {value!r}")
    return word in ("1", "true", "yes")


def add_train_flags(parser: argparse.ArgumentParser | Any, helps: dict[str, str], skip: set[str]) -> None:
    """TrainConfig's flags (LoRA as --lora-r/--lora-alpha/--lora-dropout/--lora-targets) and the model-shape ones."""
    add_dataclass_flags(parser, TrainConfig, helps, skip={"model_overrides", "lora", *skip})
    kinds = {"lora_r": int, "lora_alpha": float, "lora_dropout": float, "lora_targets": str}
    for name in FLAT_LORA_KEYS:
        parser.add_argument("--" + name.replace("_", "-"), type=kinds[name], default=None, help=LORA_HELP[name])
    for name in MODEL_FLAGS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            type={"activation": str, "bias": parse_bool}.get(name, int),
            help=f"--init-from scratch: {MODEL_HELP[name]} (default: the preset's)",
        )


def train_config(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig of `gptkit train`/`finetune`: `defaults` < --config file < environment < flags.

    With --init-from resume it is the run's recorded TrainConfig, and the file and flags given may change only
    what a resume may (TrainConfig.from_run); `defaults` give nothing but the run directory.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | set(FLAT_LORA_KEYS)
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    shape = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k, None) is not None}
    if shape:
        given["model_overrides"] = shape
    for name, variable in ENV_DEFAULTS.items():
        if name not in given and os.environ.get(variable) == "0":
            given[name] = False
    given = fold_lora_keys(given)
    if args.config:
        given = {**read_config_file(args.config), **given}
    merged = {**(defaults or {}), **given}
    if merged.get("init_from") == "resume":
        return TrainConfig.from_run(merged.get("out_dir", TrainConfig.out_dir), **given)
    return TrainConfig(**merged)


def _quickstart(args: argparse.Namespace) -> int:
    from gptkit.training.quickstart import quickstart

    result = quickstart(args.out_dir, max_steps=args.max_steps, overwrite=args.overwrite, report_to=args.report_to)
    for i, sample in enumerate(result.samples):
        print(f"--- sample {i + 1} ---{sample}")
    print(
        f"\nvalidation loss {result.train.val_loss:.4f} after {result.train.step} steps "
        f"({result.train.seconds:.0f} s). Model, metrics.jsonl and curves.png are in {result.run_dir}."
    )
    print(f'Try: gptkit generate --model {result.run_dir} --truncate --temperature 0.8 --max-new-tokens 300 "ROMEO:"')
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from gptkit.training.data import PrepareConfig, prepare

    config = PrepareConfig(
        inputs=args.inputs,
        out_dir=args.out,
        tokenizer=args.tokenizer,
        format=args.format,
        jsonl_field=args.field,
        csv_template=args.template,
        text_mode=args.text_mode,
        val_fraction=args.val_fraction,
        on_error=args.on_error,
        append_eos=not args.no_eos,
    )
    print(prepare(config, progress=True).summary())
    return 0


def _train(args: argparse.Namespace) -> int:
    from gptkit.training.progress import ProgressBar
    from gptkit.training.train import train

    config = train_config(args)
    if config.data is None:
        raise GptkitError("--data is required (or a --config file that names it)")
    resolve_device(config.device)  # an unknown or absent device is a one-line error here, not a traceback later
    result = train(config, on_event=ProgressBar() if config.progress else None)
    if not result.is_main:
        return 0
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    print(
        f"trained to step {result.step}: train loss {result.train_loss:.4f}{val}, "
        f"{result.tokens_per_second:,.0f} tokens/s; model in {result.run_dir}{best_note(result, config.best_metric)}"
    )
    return 0


def best_note(result: TrainResult, metric: str) -> str:
    """`; best/ is step 40 (f1 0.8125), stopped early`: the checkpoint --best-metric chose, and an early stop."""
    if result.best is None:
        return ""
    early = ", stopped early" if result.early_stopped else ""
    return f"; best/ is step {result.best_step} ({metric} {result.best:.4f}){early}"


def _eval(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from gptkit.training.evaluate import lambada_accuracy, perplexity, read_lambada

    if args.labelled:
        from gptkit.tasks.bundle import load
        from gptkit.tasks.predict import evaluate_file

        scores = evaluate_file(
            load(args.model, device=resolve_device(args.device), merge_lora=False),
            args.labelled,
            batch_size=args.batch_size,
        )
        if args.json:
            print(json.dumps({"task": "labelled", "model": args.model, "file": args.labelled, **scores}))
        else:
            print(f"{args.model} on {args.labelled}: {format_metrics(scores)}")
        return 0
    bundle = load_for_inference(args)
    model, tokenizer = bundle.model, bundle.tokenizer
    if args.lambada:
        task = "lambada"
        result = lambada_accuracy(
            model, tokenizer, read_lambada(args.lambada), batch_size=args.batch_size, progress=True
        )
        summary = (
            f"accuracy {result.accuracy:.4f} ({result.correct}/{result.total}), word perplexity {result.perplexity:.3f}"
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
        result = perplexity(model, ids, max_length=max_length, stride=stride, batch_size=args.batch_size, progress=True)
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add quickstart, prepare, train and eval to the `gptkit` subcommands."""
    p = sub.add_parser(
        "quickstart",
        help="train a small character-level GPT on Shakespeare (the built-in default, a few minutes on CPU)",
        description=(
            "Prepare the tiny Shakespeare corpus shipped with gptkit (character-level, 90/10 split), train "
            "nanoGPT's CPU recipe (4 layers, 128 wide, context 64, 2000 steps), save the run and print samples."
        ),
    )
    p.add_argument("--out-dir", default=QUICKSTART_DIR, help="run directory (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=None, help="shorter run for a quick look (default: 2000)")
    p.add_argument("--overwrite", action="store_true", help="out-dir holds an earlier run: remove it, start afresh")
    p.add_argument("--report-to", default="none", help=TRAIN_HELP["report_to"] + " (default: %(default)s)")
    p.set_defaults(func=_quickstart)

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
    p.add_argument(
        "--tokenizer",
        default="gpt2",
        help="gpt2, openai-gpt, a tokenizer folder, char (the inputs' characters), or bpe:N "
        "(train a byte-level BPE with vocabulary N on the inputs)",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", "text", "jsonl", "csv", "tsv"),
        help="input format; auto goes by suffix (.txt .jsonl .csv .tsv)",
    )
    p.add_argument("--field", default="text", help="JSONL: the field holding each document's text")
    p.add_argument(
        "--template",
        metavar="TEMPLATE",
        help='CSV/TSV: document text from columns, e.g. "JOKE: {Question} {Answer}" (default: the text column)',
    )
    p.add_argument(
        "--text-mode",
        default="file",
        choices=("file", "lines", "blank-lines"),
        help="text: a document is the whole file, each non-blank line, or each paragraph",
    )
    p.add_argument("--val-fraction", type=float, default=0.1, help="tail of each input's tokens for validation")
    p.add_argument(
        "--on-error",
        default="skip",
        choices=("skip", "fail"),
        help="bad rows (broken JSON, missing field or column, empty text): skip and count, or stop",
    )
    p.add_argument("--no-eos", action="store_true", help="do not end documents with the end-of-text token")
    p.set_defaults(func=_prepare)

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
    add_train_flags(p, TRAIN_HELP, skip=set())
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "eval",
        help="perplexity of a text file, LAMBADA last-word accuracy, or a fine-tuned model's task metrics",
        description=(
            "Evaluate MODEL on --text FILE (sliding-window perplexity, computed exactly as the transformers "
            'docs do) or --lambada FILE.jsonl (one {"text": ...} per line; greedy accuracy on the last word).'
        ),
    )
    add_model_flags(p)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--text", metavar="FILE", help="UTF-8 text file; encoded whole")
    data.add_argument("--lambada", metavar="FILE", help="LAMBADA-style JSONL file")
    data.add_argument(
        "--labelled",
        metavar="FILE",
        help="a labelled file in a `gptkit finetune` run's format: the task's metrics (accuracy, F1, "
        "entity F1, SQuAD EM/F1)",
    )
    p.add_argument("--max-length", type=int, help="window length in tokens (default: the model's context)")
    p.add_argument("--stride", type=int, help="tokens each window moves (default: 512, or the window if shorter)")
    p.add_argument("--batch-size", type=int, default=1, help="windows or examples per forward pass (default: 1)")
    add_device_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_eval)
