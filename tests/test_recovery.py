"""Recovery training: what is trained, resume, LoRA merge, multi-process, and that it recovers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from study.data.llava import read_samples
from study.data.synthetic import DataConfig, generate_dataset
from study.models.io import load_model, save_model
from study.models.teacher import build_processor, build_teacher
from study.pruning.run import prune_checkpoint
from study.recovery.train import RecoveryConfig, add_lora, recover

REPO = Path(__file__).resolve().parents[1]
FAST = RecoveryConfig(lr=1e-3, batch_size=8, epochs=1.0, warmup_ratio=0.0, log_every=1, lora_r=4, lora_alpha=8, lora_dropout=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_arch):
    """Tiny data, a tiny (untrained) teacher and its layer-pruned student as HF folders."""
    root = tmp_path_factory.mktemp("recovery")
    generate_dataset(DataConfig(n_train=48, n_eval_per_family=4, seed=2), root / "data")
    samples = read_samples(root / "data/train.json")
    processor = build_processor((t["value"] for s in samples for t in s["conversations"]), tiny_arch)
    save_model(build_teacher(tiny_arch, processor, seed=0), processor, root / "teacher")
    prune_checkpoint(root / "teacher", root / "student", "layer", 0.25, "block_influence", root / "data/train.json", calibration_samples=8)
    return root


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_projector_only_changes_only_projector_weights(world, tmp_path):
    recover(
        world / "student", None, world / "data/train.json", world / "data/images", tmp_path / "out", replace(FAST, trainable="projector")
    )
    before, after = weights(world / "student"), weights(tmp_path / "out")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)


def test_distilling_into_an_identical_student_has_zero_kd_loss(world, tmp_path):
    cfg = replace(FAST, loss="kd_logit+kd_hidden", epochs=0.2, lr=0.0)
    curve = recover(world / "teacher", world / "teacher", world / "data/train.json", world / "data/images", tmp_path / "out", cfg)
    assert all(row["kd_logit"] == pytest.approx(0.0, abs=1e-6) and row["kd_hidden"] == pytest.approx(0.0, abs=1e-6) for row in curve)


def test_resume_after_interrupt_gives_the_same_weights(world, tmp_path):
    cfg = replace(FAST, checkpoint_every=2, loss="sft+kd_logit")
    args = (world / "student", world / "teacher", world / "data/train.json", world / "data/images")
    recover(*args, tmp_path / "straight", cfg)
    recover(*args, tmp_path / "resumed", replace(cfg, stop_after=4))
    assert not (tmp_path / "resumed/model.safetensors").exists()  # interrupted: nothing final written
    recover(*args, tmp_path / "resumed", cfg)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lora_merge_gives_the_logits_of_the_unmerged_model(world, tmp_path):
    model, _ = load_model(world / "student")
    peft_model = add_lora(model, replace(FAST, lora_r=2, lora_alpha=4))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # adapters start as a no-op: make them matter
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        unmerged = peft_model(input_ids=ids).logits
        merged = peft_model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(unmerged, load_model(world / "student")[0](input_ids=ids).logits)
    recover(
        world / "student",
        None,
        world / "data/train.json",
        world / "data/images",
        tmp_path / "lora",
        replace(FAST, trainable="lora", epochs=0.4),
    )
    assert not any("lora" in k for k in weights(tmp_path / "lora"))  # a plain HF folder


@pytest.mark.parametrize(
    "cfg, match", [(dict(trainable="vision"), "trainable"), (dict(loss="sft+magic"), "loss"), (dict(kd_alpha=2), "kd_alpha")]
)
def test_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        RecoveryConfig(**cfg)


def test_kd_without_a_teacher_is_an_error(world, tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        recover(world / "student", None, world / "data/train.json", world / "data/images", tmp_path / "o", replace(FAST, loss="kd_logit"))


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate_launch_match_one(world, tmp_path):
    (tmp_path / "cfg.yaml").write_text(json.dumps({"lr": 1e-3, "batch_size": 8, "warmup_ratio": 0.0, "log_every": 1}))
    common = [
        "--student",
        str(world / "student"),
        "--teacher",
        str(world / "teacher"),
        "--train",
        str(world / "data/train.json"),
        "--loss",
        "sft+kd_hidden",
        "--config",
        str(tmp_path / "cfg.yaml"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--cpu",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    subprocess.run([*launch, "-m", "study", "recover", *common, "--out", str(tmp_path / "two")], check=True, env=env, cwd=REPO)
    subprocess.run([sys.executable, "-m", "study", "recover", *common, "--out", str(tmp_path / "one")], check=True, env=env, cwd=REPO)
    one, two = pd.read_csv(tmp_path / "one/training_curve.csv"), pd.read_csv(tmp_path / "two/training_curve.csv")
    assert len(one) == len(two) > 1
    assert (abs(one["total"] - two["total"]) / one["total"]).max() < 0.05


@pytest.mark.slow
def test_recovery_raises_the_score_of_the_teacher_pruned_at_30_percent(tmp_path):
    teacher = REPO / "results/teacher"
    if not (teacher / "model.safetensors").exists():
        pytest.skip("no committed teacher in this checkout")
    from study.evaluation.benchmark import evaluate, load_benchmarks

    generate_dataset(DataConfig(n_train=1024, n_eval_per_family=40, seed=0), tmp_path / "data")
    # width-pruned at 30% the teacher loses most of what it knows (0.57 -> 0.27 on the full eval set): room to recover
    prune_checkpoint(teacher, tmp_path / "pruned", "width", 0.3, "taylor", tmp_path / "data/train.json", calibration_samples=32)
    benchmarks = load_benchmarks(sorted((tmp_path / "data/eval").glob("*.jsonl")))

    def score(folder: Path) -> float:
        model, processor = load_model(folder)
        return evaluate(model, processor, benchmarks, tmp_path / "data/images", progress=False)["mean_score"]

    cfg = RecoveryConfig(trainable="projector+llm", loss="sft", lr=5e-4, batch_size=32, epochs=1.0, warmup_ratio=0.03)
    recover(tmp_path / "pruned", None, tmp_path / "data/train.json", tmp_path / "data/images", tmp_path / "recovered", cfg)
    before, after = score(tmp_path / "pruned"), score(tmp_path / "recovered")
    assert after > before + 0.02, (before, after)
    shutil.rmtree(tmp_path / "data")


def test_prune_command_line_writes_a_loadable_folder(world, tmp_path, capsys):
    from study.__main__ import main

    out = tmp_path / "pruned"
    args = [
        "prune",
        "--model",
        str(world / "teacher"),
        "--paradigm",
        "width",
        "--metric",
        "taylor",
        "--calibration",
        str(world / "data/train.json"),
    ]
    main([*args, "--ratio", "0.3", "--samples", "8", "--out", str(out)])
    assert "achieved" in capsys.readouterr().out
    record = json.loads((out / "pruning.json").read_text())
    assert record["requested_ratio"] == 0.3 and record["parent"] == str(world / "teacher")
    assert type(load_model(out)[0]).__name__ == "LlavaForConditionalGeneration"
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\), got 1.5"):
        main([*args, "--ratio", "1.5", "--out", str(tmp_path / "bad")])
