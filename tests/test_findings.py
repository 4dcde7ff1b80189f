"""The findings as data: each check on a small hand-made runs table, its verdict and the numbers it
compared (no English here; the sentences are tested with the report in test_report.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from study.report.document import finding_text
from study.report.findings import (
    COMPARISON_COLUMNS,
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    PARTLY,
    WITHIN_NOISE,
    FindingsConfig,
    best_recipe_finding,
    calibration_finding,
    cells,
    check_extensions,
    check_findings,
    comparisons_table,
    data_fraction_finding,
    hybrid_finding,
    paradigm_finding,
    projector_finding,
    verdict_of,
)
from study.report.paired import PairedScores

METRICS = {"layer": "block_influence", "width": "taylor", "hybrid": "block_influence+taylor"}
CONFIG = FindingsConfig()


def run(paradigm, level, retained, recovery="none", fraction=1.0, seed=0, metric=None, calibration="multimodal", se=float("nan")):
    metric = metric or METRICS[paradigm]
    method = f"{paradigm}/{metric}" + (" (text)" if calibration == "text" else "")
    return {
        "run": f"{paradigm}-{metric}-{level}-{recovery}-{fraction}-{seed}",
        "paradigm": paradigm,
        "metric": metric,
        "calibration": calibration,
        "method": method,
        "level": level,
        "achieved_level": level,
        "recovery": recovery,
        "data_fraction": fraction,
        "seed": seed,
        "retained_pct": retained,
        "retained_se": se,
        "flops_per_sample": 1e6 * (1 - level),
    }


TEACHER = {**run("layer", 0.0, 100.0), "paradigm": "none", "metric": "", "calibration": "none", "method": "teacher"}


def table(*rows) -> pd.DataFrame:
    """:func:`cells` of a runs table with a teacher and ``rows``, multimodal only (as check_findings)."""
    out = cells(pd.DataFrame([TEACHER, *rows]))
    return out[out["calibration"] != "text"]


def numbers(finding) -> list[tuple]:
    """(subject method, subject recovery, subject %, rival recovery or None, gap, holds) per comparison."""
    return [
        (c.subject.method, c.subject.recovery, c.subject.retained, c.rival.recovery if c.rival else None, round(c.gap, 6), c.holds)
        for c in finding.comparisons
    ]


def test_verdict_of_the_outcomes():
    assert verdict_of([True, False], [True, False]) == HOLDS  # the second is within noise: it does not decide
    assert verdict_of([True, False], [False, False]) == WITHIN_NOISE
    assert verdict_of([]) == NOT_MEASURED
    assert verdict_of([True, True]) == HOLDS
    assert verdict_of([False]) == DOES_NOT_HOLD
    assert verdict_of([True, False]) == PARTLY


def test_width_against_layer_without_recovery_and_with_little_data():
    t = table(
        run("layer", 0.3, 80.0),
        run("width", 0.3, 70.0),
        run("width", 0.3, 72.0, metric="magnitude_l1"),  # the better widthwise metric is the one compared
        run("layer", 0.3, 85.0, "sft", 0.05),
        run("width", 0.3, 90.0, "sft", 0.05),
        run("layer", 0.3, 99.0, "sft", 1.0),  # all the data: not "little data", not compared
        run("width", 0.3, 50.0, "sft", 1.0),
    )
    f = paradigm_finding(t, CONFIG)
    assert f.key == "a" and f.claim_id == "width_over_layer"
    assert f.verdict == PARTLY
    assert numbers(f) == [
        ("width/magnitude_l1", "none", 72.0, "none", -8.0, False),
        ("width/taylor", "sft", 90.0, "sft", 5.0, True),
    ]
    assert [c.rival.method for c in f.comparisons] == ["layer/block_influence"] * 2
    assert f.missing == ()  # the little-data half is measured
    # with all the data counted as "little", the full-data pair decides too: layer 99 beats width 50
    wide = paradigm_finding(t, FindingsConfig(little_data_fraction=1.0))
    assert [c.holds for c in wide.comparisons] == [False, True, False] and wide.comparisons[-1].gap == pytest.approx(-49.0)


def test_width_against_layer_names_the_missing_counterpart():
    f = paradigm_finding(table(run("layer", 0.3, 80.0), run("width", 0.3, 85.0), run("layer", 0.3, 90.0, "sft", 0.05)), CONFIG)
    assert f.verdict == HOLDS and numbers(f) == [("width/taylor", "none", 85.0, "none", 5.0, True)]
    assert f.missing == ("width-taylor-0.3-sft-0.05",)
    assert paradigm_finding(table(run("layer", 0.3, 80.0)), CONFIG).verdict == NOT_MEASURED


def test_projector_only_against_the_best_llm_recovery_within_the_margin():
    rows = [
        run("layer", 0.15, 90.0),
        run("layer", 0.15, 94.5, "projector", 0.05),
        run("layer", 0.15, 95.0, "sft", 0.05),
        run("layer", 0.15, 93.0, "lora", 0.05),
        run("layer", 0.3, 50.0, "projector", 0.05),  # at or above 20%: contrast only
        run("layer", 0.3, 90.0, "sft", 0.05),
    ]
    f = projector_finding(table(*rows), CONFIG)
    assert f.verdict == HOLDS  # 0.5 points behind sft, within the 1-point margin
    assert numbers(f) == [("layer/block_influence", "projector", 94.5, "sft", -0.5, True)]
    assert [(c.subject.retained, c.rival.recovery, c.gap, c.holds) for c in f.contrast] == [(50.0, "sft", -40.0, False)]
    assert [(c.level, c.retained) for c in f.unrecovered] == [(0.15, 90.0)]
    strict = projector_finding(table(*rows), FindingsConfig(projector_margin_pct=0.2))
    assert strict.verdict == DOES_NOT_HOLD and strict.comparisons[0].gap == pytest.approx(-0.5)
    # a projector-only run with no rival: not measured, and the SFT run that would decide it is named
    alone = projector_finding(table(run("layer", 0.15, 90.0), run("layer", 0.15, 94.5, "projector", 0.05)), CONFIG)
    assert alone.verdict == NOT_MEASURED and alone.missing == ("layer-block_influence-0.15-sft-0.05",)
    assert not alone.no_low_level
    nothing_low = projector_finding(table(run("layer", 0.3, 80.0)), CONFIG)
    assert nothing_low.no_low_level and "layer-block_influence-0.15-projector-0.05" in nothing_low.missing


def test_best_recipe_ranks_every_recovery_of_a_student():
    rows = [
        run("layer", 0.3, 70.0),
        run("layer", 0.3, 92.0, "sft+kd_hidden", 0.05),
        run("layer", 0.3, 90.0, "sft", 0.05),
        run("layer", 0.3, 85.0, "projector", 0.05),
        run("width", 0.3, 60.0, "sft+kd_hidden", 0.05),
        run("width", 0.3, 64.0, "sft", 0.05),
        run("width", 0.45, 64.0, "sft", 0.05),  # one recovery only: no comparison
    ]
    f = best_recipe_finding(table(*rows), CONFIG)
    assert f.verdict == PARTLY
    # ahead: the gap to the runner-up; behind: the gap to the best
    assert numbers(f) == [
        ("layer/block_influence", "sft+kd_hidden", 92.0, "sft", 2.0, True),
        ("width/taylor", "sft+kd_hidden", 60.0, "sft", -4.0, False),
    ]
    assert [r.recovery for r in f.comparisons[0].ranking] == ["sft+kd_hidden", "sft", "projector"]
    assert [(c.method, c.retained) for c in f.unrecovered] == [("layer/block_influence", 70.0)]
    assert f.absent_recipes == ("lora", "sft+kd_logit", "kd_hidden")
    other = best_recipe_finding(table(*rows), FindingsConfig(best_recipe="sft"))
    assert [c.holds for c in other.comparisons] == [False, True]


def test_little_data_against_the_threshold():
    rows = [
        run("layer", 0.3, 96.0, "sft", 0.05),
        run("layer", 0.3, 95.5, "projector", 0.05),
        run("layer", 0.3, 98.0, "sft", 1.0),
        run("width", 0.3, 94.0, "sft", 0.05),
    ]
    f = data_fraction_finding(table(*rows), CONFIG)
    assert f.verdict == PARTLY
    assert numbers(f) == [("layer/block_influence", "sft", 96.0, None, 1.0, True), ("width/taylor", "sft", 94.0, None, -1.0, False)]
    assert f.comparisons[0].full_data.retained == 98.0 and f.comparisons[1].full_data is None
    assert data_fraction_finding(table(*rows), FindingsConfig(target_retained_pct=90.0)).verdict == HOLDS
    missing = data_fraction_finding(table(*rows), FindingsConfig(target_fraction=0.1))
    assert missing.verdict == NOT_MEASURED
    assert missing.missing == ("layer-block_influence-0.3-sft+kd_hidden-0.1", "width-taylor-0.3-sft+kd_hidden-0.1")


def test_calibration_compares_multimodal_with_text_and_counts_ties():
    rows = [
        run("layer", 0.3, 80.0),
        run("layer", 0.3, 70.0, calibration="text"),
        run("width", 0.3, 60.0),
        run("width", 0.3, 60.0, calibration="text"),
        run("width", 0.45, 40.0, calibration="text"),  # no multimodal counterpart
    ]
    f = calibration_finding(cells(pd.DataFrame([TEACHER, *rows])))
    assert f.verdict == PARTLY
    assert [(c.subject.retained, c.rival.retained, c.gap, c.holds) for c in f.comparisons] == [
        (80.0, 70.0, 10.0, True),
        (60.0, 60.0, 0.0, False),
    ]
    assert "(text-only more in 0, the same in 1)" in finding_text(f).summary
    # the reference study's findings leave the text calibration out: (a) sees width 60 against layer 80 only
    a = check_findings(pd.DataFrame([TEACHER, *rows]))[0]
    assert numbers(a) == [("width/taylor", "none", 60.0, "none", -20.0, False)]


def test_hybrid_against_the_better_of_layer_and_width():
    rows = [run("hybrid", 0.3, 85.0), run("layer", 0.3, 80.0), run("width", 0.3, 88.0), run("hybrid", 0.45, 70.0), run("layer", 0.45, 60.0)]
    f = hybrid_finding(table(*rows))
    assert f.verdict == PARTLY
    assert [(c.subject.level, c.rival.paradigm, c.gap, c.holds) for c in f.comparisons] == [
        (0.3, "width", -3.0, False),
        (0.45, "layer", 10.0, True),
    ]
    assert [r.paradigm for r in f.comparisons[0].ranking] == ["layer", "width"]
    assert f.comparisons[0].subject.flops_vs_teacher == pytest.approx(0.7)
    assert f.missing == ("width-taylor-0.45",)  # the widthwise rival at 45%
    empty = hybrid_finding(table(run("layer", 0.3, 80.0)))
    assert empty.verdict == NOT_MEASURED and empty.missing == ("hybrid-block_influence+taylor-0.3",)


def answered(correct: int, wrong_first: int = 0, n: int = 100) -> dict[str, pd.Series]:
    """Per-question scores on ``n`` yes/no questions: ``correct`` right, after ``wrong_first`` wrong."""
    hits = [0.0] * wrong_first + [1.0] * correct
    hits += [0.0] * (n - len(hits))
    return {"yesno": pd.Series(hits, index=[f"q{i}" for i in range(n)])}


def paired_runs(*pairs) -> PairedScores:
    """``(row of run(), per-question scores)`` pairs, with a teacher that answers every question."""
    return PairedScores({row["run"]: scores for row, scores in pairs} | {"teacher": answered(100)}, {"yesno": 1.0})


def test_a_gap_counts_when_its_paired_interval_excludes_zero():
    layer = run("layer", 0.3, 80.0)
    near, far, worse = (run("width", 0.3, r, metric=m) for r, m in ((82.0, "taylor"), (90.0, "activation"), (70.0, "magnitude_l1")))
    # width answers what layer does plus 2 (near) or 10 (far) questions; worse misses 10 of layer's
    paired = paired_runs((layer, answered(80)), (near, answered(82)), (far, answered(90)), (worse, answered(70)))
    for row, verdict, counts in ((near, WITHIN_NOISE, False), (far, HOLDS, True), (worse, DOES_NOT_HOLD, True)):
        f = paradigm_finding(table(layer, row), CONFIG, paired)
        c = f.comparisons[0]
        assert (f.verdict, c.counts, c.families, c.questions) == (verdict, counts, ("yesno",), 100), row["metric"]
        assert c.low <= c.gap <= c.high
    # 2 of 100 questions differ: a draw misses both with probability 0.98^100 = 13% > 2.5%, so the interval reaches 0
    near_gap = paradigm_finding(table(layer, near), CONFIG, paired).comparisons[0]
    assert (
        near_gap.low == 0
        and near_gap.high == pytest.approx(5, abs=1)
        and paradigm_finding(table(layer, near), CONFIG, paired).within_noise == 1
    )
    # without per-question scores a comparison is decided on its point estimate
    alone = paradigm_finding(table(layer, near), CONFIG)
    assert alone.verdict == HOLDS and not alone.comparisons[0].paired and alone.comparisons[0].counts


def test_a_partly_held_claim_and_noise_that_does_not_decide():
    rows = [run("layer", 0.3, 80.0), run("width", 0.3, 90.0), run("layer", 0.6, 60.0), run("width", 0.6, 50.0), run("layer", 0.45, 70.0)]
    rows.append(run("width", 0.45, 71.0))
    scores = [answered(80), answered(90), answered(60), answered(50), answered(70), answered(71)]
    f = paradigm_finding(table(*rows), CONFIG, paired_runs(*zip(rows, scores)))
    assert [(c.subject.level, c.holds, c.counts) for c in f.comparisons] == [(0.3, True, True), (0.45, True, False), (0.6, False, True)]
    assert f.verdict == PARTLY and f.within_noise == 1


def test_thresholds_shift_the_interval_projector_margin_and_teacher_pairing():
    # (b) projector 3 points behind SFT on 3 questions: the gap + 1-point margin is -2, its interval reaches above 0
    proj, sft = run("layer", 0.15, 94.0, "projector", 0.05), run("layer", 0.15, 97.0, "sft", 0.05)
    b = projector_finding(table(proj, sft), CONFIG, paired_runs((proj, answered(94)), (sft, answered(97))))
    c = b.comparisons[0]
    assert (b.verdict, c.margin, c.counts) == (WITHIN_NOISE, 1.0, False) and c.low < 0 < c.high
    assert c.high == pytest.approx(1.0)  # the paired interval of -3 tops at 0 (P(no differing question) = 4.8%), plus the margin
    far = run("layer", 0.15, 84.0, "projector", 0.05)
    assert projector_finding(table(far, sft), CONFIG, paired_runs((far, answered(84)), (sft, answered(97)))).verdict == DOES_NOT_HOLD
    # (d) pairs the best recovery with the teacher: AVG-% - 95 = 100 + gap to the teacher - 95
    for retained, verdict in ((97.0, WITHIN_NOISE), (99.5, HOLDS), (85.0, DOES_NOT_HOLD)):
        best = run("width", 0.3, retained, "sft", 0.05)
        n = 200  # half-point steps
        hits = answered(round(retained * 2), n=n)
        paired = PairedScores({best["run"]: hits, "teacher": answered(n, n=n)}, {"yesno": 1.0})
        d = data_fraction_finding(table(best), CONFIG, paired)
        assert d.verdict == verdict and d.comparisons[0].rival is None, retained
        assert d.comparisons[0].low <= retained - 95 <= d.comparisons[0].high


def test_every_comparison_goes_to_the_comparisons_table():
    layer, width = run("layer", 0.3, 80.0), run("width", 0.3, 90.0)
    layer["achieved_level"], width["achieved_level"] = 0.25, 0.2497
    paired = paired_runs((layer, answered(80)), (width, answered(90)))
    findings = check_findings(pd.DataFrame([TEACHER, layer, width]), CONFIG, paired)
    table_ = comparisons_table(findings)
    assert list(table_.columns) == list(COMPARISON_COLUMNS) and len(table_) == 1
    row = table_.iloc[0]
    assert (row["finding"], row["subject"], row["rival"], row["level"]) == ("a", "width/taylor none", "layer/block_influence none", 0.3)
    assert (row["subject_achieved"], row["rival_achieved"], row["gap_pct"], row["counts"], row["holds"]) == (0.2497, 0.25, 10.0, True, True)
    assert (row["subject_runs"], row["rival_runs"], row["questions"]) == (width["run"], layer["run"], 100)


def test_seeds_are_averaged_before_comparing():
    f = paradigm_finding(table(run("layer", 0.3, 80.0), run("width", 0.3, 70.0), run("width", 0.3, 100.0, seed=1)), CONFIG)
    width = f.comparisons[0].subject
    assert (width.retained, width.seeds, f.verdict) == (85.0, 2, HOLDS)
    assert width.sd == pytest.approx(math.sqrt(450))


def test_the_english_of_a_finding_is_the_documents():
    runs = pd.DataFrame([TEACHER, run("layer", 0.3, 80.0), run("width", 0.3, 70.0)])
    for f in check_findings(runs, FindingsConfig(best_recipe="sft")) + check_extensions(runs):
        text = finding_text(f)
        assert (f.claim, f.summary, f.short) == (text.claim, text.summary, text.short)
    c = check_findings(runs, FindingsConfig(best_recipe="sft"))[2]
    assert c.short == "sft recovers best" and c.summary.startswith("not measured: runs `layer-block_influence-0.3-sft-")
