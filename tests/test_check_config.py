"""``python -m study check-config``: the settings (over the defaults), then the paths; and
``python -m study profile``, which writes ``params.yaml`` from the defaults and a profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from study.__main__ import main
from study.config import render_params, study_values
from study.config_check import check_profile, exit_code, format_report
from tests.test_real_benchmarks import write_llava_eval_root

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("configs/llava-1.5-7b.yaml", "configs/bunny-v1.0-3b.yaml", "configs/qwen2.5-vl-7b.yaml", "configs/internvl-mini-4b.yaml")


@pytest.fixture
def fresh_clone(tmp_path):
    """The pipeline definition without any result: what a fresh clone has before ``dvc repro``
    (its dvc.yaml names the paths the stages produce)."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dvc.yaml").symlink_to(REPO / "dvc.yaml")
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


def errors_of(findings) -> dict[str, str]:
    return by_status(findings, "error")


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
        study = study_values(REPO / config)  # the profile over the defaults, as `python -m study profile` writes it
        assert study["prune_runs"].levels == [0.15, 0.3, 0.45, 0.6]
        methods = study["prune_runs"].methods
        assert methods[:2] == ["layer-block_influence", "width-taylor"]  # the reference study's
        assert set(methods[2:]) == {"layer-block_influence-text", "width-taylor-text", "hybrid-block_influence+taylor"}
        rc = study["recover"].config
        assert (rc.lr, rc.epochs, rc.warmup_ratio, rc.lora_r, rc.lora_alpha, rc.temperature) == (2e-5, 1.0, 0.03, 128, 256, 2.0)
        assert rc.mixed_precision == "bf16" and rc.batch_size * rc.grad_accum == 128
        assert study["recover"].fractions == [0.05] and study["recover"].data_efficiency.recipe == "sft+kd_hidden"
        assert study["prune"].calibration_samples == 50 and study["prune"].extra_seeds == []
        assert study["teacher"].checkpoint.startswith("/models/") and study["evaluate"].ablation_fraction is None


LLAVA_CONFIG = {
    "model_type": "llava",
    "architectures": ["LlavaForConditionalGeneration"],
    "text_config": {"model_type": "llama", "num_hidden_layers": 32},
}


def fake_llava_node(tmp_path, config: dict = LLAVA_CONFIG) -> dict[str, Path]:
    """A GPU node's files in miniature: an HF folder with ``config`` (a LLaVA one by default),
    LLaVA-format data with its image, and LLaVA's evaluation folder."""
    model = tmp_path / "models/llava"
    model.mkdir(parents=True)
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
    """The profile ``config`` (one trained on LLaVA-665K) with ``node``'s checkpoint and data."""
    text = (REPO / config).read_text()
    checkpoint = yaml.safe_load(text)["teacher"]["checkpoint"]
    text = text.replace(checkpoint, str(node["model"])).replace("/data/llava/llava_v1_5_mix665k.json", str(node["data"] / "mix.json"))
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


def test_a_qwen2_5_vl_release_passes_as_published(tmp_path):
    """Qwen/Qwen2.5-VL-7B-Instruct's config.json keeps its text settings at the top level."""
    from study.gpu_memory import PUBLISHED_CONFIGS

    node = fake_llava_node(tmp_path, PUBLISHED_CONFIGS["qwen2.5-vl-7b"])
    config = localised("configs/qwen2.5-vl-7b.yaml", node, tmp_path / "qwen.yaml")
    findings = check_profile(config, REPO)
    assert exit_code(findings) == 0, format_report(config, findings)
    assert "qwen2_5_vl, qwen2_5_vl_text backbone, 28 layers" in by_status(findings, "ok")["teacher.checkpoint"]


def test_an_internvl_release_in_its_own_format_is_named(tmp_path):
    node = fake_llava_node(tmp_path, {"model_type": "internvl_chat", "architectures": ["InternVLChatModel"], "llm_config": {}})
    config = localised("configs/internvl-mini-4b.yaml", node, tmp_path / "internvl.yaml")
    errors = by_status(check_profile(config, REPO), "error")
    assert "InternVL's remote-code release (InternVLChatModel): convert it to transformers' internvl format" in errors["teacher.checkpoint"]


