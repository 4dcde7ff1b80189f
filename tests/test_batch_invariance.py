"""Batch size never changes an answer: greedy evaluation with left padding gives the same answers
one question at a time as at the study's batch size (batched evaluation of LLaVA has been seen
to differ: lmms-eval #236, LLaVA #1928)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from study.config.sections import DataConfig, PruneConfig
from study.config.vocabulary import Method
from study.data.synthetic import generate_dataset
from study.evaluation.benchmark import evaluate, load_benchmarks
from study.models.io import load_model
from study.pruning.run import prune_checkpoint

REPO = Path(__file__).resolve().parents[1]
METHODS = {"layer": "block_influence", "width": "taylor", "hybrid": "block_influence+taylor"}


@pytest.mark.slow
def test_answers_at_batch_1_equal_those_at_the_study_batch_size(tmp_path):
    teacher = REPO / "results/teacher"
    if not (teacher / "model.safetensors").exists():
        pytest.skip("no committed teacher in this checkout")
    batch_size = yaml.safe_load((REPO / "params.yaml").read_text())["evaluate"]["batch_size"]
    per_family = batch_size + batch_size // 2  # a full batch and a part of one
    generate_dataset(DataConfig(n_train=64, n_eval_per_family=per_family, seed=0), tmp_path / "data")
    benchmarks = load_benchmarks(sorted((tmp_path / "data/eval").glob("*.jsonl")))
    folders = {"teacher": teacher}
    for paradigm, metric in METHODS.items():
        prune_checkpoint(
            tmp_path / paradigm,
            Method(paradigm, metric),
            0.3,
            PruneConfig(model_dir=str(teacher), calibration=str(tmp_path / "data/train.json"), calibration_samples=16),
        )
        folders[paradigm] = tmp_path / paradigm
    for name, folder in folders.items():
        model, processor = load_model(folder, dtype="float32")
        batched = evaluate(model, processor, benchmarks, tmp_path / "data/images", batch_size=batch_size, progress=False)
        single = evaluate(model, processor, benchmarks, tmp_path / "data/images", batch_size=1, progress=False)
        differ = [
            (a["question_id"], a["prediction"], b["prediction"]) for a, b in zip(single["predictions"], batched["predictions"]) if a != b
        ]
        assert not differ, f"{name}: {len(differ)} answers change with the batch size, e.g. {differ[:3]}"
        assert len(batched["predictions"]) == len(benchmarks) * per_family
