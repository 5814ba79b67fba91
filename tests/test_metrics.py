"""gptkit.tasks.metrics against hand-worked values (the oracle); scikit-learn and scipy only where importable."""

from __future__ import annotations

import random

import pytest

from gptkit.errors import DataError
from gptkit.tasks.metrics import (
    accuracy,
    classification_scores,
    entities,
    entity_scores,
    exact_match,
    multilabel_scores,
    normalize_answer,
    precision_recall_f1,
    regression_scores,
    squad_scores,
    token_f1,
)

approx = pytest.approx

# per label: 0: tp 2 fp 0 fn 1 -> P 1, R 2/3, F .8 | 1: tp 1 fp 1 fn 1 -> .5 .5 .5 | 2: tp 1 fp 2 fn 1 -> 1/3 1/2 .4
MULTI_PRED = [0, 1, 2, 2, 1, 0, 2]
MULTI_REF = [0, 2, 2, 1, 1, 0, 0]


# --- classification -----------------------------------------------------------------------------


def test_accuracy() -> None:
    assert accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 0.5
    assert accuracy(["a"], ["a"]) == 1.0


@pytest.mark.parametrize("predictions, references", [([1, 0], [1]), ([], [])])
def test_accuracy_rejects_mismatched_or_empty(predictions: list, references: list) -> None:
    with pytest.raises(
        ValueError, match=f"{len(predictions)} predictions but {len(references)} references" if predictions else "empty"
    ):
        accuracy(predictions, references)


def test_macro_and_micro_by_hand() -> None:
    macro = precision_recall_f1(MULTI_PRED, MULTI_REF, average="macro")
    assert macro == approx(
        {"precision": (1 + 0.5 + 1 / 3) / 3, "recall": (2 / 3 + 0.5 + 0.5) / 3, "f1": (0.8 + 0.5 + 0.4) / 3}
    )  # the mean of per-label F1s, not F1 of the means
    assert macro["f1"] != approx(2 * macro["precision"] * macro["recall"] / (macro["precision"] + macro["recall"]))
    micro = precision_recall_f1(MULTI_PRED, MULTI_REF, average="micro")
    assert micro == approx({"precision": 4 / 7, "recall": 4 / 7, "f1": 4 / 7})  # single-label micro = accuracy


def test_binary_by_hand() -> None:
    # tp 2 (idx 0, 4), fp 1 (idx 1), fn 1 (idx 3)
    assert precision_recall_f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}
    )
    # positive=0: tp 1 (idx 2), fp 1 (idx 3), fn 1 (idx 1)
    assert precision_recall_f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], positive=0) == approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    )
    # no positive predicted: precision undefined -> 0 (zero_division=0), and f1 too
    assert precision_recall_f1([0, 0], [0, 1]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert precision_recall_f1(["pos", "neg"], ["pos", "pos"], positive="pos") == approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3}
    )


def test_binary_rejects_multiclass_and_unknown_average() -> None:
    with pytest.raises(DataError, match="average='macro'"):
        precision_recall_f1(MULTI_PRED, MULTI_REF)
    with pytest.raises(DataError, match="positive=1"):
        precision_recall_f1(["a", "b"], ["a", "a"])
    with pytest.raises(DataError, match="weighted"):
        precision_recall_f1([1], [1], average="weighted")  # type: ignore[arg-type]