def test_widthwise_methods_and_lora_need_a_known_backbone(tmp_path, monkeypatch):
    """Mini-InternVL's Phi-3 fuses q/k/v and gate/up: widthwise, hybrid and LoRA runs need its row of
    study.models.architectures, layerwise runs do not; check-config says so before a long run."""
    import study.config_check
    from study.gpu_memory import PUBLISHED_CONFIGS

    node = fake_llava_node(tmp_path, PUBLISHED_CONFIGS["internvl-mini-4b"])
    config = localised("configs/internvl-mini-4b.yaml", node, tmp_path / "internvl.yaml")
    monkeypatch.setattr(study.config_check, "SPECS", {k: v for k, v in study.config_check.SPECS.items() if k != "phi3"})
    message = by_status(check_profile(config, REPO), "error")["teacher.checkpoint"]
    assert message.startswith(f"{node['model']}: width-taylor, width-taylor-text, hybrid-block_influence+taylor, recipe lora need")
    assert "coupled weights of its 'phi3' backbone" in message
    params = yaml.safe_load(config.read_text())
    params["prune_runs"] = {"methods": ["layer-block_influence"]}
    params["recover"]["recipes"] = [{"name": "sft", "trainable": "projector+llm", "loss": "sft"}]
    params["recover"]["data_efficiency"]["recipe"] = "sft"
    params["recover_runs"] = {"students": ["layer-block_influence-0.3"]}
    params["recover"]["data_efficiency"]["students"] = ["layer-block_influence-0.3"]
    findings = check_params(params, tmp_path / "layerwise.yaml", REPO)
    assert exit_code(findings) == 0, format_report("layerwise.yaml", findings)
    assert "internvl, phi3 backbone, 32 layers" in by_status(findings, "ok")["teacher.checkpoint"]
    monkeypatch.setattr(study.config_check, "SPECS", {**study.config_check.SPECS, "phi3": None})  # once phi3 is in the table
    assert exit_code(check_profile(config, REPO)) == 0


def bad_profile(tmp_path) -> Path:
    params = smoke_params()
    params["prune"]["calibraton_samples"] = 8  # misspelt: the notebook would never read it
    params["evaluate"]["batch_size"] = "32"
    params["extra"] = {"x": 1}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "bad.yaml"


def test_schema_errors_are_all_reported_by_setting(tmp_path, fresh_clone):
    findings = check_profile(bad_profile(tmp_path), fresh_clone)
    errors = errors_of(findings)
    assert set(errors) == {"prune.calibraton_samples", "evaluate.batch_size", "extra"}
    assert errors["prune.calibraton_samples"].startswith("unknown setting; prune has [")
    assert "'calibration_samples'" in errors["prune.calibraton_samples"]  # the setting meant is listed
    assert errors["evaluate.batch_size"] == "must be an integer, got '32'"
    assert errors["extra"].startswith("unknown section; known: ['data', 'subsets', 'teacher'")
    assert exit_code(findings) == 1 and not by_status(findings, "produced")  # no path is looked at


def append(section: str, key: str, value):
    return lambda params: params[section][key].append(value)


