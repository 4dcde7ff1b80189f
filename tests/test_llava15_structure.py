"""LLaVA-v1.5-7B's structure at toy size, through prune → recover → evaluate.

The release (``LlavaForConditionalGeneration``): CLIP ViT-L/14-336 whose penultimate layer's patch
features are used without CLS (``vision_feature_layer = -2``, ``"default"`` strategy), LLaVA-1.5's
2-layer GELU projector, Vicuna-7B = Llama with multi-head attention (32 key/value heads for 32
query heads), prompt ``USER: <image>\\n... ASSISTANT:``. The tiny model has the same choices; only
the sizes differ. ``tiny_llava("llama_mha")`` in conftest is the reference for those choices.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from study.config.sections import DataConfig, PruneConfig
from study.config.vocabulary import Method
from study.data.llava import read_samples
from study.data.synthetic import generate_dataset
from study.evaluation.benchmark import evaluate, load_benchmarks
from study.evaluation.generate import prompt_messages
from study.models.io import load_model, save_model
from study.models.teacher import build_processor, build_teacher
from study.pruning.run import prune_checkpoint
from study.recovery.train import RecoveryConfig, recover

from .conftest import TINY, tiny_llava

LLAVA15 = replace(TINY, num_key_value_heads=TINY.num_attention_heads)  # Vicuna: no GQA
FAST = RecoveryConfig(lr=1e-3, batch_size=8, epochs=1.0, warmup_ratio=0.0, log_every=1, loss="sft+kd_logit")


def structure(config) -> dict:
    """The structural choices that make a LLaVA-1.5 model, independent of its sizes."""
    text, vision = config.text_config, config.vision_config
    return {
        "text": text.model_type,
        "mha": text.num_key_value_heads == text.num_attention_heads,
        "vision": vision.model_type,
        "feature_layer": config.vision_feature_layer,
        "select": config.vision_feature_select_strategy,
        "projector_act": config.projector_hidden_act,
        "projector_bias": config.multimodal_projector_bias,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny synthetic data and an untrained LLaVA-1.5-structured teacher saved as an HF folder."""
    root = tmp_path_factory.mktemp("llava15")
    generate_dataset(DataConfig(n_train=32, n_eval_per_family=2, seed=5), root / "data")
    samples = read_samples(root / "data/train.json")
    processor = build_processor((t["value"] for s in samples for t in s["conversations"]), LLAVA15)
    model = build_teacher(LLAVA15, processor, seed=0)
    model.config.vision_feature_layer = -2  # the penultimate CLIP layer, as LLaVA-1.5 (the embedded teacher uses the last)
    save_model(model, processor, root / "teacher")
    return root


def test_the_teacher_has_llava15s_structure(world):
    model, processor = load_model(world / "teacher")
    expected = {"text": "llama", "mha": True, "vision": "clip_vision_model", "feature_layer": -2, "select": "default"}
    assert structure(model.config) == structure(tiny_llava("llama_mha").config)
    assert expected.items() <= structure(model.config).items()
    assert (structure(model.config)["projector_act"], len(list(model.model.multi_modal_projector.children()))) == ("gelu", 3)
    prompt = processor.apply_chat_template(
        prompt_messages({"image": "x.png", "text": "What is it ?"}), add_generation_prompt=True, tokenize=False
    )
    assert prompt.startswith("USER: <image>\n") and prompt.endswith("ASSISTANT:")


@pytest.mark.parametrize("paradigm, metric", [("layer", "block_influence"), ("width", "taylor")])
def test_prune_recover_evaluate(world, tmp_path, paradigm, metric):
    data = world / "data"
    cfg = PruneConfig(model_dir=str(world / "teacher"), calibration=str(data / "train.json"), calibration_samples=8)
    record = prune_checkpoint(tmp_path / "pruned", Method(paradigm, metric), 0.3, cfg)
    assert record["achieved_ratio"] > 0.15
    curve = recover(
        tmp_path / "pruned", world / "teacher", data / "train.json", data / "images", tmp_path / "recovered", FAST, record.get("layer_map")
    )
    assert [row["step"] for row in curve] == [1, 2, 3, 4]  # 32 samples in batches of 8, one epoch
    model, processor = load_model(tmp_path / "recovered")
    got, expected = structure(model.config), structure(tiny_llava("llama_mha").config)
    # widthwise keeps round(0.7 * heads) heads, a count LlamaConfig refuses: saved as the equivalent mistral config
    assert got.pop("text") == record["model_type"]["saved"] == ("mistral" if paradigm == "width" else "llama")
    del expected["text"]
    assert got == expected  # MHA stays MHA, features unchanged
    benchmarks = load_benchmarks(sorted((data / "eval").glob("*.jsonl")), limit=2)
    result = evaluate(model, processor, benchmarks, data / "images", max_new_tokens=4, progress=False)
    assert set(result["scores"]) == set(benchmarks)
    assert all(0.0 <= s <= 1.0 for s in result["scores"].values())
