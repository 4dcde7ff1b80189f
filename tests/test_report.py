"""The report layer on hand-written results: runs.csv (AVG-% checked by hand), figures, tables,
findings, the report and explore notebooks under papermill, the end-of-study summary (also on the
committed results) and the sweep command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from PIL import Image

from study.__main__ import main
from study.config import load_section
from study.config.sections import FindingsConfig, ReportConfig
from study.config.vocabulary import Method
from study.notebooks import sweep_runs, value_slug
from study.records import IDENTITY_KEYS
from study.report.document import TIMINGS_NOTE, efficiency_summary, finding_text, report_markdown, spending_lines
from study.report.figures import FIGURES, compact, draw_figures, pareto, pareto_front, save_figures
from study.report.findings import DOES_NOT_HOLD, HOLDS, NOT_MEASURED, PARTLY, check_extensions, check_findings
from study.report.paired import read_paired_scores
from study.report.pruning_records import block_importance, budget_spending, kept_widths, read_pruning_records
from study.report.runs import (
    EFFICIENCY_COLUMNS,
    TIMING_COLUMNS,
    build_runs_csv,
    compare_runs,
    filter_runs,
    read_runs,
    read_timings,
    runs_table,
)
from study.report.summary import retained_table, study_summary, summary_from_files
from study.report.tables import recovery_tables

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (run, method, level, recovery, fraction, seed, open, yesno), the method "<paradigm>-<metric>[-text]"
# ("none": the teacher); the teacher scores open 0.5, yesno 0.8
RUNS = [
    ("teacher", "none", 0.0, "none", 1.0, 0, 0.5, 0.8),
    ("layer-block_influence-0.3", "layer-block_influence", 0.3, "none", 1.0, 0, 0.4, 0.6),  # (0.8 + 0.75) / 2 = 77.5%
    ("width-taylor-0.3", "width-taylor", 0.3, "none", 1.0, 0, 0.25, 0.8),  # (0.5 + 1.0) / 2 = 75%
    ("layer-block_influence-0.3-sft-0.05", "layer-block_influence", 0.3, "sft", 0.05, 0, 0.5, 0.76),  # (1.0 + 0.95) / 2 = 97.5%
    ("layer-block_influence-0.3-sft+kd_hidden-0.05", "layer-block_influence", 0.3, "sft+kd_hidden", 0.05, 0, 0.45, 0.8),  # 95%
    ("width-taylor-0.3-sft-0.05", "width-taylor", 0.3, "sft", 0.05, 0, 0.4, 0.72),  # (0.8 + 0.9) / 2 = 85%
    ("width-taylor-0.3-sft-0.05-seed1", "width-taylor", 0.3, "sft", 0.05, 1, 0.45, 0.72),  # (0.9 + 0.9) / 2 = 90%
    ("width-taylor-0.3-sft+kd_hidden-0.05", "width-taylor", 0.3, "sft+kd_hidden", 0.05, 0, 0.45, 0.8),  # 95%
    # a run name that says nothing of its method: the record's identity does: (0.6 + 0.5) / 2 = 55%
    ("hybrid-0.3", "hybrid-block_influence+taylor", 0.3, "none", 1.0, 0, 0.3, 0.4),
]
EXPECTED_PCT = {
    "teacher": 100.0,
    "layer-block_influence-0.3": 77.5,
    "width-taylor-0.3": 75.0,
    "layer-block_influence-0.3-sft-0.05": 97.5,
    "layer-block_influence-0.3-sft+kd_hidden-0.05": 95.0,
    "width-taylor-0.3-sft-0.05": 85.0,
    "width-taylor-0.3-sft-0.05-seed1": 90.0,
    "width-taylor-0.3-sft+kd_hidden-0.05": 95.0,
    "hybrid-0.3": 55.0,
}


def method_identity(method: str) -> dict:
    """``paradigm``, ``metric`` and ``calibration`` of a method name; ``none``: the teacher's."""
    if method == "none":
        return {"paradigm": "none", "metric": "none", "calibration": "none"}
    parsed = Method.parse(method)
    return {"paradigm": parsed.paradigm, "metric": parsed.metric, "calibration": parsed.calibration}


def metrics_json(run, method, level, recovery, fraction, seed, open_, yesno) -> dict:
    """A metrics JSON as the evaluation writes it: every identity field, scores, details, efficiency."""
    return {
        "run": run,
        "model": f"results/x/{run}",
        **method_identity(method),
        "level": level,
        "achieved_level": level * 0.9,
        "recovery": recovery,
        "data_fraction": fraction,
        "seed": seed,
        "scores": {"open": open_, "yesno": yesno},
        "mean_score": (open_ + yesno) / 2,
        "relative_score": 0.0,  # deliberately wrong: runs.csv recomputes it against the teacher
        "details": {"open": {"score": open_, "n": 100}, "yesno": {"score": yesno, "f1": 0.5, "n": 100}},
        "efficiency": {
            "llm_params": int(1000 * (1 - level)),
            "total_params": int(1200 * (1 - level)),
            "flops_per_sample": int(1e6 * (1 - level)),
        },
    }


def write_results(root: Path, runs=RUNS) -> Path:
    metrics = root / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    for spec in runs:
        (metrics / f"{spec[0]}.json").write_text(json.dumps(metrics_json(*spec)))
    layer = pruning_record(
        "layer-block_influence-0.3",
        "layer-block_influence",
        0.3,
        achieved_ratio=0.25,
        num_layers_before=4,
        removed_layers=[2],
        layer_map=[0, 1, 3],
        scores=[0.5, 0.2, 0.1, 0.3],
    )
    width = pruning_record(
        "width-taylor-0.3", "width-taylor", 0.3, widths=[{"q_heads": [0, 1], "kv_heads": [0], "channels": [0, 2, 3]}] * 2
    )
    for record in (layer, width):  # the file is named pruning.json: the run comes from the identity
        name = record["identity"]["run"]
        (root / "pruned" / name).mkdir(parents=True, exist_ok=True)
        (root / "pruned" / name / "pruning.json").write_text(json.dumps(record))
    return root


