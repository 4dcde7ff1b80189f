"""Every supported image-text-to-text family end to end on a tiny random checkpoint built here:
stock loading, the checkpoint's own processor and chat template, a forward pass and greedy decoding
(with the KV cache equal to without). Without torchvision, the families whose processor needs it
go through :func:`study.models.processing.load_processor`'s image-only path."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText
from transformers.utils import is_torchvision_available

from study.models.io import load_model
from study.models.processing import load_processor, needs_torchvision, processor_class_name
from tests.families import KINDS, build_family

# image placeholder tokens one 32x24 image becomes, per kind: the family's own expansion
IMAGE_TOKENS = {
    "llava-llama": 16,
    "llava-mistral": 16,
    "llava-qwen2": 16,
    "llava-phi": 16,
    "llava-gemma": 16,
    "llava-gemma2": 16,
    "llava-qwen3": 16,
    "llava-phi3": 16,
    "llava_next": 72,
    "llava_onevision": 72,
    "qwen2_vl": 12,
    "qwen2_5_vl": 12,
    "qwen3_vl": 12,
    "internvl": 12,
    "internvl-llama": 12,
    "internvl-phi3": 12,
    "gemma3": 4,
    "idefics3": 20,
    "smolvlm": 20,
    "mistral3": 4,
}
IMAGE_ONLY = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision", "internvl", "internvl-llama", "internvl-phi3", "mistral3", "smolvlm"]
without_torchvision = pytest.mark.skipif(
    is_torchvision_available(), reason="the image-only path is taken only where torchvision is missing"
)


def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 24, 3), dtype=np.uint8))


def prompt_inputs(processor, question: str = "What colour is the circle ?") -> dict:
    """A user turn with an image and a question, through the processor's chat template."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=[image()], text=prompt, return_tensors="pt")


def image_token_count(model, input_ids: torch.Tensor) -> int:
    config = model.config
    image_token = getattr(config, "image_token_id", None)
    return int((input_ids == (config.image_token_index if image_token is None else image_token)).sum())


def test_every_kind_is_covered():
    assert set(IMAGE_TOKENS) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_family_prompt_forward_and_cached_decoding(kind, tmp_path):
    path = build_family(kind, tmp_path / kind)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        processor = load_processor(path)
    ours = [w for w in caught if "torchvision is not installed" in str(w.message)]
    assert len(ours) == (0 if is_torchvision_available() else int(needs_torchvision(processor_class_name(path))))

    inputs = prompt_inputs(processor)
    assert image_token_count(model, inputs["input_ids"]) == IMAGE_TOKENS[kind]
    with torch.no_grad():
        logits = model(**inputs).logits
        assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
        # a random model may pick a placeholder token, which a cache-less step would read as an image
        special = [i for i in processor.tokenizer.all_special_ids if i != processor.tokenizer.eos_token_id]
        cached = model.generate(**inputs, max_new_tokens=4, suppress_tokens=special)
        uncached = model.generate(**inputs, max_new_tokens=4, suppress_tokens=special, use_cache=False)
    assert cached.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(cached, uncached)


def test_load_model_uses_the_checkpoints_processor(tmp_path):
    path = build_family("qwen2_vl", tmp_path / "qwen2_vl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor = load_model(path)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert "image_grid_thw" in prompt_inputs(processor)


@without_torchvision
@pytest.mark.parametrize("kind", IMAGE_ONLY)
def test_image_only_processor_saves_the_full_processors_files(kind, tmp_path):
    """Saved again, the image-only processor names the family's class and keeps the video
    processor settings, so the folder loads with AutoProcessor where torchvision is installed."""
    path = build_family(kind, tmp_path / kind)
    before = json.loads((path / "processor_config.json").read_text())
    with pytest.warns(UserWarning, match="torchvision is not installed"):
        processor = load_processor(path)
    processor.save_pretrained(tmp_path / "again")
    after = json.loads((tmp_path / "again/processor_config.json").read_text())
    assert after == before
    with pytest.warns(UserWarning, match="torchvision is not installed"):
        again = load_processor(tmp_path / "again")
    first, second = prompt_inputs(processor), prompt_inputs(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@without_torchvision
def test_image_only_processor_refuses_a_video(tmp_path):
    with pytest.warns(UserWarning, match="torchvision is not installed"):
        processor = load_processor(build_family("smolvlm", tmp_path / "smolvlm"))
    with pytest.raises(ValueError, match="built without its video processor"):
        processor(text=["What colour is the circle ? <video>"], videos=[np.zeros((2, 16, 16, 3), dtype=np.uint8)])


@pytest.mark.parametrize("kind", ["llava-llama", "qwen2_vl"])
def test_missing_chat_template_says_how_to_add_one(kind, tmp_path):
    path = build_family(kind, tmp_path / kind)
    (path / "chat_template.jinja").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"has no chat template.*processor\.chat_template = .*chat_template\.jinja"):
            load_processor(path)


@pytest.mark.parametrize("kind", ["llava-llama", "qwen2_vl"])
def test_other_processor_errors_are_raised(kind, tmp_path):
    """A broken tokenizer file is not mistaken for missing torchvision: its own error surfaces."""
    path = build_family(kind, tmp_path / kind)
    (path / "tokenizer.json").write_text("{not json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as raised:
            load_processor(path)
    assert "torchvision" not in str(raised.value).lower()


def test_building_is_deterministic(tmp_path):
    first, second = (build_family("qwen3_vl", tmp_path / name) for name in ("a", "b"))
    for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
