"""Recovery training: what is trained, resume, LoRA merge, multi-process, and that it recovers."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from study.config.sections import DataConfig, PruneConfig
from study.config.vocabulary import Method
from study.data.synthetic import generate_dataset
from study.models.device import model_dtype, stored_dtype
from study.models.io import load_model, save_model
from study.pruning.run import prune_checkpoint
from study.recovery.train import RecoveryConfig, add_lora, load_student, merge_lora_state_dict, recover

from .conftest import tiny_world

REPO = Path(__file__).resolve().parents[1]
FAST = RecoveryConfig(lr=1e-3, batch_size=8, epochs=1.0, warmup_ratio=0.0, log_every=1, lora_r=4, lora_alpha=8, lora_dropout=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_arch):
    """Tiny data, a tiny (untrained) teacher and its layer-pruned student as HF folders."""
    root = tiny_world(tmp_path_factory.mktemp("recovery"), n_train=48, seed=2, arch=tiny_arch, n_eval_per_family=4)
    cfg = PruneConfig(model_dir=str(root / "teacher"), calibration=str(root / "data/train.json"), calibration_samples=8)
    prune_checkpoint(root / "student", Method("layer", "block_influence"), 0.25, cfg)
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
    out = tmp_path / "out"
    curve = recover(
        world / "teacher", world / "teacher", world / "data/train.json", world / "data/images", out, cfg, identity={"run": "self"}
    )
    assert all(row["kd_logit"] == pytest.approx(0.0, abs=1e-6) and row["kd_hidden"] == pytest.approx(0.0, abs=1e-6) for row in curve)
    record = json.loads((out / "recovery.json").read_text())  # one record: the run's identity, its inputs and its config
    assert (record["run"], record["teacher_dir"], record["config"]["loss"]) == ("self", str(world / "teacher"), "kd_logit+kd_hidden")


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


def test_lora_adapters_merge_into_the_gathered_state_dict_as_peft_merges_them(world):
    peft_model = add_lora(load_model(world / "student")[0], replace(FAST, lora_r=2, lora_alpha=6))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    merged = merge_lora_state_dict(peft_model.state_dict(), peft_model.peft_config["default"])
    reference = peft_model.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    assert all(torch.equal(merged[k], reference[k]) for k in reference)


def test_without_mixed_precision_the_student_trains_in_its_stored_dtype(world, tmp_path):
    student, _ = load_student(world / "student", replace(FAST, mixed_precision="no"))
    reference, _ = load_model(world / "student")
    assert model_dtype(student) == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), reference.state_dict().values(), strict=True))
    bf16, processor = load_model(world / "student", dtype="bfloat16")
    save_model(bf16, processor, tmp_path / "bf16")
    assert model_dtype(load_student(tmp_path / "bf16", replace(FAST, mixed_precision="no"))[0]) == torch.bfloat16


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one state per process, mixed precision included: start from and leave a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_mixed_precision_trains_float32_master_weights_of_a_16bit_student(world, tmp_path, fresh_accelerate_state):
    bf16, processor = load_model(world / "student", dtype="bfloat16")
    save_model(bf16, processor, tmp_path / "bf16")
    cfg = replace(FAST, mixed_precision="bf16", teacher_dtype="bfloat16", loss="sft+kd_logit", epochs=0.4, checkpoint_every=1)
    student, _ = load_student(tmp_path / "bf16", cfg)
    assert {p.dtype for p in student.parameters()} == {torch.float32}
    args = (tmp_path / "bf16", world / "teacher", world / "data/train.json", world / "data/images", tmp_path / "out")
    recover(*args, replace(cfg, stop_after=1))
    state = torch.load(tmp_path / "out.checkpoints/step-1/optimizer.bin", weights_only=True)["state"]
    assert state and {t.dtype for s in state.values() for k, t in s.items() if k != "step"} == {torch.float32}
    assert {t.dtype for t in load_file(tmp_path / "out.checkpoints/step-1/model.safetensors").values()} == {torch.float32}
    assert not (tmp_path / "out").exists()  # interrupted: only the resume point exists
    recover(*args, cfg)  # resumes and finishes: the folder is written in the dtype the student came in
    assert not (tmp_path / "out.checkpoints").exists()
    assert stored_dtype(tmp_path / "out") == torch.bfloat16
    assert {t.dtype for t in weights(tmp_path / "out").values() if t.is_floating_point()} == {torch.bfloat16}
    from transformers import AutoModelForImageTextToText

    trained = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    assert trained.dtype == torch.bfloat16
    before = weights(tmp_path / "bf16")
    assert any(not torch.equal(before[k], t) for k, t in weights(tmp_path / "out").items())


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(trainable="vision"), "trainable"),
        (dict(loss="sft+magic"), "loss"),
        (dict(kd_alpha=2), "kd_alpha"),
        (dict(mixed_precision="bfloat16"), "mixed_precision"),
        (dict(teacher_dtype="half"), "teacher_dtype"),
    ],
)
def test_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        RecoveryConfig(**cfg)


def test_kd_without_a_teacher_is_an_error(world, tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        recover(world / "student", None, world / "data/train.json", world / "data/images", tmp_path / "o", replace(FAST, loss="kd_logit"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("trainable, loss", [("projector+llm", "sft+kd_hidden"), ("lora", "sft")])
def test_two_cpu_processes_under_accelerate_launch_save_what_one_saves(world, tmp_path, trainable, loss):
    """Two processes (DDP over gloo: ``--multi_gpu`` and ``ACCELERATE_USE_CPU``; ``--cpu`` alone
    would start one) gather the full state dict and write a folder that plain ``from_pretrained``
    loads, with the weights of the single-process run up to the split of each batch's token mean."""
    (tmp_path / "cfg.yaml").write_text(
        json.dumps({"lr": 1e-3, "batch_size": 8, "warmup_ratio": 0.0, "log_every": 1, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0})
    )
    common = ["--student", str(world / "student"), "--teacher", str(world / "teacher"), "--train", str(world / "data/train.json")]
    common += ["--trainable", trainable, "--loss", loss, "--config", str(tmp_path / "cfg.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]
    two_procs = subprocess.run(
        [*launch, "-m", "study", "recover", *common, "--out", str(tmp_path / "two")],
        check=True,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert "recovery on 2 process(es), MULTI_CPU" in two_procs.stdout, two_procs.stdout + two_procs.stderr
    subprocess.run([sys.executable, "-m", "study", "recover", *common, "--out", str(tmp_path / "one")], check=True, env=env, cwd=REPO)
    one, two = pd.read_csv(tmp_path / "one/training_curve.csv"), pd.read_csv(tmp_path / "two/training_curve.csv")
    assert len(one) == len(two) > 1
    assert (abs(one["total"] - two["total"]) / one["total"]).max() < 0.05

    from transformers import AutoModelForImageTextToText

    start = AutoModelForImageTextToText.from_pretrained(world / "student").state_dict()
    a = AutoModelForImageTextToText.from_pretrained(tmp_path / "one").state_dict()
    b = AutoModelForImageTextToText.from_pretrained(tmp_path / "two").state_dict()
    assert a.keys() == b.keys() == start.keys()
    changed = [k for k in a if not torch.equal(a[k], start[k])]
    assert changed and all(not torch.equal(b[k], start[k]) for k in changed)
    # Not bitwise: each process averages CE over its own answer tokens (here one half-batch has no
    # image at all), and AdamW's first steps move every weight by about lr whatever the gradient's
    # size, so the runs part by ~10% of their update (per tensor up to ~30% on small norm vectors).
    updates = {k: float((a[k] - start[k]).norm()) for k in changed}
    gaps = {k: float((b[k] - a[k]).norm()) for k in a}
    assert all(gaps[k] < 0.5 * updates[k] for k in changed), {k: gaps[k] / updates[k] for k in changed}
    assert all(gaps[k] == 0 for k in a if k not in changed)  # frozen stays frozen
    assert sum(g**2 for g in gaps.values()) ** 0.5 < 0.2 * sum(u**2 for u in updates.values()) ** 0.5


@pytest.mark.slow
def test_recovery_raises_the_score_of_the_teacher_pruned_at_30_percent(tmp_path):
    teacher = REPO / "results/teacher"
    if not (teacher / "model.safetensors").exists():
        pytest.skip("no committed teacher in this checkout")
    from study.evaluation.benchmark import evaluate, load_benchmarks

    generate_dataset(DataConfig(n_train=1024, n_eval_per_family=40, seed=0), tmp_path / "data")
    # width-pruned at 30% the teacher loses much of what it knows (0.76 -> 0.49 on the full eval set): room to recover
    cfg = PruneConfig(model_dir=str(teacher), calibration=str(tmp_path / "data/train.json"), calibration_samples=32, match_budget="none")
    prune_checkpoint(tmp_path / "pruned", Method("width", "taylor"), 0.3, cfg)  # 30% itself (matched to 8 blocks: 25%)
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
    assert main([*args, "--ratio", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.endswith("\nerror: pruning ratio must be in [0, 1), got 1.5\n")


def test_pruning_twice_writes_identical_folders_and_keeps_the_run_cost_out_of_them(world, tmp_path):
    """DVC skips what depends on a pruned folder only if a rerun writes the same bytes."""
    cfg = PruneConfig(model_dir=str(world / "teacher"), calibration=str(world / "data/train.json"), calibration_samples=8)
    for out in ("a", "b"):  # the same run (the folder's name) written twice
        record = prune_checkpoint(tmp_path / out / "width-taylor-0.3", "width-taylor", 0.3, cfg)
        assert record["importance_seconds"] > 0 and record["peak_mem_mb"] > 0
    for name in ("pruning.json", "model.safetensors", "config.json"):
        assert (tmp_path / "a/width-taylor-0.3" / name).read_bytes() == (tmp_path / "b/width-taylor-0.3" / name).read_bytes(), name
    record = json.loads((tmp_path / "a/width-taylor-0.3/pruning.json").read_text())
    assert not {"importance_seconds", "peak_mem_mb"} & set(record)
    assert record["identity"] == {
        "run": "width-taylor-0.3",
        "paradigm": "width",
        "metric": "taylor",
        "calibration": "multimodal",
        "level": 0.3,
        "achieved_level": record["achieved_ratio"],
        "recovery": "none",
        "data_fraction": 1.0,
        "seed": 0,
    }


def test_prune_command_line_takes_the_device_dtype_and_calibration_batch_size(world, tmp_path, capsys):
    from study.__main__ import main

    args = ["prune", "--model", str(world / "teacher"), "--paradigm", "width", "--metric", "taylor", "--ratio", "0.3"]
    args += ["--calibration", str(world / "data/train.json"), "--samples", "8"]
    main([*args, "--batch-size", "4", "--device", "auto", "--dtype", "bfloat16", "--out", str(tmp_path / "bf16")])
    record = json.loads((tmp_path / "bf16/pruning.json").read_text())
    assert record["dtype"] == "bfloat16" and record["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert record["calibration"]["batch_size"] == 4
    assert re.search(r"importance in [0-9.]+ s, peak memory [1-9][0-9]* MB", capsys.readouterr().out)
    assert stored_dtype(tmp_path / "bf16") == torch.bfloat16
    assert model_dtype(load_model(tmp_path / "bf16")[0]) == torch.bfloat16
    with pytest.raises(SystemExit, match="2"):
        main([*args, "--batch-size", "0", "--out", str(tmp_path / "bad")])
    assert "argument --batch-size: must be >= 1, got 0" in capsys.readouterr().err


def test_a_folder_recovered_on_the_command_line_says_which_run_it_is(world, tmp_path):
    from study.__main__ import main
    from study.records import model_identity

    args = ["recover", "--student", str(world / "student"), "--train", str(world / "data/train.json"), "--trainable", "projector"]
    assert main([*args, "--out", str(tmp_path / "student-projector")]) == 0
    identity = model_identity(tmp_path / "student-projector")
    assert (identity["run"], identity["recovery"], identity["data_fraction"]) == ("student-projector", "projector", 1.0)
    assert (identity["paradigm"], identity["metric"], identity["level"]) == ("layer", "block_influence", 0.25)  # the student's
