"""Structural pruning: exactness where it must be exact, budgets, loadability, errors."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch

from study.models.architectures import attention_shape, decoder_spec
from study.models.layers import decoder_layer_params, decoder_layers
from study.pruning.importance import all_angular_distances, angular_distances
from study.pruning.prune import hybrid_split, layer_budget, prune, unit_sizes, width_plan

from .conftest import fake_batch, tiny_llava, tiny_world

KINDS = ("llama_gqa", "llama_mha", "phi_siglip")


def logits(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("paradigm, metric", [("layer", "block_influence"), ("width", "taylor")])
def test_ratio_zero_is_the_identical_model(kind, paradigm, metric):
    model = tiny_llava(kind)
    batch = fake_batch(model)
    expected = logits(model, batch)
    record = prune(model, paradigm, 0.0, metric, [batch])
    assert torch.equal(logits(model, batch), expected)
    assert record["achieved_ratio"] == 0.0


def zero_block(model, index: int) -> None:
    """Make block ``index`` contribute nothing to the residual stream (its output = its input)."""
    spec = decoder_spec(model)
    block = decoder_layers(model)[index]
    with torch.no_grad():
        for path in (spec.o, spec.mlp_out):
            spec.module(block, path).weight.zero_()
            if spec.module(block, path).bias is not None:
                spec.module(block, path).bias.zero_()


def zero_heads_and_channels(model, plan: dict[str, int], layers) -> int:
    """Zero, in ``layers``, the heads and channels ``plan`` removes (the last query heads of every
    group or the last KV groups, and the last channels), so that they contribute nothing; returns
    the number of query heads zeroed per layer."""
    spec, shape = decoder_spec(model), attention_shape(model)
    hd = shape.head_dim
    if plan["kv_groups"]:  # the last groups contribute nothing: zero their q, k, v rows and o columns
        zeroed = range(shape.num_heads - plan["kv_groups"] * shape.group_size, shape.num_heads)
    else:  # the last query heads of every group contribute nothing
        zeroed = [
            g * shape.group_size + i
            for g in range(shape.num_kv_heads)
            for i in range(shape.group_size - plan["q_heads_per_group"], shape.group_size)
        ]
    with torch.no_grad():
        for layer in layers:
            for head in zeroed:
                rows = slice(head * hd, (head + 1) * hd)
                paths = (spec.q, spec.k, spec.v) if plan["kv_groups"] else (spec.q,)
                for path in paths:
                    spec.module(layer, path).weight[rows] = 0
                    if spec.module(layer, path).bias is not None:
                        spec.module(layer, path).bias[rows] = 0
                spec.module(layer, spec.o).weight[:, rows] = 0
            if plan["channels"]:  # and so do the last channels
                for path in spec.mlp_in:
                    spec.module(layer, path).weight[-plan["channels"] :] = 0
                    if spec.module(layer, path).bias is not None:
                        spec.module(layer, path).bias[-plan["channels"] :] = 0
                spec.module(layer, spec.mlp_out).weight[:, -plan["channels"] :] = 0
    return len(zeroed)


def removed_per_layer(model, plan: dict[str, int]) -> int:
    """Parameters a layer loses under a width plan."""
    shape = attention_shape(model)
    sizes = unit_sizes(decoder_layers(model)[0], decoder_spec(model), shape)
    return (
        plan["q_heads_per_group"] * shape.num_kv_heads * sizes["q_head"]
        + plan["kv_groups"] * (sizes["kv_group"] + shape.group_size * sizes["q_head"])
        + plan["channels"] * sizes["channel"]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_removing_a_block_whose_residual_contribution_is_zero_keeps_the_logits(kind):
    model = tiny_llava(kind)
    zero_block(model, 2)
    batch = fake_batch(model)
    expected = logits(model, batch)
    record = prune(model, "layer", 0.25, "block_influence", [batch])
    assert record["removed_layers"] == [2] and record["layer_map"] == [0, 1, 3]
    torch.testing.assert_close(logits(model, batch), expected, rtol=1e-5, atol=1e-5)
    assert model.config.text_config.num_hidden_layers == 3


@pytest.mark.parametrize("kind", KINDS)
def test_pruning_zeroed_heads_and_channels_keeps_the_logits(kind):
    model = tiny_llava(kind)
    shape = attention_shape(model)
    ratio = 0.5
    plan = width_plan(model, ratio, "query_heads")  # MHA: whole (single-head) KV groups
    n_heads_removed = plan["q_heads_per_group"] * shape.num_kv_heads + plan["kv_groups"] * shape.group_size
    assert n_heads_removed >= 1 and plan["channels"] >= 1
    assert zero_heads_and_channels(model, plan, decoder_layers(model)) == n_heads_removed
    batch = fake_batch(model)
    expected = logits(model, batch)
    record = prune(model, "width", ratio, "magnitude_l1", [batch])
    torch.testing.assert_close(logits(model, batch), expected, rtol=1e-5, atol=1e-5)
    kept = record["widths"][0]
    assert len(kept["channels"]) == 64 - plan["channels"] and max(kept["channels"]) < 64 - plan["channels"]
    assert model.config.text_config.num_attention_heads == shape.num_heads - n_heads_removed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ratio", [0.15, 0.3, 0.45, 0.6])
def test_parameter_counts_are_exact_and_levels_match_within_rounding(kind, ratio):
    layered, widened, matched = tiny_llava(kind), tiny_llava(kind), tiny_llava(kind)
    batch = fake_batch(layered)
    before = decoder_layer_params(layered)
    per_layer = before // 4
    lay = prune(layered, "layer", ratio, "block_influence", [batch])
    assert lay["decoder_params_after"] == decoder_layer_params(layered) == before - round(ratio * 4) * per_layer
    assert (
        lay["budget_ratio"] == lay["achieved_ratio"] == layer_budget(ratio, 4) and abs(lay["achieved_ratio"] - ratio) <= 0.5 / 4
    )  # half a layer
    sizes = unit_sizes(decoder_layers(widened)[0], decoder_spec(widened), attention_shape(widened))
    plan = width_plan(widened, ratio, "query_heads")
    removed = removed_per_layer(widened, plan)
    wid = prune(widened, "width", ratio, "activation", [batch], match_budget="none")
    assert wid["decoder_params_after"] == decoder_layer_params(widened) == before - 4 * removed
    assert wid["budget_ratio"] == ratio and abs(wid["achieved_ratio"] - ratio) <= sizes["channel"] / per_layer  # one channel per layer
    # matched (the default): as many parameters as the layerwise cut removed, whole blocks
    same = prune(matched, "width", ratio, "activation", [batch])
    assert same["requested_ratio"] == ratio and same["budget_ratio"] == layer_budget(ratio, 4) == round(ratio * 4) / 4
    assert abs(same["achieved_ratio"] - lay["achieved_ratio"]) <= sizes["channel"] / per_layer


@pytest.mark.parametrize("metric", ["magnitude_l1", "magnitude_l2", "taylor", "activation"])
def test_every_width_metric_prunes_gqa_by_kv_groups(metric):
    model = tiny_llava("llama_gqa")
    batch = fake_batch(model)
    record = prune(model, "width", 0.5, metric, [batch], mode="kv_groups")
    assert model.config.text_config.num_key_value_heads == 1 and model.config.text_config.num_attention_heads == 2
    assert record["plan"]["kv_groups"] == 1
    model(**batch)  # still runs


@pytest.mark.parametrize("metric", ["block_influence", "angular", "loss", "last", "random"])
def test_every_layer_metric_removes_the_requested_number_of_blocks(metric):
    model = tiny_llava("llama_gqa")
    batch = fake_batch(model)
    record = prune(model, "layer", 0.5, metric, [batch])
    assert len(record["removed_layers"]) == 2 and len(decoder_layers(model)) == 2
    if metric == "last":
        assert record["removed_layers"] == [2, 3]
    if metric == "angular":
        a, b = record["removed_layers"]
        assert b == a + 1  # a contiguous run


def test_angular_distances_of_one_run_length_equal_those_of_the_all_lengths_pass():
    model = tiny_llava("llama_gqa")
    batch = fake_batch(model)
    every = all_angular_distances(model, [batch])
    assert sorted(every) == [1, 2, 3]
    for n in (1, 3):
        assert angular_distances(model, [batch], n) == pytest.approx(every[n], rel=1e-12)
    assert every[3][2:] == [math.inf, math.inf]  # blocks 2 and 3 start no run of 3
    with pytest.raises(ValueError, match="1 <= n < 4"):
        angular_distances(model, [batch], 4)


def test_layer_skip_loss_metric_finds_a_pass_through_block():
    model = tiny_llava("llama_gqa")
    spec = decoder_spec(model)
    block = decoder_layers(model)[1]
    with torch.no_grad():
        spec.module(block, spec.o).weight.zero_()
        spec.module(block, spec.mlp_out).weight.zero_()
    record = prune(model, "layer", 0.25, "loss", [fake_batch(model)])
    scores = record["scores"]
    assert scores[1] == pytest.approx(0.0, abs=1e-6)  # skipping a pass-through block changes nothing
    assert all(abs(s) > 1e-4 for i, s in enumerate(scores) if i != 1)
    assert record["removed_layers"] == [min(range(4), key=lambda i: scores[i])]


# ---------------------------------------------------------------------------------------------
# hybrid: whole blocks for part of the budget, then the widths of the remaining blocks


@pytest.mark.parametrize(
    "ratio, n_layers, share, expected",
    [
        (0.3, 4, 0.5, (1, 0.2 / 3)),  # round(0.6) = 1 block, the rest (0.2 of a block) over 3 blocks
        (0.6, 32, 0.5, (10, 9.2 / 22)),
        (0.3, 4, 0.0, (0, 0.3)),  # widthwise
        (0.45, 4, 1.0, (1, 0.8 / 3)),  # round(1.8) = 2 blocks would overshoot 1.8: at most floor(1.8)
        (0.5, 4, 1.0, (2, 0.0)),  # layerwise
    ],
)
def test_hybrid_split_spends_the_budget_on_blocks_then_widths(ratio, n_layers, share, expected):
    n_remove, width_ratio = hybrid_split(ratio, n_layers, share)
    assert n_remove == expected[0] and width_ratio == pytest.approx(expected[1])
    assert n_remove + (n_layers - n_remove) * width_ratio == pytest.approx(ratio * n_layers)  # the whole budget


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ratio", [0.15, 0.3, 0.45, 0.6])
def test_hybrid_parameter_counts_are_exact_and_the_level_matches_within_rounding(kind, ratio):
    model = tiny_llava(kind)
    batch = fake_batch(model)
    before = decoder_layer_params(model)
    per_layer = before // 4
    budget = round(ratio * 4) / 4  # matched to the layerwise cut at the ratio
    n_remove, width_ratio = hybrid_split(budget, 4, 0.5)
    plan = width_plan(tiny_llava(kind), width_ratio, "query_heads")  # the plan depends on the layer's shape only
    record = prune(model, "hybrid", ratio, "block_influence+taylor", [batch])
    assert (record["requested_ratio"], record["budget_ratio"]) == (ratio, budget)
    expected = before - n_remove * per_layer - (4 - n_remove) * removed_per_layer(tiny_llava(kind), plan)
    assert record["decoder_params_after"] == decoder_layer_params(model) == expected
    sizes = unit_sizes(decoder_layers(model)[0], decoder_spec(model), attention_shape(model))
    # the width part absorbs the rounding to whole blocks: within half a channel per remaining layer
    assert abs(record["achieved_ratio"] - budget) <= 0.5 * (4 - n_remove) * sizes["channel"] / before + 1e-9
    assert len(record["removed_layers"]) == n_remove == 4 - len(decoder_layers(model))
    assert record["layer_map"] == [i for i in range(4) if i not in record["removed_layers"]]
    assert len(record["widths"]) == len(record["layer_map"]) and record["plan"] == plan
    assert (record["layer_metric"], record["width_metric"], record["depth_share"]) == ("block_influence", "taylor", 0.5)
    model(**batch)  # still runs


@pytest.mark.parametrize("kind", KINDS)
def test_hybrid_cut_of_a_pass_through_block_and_zeroed_heads_keeps_the_logits_and_the_layer_map(kind):
    from study.recovery.losses import kd_hidden_loss

    teacher = tiny_llava(kind)
    ratio = 0.5  # one block (round(0.5 * 0.5 * 4)), then a third of each remaining block
    n_remove, width_ratio = hybrid_split(ratio, 4, 0.5)
    plan = width_plan(teacher, width_ratio, "query_heads")
    assert n_remove == 1 and plan["channels"] >= 1
    zero_block(teacher, 2)
    n_heads = zero_heads_and_channels(teacher, plan, [b for i, b in enumerate(decoder_layers(teacher)) if i != 2])
    student = copy.deepcopy(teacher)
    batch = fake_batch(teacher)
    expected = logits(teacher, batch)
    record = prune(student, "hybrid", ratio, "block_influence+magnitude_l1", [batch])
    assert record["removed_layers"] == [2] and record["layer_map"] == [0, 1, 3]
    torch.testing.assert_close(logits(student, batch), expected, rtol=1e-5, atol=1e-5)
    text = student.config.text_config
    assert text.num_hidden_layers == 3 and text.num_attention_heads == 4 - n_heads
    assert text.intermediate_size == 64 - plan["channels"]
    # recovery's hidden-state distillation matches student block i with parent block layer_map[i]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s_hidden = student(**inputs, output_hidden_states=True).hidden_states
        t_hidden = teacher(**inputs, output_hidden_states=True).hidden_states
    loss = kd_hidden_loss(s_hidden, t_hidden, batch["labels"], student_layers=[0, 1, 2], layer_map=record["layer_map"])
    assert float(loss) == pytest.approx(0.0, abs=1e-8)


def test_hybrid_with_spared_layers_loads_with_the_study_loader(tiny_processor, tmp_path):
    from study.models.io import load_model, save_model

    model = tiny_llava("llama_gqa")
    batch = fake_batch(model)
    record = prune(model, "hybrid", 0.45, "angular+activation", [batch], spare=(1, 0), depth_share=0.5)
    assert record["nonuniform"] and len(record["widths"]) == 3 == 4 - len(record["removed_layers"])
    kept = [len(w["channels"]) for w in record["widths"]]
    assert kept[0] == 64 and kept[1] == kept[2] < 64
    save_model(model, tiny_processor, tmp_path / "m")  # any processor: only loading is tested
    (tmp_path / "m" / "pruning.json").write_text(json.dumps(record))
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.config.text_config.num_hidden_layers == 3
    torch.testing.assert_close(logits(loaded, batch), logits(model, batch))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("paradigm, metric", [("layer", "angular"), ("width", "taylor"), ("hybrid", "block_influence+taylor")])
def test_pruned_folder_loads_in_a_fresh_process_and_generates_the_same_tokens(kind, paradigm, metric, tmp_path):
    model = tiny_llava(kind)
    batch = fake_batch(model, batch_size=1)
    prune(model, paradigm, 0.3, metric, [batch])
    model.save_pretrained(tmp_path / "m")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    torch.save(inputs, tmp_path / "inputs.pt")
    kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=True)
    expected = model.generate(**inputs, **kwargs)
    code = f"""
