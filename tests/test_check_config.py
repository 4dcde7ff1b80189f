"""``python -m study check-config``: the schema read from the pipeline, the values, the paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from study.__main__ import main
from study.config_check import check_profile, exit_code, format_report
from tests.test_real_benchmarks import write_llava_eval_root

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("configs/llava-1.5-7b.yaml", "configs/bunny-v1.0-3b.yaml")


@pytest.fixture
def fresh_clone(tmp_path):
    """The pipeline definition without any result: what a fresh clone has before ``dvc repro``."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dvc.yaml").symlink_to(REPO / "dvc.yaml")
    (root / "notebooks").symlink_to(REPO / "notebooks")
    return root


def by_status(findings, status):
    return {f.key: f.message for f in findings if f.status == status}


def error_text(findings) -> str:
    """The errors as ``key: message`` lines."""
    return "\n".join(f"{f.key}: {f.message}" for f in findings if f.status == "error")


def smoke_params() -> dict:
    return yaml.safe_load((REPO / "configs/smoke.yaml").read_text())


def check_params(params: dict, path: Path, root: Path):
    """Write ``params`` as the profile ``path`` and check it against the repository at ``root``."""
    path.write_text(yaml.safe_dump(params))
    return check_profile(path, root)


@pytest.mark.parametrize("config", ["params.yaml", "configs/smoke.yaml"])
def test_default_profiles_pass_before_any_stage_ran(config, fresh_clone):
    findings = check_profile(REPO / config, fresh_clone)
    assert exit_code(findings) == 0, format_report(config, findings)
    produced = by_status(findings, "produced")
    assert produced["prune.calibration"] == "results/data/train.json (by stage data)"
    assert produced["prune.model_dir"] == "results/teacher (by stage teacher)"
    assert produced["evaluate.eval_files"] == "results/data/eval/*.jsonl (by stage data)"
    assert produced["recover.subsets_dir"] == "results/subsets (by stage subsets)"
    assert not by_status(findings, "missing") and not by_status(findings, "warning")


def test_default_profile_passes_in_the_repository():
    assert exit_code(check_profile(REPO / "params.yaml", REPO)) == 0


@pytest.mark.parametrize("config", PROFILES)
def test_paper_profiles_are_valid_and_name_what_is_missing(config, tmp_path):
    absent = tmp_path / "absent"  # the profile's checkpoint and data, on a machine without them
    text = (REPO / config).read_text().replace(" /models/", f" {absent}/models/").replace(" /data/", f" {absent}/data/")
    (tmp_path / "profile.yaml").write_text(text)
    findings = check_profile(tmp_path / "profile.yaml", REPO)
    assert not by_status(findings, "error"), format_report(config, findings)
    assert not by_status(findings, "warning"), format_report(config, findings)
    missing = by_status(findings, "missing")
    assert {"teacher.checkpoint", "subsets.train", "prune.calibration", "evaluate.eval_files"} <= set(missing)
    assert exit_code(findings) == 2 and exit_code(findings, allow_missing=True) == 0


def test_paper_profiles_hold_the_reference_settings():
    for config in PROFILES:
        params = yaml.safe_load((REPO / config).read_text())
        assert params["prune_runs"]["levels"] == [0.15, 0.3, 0.45, 0.6]
        methods = params["prune_runs"]["methods"]
        assert methods[:2] == [  # the reference study's
            {"name": "layer-block_influence", "paradigm": "layer", "metric": "block_influence", "text_only": False},
            {"name": "width-taylor", "paradigm": "width", "metric": "taylor", "text_only": False},
        ]
        beyond = {(m["paradigm"], m["metric"], m["text_only"]) for m in methods[2:]}
        assert beyond == {("layer", "block_influence", True), ("width", "taylor", True), ("hybrid", "block_influence+taylor", False)}
        rc = params["recover"]["config"]
        assert (rc["lr"], rc["epochs"], rc["warmup_ratio"], rc["lora_r"], rc["lora_alpha"], rc["temperature"]) == (
            2e-5,
            1.0,
            0.03,
            128,
            256,
            2.0,
        )
        assert rc["mixed_precision"] == "bf16"
        assert params["recover"]["fractions"] == [0.05] and params["recover"]["data_efficiency"]["recipe"] == "sft+kd_hidden"
        assert sorted(params) == sorted(yaml.safe_load((REPO / "params.yaml").read_text()))


