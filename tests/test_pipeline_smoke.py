"""The DVC pipeline end to end on the smoke profile (configs/smoke.yaml), in a copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "subsets", "teacher", "evaluate_teacher", "prune", "evaluate_pruned", "recover", "evaluate_recovered")
PRUNED = ("layer-block_influence-0.3", "width-taylor-0.3")


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
    shutil.copy2(REPO / "configs" / "smoke.yaml", ws / "params.yaml")
    _run(["git", "init", "-q"], ws)
    _run(["dvc", "repro"], ws)
    return ws


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
        assert metrics["efficiency"]["llm_params"] < teacher["efficiency"]["llm_params"]
        assert (workspace / "results/notebooks" / f"02_prune-{name}.ipynb").is_file()
    assert "width-taylor-0.3.json" in _run(["dvc", "metrics", "show"], workspace)


@pytest.mark.slow
def test_repro_recovers_the_pruned_models_and_scores_them(workspace):
    for student in PRUNED:
        for recipe in ("sft", "sft+kd_hidden"):
            name = f"{student}-{recipe}-0.5"
            assert (workspace / "results/recovered" / name / "model.safetensors").is_file()
            assert (workspace / "results/recovered" / name / "pruning.json").is_file()  # lineage kept
            curve = (workspace / "results/plots/recovery" / f"{name}.csv").read_text().splitlines()
            assert curve[0].startswith("step,") and len(curve) > 1
            metrics = json.loads((workspace / "results/metrics" / f"{name}.json").read_text())
            assert metrics["recovery"] == recipe and metrics["data_fraction"] == 0.5
            assert metrics["paradigm"] == student.split("-")[0] and metrics["level"] == 0.3


@pytest.mark.slow
def test_second_repro_does_nothing_and_a_param_reruns_only_its_stage(workspace):
    out = _run(["dvc", "repro"], workspace)
    assert "Running stage" not in out
    params = (workspace / "params.yaml").read_text()
    assert "max_new_tokens: 16" in params
    (workspace / "params.yaml").write_text(params.replace("max_new_tokens: 16", "max_new_tokens: 12"))
    out = _run(["dvc", "repro"], workspace)
    ran = {stage for stage in STAGES if f"Running stage '{stage}" in out}
    assert ran == {"evaluate_teacher", "evaluate_pruned", "evaluate_recovered"}, out  # no data, training or pruning