def pruning_record(run: str, method: str, level: float, seed: int = 0, samples: int = 64, **extra) -> dict:
    """A ``pruning.json`` as the prune stage writes it: its identity, then what was pruned and how."""
    parsed = Method.parse(method)
    achieved = extra.pop("achieved_ratio", level)
    identity = {
        "run": run,
        **method_identity(method),
        "level": level,
        "achieved_level": achieved,
        "recovery": "none",
        "data_fraction": 1.0,
        "seed": seed,
    }
    return {
        "identity": identity,
        "paradigm": parsed.paradigm,
        "requested_ratio": level,
        "achieved_ratio": achieved,
        "metric": parsed.metric,
        "seed": seed,
        "calibration": {"data": "train.json", "samples": samples, "text_only": parsed.text_only, "batch_size": 8},
        **extra,
    }


@pytest.fixture
def results(tmp_path) -> Path:
    return write_results(tmp_path / "results")


@pytest.fixture
def runs(results):
    build_runs_csv(results / "metrics", results / "runs.csv")
    return read_runs(results / "runs.csv")


def is_png(path: Path) -> bool:
    with path.open("rb") as handle:
        if handle.read(8) != PNG_SIGNATURE:
            return False
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


# ---------------------------------------------------------------------------------------------
# runs.csv


def test_runs_csv_has_one_row_per_run_with_avg_pct_checked_by_hand(runs):
    assert list(runs["run"])[0] == "teacher"
    assert sorted(runs["run"]) == sorted(EXPECTED_PCT)
    by_run = runs.set_index("run")
    for run, expected in EXPECTED_PCT.items():
        assert by_run.loc[run, "retained_pct"] == pytest.approx(expected), run
        assert by_run.loc[run, "relative_score"] == pytest.approx(expected / 100), run
    assert by_run.loc["width-taylor-0.3", "score_open"] == 0.25 and by_run.loc["width-taylor-0.3", "score_yesno"] == 0.8
    assert by_run.loc["width-taylor-0.3", "mean_score"] == pytest.approx(0.525)
    assert by_run.loc["layer-block_influence-0.3", "metric"] == "block_influence"
    assert by_run.loc["layer-block_influence-0.3", "method"] == "layer/block_influence"
    # the identity is read from the record, not from the run name
    assert by_run.loc["hybrid-0.3", "metric"] == "block_influence+taylor"
    assert by_run.loc["hybrid-0.3", "method"] == "hybrid/block_influence+taylor"
    assert by_run.loc["hybrid-0.3", "calibration"] == "multimodal"
    assert by_run.loc["teacher", "method"] == "teacher" and by_run.loc["teacher", "calibration"] == "none"
    assert by_run.loc["width-taylor-0.3-sft-0.05-seed1", "seed"] == 1 and by_run.loc["width-taylor-0.3-sft-0.05", "seed"] == 0
    assert by_run.loc["width-taylor-0.3", "model"] == "results/x/width-taylor-0.3"
    assert by_run.loc["layer-block_influence-0.3", "flops_per_sample"] == 700_000
    assert by_run.loc["layer-block_influence-0.3", "llm_params"] == 700 and by_run.loc["teacher", "total_params"] == 1200
    assert by_run.loc["teacher", "n_questions"] == 100
    # binomial SE of AVG-% for the teacher: 100 / 2 * sqrt(0.25 / 100 / 0.25 + 0.16 / 100 / 0.64)
    assert by_run.loc["teacher", "retained_se"] == pytest.approx(50 * (0.01 + 0.0025) ** 0.5)
    assert list(runs.columns[: len(IDENTITY_KEYS)]) == list(IDENTITY_KEYS)
    assert set(EFFICIENCY_COLUMNS) == {"llm_params", "total_params", "flops_per_sample"} <= set(runs.columns)
    assert not set(TIMING_COLUMNS) & set(runs.columns)


def test_measured_timings_stay_out_of_runs_csv_and_are_read_apart(tmp_path):
    # a metrics JSON written before the timings moved out still has them: runs.csv drops them
    record = metrics_json(*RUNS[1])
    record["efficiency"].update({"prefill_ms": 14.0, "decode_tokens_per_s": 140.0, "peak_mem_mb": 500.0, "batch": 4})
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/a.json").write_text(json.dumps(record))
    table = build_runs_csv(tmp_path / "metrics", tmp_path / "runs.csv")
    assert not set(TIMING_COLUMNS) & set(table.columns) and table.loc[0, "batch"] == 4
    # results/timings/<run>.json, not committed: one row per run, several files of a run averaged
    assert read_timings(tmp_path / "timings").empty
    (tmp_path / "timings").mkdir()
    for name, ms in (("a", 10.0), ("a-again", 20.0), ("b", 5.0)):
        run = "b" if name == "b" else "a"
        (tmp_path / f"timings/{name}.json").write_text(
            json.dumps({"run": run, "prefill_ms": ms, "decode_tokens_per_s": 1.0, "peak_mem_mb": 2.0})
        )
    timings = read_timings(tmp_path / "timings").set_index("run")
    assert timings["prefill_ms"].to_dict() == {"a": 15.0, "b": 5.0}
    (tmp_path / "timings/c.json").write_text(json.dumps({"run": "c", "prefill_ms": 1.0}))
    with pytest.raises(ValueError, match=r"c\.json .*missing \['decode_tokens_per_s', 'peak_mem_mb'\]"):
        read_timings(tmp_path / "timings")


@pytest.mark.parametrize("field", [k for k in IDENTITY_KEYS if k != "run"])
def test_a_record_lacking_an_identity_field_is_refused(tmp_path, field):
    assert {"run", "model", "metric", "calibration", "seed"} <= set(IDENTITY_KEYS)
    complete = metrics_json(*RUNS[1])
    assert runs_table([complete]).loc[0, field] == complete[field]
    partial = {k: v for k, v in complete.items() if k != field}
    with pytest.raises(ValueError, match=rf"layer-block_influence-0\.3 lacks the identity fields \['{field}'\]"):
        runs_table([partial])
    # read from a folder: the message names the file; nothing is written
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/teacher.json").write_text(json.dumps(metrics_json(*RUNS[0])))
    (tmp_path / "metrics/old.json").write_text(json.dumps(partial))
    with pytest.raises(ValueError, match=rf"^old\.json lacks the identity fields \['{field}'\]"):
        build_runs_csv(tmp_path / "metrics", tmp_path / "runs.csv")
    assert not (tmp_path / "runs.csv").exists()


