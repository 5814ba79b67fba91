"""Multiple-choice reading and encoding (gptkit.tasks.choice) on tiny files the tests write.

Oracles: hand-written expectations (contexts, endings, lines) and the GPT-2 tokenizer's encode of the pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptkit.errors import DataError
from gptkit.tasks.choice import ChoiceExample, encode_choice, read_choice
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
