"""Scoring a model on a set of JSONL question files, and the metrics record of a run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from study.evaluation.generate import generate_answers, read_questions
from study.evaluation.llava_formats import benchmark_of, llava_question_files, read_benchmark
from study.evaluation.metrics import relative_score, score_family
from study.records import IDENTITY_KEYS


def load_benchmarks(paths: Sequence[str | Path], limit: int | None = None) -> dict[str, list[dict]]:
    """Questions grouped by family: a question's ``family`` (set by the readers of LLaVA's
    benchmark files), else its ``category``, else its file's stem. A path is a JSONL question
    file, one of LLaVA's benchmark files (GQA, POPE, ScienceQA, MME; recognised by name, read
    with their answers by :mod:`study.evaluation.llava_formats`), or a folder laid out as LLaVA's
    evaluation root (every benchmark file found in it). ``limit``: the first questions per family."""
    families: dict[str, list[dict]] = defaultdict(list)
    for path in expand_benchmark_paths(paths):
        questions = read_benchmark(path) if benchmark_of(path) else read_questions(path)
        for q in questions:
            families[q.get("family") or q.get("category") or Path(path).stem].append(q)
    if not families:
        raise ValueError(f"no questions in {[str(p) for p in paths]}")
    if limit is not None:
        families = {f: qs[:limit] for f, qs in families.items()}
    return dict(families)


def expand_benchmark_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Question files of ``paths``, a folder standing for LLaVA's benchmark files in it."""
    return [f for p in map(Path, paths) for f in (llava_question_files(p) if p.is_dir() else [p])]


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
        details[family] = score_family(family, answers, [q["answer"] for q in questions], questions)
        scores[family] = details[family]["score"]
        predictions += [
            {"question_id": q["question_id"], "category": family, "prediction": a, "answer": q["answer"]}
            for q, a in zip(questions, answers)
        ]
    return {"scores": scores, "mean_score": sum(scores.values()) / len(scores), "details": details, "predictions": predictions}


def metrics_record(identity: dict, result: dict, efficiency: dict, reference_scores: dict[str, float] | None = None, **extra) -> dict:
    """One run's metrics JSON (the contract in ``README.md``); ``reference_scores`` are the teacher's
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
