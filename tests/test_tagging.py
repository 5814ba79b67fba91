"""CoNLL reading and first-sub-token tag encoding (gptkit.tasks.tagging) on tiny files the tests write.

Oracles: hand-written expectations (sentences, lines, labels) and the GPT-2 tokenizer's own pieces.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gptkit.errors import DataError
from gptkit.tasks.data import IGNORE_INDEX, LabelMap
from gptkit.tasks.tagging import Sentence, encode_tagging, read_conll, words_from_tokens
from gptkit.text.tokenizer import Tokenizer

from conftest import write

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
"""


def test_read_conll_sentences_docstart_and_lines(tmp_path: Path) -> None:
    data = read_conll(write(tmp_path / "train.txt", CONLL))
    assert [(s.tokens, s.tags, s.line) for s in data.examples] == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], 3),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], 7),
        (["BRUSSELS"], ["B-LOC"], 10),
    ]
    assert LabelMap.from_data(data).labels == ("B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER", "O")
    tokens_only = read_conll(write(tmp_path / "test.txt", "EU\nrejects\n\nPeter\n"), tag_column=None)
    assert [(s.tokens, s.tags) for s in tokens_only.examples] == [(["EU", "rejects"], []), (["Peter"], [])]


def test_conll_malformed_lines_and_bad_tags(tmp_path: Path) -> None:
    text = "A x B-ORG\nb O\n\nC x X-PER\nd x O\n\nE x B-LOC\n\nf\tx\tI-LOC\n"
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(DataError, match=rf"{path}:1: the line has 3 column\(s\).*need 4"):
        read_conll(path, tag_column=3)
    with pytest.raises(DataError, match=rf"{path}:2: the line has 2 column\(s\); token column 0 and tag column 2"):
        read_conll(path, tag_column=2)
    with pytest.raises(DataError, match=rf"{path}:4: tag 'X-PER' is not O, B-<type> or I-<type>"):
        read_conll(path)
    data = read_conll(path, on_error="skip")  # a bad line drops its whole sentence, reported once
    assert [s.tokens for s in data.examples] == [["A", "b"], ["E"], ["f"]]
    assert [(b.line, b.reason.split()[0]) for b in data.skipped] == [(4, "tag")]
    labels = LabelMap.build(["B-ORG", "O"])
    data = read_conll(path, on_error="skip", label_map=labels)
    assert [b.line for b in data.skipped] == [4, 7, 9] and "not in the training labels" in data.skipped[1].reason


def test_encode_tagging_labels_first_sub_token(tok: Tokenizer) -> None:
    # GPT-2 pieces, checked by hand: " Peter" (a space before the first word too, as transformers'
    # add_prefix_space does); " visits"; " Z", "ü", "rich"; " ."
    sentence = Sentence(["Peter", "visits", "Zürich", "."], ["B-PER", "O", "B-LOC", "O"], 1)
    labels = LabelMap.build(["B-LOC", "B-PER", "O"])  # B-LOC 0, B-PER 1, O 2
    features = encode_tagging(tok, [sentence], labels, max_length=32)
    ids = features.input_ids[0]
    assert [tok.decode([i]) for i in ids] == [" Peter", " visits", " Z", "ü", "rich", " ."]  # prefix space
    assert ids == tok.encode(" Peter visits Zürich .")
    assert features.labels == [[1, 2, 0, IGNORE_INDEX, IGNORE_INDEX, 2]]
    assert features.word_ids == [[0, 1, 2, 2, 2, 3]] and features.truncated == 0
    # predictions map back to words through the first token of each
    assert words_from_tokens(features.word_ids[0], ["p0", "p1", "p2", "x", "x", "p3"]) == ["p0", "p1", "p2", "p3"]

    with pytest.raises(DataError, match=r"<examples>:1: label 'B-PER' was not in the training labels"):
        encode_tagging(tok, [sentence], LabelMap.build(["B-LOC", "O"]), max_length=32)
    cut = encode_tagging(tok, [sentence], labels, max_length=4)
    assert cut.truncated == 1 and cut.labels == [[1, 2, 0, IGNORE_INDEX]]
    assert words_from_tokens(cut.word_ids[0], [5, 6, 7, 8], n_words=4) == [5, 6, 7, None]  # type: ignore[index]


def test_encode_tagging_multibyte_characters_map_to_one_word(tok: Tokenizer) -> None:
    sentence = Sentence(["日本", "x"], ["B-LOC", "O"], 1)
    features = encode_tagging(tok, [sentence], LabelMap.build(["B-LOC", "O"]), max_length=32)
    words = features.word_ids[0]  # type: ignore[index]
    assert words[-1] == 1 and set(words[:-1]) == {0} and len(words) > 2  # byte pieces of one character
    assert features.labels[0] == [0] + [IGNORE_INDEX] * (len(words) - 2) + [1]
