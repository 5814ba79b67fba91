"""Subcommands for task models: finetune, predict, embed (and `gptkit eval --labelled`, in training.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from gptkit.cli.common import (
    add_dataclass_flags,
    add_device_flags,
    add_model_flags,
    load_for_inference,
    read_input,
    resolve_device,
)
from gptkit.cli.training import TRAIN_HELP, add_train_flags, best_note, train_config
from gptkit.errors import GptkitError
from gptkit.tasks.config import TaskConfig  # plain dataclasses, no torch: safe for `gptkit --help`
from gptkit.training.runlog import counted, format_metrics  # no torch either

TASKS = ("classify", "tag", "qa", "choice", "instruct")
_TASK_HELP = {
    "format": "input format (auto: by suffix; .txt files are CoNLL for tag; lines: tag, predict only)",
    "text_column": "classify: column or JSON field of the text",
    "text_pair_column": "classify: column of a second text (pairs: entailment, paraphrase)",
    "label_column": "classify: column or JSON field of the label",
    "problem_type": "classify: single label, multi-label (JSON list or comma-separated), or regression",
    "token_column": "tag: CoNLL column of the word",
    "tag_column": "tag: CoNLL column of the IOB tag (-1 = last)",
    "max_length": "tokens per example; longer ones are cut (QA contexts are windowed); when not given, at most "
    "the model's context",
    "stride": "qa: tokens shared by consecutive windows of a long context",
    "epochs": "passes over the training examples; or give --max-steps instead (the two are exclusive)",
    "aux_lm_weight": "add this weight x language-modelling loss (GPT-1 used 0.5)",
    "pack": "instruct: pack examples into full blocks instead of padding each",
    "group_by_length": "draw batches of similar length from groups of 50 batches (less padding)",
    "chat_template": "instruct: a Jinja chat template (default: gptkit's plain-text one)",
    "on_error": "bad rows: stop (fail) or skip and count them",
}


def _finetune(args: argparse.Namespace) -> int:
    from gptkit.tasks.finetune import finetune
    from gptkit.training.progress import ProgressBar

    task_fields = {f.name for f in dataclasses.fields(TaskConfig)}
    if args.epochs is not None and args.max_steps is not None:
        raise GptkitError(
            f"--epochs {args.epochs} and --max-steps {args.max_steps} both set the run's length; give one of them"
        )
    given = {k: v for k, v in vars(args).items() if k in task_fields and v is not None}
    defaults = {"init_from": "pretrained", "out_dir": f"runs/{args.task}", "sample_tokens": 0}
    train = train_config(args, defaults)
    if train.init_from == "resume":  # the run's task settings, with the files (and length) given
        from gptkit.tasks.finetune import saved_task

        given = {**saved_task(Path(train.out_dir)), **given}
    if "max_length" not in given and train.init_from == "pretrained":
        given["max_length"] = default_max_length(train.model)
    task = TaskConfig(**given)
    if args.max_steps is not None and args.epochs is None:
        task = dataclasses.replace(task, epochs=None)  # --max-steps alone: steps, not epochs
    resolve_device(train.device)  # an unknown or absent device: a one-line error now, not a traceback later
    result = finetune(task, train, on_event=ProgressBar() if train.progress else None)
    if not result.train.is_main:
        return 0
    if result.skipped_rows:
        print(f"skipped {counted(result.skipped_rows, 'bad row')} (see --on-error)")
    shown = format_metrics(result.metrics)
    print(
        f"fine-tuned {args.task} for {counted(result.train.step, 'step')} ({result.train.seconds:.0f} s): {shown}; "
        f"model in {result.run_dir}{best_note(result.train, train.best_metric)}"
    )
    return 0


def default_max_length(model: str) -> int:
    """--max-length when not given: 256 tokens, or the model's context when that is shorter (a model made with
    `gptkit new gpt2-tiny` has 128). A model whose context cannot be read here keeps 256 (loading it says why)."""
    from gptkit.tasks.config import DEFAULT_MAX_LENGTH
    from gptkit.tasks.data_check import model_context

    try:
        return min(DEFAULT_MAX_LENGTH, model_context(model))
    except (GptkitError, OSError, ValueError):
        return DEFAULT_MAX_LENGTH


def _predict(args: argparse.Namespace) -> int:
    from gptkit.tasks.bundle import load
    from gptkit.tasks.predict import predict, write_jsonl

    bundle = load(args.model, device=resolve_device(args.device), merge_lora=False)
    source = args.input if args.input != "-" else "/dev/stdin"
    records = predict(bundle, source, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, fmt=args.format)
    if args.out:
        from gptkit.io import atomic_write_text

        lines = [json.dumps(r, ensure_ascii=False) for r in records]
        atomic_write_text(Path(args.out), "".join(line + "\n" for line in lines))
        print(f"{counted(len(lines), 'prediction')} written to {args.out}", file=sys.stderr)
    else:
        write_jsonl(records, sys.stdout)
    return 0


def _merge_lora(args: argparse.Namespace) -> int:
    from gptkit.models.lora import LoRALinear
    from gptkit.tasks.bundle import load
    from gptkit.tasks.predict import save_merged

    bundle = load(args.run, merge_lora=False)
    if not any(isinstance(m, LoRALinear) for m in bundle.model.modules()):
        raise GptkitError(
            f"{args.run} has no LoRA adapter to merge (no adapter_config.json): it is already a plain model; "
            "adapters come from `gptkit finetune --lora-r N`"
        )
    print(f"merged model written to {save_merged(bundle, args.out)}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from gptkit.generation.embeddings import embed

    texts = list(args.text)
    if args.file:
        texts += [line for line in read_input(args.file, "--file").split("\n") if line.strip()]
    if not texts:
        raise GptkitError("no texts: give TEXT arguments or --file FILE (one text per line, '-' = stdin)")
    bundle = load_for_inference(args)
    vectors = embed(
        bundle.model,
        texts,
        tokenizer=bundle.tokenizer,
        pooling=args.pooling,
        batch_size=args.batch_size,
        normalize=not args.no_normalize,
    )
    if args.out and args.out.endswith(".npy"):
        import numpy as np

        from gptkit.io import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a temporary name
                np.save(fh, vectors.numpy())

        atomic_write(Path(args.out), write)
        print(f"{counted(len(texts), 'vector')} of size {vectors.shape[1]} written to {args.out}", file=sys.stderr)
    else:
        for text, vector in zip(texts, vectors.tolist(), strict=True):
            print(json.dumps({"text": text, "embedding": [round(v, 6) for v in vector]}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add finetune, predict and embed to the `gptkit` subcommands."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model for classification, tagging, QA, multiple choice or instructions",
        description=(
            "Fine-tune --model (a hub name or checkpoint folder; --init-from scratch for a fresh preset) on --train "
            "for TASK: classify (CSV/TSV/JSONL text + label), tag (CoNLL columns, IOB tags), qa (SQuAD v1/v2 JSON "
            "or JSONL), choice (SWAG-style JSON/JSONL) or instruct (JSONL of {prompt, completion} or OpenAI chat "
            "{messages}; loss on the answers only). The run directory gets the model as the matching transformers "
            "class (GPT2ForSequenceClassification, ...), a peft adapter with --lora-r, task.json, metrics.jsonl "
            "and curves.png. Without --eval, a seeded 10% of --train is held out for evaluation."
        ),
    )
    p.add_argument("task", choices=TASKS, help="what to learn")
    p.add_argument("--train", dest="train_file", required=True, metavar="FILE", help="training examples")
    p.add_argument("--eval", dest="eval_file", metavar="FILE", help="evaluation examples (same format)")
    p.add_argument("--config", help="JSON or YAML file of training settings (TrainConfig fields)")
    group = p.add_argument_group("task data")
    add_dataclass_flags(group, TaskConfig, _TASK_HELP, skip={"task", "train_file", "eval_file"})
    group = p.add_argument_group("training (as gptkit train)")
    defaults = {
        "init_from": "pretrained (default here), scratch (a preset) or resume (out-dir)",
        "out_dir": "run directory (default here: runs/TASK)",
        "max_steps": "optimizer steps instead of --epochs (the two are exclusive)",
    }
    add_train_flags(group, {**TRAIN_HELP, **defaults}, skip={"data", "sample_prompt", "eval_batches", "block_size"})
    p.set_defaults(func=_finetune)

    p = sub.add_parser(
        "predict",
        help="run a fine-tuned model on a file and write one JSON object per example",
        description=(
            "Read INPUT in the format MODEL was fine-tuned on (labels, if present, are ignored) and print JSONL "
            "predictions: classify {text, label, scores}, tag {tokens, tags}, qa {id, question, answer}, choice "
            "{label, scores}, instruct {..., completion} (greedy, with the chat template stored with the model)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="input file ('-' = stdin)")
    p.add_argument("--model", required=True, help="a `gptkit finetune` run directory (or its best/)")
    p.add_argument("--out", metavar="FILE", help="write the JSONL here (atomically) instead of stdout")
    p.add_argument("--batch-size", type=int, default=16, help="examples per forward pass")
    p.add_argument("--max-new-tokens", type=int, default=128, help="instruct: tokens generated per prompt")
    p.add_argument(
        "--format",
        choices=("auto", "csv", "tsv", "jsonl", "json", "conll", "lines"),
        help="INPUT's format (default: the run's --format; auto goes by suffix). tag reads conll (a word per "
        'line), lines (a whitespace-split sentence per line) or jsonl ({"tokens": [...]} per line)',
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "merge-lora",
        help="fold a fine-tuning run's LoRA adapter into its weights and write a plain model directory",
        description="Load RUN (a `gptkit finetune --lora-r` directory), merge W + (alpha/r) B A into each adapted "
        "layer, and write OUT: the same transformers class, with no adapter to load.",
    )
    p.add_argument("run", metavar="RUN", help="fine-tuning run directory (or its best/)")
    p.add_argument("out", metavar="OUT", help="directory to write")
    p.set_defaults(func=_merge_lora)

    p = sub.add_parser(
        "embed",
        help="one normalised vector per text (mean or last-token pooling of the final hidden states)",
        description="Embed TEXT arguments and/or lines of --file with MODEL; print JSONL or write a .npy array.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("text", nargs="*", help="texts to embed, one vector each")
    add_model_flags(p)
    p.add_argument("--file", metavar="FILE", help="one text per line ('-' = stdin)")
    p.add_argument("--pooling", choices=("mean", "last"), default="mean", help="mean over real tokens, or last")
    p.add_argument("--no-normalize", action="store_true", help="keep raw vectors (default: unit L2 norm)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--out", metavar="FILE.npy", help="write an (N, C) float32 .npy array instead of JSONL")
    add_device_flags(p)
    p.set_defaults(func=_embed)
