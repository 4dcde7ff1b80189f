"""The DVC pipeline end to end on the smoke profile (configs/smoke.yaml), in a copy of the repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
STAGES = (
    "data",
    "subsets",
    "teacher",
    "evaluate_teacher",
    "importance",
    "prune",
    "evaluate_pruned",
    "recover",
    "evaluate_recovered",
    "report",
)
STUDENTS = ("layer-block_influence-0.3", "width-taylor-0.3")  # recover_runs.students
PRUNED = (*STUDENTS, "hybrid-block_influence+taylor-0.3")  # every run of prune_runs
SEEDED = tuple(f"{name}-s1" for name in PRUNED)  # the same runs at prune.extra_seeds [1]


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The tracked files of the repo (no results, no lock) with the smoke params, as a git repo."""
    ws = tmp_path_factory.mktemp("study")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        if name.startswith("results/") or name == "dvc.lock" or not (REPO / name).is_file():
            continue
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, ws / name)
    _run([sys.executable, "-m", "study", "profile", "configs/smoke.yaml"], ws)  # params.yaml: the defaults + smoke's
    _run(["git", "init", "-q"], ws)
    (ws / "repro.log").write_text(_run([sys.executable, "-m", "study", "repro"], ws))
    return ws


PROGRESS = re.compile(
    r"^\[(\d+)/(\d+)\] (\S+(?: \S+)?) (\.\.\.|unchanged|done in \d+ (?:s|min)(?: \(\d+ stages? left, about \d+ (?:s|min)\))?)$"
)


@pytest.mark.slow
def test_repro_prints_a_start_and_an_end_line_per_stage(workspace):
    lines = [m for m in map(PROGRESS.match, (workspace / "repro.log").read_text().splitlines()) if m]
    total = int(lines[0][2])
    assert total == len({m[1] for m in lines}) and all(int(m[2]) == total for m in lines)
    ends = [m for m in lines if m[4] != "..."]
    assert [int(m[1]) for m in ends] == list(range(1, total + 1))  # every stage ends, in order
    assert all(m[4].startswith("done in") for m in ends)  # a fresh workspace runs every stage
    assert "stages left, about" in ends[0][4] and ends[-1][3] == "report"
    assert {"prune layer-block_influence-0.3", "evaluate_pruned width-taylor-0.3"} <= {m[3] for m in ends}


@pytest.mark.slow
def test_repro_runs_every_stage_and_writes_metrics(workspace):
    metrics = json.loads((workspace / "results/metrics/teacher.json").read_text())
    families = {"open", "yesno", "mc", "count", "text", "knowledge_image", "knowledge_text"}
    assert set(metrics["scores"]) == families
    assert all(0 <= s <= 1 for s in metrics["scores"].values())
    assert metrics["mean_score"] == pytest.approx(sum(metrics["scores"].values()) / len(families))
    assert metrics["relative_score"] == pytest.approx(1.0)
    assert metrics["paradigm"] == "none" and metrics["recovery"] == "none"
    assert metrics["efficiency"]["flops_per_sample"] > 0 and metrics["efficiency"]["llm_params"] > 0
    ablation = metrics["ablation"]["layer_skip"]
    assert len(ablation["skipped_layers"]) == 1 and len(ablation["block_cosine"]) == 4
    for name in ("00_data", "00_subsets", "01_teacher", "04_evaluate_teacher"):
        assert (workspace / "results/notebooks" / f"{name}.ipynb").is_file()
    assert sorted(p.name for p in (workspace / "results/subsets").glob("*.json")) == ["100pct.json", "10pct.json", "50pct.json"]
    assert (workspace / "results/teacher/model.safetensors").is_file()
    shown = _run(["dvc", "metrics", "show"], workspace)
    assert "teacher.json" in shown


