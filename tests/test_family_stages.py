"""Every stage on every supported family: a tiny random checkpoint of each (built here, see
:mod:`tests.families`) is pruned layerwise, widthwise and hybrid with calibrated metrics, reloaded
with plain ``from_pretrained`` in a fresh process and decoded with and without the KV cache, then
recovered for two steps (SFT, and hidden-state distillation from the unpruned model) and evaluated
on a few questions; every other importance metric and recovery recipe runs on each too. Where
pruning removes nothing, the logits are exactly the unpruned model's."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from study.config.sections import PruneConfig, RecoverConfig, RecoveryConfig
from study.config.vocabulary import LAYER_METRICS, WIDTH_METRICS
from study.data.llava import calibration_batches
from study.evaluation.run import evaluate_checkpoint
from study.models.architectures import attention_shape, decoder_spec
from study.models.families import FAMILIES, projector_parameters
from study.models.io import load_model
from study.models.layers import decoder_layers
from study.pruning.prune import prune
from study.pruning.run import prune_checkpoint
from study.records import PRUNING_FILE, Method, read_record, recovered_identity
from study.recovery.train import recover
from tests.families import KINDS, build_family
from tests.test_families import image, prompt_inputs

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "layer": Method("layer", "block_influence"),
    "width": Method("width", "taylor"),
    "hybrid": Method("hybrid", "angular+activation"),
}
LEVELS = {"layer": 0.5, "width": 0.3, "hybrid": 0.45}
TURNS = [
    {"from": "human", "value": "<image>\nWhat colour is the circle ?"},
    {"from": "gpt", "value": "It is red ."},
    {"from": "human", "value": "Describe the picture :"},
    {"from": "gpt", "value": "a blue square left of a green triangle ."},
]
SAMPLES = [
    {"id": "a", "image": "img.png", "conversations": TURNS},
    {"id": "b", "conversations": [{"from": "human", "value": "What colour is the circle ?"}, {"from": "gpt", "value": "red"}]},
    {"id": "c", "image": "img.png", "conversations": TURNS[:2]},
    {"id": "d", "image": "img.png", "conversations": [{"from": "human", "value": "<image>\nDescribe the picture :"}, TURNS[3]]},
]
QUESTIONS = {
    "open": [{"question_id": "o1", "image": "img.png", "text": "What colour is the circle ?", "answer": "red"}],
    "yesno": [{"question_id": "y1", "image": "img.png", "text": "Is the circle red ?", "answer": "yes"}],
}
TWO_STEPS = dict(lr=1e-3, batch_size=2, epochs=1.0, warmup_ratio=0.0, log_every=1, hidden_layers=[0])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-data")
    (root / "images").mkdir()
    image().save(root / "images/img.png")
    (root / "train.json").write_text(json.dumps(SAMPLES))
    return root


@pytest.fixture(scope="module")
def pruned(data, tmp_path_factory):
    """kind -> the unpruned folder and each paradigm's pruned folder."""
    root = tmp_path_factory.mktemp("family-pruned")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the image-only processor's notice
        for kind in KINDS:
            folders = {"unpruned": build_family(kind, root / kind / "unpruned")}
            cfg = PruneConfig(
                model_dir=str(folders["unpruned"]), calibration=str(data / "train.json"), calibration_samples=4, calibration_batch_size=2
            )
            for paradigm, method in METHODS.items():
                folders[paradigm] = root / kind / paradigm
                prune_checkpoint(folders[paradigm], method, LEVELS[paradigm], cfg)
            out[kind] = folders
    return out


def test_every_family_has_a_tiny_checkpoint():
    built = {kind.split("-")[0] for kind in KINDS}
    assert built >= set(FAMILIES)


FRESH = """
import json, sys, warnings
import torch
from transformers import AutoModelForImageTextToText
from study.models.processing import load_processor
from tests.test_families import prompt_inputs
warnings.simplefilter("ignore")
out = {}
for folder in json.loads(sys.argv[1]):
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = load_processor(folder)
    inputs = prompt_inputs(processor)
    special = [i for i in processor.tokenizer.all_special_ids if i != processor.tokenizer.eos_token_id]
    with torch.no_grad():
        cached = model.generate(**inputs, max_new_tokens=4, suppress_tokens=special)
        uncached = model.generate(**inputs, max_new_tokens=4, suppress_tokens=special, use_cache=False)
    out[folder] = {"equal": torch.equal(cached, uncached), "new": cached.shape[1] - inputs["input_ids"].shape[1],
                   "layers": model.config.get_text_config().num_hidden_layers}
print(json.dumps(out))
"""