def test_a_metrics_json_without_its_run_is_refused(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/old.json").write_text(json.dumps({k: v for k, v in metrics_json(*RUNS[1]).items() if k != "run"}))
    with pytest.raises(ValueError, match=r"old\.json is not a run's metrics JSON \(needs 'run' and 'scores'\)"):
        build_runs_csv(tmp_path / "metrics", tmp_path / "runs.csv")


def test_runs_table_names_a_missing_run_field():
    record = {k: v for k, v in metrics_json(*RUNS[1]).items() if k != "run"}
    with pytest.raises(ValueError, match=r"lacks the identity fields \['run'\]"):
        runs_table([record])


def test_filter_and_compare(runs):
    width = filter_runs(runs, paradigm="width", recovery=["sft"], fraction=0.05)
    assert sorted(width["run"]) == ["teacher", "width-taylor-0.3-sft-0.05", "width-taylor-0.3-sft-0.05-seed1"]
    # a fraction selects recovered runs; the runs without recovery stay as their baseline
    assert sorted(filter_runs(runs, paradigm="width", fraction=0.5)["run"]) == ["teacher", "width-taylor-0.3"]
    assert "teacher" not in set(filter_runs(runs, level=0.3, keep_teacher=False)["run"])
    table = compare_runs(runs, "teacher", "width-taylor-0.3")
    assert table.loc["open", "difference"] == pytest.approx(-0.25)
    assert table.loc["yesno", "difference"] == pytest.approx(0.0)
    assert table.loc["relative_score", "width-taylor-0.3"] == pytest.approx(0.75)
    with pytest.raises(KeyError, match="nope"):
        compare_runs(runs, "teacher", "nope")


# ---------------------------------------------------------------------------------------------
# pruning records, figures, tables


def test_pruning_records_as_tidy_tables(results):
    records = read_pruning_records(results / "pruned/*/pruning.json")
    assert [r["run"] for r in records] == ["layer-block_influence-0.3", "width-taylor-0.3"]
    blocks = block_importance(records)
    assert list(blocks["score"]) == [0.5, 0.2, 0.1, 0.3]
    assert list(blocks["removed"]) == [False, False, True, False]
    widths = kept_widths(records)
    assert len(widths) == 6
    assert widths.groupby("component")["kept"].first().to_dict() == {"channels": 3, "kv_heads": 1, "q_heads": 2}
    assert set(blocks["calibration"]) == set(widths["calibration"]) == {"multimodal"}  # from the identity
    # a record written before the identity was recorded is refused, naming the file
    old = json.loads((results / "pruned/width-taylor-0.3/pruning.json").read_text())
    del old["identity"]
    (results / "pruned/width-taylor-0.3/pruning.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"width-taylor-0\.3/pruning\.json has no 'identity'"):
        read_pruning_records(results / "pruned/*/pruning.json")


def test_how_each_paradigm_spends_its_budget_is_read_from_the_records():
    layer = dict(achieved_ratio=0.25, budget_ratio=0.25, num_layers_before=4, removed_layers=[2], layer_map=[0, 1, 3])
    # matched to the layer cut (budget 0.25); query_heads mode: 1 of 2 query heads per KV group went, 2 of 5 channels
    widths = [{"q_heads": [0, 2], "kv_heads": [0, 1], "channels": [0, 2, 3]}] * 4
    plan = {"q_heads_per_group": 1, "kv_groups": 0, "channels": 2}
    records = [
        pruning_record("layer-block_influence-0.3", "layer-block_influence", 0.3, scores=[0.5, 0.2, 0.1, 0.3], **layer),
        pruning_record("layer-block_influence-0.3-s1", "layer-block_influence", 0.3, seed=1, scores=[0.9] * 4, **layer),
        pruning_record("layer-block_influence-text-0.3", "layer-block_influence-text", 0.3, scores=[0.0] * 4, **layer),
        pruning_record(
            "width-taylor-0.3", "width-taylor", 0.3, achieved_ratio=0.249, budget_ratio=0.25, num_layers_before=4, widths=widths, plan=plan
        ),
    ]
    records = [{**r, "run": r["identity"]["run"]} for r in records]  # as read_pruning_records gives them
    table = budget_spending(records)
    assert table[["paradigm", "level", "budget", "removed_blocks"]].values.tolist() == [
        ["layer", 0.3, 0.25, (2,)],
        ["width", 0.3, 0.25, ()],
    ]
    assert table.iloc[1][["q_heads", "kv_heads", "channels"]].tolist() == [(2, 4), (2, 2), (3, 5)]
    assert spending_lines(records) == [
        "`layer/block_influence` at 30% (budget 25.0%, achieved 25.0%): removes block 2 of 4",
        "`width/taylor` at 30% (budget 25.0%, achieved 24.9%): every block keeps 2 of 4 query heads, 2 of 2 KV heads and 3 of 5 MLP channels",
        "`block_influence` of the teacher's blocks (run `layer-block_influence-0.3`; the lowest go first): 0: 0.5, 1: 0.2, 2: 0.1, 3: 0.3",
    ]  # the main seed and the multimodal calibration only


def test_every_figure_is_written_as_a_valid_png(runs, results, tmp_path):
    figures = draw_figures(runs, read_pruning_records(results / "pruned/*/pruning.json"))
    assert tuple(figures) == FIGURES
    paths = save_figures(figures, tmp_path / "figures", dpi=40)
    assert all(is_png(paths[name]) for name in FIGURES)
    # nothing to draw: every figure is a placeholder that says so, and still a PNG
    empty = save_figures(draw_figures(runs[runs["paradigm"] == "none"], []), tmp_path / "empty", dpi=40)
    assert all(is_png(p) for p in empty.values())
    texts = [t.get_text() for t in draw_figures(runs, [])["layer_importance"].axes[0].texts]
    assert any(t.startswith("no runs") for t in texts)


def test_pareto_front():
    points = pd.DataFrame({"ms": [10, 20, 5, 30, 8], "acc": [90, 95, 70, 94, 60]})
    assert list(pareto_front(points, "ms", "acc")["ms"]) == [5, 10, 20]
    assert list(pareto_front(points.rename(columns={"ms": "tps"}), "tps", "acc", minimize_x=False)["tps"]) == [30, 20]


def test_accuracy_against_flops_and_params(runs):
    # every pruned run costs 700 kFLOPs (the best of them retains 97.5%), the teacher 1 MFLOPs
    lines = efficiency_summary(runs)
    assert lines[0] == (
        "Pareto front in FLOPs per sample: `layer-block_influence-0.3-sft-0.05` (700 kFLOPs, 97.5%), `teacher` (1 MFLOPs, 100.0%)"
    )
    assert (
        lines[1]
        == "Pareto front in LLM parameters: `layer-block_influence-0.3-sft-0.05` (700 params, 97.5%), `teacher` (1 k params, 100.0%)"
    )
    assert lines[-1] == TIMINGS_NOTE and "results/timings/" in TIMINGS_NOTE and "benchmarks/" in TIMINGS_NOTE
    fig = pareto(runs)
    assert [ax.get_xlabel() for ax in fig.axes] == [
        "FLOPs per sample (lower is better), log scale",
        "LLM parameters (lower is better), log scale",
    ]
    assert fig.get_suptitle().startswith("Accuracy against compute and size")
    front = [line for line in fig.axes[0].lines if line.get_label() == "Pareto front"][0]
    assert list(front.get_xdata()) == [700_000, 1_000_000] and list(front.get_ydata()) == pytest.approx([97.5, 100.0])
    counts = runs.drop(columns=list(EFFICIENCY_COLUMNS))
    assert efficiency_summary(counts)[:2] == ["not measured: no run has `flops_per_sample`", "not measured: no run has `llm_params`"]
    assert any(t.get_text().startswith("no runs") for t in pareto(counts).axes[0].texts)
    assert (compact(3.1e6, "FLOPs"), compact(999_960), compact(53_461_440, "FLOPs")) == ("3.1 MFLOPs", "1 M", "53.5 MFLOPs")


def test_tables_in_the_paper_layout(runs):
    tables = recovery_tables(runs)
    assert list(tables) == ["none", "sft", "sft+kd_hidden"]
    none = tables["none"].splitlines()
    assert none[4].startswith("| Method | Level | Achieved | Seeds | open | yesno | Mean | AVG-% |")
    assert "| Teacher (unpruned) | 0% | 0.0% | 1 | 50.0 | 80.0 | 65.0 | 100.0 |" in none
    assert "| layer/block_influence | 30% | 27.0% | 1 | 40.0 | 60.0 | 50.0 | 77.5 |" in none
    assert "| hybrid/block_influence+taylor | 30% | 27.0% | 1 | 30.0 | 40.0 | 35.0 | 55.0 |" in none
    # two seeds of width sft: the mean (85 and 90) and their standard deviation
    assert "| width/taylor | 30% | 27.0% | 5% | 2 | 42.5 | 72.0 | 57.2 | 87.5 ± 3.5 |" in tables["sft"]


# ---------------------------------------------------------------------------------------------
# findings


def verdicts(runs) -> dict[str, str]:
    return {f.key: f.verdict for f in check_findings(runs)}


def runs_of(root: Path, specs) -> object:
    """runs.csv of hand-written metrics, read back (findings are computed from the CSV)."""
    results = write_results(root, specs)
    build_runs_csv(results / "metrics", results / "runs.csv")
    return read_runs(results / "runs.csv")


def test_findings_are_computed_from_the_csv(runs):
    findings = {f.key: f for f in check_findings(runs)}
    # (a) layer 77.5 > width 75 without recovery; with 5% data layer 97.5 > width 87.5 (sft), 95 = 95 (kd)
    assert findings["a"].verdict == DOES_NOT_HOLD
    assert "width (width/taylor) 75.0% vs layer (layer/block_influence) 77.5%" in finding_text(findings["a"]).evidence[0]
    assert "87.5% ± 3.5 (2 seeds)" in "\n".join(finding_text(findings["a"]).evidence)
    # (b) no level below 20%
    assert findings["b"].verdict == NOT_MEASURED
    assert findings["b"].summary.startswith("not measured: runs `layer-block_influence-0.15-projector-0.05`")
    assert findings["b"].summary.endswith("are not in the grid")
    # (c) sft+kd_hidden best for width (95 > 87.5), not for layer (95 < 97.5)
    assert findings["c"].verdict == PARTLY
    assert findings["c"].summary.startswith("`sft+kd_hidden` is the best recovery in 1 of 2")
    # (d) best on 5%: layer 97.5 > 95, width 95 (not above)
    assert findings["d"].verdict == PARTLY


def test_a_finding_flips_when_the_numbers_flip(tmp_path):
    base = [r for r in RUNS if r[3] == "none" and not r[1].startswith("hybrid")]
    before = verdicts(runs_of(tmp_path / "a", base))
    assert before["a"] == DOES_NOT_HOLD and before["c"] == NOT_MEASURED and before["d"] == NOT_MEASURED
    # the widthwise model now scores better than the layerwise one
    flipped = [("width-taylor-0.3", "width-taylor", 0.3, "none", 1.0, 0, 0.45, 0.8) if r[0] == "width-taylor-0.3" else r for r in base]
    assert verdicts(runs_of(tmp_path / "b", flipped))["a"] == HOLDS
    # projector-only recovery below 20%: as good as SFT (holds), then far behind it (does not hold)
    low = [
        ("layer-block_influence-0.15", "layer-block_influence", 0.15, "none", 1.0, 0, 0.5, 0.7),
        ("layer-block_influence-0.15-projector-0.05", "layer-block_influence", 0.15, "projector", 0.05, 0, 0.5, 0.8),
        ("layer-block_influence-0.15-sft-0.05", "layer-block_influence", 0.15, "sft", 0.05, 0, 0.5, 0.8),
    ]
    assert verdicts(runs_of(tmp_path / "c", base + low))["b"] == HOLDS
    low[1] = ("layer-block_influence-0.15-projector-0.05", "layer-block_influence", 0.15, "projector", 0.05, 0, 0.3, 0.8)
    assert verdicts(runs_of(tmp_path / "d", base + low))["b"] == DOES_NOT_HOLD


def test_findings_of_one_paradigm_name_the_missing_runs(runs):
    found = {f.key: f for f in check_findings(filter_runs(runs, paradigm="layer"))}
    assert found["a"].verdict == NOT_MEASURED
    assert found["a"].missing and all(name.startswith("width-") for name in found["a"].missing)


def test_report_text_states_the_numbers(runs):
    findings = check_findings(runs)
    text = report_markdown(
        runs, findings, {"retained_vs_level": "figures/retained_vs_level.png"}, recovery_tables(runs), {"none": "tables/none.md"}
    )
    assert "| (a) Widthwise pruning holds up better" in text and "| **does not hold** |" in text
    assert "**Not measured**: runs `layer-block_influence-0.15-projector-0.05`" in text
    assert "[retained_vs_level](figures/retained_vs_level.png)" in text
    assert "77.5%" in text and "| layer/block_influence | 30% |" in text


# ---------------------------------------------------------------------------------------------
# notebooks and the sweep command


def injected(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next("".join(c.source) for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))


def test_report_notebook_runs_on_a_results_folder(results, tmp_path):
    from study.notebooks import run_notebook

    # the params file gives the section's values, the overrides go over them
    (tmp_path / "params.yaml").write_text(f"report:\n  dpi: 40\n  metrics_dir: {results / 'metrics'}\n  report_md: nope/REPORT.md\n")
    overrides = {
        "pruning_files": str(results / "pruned/*/pruning.json"),
        "runs_csv": str(results / "runs.csv"),
        "figures_dir": str(results / "figures"),
        "tables_dir": str(results / "tables"),
        "report_md": str(results / "REPORT.md"),
    }
    out = run_notebook(REPO / "notebooks/05_report.ipynb", tmp_path / "params.yaml", overrides, tmp_path / "05_report.ipynb")
    assert out == tmp_path / "05_report.ipynb"
    cell = injected(out)
    assert f'params_file = "{tmp_path / "params.yaml"}"' in cell and f'"runs_csv": "{results / "runs.csv"}"' in cell
    assert len(read_runs(results / "runs.csv")) == len(RUNS)
    assert not (tmp_path / "nope").exists() and not Path("nope").exists()
    assert all(is_png(results / "figures" / f"{name}.png") for name in FIGURES)
    assert sorted(p.name for p in (results / "tables").glob("*.md")) == ["recovery-none.md", "recovery-sft+kd_hidden.md", "recovery-sft.md"]
    report = (results / "REPORT.md").read_text()
    assert "(figures/retained_vs_level.png)" in report and "(tables/recovery-sft.md)" in report
    assert "**Does not hold**: width retains more than layer in 0 of 1 comparisons without recovery" in report
    assert "**Partly holds**" in report


def test_explore_notebook_filters_and_compares(runs, results, tmp_path):
    from study.notebooks import run_notebook

    (tmp_path / "timings").mkdir()
    timing = {"run": "layer-block_influence-0.3", "prefill_ms": 12.5, "decode_tokens_per_s": 321.0, "peak_mem_mb": 456.0}
    (tmp_path / "timings/layer-block_influence-0.3.json").write_text(json.dumps(timing))
    params = tmp_path / "params.yaml"
    params.write_text(
        f"report:\n  runs_csv: {results / 'runs.csv'}\n  pruning_files: {results / 'pruned/*/pruning.json'}\n"
        f"evaluate:\n  timings_dir: {tmp_path / 'timings'}\n"
    )
    # the explore notebook names no section: the overrides are its own parameters, passed as they are
    overrides = {"params_file": str(params), "paradigm": ["layer", "width"], "figures": ["retained_vs_level", "layer_importance"]}
    out = run_notebook(REPO / "notebooks/06_explore.ipynb", params, overrides, tmp_path / "06_explore.ipynb")
    assert f'params_file = "{params}"' in injected(out) and 'paradigm = ["layer", "width"]' in injected(out)
    assert "overrides" not in injected(out)
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(
        o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", "")) for c in nb.cells for o in c.get("outputs", [])
    )
    assert "8 of 9 runs selected" in text  # the teacher, the three layerwise and four widthwise runs: not the hybrid
    assert "measured timings of 1 runs" in text and "flops_per_sample" in text and "321.0" in text  # joined by run
    assert "layer-block_influence-0.3-sft-0.05" in text  # compared with the teacher: the best selected run
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) == 3


def test_sweep_names_one_run_per_value():
    runs = sweep_runs("nb/02_prune.ipynb", {"out_dir": "/tmp/prune-{value}", "seed": 0}, "ratio", [0.15, 0.3], "out")
    assert [(p["ratio"], p["out_dir"], str(path)) for p, path in runs] == [
        (0.15, "/tmp/prune-0.15", "out/02_prune-ratio-0.15.ipynb"),
        (0.3, "/tmp/prune-0.3", "out/02_prune-ratio-0.3.ipynb"),
    ]
    assert value_slug([1, 2]) == "1_2" and value_slug("results/x y") == "results_x_y"
    with pytest.raises(ValueError, match="same notebook name"):
        sweep_runs("a.ipynb", {}, "x", ["a/b", "a b"])


def tiny_stage_notebook(path: Path) -> Path:
    """A stage notebook of the subsets section: it prints the settings it built."""
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                'section = "subsets"\nparams_file = "params.yaml"\noverrides = {}', metadata={"tags": ["parameters"]}
            ),
            nbformat.v4.new_code_cell(
                "from study.config import load_section\n"
                "cfg = load_section(section, params_file, overrides)\n"
                "print(cfg.seed, cfg.out_dir, cfg.fractions)"
            ),
        ],
        metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    )
    nbformat.write(notebook, path)
    return path