def fake_llava_node(tmp_path) -> dict[str, Path]:
    """A GPU node's files in miniature: a LLaVA HF folder, LLaVA-format data with its image, and
    LLaVA's evaluation folder."""
    model = tmp_path / "models/llava"
    model.mkdir(parents=True)
    config = {
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "text_config": {"model_type": "llama", "num_hidden_layers": 32},
    }
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes(b"")
    (model / "tokenizer_config.json").write_text("{}")
    (model / "processor_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    data = tmp_path / "data"
    (data / "coco/train2017").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data / "coco/train2017/1.jpg")
    sample = {
        "id": "1",
        "image": "coco/train2017/1.jpg",
        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}],
    }
    (data / "mix.json").write_text(json.dumps([sample, {"id": "2", "conversations": sample["conversations"][:1]}]))
    write_llava_eval_root(data / "eval")
    return {"model": model, "data": data}


def localised(config: str, node: dict[str, Path], out: Path) -> Path:
    text = (REPO / config).read_text()
    text = text.replace("/models/llava-1.5-7b-hf", str(node["model"])).replace(
        "/data/llava/llava_v1_5_mix665k.json", str(node["data"] / "mix.json")
    )
    text = text.replace("/data/llava", str(node["data"]))
    out.write_text(text)
    return out


def test_paper_profile_passes_on_a_node_with_its_files(tmp_path):
    node = fake_llava_node(tmp_path)
    config = localised("configs/llava-1.5-7b.yaml", node, tmp_path / "llava.yaml")
    findings = check_profile(config, REPO)
    assert exit_code(findings) == 0, format_report(config, findings)
    ok = by_status(findings, "ok")
    assert "llava, llama backbone, 32 layers" in ok["teacher.checkpoint"]
    assert "LLaVA conversation format" in ok["prune.calibration"]
    evaluated = [f.message for f in findings if f.key == "evaluate.eval_files"]
    assert [m.split(":")[0] for m in evaluated] == ["gqa", "pope", "scienceqa", "mme"]


def test_missing_benchmark_annotations_and_images_are_named(tmp_path):
    node = fake_llava_node(tmp_path)
    for path in ("eval/gqa/data/testdev_balanced_questions.json", "coco/train2017/1.jpg"):
        (node["data"] / path).unlink()
    for path in (node["data"] / "eval/pope/coco").iterdir():
        path.unlink()
    (node["data"] / "eval/pope/coco").rmdir()
    config = localised("configs/llava-1.5-7b.yaml", node, tmp_path / "llava.yaml")
    findings = check_profile(config, REPO)
    missing = [f.message for f in findings if f.status == "missing"]
    assert any("gqa (llava_gqa_testdev_balanced.jsonl) needs answers" in m for m in missing)
    assert any("pope (llava_pope_test.jsonl) needs labels" in m for m in missing)
    assert any("the image of sample '1' is not under" in m for m in missing)
    assert exit_code(findings) == 2


def test_an_unconverted_bunny_release_is_named(tmp_path):
    release = tmp_path / "Bunny-v1_0-3B"
    release.mkdir()
    (release / "config.json").write_text(
        json.dumps({"model_type": "bunny-phi", "mm_projector_type": "mlp2x_gelu", "architectures": ["BunnyPhiForCausalLM"]})
    )
    text = (REPO / "configs/bunny-v1.0-3b.yaml").read_text().replace("/models/bunny-v1.0-3b-llava", str(release))
    (tmp_path / "bunny.yaml").write_text(text)
    errors = by_status(check_profile(tmp_path / "bunny.yaml", REPO), "error")
    assert "python -m study convert-bunny" in errors["teacher.checkpoint"]


