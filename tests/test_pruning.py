"""Structural pruning: exactness where it must be exact, budgets, loadability, errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from study.models.architectures import attention_shape, decoder_spec
from study.models.layers import decoder_layer_params, decoder_layers
from study.pruning.prune import prune, unit_sizes, width_plan

from .conftest import fake_batch, tiny_llava

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


@pytest.mark.parametrize("kind", KINDS)
def test_removing_a_block_whose_residual_contribution_is_zero_keeps_the_logits(kind):
    model = tiny_llava(kind)
    spec = decoder_spec(model)
    block = decoder_layers(model)[2]
    with torch.no_grad():
        spec.module(block, spec.o).weight.zero_()
        spec.module(block, spec.mlp_out).weight.zero_()
        for path in (spec.o, spec.mlp_out):
            if spec.module(block, path).bias is not None:
                spec.module(block, path).bias.zero_()
    batch = fake_batch(model)
    expected = logits(model, batch)
    record = prune(model, "layer", 0.25, "block_influence", [batch])
    assert record["removed_layers"] == [2] and record["layer_map"] == [0, 1, 3]
    torch.testing.assert_close(logits(model, batch), expected, rtol=1e-5, atol=1e-5)
    assert model.config.text_config.num_hidden_layers == 3


@pytest.mark.parametrize("kind", KINDS)
def test_pruning_zeroed_heads_and_channels_keeps_the_logits(kind):
    model = tiny_llava(kind)
    spec, shape = decoder_spec(model), attention_shape(model)
    ratio = 0.5
    plan = width_plan(model, ratio, "query_heads")  # MHA: whole (single-head) KV groups
    n_heads_removed = plan["q_heads_per_group"] * shape.num_kv_heads + plan["kv_groups"] * shape.group_size
    assert n_heads_removed >= 1 and plan["channels"] >= 1
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
        for layer in decoder_layers(model):
            for head in zeroed:
                rows = slice(head * hd, (head + 1) * hd)
                paths = (spec.q, spec.k, spec.v) if plan["kv_groups"] else (spec.q,)
                for path in paths:
                    spec.module(layer, path).weight[rows] = 0
                    if spec.module(layer, path).bias is not None:
                        spec.module(layer, path).bias[rows] = 0
                spec.module(layer, spec.o).weight[:, rows] = 0
            for path in spec.mlp_in:  # and so do the last channels
                spec.module(layer, path).weight[-plan["channels"] :] = 0
                if spec.module(layer, path).bias is not None:
                    spec.module(layer, path).bias[-plan["channels"] :] = 0
            spec.module(layer, spec.mlp_out).weight[:, -plan["channels"] :] = 0
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
    layered, widened = tiny_llava(kind), tiny_llava(kind)
    batch = fake_batch(layered)
    before = decoder_layer_params(layered)
    per_layer = before // 4
    lay = prune(layered, "layer", ratio, "block_influence", [batch])
    assert lay["decoder_params_after"] == decoder_layer_params(layered) == before - round(ratio * 4) * per_layer
    sizes = unit_sizes(decoder_layers(widened)[0], decoder_spec(widened), attention_shape(widened))
    plan = width_plan(widened, ratio, "query_heads")
    wid = prune(widened, "width", ratio, "activation", [batch])
    shape = attention_shape(tiny_llava(kind))
    removed_per_layer = (
        plan["q_heads_per_group"] * shape.num_kv_heads * sizes["q_head"]
        + plan["kv_groups"] * (sizes["kv_group"] + shape.group_size * sizes["q_head"])
        + plan["channels"] * sizes["channel"]
    )
    assert wid["decoder_params_after"] == decoder_layer_params(widened) == before - 4 * removed_per_layer
    assert abs(wid["achieved_ratio"] - ratio) <= sizes["channel"] / per_layer  # one channel per layer
    assert abs(lay["achieved_ratio"] - ratio) <= 0.5 / 4  # half a layer


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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("paradigm, metric", [("layer", "angular"), ("width", "taylor")])
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
    ],
)
def test_bad_inputs_raise_clear_errors(args, match):
    model = tiny_llava("llama_gqa")
    with pytest.raises(ValueError, match=match):
        prune(model, *args, [fake_batch(model)])


def test_unknown_architecture_lists_the_supported_ones():
    model = tiny_llava("llama_gqa")
    model.config.text_config.model_type = "gpt2"
    with pytest.raises(ValueError, match="unsupported language backbone 'gpt2'; supported: llama, mistral, phi, qwen2"):
        prune(copy.deepcopy(model), "layer", 0.3, "block_influence", [])


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


def test_spare_must_leave_layers_to_prune(tiny_model):
    with pytest.raises(ValueError, match="spare"):
        prune(tiny_model, "width", 0.3, "magnitude_l1", [], spare=(2, 2))