def test_sweep_command_runs_the_notebook_once_per_value(tmp_path):
    notebook = tiny_stage_notebook(tmp_path / "tiny.ipynb")
    (tmp_path / "p.yaml").write_text("subsets:\n  fractions: [0.5, 1.0]\n  seed: 7\n")
    args = ["sweep", str(notebook), "-p", "seed", "1", "2", "--params", str(tmp_path / "p.yaml")]
    assert main([*args, "--set", "out_dir", "sub-{value}", "--out-dir", str(tmp_path / "out")]) == 0
    outputs = sorted((tmp_path / "out").glob("*.ipynb"))
    assert [p.name for p in outputs] == ["tiny-seed-1.ipynb", "tiny-seed-2.ipynb"]
    for value, path in zip((1, 2), outputs):
        assert f'"seed": {value}' in injected(path) and f'"out_dir": "sub-{value}"' in injected(path)
        printed = nbformat.read(path, as_version=4).cells[-1].outputs[0]["text"]
        assert printed.strip() == f"{value} sub-{value} [0.5, 1.0]"  # the swept value, the --set one, the file's


def test_sweep_refuses_a_bad_value_before_any_run(tmp_path, capsys, monkeypatch):
    import papermill

    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel was started")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    notebook = tiny_stage_notebook(tmp_path / "tiny.ipynb")
    (tmp_path / "p.yaml").write_text("subsets: {}\n")
    out = ["--params", str(tmp_path / "p.yaml"), "--out-dir", str(tmp_path / "out")]
    # the second value is wrong: the first run does not start either
    assert main(["sweep", str(notebook), "-p", "seed", "1", "two", *out]) == 2
    assert capsys.readouterr().err == "error: subsets.seed must be an integer, got 'two'\n"
    assert main(["sweep", str(notebook), "-p", "seed", "1", "--set", "sed", "3", *out]) == 2
    assert capsys.readouterr().err.startswith("error: subsets: unknown setting(s) ['sed']; known: ")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_:  # the section is the notebook's: there is no --section
        main(["sweep", str(notebook), "-p", "seed", "1", "--section", "subsets", *out])
    assert exit_.value.code == 2 and "unrecognized arguments: --section" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# beyond the reference study: calibration data, seeds, hybrid cuts