def bad_profile(tmp_path) -> Path:
    params = smoke_params()
    params["prune"]["calibraton_samples"] = 8  # misspelt: papermill would inject a variable nobody reads
    params["evaluate"]["batch_size"] = "32"
    params["extra"] = {"x": 1}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "bad.yaml"


def test_schema_errors(tmp_path, fresh_clone):
    findings = check_profile(bad_profile(tmp_path), fresh_clone)
    errors = by_status(findings, "error")
    assert "not a parameter of notebooks/02_prune.ipynb" in errors["prune.calibraton_samples"]
    assert "must be a int" in errors["evaluate.batch_size"]
    assert "unknown section" in errors["extra"]
    assert exit_code(findings) == 1


def test_value_errors(tmp_path, fresh_clone):
    params = smoke_params()
    params["prune_runs"]["levels"] = [0.3, 1.2]
    params["prune_runs"]["methods"].append(
        {"name": "width-block_influence", "paradigm": "width", "metric": "block_influence", "text_only": False}
    )
    params["recover_runs"]["students"].append("layer-angular-0.3")
    params["recover"]["fractions"] = [0.05]
    params["recover"]["recipes"].append({"name": "lora", "trainable": "lora", "loss": "sft+kd_attention"})
    params["recover"]["data_efficiency"]["students"].append("width-taylor-0.6")
    params["recover"]["config"]["lora_rank"] = 8
    params["evaluate"]["ablation_fraction"] = 1.5
    params["evaluate"]["device"] = "gpu"
    params["prune"]["dtype"] = "fp16"
    params["prune"]["calibration_batch_size"] = 0
    findings = check_params(params, tmp_path / "bad.yaml", fresh_clone)
    text = error_text(findings)
    assert "prune_runs.levels: pruning ratio must be in [0, 1), got 1.2" in text
    assert "prune_runs.methods[3]: a width metric must be one of" in text
    assert "'layer-angular-0.3' is not a run of prune_runs" in text
    assert "recover.fractions: 0.05 is not one of subsets.fractions" in text
    assert "recover.recipes: loss must join some of" in text
    assert "recover.data_efficiency.students: 'width-taylor-0.6' is not one of recover_runs.students" in text
    assert "lora_rank" in by_status(findings, "error")["recover.config"]
    assert "evaluate.ablation_fraction: must be null or in (0, 1), got 1.5" in text
    assert "evaluate.device: device must be 'auto' or a torch device" in text
    assert "prune.dtype: dtype must be one of ('auto', 'float32', 'bfloat16', 'float16'), got 'fp16'" in text
    assert "prune.calibration_batch_size: must be >= 1, got 0" in text
    assert exit_code(findings) == 1


