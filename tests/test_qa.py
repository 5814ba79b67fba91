"""gptkit.tasks.qa: reading SQuAD files, windowed features on the GPT-2 tokenizer, and spans back to answer text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gptkit.errors import ConfigError, DataError
from gptkit.tasks.qa import QAExample, QAFeature, best_spans, encode_qa, iter_squad, read_squad
from gptkit.text.tokenizer import Tokenizer
from gptkit.training.corpus import BadRow

SHARED_SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad_sample.json"
CONTEXT = "The Normans gave their name to Normandy, a region in France. Their leader was Rollo."


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_pretrained("gpt2")


def _example(qid: str, question: str, context: str, *answers: str) -> QAExample:
    return QAExample(qid, question, context, [(a, context.index(a)) for a in answers], 0)


def _long_context(n_sentences: int = 40) -> str:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    sentences = [f"Sentence {i} says {words[i % 8]} and {words[(3 * i) % 8]}." for i in range(n_sentences)]
    return " ".join(sentences[:-5] + ["The treasure is buried under the old oak tree."] + sentences[-5:])


def _flat(qid: str, question: str, context: str, answers: list[tuple[str, int]]) -> dict:
    return {
        "id": qid,
        "question": question,
        "context": context,
        "answers": {"text": [a for a, _ in answers], "answer_start": [s for _, s in answers]},
    }


# --- reading ------------------------------------------------------------------------------------


def test_read_nested_v2(tmp_path: Path) -> None:
    france = CONTEXT.index("France")
    squad = {
        "version": "v2.0",
        "data": [
            {
                "title": "Normans",
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Where is Normandy?",
                                "is_impossible": False,
                                "answers": [
                                    {"text": "France", "answer_start": france},
                                    {"text": "in France", "answer_start": france - 3},
                                ],
                            },
                            {
                                "id": "q2",
                                "question": "Who was the king?",
                                "is_impossible": True,
                                "answers": [],
                                "plausible_answers": [{"text": "Rollo", "answer_start": CONTEXT.index("Rollo")}],
                            },
                        ],
                    },
                    {
                        "context": "Second paragraph.",
                        "qas": [
                            {
                                "id": 7,
                                "question": "Which paragraph?",
                                "answers": [{"text": "Second", "answer_start": 0}],
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(squad))
    examples = read_squad(path)
    assert examples == [
        QAExample("q1", "Where is Normandy?", CONTEXT, [("France", france), ("in France", france - 3)], 0),
        QAExample("q2", "Who was the king?", CONTEXT, [], 1),  # plausible_answers are not answers
        QAExample("7", "Which paragraph?", "Second paragraph.", [("Second", 0)], 2),  # v1.1: no is_impossible
    ]
    assert [e.is_impossible for e in examples] == [False, True, False]


def test_flat_json_and_jsonl_read_the_same(tmp_path: Path) -> None:
    rows = [_flat("a", "Where?", CONTEXT, [("France", CONTEXT.index("France"))]), _flat("b", "Who?", CONTEXT, [])]
    (tmp_path / "flat.json").write_text(json.dumps({"version": 2, "data": rows}))
    (tmp_path / "flat.jsonl").write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    from_json, from_jsonl = read_squad(tmp_path / "flat.json"), read_squad(tmp_path / "flat.jsonl")
    assert [e.line_or_index for e in from_json] == [0, 1]
    assert [e.line_or_index for e in from_jsonl] == [1, 3]  # JSONL: the line (blank lines count)
    assert [(e.id, e.question, e.context, e.answers) for e in from_json] == [
        (e.id, e.question, e.context, e.answers) for e in from_jsonl
    ]
    assert from_json[1].is_impossible and from_json[0].answers == [("France", CONTEXT.index("France"))]


def test_mismatched_answer_names_file_id_line_and_what_is_there(tmp_path: Path) -> None:
    good = _flat("ok", "Where?", CONTEXT, [("France", CONTEXT.index("France"))])
    bad = _flat("q-bad", "Who?", CONTEXT, [("Rollo", 4)])
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as error:
        read_squad(path)
    message = str(error.value)
    rollo = CONTEXT.index("Rollo")
    for part in (
        str(path),
        "line 2",
        "'q-bad'",
        "answer_start 4",
        "holds 'Norma'",
        f"occurs at {rollo}",
        "on_error='skip'",
    ):
        assert part in message
    skipped: list[BadRow] = []
    assert [e.id for e in read_squad(path, on_error="skip", skipped=skipped)] == ["ok"]
    assert len(skipped) == 1 and skipped[0].where == "line 2"
    nested = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [{"id": "n1", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]}],
                    }
                ]
            }
        ]
    }
    (tmp_path / "nested.json").write_text(json.dumps(nested))
    with pytest.raises(
        DataError,
        match=r"nested.json: data\[0\].paragraphs\[0\].qas\[0\]: question 'n1'.*"
        r"holds 'The N'.*not in the context",
    ):
        read_squad(tmp_path / "nested.json")


@pytest.mark.parametrize(
    "row, expected",
    [
        (
            {"id": "x", "question": "?", "answers": {"text": [], "answer_start": []}},
            "question 'x': missing field 'context'",
        ),
        ({"question": "?", "context": "c", "answers": []}, "missing field 'id'"),
        ({"id": "x", "question": "?", "context": "c"}, "question 'x': missing field 'answers'"),
        ({"id": "x", "question": 3, "context": "c", "answers": []}, "question 'x': field 'question' is int"),
        (
            {"id": "x", "question": "?", "context": "c", "answers": {"text": ["c"]}},
            "question 'x': missing field 'answer_start'",
        ),
        (
            {"id": "x", "question": "?", "context": "c", "answers": {"text": ["c"], "answer_start": [0, 0]}},
            "question 'x': answers has 1 texts but 2 answer_starts",
        ),
        (
            {"id": "x", "question": "?", "context": "c", "answers": {"text": [""], "answer_start": [0]}},
            "question 'x': answer 0 text is ''; expected a non-empty",
        ),
        ({"id": "x", "question": "?", "context": "", "answers": []}, "question 'x': the context is empty"),
    ],
)
def test_bad_rows_name_the_field(tmp_path: Path, row: dict, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"bad.jsonl: line 1: {expected}"):
        read_squad(path)


def test_repeated_ids_and_bad_json(tmp_path: Path) -> None:
    row = _flat("same", "?", "c", [])
    (tmp_path / "dup.jsonl").write_text(f"{json.dumps(row)}\n{json.dumps(row)}\nnot json\n")
    items = list(iter_squad(tmp_path / "dup.jsonl"))
    assert isinstance(items[0], QAExample)
    assert str(items[1]).endswith("line 2: question 'same': the id is repeated (first at line 1); ids must be unique")
    assert isinstance(items[2], BadRow) and "not valid JSON" in items[2].reason
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        read_squad(tmp_path / "broken.json")


# --- features -----------------------------------------------------------------------------------


def _check_answer_positions(tokenizer: Tokenizer, features: list[QAFeature], examples: list[QAExample]) -> int:
    """Every window holding the whole answer points at it, and its tokens give back the answer; returns how many."""
    by_id = {e.id: e for e in examples}
    found = 0
    for f in features:
        answers = by_id[f.example_id].answers
        assert f.input_ids[-1] == tokenizer.eos_token_id
        if not answers:
            assert f.start_position == f.end_position == f.null_index
            continue
        text, start = answers[0]
        spans = [(i, o) for i, o in enumerate(f.context_offsets) if o is not None]
        covering = [i for i, (a, b) in spans if a < start + len(text) and b > start]
        holds = covering and spans[0][1][0] <= start and spans[-1][1][1] >= start + len(text)
        if not holds:
            assert f.start_position == f.end_position == f.null_index
            continue
        found += 1
        assert (f.start_position, f.end_position) == (covering[0], covering[-1])
        decoded = tokenizer.decode(f.input_ids[f.start_position : f.end_position + 1])
        assert decoded.removeprefix(" ") == text  # answers here end on token boundaries
        a, b = f.context_offsets[f.start_position][0], f.context_offsets[f.end_position][1]  # type: ignore[index]
        assert f.context[a:b].strip() == text
    return found


def test_answer_spans_decode_to_the_answer(gpt2: Tokenizer) -> None:
    examples = [
        _example("a", "Where is Normandy?", CONTEXT, "France"),
        _example("b", "Who led them?", CONTEXT, "Rollo"),
        _example("c", "What did they name?", CONTEXT, "The Normans"),  # at the start of the context
        _example("d", "Who?", CONTEXT),
    ]
    for question_first in (True, False):
        features = encode_qa(gpt2, examples, max_length=64, stride=8, question_first=question_first)
        assert [f.example_id for f in features] == ["a", "b", "c", "d"]  # short context: one window each
        assert _check_answer_positions(gpt2, features, examples) == 3
    question = gpt2.encode("\n") + gpt2.encode("Where is Normandy?")
    assert features[0].input_ids[-len(question) - 1 : -1] == question  # question_first=False: question at the end


def test_long_context_windows_overlap_by_stride(gpt2: Tokenizer) -> None:
    context = _long_context()
    example = _example("long", "Where is the treasure?", context, "under the old oak tree")
    max_length, stride = 48, 12
    features = encode_qa(gpt2, [example], max_length=max_length, stride=stride)
    whole = gpt2.encode_with_offsets(context)
    head = len(gpt2.encode(example.question)) + 1  # question + "\n"
    assert len(features) > 3
    windows = [[o for o in f.context_offsets if o is not None] for f in features]
    for f, window in zip(features, windows, strict=True):
        assert len(f.input_ids) <= max_length
        assert f.context_offsets[head : head + len(window)] == window  # context tokens are contiguous
        assert f.input_ids[head : head + len(window)] == whole.ids[whole.offsets.index(window[0]) :][: len(window)]
    for left, right in zip(windows, windows[1:], strict=False):
        assert left[-stride:] == right[:stride]  # overlap: exactly `stride` tokens
        assert left[-stride - 1] != right[0]
    assert windows[0][0] == whole.offsets[0] and windows[-1][-1] == whole.offsets[-1]
    unique = sorted({o for w in windows for o in w})
    assert unique == sorted(set(whole.offsets))  # together the windows cover the context
    assert 1 <= _check_answer_positions(gpt2, features, [example]) < len(features)


def test_gpt1_tokenizer_without_eos_ends_in_the_separator() -> None:
    gpt1 = Tokenizer.from_pretrained("openai-gpt")  # lower-cases; offsets still point into the original text
    answer = "Normandy, a region in France"
    examples = [_example("a", "Where is Normandy?", CONTEXT, answer), _example("b", "?", CONTEXT)]
    with pytest.raises(ConfigError, match=r"separator='\\n' encodes to no tokens"):
        encode_qa(gpt1, examples)  # GPT-1's tokenizer drops whitespace
    features = encode_qa(gpt1, examples, max_length=64, stride=8, separator=" | ")
    separator = gpt1.encode(" | ")
    for f in features:
        assert f.input_ids[-len(separator) :] == separator and f.context_offsets[-1] is None
    first, last = (features[0].context_offsets[i] for i in (features[0].start_position, features[0].end_position))
    assert CONTEXT[first[0] : last[1]] == answer  # type: ignore[index]
    assert features[1].start_position == features[1].end_position == features[1].null_index
    starts, ends = _logits(features, {"a": (5.0, 5.0)})
    assert best_spans(features, starts, ends, allow_impossible=False)["a"] == answer


def test_question_too_long_is_an_error(gpt2: Tokenizer) -> None:
    example = _example("q", "why" * 50, CONTEXT, "France")
    with pytest.raises(DataError, match=r"question 'q' has \d+ tokens.*raise max_length or lower stride"):
        encode_qa(gpt2, [example], max_length=64, stride=16)


@pytest.mark.skipif(not SHARED_SQUAD.exists(), reason="../shared/data/squad_sample.json is absent")
def test_shared_sample(gpt2: Tokenizer) -> None:
    examples = read_squad(SHARED_SQUAD)
    assert len(examples) == 14 and sum(e.is_impossible for e in examples) == 6
    assert examples[0].answers[0] == ("France", 159)
    features = encode_qa(gpt2, examples, max_length=96, stride=32)
    assert len(features) > len(examples)
    assert _check_answer_positions(gpt2, features, examples) >= 8


# --- best spans ---------------------------------------------------------------------------------


def _logits(features: list[QAFeature], spans: dict[str, tuple[float, float]]) -> tuple[list, list]:
    """Zero logits, plus the given (start, end) values at each feature's gold start and end."""
    starts, ends = [], []
    for f in features:
        s, e = [0.0] * len(f.input_ids), [0.0] * len(f.input_ids)
        if f.example_id in spans:
            s[f.start_position] += spans[f.example_id][0]
            e[f.end_position] += spans[f.example_id][1]
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_best_spans_returns_the_gold_text(gpt2: Tokenizer) -> None:
    examples = [
        _example("a", "Where is Normandy?", CONTEXT, "Normandy, a region in France"),
        _example("b", "Who led them?", CONTEXT, "Rollo"),
        _example("long", "Where is the treasure?", _long_context(), "the old oak tree"),
    ]
    features = encode_qa(gpt2, examples, max_length=48, stride=12)
    starts, ends = _logits(features, {"a": (5.0, 5.0), "b": (5.0, 5.0), "long": (5.0, 5.0)})
    for f, s, e in zip(features, starts, ends, strict=True):
        s[f.null_index] = e[f.null_index] = 100.0  # the null answer, not allowed here
        s[0] = e[0] = 100.0  # a question token: never an answer
        if f.start_position != f.null_index:
            s[f.end_position + 1] = 8.0  # these two make no span (start after end), though 16 > 10
            e[f.start_position - 1] = 8.0
    predictions = best_spans(features, starts, ends, allow_impossible=False)
    assert predictions == {"a": "Normandy, a region in France", "b": "Rollo", "long": "the old oak tree"}
    torch = pytest.importorskip("torch")  # tensor rows work too; gptkit.tasks.qa itself never imports torch
    tensors = [torch.tensor(s) for s in starts], [torch.tensor(e) for e in ends]
    assert best_spans(features, *tensors, allow_impossible=False) == predictions


