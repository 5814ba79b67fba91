"""Subcommands that make, fetch, read or run a model: new, download, convert, info, tokenize, generate, chat."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gptkit.cli.common import (
    DTYPES,
    INFERENCE_DTYPES,
    MODEL_HELP,
    add_dataclass_flags,
    add_device_flags,
    add_model_flags,
    dataclass_values,
    load_for_inference,
    read_input,
)
from gptkit.errors import GptkitError
from gptkit.generation.params import SamplingParams  # plain dataclasses, no torch: safe for `gptkit --help`
from gptkit.models.config import GPTConfig
from gptkit.training.runlog import counted

_SAMPLING_HELP = {
    "max_new_tokens": "most tokens generated after each prompt (fewer when a stop ends the sequence)",
    "temperature": "divide the logits by this before sampling (0 = greedy)",
    "top_k": "keep the k most likely tokens (0 = off)",
    "top_p": "nucleus sampling mass (1 = off)",
    "min_p": "drop tokens below min-p x top probability",
    "repetition_penalty": "transformers' penalty (1 = off)",
    "presence_penalty": "OpenAI's: subtract this from the logit of each token already generated",
    "frequency_penalty": "OpenAI's: subtract this x the number of times a token was generated from its logit",
    "no_repeat_ngram_size": "forbid repeating n-grams (0 = off)",
    "seed": "seed for reproducible sampling",
    "stop": "stop string, not printed",
    "stop_token_ids": "token id that ends a sequence; none given: the model's end-of-text",
    "ignore_eos": "keep going past the end-of-text token",
    "logprobs": "with --json: top-N alternatives per token",
    "num_beams": "beam search width (needs --temperature 0)",
    "length_penalty": "beam score / length**penalty",
    "early_stopping": "beam search: stop once num-beams beams finished",
    "num_return_sequences": "how many sequences to sample for each prompt",
    "truncate": "slide the context window (drop the oldest tokens) when prompt + new tokens exceed it",
}


def _new(args: argparse.Namespace) -> int:
    from gptkit.errors import CheckpointError
    from gptkit.models.hf_names import config_to_hf
    from gptkit.models.loading import new_model
    from gptkit.text.tokenizer import Tokenizer

    config = GPTConfig.from_name(args.preset, **dataclass_values(args, GPTConfig))
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or config.family or "gpt2")
    model = new_model(config, tokenizer, args.out, seed=args.seed)
    try:
        config_to_hf(config)
        note = ""
    except CheckpointError as exc:
        note = f"; {exc}, so only gptkit loads it"
    print(
        f"wrote {args.out}: a randomly initialised {config.name} (seed {args.seed}, "
        f"{model.num_parameters():,} parameters) with the {tokenizer.kind} tokenizer{note}"
    )
    print(f'Try: gptkit generate --model {args.out} --max-new-tokens 20 "Hello"')
    return 0


def _download(args: argparse.Namespace) -> int:
    import shlex

    from gptkit.models.checkpoint import HUB_NAMES, Source, download, load_tokenizer, read_config

    folder = download(args.name, revision=args.revision, cache_dir=args.cache_dir, local_dir=args.local_dir)
    config = read_config(folder)  # one gptkit loads (GPT-2 or GPT-1), or a one-line error naming what it is
    files = sorted(p for p in folder.iterdir() if p.is_file())
    repo = HUB_NAMES.get(args.name, args.name) + (f" at {args.revision}" if args.revision else "")
    size = sum(p.stat().st_size for p in files) / 1e6
    print(f"{repo}: a {config.family} model, {counted(len(files), 'file')} ({size:,.1f} MB) in {folder}")
    print("  " + ", ".join(p.name for p in files))
    no_tokenizer = load_tokenizer(Source(folder, "hf")) is None
    if args.revision is None and args.local_dir is None:  # the name finds this copy again, also offline
        cache = f"HF_HUB_CACHE={shlex.quote(str(args.cache_dir))} " if args.cache_dir else ""
        command = f"HF_HUB_OFFLINE=1 {cache}gptkit generate --model {shlex.quote(args.name)}"
    else:  # a revision or a folder of its own: name the folder
        command = f"gptkit generate --model {shlex.quote(str(folder))}"
    print(f'Works offline now: {command}{" --tokenizer gpt2" if no_tokenizer else ""} "Hello"')
    return 0


def _convert(args: argparse.Namespace) -> int:
    import torch

    from gptkit.models.checkpoint import load_tokenizer, resolve
    from gptkit.models.gpt import load_model, save_model

    source = resolve(args.source)
    model = load_model(source.path, dtype=getattr(torch, args.dtype))
    tokenizer = load_tokenizer(source)
    path = save_model(model, args.dest, tokenizer=tokenizer)
    note = "" if tokenizer is not None else " (no tokenizer files found beside the weights)"
    print(f"wrote {path} from {source.path} [{source.format}], {model.num_parameters():,} parameters{note}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from gptkit.models.loading import describe

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


def _tokenize(args: argparse.Namespace) -> int:
    from gptkit.text.tokenizer import Tokenizer
    from gptkit.text.tokenizer_files import BYTE_LEVEL_KINDS

    tokenizer = Tokenizer.from_pretrained(args.tokenizer)
    text = " ".join(args.text) if args.text else sys.stdin.read()
    encoding = tokenizer.encode_with_offsets(text, allowed_special="all" if args.allow_special else frozenset())
    if args.json:
        print(json.dumps({"ids": encoding.ids, "offsets": encoding.offsets}))
        return 0
    print(f"{counted(len(encoding.ids), 'token')} ({tokenizer.kind}, vocabulary {tokenizer.vocab_size:,})")
    byte_level = tokenizer.kind in BYTE_LEVEL_KINDS
    for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
        print(f"{token_id:>8}  {_token_text(tokenizer, token_id) if byte_level else repr(text[start:end])}")
    return 0


def _token_text(tokenizer: Any, token_id: int) -> str:
    """A byte-level token as text, or as its bytes (b'\\xe6\\x97') where it holds only part of a character."""
    piece = tokenizer.decode_bytes([token_id])
    try:
        return repr(piece.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(piece)


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if any(not p for p in prompts):
        raise GptkitError("a PROMPT argument is empty; give some text, or <|endoftext|> to start from nothing")
    if args.prompt_file:
        text = read_input(args.prompt_file, "--prompt-file")
        prompts += [line.replace("\\n", "\n") for line in text.split("\n") if line.strip()]
        if not prompts:
            raise GptkitError(f"--prompt-file {args.prompt_file} has no prompts (one per line; blank lines skipped)")
    elif not prompts and not sys.stdin.isatty():
        prompts = [sys.stdin.read()]
        if not prompts[0]:
            raise GptkitError("stdin is empty: pipe a prompt in, give PROMPT arguments, or --prompt-file FILE")
    return prompts or ["<|endoftext|>"]


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    given = dataclass_values(args, SamplingParams)
    if not args.json and given.get("logprobs") is not None:
        raise GptkitError("--logprobs N needs --json: the alternatives are printed only in the JSON lines")
    return SamplingParams(**given)


def _chat_prompts(bundle, prompts: list[str]) -> list[str]:
    """Each prompt as a user message, rendered with the model's chat template (or gptkit's default)."""
    from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE, render_chat

    template = bundle.chat_template or DEFAULT_CHAT_TEMPLATE
    return [
        render_chat(
            [{"role": "user", "content": p}], template, add_generation_prompt=True, eos_token=bundle.tokenizer.eos_token
        )
        for p in prompts
    ]


def _generate(args: argparse.Namespace) -> int:
    from gptkit.generation.generate import stream

    params = sampling_params(args)
    prompts = _read_prompts(args)
    bundle = load_for_inference(args)
    model, tokenizer = bundle.model, bundle.tokenizer
    if args.chat:
        prompts = _chat_prompts(bundle, prompts)
    n = params.num_return_sequences
    live = not args.json and len(prompts) * n == 1
    results: dict[int, dict] = {}
    if live and not args.no_echo:
        print(prompts[0], end="", flush=True)
    for event in stream(model, prompts, params, tokenizer=tokenizer, allow_special=True):
        if live:
            print(event.text, end="", flush=True)
            continue
        r = results.setdefault(
            event.index,
            dict(
                prompt=prompts[event.prompt_index],
                prompt_index=event.prompt_index,
                sample=event.sample,
                text="",
                token_ids=[],
                logprobs=[],
            ),
        )
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
                print(r["text"] if args.no_echo else r["prompt"] + r["text"], flush=True)
    if live:
        print()
    return 0


def _chat(args: argparse.Namespace) -> int:
    from gptkit.generation.chat import Conversation

    params = SamplingParams(**dataclass_values(args, SamplingParams))
    bundle = load_for_inference(args)
    conversation = Conversation(
        bundle.model, bundle.tokenizer, template=bundle.chat_template, system=args.system, params=params
    )
    interactive = sys.stdin.isatty()
    if interactive:
        template = "its own chat template" if bundle.chat_template else "gptkit's default chat template"
        print(f"chatting with {args.model} ({template}); /reset starts over, /exit or Ctrl-D ends", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "").strip()
        except EOFError:
            break
        if line == "/exit":
            break
        if line == "/reset":
            conversation.reset()
        elif line:
            _answer(conversation, line)
    if interactive:
        print(file=sys.stderr)
    return 0


def _answer(conversation: Any, message: str) -> None:
    """Stream the answer to one message; Ctrl-C ends the answer (kept as far as it got), not the chat."""
    try:
        for text in conversation.reply(message):
            print(text, end="", flush=True)
    except KeyboardInterrupt:
        print(" [interrupted]", end="")
    except GptkitError as exc:  # this message did not fit, say: the chat goes on
        print(f"gptkit chat: error: {exc}", file=sys.stderr)
    print(flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    """Add new, download, convert, info, tokenize, generate and chat to the `gptkit` subcommands."""
    p = sub.add_parser(
        "new",
        help="write a randomly initialised model of a preset's shape (a model to try offline)",
        description=(
            f"Build PRESET ({', '.join(GPTConfig.presets())}) with the shape flags given, initialise it "
            "randomly from --seed, and write OUT: a directory gptkit and transformers.AutoModelForCausalLM both "
            "load, with the tokenizer's files. Its text is noise until it is trained (`gptkit train "
            "--init-from pretrained --model OUT`)."
        ),
    )
    p.add_argument("preset", metavar="PRESET", help="the GPTConfig preset whose shape the flags below change")
    p.add_argument("out", metavar="OUT", help="directory to write (new or empty)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initial weights (default: 0)")
    p.add_argument(
        "--tokenizer",
        help="gpt2, openai-gpt or a tokenizer folder, saved beside the model (default: the preset's family's)",
    )
    group = p.add_argument_group("shape (GPTConfig fields)")
    skip = {"name", "bos_token_id", "eos_token_id"}  # the end-of-text id is the tokenizer's
    add_dataclass_flags(group, GPTConfig, MODEL_HELP, skip=skip, default_note="default: the preset's")
    p.set_defaults(func=_new)

    p = sub.add_parser(
        "download",
        help="fetch a hub model's files for offline use (config, weights, tokenizer, generation config)",
        description=(
            "Download the files gptkit reads of NAME (a Hugging Face hub repo id such as openai-community/gpt2, "
            "or a preset with hub weights: gpt2, gpt2-medium, ...) into the Hugging Face cache: config.json, "
            "the safetensors weights (PyTorch .bin files where a repo has none), tokenizer files, "
            "generation_config.json and a chat template, nothing else. Afterwards `gptkit generate --model NAME` "
            "works without a network (HF_HUB_OFFLINE=1). Needs huggingface_hub (pip install 'gptkit[hf]')."
        ),
    )
    p.add_argument("name", metavar="NAME", help="hub repo id (owner/name) or a gptkit preset with hub weights")
    p.add_argument("--revision", help="branch, tag or commit to fetch (default: the repo's main branch)")
    p.add_argument("--cache-dir", metavar="DIR", help="Hugging Face cache folder to use (default: HF_HUB_CACHE's)")
    p.add_argument(
        "--local-dir", metavar="DIR", help="put the files in this plain folder instead of the cache (--model DIR)"
    )
    p.set_defaults(func=_download)

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
        "tokenize",
        help="show how a tokenizer splits text (ids and the text of each token)",
        description="Encode TEXT (or stdin) with OpenAI's GPT-2 or GPT-1 tokenizer, or a checkpoint's.",
    )
    p.add_argument("text", nargs="*", help="the text to split into tokens, arguments joined by spaces (default: stdin)")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, openai-gpt, or a checkpoint folder (default: gpt2)")
    p.add_argument("--allow-special", action="store_true", help="encode <|endoftext|> as its special id")
    p.add_argument("--json", action="store_true", help="print ids and character offsets as JSON")
    p.set_defaults(func=_tokenize)

    p = sub.add_parser(
        "generate",
        help="generate text from a model (streams to the terminal)",
        description=(
            "Continue each PROMPT with MODEL. One prompt streams live; several (arguments, --prompt-file, "
            "or lines on stdin) run as one batch. The sampling flags are SamplingParams' fields, named as in "
            "transformers' generate; --temperature 0 is greedy decoding."
        ),
    )
    p.add_argument(
        "prompt",
        nargs="*",
        help="text for the model to continue; several run as a batch (default: stdin, else <|endoftext|>)",
    )
    add_model_flags(p)
    p.add_argument("--prompt-file", metavar="FILE", help="one prompt per line ('-' = stdin; \\n for newlines)")
    add_dataclass_flags(p, SamplingParams, _SAMPLING_HELP, skip={"logit_bias"})
    p.add_argument(
        "--chat",
        action="store_true",
        help="send each prompt as a user message through the model's chat template (the one saved by "
        "`gptkit finetune instruct`, else gptkit's default) and generate the assistant's answer",
    )
    p.add_argument("--no-echo", action="store_true", help="print only the generated text, not the prompt before it")
    p.add_argument("--json", action="store_true", help="print one JSON object per line per sequence")
    add_device_flags(p, INFERENCE_DTYPES)
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "chat",
        help="chat with a model in the terminal (its chat template, the conversation so far, streamed answers)",
        description=(
            "Read a message per line and stream MODEL's answer to it, the whole conversation rendered with the "
            "model's chat template (the one `gptkit finetune instruct` saves, else gptkit's plain-text one). "
            "/reset forgets the conversation, /exit or Ctrl-D ends it; when the context is full the oldest "
            "exchanges are forgotten. Piped input is read the same way, one message per line."
        ),
    )
    add_model_flags(p)
    p.add_argument("--system", metavar="TEXT", help="a system message that starts the conversation")
    add_dataclass_flags(p, SamplingParams, _SAMPLING_HELP, skip={"logit_bias", "logprobs", "num_return_sequences"})
    add_device_flags(p, INFERENCE_DTYPES)
    p.set_defaults(func=_chat)