def test_run_grid_errors(tmp_path, fresh_clone):
    params = smoke_params()
    grid = params["prune_runs"]
    params["prune"]["extra_seeds"] = [1, 0]  # 0 is prune.seed: its runs have no suffix
    grid["seeds"] = [0, 1]
    grid["methods"] += [
        {"paradigm": "layer", "metric": "angular"},  # dvc.yaml reads every key of every method
        {"name": "width-taylor-text", "paradigm": "width", "metric": "taylor", "text_only": "yes"},
        {"name": "layer-block_influence", "paradigm": "layer", "metric": "block_influence", "text_only": True},
        {"name": "hybrid-taylor+block_influence", "paradigm": "hybrid", "metric": "taylor+block_influence", "text_only": False},
        {"name": "depth-last", "paradigm": "depth", "metric": "last", "text_only": False},
        {"name": "width-taylor", "paradigm": "width", "metric": "taylor", "text_only": False},
        {"name": "width-magnitude_l1-text", "paradigm": "width", "metric": "magnitude_l1", "text_only": True},
    ]
    params["prune"]["depth_share"] = 1.5
    findings = check_params(params, tmp_path / "bad.yaml", fresh_clone)
    errors = error_text(findings)
    assert "prune.extra_seeds: must be distinct and differ from prune.seed (0, the runs without a suffix), got [1, 0]" in errors
    assert "prune_runs.seeds: unknown key" in errors
    assert "prune_runs.methods[3]: must be {name, paradigm, metric, text_only}" in errors
    assert "prune_runs.methods[4]: text_only must be true or false, got 'yes'" in errors
    assert "prune_runs.methods[5]: name must be 'layer-block_influence-text' (<paradigm>-<metric>[-text]" in errors
    assert "prune_runs.methods[6]: a hybrid metric is '<layer metric>+<width metric>'" in errors
    assert "prune_runs.methods[7]: paradigm must be one of ('layer', 'width', 'hybrid'), got 'depth'" in errors
    assert "prune_runs.methods[8]: 'width-taylor' is listed twice" in errors
    assert "prune.depth_share: must be in [0, 1]" in errors
    warnings = by_status(findings, "warning")
    assert warnings["prune_runs.methods[9]"] == "text_only has no effect: 'magnitude_l1' reads no calibration data"


def test_students_are_runs_of_the_main_seed(tmp_path, fresh_clone):
    params = smoke_params()
    params["prune"]["extra_seeds"] = [1]
    params["prune_runs"]["methods"].append({"name": "width-taylor-text", "paradigm": "width", "metric": "taylor", "text_only": True})
    params["recover_runs"]["students"] += ["width-taylor-text-0.3"]
    findings = check_params(params, tmp_path / "ok.yaml", fresh_clone)
    assert exit_code(findings) == 0, format_report("ok.yaml", findings)
    # an extra seed's model is evaluated, not recovered; a text-calibrated run must be declared
    params["recover_runs"]["students"] += ["width-taylor-0.3-s1", "layer-block_influence-text-0.3"]
    errors = [f.message for f in check_params(params, tmp_path / "bad.yaml", fresh_clone) if f.status == "error"]
    assert sorted(m.split(" is not")[0] for m in errors) == ["'layer-block_influence-text-0.3'", "'width-taylor-0.3-s1'"]


def test_paper_profiles_run_on_the_gpu_in_bfloat16():
    for config in PROFILES:
        params = yaml.safe_load((REPO / config).read_text())
        for section in ("prune", "evaluate"):
            assert (params[section]["device"], params[section]["dtype"]) == ("auto", "bfloat16")
        assert params["recover"]["config"]["teacher_dtype"] == "bfloat16"
    for config in ("params.yaml", "configs/smoke.yaml"):  # the embedded teacher is float32: results unchanged
        params = yaml.safe_load((REPO / config).read_text())
        assert all(params[s]["dtype"] == "float32" and params[s]["device"] == "auto" for s in ("prune", "evaluate"))


def test_cli_prints_the_report_and_exits_with_its_code(tmp_path, fresh_clone, capsys):
    assert main(["check-config", str(bad_profile(tmp_path)), "--root", str(fresh_clone)]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "prune.calibraton_samples" in out
    profile = tmp_path / "profile.yaml"
    profile.write_text((REPO / PROFILES[0]).read_text().replace(" /models/", f" {tmp_path}/absent/models/"))
    assert main(["check-config", str(profile), "--root", str(REPO)]) == 2
    assert "MISSING   teacher.checkpoint" in capsys.readouterr().out
    assert main(["check-config", str(profile), "--root", str(REPO), "--allow-missing"]) == 0


@pytest.mark.parametrize("name", ["fsdp-8gpu-llava", "fsdp-8gpu-bunny", "deepspeed-zero3-8gpu"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "configs/accelerate" / f"{name}.yaml"))
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    assert config.distributed_type in ("FSDP", "DEEPSPEED")
