"""The tiny teacher is a stock HF folder; layer surgery keeps it loadable and cache-correct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from study.config.sections import TeacherArchitecture
from study.evaluation.generate import encode_prompts
from study.models.io import load_model, save_model
from study.models.layers import block_io_cosine, decoder_layer_params, decoder_layers, drop_layers, most_similar_layers

REPO = Path(__file__).resolve().parents[1]


def _prompt(processor, tmp_path: Path) -> dict:
    Image.new("RGB", (36, 36), (200, 30, 30)).save(tmp_path / "x.png")
    return dict(encode_prompts([{"question_id": "q", "image": "x.png", "text": "What colour is the object ?"}], processor, tmp_path))


def test_saved_teacher_loads_in_a_fresh_process_with_plain_from_pretrained(tiny_model, tiny_processor, tmp_path):
    save_model(tiny_model, tiny_processor, tmp_path / "model")
    inputs = _prompt(tiny_processor, tmp_path)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = tiny_model(**inputs).logits
    code = f"""
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
m = AutoModelForImageTextToText.from_pretrained({str(tmp_path / "model")!r})
p = AutoProcessor.from_pretrained({str(tmp_path / "model")!r})
assert type(m).__name__ == "LlavaForConditionalGeneration", type(m)
assert p.tokenizer.padding_side == "left"
with torch.no_grad():
    torch.save(m(**torch.load({str(tmp_path / "inputs.pt")!r})).logits, {str(tmp_path / "logits.pt")!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)  # no project import there
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= files


def test_in_memory_load_gives_the_mapped_load_model_in_the_stored_and_a_cast_dtype(tiny_model, tiny_processor, tmp_path):
    tiny_model.generation_config.max_new_tokens = 7
    save_model(tiny_model.to(torch.bfloat16), tiny_processor, tmp_path / "m")
    for dtype in ("auto", "float32"):
        mapped, _ = load_model(tmp_path / "m", dtype=dtype)
        read, _ = load_model(tmp_path / "m", dtype=dtype, in_memory=True)
        assert type(read) is type(mapped) and read.config.to_dict() == mapped.config.to_dict()
        assert read.generation_config.max_new_tokens == 7
        want, got = mapped.state_dict(), read.state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)
        assert read.lm_head.weight.dtype == (torch.bfloat16 if dtype == "auto" else torch.float32)
    tiny_model.float()


def test_image_token_count_matches_the_processor(tiny_model, tiny_processor, tmp_path):
    inputs = _prompt(tiny_processor, tmp_path)
    n = int((inputs["input_ids"] == tiny_model.config.image_token_index).sum())
    assert n == tiny_model.config.image_seq_length == 9
    tiny_model(**inputs)  # raises if features and placeholders disagree


def test_architecture_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="patch_size"):
        TeacherArchitecture(image_size=36, patch_size=10)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        TeacherArchitecture(num_attention_heads=4, num_key_value_heads=3)


def test_drop_layers_renumbers_and_round_trips_with_kv_cache(tiny_model, tiny_processor, tmp_path):
    before = decoder_layer_params(tiny_model)
    drop_layers(tiny_model, [0, 2])
    assert tiny_model.config.text_config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in decoder_layers(tiny_model)] == [0, 1]
    assert decoder_layer_params(tiny_model) == before // 2
    save_model(tiny_model, tiny_processor, tmp_path / "pruned")
    model, _ = load_model(tmp_path / "pruned")
    assert len(decoder_layers(model)) == 2
    inputs = _prompt(tiny_processor, tmp_path)
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=tiny_processor.tokenizer.pad_token_id)
    with_cache = model.generate(**inputs, use_cache=True, **kwargs)
    without = model.generate(**inputs, use_cache=False, **kwargs)
    assert torch.equal(with_cache, without)


def test_drop_layers_rejects_bad_indices(tiny_model):
    with pytest.raises(ValueError, match="all 4"):
        drop_layers(tiny_model, range(4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        drop_layers(tiny_model, [7])


def test_block_io_cosine_is_one_for_a_pass_through_block(tiny_model, tiny_processor, tmp_path):
    layer = decoder_layers(tiny_model)[2]
    with torch.no_grad():  # a block whose residual branches add nothing returns its input
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    inputs = _prompt(tiny_processor, tmp_path)
    cos = block_io_cosine(tiny_model, [inputs])
    assert cos.shape == (4,)
    assert cos[2].item() == pytest.approx(1.0, abs=1e-5)
    assert cos[[0, 1, 3]].max() < 0.999
    assert most_similar_layers(cos.tolist(), 1) == [2]


def test_committed_teacher_is_a_stock_llava_with_gqa_and_enough_layers():
    folder = REPO / "results" / "teacher"
    if not (folder / "config.json").exists():
        pytest.skip("no committed teacher in this checkout")
    config = json.loads((folder / "config.json").read_text())
    text = config["text_config"]
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["vision_config"]["model_type"] == "clip_vision_model"
    assert text["model_type"] == "llama" and text["num_hidden_layers"] >= 8
    assert text["num_key_value_heads"] < text["num_attention_heads"]


def test_committed_teacher_metrics_meet_the_targets():
    """The issue's bar for the embedded teacher: mean >= 0.90, no family < 0.75, and skipping the
    25% most similar decoder blocks costs >= 10 points (the teacher is capacity-bound)."""
    path = REPO / "results" / "metrics" / "teacher.json"
    if not path.exists():
        pytest.skip("no committed teacher metrics in this checkout")
    metrics = json.loads(path.read_text())
    assert metrics["mean_score"] >= 0.90, metrics["scores"]
    assert min(metrics["scores"].values()) >= 0.75, metrics["scores"]
    ablation = metrics["ablation"]["layer_skip"]
    assert ablation["fraction"] == 0.25
    assert ablation["drop"] == pytest.approx(metrics["mean_score"] - ablation["mean_score"])
    assert ablation["drop"] >= 0.10, ablation
