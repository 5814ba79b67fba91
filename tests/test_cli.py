"""The `gptkit generate` command end to end on a tiny checkpoint with the real GPT-2 tokenizer."""

from __future__ import annotations

import importlib.metadata
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from gptkit import GPT, GPTConfig
from gptkit.cli import main as cli
from gptkit.generation.generate import generate
from gptkit.generation.sampling import SamplingParams
from gptkit.text.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny")
    model = GPT(GPTConfig.from_name("gpt2-tiny", initializer_range=0.1))
    model.save_pretrained(path, tokenizer=Tokenizer.from_pretrained("gpt2"))
    return path


def test_live_stream_prints_prompt_and_the_same_text_as_the_api(tiny_dir: Path, capsys) -> None:
    assert cli(["generate", "--model", str(tiny_dir), "--max-new-tokens", "12", "--seed", "3", "Hello there"]) == 0
    printed = capsys.readouterr().out
    model, tok = GPT.from_pretrained(tiny_dir), Tokenizer.from_pretrained(tiny_dir)
    expected = generate(model, "Hello there", SamplingParams(max_new_tokens=12, seed=3), tokenizer=tok)[0]
    assert printed == "Hello there" + expected.text + "\n"


def test_json_lines_for_a_batch_from_a_prompt_file(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("One\nTwo two\n\nThree\\nlines\n")
    args = [
        "generate",
        "--model",
        str(tiny_dir),
        "--prompt-file",
        str(prompts),
        "--json",
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
        "--logprobs",
        "2",
        "--num-return-sequences",
        "2",
        "--seed",
        "1",
    ]
    assert cli(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["prompt"], r["sample"]) for r in rows] == [
        ("One", 0),
        ("One", 1),
        ("Two two", 0),
        ("Two two", 1),
        ("Three\nlines", 0),
        ("Three\nlines", 1),
    ]
    for row in rows:
        assert len(row["token_ids"]) == len(row["logprobs"]) == 5 and row["finish_reason"] == "length"
        assert [alt[0]["token_id"] for alt in row["top_logprobs"]] == row["token_ids"]  # greedy picks the top