import torch
from transformers import AutoModelForImageTextToText
m = AutoModelForImageTextToText.from_pretrained({str(tmp_path / "m")!r}).eval()
out = m.generate(**torch.load({str(tmp_path / "inputs.pt")!r}), **{kwargs!r})
torch.save(out, {str(tmp_path / "out.pt")!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


@pytest.mark.parametrize(
    "args, match",
    [
        (("layer", 1.2, "block_influence"), r"ratio must be in \[0, 1\), got 1.2"),
        (("layer", -0.1, "block_influence"), r"ratio must be in \[0, 1\)"),
        (("layer", 0.9, "block_influence"), "would remove all 4 decoder layers"),
        (("width", 0.9, "taylor"), "would remove every"),
        (("depth", 0.3, "taylor"), "unknown paradigm"),
        (("layer", 0.3, "taylor"), "unknown layer importance metric"),
        (("width", 0.3, "block_influence"), "unknown width importance metric"),
        (("hybrid", 0.3, "taylor"), r"a hybrid metric is '<layer metric>\+<width metric>'"),
        (("hybrid", 0.3, "taylor+block_influence"), "got 'taylor\\+block_influence'"),
    ],
)
def test_bad_inputs_raise_clear_errors(args, match):
    model = tiny_llava("llama_gqa")
    with pytest.raises(ValueError, match=match):
        prune(model, *args, [fake_batch(model)], match_budget="none")


@pytest.mark.parametrize(
    "args, match",
    [
        (("width", 0.9, "taylor"), r"matched to a layerwise cut would remove all 4 blocks' parameters \(round\(0.9 \* 4\) = 4\)"),
        (("hybrid", 0.3, "last+taylor", [], "blocks"), "unknown match_budget 'blocks'; expected one of"),
    ],
)
def test_a_budget_matched_to_no_possible_layerwise_cut_is_refused(args, match):
    model = tiny_llava("llama_gqa")
    paradigm, ratio, metric, *rest = args
    with pytest.raises(ValueError, match=match):
        prune(model, paradigm, ratio, metric, [fake_batch(model)], match_budget=rest[1] if rest else "layer")


def test_an_unknown_backbone_is_refused_for_width_only_and_an_unknown_family_for_all():
    model = tiny_llava("llama_gqa")
    model.config.text_config.model_type = "gpt2"
    for paradigm, metric in (("width", "magnitude_l1"), ("hybrid", "last+magnitude_l1")):
        with pytest.raises(ValueError, match="unsupported language backbone 'gpt2'; supported: gemma, gemma2, gemma3_text, llama, mistral"):
            prune(copy.deepcopy(model), paradigm, 0.3, metric)
    record = prune(model, "layer", 0.5, "last")  # dropping whole blocks needs no knowledge of their insides
    assert record["removed_layers"] == [2, 3] and len(decoder_layers(model)) == 2
    model.config.model_type = "blip-2"
    with pytest.raises(ValueError, match="unsupported model family 'blip-2'; supported: gemma3, idefics3, internvl, llava, llava_next"):
        prune(model, "layer", 0.5, "last")


def test_sparing_first_and_last_layers_needs_the_study_loader(tiny_processor, tmp_path):
    from study.models.io import load_model, save_model

    model = tiny_llava("llama_gqa")
    batch = fake_batch(model)
    before = decoder_layer_params(model)
    record = prune(model, "width", 0.3, "magnitude_l2", [batch], spare=(1, 1))
    kept = [len(w["channels"]) for w in record["widths"]]
    assert record["nonuniform"] and kept[0] == kept[3] == 64 and kept[1] == kept[2] < 64
    assert abs(record["achieved_ratio"] - 0.3) < 0.05 and record["decoder_params_after"] < before
    save_model(model, tiny_processor, tmp_path / "m")  # any processor: only loading is tested
    (tmp_path / "m" / "pruning.json").write_text(json.dumps(record))
    plain = subprocess.run(
        [sys.executable, "-c", f"from transformers import AutoModelForImageTextToText as A; A.from_pretrained({str(tmp_path / 'm')!r})"],
        capture_output=True,
        text=True,
    )
    assert plain.returncode != 0  # documented: stock from_pretrained cannot load per-layer widths
    loaded, _ = load_model(tmp_path / "m")
    torch.testing.assert_close(logits(loaded, batch), logits(model, batch))


def test_hybrid_depth_share_must_be_a_share(tiny_model):
    with pytest.raises(ValueError, match=r"depth_share must be in \[0, 1\], got 1.5"):
        prune(tiny_model, "hybrid", 0.3, "last+magnitude_l1", [], depth_share=1.5)


def test_spare_must_leave_layers_to_prune(tiny_model):
    with pytest.raises(ValueError, match="spare"):
        prune(tiny_model, "width", 0.3, "magnitude_l1", [], spare=(2, 2))


def test_prune_command_line_cuts_a_text_calibrated_hybrid_into_a_stock_folder(tiny_arch, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText

    from study.__main__ import main
    from study.models.io import load_model

    tiny_world(tmp_path, seed=3)
    args = ["prune", "--model", str(tmp_path / "teacher"), "--calibration", str(tmp_path / "data/train.json"), "--samples", "8"]
    args += ["--paradigm", "hybrid", "--metric", "block_influence+taylor", "--ratio", "0.45", "--depth-share", "0.6"]
    main([*args, "--text-only", "--seed", "1", "--out", str(tmp_path / "hybrid")])
    assert "requested 0.450, budget 0.500, achieved 0.5" in capsys.readouterr().out  # round(0.45 * 4) = 2 of 4 blocks
    record = json.loads((tmp_path / "hybrid/pruning.json").read_text())
    assert record["paradigm"] == "hybrid" and record["seed"] == 1 and record["depth_share"] == 0.6
    assert record["calibration"]["text_only"] is True and record["calibration"]["samples"] == 8
    assert len(record["removed_layers"]) == hybrid_split(0.45, 4, 0.6)[0] == 1  # round(1.08)
    assert record["match_budget"] == "layer" and abs(record["achieved_ratio"] - 0.5) < 0.02
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "hybrid")  # uniform widths: a stock config
    assert plain.config.text_config.num_hidden_layers == 3 == len(record["layer_map"])
    assert plain.config.text_config.intermediate_size == len(record["widths"][0]["channels"]) < tiny_arch.intermediate_size
    assert type(load_model(tmp_path / "hybrid")[0]).__name__ == "LlavaForConditionalGeneration"


def test_prune_command_line_needs_no_calibration_file_for_a_data_free_metric_and_applies_threads(tmp_path, capsys, monkeypatch):
    from study.__main__ import main

    tiny_world(tmp_path, seed=3)
    monkeypatch.chdir(tmp_path)  # where the default calibration file, results/data/train.json, is not
    before = torch.get_num_threads()
    args = ["prune", "--model", str(tmp_path / "teacher"), "--paradigm", "width", "--metric", "magnitude_l1", "--ratio", "0.3"]
    try:
        assert main([*args, "--threads", "1", "--match-budget", "none", "--out", str(tmp_path / "width")]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "requested 0.300, budget 0.300, achieved 0.29" in capsys.readouterr().out
    assert json.loads((tmp_path / "width/pruning.json").read_text())["calibration"]["samples"] == 0
    assert main([*args[:-3], "taylor", "--ratio", "0.3", "--out", str(tmp_path / "taylor")]) == 2
    assert "train.json" in capsys.readouterr().err


def test_extra_seeds_are_pruned_beside_the_main_run_and_evaluated_as_their_own_runs(tmp_path):
    from study.config.sections import PruneConfig
    from study.evaluation.run import models_under
    from study.pruning.run import prune_seeds
    from study.records import model_identity

    tiny_world(tmp_path, seed=3)
    run, records = tmp_path / "pruned/width-taylor-0.3", tmp_path / "pruning/width-taylor-0.3.json"
    settings = dict(
        model_dir=str(tmp_path / "teacher"),
        calibration=str(tmp_path / "data/train.json"),
        calibration_samples=4,
        method="width-taylor",
        level=0.3,
        out_dir=str(run),
        record_out=str(records),
        timings_dir=str(tmp_path / "timings"),
    )
    (tmp_path / "pruned/width-taylor-0.3-seeds/width-taylor-0.3-s9").mkdir(parents=True)  # a seed no longer declared
    with pytest.raises(FileExistsError, match="width-taylor-0.3-seeds is not empty"):
        prune_seeds(PruneConfig(**settings, extra_seeds=[2, 1]))
    assert (tmp_path / "pruned/width-taylor-0.3-seeds/width-taylor-0.3-s9").is_dir()  # refused before any change
    out = prune_seeds(PruneConfig(**settings, extra_seeds=[2, 1], overwrite=True))
    assert [r["seed"] for r in out] == [0, 2, 1] and all(r["importance_seconds"] > 0 for r in out)
    assert json.loads((run / "pruning.json").read_text())["seed"] == 0
    record = tmp_path / "pruning/width-taylor-0.3-seeds/width-taylor-0.3-s2.json"
    assert record.read_bytes() == (tmp_path / "pruned/width-taylor-0.3-seeds/width-taylor-0.3-s2/pruning.json").read_bytes()
    cost = json.loads((tmp_path / "timings/width-taylor-0.3-s2.json").read_text())
    assert cost["run"] == "width-taylor-0.3-s2" and cost["importance_seconds"] > 0 and cost["peak_mem_mb"] > 0
    seeds = models_under(tmp_path / "pruned/width-taylor-0.3-seeds")
    assert [(folder.name, model_identity(folder)["run"], model_identity(folder)["seed"]) for folder in seeds] == [
        ("width-taylor-0.3-s1", "width-taylor-0.3-s1", 1),
        ("width-taylor-0.3-s2", "width-taylor-0.3-s2", 2),
    ]
    assert model_identity(run)["run"] == "width-taylor-0.3" and model_identity(run)["calibration"] == "multimodal"
    prune_seeds(PruneConfig(**settings, extra_seeds=[], overwrite=True))
    assert models_under(tmp_path / "pruned/width-taylor-0.3-seeds") == []  # the folder stays, empty
    with pytest.raises(ValueError, match="distinct and differ from seed"):
        prune_seeds(PruneConfig(**settings, extra_seeds=[1, 0]))


# ---------------------------------------------------------------------------------------------
# any head count (a stock config that accepts it), aligned widths, memory-lean importance


def llama_with_heads(heads: int = 12, hidden: int = 48):
    """A tiny LLaVA whose Llama backbone has ``heads`` heads of ``hidden // heads`` (MHA)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=24, patch_size=8)
    text = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=96, num_hidden_layers=2, num_attention_heads=heads)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=63, vision_feature_layer=-2, image_seq_length=9)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 0
    return model


def test_a_head_count_llama_refuses_is_saved_as_mistral_and_computes_the_same(tmp_path):
    model = llama_with_heads(12)
    batch = fake_batch(model, batch_size=1)
    record = prune(model, "width", 0.25, "magnitude_l1", [batch], match_budget="none")  # 2 blocks: a layerwise 25% is 0%
    assert len(record["widths"][0]["q_heads"]) == 9  # round((1 - 0.25) * 12), although 48 % 9 != 0
    assert record["model_type"] == {"original": "llama", "saved": "mistral"}
    text = model.config.text_config
    assert (text.model_type, text.num_attention_heads, text.head_dim, text.sliding_window) == ("mistral", 9, 4, None)
    model.save_pretrained(tmp_path / "m")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    torch.save({"inputs": inputs, "logits": logits(model, batch)}, tmp_path / "expected.pt")
    code = f"""
import torch
from transformers import AutoModelForImageTextToText
expected = torch.load({str(tmp_path / "expected.pt")!r})
m = AutoModelForImageTextToText.from_pretrained({str(tmp_path / "m")!r}).eval()
assert type(m.model.language_model).__name__ == "MistralModel", type(m.model.language_model)
with torch.no_grad():
    assert torch.equal(m(**expected["inputs"]).logits, expected["logits"])  # exact: the same modules, the same math
kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
assert torch.equal(m.generate(**expected["inputs"], use_cache=True, **kwargs), m.generate(**expected["inputs"], use_cache=False, **kwargs))
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_a_llama_config_with_biases_has_no_mistral_equivalent():
    from transformers import LlamaConfig

    from study.models.architectures import stock_text_config

    config = LlamaConfig(
        hidden_size=48, num_attention_heads=12, intermediate_size=96, num_hidden_layers=1, vocab_size=64, attention_bias=True
    )
    config.head_dim, config.num_attention_heads, config.num_key_value_heads = 4, 9, 9
    with pytest.raises(ValueError, match="attention_bias.*has no mistral equivalent"):
        stock_text_config(config)
    assert stock_text_config(LlamaConfig(hidden_size=48, num_attention_heads=12)).model_type == "llama"  # valid: kept


@pytest.mark.parametrize("ratio", [0.15, 0.3, 0.45, 0.6])
def test_heads_and_channels_go_in_the_same_proportion_and_channels_meet_the_budget(ratio):
    model = llama_with_heads(12)
    plan = width_plan(model, ratio, "query_heads")  # MHA: whole heads
    assert 12 - plan["kv_groups"] == round((1 - ratio) * 12)
    sizes = unit_sizes(decoder_layers(model)[0], decoder_spec(model), attention_shape(model))
    per_layer = decoder_layer_params(model) // 2
    assert abs(removed_per_layer(model, plan) - ratio * per_layer) <= sizes["channel"] / 2  # met to half a channel


@pytest.mark.parametrize("round_to", [8, 32])
def test_round_to_aligns_the_kept_widths(round_to):
    model = llama_with_heads(12)  # head_dim 4: the query width aligns to 8 (2 heads) and 32 (8 heads)
    record = prune(model, "width", 0.3, "magnitude_l2", [fake_batch(model)], round_to=round_to)
    kept = record["widths"][0]
    assert len(kept["channels"]) % round_to == 0
    assert len(kept["q_heads"]) * 4 % round_to == 0
    assert record["round_to"] == round_to and record["achieved_ratio"] == pytest.approx(
        1 - decoder_layer_params(model) / record["decoder_params_before"]
    )


def test_round_to_that_the_heads_cannot_meet_leaves_them_as_planned():
    model = tiny_llava("llama_gqa")  # 2 query heads per group of width 2 x 8: no multiple of 64 below 4 heads
    plan = width_plan(model, 0.3, "query_heads", round_to=64)
    assert plan["q_heads_per_group"] == 2 - round(0.7 * 2) and 64 - plan["channels"] == 64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(round_to=0), "round_to must be >= 1, got 0"),
        (dict(round_to=-64), "round_to must be >= 1, got -64"),
        (dict(ratio=0.8, mode="kv_groups"), r"would remove every one of the 2 key/value groups \(round\(\(1 - 0.8\) \* 2\) = 0\)"),
    ],
)
def test_bad_width_plans_are_refused_with_the_value(kwargs, match):
    model = tiny_llava("llama_gqa")
    args = {"ratio": 0.3, "mode": "query_heads", **kwargs}
    with pytest.raises(ValueError, match=match):
        width_plan(model, args.pop("ratio"), args.pop("mode"), **args)


