"""Multiple-choice reading and encoding (gptkit.tasks.choice) on tiny files the tests write.

Oracles: hand-written expectations (contexts, endings, lines) and the GPT-2 tokenizer's encode of the pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptkit.errors import ConfigError, DataError
from gptkit.tasks.choice import CHOICE_TOKENS, ChoiceExample, encode_choice, read_choice, with_choice_tokens
from gptkit.text.tokenizer import Tokenizer

from conftest import EOS, jsonl, write

SWAG = [
    {"ending0": "walks.", "ending1": "runs.", "label": 1, "sent1": "A man stands.", "sent2": "He"},
    {"ending0": "sings.", "ending1": "dances.", "ending2": "sleeps.", "label": 0, "sent1": "A girl.", "sent2": "She"},
]


def test_read_swag_concatenated_json_with_lines(tmp_path: Path) -> None:
    # pretty-printed objects, "} {" between them, as ../shared/data/swag_sample.json
    text = " ".join(json.dumps(o, indent=2) for o in SWAG) + "\n"
    assert text.splitlines()[6] == "} {"  # lines 1-7 hold the first object, the second starts on line 7
    data = read_choice(write(tmp_path / "swag.json", text))
    assert [(e.context, e.endings, e.label, e.line) for e in data.examples] == [
        ("A man stands. He", ["walks.", "runs."], 1, 1),
        ("A girl. She", ["sings.", "dances.", "sleeps."], 0, 7),
    ]
    array = read_choice(write(tmp_path / "a.json", "[\n" + ",\n".join(json.dumps(o) for o in SWAG) + "\n]"))
    assert [e.line for e in array.examples] == [2, 3] and array.examples[1].endings[2] == "sleeps."
    lines = read_choice(jsonl(tmp_path / "s.jsonl", SWAG))
    assert [e.line for e in lines.examples] == [1, 2]


def test_read_choice_generic_form_and_bad_rows(tmp_path: Path) -> None:
    rows = [
        {"question": "2+2?", "choices": ["4", "5"], "label": 0},
        {"context": "c", "choices": ["x"], "label": 0},
        {"question": "q", "choices": ["a", "b"], "label": 2},
        {"prompt": "p"},
    ]
    path = jsonl(tmp_path / "g.jsonl", rows)
    with pytest.raises(DataError, match=rf"{path}:2: expected at least 2"):
        read_choice(path)
    data = read_choice(path, on_error="skip")
    assert [(e.context, e.endings, e.label) for e in data.examples] == [("2+2?", ["4", "5"], 0)]
    assert [b.line for b in data.skipped] == [2, 3, 4] and "index of one of the 2" in data.skipped[1].reason
    broken = write(tmp_path / "broken.json", json.dumps(SWAG[0], indent=2) + '\n{\n  "sent1": oops\n}')
    with pytest.raises(DataError, match=rf"{broken}:9:12: not valid JSON"):  # 7 lines, "{", then the error
        read_choice(broken)
    unlabelled = jsonl(tmp_path / "u.jsonl", [{"question": "q", "choices": ["a", "b"]}])
    assert read_choice(unlabelled, require_label=False).examples[0].label is None


def test_encode_choice_appends_eos_and_cuts_context_from_the_left(tok: Tokenizer) -> None:
    eos = tok.eos_token_id
    example = ChoiceExample("A man stands. He", ["walks.", "runs away."], 1, 1)
    features = encode_choice(tok, [example], max_length=64)
    context = tok.encode("A man stands. He")
    walks, runs = tok.encode(" walks.") + [eos], tok.encode(" runs away.") + [eos]
    assert features.input_ids == [[context + walks, context + runs]]
    assert features.input_ids[0][0] == tok.encode("A man stands. He walks." + EOS, allowed_special="all")
    assert features.labels == [1] and features.truncated == 0
    cut = encode_choice(tok, [example], max_length=5)
    assert cut.truncated == 1
    assert len(walks) == 3 and len(runs) == 4 and len(context) > 2
    assert cut.input_ids[0] == [context[-2:] + walks, context[-1:] + runs]
    assert all(len(row) <= 5 for row in cut.input_ids[0])


def test_gpt1_choices_take_its_papers_start_delimiter_and_extract_tokens(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    gpt1 = Tokenizer.from_pretrained("openai-gpt")
    with pytest.raises(ConfigError, match="with_choice_tokens"):  # no eos to end a choice with
        encode_choice(gpt1, [ChoiceExample("c", ["a", "b"], 0, 1)], max_length=16)
    ours = with_choice_tokens(gpt1)
    # The oracle: transformers' GPT-1 tokenizer given the same tokens numbers them the same, and loads ours.
    theirs = transformers.AutoTokenizer.from_pretrained(gpt1.save_pretrained(tmp_path / "gpt1"))
    theirs.add_special_tokens({"additional_special_tokens": list(CHOICE_TOKENS)})
    ids = [theirs.convert_tokens_to_ids(t) for t in CHOICE_TOKENS]
    assert ids == [ours.token_to_id(t) for t in CHOICE_TOKENS] == [gpt1.vocab_size + k for k in range(3)]
    reloaded = transformers.AutoTokenizer.from_pretrained(ours.save_pretrained(tmp_path / "choice"))
    assert [reloaded.convert_tokens_to_ids(t) for t in CHOICE_TOKENS] == ids and len(reloaded) == ours.vocab_size
    assert Tokenizer.from_pretrained(tmp_path / "choice").special_tokens == ours.special_tokens
    start, delimiter, extract = ids
    example = ChoiceExample("A man stands. He", ["walks.", "runs away."], 1, 1)
    context = gpt1.encode(example.context)
    rows = encode_choice(ours, [example], max_length=64).input_ids[0]
    assert rows == [[start, *context, delimiter, *gpt1.encode(e), extract] for e in example.endings]
    cut = encode_choice(ours, [example], max_length=6)
    assert all(len(r) == 6 and r[:1] == [start] and r[-1] == extract for r in cut.input_ids[0]) and cut.truncated
    tok = Tokenizer.from_pretrained("gpt2")
    assert with_choice_tokens(tok) is tok  # GPT-2 ends a choice with its eos
