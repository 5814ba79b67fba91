"""Classification and instruction data readers and encoders (gptkit.tasks.data, .instruct) on tiny files.

Oracles: hand-written expectations (lines, labels, masks), the GPT-2 tokenizer's own encode of the same
pieces, and transformers' apply_chat_template for the chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptkit.errors import ConfigError, DataError
from gptkit.tasks.choice import encode_choice, read_choice
from gptkit.tasks.data import (
    IGNORE_INDEX,
    LabelledExample,
    LabelledSet,
    LabelMap,
    TokenFeatures,
    encode_labelled,
    read_labelled,
)
from gptkit.tasks.instruct import (
    ChatExample,
    PromptCompletion,
    encode_instruct,
    pack,
    read_chat,
    read_prompt_completion,
)
from gptkit.tasks.tagging import Sentence, TaggedSet, read_conll
from gptkit.text.chat_template import (
    DEFAULT_CHAT_TEMPLATE,
    chat_segments,
    load_chat_template,
    render_chat,
    save_chat_template,
)
from gptkit.text.tokenizer import Tokenizer

from conftest import EOS, jsonl, write

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --- classification -----------------------------------------------------------------------------


def test_label_map_sorts_numbers_numerically_and_strings_alphabetically() -> None:
    assert LabelMap.build(["10", "2", "1", "2"]).labels == ("1", "2", "10")
    assert LabelMap.build(["pos", "neg", "neutral"]).labels == ("neg", "neutral", "pos")
    assert LabelMap.build(["1", "b"]).labels == ("1", "b")
    labels = LabelMap.build(["pos", "neg"])
    assert labels.id2label == {0: "neg", 1: "pos"} and labels.label2id == {"neg": 0, "pos": 1}
    # id2label survives JSON (whose keys are strings), as in a Hugging Face config.json
    assert LabelMap.from_id2label(json.loads(json.dumps(labels.id2label))) == labels
    with pytest.raises(ConfigError, match="0..1"):
        LabelMap.from_id2label({"0": "a", "2": "b"})


def test_read_tsv_csv_jsonl_and_build_labels(tmp_path: Path) -> None:
    tsv = read_labelled(write(tmp_path / "sst.tsv", "text\tlabel\ngood film \t1\nbad film \t0\n"))
    assert [(e.text, e.label, e.line) for e in tsv.examples] == [("good film ", "1", 2), ("bad film ", "0", 3)]
    csv_set = read_labelled(write(tmp_path / "imdb.csv", 'text,label\n"a, b\nc",pos\nfine,neg\n'))
    assert [(e.text, e.label, e.line) for e in csv_set.examples] == [("a, b\nc", "pos", 2), ("fine", "neg", 4)]
    rows = [{"text": "x", "label": 2}, {"text": "y", "label": 10}, {"text": "z", "label": 2}]
    js = read_labelled(jsonl(tmp_path / "d.jsonl", rows))
    assert [e.label for e in js.examples] == ["2", "10", "2"]
    assert LabelMap.from_data(js).labels == ("2", "10")
    assert LabelMap.from_data(tsv).labels == ("0", "1")


def test_missing_label_column_names_file_column_and_columns_present(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "review,sentiment\nnice,1\n")
    with pytest.raises(DataError) as e:
        read_labelled(path)
    assert str(path) in str(e.value) and "'label'" in str(e.value) and "review, sentiment" in str(e.value)
    assert [x.label for x in read_labelled(path, text_column="review", label_column="sentiment").examples] == ["1"]
    lines = jsonl(tmp_path / "t.jsonl", [{"review": "nice", "sentiment": 1}])  # JSONL: each row says it
    with pytest.raises(DataError, match=rf"{lines}:1: missing field 'label' \(fields: review, sentiment\)"):
        read_labelled(lines, text_column="review")
    with pytest.raises(ConfigError, match="on_error"):
        read_labelled(path, on_error="ignore")  # type: ignore[arg-type]


def test_missing_or_empty_label_is_a_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "text\tlabel\nok\t1\nno label\t\nshort row\n   \t0\nfine\t0\n")
    with pytest.raises(DataError, match=rf"{path}:3: missing or empty label in 'label'"):
        read_labelled(path)
    data = read_labelled(path, on_error="skip")
    assert [e.text for e in data.examples] == ["ok", "fine"]
    assert [bad.line for bad in data.skipped] == [3, 4, 5]
    assert "empty" in data.skipped[2].reason  # the blank text


def test_unseen_label_in_eval_file_is_a_bad_row(tmp_path: Path) -> None:
    train = read_labelled(write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n"))
    labels = LabelMap.from_data(train)
    dev = write(tmp_path / "dev.csv", "text,label\nc,pos\nd,maybe\n")
    with pytest.raises(DataError, match=rf"{dev}:3: label 'maybe' was not in the training labels \['neg', 'pos'\]"):
        read_labelled(dev, label_map=labels)
    skipped = read_labelled(dev, label_map=labels, on_error="skip")
    assert len(skipped) == 1 and len(skipped.skipped) == 1
    assert read_labelled(dev, label_column=None).examples[1].label is None  # predict files need no labels


def test_multi_label_and_regression(tmp_path: Path, tok: Tokenizer) -> None:
    rows = [
        {"text": "a", "tags": ["sports", "news"]},
        {"text": "b", "tags": "news,tech"},
        {"text": "c", "tags": []},
        {"text": "d", "tags": ""},
    ]
    data = read_labelled(jsonl(tmp_path / "m.jsonl", rows), label_column="tags", task="multi", on_error="skip")
    assert [e.label for e in data.examples] == [["sports", "news"], ["news", "tech"], []]
    assert [b.line for b in data.skipped] == [4]
    labels = LabelMap.from_data(data)
    assert labels.labels == ("news", "sports", "tech")
    features = encode_labelled(tok, data, labels, max_length=8)
    assert features.labels == [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]

    reg = write(tmp_path / "r.csv", "text,score\na,0.5\nb,-2\nc,nan\nd,high\n")
    data = read_labelled(reg, label_column="score", task="regression", on_error="skip")
    assert [e.label for e in data.examples] == [0.5, -2.0] and [b.line for b in data.skipped] == [4, 5]
    assert encode_labelled(tok, data, None, max_length=8).labels == [0.5, -2.0]


def test_encode_labelled_ids_and_longest_first_truncation(tmp_path: Path, tok: Tokenizer) -> None:
    path = jsonl(tmp_path / "p.jsonl", [{"a": "one two three four five six", "b": "seven", "label": "yes"}])
    data = read_labelled(path, text_column="a", text_pair_column="b")
    labels = LabelMap.from_data(data)
    full = encode_labelled(tok, data, labels, max_length=100)
    first, second = tok.encode("one two three four five six"), tok.encode("\nseven")
    assert full.input_ids == [first + second] and full.labels == [0] and full.truncated == 0
    assert len(first) == 6 and len(second) == 2
    cut = encode_labelled(tok, data, labels, max_length=5)  # the longer text gives way, the short pair stays
    assert cut.input_ids == [first[:3] + second] and cut.truncated == 1
    cut = encode_labelled(tok, data, labels, max_length=3)  # both longer than half: split evenly
    assert cut.input_ids == [first[:2] + second[:1]]


# --- instruction tuning -----------------------------------------------------------------------------


def test_prompt_completion_labels_only_the_completion(tmp_path: Path, tok: Tokenizer) -> None:
    rows = [{"prompt": "Translate to French: cheese ->", "completion": " fromage"}]
    data = read_prompt_completion(jsonl(tmp_path / "pc.jsonl", rows))
    features = encode_instruct(tok, data, max_length=64)
    ids, labels = features.input_ids[0], features.labels[0]
    n_prompt = len(tok.encode("Translate to French: cheese ->"))
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and IGNORE_INDEX not in labels[n_prompt:]
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    assert tok.decode([x for x in labels if x != IGNORE_INDEX]) == " fromage" + EOS


def test_empty_completion_is_reported_with_file_and_line(tmp_path: Path) -> None:
    rows = [
        {"prompt": "a", "completion": " b"},
        {"prompt": "c", "completion": "  "},
        {"prompt": "d"},
        {"prompt": "e", "completion": " f"},
    ]
    path = jsonl(tmp_path / "pc.jsonl", rows)
    with pytest.raises(DataError, match=rf"{path}:2: empty completion"):
        read_prompt_completion(path)
    data = read_prompt_completion(path, on_error="skip")
    assert [e.completion for e in data.examples] == [" b", " f"] and [b.line for b in data.skipped] == [2, 3]


CHAT = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6, of course."},
]


def test_render_chat_and_segments() -> None:
    text = render_chat(CHAT)
    assert text == (
        "System: Be terse.\n\nUser: 2+2?\n\nAssistant: 4<|endoftext|>\n\nUser: And 3+3?\n\n"
        "Assistant: 6, of course.<|endoftext|>"
    )
    assert render_chat(CHAT[:2], add_generation_prompt=True) == "System: Be terse.\n\nUser: 2+2?\n\nAssistant:"
    segments = chat_segments(CHAT)
    assert "".join(t for t, _ in segments) == text
    assert [t for t, trained in segments if trained] == [" 4" + EOS, " 6, of course." + EOS]
    with pytest.raises(ConfigError, match="start with the rendering"):
        chat_segments(CHAT, "{{ messages | length }}")


def test_chat_masks_everything_but_the_assistant_turns(tmp_path: Path, tok: Tokenizer) -> None:
    data = read_chat(jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}]))
    features = encode_instruct(tok, data, max_length=128)
    ids, labels = features.input_ids[0], features.labels[0]
    pieces = chat_segments(CHAT)
    expected_ids: list[int] = []
    expected_labels: list[int] = []
    for text, trained in pieces:
        piece = tok.encode(text, allowed_special={EOS})
        expected_ids += piece
        expected_labels += piece if trained else [IGNORE_INDEX] * len(piece)
    assert ids == expected_ids and labels == expected_labels
    # here the pieces' ids equal the whole text's, so a prompt rendered for generation meets the trained ids
    assert ids == tok.encode(render_chat(CHAT), allowed_special={EOS})
    assert tok.decode(ids) == render_chat(CHAT)
    runs = "".join(tok.decode([i]) if x != IGNORE_INDEX else "\0" for i, x in zip(ids, labels, strict=True))
    assert [r for r in runs.split("\0") if r] == [" 4" + EOS, " 6, of course." + EOS]
    # weight 0 leaves an assistant turn untrained
    weighted = [dict(m) for m in CHAT]
    weighted[2]["weight"] = 0
    features = encode_instruct(tok, [ChatExample(weighted, 1)], max_length=128)
    kept = [i for i, x in zip(features.input_ids[0], features.labels[0], strict=True) if x != IGNORE_INDEX]
    assert tok.decode(kept) == " 6, of course." + EOS


def test_chat_bad_rows_name_line_and_message(tmp_path: Path) -> None:
    rows = [
        {"messages": CHAT},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "assistant", "content": ""}]},
        {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}]},
        {"text": "x"},
    ]
    path = jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(DataError, match=rf"{path}:2: message 1: role 'bot' is not one of system, user, assistant"):
        read_chat(path)
    data = read_chat(path, on_error="skip")
    assert len(data) == 1 and [b.line for b in data.skipped] == [2, 3, 4, 5, 6]
    assert "no assistant message" in data.skipped[1].reason
    assert data.skipped[2].reason.startswith("message 0: empty assistant content")
    assert data.skipped[3].reason.startswith("message 0: 'content' must be a string")


def test_special_token_in_data_and_truncation(tok: Tokenizer) -> None:
    with pytest.raises(DataError, match=r"<examples>:7: .*special token '<\|endoftext\|>'"):
        encode_instruct(tok, [PromptCompletion("a<|endoftext|>b", " c", 7)], max_length=64)
    long_prompt = PromptCompletion("word " * 20, " yes", 1)
    features = encode_instruct(tok, [long_prompt, PromptCompletion("Q:", " A", 2)], max_length=10)
    assert features.truncated == 1 and features.dropped == 1 and len(features.input_ids) == 1


def test_pack_concatenates_into_full_blocks() -> None:
    features = TokenFeatures([[1, 2, 3], [4, 5, 6, 7], [8, 9]], [[-100, 2, 3], [-100, -100, 6, 7], [-100, -100]])
    packed = pack(features, 4)
    assert packed.input_ids == [[1, 2, 3, 4], [5, 6, 7, 8]]  # the leftover [9] is dropped
    assert packed.labels == [[-100, 2, 3, -100], [-100, 6, 7, -100]]
    untrained = TokenFeatures([[1, 2], [3, 4]], [[-100, -100], [5, 6]])
    assert pack(untrained, 2).input_ids == [[3, 4]] and pack(untrained, 2).dropped == 1


def test_chat_template_matches_transformers_and_round_trips(tmp_path: Path, tok: Tokenizer) -> None:
    directory = tok.save_pretrained(tmp_path / "tok")
    before = json.loads((directory / "tokenizer_config.json").read_text())
    assert load_chat_template(directory) is None
    save_chat_template(directory)
    after = json.loads((directory / "tokenizer_config.json").read_text())
    assert after == before | {"chat_template": DEFAULT_CHAT_TEMPLATE}  # other keys kept
    assert load_chat_template(directory) == DEFAULT_CHAT_TEMPLATE
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    for prompt in (False, True):
        expected = render_chat(CHAT, add_generation_prompt=prompt)
        assert hf.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=prompt) == expected
    hf.save_pretrained(tmp_path / "hf")  # transformers writes chat_template.jinja, which wins on load
    assert load_chat_template(tmp_path / "hf") == DEFAULT_CHAT_TEMPLATE
    save_chat_template(tmp_path / "hf", "{{ 'x' }}")
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").chat_template == "{{ 'x' }}"


# --- the shared sample data (skipped where absent) -----------------------------------------------------


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    return path


def test_shared_sst2_imdb_conll_swag(tok: Tokenizer) -> None:
    sst = read_labelled(shared("sst2/dev.tsv"))
    assert len(sst) == 872 and LabelMap.from_data(sst).labels == ("0", "1")
    imdb = read_labelled(shared("imdb/imdb_sample_1000.csv"))
    assert len(imdb) == 1000 and LabelMap.from_data(imdb).labels == ("0", "1")
    conll = read_conll(shared("conll2003/valid.txt"))
    assert conll.examples[0].line == 3 and not conll.skipped
    entities = {f"{p}-{t}" for p in "BI" for t in ("LOC", "MISC", "ORG", "PER")}
    assert set(LabelMap.from_data(conll).labels) == entities | {"O"}
    swag = read_choice(shared("swag_sample.json"))
    text = shared("swag_sample.json").read_text().splitlines()
    assert all(text[e.line - 1].rstrip().endswith("{") for e in swag.examples) and len(swag) == 10
    features = encode_choice(tok, swag, max_length=64)
    assert all(row[-1] == tok.eos_token_id for rows in features.input_ids for row in rows)


def test_sets_built_by_hand_and_each_name_served_from_one_module() -> None:
    from gptkit.tasks import data as task_data

    examples = [LabelledExample("a", None, "x", 1)]
    assert LabelledSet("train", examples, task="multi").task == "multi"
    assert LabelMap.from_data(LabelledSet("train", examples)).labels == ("x",)
    assert LabelMap.from_data(TaggedSet("train", [Sentence(["a"], ["B-X"], 1)])).labels == ("B-X",)
    for name in ("read_chat", "pack", "encode_instruct", "read_conll", "TaggedSet", "read_choice", "ChoiceSet"):
        assert not hasattr(task_data, name)  # no re-exports: chat, tagging and choice serve their own names
    with pytest.raises(AttributeError):
        task_data.no_such_name  # noqa: B018
