"""Shared fixtures: a tiny untrained teacher (built in a second, never trained)."""

from __future__ import annotations

import pytest
import torch

from study.config.sections import TeacherArchitecture
from study.models.teacher import build_processor, build_teacher

TINY = TeacherArchitecture(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vision_hidden_size=32,
    vision_intermediate_size=64,
    vision_layers=2,
    vision_heads=2,
)
WORDS = ["What colour is the object at the top left ?", "red blue circle square yes no", "Is there a red circle in the image ?"]


@pytest.fixture(scope="session")
def tiny_arch() -> TeacherArchitecture:
    return TINY


@pytest.fixture(scope="session")
def tiny_processor():
    return build_processor(WORDS, TINY)


@pytest.fixture
def tiny_model(tiny_processor):
    torch.manual_seed(0)
    return build_teacher(TINY, tiny_processor, seed=0)


def tiny_world(root, n_train: int = 16, seed: int = 0, arch: TeacherArchitecture = TINY, n_eval_per_family: int = 1):
    """Tiny synthetic data (``root/data``) and a tiny untrained teacher whose tokenizer covers it
    (``root/teacher``), as files: what a command-line test needs."""
    from study.config.sections import DataConfig
    from study.data.llava import read_samples
    from study.data.synthetic import generate_dataset
    from study.models.io import save_model

    generate_dataset(DataConfig(n_train=n_train, n_eval_per_family=n_eval_per_family, seed=seed), root / "data")
    samples = read_samples(root / "data/train.json")
    processor = build_processor((t["value"] for s in samples for t in s["conversations"]), arch)
    save_model(build_teacher(arch, processor, seed=0), processor, root / "teacher")
    return root


def tiny_llava(kind: str):
    """Tiny LLaVA models with the structure of the paper's models, built without a processor:
    ``llama_gqa`` (the embedded teacher's layout), ``llama_mha`` (LLaVA-1.5: Vicuna, CLIP,
    penultimate layer, CLS dropped), ``phi_siglip`` (Bunny: Phi with partial rotary and biases,
    SigLIP, every patch)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, PhiConfig, SiglipVisionConfig

    vocab, image_token = 64, 63
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=24, patch_size=8)
    if kind == "phi_siglip":
        vision_config = SiglipVisionConfig(**vision)
        text = PhiConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, partial_rotary_factor=0.5
        )
        strategy, layer = "full", -2
    else:
        vision_config = CLIPVisionConfig(**vision)
        kv = 2 if kind == "llama_gqa" else 4
        text = LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=kv
        )
        strategy, layer = "default", -2 if kind == "llama_mha" else -1
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=image_token,
        vision_feature_select_strategy=strategy,
        vision_feature_layer=layer,
        image_seq_length=9,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 0
    return model


def fake_batch(model, batch_size: int = 2, text_len: int = 6, seed: int = 0) -> dict:
    """A calibration-style batch: image tokens then text, labels on the text."""
    g = torch.Generator().manual_seed(seed)
    n_image = model.config.image_seq_length
    text = torch.randint(1, 60, (batch_size, text_len), generator=g)
    ids = torch.cat([torch.full((batch_size, n_image), model.config.image_token_index), text], dim=1)
    labels = ids.clone()
    labels[:, :n_image] = -100
    size = model.config.vision_config.image_size
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values": torch.randn(batch_size, 3, size, size, generator=g),
    }
