"""Answer normalisation and per-family scores.

- open-ended and counting: exact match after normalisation (lower case, punctuation and articles
  removed, number words and digits unified), as in VQA-style evaluation;
- yes/no probes: POPE's definitions (the prediction is "no" if its first sentence contains "no"
  or "not", else "yes"; "yes" is the positive class): accuracy, precision, recall, F1, yes-ratio;
- multiple choice: the option letter is extracted from the reply, then accuracy.

Each family's ``score`` is one number in [0, 1] (accuracy); the rest are details.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
ARTICLES = {"a", "an", "the"}
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c != "'"})


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation or articles, digits as number words, single spaces."""
    words = text.lower().translate(_PUNCT).split()
    words = [NUMBER_WORDS[int(w)] if w.isdigit() and int(w) < len(NUMBER_WORDS) else w for w in words]
    return " ".join(w for w in words if w not in ARTICLES)


def exact_match(predictions: Sequence[str], answers: Sequence[str]) -> dict:
    _check_lengths(predictions, answers)
    hits = [normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers)]
    return {"score": _mean(hits), "accuracy": _mean(hits), "n": len(hits)}


def yes_no(text: str) -> str:
    """POPE's reading of a reply: "no" if its first sentence has the word no/not, else "yes"."""
    first = text.split(".")[0].lower().translate(_PUNCT).split()
    return "no" if "no" in first or "not" in first else "yes"


def pope(predictions: Sequence[str], answers: Sequence[str]) -> dict:
    _check_lengths(predictions, answers)
    pred = [yes_no(p) == "yes" for p in predictions]
    gold = [normalize_answer(a) == "yes" for a in answers]
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    fn = sum(not p and g for p, g in zip(pred, gold))
    tn = sum(not p and not g for p, g in zip(pred, gold))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (tp + tn) / len(pred) if pred else 0.0
    return {
        "score": accuracy,
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(pred) / len(pred) if pred else 0.0,
        "n": len(pred),
    }


def option_letter(text: str, letters: str = "ABCDEFGH") -> str | None:
    """The option letter a reply chooses ("B", "B.", "(B) red", "B: red", "The answer is B."),
    else None. A reply starting with the article "A" ("A red circle") is not option A."""
    text = text.strip()
    match = re.match(rf"\(?([{letters}])(?:[.:)]|$)", text) or re.search(rf"(?i:answer is):?\s*\(?([{letters}])\b", text)
    return match.group(1) if match else None


def multiple_choice(predictions: Sequence[str], answers: Sequence[str]) -> dict:
    _check_lengths(predictions, answers)
    chosen = [option_letter(p) for p in predictions]
    hits = [c is not None and c == a.strip().upper() for c, a in zip(chosen, answers)]
    return {"score": _mean(hits), "accuracy": _mean(hits), "invalid": sum(c is None for c in chosen), "n": len(hits)}


METRIC_BY_FAMILY = {"yesno": pope, "mc": multiple_choice}


def score_family(family: str, predictions: Sequence[str], answers: Sequence[str]) -> dict:
    return METRIC_BY_FAMILY.get(family, exact_match)(predictions, answers)


def relative_score(scores: dict[str, float], reference: dict[str, float]) -> float:
    """AVG-%: the mean over families of score / reference score (as a fraction)."""
    families = [f for f in scores if reference.get(f)]
    if not families:
        raise ValueError(f"no family of {sorted(scores)} has a non-zero reference score in {reference}")
    return sum(scores[f] / reference[f] for f in families) / len(families)


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def _check_lengths(predictions: Sequence, answers: Sequence) -> None:
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