@pytest.mark.slow
def test_repro_prunes_at_each_level_and_scores_the_pruned_models(workspace):
    teacher = json.loads((workspace / "results/metrics/teacher.json").read_text())
    for name in PRUNED:
        pruning = json.loads((workspace / "results/pruned" / name / "pruning.json").read_text())
        assert pruning["requested_ratio"] == 0.3 and 0 < pruning["achieved_ratio"] < 1
        metrics = json.loads((workspace / "results/metrics" / f"{name}.json").read_text())
        assert metrics["paradigm"] == name.split("-")[0] and metrics["level"] == 0.3
        assert metrics["achieved_level"] == pruning["achieved_ratio"]
        assert {k: metrics[k] for k in pruning["identity"]} == pruning["identity"]  # the folder's record says what it is
        assert (metrics["metric"], metrics["calibration"]) == (pruning["metric"], "multimodal")
        assert metrics["efficiency"]["llm_params"] < teacher["efficiency"]["llm_params"]
        assert (workspace / "results/notebooks" / f"02_prune-{name}.ipynb").is_file()
        # the extra seed: pruned and evaluated by the same stages (no notebook of its own)
        seeded = f"{name}-s1"
        pruning = json.loads((workspace / "results/pruned" / f"{name}-seeds" / seeded / "pruning.json").read_text())
        assert pruning["seed"] == 1 and pruning["requested_ratio"] == 0.3
        metrics = json.loads((workspace / "results/metrics" / f"{name}-seeds" / f"{seeded}.json").read_text())
        assert (metrics["run"], metrics["seed"], metrics["achieved_level"]) == (seeded, 1, pruning["achieved_ratio"])
        assert not (workspace / "results/notebooks" / f"02_prune-{seeded}.ipynb").exists()
    shown = _run(["dvc", "metrics", "show"], workspace)
    assert "width-taylor-0.3.json" in shown and "width-taylor-0.3-s1.json" in shown


RECOVERED = [(student, recipe, 0.5) for student in STUDENTS for recipe in ("sft", "sft+kd_hidden")]
RECOVERED += [("width-taylor-0.3", "sft+kd_hidden", 0.1)]  # the smoke profile's data-efficiency sweep
RESEEDED = [f"width-taylor-0.3-{recipe}-0.5-s1" for recipe in ("sft", "sft+kd_hidden")]  # recover.extra_seeds


@pytest.mark.slow
def test_repro_recovers_each_student_with_its_grid_and_scores_every_run(workspace):
    for student, recipe, fraction in RECOVERED:
        folder = workspace / "results/recovered" / student / f"{recipe}-{fraction}"
        assert (folder / "model.safetensors").is_file()
        assert json.loads((folder / "pruning.json").read_text())["requested_ratio"] == 0.3  # lineage kept
        assert json.loads((folder / "recovery.json").read_text())["recipe"]["name"] == recipe
        curve = (workspace / "results/plots/recovery" / student / f"{recipe}-{fraction}.csv").read_text().splitlines()
        assert curve[0].startswith("step,") and len(curve) > 1
        name = f"{student}-{recipe}-{fraction}"
        metrics = json.loads((workspace / "results/metrics/recovered" / student / f"{name}.json").read_text())
        assert metrics["run"] == name and metrics["recovery"] == recipe and metrics["data_fraction"] == fraction
        assert metrics["paradigm"] == student.split("-")[0] and metrics["level"] == 0.3
        assert metrics["metric"] == student.split("-")[1] and metrics["calibration"] == "multimodal"
    for student in STUDENTS:  # one kernel per student, not per run
        assert (workspace / "results/notebooks" / f"03_recover-{student}.ipynb").is_file()
        assert (workspace / "results/notebooks" / f"04_evaluate-recovered-{student}.ipynb").is_file()
    assert len(list((workspace / "results/recovered/layer-block_influence-0.3").iterdir())) == 2  # no sweep, no extra seed
    for name in RESEEDED:  # the main grid again on recovery seed 1, named and identified by it
        folder = workspace / "results/recovered/width-taylor-0.3" / name.removeprefix("width-taylor-0.3-")
        assert json.loads((folder / "recovery.json").read_text())["config"]["seed"] == 1
        metrics = json.loads((workspace / "results/metrics/recovered/width-taylor-0.3" / f"{name}.json").read_text())
        assert (metrics["run"], metrics["seed"], metrics["data_fraction"]) == (name, 1, 0.5)


