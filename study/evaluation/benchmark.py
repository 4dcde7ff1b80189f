"""Scoring a model on a set of JSONL question files, and the metrics record of a run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from study.evaluation.generate import generate_answers, read_questions
from study.evaluation.metrics import relative_score, score_family

IDENTITY_KEYS = ("run", "model", "paradigm", "level", "achieved_level", "recovery", "data_fraction", "seed")


def load_benchmarks(paths: Sequence[str | Path], limit: int | None = None) -> dict[str, list[dict]]:
    """Questions grouped by family: a question's ``category``, else its file's stem."""
    families: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        for q in read_questions(path):
            families[q.get("category") or Path(path).stem].append(q)
    if limit is not None:
        families = {f: qs[:limit] for f, qs in families.items()}
    return dict(families)


def evaluate(
    model,
    processor,
    benchmarks: dict[str, list[dict]],
    image_folder: str | Path,
    batch_size: int = 64,
    max_new_tokens: int = 16,
    progress: bool = True,
) -> dict:
    """``{"scores": {family: score}, "mean_score", "details": {family: metrics}, "predictions": [...]}``."""
    scores, details, predictions = {}, {}, []
    for family, questions in benchmarks.items():
        answers = generate_answers(model, processor, questions, image_folder, batch_size, max_new_tokens, progress)
        details[family] = score_family(family, answers, [q["answer"] for q in questions])
        scores[family] = details[family]["score"]
        predictions += [
            {"question_id": q["question_id"], "category": family, "prediction": a, "answer": q["answer"]}
            for q, a in zip(questions, answers)
        ]
    return {"scores": scores, "mean_score": sum(scores.values()) / len(scores), "details": details, "predictions": predictions}


def metrics_record(identity: dict, result: dict, efficiency: dict, reference_scores: dict[str, float] | None = None, **extra) -> dict:
    """One run's metrics JSON as ``DESIGN.md`` fixes it; ``reference_scores`` are the teacher's
    (``None`` for the teacher itself, whose relative score is 1)."""
    missing = [k for k in IDENTITY_KEYS if k not in identity]
    if missing:
        raise ValueError(f"run identity lacks {missing}")
    record = {k: identity[k] for k in IDENTITY_KEYS}
    record.update(
        scores=result["scores"],
        mean_score=result["mean_score"],
        relative_score=relative_score(result["scores"], reference_scores or result["scores"]),
        details=result["details"],
        efficiency=efficiency,
        **extra,
    )
    return record