def test_stdin_prompt_and_clear_errors(tiny_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("From stdin"))
    assert cli(["generate", "--model", str(tiny_dir), "--max-new-tokens", "3", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("From stdin")
    bare = tmp_path / "bare"
    GPT.from_pretrained(tiny_dir).save_pretrained(bare)
    assert cli(["generate", "--model", str(bare), "x"]) == 2
    assert "has no tokenizer files; name one with --tokenizer" in capsys.readouterr().err
    assert cli(["generate", "--model", str(tiny_dir), "--top-p", "0", "x"]) == 2
    assert "SamplingParams.top_p must be in (0, 1]" in capsys.readouterr().err


def test_tokenize_shows_golden_ids(capsys) -> None:
    assert cli(["tokenize", "--json", "Hello, I'm a language model,"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == [15496, 11, 314, 1101, 257, 3303, 2746, 11]
    assert cli(["tokenize", "--tokenizer", "openai-gpt", "Hello, my dog is cute and"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("7 tokens") and [int(line.split()[0]) for line in lines[1:]] == [
        3570,
        240,
        547,
        2585,
        544,
        4957,
        488,
    ]


@pytest.mark.parametrize(
    ("argv", "stdin", "expected"),
    [
        (["", "--max-new-tokens", "1"], "", "a PROMPT argument is empty"),
        (["--max-new-tokens", "1"], "", "stdin is empty"),
        (["--prompt-file", "-"], "\n\n", "--prompt-file - has no prompts"),
        (["--prompt-file", "/no/such/prompts.txt"], "", "cannot read --prompt-file /no/such/prompts.txt"),
        (["--device", "tpu", "x"], "", "--device tpu: not a device name"),
    ],
)
def test_generate_input_errors_are_one_line(tiny_dir: Path, capsys, monkeypatch, argv, stdin, expected) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert cli(["generate", "--model", str(tiny_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_without_cuda_is_one_line(tiny_dir: Path, capsys) -> None:
    assert cli(["generate", "--model", str(tiny_dir), "--device", "cuda", "x"]) == 2
    assert capsys.readouterr().err.startswith("gptkit generate: error: --device cuda: this torch ")


def test_unwritable_outputs_name_the_destination_not_a_temporary_file(
    tiny_dir: Path, tmp_path: Path, unwritable: Path, capsys
) -> None:
    dest = unwritable
    cases = [
        (["convert", str(tiny_dir), str(dest)], "cannot write DST"),
        (["embed", "--model", str(tiny_dir), "x", "--out", f"{dest}.npy"], "cannot write --out"),
        (["embed", "--model", str(tiny_dir), "--file", str(tmp_path / "none.txt")], "cannot read --file"),
    ]
    for argv, expected in cases:
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.splitlines()) == 1 and ".tmp" not in err, err


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step classification run with a LoRA adapter, and its training file (rows of text and label)."""
    folder = tmp_path_factory.mktemp("lora-run")
    (folder / "train.tsv").write_text("text\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(40)))
    argv = ["finetune", "classify", "--train", str(folder / "train.tsv"), "--init-from", "scratch", "--model"]
    argv += ["gpt2-tiny", "--max-steps", "1", "--max-length", "8", "--lora-r", "2", "--no-progress", "--device", "cpu"]
    assert cli([*argv, "--out-dir", str(folder / "run")]) == 0
    assert cli(["prepare", str(folder / "train.tsv"), "--tokenizer", "char", "--out", str(folder / "prepared")]) == 0
    return folder


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    """A path below a plain file: no one can create it, not even root."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker / "out"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["prepare", "{data}/train.tsv", "--out", "{dest}"], "--out"),
        (["train", "--data", "{data}/prepared", "--block-size", "4", "--out-dir", "{dest}"], "--out-dir"),
        (["predict", "{data}/train.tsv", "--model", "{data}/run", "--out", "{dest}"], "--out"),
        (["merge-lora", "{data}/run", "{dest}"], "OUT"),
        (["new", "gpt2-tiny", "{dest}"], "OUT"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_an_output_that_cannot_be_written_is_named(lora_run: Path, unwritable: Path, capsys, argv, flag) -> None:
    capsys.readouterr()
    assert cli([a.format(data=lora_run, dest=unwritable) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {flag} {unwritable}" in err and len(err.splitlines()) == 1 and ".tmp" not in err, err


def test_config_field_of_the_wrong_type_is_named(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('block_size: "big"\ndata: d\n')
    assert cli(["train", "--config", str(config)]) == 2
    assert f"{config}: block_size must be int, got 'big'" in capsys.readouterr().err
    assert cli(["train", "--data", "d", "--device", "tpu"]) == 2
    assert "--device tpu: not a device name" in capsys.readouterr().err


def test_messages_name_flags_not_python_parameters(tiny_dir: Path, capsys) -> None:
    assert cli(["generate", "--model", str(tiny_dir), "--max-new-tokens", "100000", "x"]) == 2
    err = capsys.readouterr().err
    assert "--truncate" in err and "--max-new-tokens" in err


def test_flags_that_were_silently_accepted_are_errors(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(["train", "--data", "d", "--bias", "maybe"])
    assert exit_.value.code == 2
    assert "argument --bias: expected true or false (also yes/no, 1/0), got 'maybe'" in capsys.readouterr().err
    assert cli(["generate", "--model", str(tiny_dir), "--logprobs", "2", "x"]) == 2
    assert "--logprobs N needs --json" in capsys.readouterr().err
    assert cli(["merge-lora", str(tiny_dir), str(tmp_path / "merged")]) == 2
    assert "has no LoRA adapter to merge" in capsys.readouterr().err and not (tmp_path / "merged").exists()
    config = tmp_path / "c.yaml"
    config.write_text("n_layer: 2\ndata: d\n")
    assert cli(["train", "--config", str(config)]) == 2
    assert "model fields go under model_overrides, e.g. model_overrides: {n_layer: ...}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("preset", "flags", "overrides"),
    [
        ("gpt2-tiny", ["--n-layer", "3", "--n-head", "2"], dict(n_layer=3, n_head=2)),
        ("openai-gpt-tiny", ["--n-positions", "64", "--n-embd", "48"], dict(n_positions=64, n_embd=48)),
    ],
)
def test_new_writes_a_random_model_that_transformers_loads_and_generate_runs(
    tmp_path: Path, capsys, preset: str, flags: list[str], overrides: dict
) -> None:
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "fresh"
    before = torch.random.get_rng_state()
    assert cli(["new", preset, str(out), "--seed", "5", *flags]) == 0
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    model = GPT.from_pretrained(out)
    tokenizer = Tokenizer.from_pretrained(out)
    assert (
        model.config.to_dict()
        == GPTConfig.from_name(
            preset, **overrides, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id
        ).to_dict()
    )
    assert tokenizer.kind == model.config.family  # the preset's own vocabulary
    reference = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(ids).logits - reference(ids).logits).abs().max().item() <= 1e-5
    # The seed decides the weights.
    assert cli(["new", preset, str(tmp_path / "again"), "--seed", "5", *flags]) == 0
    assert cli(["new", preset, str(tmp_path / "other"), "--seed", "6", *flags]) == 0
    weights = {k: GPT.from_pretrained(tmp_path / k).transformer.wte.weight for k in ("again", "other")}
    assert torch.equal(weights["again"], model.transformer.wte.weight)
    assert not torch.equal(weights["other"], model.transformer.wte.weight)
    # `gptkit generate` runs on it, picking transformers' greedy tokens.
    capsys.readouterr()
    argv = ["generate", "--model", str(out), "--temperature", "0", "--max-new-tokens", "6", "--json", "hello world"]
    assert cli(argv) == 0
    row = json.loads(capsys.readouterr().out)
    prompt = torch.tensor([tokenizer.encode("hello world")])
    expected = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
    assert row["token_ids"] == expected[0, prompt.shape[1] :].tolist()


def test_new_refuses_a_used_folder_and_a_vocabulary_too_small(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    assert cli(["new", "gpt2-tiny", str(tiny_dir)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert cli(["new", "gpt2-tiny", str(tmp_path / "small"), "--vocab-size", "100"]) == 2
    assert "the gpt2 tokenizer has 50,257 tokens but vocab_size is 100" in capsys.readouterr().err
    assert not (tmp_path / "small").exists()


def test_version_comes_from_the_package_metadata(capsys, monkeypatch) -> None:
    import gptkit

    with pytest.raises(SystemExit) as exit_:
        cli(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"gptkit {importlib.metadata.version('gptkit')}\n"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)  # a source tree on PYTHONPATH, not installed
    monkeypatch.setattr(gptkit, "__version__", "9.9.9")
    with pytest.raises(SystemExit):
        cli(["--version"])
    assert capsys.readouterr().out == "gptkit 9.9.9\n"


_FILLER = {"a", "an", "the", "of", "per", "to", "in", "on", "for", "and", "or", "is", "by", "with", "default", "none"}


def _help_lines() -> list[tuple[str, str, str]]:
    """(subcommand, flag, help text) of every argument of every subcommand, and each subcommand's own help."""
    import argparse

    from gptkit.cli import _build_parser

    [sub] = [a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help or "" for c in sub._choices_actions}
    lines = [(name, "", helps.get(name, "")) for name in sub.choices]
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                lines.append((name, "/".join(action.option_strings) or action.dest, action.help or ""))
    return lines


def test_every_help_line_says_more_than_the_flag_name() -> None:
    import re

    repeats = []
    for command, flag, text in _help_lines():
        said = re.sub(r"\(default[^()]*(\([^()]*\)[^()]*)*\)|%\(default\)s", " ", text)  # the default, (nested) parens
        own = set(re.findall(r"[a-z0-9]+", f"{command} {flag}".lower())) | _FILLER
        if len([w for w in re.findall(r"[a-z0-9]+", said.lower()) if w not in own]) < 2:
            repeats.append(f"gptkit {command} {flag}: {text!r}")
    assert not repeats, "help that only repeats the flag's name:\n" + "\n".join(repeats)


def test_tokenize_shows_a_token_that_holds_part_of_a_character_as_its_bytes(capsys) -> None:
    import ast

    text = "a😀 閒b"  # GPT-2 splits each of the two characters across byte-level tokens
    assert cli(["tokenize", text]) == 0
    shown = [ast.literal_eval(line.split(maxsplit=1)[1]) for line in capsys.readouterr().out.splitlines()[1:]]
    pieces = [s.encode() if isinstance(s, str) else s for s in shown]
    gpt2 = Tokenizer.from_pretrained("gpt2")
    assert pieces == [gpt2.decode_bytes([i]) for i in gpt2.encode(text)]  # each token's own bytes: none twice
    assert b"".join(pieces) == text.encode() and shown[0] == "a" and isinstance(shown[1], bytes)


@pytest.fixture(scope="module")
def gpt1_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt1")
    GPT(GPTConfig.from_name("openai-gpt-tiny")).save_pretrained(path, tokenizer=Tokenizer.from_pretrained("openai-gpt"))
    return path


@pytest.mark.parametrize(("argv", "stdin"), [(["   "], ""), ([], " \n\t \n")])
def test_a_gpt1_prompt_of_only_whitespace_is_a_one_line_error(gpt1_dir: Path, capsys, monkeypatch, argv, stdin) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert cli(["generate", "--model", str(gpt1_dir), "--max-new-tokens", "2", *argv]) == 2
    err = capsys.readouterr().err
    assert "encodes to no tokens with the openai-gpt tokenizer" in err and len(err.splitlines()) == 1, err
    assert cli(["generate", "--model", str(gpt1_dir), "--max-new-tokens", "2", "--temperature", "0", " hi "]) == 0


def test_chat_answers_each_line_with_the_conversation_so_far(tiny_dir: Path, capsys, monkeypatch) -> None:
    from gptkit.generation.chat import Conversation

    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there\n\n/reset\nHello there\nAnd then?\n/exit\nunread\n"))
    flags = ["--temperature", "0", "--max-new-tokens", "5", "--ignore-eos"]
    assert cli(["chat", "--model", str(tiny_dir), "--system", "Be brief.", *flags]) == 0
    model, tok = GPT.from_pretrained(tiny_dir), Tokenizer.from_pretrained(tiny_dir)
    params = SamplingParams(temperature=0, max_new_tokens=5, ignore_eos=True)
    chat = Conversation(model, tok, system="Be brief.", params=params)
    first = "".join(chat.reply("Hello there"))
    chat.reset()
    answers = ["".join(chat.reply(m)) for m in ("Hello there", "And then?")]
    assert capsys.readouterr().out == "".join(a + "\n" for a in [first, *answers])


def test_generate_no_echo_prints_only_the_new_text(tiny_dir: Path, capsys) -> None:
    model, tok = GPT.from_pretrained(tiny_dir), Tokenizer.from_pretrained(tiny_dir)
    expected = generate(model, ["Hello there", "Bye"], SamplingParams(max_new_tokens=4, seed=3), tokenizer=tok)
    argv = ["generate", "--model", str(tiny_dir), "--max-new-tokens", "4", "--seed", "3", "--no-echo"]
    assert cli([*argv, "Hello there"]) == 0
    assert capsys.readouterr().out == expected[0].text + "\n"
    assert cli([*argv, "Hello there", "Bye"]) == 0
    batch = "".join(f"=== prompt {c.prompt_index} sample 0 ({c.finish_reason}) ===\n{c.text}\n" for c in expected)
    assert capsys.readouterr().out == batch
