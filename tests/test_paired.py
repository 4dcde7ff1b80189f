"""Paired bootstrap gaps between runs on the same questions, on hand-checked cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from study.report.paired import PairedScores, paired_gap, question_scores, read_paired_scores, read_predictions, seed_mean


def scores(hits: list[int], family: str = "open") -> dict[str, pd.Series]:
    return {family: pd.Series(np.array(hits, dtype=float), index=[f"q{i}" for i in range(len(hits))])}


def test_two_runs_that_differ_on_one_of_four_questions():
    gap = paired_gap(scores([1, 1, 1, 0]), scores([1, 0, 1, 0]), {"open": 1.0})
    assert gap.gap == pytest.approx(25.0)
    # a draw of 4 questions misses the one that differs with probability (3/4)^4 = 0.32 > 2.5%
    assert gap.low == 0 and gap.high == pytest.approx(75.0) and not gap.counts
    assert (gap.families, gap.questions) == (("open",), 4)


def test_a_gap_on_20_of_100_questions_counts_and_its_interval_is_the_binomial_one():
    a, b = scores([1] * 20 + [0] * 80), scores([0] * 100)
    gap = paired_gap(a, b, {"open": 1.0})
    half = 1.96 * (0.2 * 0.8 / 100) ** 0.5 * 100  # 7.8 points
    assert gap.gap == pytest.approx(20.0) and gap.counts
    assert gap.low == pytest.approx(20 - half, abs=1.5) and gap.high == pytest.approx(20 + half, abs=1.5)
    assert paired_gap(b, a, {"open": 1.0}).gap == pytest.approx(-20.0)


def test_pairing_sees_that_two_runs_swap_answers_without_a_gap():
    a = scores([1, 0] + [1] * 98)
    b = scores([0, 1] + [1] * 98)
    gap = paired_gap(a, b, {"open": 1.0})
    assert gap.gap == 0 and gap.low < 0 < gap.high and not gap.counts


def test_families_are_weighed_by_the_teacher_and_averaged():
    a = {**scores([1, 1], "open"), **scores([1, 0], "count")}
    b = {**scores([0, 1], "open"), **scores([0, 0], "count")}
    gap = paired_gap(a, b, {"open": 0.5, "count": 1.0, "text": 1.0})
    # open: per-question diffs [1, 0] / 0.5 -> mean 1.0; count: [1, 0] / 1 -> mean 0.5
    assert gap.gap == pytest.approx(100 * (1.0 + 0.5) / 2)
    assert gap.families == ("count", "open")  # text: no per-question scores on either side
    with pytest.raises(ValueError, match="no family"):
        paired_gap(a, b, {"text": 1.0})


def test_the_draws_are_fixed_so_a_rerun_gives_the_same_interval():
    a, b = scores([1, 0, 1, 1, 0, 1]), scores([0, 0, 1, 0, 0, 1])
    assert paired_gap(a, b, {"open": 1.0}) == paired_gap(a, b, {"open": 1.0})


def test_question_scores_from_a_predictions_file(tmp_path):
    rows = [
        {"question_id": "y1", "category": "yesno", "prediction": "Yes", "answer": "yes"},
        {"question_id": "y2", "category": "yesno", "prediction": "No, there is not.", "answer": "yes"},
        {"question_id": "m1", "category": "mc", "prediction": "B", "answer": "B"},
        {"question_id": "m2", "category": "mc", "prediction": "A red circle", "answer": "A"},
        {"question_id": "o1", "category": "open", "prediction": "The red one.", "answer": "red one"},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_question = question_scores(read_predictions(tmp_path / "p.jsonl"))
    assert {f: s.to_dict() for f, s in per_question.items()} == {
        "mc": {"m1": 1.0, "m2": 0.0},  # "A red circle" is not option A
        "open": {"o1": 1.0},
        "yesno": {"y1": 1.0, "y2": 0.0},
    }
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question_id": "x", "text": "?"}) + "\n")
    with pytest.raises(ValueError, match="lack"):
        read_predictions(tmp_path / "bad.jsonl")


def test_seeds_are_averaged_question_by_question_before_pairing():
    mean = seed_mean([scores([1, 0, 1]), scores([1, 1, 0])])
    assert mean["open"].tolist() == [1.0, 0.5, 0.5]
    paired = PairedScores({"s1": scores([1, 0, 1]), "s2": scores([1, 1, 0]), "one": scores([0, 0, 0])}, {"open": 1.0})
    gap = paired.gap(("s1", "s2"), ("one",))
    assert gap == paired_gap(mean, scores([0, 0, 0]), {"open": 1.0}) and gap.gap == pytest.approx(100 * 2 / 3)
    assert paired.gap(("s1", "missing"), ("one",)) is None  # a run without per-question scores: nothing to pair
    assert PairedScores(paired.runs, {"count": 1.0}).gap(("s1",), ("one",)) is None  # no family with a teacher score


def test_the_report_reads_each_runs_predictions_beside_its_metrics(tmp_path):
    def write(rel: str, run: str, paradigm: str, hits: list[int]) -> None:
        metrics = {"run": run, "paradigm": paradigm, "recovery": "none", "scores": {"yesno": sum(hits) / len(hits)}}
        (tmp_path / "metrics" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "metrics" / f"{rel}.json").write_text(json.dumps(metrics))
        rows = [
            {"question_id": f"q{i}", "category": "yesno", "prediction": "yes" if h else "no", "answer": "yes"} for i, h in enumerate(hits)
        ]
        (tmp_path / "predictions" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "predictions" / f"{rel}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("teacher", "teacher", "none", [1, 1, 1, 0])
    write("recovered/w/sft-0.05-s1", "w-sft-0.05-s1", "width", [1, 0, 1, 0])
    (tmp_path / "metrics/lone.json").write_text(json.dumps({"run": "lone", "paradigm": "layer", "scores": {"yesno": 0.5}}))
    paired = read_paired_scores(tmp_path / "metrics", tmp_path / "predictions")
    assert sorted(paired.runs) == ["teacher", "w-sft-0.05-s1"] and paired.teacher == {"yesno": 0.75}
    assert paired.runs["w-sft-0.05-s1"]["yesno"].tolist() == [1.0, 0.0, 1.0, 0.0]
    # AVG-% of the run is 100 + its paired gap to the teacher: (0.5 - 0.75) / 0.75
    assert paired.gap(("w-sft-0.05-s1",), ("teacher",)).gap == pytest.approx(-100 / 3)


def test_on_the_committed_runs_the_paired_gap_is_the_difference_of_their_avg_pct():
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    a, b = "width-taylor-0.3", "layer-block_influence-0.3"
    if not (results / f"predictions/{a}.jsonl").is_file():
        pytest.skip("no committed predictions in this checkout")
    teacher = json.loads((results / "metrics/teacher.json").read_text())["scores"]
    relative = {r: json.loads((results / f"metrics/{r}.json").read_text())["relative_score"] for r in (a, b)}
    per_question = {r: question_scores(read_predictions(results / f"predictions/{r}.jsonl")) for r in (a, b)}
    gap = paired_gap(per_question[a], per_question[b], teacher)
    assert gap.families == tuple(sorted(teacher))  # every family of the embedded study is a mean of its questions
    assert gap.gap == pytest.approx(100 * (relative[a] - relative[b]), abs=1e-9)
    assert gap.low < gap.gap < gap.high