@pytest.mark.slow
def test_repro_reports_every_declared_run_with_valid_figures(workspace):
    runs = pd.read_csv(workspace / "results/runs.csv")
    declared = {"teacher", *PRUNED, *SEEDED, *(f"{s}-{r}-{f}" for s, r, f in RECOVERED), *RESEEDED}
    assert set(runs["run"]) == declared
    figures = sorted((workspace / "results/figures").glob("*.png"))
    assert {p.stem for p in figures} >= {
        "retained_vs_level",
        "recovery_heatmap",
        "data_fraction",
        "pareto",
        "layer_importance",
        "kept_widths",
    }
    for png in figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()
    report = (workspace / "results/REPORT.md").read_text()
    assert all(f"({letter})" in report for letter in "abcd")
    for method in ("layer-block_influence", "width-taylor", "hybrid-block_influence+taylor"):  # scored once for both seeds
        assert sorted(torch.load(workspace / "results/importance" / f"{method}.pt", weights_only=True)["seeds"]) == [0, 1]
    for name in PRUNED:  # the committed pruning record is the folder's; the run's cost is apart, untracked
        assert json.loads((workspace / "results/pruning" / f"{name}-seeds" / f"{name}-s1.json").read_text())["seed"] == 1
        record = (workspace / "results/pruning" / f"{name}.json").read_bytes()
        assert record == (workspace / "results/pruned" / name / "pruning.json").read_bytes()
        assert json.loads((workspace / "results/timings/pruning" / f"{name}.json").read_text())["importance_seconds"] > 0
        timings = json.loads((workspace / "results/timings/evaluation" / f"{name}.json").read_text())
        assert timings["run"] == name and timings["prefill_ms"] > 0
        assert "prefill_ms" not in json.loads((workspace / "results/metrics" / f"{name}.json").read_text())["efficiency"]


def tracked_bytes(workspace: Path) -> dict[str, bytes]:
    """Every file of results/ (timings aside: they are not tracked) and dvc.lock."""
    files = [p for p in (workspace / "results").rglob("*") if p.is_file() and "timings" not in p.relative_to(workspace).parts]
    return {str(p.relative_to(workspace)): p.read_bytes() for p in [*files, workspace / "dvc.lock"]}


@pytest.mark.slow
def test_rerunning_a_prune_and_an_evaluation_stage_rewrites_the_same_bytes(workspace):
    before = tracked_bytes(workspace)
    timings = (workspace / "results/timings/evaluation/width-taylor-0.3.json").read_bytes()
    _run(["dvc", "repro", "--force", "--single-item", "prune@width-taylor-0.3", "evaluate_pruned@width-taylor-0.3"], workspace)
    after = tracked_bytes(workspace)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, changed
    assert (workspace / "results/timings/evaluation/width-taylor-0.3.json").read_bytes() != timings  # it did run again


@pytest.mark.slow
def test_second_repro_does_nothing_and_a_param_reruns_only_its_stage(workspace):
    cache = workspace / "study/evaluation/__pycache__"  # where a Python without PYTHONDONTWRITEBYTECODE writes
    cache.mkdir(exist_ok=True)
    (cache / "metrics.cpython-311.pyc").write_bytes(b"bytecode")
    out = _run(["dvc", "repro"], workspace)
    assert "Running stage" not in out, out
    params = (workspace / "params.yaml").read_text()
    assert "max_new_tokens: 16" in params
    metrics = {p: p.read_bytes() for p in (workspace / "results/metrics").rglob("*.json")}
    (workspace / "params.yaml").write_text(params.replace("max_new_tokens: 16", "max_new_tokens: 1"))
    out = _run(["dvc", "repro"], workspace)
    ran = {stage for stage in STAGES if f"Running stage '{stage}" in out}
    # the report reruns only if a metrics file changed: the metrics hold no timings any more
    changed = any(p.read_bytes() != before for p, before in metrics.items())
    expected = {"evaluate_teacher", "evaluate_pruned", "evaluate_recovered"} | ({"report"} if changed else set())
    assert ran == expected, out  # no data, training or pruning
    # a setting that cannot change any output (threads) reruns nothing: params are tracked per key
    (workspace / "params.yaml").write_text(params.replace("max_new_tokens: 16", "max_new_tokens: 1").replace("threads: 2", "threads: 1"))
    out = _run(["dvc", "repro"], workspace)
    assert "Running stage" not in out, out