def test_pruned_folders_load_with_from_pretrained_in_a_fresh_process_and_decode_as_without_cache(pruned):
    folders = [str(f[p]) for f in pruned.values() for p in METHODS]
    run = subprocess.run([sys.executable, "-c", FRESH, json.dumps(folders)], capture_output=True, text=True, cwd=REPO, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(r["equal"] and r["new"] > 0 for r in result.values()), {k: v for k, v in result.items() if not v["equal"]}
    for kind, f in pruned.items():
        record = read_record(f["layer"], PRUNING_FILE)
        assert result[str(f["layer"])]["layers"] == len(record["layer_map"]) == record["num_layers_before"] // 2, kind
        width, n = read_record(f["width"], PRUNING_FILE), record["num_layers_before"]
        budget = round(LEVELS["width"] * n) / n  # matched to what a layerwise cut at 30% removes: whole blocks
        assert width["budget_ratio"] == budget and abs(width["achieved_ratio"] - budget) < 0.05, kind


@pytest.mark.parametrize("kind", KINDS)
def test_pruning_that_removes_nothing_keeps_the_logits_exactly(kind, data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor = load_model(build_family(kind, tmp_path / kind))
    inputs = prompt_inputs(processor)
    with torch.no_grad():
        before = model(**inputs).logits
    batches = calibration_batches(data / "train.json", data / "images", processor, 2, seed=0, batch_size=2)
    for paradigm, metric in (("width", "taylor"), ("layer", "block_influence"), ("hybrid", "block_influence+activation")):
        record = prune(model, paradigm, 0.0, metric, batches)
        assert record["achieved_ratio"] == 0
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, before), paradigm


@pytest.mark.parametrize("kind", ["llava-qwen3", "gemma3", "qwen3_vl", "internvl", "idefics3", "llava-phi3"])
def test_removing_zeroed_heads_and_channels_keeps_the_logits(kind, tmp_path):
    """Query heads and MLP channels whose weights are zero contribute nothing; magnitude pruning
    removes exactly those (one head per KV group, and zeroed channels), and the logits stay (up to
    summation order). With fused projections (Phi-3) the zeroed rows are blocks of the fused
    weights, and a wrong cut of them into parts keeps other rows or reorders them: the logits move."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor = load_model(build_family(kind, tmp_path / kind))
    spec = decoder_spec(model)
    config = model.config.get_text_config()
    head_dim, group = config.head_dim, config.num_attention_heads // config.num_key_value_heads
    zeroed = [g * group for g in range(config.num_key_value_heads)]  # each group's first head
    heads, quiet = config.num_attention_heads, slice(0, 3 * config.intermediate_size // 4)
    rows = spec.part_rows(attention_shape(model), config.intermediate_size)
    with torch.no_grad():
        for layer in decoder_layers(model):
            for h in zeroed:
                spec.module(layer, spec.q).weight[rows[spec.q]][h * head_dim : (h + 1) * head_dim] = 0
                spec.module(layer, spec.o).weight[:, h * head_dim : (h + 1) * head_dim] = 0
            for part in spec.mlp_in:
                spec.module(layer, part).weight[rows[part]][quiet] = 0
            spec.module(layer, spec.mlp_out).weight[:, quiet] = 0
        inputs = prompt_inputs(processor)
        before = model(**inputs).logits
        record = prune(model, "width", 0.5, "magnitude_l1", mode="query_heads")
        assert record["plan"]["q_heads_per_group"] == 1 and 0 < record["plan"]["channels"] <= quiet.stop
        assert all(w["q_heads"] == [h for h in range(heads) if h not in zeroed] for w in record["widths"])
        torch.testing.assert_close(model(**inputs).logits, before, rtol=1e-5, atol=1e-5)


def unfused_twin(model):
    """The same LLaVA over a Mistral backbone holding Phi-3's fused weights cut as
    ``modeling_phi3`` cuts them (``qkv_proj``: every query head's rows, then the key heads', then
    the value heads'; ``gate_up_proj``: gate rows, then up rows): the same function, unfused."""
    from transformers import AutoModelForImageTextToText, MistralConfig

    text = model.config.text_config
    same = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    same += ("head_dim", "hidden_act", "rms_norm_eps", "max_position_embeddings", "pad_token_id", "bos_token_id", "eos_token_id")
    config = copy.deepcopy(model.config)
    config.text_config = MistralConfig(
        **{k: getattr(text, k) for k in same}, sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}
    )
    twin = AutoModelForImageTextToText.from_config(config).eval()
    q, kv = text.num_attention_heads * text.head_dim, text.num_key_value_heads * text.head_dim
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("qkv_proj.weight"):
            state.update(zip((key.replace("qkv_proj", p) for p in ("q_proj", "k_proj", "v_proj")), value.split([q, kv, kv])))
        elif key.endswith("gate_up_proj.weight"):
            state.update(zip((key.replace("gate_up_proj", p) for p in ("gate_proj", "up_proj")), value.chunk(2)))
        else:
            state[key] = value
    twin.load_state_dict(state, strict=True)
    return twin


TWIN_PARTS = {
    "self_attn.qkv_proj[q]": "self_attn.q_proj",
    "self_attn.qkv_proj[k]": "self_attn.k_proj",
    "self_attn.qkv_proj[v]": "self_attn.v_proj",
    "mlp.gate_up_proj[gate]": "mlp.gate_proj",
    "mlp.gate_up_proj[up]": "mlp.up_proj",
}


def test_phi3_saliencies_and_cuts_are_those_of_its_unfused_twin(data, tmp_path):
    """Each width metric scores every part of Phi-3's fused weights as the unfused twin scores its
    own linear, and a width cut (uniform, and with a spared first layer, reloaded by the study's
    loader) computes what the twin's cut computes."""
    from study.models.io import save_model
    from study.pruning.importance import width_saliency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor = load_model(build_family("llava-phi3", tmp_path / "phi3"))
    twin = unfused_twin(model)
    inputs = prompt_inputs(processor)
    batches = calibration_batches(data / "train.json", data / "images", processor, 4, seed=0, batch_size=2)
    with torch.no_grad():
        torch.testing.assert_close(twin(**inputs).logits, model(**inputs).logits, rtol=1e-5, atol=1e-5)  # the cut is modeling_phi3's
    assert set(TWIN_PARTS) | {"self_attn.o_proj", "mlp.down_proj"} == set(width_saliency(model, "magnitude_l1", [])[0])
    for metric in ("magnitude_l2", "taylor", "activation"):
        for got, expected in zip(width_saliency(model, metric, batches), width_saliency(twin, metric, batches), strict=True):
            for part, path in {**TWIN_PARTS, "self_attn.o_proj": "self_attn.o_proj", "mlp.down_proj": "mlp.down_proj"}.items():
                torch.testing.assert_close(got[part], expected[path], rtol=1e-4, atol=1e-6, msg=f"{metric} {part}")
    for spare in ((0, 0), (1, 0)):
        pruned, pruned_twin = copy.deepcopy(model), copy.deepcopy(twin)
        record = prune(pruned, "width", 0.3, "taylor", batches, spare=spare, match_budget="none")  # 30% itself (2 blocks)
        assert prune(pruned_twin, "width", 0.3, "taylor", batches, spare=spare, match_budget="none")["widths"] == record["widths"]
        assert record["plan"]["q_heads_per_group"] == 1 and record["nonuniform"] == (spare != (0, 0))
        with torch.no_grad():
            expected = pruned_twin(**inputs).logits
            torch.testing.assert_close(pruned(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
            folder = save_model(pruned, processor, tmp_path / f"spare-{spare[0]}")
            (folder / PRUNING_FILE).write_text(json.dumps(record))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.testing.assert_close(load_model(folder)[0](**inputs).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_longrope_phi3_keeps_every_head_and_prunes_mlp_channels(pruned):
    """Mini-InternVL-4B's Phi-3-mini-128k: the stock config refuses any other head count with its
    longrope factors, so a width cut removes MLP channels only, and the folder loads."""
    record = read_record(pruned["internvl-phi3"]["width"], PRUNING_FILE)
    assert record["plan"]["q_heads_per_group"] == record["plan"]["kv_groups"] == 0 < record["plan"]["channels"]
    assert all(len(w["q_heads"]) == len(w["kv_heads"]) == 4 for w in record["widths"])
    assert read_record(pruned["llava-phi3"]["width"], PRUNING_FILE)["plan"]["q_heads_per_group"] > 0  # default rope: heads go


@pytest.mark.parametrize("kind", KINDS)
def test_pruned_family_recovers_two_steps_and_is_evaluated(kind, pruned, data, tmp_path):
    folders = pruned[kind]
    record = read_record(folders["width"], PRUNING_FILE)
    for loss in ("sft", "kd_hidden"):
        cfg = RecoveryConfig(trainable="projector+llm", loss=loss, **TWO_STEPS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            identity = {"identity": recovered_identity(record["identity"], loss, loss, 1.0)}
            curve = recover(
                folders["width"],
                folders["unpruned"],
                data / "train.json",
                data / "images",
                tmp_path / loss,
                cfg,
                record.get("layer_map"),
                identity,
            )
        assert [row["step"] for row in curve] == [1, 2] and all(torch.isfinite(torch.tensor(row["total"])) for row in curve), loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert projector_parameters(load_model(tmp_path / "kd_hidden")[0])
        result = evaluate_checkpoint(
            tmp_path / "kd_hidden",
            QUESTIONS,
            data / "images",
            tmp_path / "metrics.json",
            reference={"open": 1.0, "yesno": 1.0},
            batch_size=2,
            max_new_tokens=4,
        )
    assert set(result["scores"]) == set(QUESTIONS) and all(0 <= s <= 1 for s in result["scores"].values())
    assert result["efficiency"]["llm_params"] < result["efficiency"]["total_params"] and result["efficiency"]["flops_per_sample"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_every_metric_prunes_and_every_recipe_recovers(kind, pruned, data, tmp_path):
    """Beyond the calibrated methods above: every layer and width metric of the vocabulary cuts the
    family's model to a smaller one that still answers, and the reference study's other recovery
    recipes (projector only, LoRA, SFT + KD on logits or hidden states) train two steps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor = load_model(pruned[kind]["unpruned"])
    batches = calibration_batches(data / "train.json", data / "images", processor, 4, seed=0, batch_size=2)
    inputs = prompt_inputs(processor)
    for paradigm, metrics in (("layer", LAYER_METRICS), ("width", WIDTH_METRICS)):
        for metric in metrics:
            cut = copy.deepcopy(model)
            record = prune(cut, paradigm, 0.5, metric, batches)
            assert record["decoder_params_after"] < record["decoder_params_before"], (kind, metric)
            with torch.no_grad():
                assert torch.isfinite(cut(**inputs).logits).all(), (kind, metric)
    record = read_record(pruned[kind]["width"], PRUNING_FILE)
    for recipe in [r for r in RecoverConfig().recipes if r.name not in ("sft", "kd_hidden")]:  # those two: the test above
        cfg = RecoveryConfig(trainable=recipe.trainable, loss=recipe.loss, **TWO_STEPS)
        identity = {"identity": recovered_identity(record["identity"], recipe.name, recipe.name, 1.0)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            curve = recover(
                pruned[kind]["width"],
                pruned[kind]["unpruned"],
                data / "train.json",
                data / "images",
                tmp_path / recipe.name,
                cfg,
                record.get("layer_map"),
                identity,
            )
        assert [row["step"] for row in curve] == [1, 2] and all(torch.isfinite(torch.tensor(row["total"])) for row in curve), recipe


@pytest.mark.parametrize("kind", KINDS)
def test_lora_adapts_exactly_the_linears_width_pruning_slices(kind, pruned):
    """LoRA's target names the backbone's attention and MLP linears (fused ones included) in every
    decoder block, and nothing of the vision tower or projector."""
    from peft.tuners.lora import LoraLayer

    from study.models.families import family
    from study.recovery.train import add_lora

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(pruned[kind]["width"])[0]
    spec, backbone = decoder_spec(model), family(model).backbone
    expected = {f"{backbone}.layers.{i}.{path}" for i in range(len(decoder_layers(model))) for path in spec.linears()}
    peft_model = add_lora(model, RecoveryConfig(lora_r=2, lora_alpha=4))
    wrapped = {name.removeprefix("base_model.model.") for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)}
    assert wrapped == expected


def test_readme_support_tables_are_the_registries():
    from study.models.support import support_tables

    assert support_tables() in (REPO / "README.md").read_text(), "regenerate the README's tables with `python -m study support`"


def test_qwen3_vl_keeps_the_first_blocks_its_deepstack_features_feed(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_model(build_family("qwen3_vl", tmp_path / "qwen3_vl"))
    assert len(model.config.vision_config.deepstack_visual_indexes) == 1
    record = prune(model, "layer", 0.5, "block_influence", scores={"layer": [0.0, 1.0]})  # block 0 scores lowest
    assert record["removed_layers"] == [1] and record["fixed_blocks"] == 1


def test_check_config_takes_every_family_folder_and_wants_the_processors_own_chat_template(tmp_path):
    from study.config_check import _check_kind

    for kind in ("qwen2_vl", "gemma3", "idefics3"):
        finding = _check_kind("prune.model_dir", build_family(kind, tmp_path / kind), "hf")
        assert finding.status == "ok" and finding.message.endswith("1 weight file(s)"), finding
    folder = tmp_path / "gemma3"
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": template}))  # the tokenizer's: not used
    finding = _check_kind("prune.model_dir", folder, "hf")
    assert finding.status == "error" and "has no chat template for its processor" in finding.message
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "blip-2"}))
    assert "unsupported model family 'blip-2'; supported: gemma3," in _check_kind("prune.model_dir", folder, "hf").message
