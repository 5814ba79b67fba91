"""`check_instruct_data` and `gptkit data check`: counts and token lengths as training encodes them, each kind of
problem found naming its lines, the fixes applied to --fix OUT (atomically), and a clean file passing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptkit.cli import main
from gptkit.models.config import GPTConfig
from gptkit.models.gpt import GPT
from gptkit.tasks.data_check import check_instruct_data, model_limits
from gptkit.tasks.instruct import encode_instruct, read_instruct
from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE
from gptkit.text.tokenizer import Tokenizer

GOOD = [{"prompt": f"Q: {a}+{b}=", "completion": f" {a + b}\n"} for a, b in ((1, 2), (3, 4), (5, 1))]


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_pretrained("gpt2")


def test_a_good_file_is_counted_as_training_encodes_it(tmp_path, gpt2) -> None:
    path = write(tmp_path / "good.jsonl", GOOD)
    report = check_instruct_data(path, gpt2, context=1024)
    want = encode_instruct(gpt2, read_instruct(path), max_length=1024)
    assert (report.format, report.lines, report.examples, report.findings) == ("prompt/completion", 3, 3, [])
    assert report.lengths == [len(ids) for ids in want.input_ids]
    assert report.fixed == GOOD
    assert report.summary()[1].startswith(f"tokens per example: min {min(report.lengths)}")


def test_every_kind_of_problem_is_found_and_fixed(tmp_path, gpt2) -> None:
    rows = [
        {"prompt": "Q: 1+2", "completion": "3"},  # 1: no leading space
        {"prompt": "Q: 3+4=", "completion": " 7"},
        {"prompt": "Q: 3+4=", "completion": " 7"},  # 3: a duplicate
        "not json",  # 4
        {"prompt": "", "completion": " 9"},  # 5: an empty prompt
        {"question": "x"},  # 6: wrong keys
        {"prompt": "word " * 40, "completion": " long"},  # 7: longer than the context
        {"prompt": "a <|endoftext|> b", "completion": " c"},  # 8: a special token in the text
        {"prompt": "Q: 5+5?", "completion": " 10"},
    ]
    report = check_instruct_data(write(tmp_path / "bad.jsonl", rows), gpt2, context=32)
    found = {f.kind: f.lines for f in report.findings}
    assert found == {
        "unreadable": (4, 6, 8),
        "empty": (5,),
        "duplicate": (3,),
        "too_long": (7,),
        "no_separator": (1, 2, 9),
        "no_leading_space": (1,),
        "no_stop": (1, 2, 9),
    }
    messages = {f.kind: str(f) for f in report.findings}
    assert messages["unreadable"].startswith("3 lines cannot be used (line 4: not valid JSON")
    assert "line 8: the text contains the special token '<|endoftext|>'" in messages["unreadable"]
    assert messages["too_long"].startswith("1 example (line 7) longer than the model's context of 32 tokens")
    assert report.examples == 3 and report.lines == 9
    assert report.fixed == [
        {"prompt": "Q: 1+2\n\n###\n\n", "completion": " 3\n"},
        {"prompt": "Q: 3+4=\n\n###\n\n", "completion": " 7\n"},
        {"prompt": "Q: 5+5?\n\n###\n\n", "completion": " 10\n"},
    ]


def test_chats_are_checked_with_their_template(tmp_path, gpt2) -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    empty = {"messages": [{"role": "system", "content": " "}, {"role": "assistant", "content": "Hello"}]}
    path = write(tmp_path / "chat.jsonl", [chat, chat, empty])
    report = check_instruct_data(path, gpt2, context=1024)
    assert report.format == "chat"
    assert {f.kind: f.lines for f in report.findings} == {"empty": (3,), "duplicate": (2,)}
    want = encode_instruct(gpt2, read_instruct(path).examples[:1], max_length=1024, template=DEFAULT_CHAT_TEMPLATE)
    assert report.lengths == [len(want.input_ids[0])] and report.fixed == [chat]


def test_model_limits_of_names_and_folders(tmp_path) -> None:
    tokenizer, context, template = model_limits("gpt2")
    assert (tokenizer.eos_token, context, template) == ("<|endoftext|>", 1024, DEFAULT_CHAT_TEMPLATE)
    GPT(GPTConfig.from_name("gpt2-tiny")).save_pretrained(tmp_path / "m", tokenizer=Tokenizer.from_pretrained("gpt2"))
    assert model_limits(tmp_path / "m")[1] == 128


def test_the_command_reports_exits_1_and_fixes_on_request(tmp_path, capsys) -> None:
    good = write(tmp_path / "good.jsonl", GOOD)
    assert main(["data", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: 3 prompt/completion examples in 3 lines\n") and "no problems found" in out

    bad = write(tmp_path / "bad.jsonl", [*GOOD, GOOD[0], {"prompt": "Q: 9+9=", "completion": "18\n"}])
    assert main(["data", "check", str(bad), "--model", "gpt2"]) == 1
    out = capsys.readouterr().out
    assert "- 1 example (line 4) repeating an earlier one; fix: keep the first" in out
    assert out.rstrip().endswith("write the data with these fixes applied with --fix OUT")

    fixed = tmp_path / "fixed.jsonl"
    assert main(["data", "check", str(bad), "--fix", str(fixed)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"wrote 4 examples with the fixes applied to {fixed}")
    rows = [json.loads(line) for line in fixed.read_text(encoding="utf-8").splitlines()]
    assert rows == [*GOOD, {"prompt": "Q: 9+9=", "completion": " 18\n"}]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert main(["data", "check", str(fixed)]) == 0


@pytest.mark.parametrize(
    "args, says",
    [
        (["missing.jsonl"], "missing.jsonl"),
        (["empty.jsonl"], "empty.jsonl"),
        (["good.jsonl", "--model", "gpt5"], "no tokenizer named 'gpt5'"),
        (["good.jsonl", "--fix", "good.jsonl/out.jsonl"], "cannot write --fix good.jsonl/out.jsonl"),
    ],
)
def test_errors_are_one_line(tmp_path, monkeypatch, capsys, args, says) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "good.jsonl", [GOOD[0], {"prompt": "x", "completion": "y"}])
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["data", "check", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gptkit data: error: ") and says in err and err.count("\n") == 0, err


def test_every_data_check_flag_has_a_help_line() -> None:
    from gptkit.cli import _build_parser

    data = next(a for a in _build_parser()._actions if a.dest == "command").choices["data"]
    check = next(a for a in data._actions if a.dest == "data_command").choices["check"]
    flags = [a for a in check._actions if a.dest != "help"]
    assert {a.dest for a in flags} == {"file", "model", "fix"} and all(len(a.help) > 20 for a in flags)
