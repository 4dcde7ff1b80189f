"""The recovery grid of a student: which runs, their names, and bad declarations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.recovery.plan import RECORD, Recipe, identity, planned_runs, read_record

RECIPES = [
    {"name": "projector", "trainable": "projector", "loss": "sft"},
    {"name": "sft+kd_hidden", "trainable": "projector+llm", "loss": "sft+kd_hidden"},
]
REPO = Path(__file__).resolve().parents[1]
SWEEP = {"recipe": "sft+kd_hidden", "fractions": [0.01, 0.05, 0.5], "students": ["width-taylor-0.3"]}


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


@pytest.mark.parametrize(
    ("recipes", "fractions", "sweep", "message"),
    [
        ([{"name": "x", "trainable": "everything", "loss": "sft"}], [0.05], None, "trainable"),
        ([{"name": "x", "trainable": "lora", "loss": "sft+kd_attention"}], [0.05], None, "loss"),
        ([*RECIPES, RECIPES[0]], [0.05], None, "unique"),
        (RECIPES, [0.0], None, "fractions"),
        (RECIPES, [0.05], {**SWEEP, "fractions": [1.5]}, "fractions"),
        (RECIPES, [0.05], {**SWEEP, "recipe": "lora"}, "not one of the recipes"),
    ],
)
def test_bad_declarations_are_refused(recipes, fractions, sweep, message):
    with pytest.raises(ValueError, match=message):
        planned_runs("width-taylor-0.3", recipes, fractions, sweep)


def test_a_runs_identity_names_its_recipe_and_fraction(tmp_path):
    run = planned_runs("width-taylor-0.3", RECIPES, [0.05])[1]
    (tmp_path / RECORD).write_text(json.dumps(identity(run)))
    record = read_record(tmp_path)
    assert record["recipe"] == {"name": "sft+kd_hidden", "trainable": "projector+llm", "loss": "sft+kd_hidden"}
    assert (record["run"], record["student"], record["data_fraction"]) == ("width-taylor-0.3-sft+kd_hidden-0.05", "width-taylor-0.3", 0.05)
    assert read_record(tmp_path / "elsewhere") is None
    assert Recipe("lora", "lora", "sft").name == "lora"


def test_a_recipe_used_twice_is_refused_by_check_config(tmp_path):
    import yaml

    from study.config_check import check_values

    params = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    params["recover"]["recipes"].append(dict(params["recover"]["recipes"][0]))
    params["recover"]["data_efficiency"]["recipe"] = "lora"
    errors = {f.message for f in check_values(params) if f.status == "error"}
    assert any("recipe names must be unique" in m for m in errors), errors
