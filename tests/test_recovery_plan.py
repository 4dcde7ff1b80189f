"""The recovery grid of a student: which runs, their names, and bad declarations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.config.build import build
from study.config.sections import DataEfficiency, ExtraSeeds, Recipe
from study.records import RECOVERY_FILE, read_record
from study.recovery.plan import planned_runs, record_fields

RECIPES = [Recipe("projector", "projector", "sft"), Recipe("sft+kd_hidden", "projector+llm", "sft+kd_hidden")]
REPO = Path(__file__).resolve().parents[1]
SWEEP = DataEfficiency("sft+kd_hidden", [0.01, 0.05, 0.5], ["width-taylor-0.3"])


def test_every_recipe_at_every_main_fraction_then_the_sweep_without_repeats():
    runs = planned_runs("width-taylor-0.3", RECIPES, [0.05], SWEEP)
    assert [r.name for r in runs] == [
        "width-taylor-0.3-projector-0.05",
        "width-taylor-0.3-sft+kd_hidden-0.05",
        "width-taylor-0.3-sft+kd_hidden-0.01",
        "width-taylor-0.3-sft+kd_hidden-0.5",
    ]
    assert runs[2].folder == "sft+kd_hidden-0.01" and runs[2].recipe.loss == "sft+kd_hidden"


def test_students_outside_the_sweep_get_the_main_grid_only():
    assert len(planned_runs("layer-block_influence-0.3", RECIPES, [0.05, 0.1], SWEEP)) == 4


def test_students_with_extra_seeds_get_the_main_grid_again_per_seed_last():
    seeds = ExtraSeeds([1, 2], ["width-taylor-0.3"])
    runs = planned_runs("width-taylor-0.3", RECIPES, [0.05], SWEEP, seeds)
    assert [r.name for r in runs[4:]] == [
        "width-taylor-0.3-projector-0.05-s1",
        "width-taylor-0.3-sft+kd_hidden-0.05-s1",
        "width-taylor-0.3-projector-0.05-s2",
        "width-taylor-0.3-sft+kd_hidden-0.05-s2",
    ]
    assert runs[4].folder == "projector-0.05-s1" and runs[4].seed == 1 and len(runs) == 8
    assert planned_runs("layer-block_influence-0.3", RECIPES, [0.05], None, seeds) == planned_runs(
        "layer-block_influence-0.3", RECIPES, [0.05]
    )


RECIPE_DICTS = [{"name": r.name, "trainable": r.trainable, "loss": r.loss} for r in RECIPES]
SWEEP_DICT = {"recipe": "sft+kd_hidden", "fractions": [0.01, 0.05, 0.5], "students": ["width-taylor-0.3"]}


@pytest.mark.parametrize(
    ("recover", "message"),
    [
        ({"recipes": [{"name": "x", "trainable": "everything", "loss": "sft"}]}, "recover.recipes\\[0\\].trainable must be one of"),
        ({"recipes": [{"name": "x", "trainable": "lora", "loss": "sft+kd_attention"}]}, "loss must join some of"),
        ({"recipes": [*RECIPE_DICTS, RECIPE_DICTS[0]]}, "unique"),
        ({"fractions": [0.0]}, "fractions must be in \\(0, 1\\]"),
        ({"data_efficiency": {**SWEEP_DICT, "fractions": [1.5]}}, "fractions must be in"),
        ({"recipes": RECIPE_DICTS, "data_efficiency": {**SWEEP_DICT, "recipe": "lora"}}, "not one of the recipes"),
        ({"extra_seeds": {"seeds": [1, 1], "students": []}}, "extra_seeds.seeds must be distinct integers >= 0, got \\[1, 1\\]"),
        ({"extra_seeds": {"seeds": [0, 1], "students": []}}, "must differ from config.seed \\(0, the runs without a suffix\\)"),
    ],
)
def test_bad_declarations_are_refused(recover, message):
    from study.config.sections import RecoverConfig

    with pytest.raises(ValueError, match=message):
        build(RecoverConfig, recover, "recover")


def test_a_runs_identity_is_its_students_with_the_recovery(tmp_path):
    from study.records import model_identity

    run = planned_runs("width-taylor-0.3", RECIPES, [0.05])[1]
    student = {"run": "width-taylor-0.3", "paradigm": "width", "metric": "taylor", "calibration": "multimodal", "level": 0.3}
    student |= {"achieved_level": 0.299, "recovery": "none", "data_fraction": 1.0, "seed": 0}
    (tmp_path / RECOVERY_FILE).write_text(json.dumps(record_fields(run, student, 0)))
    record = read_record(tmp_path, RECOVERY_FILE)
    assert record["recipe"] == {"name": "sft+kd_hidden", "trainable": "projector+llm", "loss": "sft+kd_hidden"}
    identity = model_identity(tmp_path)
    assert identity == {
        **student,
        "run": "width-taylor-0.3-sft+kd_hidden-0.05",
        "recovery": "sft+kd_hidden",
        "data_fraction": 0.05,
        "model": str(tmp_path),
    }
    assert read_record(tmp_path / "elsewhere", RECOVERY_FILE) is None
    seeded = planned_runs("width-taylor-0.3", RECIPES, [0.05], None, ExtraSeeds([2], ["width-taylor-0.3"]))[-1]
    (tmp_path / RECOVERY_FILE).write_text(json.dumps(record_fields(seeded, student, 2)))
    assert model_identity(tmp_path) == {**identity, "run": "width-taylor-0.3-sft+kd_hidden-0.05-s2", "seed": 2}
    assert Recipe("lora", "lora", "sft").name == "lora"


def test_a_recipe_used_twice_is_refused_by_check_config(tmp_path):
    import yaml

    from study.config_check import check_profile, exit_code

    params = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    params["recover"]["recipes"].append(dict(params["recover"]["recipes"][0]))
    params["recover"]["data_efficiency"]["recipe"] = "lora"  # a second problem: the duplicate is still named
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(params))
    findings = check_profile(tmp_path / "bad.yaml", REPO)
    errors = {f.key: f.message for f in findings if f.status == "error"}
    assert errors == {"recover.recipes": "recipe names must be unique, got ['sft', 'sft+kd_hidden', 'sft']"}, errors
    assert exit_code(findings) == 1