# (run, method, level, recovery, fraction, seed, open, yesno); the teacher scores open 0.5, yesno 0.8
BEYOND = [
    ("teacher", "none", 0.0, "none", 1.0, 0, 0.5, 0.8),
    ("layer-block_influence-0.3", "layer-block_influence", 0.3, "none", 1.0, 0, 0.4, 0.6),  # (0.8 + 0.75) / 2 = 77.5%
    ("layer-block_influence-0.3-s1", "layer-block_influence", 0.3, "none", 1.0, 1, 0.45, 0.6),  # 82.5%: mean 80
    ("layer-block_influence-text-0.3", "layer-block_influence-text", 0.3, "none", 1.0, 0, 0.3, 0.6),  # 67.5%
    ("width-taylor-0.3", "width-taylor", 0.3, "none", 1.0, 0, 0.25, 0.8),  # (0.5 + 1.0) / 2 = 75%
    ("width-taylor-text-0.3", "width-taylor-text", 0.3, "none", 1.0, 0, 0.3, 0.8),  # (0.6 + 1.0) / 2 = 80%
    ("width-magnitude_l1-0.3", "width-magnitude_l1", 0.3, "none", 1.0, 0, 0.1, 0.4),  # no calibration data: 35%
    ("hybrid-block_influence+taylor-0.3", "hybrid-block_influence+taylor", 0.3, "none", 1.0, 0, 0.45, 0.72),  # 90%
    # a recovered run: its identity carries its student's calibration
    ("layer-block_influence-text-0.3-sft-0.05", "layer-block_influence-text", 0.3, "sft", 0.05, 0, 0.5, 0.8),
    ("width-taylor-text-0.45", "width-taylor-text", 0.45, "none", 1.0, 0, 0.2, 0.8),  # no pruning record
]