@pytest.mark.parametrize("kind", KINDS)
def test_taylor_line_sums_equal_the_per_weight_saliency_and_free_every_gradient(kind, monkeypatch):
    from study.pruning import importance

    monkeypatch.setattr(importance, "CHUNK_ELEMENTS", 100)  # several blocks of rows per weight
    model = tiny_llava(kind)
    batch = fake_batch(model)
    reference = copy.deepcopy(model)
    reference(**batch).loss.backward()
    spec = decoder_spec(model)
    lines = importance.width_saliency(model, "taylor", [batch])
    for ref_layer, got in zip(decoder_layers(reference), lines):
        for path, dim in importance.line_dims(spec).items():
            weight = spec.module(ref_layer, path).weight
            torch.testing.assert_close(got[path], (weight * weight.grad).abs().sum(dim), rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # as before scoring


# ---------------------------------------------------------------------------------------------
# importance computed once per method and seed, read by every level


@pytest.fixture(scope="module")
def teacher_world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("importance"), seed=3)


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".json")}


@pytest.mark.parametrize("method", ["layer-angular", "layer-block_influence-text", "width-taylor", "hybrid-block_influence+activation"])
def test_importance_computed_once_prunes_every_level_as_scoring_in_the_run_does(method, teacher_world, tmp_path):
    from study.config.sections import PruneConfig
    from study.pruning.run import prune_seeds, score_seeds

    common = dict(
        model_dir=str(teacher_world / "teacher"),
        calibration=str(teacher_world / "data/train.json"),
        calibration_samples=4,
        extra_seeds=[1],
        method=method,
        timings_dir=str(tmp_path / "timings"),
    )
    cache = tmp_path / "importance.pt"
    content = score_seeds(PruneConfig(**common, importance=str(cache)))
    assert sorted(content["seeds"]) == [0, 1] and cache.is_file()
    for level in (0.3, 0.6):
        runs = {}
        for how, importance in (("in-run", None), ("cached", str(cache))):
            out = tmp_path / how / f"{method}-{level}"
            prune_seeds(PruneConfig(**common, level=level, out_dir=str(out), record_out=str(out) + ".json", importance=importance))
            runs[how] = out
        for folder in (runs["in-run"], runs["in-run"].with_name(runs["in-run"].name + "-seeds") / f"{method}-{level}-s1"):
            twin = tmp_path / "cached" / folder.relative_to(tmp_path / "in-run")
            assert folder_bytes(folder) == folder_bytes(twin), folder