def test_classification_scores_picks_binary_or_macro() -> None:
    binary = classification_scores([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert binary == approx({"accuracy": 0.6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    multi = classification_scores(MULTI_PRED, MULTI_REF)
    assert multi == approx({"accuracy": 4 / 7, **precision_recall_f1(MULTI_PRED, MULTI_REF, average="macro")})


def test_multilabel_by_hand() -> None:
    # cells: tp 2, fp 1 (row 0 label 2), fn 0; row 1 exact, row 0 not
    scores = multilabel_scores([[1, 0, 1], [0, 1, 0]], [[1, 0, 0], [0, 1, 0]])
    assert scores == approx({"accuracy": 0.5, "precision": 2 / 3, "recall": 1.0, "f1": 0.8})
    with pytest.raises(DataError, match="row 1: 2 predicted labels but 3"):
        multilabel_scores([[1, 0, 1], [0, 1]], [[1, 0, 0], [0, 1, 0]])
    with pytest.raises(DataError, match="row 0: labels must be 0 or 1"):
        multilabel_scores([[0.7, 0]], [[1, 0]])


def test_regression_by_hand() -> None:
    # x - mean = (-1, 0, 1), y - mean = (-4/3, -1/3, 5/3): cov 3, var 2 * 42/9
    scores = regression_scores([1, 2, 3], [1, 2, 4])
    assert scores == approx({"mse": 1 / 3, "pearson": 3 / (2 * 42 / 9) ** 0.5, "spearman": 1.0})
    # ties get mean ranks: (1.5, 1.5, 3) against (1, 2, 3): deviations (-.5, -.5, 1), (-1, 0, 1)
    assert regression_scores([5, 5, 7], [1, 2, 3])["spearman"] == approx(1.5 / (1.5 * 2) ** 0.5)
    assert regression_scores([1, 1, 1], [1, 2, 3])["pearson"] == 0.0  # constant: undefined -> 0


def test_correlations_against_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    x, y = [rng.random() for _ in range(50)], [rng.randrange(5) for _ in range(50)]  # y has many ties
    scores = regression_scores(x, y)
    assert scores["pearson"] == approx(stats.pearsonr(x, y)[0])
    assert scores["spearman"] == approx(stats.spearmanr(x, y)[0])


def test_against_sklearn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    pred, ref = [rng.randrange(4) for _ in range(200)], [rng.randrange(4) for _ in range(200)]
    for average in ("macro", "micro"):
        p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(ref, pred, average=average, zero_division=0)
        assert precision_recall_f1(pred, ref, average=average) == approx({"precision": p, "recall": r, "f1": f})
    bpred, bref = [v % 2 for v in pred], [v % 2 for v in ref]
    p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(bref, bpred, average="binary", zero_division=0)
    assert precision_recall_f1(bpred, bref) == approx({"precision": p, "recall": r, "f1": f})


# --- IOB entities -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, expected",
    [
        ([], []),
        (["O", "O"], []),
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),  # entity at sentence end
        (["I-PER", "I-PER", "O"], [("PER", 0, 2)]),  # IOB1: I- starts an entity
        (["O", "I-LOC"], [("LOC", 1, 2)]),  # I- after O starts one
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # type switch inside a chunk
        (["I-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
        (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),  # adjacent B-X B-X: two entities
        (["I-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),  # IOB1's B- between same-type entities
        (["B-MISC", "I-MISC", "I-MISC"], [("MISC", 0, 3)]),
        (["B-I-X"], [("I-X", 0, 1)]),  # the type is everything after the first dash
    ],
)
def test_entities(tags: list[str], expected: list[tuple[str, int, int]]) -> None:
    assert entities(tags) == expected


@pytest.mark.parametrize("bad", ["PER", "E-PER", "S-LOC", "B-", "b-PER", ""])
def test_entities_reject_other_schemes(bad: str) -> None:
    with pytest.raises(DataError, match=f"tag {bad!r} at position 1"):
        entities(["O", bad])


def test_entity_scores_by_hand() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"], ["B-PER", "I-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"], ["B-PER", "O"]]  # last: wrong boundary
    # gold: PER, LOC, ORG, PER; predicted: PER, ORG, ORG, PER(0, 1); correct: PER (s0), ORG (s1)
    scores = entity_scores(pred, gold)
    assert scores["precision"] == approx(2 / 4) and scores["recall"] == approx(2 / 4)
    assert scores["f1"] == approx(0.5) and scores["accuracy"] == approx(6 / 8)
    expected = {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "ORG": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1},
        "PER": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
    }
    assert list(scores["per_type"]) == list(expected)
    for kind, values in expected.items():
        assert scores["per_type"][kind] == approx(values)
    assert entity_scores([["O"]], [["O"]]) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "accuracy": 1.0,
        "per_type": {},
    }


def test_entity_scores_mismatch_names_the_sentence() -> None:
    with pytest.raises(DataError, match="sentence 1: 1 predicted tags but 2 gold tags"):
        entity_scores([["O"], ["O"]], [["O"], ["O", "B-PER"]])
    with pytest.raises(DataError, match="1 predicted sentences but 2 references"):
        entity_scores([["O"]], [["O"], ["O"]])


# --- SQuAD --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The  Eiffel\tTower!", "eiffel tower"),  # article, whitespace, punctuation
        ("an apple, a pear and THE plum", "apple pear and plum"),
        ("theory of anatomy", "theory of anatomy"),  # articles only as whole words
        ("U.S.A.", "usa"),
        ("the-end", "theend"),  # punctuation goes before articles, so this is no article
        ("A", ""),
        ("  ", ""),
        ("", ""),
        ("“curly”", "“curly”"),  # only ASCII punctuation, as the official script
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_and_token_f1() -> None:
    assert exact_match("the Normans", ["Normans"]) == 1.0
    assert exact_match("Normans", ["Norman", "Paris"]) == 0.0
    assert token_f1("in France", ["France", "Paris"]) == approx(2 / 3)  # P 1/2, R 1 against "France"
    assert token_f1("10th centuries", ["10th century", "10th"]) == approx(2 / 3)  # max(.5, 2/3)
    assert token_f1("a b a", ["b a a c"]) == approx(2 / 3)  # articles: "b" vs "b c": P 1, R 1/2
    assert token_f1("x x y", ["x y y z"]) == approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))  # multiset overlap
    # unanswerable: gold [] (or only answers that normalise to nothing) wants the empty prediction
    assert exact_match("", []) == token_f1("", []) == 1.0
    assert exact_match("France", []) == token_f1("France", []) == 0.0
    assert exact_match("", ["the"]) == 1.0
    assert exact_match("", ["France"]) == token_f1("", ["France"]) == 0.0
    with pytest.raises(DataError, match="list of answers"):
        token_f1("France", "France")  # type: ignore[arg-type]


def test_squad_scores_v2_split_and_missing() -> None:
    references = {"a": ["France"], "b": [], "c": ["10th century", "10th"], "d": ["Rollo"]}
    predictions = {"a": "france", "b": "", "c": "10th centuries", "x": "not a question"}  # d missing, x ignored
    scores = squad_scores(predictions, references)
    assert scores == approx(
        {
            "exact_match": 2 / 4,
            "f1": (1 + 1 + 2 / 3 + 0) / 4,
            "total": 4,
            "missing": 1,
            "has_answer_exact_match": 1 / 3,
            "has_answer_f1": (1 + 2 / 3 + 0) / 3,
            "has_answer_total": 3,
            "no_answer_exact_match": 1.0,
            "no_answer_f1": 1.0,
            "no_answer_total": 1,
        }
    )


def test_squad_scores_v1_has_no_split() -> None:
    scores = squad_scores({"a": "The France.", "b": "Rollo the"}, {"a": ["France"], "b": ["Rollo", "King Rollo"]})
    assert scores == {"exact_match": 1.0, "f1": 1.0, "total": 2, "missing": 0}
    with pytest.raises(DataError, match="empty"):
        squad_scores({}, {})