def beyond_results(root: Path, runs=BEYOND) -> Path:
    """Hand-written metrics and the prune stage's committed records (``pruning/<run>.json``)."""
    metrics = root / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    for spec in runs:
        (metrics / f"{spec[0]}.json").write_text(json.dumps(metrics_json(*spec)))
    layer = {"num_layers_before": 4, "removed_layers": [2], "layer_map": [0, 1, 3], "scores": [0.5, 0.2, 0.1, 0.3]}
    widths = [{"q_heads": [0, 1], "kv_heads": [0], "channels": [0, 2, 3]}] * 3
    records = {  # the extra seed's record sits in <run>-seeds/, as the prune stage writes it
        "layer-block_influence-0.3.json": pruning_record("layer-block_influence-0.3", "layer-block_influence", 0.3, **layer),
        "layer-block_influence-0.3-seeds/layer-block_influence-0.3-s1.json": pruning_record(
            "layer-block_influence-0.3-s1", "layer-block_influence", 0.3, seed=1, **layer
        ),
        "layer-block_influence-text-0.3.json": pruning_record("layer-block_influence-text-0.3", "layer-block_influence-text", 0.3, **layer),
        "width-taylor-0.3.json": pruning_record("width-taylor-0.3", "width-taylor", 0.3, widths=widths + widths[:1]),
        "width-taylor-text-0.3.json": pruning_record("width-taylor-text-0.3", "width-taylor-text", 0.3, widths=widths + widths[:1]),
        "width-magnitude_l1-0.3.json": pruning_record(
            "width-magnitude_l1-0.3", "width-magnitude_l1", 0.3, samples=0, widths=widths + widths[:1]
        ),
        "hybrid-block_influence+taylor-0.3.json": pruning_record(
            "hybrid-block_influence+taylor-0.3",
            "hybrid-block_influence+taylor",
            0.3,
            layer_metric="block_influence",
            widths=widths,
            **layer,
        ),
    }
    for path, record in records.items():
        if any(spec[0] == record["identity"]["run"] for spec in runs):
            (root / "pruning" / path).parent.mkdir(parents=True, exist_ok=True)
            (root / "pruning" / path).write_text(json.dumps(record))
    return root


def beyond_runs(root: Path, runs=BEYOND):
    results = beyond_results(root, runs)
    build_runs_csv(results / "metrics", results / "runs.csv")
    return read_runs(results / "runs.csv")


def test_runs_csv_says_how_each_run_was_calibrated(tmp_path):
    runs = beyond_runs(tmp_path / "results").set_index("run")
    assert runs["calibration"].to_dict() == {
        "teacher": "none",
        "layer-block_influence-0.3": "multimodal",
        "layer-block_influence-0.3-s1": "multimodal",
        "layer-block_influence-text-0.3": "text",
        "width-taylor-0.3": "multimodal",
        "width-taylor-text-0.3": "text",
        "width-magnitude_l1-0.3": "none",  # its metric reads no calibration data
        "hybrid-block_influence+taylor-0.3": "multimodal",
        "layer-block_influence-text-0.3-sft-0.05": "text",  # its student's, carried in its identity
        "width-taylor-text-0.45": "text",  # from its metrics JSON: no pruning record is read
    }
    assert runs.loc["layer-block_influence-text-0.3", "method"] == "layer/block_influence (text)"
    assert runs.loc["layer-block_influence-text-0.3", "metric"] == "block_influence"
    assert runs.loc["hybrid-block_influence+taylor-0.3", "method"] == "hybrid/block_influence+taylor"
    assert runs.loc["hybrid-block_influence+taylor-0.3", "paradigm"] == "hybrid"
    assert runs.loc["layer-block_influence-0.3-s1", "seed"] == 1
    assert sorted(filter_runs(runs.reset_index(), calibration="text", keep_teacher=False)["run"]) == [
        "layer-block_influence-text-0.3",
        "layer-block_influence-text-0.3-sft-0.05",
        "width-taylor-text-0.3",
        "width-taylor-text-0.45",
    ]
    # the calibration is the record's, not the name's: a record that says otherwise is believed
    (tmp_path / "other").mkdir()
    record = {**metrics_json(*BEYOND[3]), "calibration": "multimodal"}  # named -text
    (tmp_path / "other/a.json").write_text(json.dumps(record))
    assert build_runs_csv(tmp_path / "other", tmp_path / "other.csv").loc[0, "method"] == "layer/block_influence"


