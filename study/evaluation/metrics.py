"""Answer normalisation and per-family scores.

The synthetic families:

- open-ended and counting: exact match after normalisation (lower case, punctuation and articles
  removed, number words and digits unified), as in VQA-style evaluation;
- yes/no probes: POPE's definitions (a reply is read as LLaVA's ``eval_pope.py`` reads it, see
  :func:`yes_no`; "yes" is the positive class): accuracy, precision, recall, F1, yes-ratio;
- multiple choice: the option letter is extracted from the reply, then accuracy.

The real benchmarks, read from LLaVA's own question files by :mod:`study.evaluation.llava_formats`
and scored with the definitions their official scripts use (each function's docstring names the
script; scored from the question records, which carry the answer and what the metric needs):

- ``gqa``: exact match of LLaVA's GQA normalisation of the reply with GQA's answer;
- ``pope``: POPE's metrics per ``category`` (adversarial / popular / random);
- ``scienceqa``: LLaVA's option-letter parsing, accuracy (and on the questions with an image);
- ``mme``: per subtask acc and acc+ (every question of an image right), score = (acc + acc+) x 100,
  summed over the perception and the cognition subtasks.

Each family's ``score`` is one number in [0, 1]; the rest are details (flat: one number per key).
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
    """POPE's reading of a reply, as LLaVA's ``llava/eval/eval_pope.py`` does it: keep the text
    before the first ".", drop commas, split on spaces; "no" if a word is exactly ``No``, ``no``
    or ``not`` (case-sensitive: "NO" and "Not" read as "yes"), else "yes"."""
    words = text.split(".")[0].replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


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


def gqa_answer(text: str) -> str:
    """LLaVA's GQA normalisation (``scripts/convert_gqa_for_eval.py``): trailing periods removed,
    lower case. GQA's ``eval.py`` then compares it with the answer as is."""
    return text.rstrip(".").lower()


def gqa(predictions: Sequence[str], questions: Sequence[dict]) -> dict:
    """GQA accuracy; with the questions' ``structural`` types (GQA's ``types.structural``) also
    GQA's ``open`` (structural type ``query``) and ``binary`` (all others) accuracies."""
    answers = [q["answer"] for q in questions]
    _check_lengths(predictions, answers)
    hits = [gqa_answer(p) == a for p, a in zip(predictions, answers)]
    result = {"score": _mean(hits), "accuracy": _mean(hits), "n": len(hits)}
    if questions and all(q.get("structural") for q in questions):
        is_open = [q["structural"] == "query" for q in questions]
        result["open"] = _mean([h for h, o in zip(hits, is_open) if o])
        result["binary"] = _mean([h for h, o in zip(hits, is_open) if not o])
    return result


def pope_by_category(predictions: Sequence[str], questions: Sequence[dict]) -> dict:
    """POPE's metrics for each ``category`` (as LLaVA's ``eval_pope.py`` reports them), keys
    ``<category>_<metric>``; ``score`` is the F1 averaged over the categories, ``accuracy`` the
    accuracy over all questions."""
    answers = [q["answer"] for q in questions]
    _check_lengths(predictions, answers)
    result: dict = {}
    f1s = []
    for category in sorted({q["category"] for q in questions}):
        idx = [i for i, q in enumerate(questions) if q["category"] == category]
        metrics = pope([predictions[i] for i in idx], [answers[i] for i in idx])
        f1s.append(metrics["f1"])
        result.update({f"{category}_{k}": v for k, v in metrics.items() if k != "score"})
    overall = pope(predictions, answers)
    return {
        "score": _mean(f1s),
        "accuracy": overall["accuracy"],
        "f1": _mean(f1s),
        "yes_ratio": overall["yes_ratio"],
        "n": len(answers),
        **result,
    }


SCIENCEQA_OPTIONS = "ABCDE"