def test_an_importance_file_of_other_settings_is_refused(teacher_world, tmp_path):
    from study.config.sections import PruneConfig
    from study.pruning.run import prune_seeds, score_seeds

    common = dict(model_dir=str(teacher_world / "teacher"), calibration=str(teacher_world / "data/train.json"), extra_seeds=[])
    cache = str(tmp_path / "importance.pt")
    score_seeds(PruneConfig(**common, calibration_samples=4, method="width-magnitude_l1", importance=cache))
    run = dict(level=0.3, out_dir=str(tmp_path / "out"), record_out=str(tmp_path / "out.json"), importance=cache)
    with pytest.raises(
        ValueError, match="holds width-magnitude_l1 with .*'calibration_samples': 4.*not width-magnitude_l1 with .*'calibration_samples': 8"
    ):
        prune_seeds(PruneConfig(**common, calibration_samples=8, method="width-magnitude_l1", **run))
    with pytest.raises(ValueError, match="holds width-magnitude_l1 .* not width-taylor"):
        prune_seeds(PruneConfig(**common, calibration_samples=4, method="width-taylor", **run))
    with pytest.raises(ValueError, match=r"no scores for calibration seed\(s\) \[5\]"):
        prune_seeds(PruneConfig(**{**common, "extra_seeds": [5]}, calibration_samples=4, method="width-magnitude_l1", **run))