def test_text_calibration_and_hybrid_cuts_are_methods_of_their_own_in_tables_and_figures(tmp_path):
    results = beyond_results(tmp_path / "results")
    runs = beyond_runs(tmp_path / "results")
    none = recovery_tables(runs)["none"]
    assert "| layer/block_influence | 30% | 27.0% | 2 | 42.5 | 60.0 | 51.2 | 80.0 ± 3.5 |" in none  # two seeds
    assert "| layer/block_influence (text) | 30% | 27.0% | 1 | 30.0 | 60.0 | 45.0 | 67.5 |" in none
    assert "| hybrid/block_influence+taylor | 30% | 27.0% | 1 | 45.0 | 72.0 | 58.5 | 90.0 |" in none
    records = read_pruning_records(results / "pruning/**/*.json")
    assert sorted(r["run"] for r in records if r["run"].startswith("layer-block_influence-0.3")) == [
        "layer-block_influence-0.3",
        "layer-block_influence-0.3-s1",  # found in its -seeds/ folder, named by its identity
    ]
    widths = kept_widths(records)
    hybrid = widths[widths["run"] == "hybrid-block_influence+taylor-0.3"]
    assert sorted(set(hybrid["layer"])) == [0, 1, 3]  # the parent's blocks: block 2 was cut
    assert set(widths["label"]) >= {"width/taylor 30%", "width/taylor text 30%", "hybrid/block_influence+taylor 30%"}
    blocks = block_importance(records)
    assert set(blocks[blocks["run"].str.startswith("hybrid")]["layer_metric"]) == {"block_influence"}
    paths = save_figures(draw_figures(runs, records), tmp_path / "figures", dpi=40)
    assert all(is_png(p) for p in paths.values())


def extension_findings(runs) -> dict:
    return {f.key: f for f in check_extensions(runs)}


def test_calibration_and_hybrid_findings_read_the_numbers_from_the_csv(tmp_path):
    runs = beyond_runs(tmp_path / "results")
    found = extension_findings(runs)
    # (e) layer: multimodal 80.0 (two seeds) vs text 67.5; width: multimodal 75 vs text 80
    assert found["e"].verdict == PARTLY
    assert found["e"].summary.startswith(
        "multimodal calibration retains more in 1 of 2 comparisons without recovery (text-only more in 1, the same in 0)"
    )
    evidence = "\n".join(finding_text(found["e"]).evidence)
    # these hand-made runs have no predictions files: nothing to pair, so each gap decides on its point estimate
    assert (
        "within noise" not in found["e"].summary and evidence.count("[no per-question scores to pair: decided on the point estimate]") == 2
    )
    assert (
        "layer/block_influence at 30% (achieved 27% / 27%): multimodal 80.0% ± 3.5 (2 seeds) vs text-only 67.5% "
        "→ multimodal ahead by 12.5 points" in evidence
    )
    assert "width/taylor at 30% (achieved 27% / 27%): multimodal 75.0% vs text-only 80.0% → text-only ahead by 5.0 points" in evidence
    # (f) hybrid 90 vs layer 80 (mean of two seeds) and width 75 (the better widthwise metric), at their achieved levels
    assert found["f"].verdict == HOLDS
    assert found["f"].summary.startswith("the hybrid cut retains more than the better of layerwise and widthwise in 1 of 1")
    line = finding_text(found["f"]).evidence[0]
    assert line.startswith("no recovery, level 30%: hybrid/block_influence+taylor 90.0% (achieved 27%, 0.70x the teacher's FLOPs)")
    assert "layer/block_influence 80.0% ± 3.5 (2 seeds) (achieved 27%" in line and "width/taylor 75.0%" in line
    assert "→ hybrid ahead by 10.0 points" in line
    # without a teacher to compare with, the FLOPs per sample themselves
    without_teacher = finding_text(extension_findings(runs[runs["paradigm"] != "none"])["f"]).evidence[0]
    assert "hybrid/block_influence+taylor 90.0% (achieved 27%, 700 kFLOPs)" in without_teacher
    # the reference study's findings use the multimodal calibration only: (a) compares 80 (layer) with 75 (width)
    a = {f.key: f for f in check_findings(runs)}["a"]
    assert "width (width/taylor) 75.0% vs layer (layer/block_influence) 80.0% ± 3.5 (2 seeds)" in finding_text(a).evidence[0]


def test_the_extensions_flip_with_the_numbers_and_name_what_is_missing(tmp_path):
    flipped = [
        ("hybrid-block_influence+taylor-0.3", "hybrid-block_influence+taylor", 0.3, "none", 1.0, 0, 0.2, 0.72)
        if r[0].startswith("hybrid")
        else r
        for r in BEYOND
        if "text" not in r[0]
    ]
    found = extension_findings(beyond_runs(tmp_path / "a", flipped))
    assert found["f"].verdict == DOES_NOT_HOLD and "→ layer ahead by 15.0 points" in finding_text(found["f"]).evidence[0]  # 65% vs 80%
    # no text-only calibration in the grid: the runs that would pair the calibrated ones (magnitude reads no data)
    assert found["e"].verdict == NOT_MEASURED
    assert found["e"].summary == (
        "not measured: runs `hybrid-block_influence+taylor-text-0.3`, `layer-block_influence-text-0.3`, `width-taylor-text-0.3` "
        "are not in the grid"
    )
    plain = [r for r in BEYOND if not r[0].startswith("hybrid") and "text" not in r[0]]
    found = extension_findings(beyond_runs(tmp_path / "b", plain))
    assert found["f"].verdict == NOT_MEASURED
    assert found["f"].summary == "not measured: run `hybrid-block_influence+taylor-0.3` is not in the grid"
    only_hybrid = [r for r in BEYOND if r[0] in ("teacher", "hybrid-block_influence+taylor-0.3", "width-taylor-0.3")]
    f = extension_findings(beyond_runs(tmp_path / "c", only_hybrid))["f"]
    assert f.verdict == HOLDS and f.missing == ("layer-block_influence-0.3",)