def put(path: str, value):
    def change(params):
        *parents, key = path.split(".")
        node = params
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value

    return change


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (put("prune_runs.levels", [0.3, 1.2]), "prune_runs.levels", "pruning ratio must be in [0, 1), got 1.2"),
        (put("prune_runs.levels", [0.0, 0.3]), "prune_runs.levels", "a level of 0 prunes nothing"),
        (put("prune_runs.seeds", [0, 1]), "prune_runs.seeds", "unknown setting; prune_runs has ['levels', 'methods']"),
        (
            append("prune_runs", "methods", "width-block_influence"),
            "prune_runs.methods",
            "unknown width importance metric 'block_influence'",
        ),
        (append("prune_runs", "methods", "width-taylor-yes"), "prune_runs.methods", "'<paradigm>-<metric>-text', got 'width-taylor-yes'"),
        (append("prune_runs", "methods", "hybrid-taylor+block_influence"), "prune_runs.methods", "got 'taylor+block_influence'"),
        (
            append("prune_runs", "methods", "depth-last"),
            "prune_runs.methods",
            "unknown paradigm 'depth'; expected one of ('layer', 'width', 'hybrid')",
        ),
        (
            append("prune_runs", "methods", "width-taylor"),
            "prune_runs.methods",
            "a method is listed twice in ['layer-block_influence', 'width-taylor'",
        ),
        (
            append("prune_runs", "methods", "width-magnitude_l1-text"),
            "prune_runs.methods",
            "'width-magnitude_l1-text' calibrates on text, but 'magnitude_l1' reads no calibration data",
        ),
        (  # the former form of a method
            append("prune_runs", "methods", {"name": "width-taylor-text", "paradigm": "width", "metric": "taylor", "text_only": True}),
            "prune_runs.methods[3]",
            "must be a string, got {'metric': 'taylor', 'name': 'width-taylor-text'",
        ),
        (
            put("prune.extra_seeds", [1, 0]),
            "prune.extra_seeds",
            "must be distinct and differ from seed (0, the runs without a suffix), got [1, 0]",
        ),
        (
            put("prune.depth_share", 1.5),
            "prune.depth_share",
            "must be in [0, 1] (the share of a hybrid's budget removed as blocks), got 1.5",
        ),
        (put("prune.dtype", "fp16"), "prune.dtype", "must be one of ('auto', 'float32', 'bfloat16', 'float16'), got 'fp16'"),
        (put("prune.calibration_batch_size", 0), "prune.calibration_batch_size", "must be >= 1, got 0"),
        (put("prune.mode", "heads"), "prune.mode", "must be one of ('query_heads', 'kv_groups'), got 'heads'"),
        (put("evaluate.ablation_fraction", 1.5), "evaluate.ablation_fraction", "must be null or in (0, 1), got 1.5"),
        (put("evaluate.device", "gpu"), "evaluate.device", "must be 'auto' or a torch device such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'"),
        (put("evaluate.limit", None), None, None),  # null is a value of limit
        (put("evaluate.batch_size", None), "evaluate.batch_size", "must not be null"),
        (
            append("recover_runs", "students", "layer-angular-0.3"),
            "recover_runs.students",
            "'layer-angular-0.3' is not a run of prune_runs",
        ),
        (put("recover.fractions", [0.05]), "recover.fractions", "0.05 is not one of subsets.fractions [0.1, 0.5, 1.0]: no subset file"),
        (
            append("recover", "recipes", {"name": "lora", "trainable": "lora", "loss": "sft+kd_attention"}),
            "recover.recipes[2]",
            "loss must join some of ('sft', 'kd_logit', 'kd_hidden') with '+', got 'sft+kd_attention'",
        ),
        (
            lambda params: params["recover"]["data_efficiency"]["students"].append("width-taylor-0.6"),
            "recover.data_efficiency.students",
            "'width-taylor-0.6' is not one of recover_runs.students",
        ),
        (  # a check across two settings that each pass alone: the section is named
            put("recover.data_efficiency.recipe", "lora"),
            "recover",
            "data_efficiency.recipe 'lora' is not one of the recipes ['sft', 'sft+kd_hidden']",
        ),
        (put("recover.config.lora_rank", 8), "recover.config.lora_rank", "unknown setting; recover.config has ['batch_size'"),
        (
            put("recover.config.mixed_precision", "bfloat16"),
            "recover.config.mixed_precision",
            "must be one of ('no', 'bf16', 'fp16'), got 'bfloat16'",
        ),
        (put("recover.config.kd_alpha", 2), "recover.config.kd_alpha", "must be in [0, 1], got 2"),
        (put("teacher.architecture.patch_size", 7), "teacher.architecture.patch_size", "image_size 36 is not a multiple of patch_size 7"),
        (
            put("prune_runs.methods", ["width-taylor", "layer-foo"]),
            "prune_runs.methods",
            "'layer-foo': unknown layer importance metric 'foo'",
        ),
        (  # the message holds the separators that join several problems
            append("recover_runs", "students", "a; b: c"),
            "recover_runs.students",
            "'a; b: c' is not a run of prune_runs",
        ),
        (put("data.generate", ["llava"]), "data.generate", "must list some of ['synthetic'], got ['llava']"),
        (
            put("data.manifest", "/data/llava/llava_v1_5_mix665k.json"),
            "data.manifest",
            "must be results/data/manifest.json (the generated data's) while generate is ['synthetic']",
        ),
        (put("subsets.fractions", [0.1, 0.5, 1.5]), "subsets.fractions", "must be in (0, 1], got [0.1, 0.5, 1.5]"),
    ],
)
def test_a_bad_value_is_named_with_its_setting(change, key, message, tmp_path, fresh_clone):
    params = smoke_params()
    change(params)
    findings = check_params(params, tmp_path / "bad.yaml", fresh_clone)
    errors = errors_of(findings)
    if key is None:
        assert exit_code(findings) == 0, format_report("bad.yaml", findings)
        return
    assert list(errors) == [key], format_report("bad.yaml", findings)  # that setting, and only it
    assert message in errors[key]
    assert exit_code(findings) == 1


@pytest.mark.parametrize(
    ("profile", "key"),
    [
        ({"prune": {"level": 0.3}}, "prune.level"),
        ({"prune": {"method": "width-taylor", "out_dir": "results/pruned/x"}}, "prune.method"),
        ({"teacher": {"overwrite": True}}, "teacher.overwrite"),
        ({"evaluate": {"model_dir": "results/teacher", "metrics_out": "m.json"}}, "evaluate.model_dir"),
        ({"recover": {"student": "width-taylor-0.3"}}, "recover.student"),
        ({"recover": {"config": {"loss": "kd_hidden"}}}, "recover.config.loss"),  # inside a nested section too
        ({"recover": {"config": {"stop_after": 3}}}, "recover.config.stop_after"),
    ],
)
def test_a_per_run_setting_in_a_profile_is_an_error(profile, key, tmp_path, fresh_clone):
    findings = check_params(profile, tmp_path / "per_run.yaml", fresh_clone)
    errors = errors_of(findings)
    assert key in errors, format_report("per_run.yaml", findings)
    assert errors[key] == "set per run (by each stage or on the command line), never in a params file"
    assert exit_code(findings) == 1


