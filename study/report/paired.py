"""Paired comparisons of two runs that answered the same questions: the gap in AVG-% with a
bootstrap interval.

Every run of the study answers the same questions, so the gap between two runs is estimated from
their per-question scores side by side, not from two separate standard errors: questions are
resampled with replacement within each family, jointly for both runs (the same draw for each), the
gap in AVG-% (mean over families of score / teacher's score) is recomputed on every draw, and the
2.5th and 97.5th percentiles of the draws bound a 95% interval. A gap *counts* when its interval
excludes zero. Where a setting has several seeds, each question's score is first averaged over
the seeds of each side.

A family takes part when its score is the mean of its questions' scores (exact match, multiple
choice, yes/no accuracy, GQA, ScienceQA): :func:`question_scores` scores each question alone and
checks that their mean gives the family's score back. A family whose score is not such a mean
(POPE's F1 over categories, MME's acc+) has no per-question scores and is left out of the gap,
which then says which families it covers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from study.evaluation.metrics import score_family
from study.report.runs import read_records, teacher_scores

CONFIDENCE = 0.95
DRAWS = 2000
SEED = 0  # the bootstrap's draws: fixed, so a rerun of the report writes the same numbers


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A run's predictions JSONL (``question_id``, ``category`` = family, ``prediction``, ``answer``)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    missing = [k for k in ("question_id", "category", "prediction", "answer") if rows and k not in rows[0]]
    if missing:
        raise ValueError(f"{path} is not a predictions file: its rows lack {missing}")
    return pd.DataFrame(rows, columns=["question_id", "category", "prediction", "answer"])


def question_scores(predictions: pd.DataFrame) -> dict[str, pd.Series]:
    """Per family, each question's score alone (indexed by ``question_id``), for the families whose
    score is the mean of those (checked against scoring the family whole)."""
    out = {}
    for family, rows in predictions.groupby("category", sort=True):
        preds, answers = rows["prediction"].tolist(), rows["answer"].tolist()
        try:
            whole = score_family(family, preds, answers)["score"]
        except ValueError:  # scored from question records the predictions do not carry
            continue
        single = np.array([score_family(family, [p], [a])["score"] for p, a in zip(preds, answers)], dtype=float)
        if np.isclose(single.mean(), whole):
            out[family] = pd.Series(single, index=rows["question_id"].astype(str).to_numpy())
    return out


def seed_mean(scores: Sequence[dict[str, pd.Series]]) -> dict[str, pd.Series]:
    """The per-question scores of several seeds of one setting, averaged question by question
    (families and questions that all of them answered)."""
    families = set.intersection(*(set(s) for s in scores)) if scores else set()
    return {f: pd.concat([s[f] for s in scores], axis=1, join="inner").mean(axis=1) for f in sorted(families)}


@dataclass(frozen=True)
class Gap:
    """``a`` minus ``b`` in AVG-% points, with its paired bootstrap interval."""

    gap: float
    low: float
    high: float
    families: tuple[str, ...]  # the families the gap covers
    questions: int  # questions both sides answered, over those families

    @property
    def counts(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0


def paired_gap(
    a: dict[str, pd.Series],
    b: dict[str, pd.Series],
    teacher: dict[str, float],
    draws: int = DRAWS,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Gap:
    """The gap in AVG-% between runs with per-question scores ``a`` and ``b`` (of
    :func:`question_scores` or :func:`seed_mean`), relative to the ``teacher``'s family scores."""
    families = [f for f in sorted(set(a) & set(b)) if teacher.get(f)]
    if not families:
        raise ValueError(f"no family with per-question scores on both sides and a non-zero teacher score: {sorted(a)} / {sorted(b)}")
    rng = np.random.default_rng(seed)
    point, draws_sum, n = 0.0, np.zeros(draws), 0
    for family in families:
        joined = pd.concat([a[family], b[family]], axis=1, join="inner")
        if joined.empty:
            raise ValueError(f"family {family!r}: the two runs answered no question in common")
        diff = (joined.iloc[:, 0] - joined.iloc[:, 1]).to_numpy() / teacher[family]
        point += diff.mean()
        draws_sum += diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(axis=1)
        n += len(diff)
    scale = 100 / len(families)  # mean over families, in points
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws_sum * scale, [tail, 100 - tail])
    return Gap(point * scale, float(low), float(high), tuple(families), n)


@dataclass(frozen=True)
class PairedScores:
    """What the findings pair: every run's per-question scores (by run name) and the teacher's
    family scores, which AVG-% divides by."""

    runs: dict[str, dict[str, pd.Series]]
    teacher: dict[str, float]

    def gap(self, a: Sequence[str], b: Sequence[str]) -> Gap | None:
        """The paired gap between the seed means of runs ``a`` and of runs ``b``; None when one of
        them has no per-question scores or the two share no family with a teacher score."""
        if not a or not b or any(r not in self.runs for r in (*a, *b)):
            return None
        sides = [seed_mean([self.runs[r] for r in names]) for names in (a, b)]
        if not any(self.teacher.get(f) for f in set(sides[0]) & set(sides[1])):
            return None
        return paired_gap(*sides, self.teacher)


def read_paired_scores(metrics_dir: str | Path, predictions_dir: str | Path) -> PairedScores:
    """The per-question scores of every run with a metrics JSON under ``metrics_dir`` whose
    predictions file lies at the same relative path under ``predictions_dir`` (``.jsonl``); a run
    without one is left out (its comparisons then have no interval)."""
    records = read_records(metrics_dir)
    runs = {}
    for record in records:
        path = Path(predictions_dir) / Path(record["source"]).with_suffix(".jsonl")
        if path.is_file():
            runs[record["run"]] = question_scores(read_predictions(path))
    return PairedScores(runs, teacher_scores(records))