def test_report_states_the_extensions_with_their_numbers(tmp_path):
    runs = beyond_runs(tmp_path / "results")
    text = report_markdown(runs, check_findings(runs), {}, recovery_tables(runs), {}, extensions=check_extensions(runs))
    assert "## Beyond the reference study: calibration data and hybrid cuts" in text
    assert (
        "| (e) Calibrating importance on multimodal data prunes better than calibrating on text alone (no recovery). | **partly holds** |"
        in text
    )
    assert "**Holds**: the hybrid cut retains more than the better of layerwise and widthwise in 1 of 1 comparisons" in text
    assert "multimodal 80.0% ± 3.5 (2 seeds) vs text-only 67.5%" in text
    assert "pruned, no recovery: layer/block_influence at 30% (2 calibration seeds)" in text
    empty = report_markdown(runs.iloc[:1], [], {}, {}, {}, extensions=check_extensions(runs.iloc[:1]))
    assert "**Not measured**: runs `layer-block_influence-0.3`, `layer-block_influence-text-0.3`, `width-taylor-0.3`" in empty
    assert "**Not measured**: run `hybrid-block_influence+taylor-0.3` is not in the grid" in empty


# ---------------------------------------------------------------------------------------------
# the summary at the end of the study


def test_summary_of_a_hand_made_table(runs):
    findings = check_findings(runs) + check_extensions(runs)
    text = study_summary(runs, findings, "out/REPORT.md", ["out/figures/pareto.png"])
    assert text == (
        "Teacher: run teacher, mean score 0.650 over 2 benchmark families\n"
        "\n"
        "Retained % (AVG-%, mean over up to 2 seeds; multimodal calibration):\n"
        "  method                         level  no recovery  best recovery  recipe, data\n"
        "  hybrid/block_influence+taylor    30%        55.0%              -  -\n"
        "  layer/block_influence            30%        77.5%          97.5%  sft, 5%\n"
        "  width/taylor                     30%        75.0%          95.0%  sft+kd_hidden, 5%\n"  # 95 beats sft's mean 87.5
        "\n"
        "Findings:\n"
        "  (a) width beats layer without recovery and with little data: does not hold\n"
        "  (b) projector-only recovery suffices below 20% compression: not measured\n"
        "  (c) sft+kd_hidden recovers best: partly holds\n"
        "  (d) 5% of the data retains > 95%: partly holds\n"
        "  (e) multimodal calibration beats text-only: not measured\n"
        "  (f) hybrid beats depth or width alone at the same budget: does not hold\n"
        "\n"
        "Report: out/REPORT.md\n"
        "Figures:\n"
        "  out/figures/pareto.png\n"
    )


def test_summary_from_files_names_what_is_missing(results, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"runs table not found: .*nope\.csv"):
        summary_from_files(ReportConfig(runs_csv=str(results / "nope.csv"), report_md="r.md", figures_dir="f"))
    build_runs_csv(results / "metrics", results / "runs.csv")
    # the thresholds come from the params file's report section
    params = tmp_path / "p.yaml"
    params.write_text(f"report:\n  runs_csv: {results / 'runs.csv'}\n  report_md: r.md\n  figures_dir: f\n  best_recipe: sft\n")
    report = load_section("report", params)
    assert isinstance(report, FindingsConfig) and report.best_recipe == "sft"
    text = summary_from_files(report)
    assert "  (c) sft recovers best: partly holds\n" in text
    assert "Report: r.md\n" in text and "  f/pareto.png\n" in text
    # ... or from overrides, and by default the reference study's
    text = summary_from_files(load_section("report", params, {"best_recipe": "sft+kd_hidden"}))
    assert "  (c) sft+kd_hidden recovers best: partly holds\n" in text
    assert summary_from_files(ReportConfig(runs_csv=str(results / "runs.csv"), report_md="r.md", figures_dir="f")) == text
    # a bad setting is refused, named
    with pytest.raises(ValueError, match=r"report: unknown setting\(s\) \['best_recipie'\]"):
        load_section("report", params, {"best_recipie": "sft"})
    with pytest.raises(ValueError, match=r"report\.target_retained_pct must be a number, got 'high'"):
        load_section("report", params, {"target_retained_pct": "high"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.best_recipe = "sft+kd_hidden"


def test_summary_leaves_text_calibration_out_and_averages_seeds(tmp_path):
    table = retained_table(beyond_runs(tmp_path / "results")).set_index("method")
    assert list(table.index) == ["hybrid/block_influence+taylor", "layer/block_influence", "width/magnitude_l1", "width/taylor"]
    assert table.loc["layer/block_influence", "zero_shot"] == pytest.approx(80.0)  # two seeds, not the text-only 67.5
    assert table["best_recovered"].isna().all()  # the one recovered run has a text-calibrated student


def test_summary_of_the_committed_results_states_runs_csv():
    params = load_section("report", REPO / "params.yaml")
    runs_csv = REPO / params.runs_csv
    params = dataclasses.replace(
        params, runs_csv=str(runs_csv), metrics_dir=str(REPO / params.metrics_dir), predictions_dir=str(REPO / params.predictions_dir)
    )
    text = summary_from_files(params)
    raw = pd.read_csv(runs_csv, keep_default_na=False, na_values=[""])
    teacher = raw[raw["paradigm"] == "none"]
    assert f"Teacher: run {', '.join(sorted(teacher['run']))}, mean score {teacher['mean_score'].mean():.3f}" in text
    # one zero-shot cell and its best recovery, recomputed with pandas
    layer = raw[(raw["method"] == "layer/block_influence") & (raw["level"].round(6) == 0.3)]
    zero = layer[layer["recovery"] == "none"]["retained_pct"].mean()
    best = layer[layer["recovery"] != "none"].groupby(["recovery", "data_fraction"])["retained_pct"].mean()
    (recipe, fraction), value = best.idxmax(), best.max()
    row = next(line for line in text.splitlines() if line.split()[:2] == ["layer/block_influence", "30%"])
    assert row.split() == ["layer/block_influence", "30%", f"{zero:.1f}%", f"{value:.1f}%", f"{recipe},", f"{100 * fraction:g}%"]
    paired = read_paired_scores(params.metrics_dir, params.predictions_dir)
    config_findings = check_findings(read_runs(runs_csv), params, paired) + check_extensions(read_runs(runs_csv), params, paired)
    assert any(c.paired for f in config_findings for c in f.comparisons)  # the committed predictions give intervals
    assert [f.key for f in config_findings] == ["a", "b", "c", "d", "e", "f"]
    for finding in config_findings:
        assert f"  ({finding.key}) {finding.short}: {finding.verdict}\n" in text
    assert f"Report: {params.report_md}\n" in text
    for name in FIGURES:
        assert f"  {params.figures_dir}/{name}.png\n" in text and (REPO / params.figures_dir / f"{name}.png").is_file()
    assert max(len(line) for line in text.splitlines()) <= 100