def test_students_are_runs_of_the_main_seed(tmp_path, fresh_clone):
    params = smoke_params()
    params["prune"]["extra_seeds"] = [1]
    params["prune_runs"]["methods"].append("width-taylor-text")
    params["recover_runs"]["students"] += ["width-taylor-text-0.3"]
    findings = check_params(params, tmp_path / "ok.yaml", fresh_clone)
    assert exit_code(findings) == 0, format_report("ok.yaml", findings)
    # an extra seed's model is evaluated, not recovered; a text-calibrated run must be declared
    params["recover_runs"]["students"] += ["width-taylor-0.3-s1", "layer-block_influence-text-0.3"]
    findings = check_params(params, tmp_path / "bad.yaml", fresh_clone)
    errors = [f for f in findings if f.status == "error"]
    assert {f.key for f in errors} == {"recover_runs.students"}
    assert sorted(f.message.split(" is not")[0] for f in errors) == ["'layer-block_influence-text-0.3'", "'width-taylor-0.3-s1'"]


def test_paper_profiles_run_on_the_gpu_in_bfloat16():
    for config in PROFILES:
        study = study_values(REPO / config)
        for section in ("prune", "evaluate"):
            assert (study[section].device, study[section].dtype) == ("auto", "bfloat16")
        assert study["recover"].config.teacher_dtype == "bfloat16"
    # the embedded study keeps each checkpoint's stored dtype (auto): float32 for the embedded teacher
    for config in (None, REPO / "configs/smoke.yaml"):
        study = study_values(config)
        assert all((study[s].device, study[s].dtype) == ("auto", "auto") for s in ("prune", "evaluate"))
        assert study["recover"].config.teacher_dtype == "auto"


def test_the_profile_command_writes_what_the_profile_states(tmp_path, capsys):
    out = tmp_path / "params.yaml"
    main(["profile", str(REPO / "configs/smoke.yaml"), "--out", str(out)])
    assert str(out) in capsys.readouterr().out
    written = study_values(out)
    assert written == study_values(REPO / "configs/smoke.yaml")
    assert written != study_values()  # the smoke profile's values, not the defaults
    assert written["prune_runs"].levels == [0.3] and written["teacher"].architecture.hidden_size == 64
    assert "configs/smoke.yaml" in out.read_text().splitlines()[0]
    assert exit_code(check_profile(out, REPO)) == 0  # a written params file sets no per-run setting


def test_the_committed_params_file_is_the_rendered_defaults():
    """The defaults are declared once (study/config/sections.py): params.yaml is written from them."""
    assert (REPO / "params.yaml").read_text() == render_params(study_values())


def test_cli_prints_the_report_and_exits_with_its_code(tmp_path, fresh_clone, capsys):
    assert main(["check-config", str(bad_profile(tmp_path)), "--root", str(fresh_clone)]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "prune.calibraton_samples" in out
    profile = tmp_path / "profile.yaml"
    profile.write_text((REPO / PROFILES[0]).read_text().replace(" /models/", f" {tmp_path}/absent/models/"))
    assert main(["check-config", str(profile), "--root", str(REPO)]) == 2
    assert "MISSING   teacher.checkpoint" in capsys.readouterr().out
    assert main(["check-config", str(profile), "--root", str(REPO), "--allow-missing"]) == 0


@pytest.mark.parametrize(
    "name", ["fsdp-8gpu-llava", "fsdp-8gpu-bunny", "fsdp-8gpu-qwen2.5-vl", "fsdp-8gpu-internvl", "deepspeed-zero3-8gpu"]
)
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "configs/accelerate" / f"{name}.yaml"))
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    assert config.distributed_type in ("FSDP", "DEEPSPEED")


@pytest.mark.parametrize("profile", ["prune: {level: 0.3}", "recover:\n  config: {loss: kd_hidden}"])
def test_a_params_file_that_sets_a_per_run_field_is_refused_when_read(tmp_path, profile):
    from study.config import load_section, study_values

    path = tmp_path / "params.yaml"
    path.write_text(profile)
    section = profile.split(":")[0]
    with pytest.raises(ValueError, match=r"\.(level|loss): set per run"):
        load_section(section, path)
    with pytest.raises(ValueError, match=r"\.(level|loss): set per run"):
        study_values(path)
    assert load_section("prune", None, {"level": 0.3}).level == 0.3  # as an override it is the run's
