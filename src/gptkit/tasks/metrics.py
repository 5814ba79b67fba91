"""Evaluation metrics for fine-tuned tasks, in pure Python: classification, tagging, extractive QA, regression.

Every score is a fraction in [0, 1] (accuracy 0.9, not 90): SQuAD's official script prints percentages,
we do not. The exceptions are counts (keys named `support`, `total`, `missing`), `mse`, and the
correlations (`pearson`, `spearman`, in [-1, 1]). A score whose denominator is zero is 0, as
scikit-learn's zero_division=0. Multiple-choice accuracy is `accuracy`.

Definitions follow the references people compare against:
- precision/recall/F1 and their binary/macro/micro averages: scikit-learn's precision_recall_fscore_support.
- entities from IOB tags and entity-level scores: CoNLL's conlleval (also seqeval's default mode).
- extractive QA: the official SQuAD v2.0 evaluation script (v1.1 is the same on answerable questions).

Mismatched inputs (different lengths, bad tags) raise DataError, which is a ValueError.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

from gptkit.errors import DataError

__all__ = [
    "accuracy",
    "classification_scores",
    "entities",
    "entity_scores",
    "exact_match",
    "multilabel_scores",
    "normalize_answer",
    "precision_recall_f1",
    "regression_scores",
    "squad_scores",
    "token_f1",
]

Average = Literal["binary", "macro", "micro"]
Entity = tuple[str, int, int]  # (type, start, end): the tags[start:end] of one entity


# --- helpers ------------------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall)}


def _check_pair(predictions: Sequence[object], references: Sequence[object], what: str = "predictions") -> None:
    if len(predictions) != len(references):
        raise DataError(
            f"{len(predictions)} {what} but {len(references)} references; "
            f"pass one prediction per reference, in the same order"
        )
    if not references:
        raise DataError(f"no references to score: {what} and references are empty")


# --- classification -----------------------------------------------------------------------------


def accuracy(predictions: Sequence[Hashable], references: Sequence[Hashable]) -> float:
    """The fraction of predictions equal to their reference (also multiple-choice accuracy)."""
    _check_pair(predictions, references)
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def precision_recall_f1(
    predictions: Sequence[Hashable],
    references: Sequence[Hashable],
    *,
    average: Average = "binary",
    positive: Hashable = 1,
) -> dict[str, float]:
    """Precision, recall and F1 as scikit-learn defines them (zero_division=0).

    binary: of the `positive` label only (at most two labels may occur). macro: the unweighted mean of each
    label's scores over the labels in predictions or references (F1 is the mean of per-label F1s, not the F1
    of the means). micro: from true/false positives summed over labels; for single-label data all three
    equal the accuracy.
    """
    _check_pair(predictions, references)
    labels = set(predictions) | set(references)
    if average == "binary":
        if len(labels) > 2 or (len(labels) == 2 and positive not in labels):
            raise DataError(
                f"average='binary' needs at most two labels including positive={positive!r}, got "
                f"{sorted(map(repr, labels))}; use average='macro' or 'micro' for multiclass data"
            )
        labels = {positive}
    elif average not in ("macro", "micro"):
        raise DataError(f"average={average!r}; expected 'binary', 'macro' or 'micro'")
    counts = {label: [0, 0, 0] for label in labels}  # label -> [tp, fp, fn]
    for p, r in zip(predictions, references, strict=True):
        if p == r:
            if p in counts:
                counts[p][0] += 1
            continue
        if p in counts:
            counts[p][1] += 1
        if r in counts:
            counts[r][2] += 1
    if average == "macro":
        per_label = [_prf(*c) for c in counts.values()]
        return {k: sum(s[k] for s in per_label) / len(per_label) for k in ("precision", "recall", "f1")}
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    return _prf(tp, fp, fn)


def classification_scores(predictions: Sequence[Hashable], references: Sequence[Hashable]) -> dict[str, float]:
    """accuracy, and precision/recall/f1: binary for label 1 when the labels are 0/1, macro otherwise."""
    binary = (set(predictions) | set(references)) <= {0, 1}
    average: Average = "binary" if binary else "macro"
    return {
        "accuracy": accuracy(predictions, references),
        **precision_recall_f1(predictions, references, average=average, positive=1),
    }


def multilabel_scores(predictions: Sequence[Sequence[int]], references: Sequence[Sequence[int]]) -> dict[str, float]:
    """Multi-label scores over rows of 0/1 per label: micro precision/recall/f1 and exact-match accuracy.

    `accuracy` is the fraction of rows whose every label is right (scikit-learn's subset accuracy).
    """
    _check_pair(predictions, references)
    tp = fp = fn = exact = 0
    for row, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        if len(pred) != len(ref):
            raise DataError(f"row {row}: {len(pred)} predicted labels but {len(ref)} reference labels")
        if bad := [v for v in (*pred, *ref) if v not in (0, 1)]:
            raise DataError(f"row {row}: labels must be 0 or 1 (threshold probabilities first), got {bad[0]!r}")
        tp += sum(p and r for p, r in zip(pred, ref, strict=True))
        fp += sum(p and not r for p, r in zip(pred, ref, strict=True))
        fn += sum(r and not p for p, r in zip(pred, ref, strict=True))
        exact += list(pred) == list(ref)
    return {"accuracy": exact / len(references), **_prf(tp, fp, fn)}


# --- regression ---------------------------------------------------------------------------------


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    var = sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y)
    return cov / math.sqrt(var) if var > 0 else 0.0


def _ranks(x: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of their ranks (as scipy's rankdata)."""
    order = sorted(range(len(x)), key=x.__getitem__)
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def regression_scores(predictions: Sequence[float], references: Sequence[float]) -> dict[str, float]:
    """mse, and the pearson and spearman correlations (0 where a side is constant) of predictions and references."""
    _check_pair(predictions, references)
    x, y = [float(v) for v in predictions], [float(v) for v in references]
    return {
        "mse": sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / len(y),
        "pearson": _pearson(x, y),
        "spearman": _pearson(_ranks(x), _ranks(y)),
    }


# --- token tagging: entities from IOB tags --------------------------------------------------------


def _split_tag(tag: str, index: int) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if prefix not in ("B", "I") or not dash or not kind:
        raise DataError(
            f"tag {tag!r} at position {index} is not O, B-TYPE or I-TYPE; entities reads IOB1/IOB2 "
            f"tags (convert IOBES/BILOU tags to IOB2 first)"
        )
    return prefix, kind


def entities(tags: Sequence[str]) -> list[Entity]:
    """The entities of one sentence's IOB1 or IOB2 tags as (type, start, end), end exclusive, in order.

    As conlleval: B-X always starts an entity; I-X continues an entity of type X and otherwise (after O or
    another type) starts one; O ends one. So B-X B-X is two entities, and I-X I-Y is two.
    """
    found: list[Entity] = []
    start, current = -1, ""
    for i, tag in enumerate(tags):
        prefix, kind = _split_tag(tag, i)
        if prefix == "I" and kind == current:
            continue
        if current:
            found.append((current, start, i))
        start, current = (i, kind) if prefix != "O" else (-1, "")
    if current:
        found.append((current, start, len(tags)))
    return found


def entity_scores(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level precision/recall/f1 (micro over entities, as conlleval), token accuracy, and `per_type`.

    An entity counts only if its type, start and end all match. per_type maps each type seen in either
    side to {precision, recall, f1, support}, support being the number of gold entities of that type.
    """
    _check_pair(predicted, gold, "predicted sentences")
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, gold]
    tokens = right = 0
    for index, (pred_tags, gold_tags) in enumerate(zip(predicted, gold, strict=True)):
        if len(pred_tags) != len(gold_tags):
            raise DataError(
                f"sentence {index}: {len(pred_tags)} predicted tags but {len(gold_tags)} gold tags; "
                f"predict one tag per token"
            )
        tokens += len(gold_tags)
        right += sum(p == g for p, g in zip(pred_tags, gold_tags, strict=True))
        pred_set, gold_set = set(entities(pred_tags)), set(entities(gold_tags))
        for entity in pred_set | gold_set:
            c = counts.setdefault(entity[0], [0, 0, 0])
            c[0] += entity in pred_set and entity in gold_set
            c[1] += entity in pred_set
            c[2] += entity in gold_set
    correct, n_pred, n_gold = (sum(c[i] for c in counts.values()) for i in range(3))
    per_type = {kind: {**_prf(c[0], c[1] - c[0], c[2] - c[0]), "support": c[2]} for kind, c in sorted(counts.items())}
    return {
        **_prf(correct, n_pred - correct, n_gold - correct),
        "accuracy": _ratio(right, tokens),
        "per_type": per_type,
    }


# --- extractive QA: the official SQuAD definitions --------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (SQuAD's rules)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _golds(golds: Sequence[str]) -> list[str]:
    """Gold answers that survive normalisation; [""] for an unanswerable question (as SQuAD v2.0)."""
    if isinstance(golds, str):
        raise DataError(f"golds must be a list of answers, got the string {golds!r}; wrap it: [{golds!r}]")
    return [g for g in golds if normalize_answer(g)] or [""]


def _f1_one(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)  # an empty answer is right only against an empty gold
    same = sum((Counter(pred) & Counter(ref)).values())
    return _f1(same / len(pred), same / len(ref))


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer; [] golds = unanswerable (needs "")."""
    return max(float(normalize_answer(prediction) == normalize_answer(g)) for g in _golds(golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best bag-of-normalised-tokens F1 of the prediction against any gold answer ([] = unanswerable)."""
    return max(_f1_one(prediction, g) for g in _golds(golds))


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """exact_match and f1 averaged over every referenced question (SQuAD v1.1/v2.0 definitions).

    A question with no gold answer (an empty list) is unanswerable: only an empty prediction scores on it.
    When both kinds occur, has_answer_* and no_answer_* give the scores of each part (v2.0's HasAns/NoAns).
    A question without a prediction scores 0 and is counted in `missing`; predictions for ids not in the
    references are ignored. `total` is the number of questions.
    """
    if not references:
        raise DataError("no references to score: the references are empty")
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    for qid, golds in references.items():
        prediction = predictions.get(qid)
        exact[qid] = 0.0 if prediction is None else exact_match(prediction, golds)
        f1[qid] = 0.0 if prediction is None else token_f1(prediction, golds)
    scores = {
        "exact_match": sum(exact.values()) / len(exact),
        "f1": sum(f1.values()) / len(f1),
        "total": len(references),
        "missing": sum(qid not in predictions for qid in references),
    }
    has = [qid for qid, golds in references.items() if golds]
    no = [qid for qid, golds in references.items() if not golds]
    if has and no:
        for name, ids in (("has_answer", has), ("no_answer", no)):
            scores |= {
                f"{name}_exact_match": sum(exact[q] for q in ids) / len(ids),
                f"{name}_f1": sum(f1[q] for q in ids) / len(ids),
                f"{name}_total": len(ids),
            }
    return scores