def scienceqa_letter(text: str, n_choices: int = len(SCIENCEQA_OPTIONS)) -> str | None:
    """The option a reply chooses, as LLaVA-1.5's ``llava/eval/eval_science_qa.py`` parses it:
    the reply is exactly a letter A-E; or starts with a letter and ". "; or has exactly one
    match of ``The answer is ([A-Z]).``. A letter beyond the question's choices counts as no
    answer (None), as does anything else."""
    if text in SCIENCEQA_OPTIONS:
        letter = text
    elif len(text) >= 3 and text[0] in SCIENCEQA_OPTIONS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = re.findall(r"The answer is ([A-Z]).", text)
        letter = found[0] if len(found) == 1 else None
    return letter if letter and letter in SCIENCEQA_OPTIONS[:n_choices] else None


def scienceqa(predictions: Sequence[str], questions: Sequence[dict]) -> dict:
    """ScienceQA accuracy (letter parsing of :func:`scienceqa_letter`, a failed parse is wrong),
    the accuracy on the questions with an image (LLaVA's "IMG-Accuracy") and the failed parses."""
    answers = [q["answer"] for q in questions]
    _check_lengths(predictions, answers)
    chosen = [scienceqa_letter(p, q.get("n_choices", len(SCIENCEQA_OPTIONS))) for p, q in zip(predictions, questions)]
    hits = [c == a for c, a in zip(chosen, answers)]
    with_image = [h for h, q in zip(hits, questions) if q.get("image")]
    return {
        "score": _mean(hits),
        "accuracy": _mean(hits),
        "img_accuracy": _mean(with_image),
        "img_n": len(with_image),
        "invalid": sum(c is None for c in chosen),
        "n": len(hits),
    }


MME_SUBTASKS = {
    "perception": ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR"),
    "cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"),
}


def mme_yes_no(text: str) -> str:
    """MME's reading of a reply (``eval_tool/calculation.py``): lower case; "yes"/"no" as is,
    else "yes" or "no" found in the first four characters (in that order), else "other"."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


def mme(predictions: Sequence[str], questions: Sequence[dict]) -> dict:
    """MME's scores: per subtask (a question's ``subtask``) ``acc`` over its questions and ``acc+``
    over its images (a question's ``image_id``: every question of the image right), subtask score
    = (acc + acc+) x 100; ``perception`` and ``cognition`` sum their subtasks' scores (at most 2000
    and 800). ``score`` is the sum over the subtasks present divided by its maximum (200 each)."""
    answers = [q["answer"] for q in questions]
    _check_lengths(predictions, answers)
    right = [mme_yes_no(p) == a.lower() for p, a in zip(predictions, answers)]
    by_subtask: dict[str, dict[str, list[bool]]] = {}
    for hit, q in zip(right, questions):
        by_subtask.setdefault(q["subtask"], {}).setdefault(q["image_id"], []).append(hit)
    result: dict = {}
    totals = dict.fromkeys(MME_SUBTASKS, 0.0)
    for subtask, images in sorted(by_subtask.items()):
        acc = _mean([h for hits in images.values() for h in hits])
        acc_plus = _mean([all(hits) for hits in images.values()])
        result.update({f"{subtask}_acc": acc, f"{subtask}_acc_plus": acc_plus, f"{subtask}_score": (acc + acc_plus) * 100})
        for group, members in MME_SUBTASKS.items():
            if subtask in members:
                totals[group] += (acc + acc_plus) * 100
    total = sum(result[f"{s}_score"] for s in by_subtask)
    return {
        "score": total / (200 * len(by_subtask)) if by_subtask else 0.0,
        "perception": totals["perception"],
        "cognition": totals["cognition"],
        "accuracy": _mean(right),
        "n": len(right),
        **result,
    }


METRIC_BY_FAMILY = {"yesno": pope, "mc": multiple_choice}
# Scored from the question records (answer plus what the benchmark's definition needs).
BENCHMARK_METRICS = {"gqa": gqa, "pope": pope_by_category, "scienceqa": scienceqa, "mme": mme}


def score_family(family: str, predictions: Sequence[str], answers: Sequence[str], questions: Sequence[dict] | None = None) -> dict:
    if family in BENCHMARK_METRICS:
        if questions is None:
            raise ValueError(f"family {family!r} is scored from its question records: pass questions")
        return BENCHMARK_METRICS[family](predictions, questions)
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