def test_best_spans_bounds_the_answer_length(gpt2: Tokenizer) -> None:
    example = _example("a", "Where is Normandy?", CONTEXT, "Normandy, a region in France")
    [feature] = encode_qa(gpt2, [example], max_length=64, stride=8)
    [s], [e] = _logits([feature], {"a": (5.0, 5.0)})
    assert feature.end_position - feature.start_position + 1 == 6
    e[feature.start_position + 1] = 4.0  # "Normandy," is the best span of at most 3 tokens
    assert best_spans([feature], [s], [e], allow_impossible=False, max_answer_tokens=3) == {"a": "Normandy,"}
    assert best_spans([feature], [s], [e], allow_impossible=False) == {"a": example.answers[0][0]}


def test_null_answers_for_v2(gpt2: Tokenizer) -> None:
    examples = [
        _example("yes", "Where is Normandy?", CONTEXT, "France"),
        _example("no", "Who was king?", CONTEXT),
        _example("long", "Where is the treasure?", _long_context(), "the old oak tree"),
    ]
    features = encode_qa(gpt2, examples, max_length=48, stride=12)
    starts, ends = _logits(features, {"yes": (1.0, 1.0), "long": (1.5, 1.5)})  # span scores 2 and 3
    null_scores = {"yes": 1.5, "no": 5.0, "long": 3.5}  # "no": any span scores 0
    for f, s, e in zip(features, starts, ends, strict=True):
        contains = f.start_position != f.null_index
        s[-1] = e[-1] = (null_scores[f.example_id] + (10.0 if f.example_id == "long" and not contains else 0.0)) / 2
    assert best_spans(features, starts, ends, allow_impossible=True) == {"yes": "France", "no": "", "long": ""}
    # the null score is the lowest over an example's windows: "long" has 3.5 where the answer is, 13.5 elsewhere
    assert best_spans(features, starts, ends, allow_impossible=True, null_threshold=2.5) == {
        "yes": "France",
        "no": "",
        "long": "the old oak tree",
    }
    predicted = best_spans(features, starts, ends, allow_impossible=False)
    assert predicted["yes"] == "France" and predicted["no"] != ""


def test_best_spans_rejects_short_logits(gpt2: Tokenizer) -> None:
    [feature] = encode_qa(gpt2, [_example("a", "?", CONTEXT, "France")], max_length=64, stride=8)
    with pytest.raises(DataError, match="feature 0: 3 logits"):
        best_spans([feature], [[0.0] * 3], [[0.0] * 3], allow_impossible=False)


def test_qa_does_not_import_torch() -> None:
    code = "import sys, gptkit.tasks.qa, gptkit.tasks.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
